"""Shared fixtures: one private run store per test session, the real long-tailed data once."""

import os

import pytest
import torch


@pytest.fixture(scope="session", autouse=True)
def session_store(tmp_path_factory):
    """Every test trains into a temporary run store unless it sets its own HLS_RUNS."""
    if not os.environ.get("HLS_RUNS"):
        os.environ["HLS_RUNS"] = str(tmp_path_factory.mktemp("runs"))
    # and an empty archive: a test never reads (or publishes into) the repository's results/,
    # except tests/test_archive.py, which looks at it on purpose
    os.environ["HLS_ARCHIVE"] = str(tmp_path_factory.mktemp("archive"))
    os.environ.setdefault("HLS_PROGRESS", "0")
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    yield


@pytest.fixture
def store(tmp_path, monkeypatch):
    """A fresh, empty run store for tests that count what gets trained."""
    monkeypatch.setenv("HLS_RUNS", str(tmp_path / "runs"))
    return tmp_path / "runs"


@pytest.fixture(scope="session")
def lt_data():
    from hls.data import load_long_tailed
    return load_long_tailed("cifar10", ratio=100, seed=0, subset=20)


@pytest.fixture(scope="session")
def smoke_env(tmp_path_factory):
    """HLS_PROFILE=smoke and one run store for every slow test, holding the smoke plan's runs
    (trained here: notebooks only read), the archive switched off."""
    import sys
    from pathlib import Path

    from hls import plan, runs
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HLS_PROFILE", "smoke")
        mp.setenv("HLS_RUNS", str(tmp_path_factory.mktemp("runs")))
        mp.setenv("HLS_ARCHIVE", "off")
        mp.setenv("PATH", str(Path(sys.executable).parent), prepend=os.pathsep)
        for planned in plan.book_plan("smoke"):
            runs.get_run(planned.config, "cpu")
        yield


@pytest.fixture(scope="session")
def smoke_build(smoke_env, tmp_path_factory):
    """`jupyter-book build book/` at the smoke profile, once per session: tests/test_book.py
    checks its pages' HTML, tests/test_browser.py opens them in a browser."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path
    from types import SimpleNamespace

    from hls import book
    out = tmp_path_factory.mktemp("jupyter-book")
    jb = shutil.which("jupyter-book", path=Path(sys.executable).parent) or "jupyter-book"
    build = subprocess.run([jb, "build", "book/", "--path-output", str(out)],
                           cwd=book.ROOT, capture_output=True, text=True)
    return SimpleNamespace(returncode=build.returncode, log=build.stdout[-5000:] + build.stderr[-5000:],
                           html=out / "_build" / "html")
