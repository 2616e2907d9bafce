# Two entry points (see README): `make book` and `make test`. Both set up .venv first.
PY      ?= python3.11
VENV    := .venv
BIN     := $(VENV)/bin
PROFILE ?= $(or $(HLS_PROFILE),cpu)
WORKERS ?= 1
# RETRAIN=1: train every run here and render from the local run store, ignoring results/
ARCHIVE := $(if $(RETRAIN),HLS_ARCHIVE=off)
STAMP   := $(VENV)/.installed

.PHONY: setup book test reproduce bench clean-book

# torch's CUDA wheels make the environment about 6 GB: say so before pip runs out of disk.
NEED_GB := 8

$(STAMP): pyproject.toml
	@free=$$(df -Pk . | awk 'NR==2 {print int($$4 / 1048576)}'); \
	if [ ! -x $(BIN)/python ] && [ "$$free" -lt $(NEED_GB) ]; then \
	  echo "error: $$free GB free here, the environment needs about $(NEED_GB) GB; free disk space and rerun" >&2; exit 2; fi
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[book,test,launch]'
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (hls)" >/dev/null
	touch $(STAMP)

setup: $(STAMP)

# Build the HTML report with one profile for every chapter (HLS_PROFILE, default cpu): first
# launch the runs that neither the run store nor the archive has (none, for the committed cpu
# archive), then render. The notebooks only read run records.
book: $(STAMP)
	$(ARCHIVE) $(BIN)/python -m hls launch --profile $(PROFILE) --workers $(WORKERS) $(if $(RETRAIN),--retrain)
	$(ARCHIVE) HLS_PROFILE=$(PROFILE) PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/jupyter-book build book/

# The test suite. The slow tests execute the chapters and build the book with the smoke profile,
# and retrain one archived cpu run to compare it bit for bit (tests/test_archive.py): an archive
# that the code no longer reproduces fails here.
test: $(STAMP)
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python -m pytest -q tests

# papermill batch: every chapter at PROFILE into book/_executed/PROFILE, then rendered.
reproduce: $(STAMP)
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python -m hls book --profile $(PROFILE)

bench: $(STAMP)
	$(BIN)/python -m hls bench

clean-book:
	rm -rf book/_build
