"""The public API of hls/__init__.py: what its docstring promises works."""

import hls
from hls import runs


def test_every_public_name_is_there():
    missing = [name for name in hls.__all__ if not hasattr(hls, name)]
    assert not missing, missing


def test_the_docstring_example_reads_an_archived_run(monkeypatch):
    monkeypatch.setenv("HLS_ARCHIVE", str(runs.ROOT / "results"))   # the repository's archive
    config = hls.config("hls", profile="cpu", seed=0)
    assert hls.find_record(config) is not None, "the cpu archive lacks hls seed 0"
    record = hls.get_run(config)                     # archived: read, not trained
    assert record.config == config and record.path.parent.name == "cpu"
    assert 0 < record.eval["paper_protocol"]["acc"] < 1 and record.genotype
    assert set(hls.chapter_records("03_main_results", "cpu")) >= {"darts", "hls"}
