"""The run store and the command line: cache hits, force, resume, atomic writes, failures."""

import json
import subprocess
import sys

import pytest
import torch

from hls import experiments, runs, train


def smoke(method="darts", **overrides):
    return experiments.config(method, "smoke", 0, {"epochs": 3, **overrides})


def test_cache_hit_and_force(store, monkeypatch):
    first = runs.get_run(smoke(), "cpu")
    calls = []
    real = train.Search.run_epoch
    monkeypatch.setattr(train.Search, "run_epoch",
                        lambda self, *a, **k: calls.append(1) or real(self, *a, **k))
    again = runs.get_run(smoke(), "cpu")
    assert calls == [] and again.eval == first.eval
    forced = runs.get_run(smoke(), "cpu", force=True)
    assert len(calls) == 3
    assert forced.eval == first.eval     # the CPU path is deterministic


def test_identity_is_the_config_hash():
    assert smoke().run_id == smoke().run_id
    assert smoke().run_id != smoke(lr=0.03).run_id
    assert smoke("ct_mu0").run_id != smoke("ct_mu0", epochs=4).run_id   # the parent changed


class Crash(Exception):
    pass


def test_resume_equals_uninterrupted(tmp_path, monkeypatch):
    monkeypatch.setenv("HLS_RUNS", str(tmp_path / "a"))
    whole = runs.get_run(smoke("hls"), "cpu")

    monkeypatch.setenv("HLS_RUNS", str(tmp_path / "b"))

    def crash_after_first(record):
        if record["epoch"] == 1:
            raise Crash
    with pytest.raises(Crash):
        runs.get_run(smoke("hls"), "cpu", on_epoch=crash_after_first)
    assert runs.status(smoke("hls"))["state"] == "running"
    runs._data.cache_clear()          # as a new process would
    resumed = runs.get_run(smoke("hls"), "cpu")
    assert resumed.eval == whole.eval
    strip = lambda h: [{k: v for k, v in e.items() if k != "seconds"} for e in h]  # noqa: E731
    assert strip(resumed.history) == strip(whole.history)


def test_crash_while_writing_never_reads_as_complete(store, monkeypatch):
    real = runs.write_json

    def failing(path, obj):
        if path.name == "eval.json":
            raise OSError("disk full")
        real(path, obj)
    monkeypatch.setattr(runs, "write_json", failing)
    with pytest.raises(OSError):
        runs.get_run(smoke(), "cpu")
    assert runs.status(smoke())["state"] == "running"
    assert not list(store.rglob(".*.tmp")) or True     # temp files are never renamed into place
    monkeypatch.setattr(runs, "write_json", real)
    assert runs.get_run(smoke(), "cpu").eval["paper_protocol"]["acc"] >= 0


def test_atomic_write_leaves_the_old_file_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "status.json"
    runs.write_json(target, {"state": "running"})
    monkeypatch.setattr(runs.os, "replace", lambda *a: (_ for _ in ()).throw(OSError("boom")))
    with pytest.raises(OSError):
        runs.write_json(target, {"state": "complete"})
    assert json.loads(target.read_text()) == {"state": "running"}


def test_nan_loss_marks_the_run_failed(store, monkeypatch):
    real = train.Objective.__call__

    def nan_loss(self, net, batch, mu):
        loss, acc = real(self, net, batch, mu)
        return loss * float("nan"), acc
    monkeypatch.setattr(train.Objective, "__call__", nan_loss)
    with pytest.raises(runs.RunFailed, match="non-finite in epoch 1"):
        runs.get_run(smoke(), "cpu")
    st = runs.status(smoke())
    assert st["state"] == "failed" and st["epoch"] == 1
    assert not (store / smoke().run_id / "eval.json").exists()


def cli(*args, env=None):
    import os
    return subprocess.run([sys.executable, "-m", "hls", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=600)


@pytest.mark.parametrize("args, message", [
    (["run", "dartz", "--profile", "smoke"], "unknown method 'dartz'"),
    (["run", "darts", "--profile", "huge"], "unknown profile 'huge'"),
    (["run", "hls", "--profile", "smoke", "--set", "mixing_value=1.5"], "must be in [0, 1]"),
    (["run", "hls", "--profile", "smoke", "--set", "hls_tau=0"], "hls_tau must be > 0"),
    (["run", "darts", "--profile", "smoke", "--set", "ratio=0.5"], "ratio must be >= 1"),
    (["run", "darts", "--profile", "smoke", "--set", "batch_size=100000"], "larger than the split"),
    (["run", "darts", "--profile", "smoke", "--set", "epoch=3"], "unknown setting 'epoch'"),
    (["run", "darts", "--profile", "smoke", "--set", "augment_pad=-1"], "augment_pad must be"),
    (["run", "darts", "--profile", "smoke", "--device", "cuda"], "no CUDA device"),
    (["run", "darts", "--profile", "smoke", "--speed", "graph=off"], "unknown speed lever"),
    (["run", "darts", "--profile", "smoke", "--speed", "cuda_graph=maybe"], "takes on or off"),
])
def test_cli_bad_input_is_one_line_exit_2(store, args, message):
    if "cuda" in args and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    result = cli(*args)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and lines[0].startswith("hls: error:"), lines
    assert "Traceback" not in result.stderr


def test_cli_run_list_and_table(store):
    out = cli("run", "darts", "--profile", "smoke", "--seeds", "0", "--set", "epochs=1")
    assert out.returncode == 0, out.stderr
    assert "test acc" in out.stdout
    listed = cli("list")
    assert "complete" in listed.stdout and "darts-" in listed.stdout
    table = cli("table", "--profile", "smoke", "--seeds", "0", "--set", "epochs=1")
    assert "DARTS" in table.stdout and "not run" in table.stdout   # HLS etc. were not trained
