"""Train the book's missing runs side by side, publish them to the archive, verify the archive.

    launch("cpu", workers=2)   every run of plan.book_plan that is neither complete nor archived,
                               each in a fresh `python -m hls train-one <run folder>` process,
                               parents before the continued runs that start from them
    launch("cpu", backend="slurm", partition="gpu")    the same as Slurm job arrays (submitit)
    launch("cpu", backend="ray", runs_per_gpu=2)       the same as Ray tasks, half a GPU each
    publish("cpu")             complete runs of the plan -> results/cpu/<run-id>/
    verify("cpu", ["darts"])   retrain archived runs in a temporary store and compare

Local workers are subprocesses rather than threads or a pool: each run gets its own torch
(threads, CUDA device, allocator) and its own log file, and a killed worker leaves only its run
interrupted, which the next launch resumes from the epoch checkpoint.

The Slurm and Ray backends run the same per-run entry point (train_one: runs.get_run on the
run's folder, output into its log.txt) inside a task of their own: a RunTask. They go in waves
(the runs whose parents need no training, then their children, ...), each wave submitted at
once and awaited before the next, so that a continued run never starts before its parent's
checkpoint exists. The run store must be on a file system that the tasks share with the launch.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import math
import os
import platform
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import plan as planning
from . import runs
from .config import ConfigError
from .plan import PlannedRun, format_seconds

BACKENDS = ("local", "slurm", "ray")
# The package each task backend needs (the `launch` extra of pyproject.toml installs both).
BACKEND_PACKAGES = {"slurm": "submitit", "ray": "ray"}
# A Slurm task's time limit: the paper's longest run (second order, ~2.1 h on an H200) with room
# to spare; a task that reaches it is requeued and resumes from its last epoch checkpoint.
DEFAULT_TIME_LIMIT_MIN = 240
# CPUs (and torch threads) of a Slurm task when --threads is not given: data loading and the
# optimiser's host work for one GPU; the login node's core count says nothing about the nodes'.
SLURM_CPUS_PER_TASK = 8
# Environment a task gets from the launch when set here (HLS_RUNS, HLS_ARCHIVE and HLS_THREADS
# are always set, resolved): where the data comes from and is cached, and the progress bars.
TASK_ENV = ("HLS_DATA_SOURCE", "HLS_HOME", "HLS_PROGRESS")
LOCAL_PARENT_NOTE = ("archived, trained here too: a continued run starts from its checkpoint, "
                     "which the archive does not keep")

# Metric keys that measure time, not the computation: never compared by verify.
WALL_CLOCK_KEYS = ("seconds",)
# verify's tolerance (absolute) when the retraining or the record is not on the CPU.
DEVICE_TOLERANCE = 1e-4


@contextlib.contextmanager
def environment(**values: str | None):
    """Set (or, with None, unset) environment variables for the block."""
    def apply(settings: dict):
        for key, value in settings.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    saved = {key: os.environ.get(key) for key in values}
    apply(values)
    try:
        yield
    finally:
        apply(saved)


# ---- launch


@dataclass
class Outcome:
    run: PlannedRun
    outcome: str                    # trained | reused | failed | skipped
    seconds: float = 0.0
    log: Path | None = None
    detail: str = ""


@dataclass
class LaunchResult:
    outcomes: list[Outcome]
    wall_seconds: float

    @property
    def ok(self) -> bool:
        return all(o.outcome in ("trained", "reused") for o in self.outcomes)

    def table(self) -> str:
        lines = [f"{'method':<20} {'seed':>4}  {'run id':<34} {'outcome':<8} {'time':>12}  notes"]
        for o in self.outcomes:
            note = o.detail
            if o.outcome == "failed" and o.log is not None:
                note = f"{note}; log: {o.log}" if note else f"log: {o.log}"
            time_text = format_seconds(o.seconds) if o.outcome == "trained" else ""
            lines.append(f"{planning.label(o.run):<20} {o.run.seed:>4}  {o.run.run_id:<34} "
                         f"{o.outcome:<8} {time_text:>12}  {note}")
        counts = {k: sum(o.outcome == k for o in self.outcomes)
                  for k in ("trained", "reused", "failed", "skipped")}
        lines.append(", ".join(f"{n} {k}" for k, n in counts.items()) +
                     f"; wall time {format_seconds(self.wall_seconds)}")
        return "\n".join(lines)


@dataclass
class Job:
    """One run being trained: by a worker subprocess, or by a Slurm or Ray task."""
    run: PlannedRun
    proc: subprocess.Popen | Any    # the worker; a submitit job or a Ray ObjectRef for a task
    log: Path
    slot: int
    started: float
    first_epoch: int                # epochs already done when it started (a resumed run)
    epoch: int


def _devices(device: str | None, workers: int | None, runs_per_gpu: int):
    """(device for the workers, number of workers, GPU of each worker slot or None)."""
    from .train import resolve_device
    dev = resolve_device(device)
    if dev.type != "cuda":
        return "cpu", workers or 1, None
    import torch
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    gpus = ([g for g in visible.split(",") if g.strip()] if visible
            else [str(i) for i in range(torch.cuda.device_count())])
    # worker i sees GPU (i // K) % n: K workers in a row share a GPU, and the GPUs fill up
    # one after the other
    workers = workers or len(gpus) * runs_per_gpu
    return "cuda", workers, [gpus[(i // runs_per_gpu) % len(gpus)] for i in range(workers)]


def require_backend(backend: str) -> None:
    """The package a task backend needs, imported now: a missing one is a one-line error
    (exit 2 on the command line) before anything is planned, not a traceback in mid-launch."""
    if backend not in BACKENDS:
        raise ConfigError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    package = BACKEND_PACKAGES.get(backend)
    if package is None:
        return
    try:
        importlib.import_module(package)
    except ImportError:
        raise ConfigError(f"--backend {backend} needs the {package} package, which is not "
                          f"installed: pip install {package} (or pip install -e '.[launch]')") \
            from None


def launch(profile: str | None = None, seeds=None, overrides: dict | None = None,
           backend: str = "local", workers: int | None = None, runs_per_gpu: int = 1,
           device: str | None = None, retrain: bool = False, chapters=None, methods=None,
           threads: int | None = None, progress: bool = True, poll: float = 0.5,
           stream=None, time_limit: int = DEFAULT_TIME_LIMIT_MIN, partition: str | None = None,
           slurm: dict | None = None, cluster: str = "slurm",
           ray_address: str | None = None) -> LaunchResult:
    """Train every run of the plan that is neither complete nor archived; see the module doc.

    workers: parallel runs (default: 1 on the CPU, GPUs x runs_per_gpu with CUDA; for Slurm
    the job arrays' parallelism, default unlimited).
    threads: torch threads per run (default: the CPU cores divided between the workers; a
    Slurm task's CPUs, SLURM_CPUS_PER_TASK; for Ray the cluster's CPUs divided likewise).
    retrain: ignore the archive (HLS_ARCHIVE=off for the plan and the workers).
    A failed run does not stop the others; the continued runs that start from it are skipped.

    Slurm (backend="slurm", one GPU a task; none with device="cpu"): time_limit in minutes,
    partition, slurm: more parameters of submitit's SlurmExecutor ({"account": "me"}, without
    the slurm_ prefix); cluster="local": submitit's local executor, the tasks run here.
    Ray (backend="ray", 1/runs_per_gpu GPU a task): ray_address of a running cluster (default:
    RAY_ADDRESS, else a local instance started for the launch); a Ray already initialised in
    this process is used as it is.
    """
    require_backend(backend)
    if runs_per_gpu < 1 or (workers is not None and workers < 1) or \
            (threads is not None and threads < 1):
        raise ConfigError("--workers, --runs-per-gpu and --threads must be >= 1")
    stream = stream or sys.stderr
    start = time.perf_counter()
    extra_env = {"HLS_ARCHIVE": "off"} if retrain else {}
    with environment(**extra_env):
        plan = planning.book_plan(profile, seeds, overrides, chapters, methods)

    by_id = {r.run_id: r for r in plan}
    todo = [r for r in plan if not r.done]
    # A continued run starts from its parent's checkpoint, which the archive does not keep:
    # an archived parent of a run to train is trained into the local store first (a retraining
    # run reads its parent's genotype from the archive).
    local_parents = {r.parent for r in todo if r.starts_from_parent_checkpoint
                     and by_id[r.parent].state == "archived"}
    todo = [r for r in plan if not r.done or r.run_id in local_parents]
    outcomes = {r.run_id: Outcome(r, "reused") for r in plan if r.run_id not in
                {t.run_id for t in todo}}

    def say(how: str) -> None:
        if progress:
            stream.write(f"launch: {len(todo)} of {len(plan)} runs to train, {how}; logs in "
                         f"each run's folder under {runs.runs_dir()}\n")

    view = ProgressView(stream, len(todo), enabled=progress)
    try:
        if backend == "local":
            dev, workers, gpus = _devices(device, workers, runs_per_gpu)
            threads = threads or max(1, (os.cpu_count() or 1) // workers)
            say(f"{workers} worker(s) on {dev}, {threads} torch thread(s) each")
            _launch_local(todo, local_parents, outcomes, extra_env, workers, dev, gpus, threads,
                          view, poll)
        elif todo:      # no cluster to reach, no Ray to start, when nothing is left to train
            if backend == "slurm":
                engine = SlurmTasks(cluster, time_limit, partition, slurm, workers,
                                    runs_per_gpu, threads, device, profile)
            else:
                engine = RayTasks(ray_address, workers, runs_per_gpu, threads, device)
            try:
                say(engine.describe())
                _launch_in_waves(engine, todo, local_parents, outcomes, retrain, view, poll)
            finally:
                engine.close()
    finally:
        view.close()
    return LaunchResult([outcomes[r.run_id] for r in plan], time.perf_counter() - start)


def _launch_local(todo, local_parents, outcomes, extra_env, workers, dev, gpus, threads, view,
                  poll) -> None:
    """The local backend: up to `workers` train-one subprocesses at once, each run started as
    soon as a worker slot is free and its parent finished."""
    waiting = list(todo)                # in plan order: parents before children
    running: dict[int, Job] = {}        # slot -> job
    try:
        while waiting or running:
            for slot, job in list(running.items()):
                if job.proc.poll() is not None:
                    outcomes[job.run.run_id] = _finish(job)
                    if job.run.run_id in local_parents:
                        outcomes[job.run.run_id].detail = LOCAL_PARENT_NOTE
                    del running[slot]
                    view.event(job, outcomes[job.run.run_id].outcome)
            for run in list(waiting):
                parent = outcomes.get(run.parent) if run.parent else None
                if parent is not None and parent.outcome in ("failed", "skipped"):
                    waiting.remove(run)
                    outcomes[run.run_id] = Outcome(run, "skipped",
                                                   detail=f"parent {run.parent} {parent.outcome}")
                    view.skipped(run)
                    continue
                free = [s for s in range(workers) if s not in running]
                if not free:
                    break
                if run.parent and parent is None:   # the parent is still training
                    continue
                env = {**extra_env, "HLS_THREADS": str(threads)}
                if run.run_id in local_parents:
                    env["HLS_ARCHIVE"] = "off"
                if gpus is not None:
                    env["CUDA_VISIBLE_DEVICES"] = gpus[free[0]]
                running[free[0]] = _start(run, free[0], dev, env)
                waiting.remove(run)
                view.event(running[free[0]], "started")
            view.update(running, waiting, outcomes)
            if waiting or running:
                time.sleep(poll)
    except BaseException:       # Ctrl-C or an error here: stop the workers, keep checkpoints
        for job in running.values():
            job.proc.terminate()
        for job in running.values():
            job.proc.wait()
        raise


def _start(run: PlannedRun, slot: int, device: str, env: dict) -> Job:
    folder = runs.runs_dir() / run.run_id
    folder.mkdir(parents=True, exist_ok=True)
    runs.write_json(folder / "config.json", run.config.to_dict())    # what train-one reads
    log = folder / "log.txt"
    gpu = f", GPU {env['CUDA_VISIBLE_DEVICES']}" if "CUDA_VISIBLE_DEVICES" in env else ""
    with open(log, "a") as out:     # the child holds its own descriptor; appended on resume
        out.write(f"---- {time.strftime('%Y-%m-%d %H:%M:%S')} train-one {run.run_id} "
                  f"({device}, {env['HLS_THREADS']} torch threads{gpu})\n")
        out.flush()
        proc = subprocess.Popen(
            [sys.executable, "-m", "hls", "train-one", str(folder), "--device", device],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **env})
    epoch = _epoch(run)
    return Job(run, proc, log, slot, time.perf_counter(), epoch, epoch)


def _epoch(run: PlannedRun) -> int:
    """Epochs the run has finished, from its status.json (0 when unreadable mid-write)."""
    try:
        return int(runs.status(run.config).get("epoch") or 0)
    except (runs.RecordError, ValueError, TypeError):
        return 0


def _finish(job: Job) -> Outcome:
    seconds = time.perf_counter() - job.started
    last = _last_line(job.log)
    if job.proc.returncode == 0:
        # train-one says "reused" when another process finished the run while it waited
        outcome = "reused" if last.startswith("reused") else "trained"
        return Outcome(job.run, outcome, seconds, job.log)
    return Outcome(job.run, "failed", seconds, job.log,
                   detail=f"exit {job.proc.returncode}: {last}" if last else
                   f"exit {job.proc.returncode}")


def _last_line(path: Path) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(max(0, f.seek(0, 2) - 4096))
            lines = [ln.strip() for ln in f.read().decode(errors="replace").splitlines()]
    except OSError:
        return ""
    lines = [ln for ln in lines if ln and not ln.startswith("----")]
    return lines[-1][:200] if lines else ""


class ProgressView:
    """The launch on stderr: in a terminal a block redrawn in place every few seconds (one line
    per running run, then the counts); elsewhere (logs, CI) a line only when something changes."""

    def __init__(self, stream, total: int, enabled: bool = True, every: float = 2.0):
        self.stream, self.total, self.enabled, self.every = stream, total, enabled, every
        self.tty = hasattr(stream, "isatty") and stream.isatty()
        self.drawn = 0              # lines of the block on screen (terminal)
        self.last_draw = 0.0
        self.epochs: dict[str, int] = {}

    def _line(self, job: Job) -> str:
        run, elapsed = job.run, time.perf_counter() - job.started
        done = job.epoch - job.first_epoch
        if done > 0:
            left = elapsed / done * (run.config.epochs - job.epoch)
        elif run.est_seconds is not None:
            left = max(0.0, run.est_seconds - elapsed)
        else:
            left = None
        left_text = f"~{format_seconds(left)} left" if left is not None else "time left unknown"
        if job.epoch >= run.config.epochs:
            left_text = "evaluating"
        return (f"  {planning.label(run):<20} seed {run.seed:<3} {run.run_id:<34} "
                f"epoch {job.epoch}/{run.config.epochs}  {format_seconds(elapsed)} elapsed, "
                f"{left_text}")

    @staticmethod
    def _counts(running, waiting, outcomes) -> str:
        n = {k: sum(o.outcome == k for o in outcomes.values())
             for k in ("trained", "reused", "failed", "skipped")}
        return (f"[{n['trained']} trained, {n['reused']} reused, {len(running)} running, "
                f"{len(waiting)} waiting, {n['failed']} failed, {n['skipped']} skipped]")

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()

    def event(self, job: Job, what: str, note: str = "") -> None:
        """A run started (or was submitted, as `note`) or ended (not in a terminal: one line
        each)."""
        if not self.enabled or self.tty:
            return
        if what in ("started", "submitted"):
            how = f" as {note}" if note else ""
            self._write(f"{what} {planning.label(job.run)} seed {job.run.seed} "
                        f"{job.run.run_id}{how} (log {job.log})\n")
        else:
            elapsed = format_seconds(time.perf_counter() - job.started)
            where = f", log {job.log}" if what == "failed" else ""
            self._write(f"{what} {planning.label(job.run)} seed {job.run.seed} "
                        f"{job.run.run_id} in {elapsed}{where}\n")

    def skipped(self, run: PlannedRun) -> None:
        if self.enabled and not self.tty:
            self._write(f"skipped {planning.label(run)} seed {run.seed} {run.run_id}: its "
                        f"parent {run.parent} did not finish\n")

    def update(self, running: dict[int, Job], waiting, outcomes) -> None:
        for job in running.values():
            job.epoch = max(job.epoch, _epoch(job.run))
        if not self.enabled:
            return
        if not self.tty:    # an epoch finished: one line
            for job in running.values():
                if self.epochs.get(job.run.run_id) != job.epoch:
                    self.epochs[job.run.run_id] = job.epoch
                    self._write(self._line(job).strip() + "  " +
                                self._counts(running, waiting, outcomes) + "\n")
            return
        now = time.perf_counter()
        if now - self.last_draw < self.every:
            return
        self.last_draw = now
        block = [self._line(j) for _, j in sorted(running.items())]
        block.append(self._counts(running, waiting, outcomes))
        clear = f"\x1b[{self.drawn}F\x1b[J" if self.drawn else ""   # up, then clear below
        self._write(clear + "\n".join(block) + "\n")
        self.drawn = len(block)

    def close(self) -> None:
        if self.enabled and self.tty and self.drawn:
            self._write(f"\x1b[{self.drawn}F\x1b[J")
            self.drawn = 0


# ---- the task backends: Slurm (submitit) and Ray


def waves(todo: list[PlannedRun]) -> list[list[PlannedRun]]:
    """The runs to train in rounds, plan order within each: first the runs whose parent needs
    no training (none, or done), then the runs whose parent is in the round before, and so on."""
    depth: dict[str, int] = {}
    for run in todo:                    # plan order: a parent comes before its children
        depth[run.run_id] = depth[run.parent] + 1 if run.parent in depth else 0
    rounds = max(depth.values(), default=-1) + 1
    return [[r for r in todo if depth[r.run_id] == d] for d in range(rounds)]


def _first_line(exc: BaseException) -> str:
    """An error as the closing table's notes show it: its first line."""
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


@contextlib.contextmanager
def _output_into(log: Path):
    """This process's output (Python's, and the C libraries' on file descriptors 1 and 2) appended
    to `log` for the block: a task's run log is what a local worker's would be, and nothing of
    it is lost in the engine's own logs."""
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    saved = [os.dup(1), os.dup(2)]
    with open(log, "a", buffering=1) as out:
        os.dup2(out.fileno(), 1)
        os.dup2(out.fileno(), 2)
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
                yield
        finally:
            out.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)


# What the command line ends with one line rather than a traceback (as hls.__main__.main does:
# ConfigError, DataError and RecordError are ValueErrors).
EXPECTED_ERRORS = (ValueError, runs.RunFailed, runs.RunBusy)


@dataclass
class RunTask:
    """One run as a Slurm or Ray task: train_one on the run's folder, with the launch's
    environment, output into the folder's log.txt.

    Returns (outcome, line): "trained" or "reused" and train_one's line, or "failed" and the
    error. A failed run is a value, not an exception, so that the launch goes on with the others.

    checkpoint() is submitit's requeue protocol (that of submitit.helpers.Checkpointable,
    followed without subclassing it so that hls imports without submitit): on preemption, or
    shortly before the time limit, submitit calls it and requeues what it returns, this same
    task; get_run then resumes the run from its last epoch checkpoint.
    """
    folder: str
    device: str | None              # None: HLS_DEVICE or auto, decided where the task runs
    env: dict[str, str]
    where: str                      # the engine, for the log's header line

    def __call__(self) -> tuple[str, str]:
        folder = Path(self.folder)
        with environment(**self.env), _output_into(folder / "log.txt"):
            gpu = os.environ.get("CUDA_VISIBLE_DEVICES")
            print(f"---- {time.strftime('%Y-%m-%d %H:%M:%S')} train-one {folder.name} "
                  f"({self.where} on {platform.node()} pid {os.getpid()}, "
                  f"{self.device or 'auto'}, {self.env['HLS_THREADS']} torch threads"
                  f"{f', GPU {gpu}' if gpu else ''})", flush=True)
            try:
                line = train_one(folder, self.device)
            except Exception as exc:    # not SystemExit: submitit's requeue leaves through it
                if not isinstance(exc, EXPECTED_ERRORS):
                    traceback.print_exc()
                print(f"hls: error: {exc}", flush=True)
                return "failed", f"hls: error: {_first_line(exc)}"
            print(line, flush=True)
        return ("reused" if line.startswith("reused") else "trained"), line

    def checkpoint(self, *args, **kwargs):
        from submitit.helpers import DelayedSubmission
        return DelayedSubmission(self, *args, **kwargs)


def _task(run: PlannedRun, engine, retrain: bool, local_parent: bool) -> RunTask:
    """The RunTask of one run, with everything the task needs from this process spelled out:
    a task may start on another machine, in an environment of its own."""
    folder = (runs.runs_dir() / run.run_id).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    runs.write_json(folder / "config.json", run.config.to_dict())    # what train_one reads
    archive = runs.archive_dir()
    env = {"HLS_THREADS": str(engine.threads), "HLS_RUNS": str(runs.runs_dir().resolve()),
           "HLS_ARCHIVE": ("off" if retrain or local_parent or archive is None
                           else str(archive.resolve()))}
    for key in TASK_ENV:
        if os.environ.get(key):
            env[key] = os.environ[key]
    if "HLS_DATA_SOURCE" in env:    # a relative path means the same file from any directory
        from .data import source_path
        path = source_path(env["HLS_DATA_SOURCE"])
        if path.exists():
            env["HLS_DATA_SOURCE"] = str(path.resolve())
    return RunTask(str(folder), engine.device, env, engine.where)


def _launch_in_waves(engine, todo, local_parents, outcomes, retrain, view, poll) -> None:
    """Slurm and Ray: each wave of runs submitted at once, awaited, then the next; a run whose
    parent failed or was skipped is skipped. Ctrl-C or an error here cancels the tasks (their
    epoch checkpoints stay, for the next launch)."""
    rounds = waves(todo)
    running: dict[int, Job] = {}
    try:
        for i, wave in enumerate(rounds):
            ready = []
            for run in wave:
                parent = outcomes.get(run.parent) if run.parent else None
                if parent is not None and parent.outcome in ("failed", "skipped"):
                    outcomes[run.run_id] = Outcome(run, "skipped",
                                                   detail=f"parent {run.parent} {parent.outcome}")
                    view.skipped(run)
                else:
                    ready.append(run)
            if not ready:
                continue
            try:
                handles = engine.submit([_task(r, engine, retrain, r.run_id in local_parents)
                                         for r in ready])
            except Exception as exc:
                # refused (sbatch and a bad partition, say): these runs fail, and the launch
                # goes on to its table, which says why
                for run in ready:
                    outcomes[run.run_id] = Outcome(run, "failed",
                                                   detail=f"not submitted: {_first_line(exc)}")
                continue
            for slot, (run, handle) in enumerate(zip(ready, handles)):
                epoch = _epoch(run)
                running[slot] = Job(run, handle, runs.runs_dir() / run.run_id / "log.txt", slot,
                                    time.perf_counter(), epoch, epoch)
                view.event(running[slot], "submitted", engine.name(handle))
            waiting = [r for later in rounds[i + 1:] for r in later]
            while running:
                for slot, job in list(running.items()):
                    if engine.done(job.proc):
                        outcome = _task_outcome(engine, job)
                        if job.run.run_id in local_parents and outcome.outcome == "trained":
                            outcome.detail = LOCAL_PARENT_NOTE
                        outcomes[job.run.run_id] = outcome
                        del running[slot]
                        view.event(job, outcome.outcome)
                view.update(running, waiting, outcomes)
                if running:
                    time.sleep(poll)
    except BaseException:
        engine.cancel([job.proc for job in running.values()])
        raise


def _task_outcome(engine, job: Job) -> Outcome:
    seconds = time.perf_counter() - job.started
    try:
        outcome, line = engine.result(job.proc)
    except Exception as exc:    # the task itself died: killed, out of memory, timed out too often
        return Outcome(job.run, "failed", seconds, job.log,
                       detail=f"{engine.name(job.proc)} ended: {_first_line(exc)}"
                              f"{engine.more_logs(job.proc)}")
    return Outcome(job.run, outcome, seconds, job.log,
                   detail=line[:200] if outcome == "failed" else "")


def setting_value(text: str):
    """A `--slurm key=value` value: JSON where it parses (8, true, {"reservation": "x"}),
    else the text itself (32G, gpu-long)."""
    try:
        return json.loads(text)
    except ValueError:
        return text


class SlurmTasks:
    """Runs as submitit jobs: one job array per wave, a task per run with one GPU (none with
    device "cpu"), `threads` CPUs and torch threads and a time limit; requeued on preemption or
    at the time limit (RunTask.checkpoint). cluster="local": submitit's local executor, which
    runs each task here as a process of its own, requeues included (the tests use it)."""

    # SlurmExecutor takes these when it is made, not through update_parameters
    CONSTRUCTOR = ("max_num_timeout", "python")

    def __init__(self, cluster: str, time_limit: int, partition: str | None,
                 params: dict | None, workers: int | None, runs_per_gpu: int,
                 threads: int | None, device: str | None, profile: str | None):
        import submitit
        if cluster not in ("slurm", "local"):
            raise ConfigError(f"unknown submitit cluster {cluster!r}; choose slurm (sbatch) "
                              "or local (submitit's local executor, tasks run here)")
        if cluster == "slurm" and shutil.which("sbatch") is None:
            raise ConfigError("--backend slurm: there is no sbatch on this machine's PATH; "
                              "launch from a Slurm login node, or add --slurm-cluster local to "
                              "run the tasks here through submitit's local executor")
        if runs_per_gpu != 1:
            raise ConfigError("--backend slurm gives each task a GPU of its own; --runs-per-gpu "
                              "is for the local and ray backends")
        if time_limit < 1:
            raise ConfigError(f"--time-limit is in minutes and must be >= 1 (got {time_limit})")
        if cluster == "local":      # the tasks run here: this machine's device and cores
            self.device = _devices(device, 1, 1)[0]
            self.threads = threads or max(1, (os.cpu_count() or 1) // (workers or 1))
        else:                       # a Slurm task asks for a GPU and trains on it
            self.device = device or os.environ.get("HLS_DEVICE") or "cuda"
            self.threads = threads or SLURM_CPUS_PER_TASK
        self.cluster, self.time_limit, self.partition = cluster, time_limit, partition
        self.where = "slurm" if cluster == "slurm" else "submitit local executor"
        # submitit's own files (pickled tasks, results, its logs) beside the runs: on the
        # shared file system the tasks write their records to
        self.folder = runs.runs_dir() / ".submitit"
        params = {key: setting_value(v) if isinstance(v, str) else v
                  for key, v in (params or {}).items()}
        made_with = {f"{cluster}_{k}": params.pop(k) for k in self.CONSTRUCTOR if k in params}
        settings = {"name": f"hls-{profile or 'runs'}", "timeout_min": time_limit, "nodes": 1,
                    "tasks_per_node": 1, "gpus_per_node": 0 if self.device == "cpu" else 1,
                    "cpus_per_task": self.threads}
        if partition:
            settings["slurm_partition"] = partition
        if workers:
            settings["slurm_array_parallelism"] = workers
        settings.update({f"slurm_{key}": value for key, value in params.items()})
        try:
            self.executor = submitit.AutoExecutor(folder=self.folder / "%j", cluster=cluster,
                                                  **made_with)
            self.executor.update_parameters(**settings)
        except (NameError, ValueError, TypeError, AssertionError) as exc:
            raise ConfigError(f"--slurm: {_first_line(exc)}; the keys are submitit SlurmExecutor "
                              "parameters (sbatch options with _ for -: account, qos, mem, "
                              "constraint, gres, ...)") from None

    def describe(self) -> str:
        gpu = "no GPU" if self.device == "cpu" else "1 GPU"
        where = (f"as Slurm job arrays (one a wave) on partition {self.partition}"
                 if self.partition else "as Slurm job arrays (one a wave)")
        if self.cluster == "local":
            where = "through submitit's local executor (the tasks run here, a wave at once)"
        return (f"{where}: {gpu}, {self.threads} CPU(s) and torch thread(s) a task, "
                f"{self.time_limit} min time limit (requeued past it); submitit's files in "
                f"{self.folder}")

    def submit(self, tasks: list[RunTask]) -> list:
        with self.executor.batch():     # one job array
            jobs = [self.executor.submit(task) for task in tasks]
        return jobs

    def name(self, job) -> str:
        return f"{'slurm' if self.cluster == 'slurm' else 'submitit local'} job {job.job_id}"

    def done(self, job) -> bool:
        return job.done()

    def result(self, job) -> tuple[str, str]:
        return job.result()

    def more_logs(self, job) -> str:
        return f"; submitit's log {job.paths.stderr}"

    def cancel(self, jobs: list) -> None:
        for job in jobs:
            job.cancel(check=False)

    def close(self) -> None:
        pass


def _ray_task(task: RunTask) -> tuple[str, str]:
    """What a Ray worker runs (a module-level function: Ray pickles it by name)."""
    return task()


class RayTasks:
    """Runs as Ray tasks, each in a fresh worker process (max_calls=1: its own torch, its GPU
    memory returned at the end) holding 1/runs_per_gpu of a GPU (none on the CPU) and `threads`
    CPUs; Ray queues the tasks that do not fit the cluster yet."""

    where = "ray"

    def __init__(self, address: str | None, workers: int | None, runs_per_gpu: int,
                 threads: int | None, device: str | None):
        import ray
        self.ray = ray
        self.started = not ray.is_initialized()
        if self.started:
            # the runs' output goes to their logs, not this terminal; no dashboard to serve
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
        try:
            resources = ray.cluster_resources()
            cpus, gpus = int(resources.get("CPU", 1)), int(resources.get("GPU", 0))
            device = device or os.environ.get("HLS_DEVICE") or "auto"
            self.device = ("cuda" if gpus else "cpu") if device == "auto" else device
            if self.device != "cpu" and not gpus:
                raise ConfigError(f"--device {self.device}: the Ray cluster has no GPU; use "
                                  "--device cpu")
            # runs at once: workers when given, else every GPU share (one run on the CPU)
            slots = workers or (gpus * runs_per_gpu if self.device != "cpu" else 1)
            self.threads = threads or max(1, cpus // slots)
            if self.threads > cpus:
                raise ConfigError(f"--threads {self.threads}: the Ray cluster has {cpus} CPUs")
        except BaseException:
            self.close()
            raise
        self.gpu_share = 0 if self.device == "cpu" else 1 / runs_per_gpu
        self.cluster = f"{cpus} CPUs, {gpus} GPUs"
        self.remote = ray.remote(num_gpus=self.gpu_share, num_cpus=self.threads,
                                 max_calls=1)(_ray_task)

    def describe(self) -> str:
        gpu = "no GPU" if not self.gpu_share else f"{self.gpu_share:g} GPU"
        where = "a local Ray instance" if self.started else "the Ray cluster"
        return (f"as Ray tasks on {where} ({self.cluster}): {gpu} and {self.threads} CPU(s) "
                f"and torch thread(s) a task")

    def submit(self, tasks: list[RunTask]) -> list:
        return [self.remote.remote(task) for task in tasks]

    def name(self, ref) -> str:
        return f"ray task {ref.task_id().hex()[:12]}"

    def done(self, ref) -> bool:
        ready, _ = self.ray.wait([ref], timeout=0)
        return bool(ready)

    def result(self, ref) -> tuple[str, str]:
        return self.ray.get(ref)

    def more_logs(self, ref) -> str:
        return "; Ray's worker logs under /tmp/ray/session_latest/logs"

    def cancel(self, refs: list) -> None:
        for ref in refs:
            self.ray.cancel(ref, force=True)

    def close(self) -> None:
        if self.started and self.ray.is_initialized():     # ours: stop it, leave nothing behind
            self.ray.shutdown()


# ---- publish: complete runs of the plan into the archive


def publish(profile: str | None = None, seeds=None, overrides: dict | None = None,
            chapters=None, methods=None) -> list[tuple[PlannedRun, str]]:
    """Copy every complete plan run from the store into <archive>/<profile>/<run-id>/.

    Returns (run, "published" | "unchanged") per copied run; runs not complete are left out."""
    from .experiments import check_profile
    profile = check_profile(profile)
    archive = runs.archive_dir()
    if archive is None:
        raise ConfigError("HLS_ARCHIVE=off: there is no archive to publish to; unset "
                          "HLS_ARCHIVE (results/ in the repository) or set it to a folder")
    done = []
    for run in planning.book_plan(profile, seeds, overrides, chapters, methods):
        source = runs.runs_dir() / run.run_id
        if runs._status(source).get("state") != "complete":
            continue
        runs.load_record(source)        # a damaged record is never published
        done.append((run, publish_run(source, archive / profile / run.run_id)))
    return done


def publish_run(source: Path, target: Path) -> str:
    """Copy one run's record files to `target` atomically: a temporary folder, then a rename.
    An identical copy already there is left alone ("unchanged")."""
    files = _record_files(source)
    if target.is_dir() and all((target / name).is_file() and
                               (target / name).read_bytes() == (source / name).read_bytes()
                               for name in files):
        return "unchanged"
    target.parent.mkdir(parents=True, exist_ok=True)
    tag = f"{os.getpid()}.{secrets.token_hex(4)}"
    tmp = target.with_name(f".{target.name}.{tag}.tmp")
    tmp.mkdir()
    try:
        for name in files:
            shutil.copy2(source / name, tmp / name)
        if target.exists():             # replace: the old copy out of the way, the new one in
            old = target.with_name(f".{target.name}.{tag}.old")
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old)
        else:
            os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return "published"


def _record_files(folder: Path) -> tuple[str, ...]:
    """The record files of the run in `folder`, by the kind its config.json names."""
    kind = runs.read_json(folder / "config.json").get("kind")
    return runs.RETRAIN_RECORD_FILES if kind == "retrain" else runs.RECORD_FILES


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def format_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


# ---- verify: retrain archived runs and compare


@dataclass
class Check:
    run: PlannedRun
    matches: bool
    detail: str                 # "matches", or the first differing key and the two values
    exact: bool                 # compared bit for bit (CPU) or within DEVICE_TOLERANCE


def first_difference(a, b, path: str = "", tolerance: float | None = None,
                     skip: tuple[str, ...] = ()) -> str | None:
    """The first place where two JSON values differ ("metrics[2].val_loss: x vs y"), or None.
    Numbers: equal exactly, or within `tolerance` (absolute) when given."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in [*a, *(k for k in b if k not in a)]:
            if key in skip:
                continue
            if key not in a or key not in b:
                return f"{path}.{key}: {'missing' if key not in a else a[key]!r} vs " \
                       f"{'missing' if key not in b else b[key]!r}"
            found = first_difference(a[key], b[key], f"{path}.{key}", tolerance, skip)
            if found:
                return found
        return None
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return f"{path}: {len(a)} entries vs {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            found = first_difference(x, y, f"{path}[{i}]", tolerance, skip)
            if found:
                return found
        return None
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (a, b))
    if numbers and tolerance is not None:
        same = (math.isnan(a) and math.isnan(b)) or abs(a - b) <= tolerance
    elif numbers:
        same = a == b or (math.isnan(a) and math.isnan(b))
    else:
        same = a == b and type(a) is type(b)
    return None if same else f"{path}: {a!r} vs {b!r}"


def verify(profile: str | None = None, methods=None, seeds=None, overrides: dict | None = None,
           device: str = "cpu", stream=None) -> list[Check]:
    """Retrain each archived run of the plan (of `methods`, `seeds`) in a temporary store and
    compare metrics.json (but wall-clock keys) and eval.json with the archive's.

    On the CPU, with the record's torch thread count (the CPU result depends on it), they must
    be equal bit for bit; when the record or the retraining is on another device, within
    DEVICE_TOLERANCE."""
    stream = stream or sys.stderr
    archived = [(r, runs.archived_folder(r.run_id))
                for r in planning.book_plan(profile, seeds, overrides, methods=methods)
                if methods is None or r.method in methods]
    archived = [(r, folder) for r, folder in archived if folder is not None]
    if not archived:
        raise runs.MissingRun(f"no archived run of profile {profile} matches methods "
                              f"{methods or 'all'} and seeds {seeds or 'the profile'}; "
                              "publish them first (python -m hls publish)")
    checks = []
    with tempfile.TemporaryDirectory(prefix="hls-verify-") as store:
        for run, folder in archived:    # plan order: a verified parent is reused by its child
            _provide_parent_record(run, Path(store))
            facts = runs.read_json(folder / "facts.json")
            threads = facts.get("torch_threads") or (os.cpu_count() or 1)
            exact = facts.get("device", "cpu") == "cpu" and device == "cpu"
            print(f"verify: retraining {planning.label(run)} seed {run.seed} {run.run_id} on "
                  f"{device} with {threads} torch threads", file=stream, flush=True)
            result = subprocess.run(
                [sys.executable, "-m", "hls", "train-one", str(folder / "config.json"),
                 "--device", device], capture_output=True, text=True,
                env={**os.environ, "HLS_RUNS": store, "HLS_ARCHIVE": "off",
                     "HLS_THREADS": str(threads), "HLS_PROGRESS": "0"})
            if result.returncode != 0:
                last = (result.stderr.strip() or result.stdout.strip()).splitlines()
                checks.append(Check(run, False, f"retraining failed: "
                                    f"{last[-1] if last else result.returncode}", exact))
                continue
            fresh = Path(store) / run.run_id
            tolerance = None if exact else DEVICE_TOLERANCE
            diff = None
            for name, skip in (("metrics.json", WALL_CLOCK_KEYS), ("eval.json", ())):
                diff = first_difference(runs.read_json(folder / name),
                                        runs.read_json(fresh / name), name.split(".")[0],
                                        tolerance, skip)
                if diff:
                    break
            kind = runs.record_kind(facts)
            if diff and not runs.reproducible_here(facts):
                diff += (f" (the record was made by other code: fingerprint "
                         f"{facts.get('code_fingerprint')}, hls {facts.get('hls')}; "
                         f"this code: {runs.current_fingerprint(kind)})")
            detail = diff or "matches"
            if diff is None and exact and facts.get("code_fingerprint") != runs.current_fingerprint(kind):
                # same numbers from changed code: the record's code is this code's equivalent
                runs.record_equivalence(kind, facts["code_fingerprint"], run.run_id)
                detail += (f" (made by code {facts['code_fingerprint']}: now recorded as "
                           f"equivalent in {runs.EQUIVALENCE_FILE})")
            checks.append(Check(run, diff is None, detail, exact))
    return checks


def _provide_parent_record(run: PlannedRun, store: Path) -> None:
    """A retraining run reads only its parent's genotype: the archived parent's record is copied
    into the temporary store (unless verify retrained it there already), rather than the search
    being trained again."""
    if run.config.parent is None or run.starts_from_parent_checkpoint:
        return
    parent = run.config.parent.run_id
    archived = runs.archived_folder(parent)
    if archived is not None and runs._status(store / parent).get("state") != "complete":
        publish_run(archived, store / parent)


def verify_table(checks: list[Check]) -> str:
    lines = [f"{'run id':<34} {'method':<20} {'seed':>4}  {'compared':<14} result"]
    for c in checks:
        how = "bit for bit" if c.exact else f"within {DEVICE_TOLERANCE:g}"
        lines.append(f"{c.run.run_id:<34} {planning.label(c.run):<20} {c.run.seed:>4}  "
                     f"{how:<14} {c.detail}")
    bad = sum(not c.matches for c in checks)
    lines.append(f"{len(checks) - bad} of {len(checks)} match")
    return "\n".join(lines)


def train_one(config_path, device: str | None = None) -> str:
    """The per-run entry point of every backend (`python -m hls train-one`, a Slurm or Ray
    task): train, resume or reuse the config in a run folder with runs.get_run, at HLS_THREADS
    torch threads when set. Returns the line saying which ("trained <id>: epochs 2-3 of 3 ..."
    or "reused <id>: complete in <folder>")."""
    threads = os.environ.get("HLS_THREADS")
    if threads:     # the launcher divides the cores between its workers
        import torch
        if not threads.isdigit() or int(threads) < 1:
            raise ConfigError(f"HLS_THREADS must be a whole number >= 1 (got {threads!r})")
        torch.set_num_threads(int(threads))
    config = read_config_file(config_path)
    epochs = []
    start = time.perf_counter()
    record = runs.get_run(config, device, on_epoch=lambda e: epochs.append(e["epoch"]))
    if epochs:
        if runs.is_retraining(config):
            headline = f"{100 * record.eval['acc']:.2f}% (trained from scratch)"
        else:
            headline = f"{100 * record.eval['paper_protocol']['acc']:.2f}% (paper protocol)"
        return (f"trained {config.run_id}: epochs {epochs[0]}-{epochs[-1]} of {config.epochs} "
                f"in {time.perf_counter() - start:.0f} s, test acc {headline}")
    return f"reused {config.run_id}: complete in {record.path}"


def read_config_file(path: Path):
    """The RunConfig (or, for "kind": "retrain", the RetrainConfig) in a config.json or a run
    folder holding one, checked against the folder's name when that is a run id."""
    path = Path(path)
    file = path / "config.json" if path.is_dir() else path
    try:
        config = runs.config_from_dict(json.loads(file.read_text()))
    except FileNotFoundError:
        raise ConfigError(f"{file} does not exist; give a run folder or its config.json") \
            from None
    except (ValueError, TypeError) as exc:
        raise runs.RecordError(f"{file} is not a valid run config ({exc}); write it with "
                               "the config's to_dict()") from None
    folder = file.parent.name
    if "-" in folder and folder.split("-")[0] == config.method and folder != config.run_id:
        raise runs.RecordError(f"{file} has run id {config.run_id}, not its folder's "
                               f"{folder}: it was written by another version of hls; delete "
                               "the folder and launch again")
    return config
