"""The plan, the local launcher, the results archive and verify, at the smoke profile; the
Slurm and Ray backends through submitit's local executor and a local Ray instance.

Every run here is a smoke run of one to five epochs; runs the launcher trains are subprocesses
(`python -m hls train-one`, or a submitit or Ray task), which read HLS_RUNS, HLS_ARCHIVE and
HLS_DATA_SOURCE from the environment this test process passes on.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from hls import experiments, launch, plan, provenance, runs

ONE_EPOCH = {"epochs": 1}


@pytest.fixture(autouse=True)
def private_stores(tmp_path, monkeypatch):
    """An empty store and an empty archive for every test (never the repository's results/)."""
    monkeypatch.setenv("HLS_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("HLS_ARCHIVE", str(tmp_path / "results"))
    monkeypatch.setenv("HLS_PROGRESS", "0")


def cli(*args):
    return subprocess.run([sys.executable, "-m", "hls", *args], capture_output=True, text=True,
                          env=dict(os.environ), timeout=600)


def without_wall_clock(metrics):
    return [{k: v for k, v in epoch.items() if k != "seconds"} for epoch in metrics]


def record_files(folder):
    return {name: json.loads((folder / name).read_text())
            for name in ("eval.json", "metrics.json")}


# ---- the plan


def test_the_plan_lists_parents_before_children():
    book = plan.book_plan("smoke")
    position = {r.run_id: i for i, r in enumerate(book)}
    assert len(position) == len(book)                               # every run once
    children = [r for r in book if r.parent is not None]
    assert children and all(position[r.parent] < position[r.run_id] for r in children)
    assert all(r.state == "missing" for r in book)

    # a parent no chapter asks for directly is planned all the same, first
    only_child = plan.book_plan("smoke", [0], chapters=["05_continued_training"],
                                methods=["ct_mu0"])
    assert [r.method for r in only_child] == ["hls", "ct_mu0"]
    assert only_child[0].chapters == [] and only_child[1].parent == only_child[0].run_id


def test_chapter_configs_tau_sweep_and_table_seeds():
    ablations = plan.chapter_configs("04_ablations", "smoke", overrides={"hls_tau": 3.0})
    assert list(ablations) == ["hls", "darts_bbn", "hls_weights", "tau=1", "tau=5", "tau=20"]
    assert [c.hls_tau for c in ablations["tau=20"]] == [20.0, 20.0]   # the sweep wins
    assert ablations["hls"][0].hls_tau == 3.0                         # --set elsewhere
    table = plan.chapter_configs("03_main_results", "cpu")
    assert list(table) == experiments.TABLE_II_METHODS
    assert [c.seed for c in table["darts"]] == [0, 1, 2]              # the cpu table_seeds
    assert [c.seed for c in plan.chapter_configs("01_motivation", "cpu")["darts"]] == [0]
    assert [c.seed for c in plan.chapter_configs("03_main_results", "cpu",
                                                 seeds=[4])["darts"]] == [4]
    estimate = plan.estimate_seconds(table["darts_bbn"][0], "cpu")
    assert estimate > plan.estimate_seconds(table["darts"][0], "cpu") > 0
    assert plan.estimate_seconds(table["darts"][0], "paper") is None  # not measured


def test_a_run_in_neither_store_nor_archive_names_the_launch_command():
    with pytest.raises(runs.MissingRun) as missing:
        plan.chapter_records("01_motivation", "smoke", seeds=[9], overrides=ONE_EPOCH)
    message = str(missing.value)
    assert "\n" not in message and "darts seed 9 (darts-" in message
    assert message.endswith("make it with: python -m hls launch --profile smoke --seeds 9 "
                            "--set epochs=1")


def test_a_damaged_status_is_one_line_through_the_cli(tmp_path):
    folder = tmp_path / "runs" / experiments.config("darts", "smoke", 0, ONE_EPOCH).run_id
    folder.mkdir(parents=True)
    (folder / "status.json").write_text("{not json")
    result = cli("run", "darts", "--profile", "smoke", "--seeds", "0", "--set", "epochs=1")
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hls: error: "), lines
    assert f"{folder}/status.json is not valid JSON" in lines[0]
    assert f"delete the folder {folder} or rerun with --force" in lines[0]


# ---- launching


def test_a_parallel_launch_equals_the_serial_one(tmp_path, monkeypatch):
    """Two workers of one thread each against one worker of one thread: the same numbers."""
    results = {}
    for workers in (1, 2):
        monkeypatch.setenv("HLS_RUNS", str(tmp_path / f"runs{workers}"))
        result = launch.launch("smoke", [0], ONE_EPOCH, workers=workers, threads=1,
                               chapters=["02_method"], progress=False)
        assert result.ok and [o.outcome for o in result.outcomes] == ["trained", "trained"]
        assert all((o.log.exists() and "trained" in o.log.read_text()) for o in result.outcomes)
        results[workers] = result
    for serial, parallel in zip(results[1].outcomes, results[2].outcomes):
        assert serial.run.run_id == parallel.run.run_id
        a, b = (record_files(o.log.parent) for o in (serial, parallel))
        assert a["eval.json"] == b["eval.json"]
        assert without_wall_clock(a["metrics.json"]) == without_wall_clock(b["metrics.json"])
    again = launch.launch("smoke", [0], ONE_EPOCH, workers=2, chapters=["02_method"],
                          progress=False)
    assert [o.outcome for o in again.outcomes] == ["reused", "reused"]


def test_a_failed_run_skips_its_children_and_names_its_log():
    result = launch.launch("smoke", [0], {**ONE_EPOCH, "lr": 1e30}, workers=2,
                           chapters=["05_continued_training"], methods=["ct_mu0"],
                           progress=False)
    parent, child = result.outcomes
    assert (parent.outcome, child.outcome) == ("failed", "skipped") and not result.ok
    assert "non-finite" in parent.detail and str(parent.log) in result.table()
    assert parent.run.run_id in child.detail


def _train_one(config):
    """A worker as the launcher starts it, on the run's folder in the store."""
    folder = runs.runs_dir() / config.run_id
    folder.mkdir(parents=True, exist_ok=True)
    runs.write_json(folder / "config.json", config.to_dict())
    return subprocess.Popen([sys.executable, "-m", "hls", "train-one", str(folder),
                             "--device", "cpu"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "HLS_THREADS": "1"})


def test_a_killed_worker_leaves_a_run_the_next_launch_resumes():
    overrides = {"epochs": 3}
    config = plan.chapter_configs("01_motivation", "smoke", [0], overrides)["darts"][0]
    worker = _train_one(config)
    deadline = time.time() + 120
    while time.time() < deadline and runs.status(config).get("epoch", 0) < 1:
        time.sleep(0.02)
    worker.send_signal(signal.SIGKILL)      # after the first epoch's checkpoint
    worker.wait()
    assert (runs.runs_dir() / config.run_id / "checkpoint.pt").exists()
    [planned] = plan.book_plan("smoke", [0], overrides, ["01_motivation"], ["darts"])
    assert planned.state == "interrupted"

    result = launch.launch("smoke", [0], overrides, chapters=["01_motivation"],
                           methods=["darts"], threads=1, progress=False)
    [outcome] = result.outcomes
    assert outcome.outcome == "trained", outcome.detail
    last = outcome.log.read_text().strip().splitlines()[-1]
    assert last.startswith(f"trained {config.run_id}: epochs ") and " 1-3 " not in last
    assert len(runs.read_run(config).history) == 3


def test_two_processes_asking_for_one_run_train_it_once():
    config = experiments.config("darts", "smoke", 0, {"epochs": 3})
    workers = [_train_one(config) for _ in range(2)]
    outputs = [w.communicate(timeout=300) for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs
    said = sorted(out.split()[0] for out, _ in outputs)
    assert said == ["reused", "trained"], outputs
    trained_out = next(out for out, _ in outputs if out.startswith("trained"))
    assert "epochs 1-3 of 3" in trained_out
    reused_err = next(err for out, err in outputs if out.startswith("reused"))
    assert not reused_err or f"waiting for run {config.run_id}: held by " in reused_err


# ---- the archive and verify


@pytest.fixture
def archived(tmp_path):
    """A darts smoke run (one epoch) trained and published into the test's archive."""
    config = experiments.config("darts", "smoke", 0, ONE_EPOCH)
    trained = runs.get_run(config, "cpu")
    published = launch.publish("smoke", [0], ONE_EPOCH, ["01_motivation"], ["darts"])
    assert [(r.run_id, what) for r, what in published] == [(config.run_id, "published")]
    return config, trained


def test_an_archived_run_round_trips(archived, tmp_path, monkeypatch):
    config, trained = archived
    folder = tmp_path / "results" / "smoke" / config.run_id
    assert sorted(p.name for p in folder.iterdir()) == sorted(runs.RECORD_FILES)
    again = launch.publish("smoke", [0], ONE_EPOCH, ["01_motivation"], ["darts"])
    assert [what for _, what in again] == ["unchanged"]

    shutil.rmtree(runs.runs_dir())
    record = runs.read_run(config)
    assert record.path == folder
    assert (record.config, record.eval, record.history, record.facts) == \
        (trained.config, trained.eval, trained.history, trained.facts)
    assert plan.run_state(config)[0] == "archived"
    assert runs.get_run(config, "cpu").path == folder          # used, not trained
    assert not (runs.runs_dir() / config.run_id).exists()
    monkeypatch.setenv("HLS_ARCHIVE", "off")
    with pytest.raises(runs.MissingRun):
        runs.read_run(config)


def test_verify_passes_untouched_and_catches_a_changed_number(archived, tmp_path):
    config, _ = archived
    args = ["verify", "--profile", "smoke", "--methods", "darts", "--seeds", "0",
            "--set", "epochs=1"]
    ok = cli(*args)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "bit for bit" in ok.stdout and "matches" in ok.stdout

    eval_path = tmp_path / "results" / "smoke" / config.run_id / "eval.json"
    changed = json.loads(eval_path.read_text())
    changed["val_chosen"]["acc"] += 1e-9
    eval_path.write_text(json.dumps(changed))
    bad = cli(*args)
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "eval.val_chosen.acc:" in bad.stdout and "0 of 1 match" in bad.stdout


def test_publish_replaces_a_changed_copy_atomically(tmp_path):
    source, target = tmp_path / "store" / "darts-x", tmp_path / "results" / "cpu" / "darts-x"
    source.mkdir(parents=True)
    for name in (*runs.RECORD_FILES, "checkpoint.pt", "lock", "log.txt"):
        (source / name).write_text("{}")
    assert launch.publish_run(source, target) == "published"
    assert launch.publish_run(source, target) == "unchanged"
    (source / "eval.json").write_text('{"acc": 1}')
    assert launch.publish_run(source, target) == "published"
    assert (target / "eval.json").read_text() == '{"acc": 1}'
    assert sorted(p.name for p in target.parent.iterdir()) == ["darts-x"]   # no temp folders
    assert sorted(p.name for p in target.iterdir()) == sorted(runs.RECORD_FILES)


def test_first_difference_names_the_key_and_both_values():
    a = {"metrics": [{"loss": 1.0, "seconds": 3.0}], "acc": 0.5}
    assert launch.first_difference(a, a) is None
    slower = {"metrics": [{"loss": 1.0, "seconds": 9.0}], "acc": 0.5}
    assert launch.first_difference(a, slower, skip=("seconds",)) is None
    off = {"metrics": [{"loss": 1.0 + 1e-12, "seconds": 3.0}], "acc": 0.5}
    assert launch.first_difference(a, off, "run", skip=("seconds",)) == \
        f"run.metrics[0].loss: 1.0 vs {1.0 + 1e-12!r}"
    assert launch.first_difference(a, off, tolerance=1e-4, skip=("seconds",)) is None


# ---- the Slurm (submitit) and Ray backends
#
# No cluster here: Slurm is submitit's local executor (each task a process of its own, with
# submitit's pickling, signals and requeue), Ray a local instance of two CPUs.


def test_waves_put_every_run_after_its_parent():
    book = plan.book_plan("smoke", [0], ONE_EPOCH, chapters=["05_continued_training"])
    first, second = launch.waves(book)
    assert [r.method for r in first] == ["hls"]
    assert sorted(r.method for r in second) == ["ct_frozen", "ct_mu0", "ct_mu05", "ct_rs"]
    assert all(r.parent == first[0].run_id for r in second)
    # a parent with nothing left to train: its children go in the first wave
    assert launch.waves(second) == [second] and launch.waves([]) == []


class FakeEngine:
    """A task backend that trains nothing: the parent's task dies, as a killed job would."""
    where, device, threads = "fake", "cpu", 1

    def __init__(self):
        self.submitted = []

    def submit(self, tasks):
        self.submitted.append([Path(t.folder).name for t in tasks])
        return [Path(t.folder).name for t in tasks]

    def name(self, handle):
        return f"fake job {handle}"

    def done(self, handle):
        return True

    def result(self, handle):
        raise RuntimeError("node lost\nmore text")

    def more_logs(self, handle):
        return ""

    def cancel(self, handles):
        pass


def test_a_task_backend_skips_the_children_of_a_failed_run():
    book = plan.book_plan("smoke", [0], ONE_EPOCH, chapters=["05_continued_training"],
                          methods=["ct_mu0", "ct_rs"])
    parent, *children = book
    outcomes, engine = {}, FakeEngine()
    launch._launch_in_waves(engine, book, set(), outcomes, False,
                            launch.ProgressView(sys.stderr, len(book), enabled=False), 0.01)
    assert engine.submitted == [[parent.run_id]]            # the second wave never went out
    assert outcomes[parent.run_id].outcome == "failed"
    assert outcomes[parent.run_id].detail == f"fake job {parent.run_id} ended: node lost"
    assert [outcomes[c.run_id].outcome for c in children] == ["skipped", "skipped"]
    assert all(parent.run_id in outcomes[c.run_id].detail for c in children)
    result = launch.LaunchResult([outcomes[r.run_id] for r in book], 1.0)
    assert not result.ok and str(outcomes[parent.run_id].log) in result.table()


def test_backend_set_up_errors_are_one_line(monkeypatch, capsys):
    from hls.__main__ import main
    darts = ["--profile", "smoke", "--seeds", "0", "--set", "epochs=1",
             "--chapters", "01_motivation", "--methods", "darts"]

    def error(*args):
        assert main(["launch", *args, *darts]) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("hls: error: "), lines
        return lines[0]

    assert "there is no sbatch" in error("--backend", "slurm")    # none on this machine
    assert "--slurm-cluster local" in error("--backend", "slurm")
    assert "--slurm: " in error("--backend", "slurm", "--slurm-cluster", "local",
                                "--slurm", "no_such_option=1")
    assert "--runs-per-gpu" in error("--backend", "slurm", "--slurm-cluster", "local",
                                     "--runs-per-gpu", "2")
    for package, backend in (("submitit", "slurm"), ("ray", "ray")):
        monkeypatch.setitem(sys.modules, package, None)        # as if not installed
        assert f"pip install {package}" in error("--backend", backend)
    assert runs.list_runs() == []                              # nothing was trained


@pytest.fixture(scope="module")
def local_record(tmp_path_factory):
    """The darts smoke run (one epoch, one torch thread) made by the local backend: what the
    other backends must make too."""
    root = tmp_path_factory.mktemp("local-backend")
    with launch.environment(HLS_RUNS=str(root / "runs"), HLS_ARCHIVE=str(root / "results")):
        result = launch.launch("smoke", [0], ONE_EPOCH, chapters=["01_motivation"],
                               methods=["darts"], threads=1, device="cpu", progress=False)
    [outcome] = result.outcomes
    assert outcome.outcome == "trained", outcome.detail
    return record_files(outcome.log.parent)


def assert_same_record(folder, reference):
    made = record_files(folder)
    assert made["eval.json"] == reference["eval.json"]
    assert without_wall_clock(made["metrics.json"]) == \
        without_wall_clock(reference["metrics.json"])


def test_slurm_through_submitits_local_executor_equals_the_local_backend(local_record):
    pytest.importorskip("submitit")
    result = launch.launch("smoke", [0], ONE_EPOCH, backend="slurm", cluster="local",
                           partition="gpu", chapters=["01_motivation"], methods=["darts"],
                           threads=1, device="cpu", progress=False, poll=0.1)
    [outcome] = result.outcomes
    assert result.ok and outcome.outcome == "trained", outcome.detail
    log = outcome.log.read_text()
    assert "(submitit local executor on " in log and "1 torch threads" in log
    assert log.strip().splitlines()[-1].startswith(f"trained {outcome.run.run_id}: epochs 1-1")
    assert_same_record(outcome.log.parent, local_record)
    assert runs.read_json(outcome.log.parent / "facts.json")["torch_threads"] == 1
    again = launch.launch("smoke", [0], ONE_EPOCH, backend="slurm", cluster="local",
                          chapters=["01_motivation"], methods=["darts"], progress=False)
    assert [o.outcome for o in again.outcomes] == ["reused"]


def test_a_requeued_slurm_task_resumes_from_its_epoch_checkpoint():
    """Preempted after its first epoch, the task is requeued through its checkpoint() and
    trains the remaining epochs only."""
    pytest.importorskip("submitit")
    psutil = pytest.importorskip("psutil")
    overrides = {"epochs": 5}
    [run] = plan.book_plan("smoke", [0], overrides, ["01_motivation"], ["darts"])
    engine = launch.SlurmTasks("local", 10, None, None, None, 1, 1, "cpu", "smoke")
    [job] = engine.submit([launch._task(run, engine, retrain=False, local_parent=False)])
    deadline = time.time() + 120
    while time.time() < deadline and runs.status(run.config).get("epoch", 0) < 1:
        time.sleep(0.02)
    # what Slurm sends a job's processes before a preemption or the time limit; the local
    # executor's controller (job._process) restarts a task that exits requeued
    [task] = psutil.Process(job._process.pid).children()
    task.send_signal(signal.SIGUSR2)
    outcome, line = job.result()
    assert (outcome, line.split(":")[0]) == ("trained", f"trained {run.run_id}"), line
    assert " epochs 1-5 " not in line and line.split()[3].endswith("-5"), line
    log = (runs.runs_dir() / run.run_id / "log.txt").read_text()
    assert log.count(f"train-one {run.run_id} (submitit local executor") == 2, log
    assert len(runs.read_run(run.config).history) == 5


@pytest.fixture
def local_ray():
    """A Ray instance of two CPUs for one test, stopped after it, with nothing left running."""
    ray = pytest.importorskip("ray")
    psutil = pytest.importorskip("psutil")
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")      # Ray's socket paths must be short
    ray.init(num_cpus=2, num_gpus=0, include_dashboard=False, log_to_driver=False,
             object_store_memory=80 * 2**20, _temp_dir=temp)
    try:
        yield ray
    finally:
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)

    def ray_processes():
        found = []
        for child in psutil.Process().children(recursive=True):
            try:
                if "ray" in " ".join(child.cmdline()) or child.name().startswith("ray"):
                    found.append(child)
            except psutil.NoSuchProcess:
                pass
        return found
    deadline = time.time() + 15
    while ray_processes() and time.time() < deadline:
        time.sleep(0.2)
    assert not ray_processes(), [p.cmdline() for p in ray_processes()]


@pytest.mark.slow
def test_ray_on_a_local_instance_equals_the_local_backend(local_record, local_ray):
    result = launch.launch("smoke", [0], ONE_EPOCH, backend="ray", chapters=["01_motivation"],
                           methods=["darts"], threads=1, progress=False, poll=0.1)
    [outcome] = result.outcomes
    assert result.ok and outcome.outcome == "trained", outcome.detail
    log = outcome.log.read_text()
    assert "(ray on " in log and "cpu, 1 torch threads" in log
    assert_same_record(outcome.log.parent, local_record)
    assert local_ray.is_initialized()       # the launch used this Ray, and left it running


def test_verify_records_equivalent_code_and_provenance_honours_it(archived, tmp_path):
    """A record made by other code that retrains bit for bit becomes this code's equivalent;
    one that does not stays 'made by other code'."""
    config, _ = archived
    folder = tmp_path / "results" / "smoke" / config.run_id
    facts = json.loads((folder / "facts.json").read_text())
    older = {**facts, "code_fingerprint": "0" * 12}       # as if a refactor came since
    (folder / "facts.json").write_text(json.dumps(older))
    assert not runs.reproducible_here(older)

    ok = cli("verify", "--profile", "smoke", "--methods", "darts", "--seeds", "0", "--set", "epochs=1")
    assert ok.returncode == 0 and "now recorded as equivalent" in ok.stdout, ok.stdout + ok.stderr
    table = json.loads((tmp_path / "results" / runs.EQUIVALENCE_FILE).read_text())
    assert table["search"][runs.current_fingerprint()] == {"0" * 12: [config.run_id]}
    assert runs.reproducible_here(older)
    assert not runs.reproducible_here({**facts, "code_fingerprint": "1" * 12})
    said = provenance._reproducible([runs.load_record(folder)])     # the archive's copy
    assert said.startswith("yes, all 1") and "0" * 12 in said, said


def test_equivalence_is_transitive_and_kept_per_kind(tmp_path, monkeypatch):
    monkeypatch.setenv("HLS_ARCHIVE", str(tmp_path / "results"))
    monkeypatch.setattr(runs, "current_fingerprint", lambda kind="search": "b" * 12)
    runs.record_equivalence("search", "a" * 12, "run-1")           # code b reproduced a's run-1
    monkeypatch.setattr(runs, "current_fingerprint", lambda kind="search": "c" * 12)
    runs.record_equivalence("search", "b" * 12, "run-2")           # code c reproduced b's run-2
    assert runs.equivalent_fingerprints("search", "c" * 12) == {"b" * 12: ["run-2"], "a" * 12: ["run-1"]}
    assert runs.equivalent_fingerprints("retrain", "c" * 12) == {}
    facts = {"code_fingerprint": "a" * 12, "hls": runs.VERSION}
    assert runs.reproducible_here(facts)
    assert not runs.reproducible_here({**facts, "hls": "0.0.0"})    # a new version changed numbers
    monkeypatch.setenv("HLS_ARCHIVE", "off")
    assert not runs.reproducible_here(facts)
