"""Train the book's missing runs side by side, publish them to the archive, verify the archive.

    launch("cpu", workers=2)   every run of plan.book_plan that is neither complete nor archived,
                               each in a fresh `python -m hls train-one <run folder>` process,
                               parents before the continued runs that start from them
    publish("cpu")             complete runs of the plan -> results/cpu/<run-id>/
    verify("cpu", ["darts"])   retrain archived runs in a temporary store and compare

Workers are subprocesses rather than threads or a pool: each run gets its own torch (threads,
CUDA device, allocator) and its own log file, and a killed worker leaves only its run
interrupted, which the next launch resumes from the epoch checkpoint.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from . import plan as planning
from . import runs
from .config import ConfigError
from .plan import PlannedRun, format_seconds

BACKENDS = ("local",)       # slurm and ray come later (issue 16)

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
        lines = [f"{'method':<16} {'seed':>4}  {'run id':<28} {'outcome':<8} {'time':>12}  notes"]
        for o in self.outcomes:
            note = o.detail
            if o.outcome == "failed" and o.log is not None:
                note = f"{note}; log: {o.log}" if note else f"log: {o.log}"
            time_text = format_seconds(o.seconds) if o.outcome == "trained" else ""
            lines.append(f"{planning.label(o.run):<16} {o.run.seed:>4}  {o.run.run_id:<28} "
                         f"{o.outcome:<8} {time_text:>12}  {note}")
        counts = {k: sum(o.outcome == k for o in self.outcomes)
                  for k in ("trained", "reused", "failed", "skipped")}
        lines.append(", ".join(f"{n} {k}" for k, n in counts.items()) +
                     f"; wall time {format_seconds(self.wall_seconds)}")
        return "\n".join(lines)


@dataclass
class Job:
    """One run being trained by one worker subprocess."""
    run: PlannedRun
    proc: subprocess.Popen
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


def launch(profile: str | None = None, seeds=None, overrides: dict | None = None,
           backend: str = "local", workers: int | None = None, runs_per_gpu: int = 1,
           device: str | None = None, retrain: bool = False, chapters=None, methods=None,
           threads: int | None = None, progress: bool = True, poll: float = 0.5,
           stream=None) -> LaunchResult:
    """Train every run of the plan that is neither complete nor archived; see the module doc.

    workers: parallel runs (default: 1 on the CPU, GPUs x runs_per_gpu with CUDA).
    threads: torch threads per run (default: the CPU cores divided between the workers).
    retrain: ignore the archive (HLS_ARCHIVE=off for the plan and the workers).
    A failed run does not stop the others; the continued runs that start from it are skipped.
    """
    if backend not in BACKENDS:
        raise ConfigError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if runs_per_gpu < 1 or (workers is not None and workers < 1):
        raise ConfigError("--workers and --runs-per-gpu must be >= 1")
    stream = stream or sys.stderr
    start = time.perf_counter()
    extra_env = {"HLS_ARCHIVE": "off"} if retrain else {}
    with environment(**extra_env):
        plan = planning.book_plan(profile, seeds, overrides, chapters, methods)
    dev, workers, gpus = _devices(device, workers, runs_per_gpu)
    threads = threads or max(1, (os.cpu_count() or 1) // workers)

    by_id = {r.run_id: r for r in plan}
    todo = [r for r in plan if not r.done]
    # A continued run starts from its parent's checkpoint, which the archive does not keep:
    # an archived parent of a run to train is trained into the local store first.
    local_parents = {r.parent for r in todo if r.parent and by_id[r.parent].state == "archived"}
    todo = [r for r in plan if not r.done or r.run_id in local_parents]
    outcomes = {r.run_id: Outcome(r, "reused") for r in plan if r.run_id not in
                {t.run_id for t in todo}}

    if progress:
        stream.write(f"launch: {len(todo)} of {len(plan)} runs to train, {workers} worker(s) "
                     f"on {dev}, {threads} torch thread(s) each; logs in each run's folder "
                     f"under {runs.runs_dir()}\n")
    waiting = list(todo)                # in plan order: parents before children
    running: dict[int, Job] = {}        # slot -> job
    view = ProgressView(stream, len(todo), enabled=progress)
    try:
        while waiting or running:
            for slot, job in list(running.items()):
                if job.proc.poll() is not None:
                    outcomes[job.run.run_id] = _finish(job)
                    if job.run.run_id in local_parents:
                        outcomes[job.run.run_id].detail = (
                            "archived, trained here too: a continued run starts from its "
                            "checkpoint, which the archive does not keep")
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
    finally:
        view.close()
    return LaunchResult([outcomes[r.run_id] for r in plan], time.perf_counter() - start)


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
        return (f"  {planning.label(run):<16} seed {run.seed:<3} {run.run_id:<28} "
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

    def event(self, job: Job, what: str) -> None:
        """A run started or ended (not in a terminal: one line each)."""
        if not self.enabled or self.tty:
            return
        if what == "started":
            self._write(f"started {planning.label(job.run)} seed {job.run.seed} "
                        f"{job.run.run_id} (log {job.log})\n")
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
    if target.is_dir() and all((target / name).is_file() and
                               (target / name).read_bytes() == (source / name).read_bytes()
                               for name in runs.RECORD_FILES):
        return "unchanged"
    target.parent.mkdir(parents=True, exist_ok=True)
    tag = f"{os.getpid()}.{secrets.token_hex(4)}"
    tmp = target.with_name(f".{target.name}.{tag}.tmp")
    tmp.mkdir()
    try:
        for name in runs.RECORD_FILES:
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
            if diff and not runs.reproducible_here(facts):
                diff += (f" (the record was made by other code: fingerprint "
                         f"{facts.get('code_fingerprint')}, hls {facts.get('hls')}; "
                         f"this code: {runs.current_fingerprint()})")
            checks.append(Check(run, diff is None, diff or "matches", exact))
    return checks


def verify_table(checks: list[Check]) -> str:
    lines = [f"{'run id':<28} {'method':<16} {'seed':>4}  {'compared':<14} result"]
    for c in checks:
        how = "bit for bit" if c.exact else f"within {DEVICE_TOLERANCE:g}"
        lines.append(f"{c.run.run_id:<28} {planning.label(c.run):<16} {c.run.seed:>4}  "
                     f"{how:<14} {c.detail}")
    bad = sum(not c.matches for c in checks)
    lines.append(f"{len(checks) - bad} of {len(checks)} match")
    return "\n".join(lines)


def read_config_file(path: Path):
    """The RunConfig in a config.json (or a run folder holding one), checked against the
    folder's name when that is a run id."""
    from .config import RunConfig
    path = Path(path)
    file = path / "config.json" if path.is_dir() else path
    try:
        config = RunConfig.from_dict(json.loads(file.read_text()))
    except FileNotFoundError:
        raise ConfigError(f"{file} does not exist; give a run folder or its config.json") \
            from None
    except (ValueError, TypeError) as exc:
        raise runs.RecordError(f"{file} is not a valid run config ({exc}); write it with "
                               "RunConfig.to_dict()") from None
    folder = file.parent.name
    if "-" in folder and folder.split("-")[0] == config.method and folder != config.run_id:
        raise runs.RecordError(f"{file} has run id {config.run_id}, not its folder's "
                               f"{folder}: it was written by another version of hls; delete "
                               "the folder and launch again")
    return config
