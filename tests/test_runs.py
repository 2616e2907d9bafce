"""The run store and the command line: cache hits, force, resume, atomic writes, failures,
locks, damaged records, what facts.json says about the code."""

import json
import os
import signal
import subprocess
import sys

import pytest
import torch

from hls import experiments, runs, train
from hls.config import VERSION


@pytest.fixture(autouse=True)
def empty_archive(tmp_path, monkeypatch):
    """No test reads the repository's results/: an archived run would not be trained."""
    monkeypatch.setenv("HLS_ARCHIVE", str(tmp_path / "results"))


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
    assert not list(store.rglob(".*.tmp"))     # a failed write removes its temporary file
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


def test_cli_diverged_run_is_one_line_exit_1(store):
    result = cli("run", "darts", "--profile", "smoke", "--seeds", "0", "--set", "epochs=1",
                 "--set", "lr=1e30")
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hls: error: run darts-"), lines
    assert "non-finite" in lines[0]


def test_metrics_keep_every_key_of_the_epoch_record(store, monkeypatch):
    real = train.Search.run_epoch

    def with_new_metric(self, *args, **kwargs):
        record = real(self, *args, **kwargs)
        record["a_new_metric"] = 0.5
        return record
    monkeypatch.setattr(train.Search, "run_epoch", with_new_metric)
    record = runs.get_run(smoke(epochs=1), "cpu")
    metrics = json.loads((record.path / "metrics.json").read_text())
    assert metrics[0]["a_new_metric"] == 0.5 and "arch_grad_norm" in metrics[0]
    assert "alphas" not in metrics[0] and "genotype" not in metrics[0]
    assert record.history[0]["genotype"] == record.genotype


def test_facts_say_which_code_made_the_record(store):
    facts = runs.get_run(smoke(epochs=1), "cpu").facts
    assert facts["torch_threads"] == torch.get_num_threads()
    assert facts["hls"] == VERSION
    assert facts["torch"] == torch.__version__ and facts["device"] == "cpu"
    assert facts["code_fingerprint"] == runs.current_fingerprint()
    assert len(facts["code_fingerprint"]) == 12
    assert facts["git_commit"] is None or len(facts["git_commit"].split("+")[0]) >= 7
    assert runs.reproducible_here(facts)
    assert not runs.reproducible_here({**facts, "code_fingerprint": "0" * 12})
    assert not runs.reproducible_here({**facts, "hls": "0.0.0"})


def test_a_held_lock_names_its_holder(tmp_path):
    folder = tmp_path / "darts-000000000000"
    with runs.run_lock(folder):
        assert runs.lock_holder(folder) == f"{os.uname().nodename} pid {os.getpid()}"
        with pytest.raises(runs.RunBusy, match=f"trained by .* pid {os.getpid()}"):
            with runs.run_lock(folder, wait=False):
                pass
    assert runs.lock_holder(folder) is None


def test_the_lock_of_a_killed_process_is_free(tmp_path):
    folder = tmp_path / "darts-000000000000"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; "
         "from hls.runs import run_lock\n"
         "with run_lock(Path(sys.argv[1])):\n    print('locked', flush=True); time.sleep(600)",
         str(folder)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert runs.lock_holder(folder).endswith(f"pid {holder.pid}")
        with pytest.raises(runs.RunBusy, match=f"pid {holder.pid}"):
            with runs.run_lock(folder, wait=False):
                pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert runs.lock_holder(folder) is None
    with runs.run_lock(folder, wait=False):     # taken over without waiting
        pass


def test_damaged_records_are_one_line_errors(store):
    folder = store / smoke().run_id
    folder.mkdir(parents=True)
    (folder / "status.json").write_text('{"state": "compl')
    with pytest.raises(runs.RecordError) as bad_json:
        runs.get_run(smoke(), "cpu")
    message = str(bad_json.value)
    assert "status.json is not valid JSON" in message and "--force" in message
    assert str(folder) in message and "\n" not in message

    (folder / "status.json").write_text('{"state": "complete", "epoch": 3}')
    with pytest.raises(runs.RecordError, match="metrics.json is missing from a run marked"):
        runs.get_run(smoke(), "cpu")
