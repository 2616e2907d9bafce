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
