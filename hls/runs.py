"""The run store: one folder per run identity, cache hits, resume, atomic writes, failures.

    data/runs/<method>-<hash>/
        config.json     the full config (parent included)
        status.json     {"state": running | failed | complete, ...}: written last, atomically
        metrics.json    per-epoch scalars (loss, accuracy, mu, HLS factor, gradient norms ...)
        alphas.json     per-epoch softmax(alpha) of every component, and genotypes
        eval.json       the mu_test sweep, headline numbers, per-class and group accuracy
        genotype.json   the final discrete architecture (a retraining run: the cells it trained)
        facts.json      how it ran: device, threads, torch, commit, code fingerprint, wall time
        checkpoint.pt   the state after the last finished epoch (resume; continued training)
        lock            flock'ed by the process training the run; holds "host pid"
        log.txt         the run's output, when the launcher (hls/launch.py) trained it

Every file is written to a temporary name unique to its writer and renamed, so a crash never
leaves a record that reads as complete: only `status.json` saying "complete" makes a run a
result. Several processes may share a store: a run is trained by whoever holds its lock, and
whoever waited for the lock reads the finished record instead of training it again.

The results archive, `results/<profile>/<run-id>/` in the repository (or HLS_ARCHIVE), holds
the record files of finished runs (no checkpoint, lock or log) and is committed to git, so that
the book renders without training. Reading a run looks in the store, then in the archive.

Two kinds of run share the store: a search (hls.config.RunConfig, trained by hls.train.Search)
and a retraining run of the evaluation phase (hls.retrain.RetrainConfig, trained by
hls.retrain.Retraining). config.json says which: a retraining config carries "kind": "retrain".
A retraining run has no alphas.json, and its code fingerprint is taken over its own sources.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import os
import platform
import resource
import secrets
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from . import experiments
from .config import VERSION, ConfigError, RunConfig
from .data import data_dir, load_long_tailed
from .record import ALPHA_KEYS   # per-epoch keys saved in alphas.json, not metrics.json
from .retrain import RETRAIN_VERSION, RetrainConfig, Retraining
from .speed import Speed
from .train import Search, TrainingDiverged, resolve_device

ROOT = Path(__file__).resolve().parents[1]

# What the archive keeps of a run: the record, never the checkpoint, the lock or the log.
RECORD_FILES = ("config.json", "metrics.json", "alphas.json", "eval.json", "genotype.json",
                "facts.json", "status.json")
RETRAIN_RECORD_FILES = tuple(name for name in RECORD_FILES if name != "alphas.json")

# The sources whose bytes decide the numbers a config produces (the code fingerprint in
# facts.json); bench, plots, runs and the command line do not change them.
NUMBER_SOURCES = ("config", "data", "ops", "speed", "supernet", "architect", "schedules",
                  "genotype", "train")
# ... and those of a retraining run: its trainer and networks, and what they take from the
# search's modules (the data set and augmentation, the ops, the lr schedule, the evaluation
# helpers; config for the parent's identity).
RETRAIN_NUMBER_SOURCES = ("retrain", "network", "config", "data", "ops", "speed", "schedules",
                          "train")


class RunFailed(RuntimeError):
    """A run that diverged; it is stored as failed and never shown as a result."""


class RunBusy(RuntimeError):
    """Another process holds the run's lock (asked with wait=False)."""


class RecordError(ValueError):
    """A damaged record: a file that is not JSON, or one missing from a complete run."""


class MissingRun(ValueError):
    """A run that is neither in the store nor in the archive (read_run never trains)."""


# ---- the two kinds of run

AnyConfig = RunConfig | RetrainConfig


def is_retraining(config) -> bool:
    return isinstance(config, RetrainConfig)


def config_from_dict(d: dict) -> AnyConfig:
    """The config a config.json holds: a RetrainConfig when it says "kind": "retrain", else a
    RunConfig (search configs carry no kind, so their ids stay what they were)."""
    if d.get("kind") == "retrain":
        return RetrainConfig.from_dict(d)
    return RunConfig.from_dict(d)


# ---- where records live


def runs_dir() -> Path:
    return Path(os.environ.get("HLS_RUNS") or data_dir() / "runs")


def archive_dir() -> Path | None:
    """results/ in the repository, HLS_ARCHIVE when set, None when HLS_ARCHIVE=off."""
    value = os.environ.get("HLS_ARCHIVE")
    if value == "off":
        return None
    return Path(value) if value else ROOT / "results"


def archived_folder(run_id: str) -> Path | None:
    """The archive's folder of a complete run (any profile), or None."""
    root = archive_dir()
    if root is None or not root.is_dir():
        return None
    for folder in sorted(root.glob(f"*/{run_id}")):
        if _status(folder).get("state") == "complete":
            return folder
    return None


# ---- atomic writes, each writer with its own temporary names


def _temp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


def write_atomic(path: Path, data: bytes | str) -> None:
    tmp = _temp_name(path)
    try:
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json(path: Path, obj) -> None:
    write_atomic(path, json.dumps(obj, indent=1))


def save_torch(path: Path, obj) -> None:
    tmp = _temp_name(path)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# ---- reading records


def _fix(folder: Path) -> str:
    """The one-line remedy for a damaged record in `folder`."""
    archive = archive_dir()
    if archive is not None and folder.resolve().is_relative_to(archive.resolve()):
        return f"delete the folder {folder} and publish the run again (python -m hls publish)"
    return f"delete the folder {folder} or rerun with --force"


def read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise RecordError(f"{path} is missing from a run marked complete; "
                          f"{_fix(path.parent)}") from None
    except ValueError as exc:        # JSONDecodeError, or bytes that are not UTF-8
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise RecordError(f"{path} is not valid JSON ({reason}); {_fix(path.parent)}") from None


@dataclass
class RunRecord:
    """A finished run as the notebooks see it."""
    config: RunConfig
    path: Path
    history: list[dict]         # per epoch: metrics + "alphas" + "genotype"
    eval: dict
    facts: dict

    @property
    def method(self) -> str:
        return self.config.method

    @property
    def genotype(self) -> dict:
        return self.history[-1]["genotype"]


@dataclass
class RetrainRecord:
    """A finished retraining run as the notebooks see it."""
    config: RetrainConfig
    path: Path
    history: list[dict]         # per epoch: lr, drop-path probability, train loss and accuracy
    eval: dict                  # test accuracy overall, per class and per group; the net's size
    facts: dict
    genotype: dict | None       # the cells it trained (None for ResNet)

    @property
    def method(self) -> str:
        return self.config.method


def _status(folder: Path) -> dict:
    path = folder / "status.json"
    return read_json(path) if path.exists() else {"state": "absent"}


def status(config: AnyConfig) -> dict:
    """The run's status in the local store ({"state": "absent"} when it has none)."""
    return _status(runs_dir() / config.run_id)


def load_record(path: Path) -> RunRecord | RetrainRecord:
    metrics = read_json(path / "metrics.json")      # every kind has it: its absence is named first
    raw = read_json(path / "config.json")
    try:
        config = config_from_dict(raw)
    except (TypeError, ConfigError) as exc:     # written by a config type with other fields
        kind = "RetrainConfig" if raw.get("kind") == "retrain" else "RunConfig"
        raise RecordError(f"{path / 'config.json'} does not fit this version's {kind} "
                          f"({exc}); {_fix(path)}") from None
    if is_retraining(config):
        return RetrainRecord(config, path, metrics, read_json(path / "eval.json"), read_json(path / "facts.json"),
                             read_json(path / "genotype.json"))
    alphas = read_json(path / "alphas.json")
    history = [{**m, **a} for m, a in zip(metrics, alphas)]
    return RunRecord(config, path, history, read_json(path / "eval.json"),
                     read_json(path / "facts.json"))


def find_record(config: AnyConfig, use_archive: bool = True) -> RunRecord | RetrainRecord | None:
    """The complete record of `config` from the local store, else from the archive, or None."""
    local = runs_dir() / config.run_id
    if _status(local).get("state") == "complete":
        return load_record(local)
    archived = archived_folder(config.run_id) if use_archive else None
    return load_record(archived) if archived is not None else None


def launch_command(profile: str | None = None, seeds=None, overrides: dict | None = None) -> str:
    """The `python -m hls launch ...` line that makes the runs of a profile."""
    words = ["python -m hls launch --profile", profile or experiments.default_profile()]
    if seeds is not None:
        words += ["--seeds", *map(str, seeds)]
    for key, value in (overrides or {}).items():
        words.append(f"--set {key}={setting_text(value)}")
    return " ".join(words)


def setting_text(value) -> str:
    """A config value as `--set` reads it back (tuples comma-separated, None as none)."""
    if value is None:
        return "none"
    if isinstance(value, (tuple, list)):
        return ",".join(map(str, value))
    return str(value)


def read_run(config: AnyConfig, profile: str | None = None, seeds=None,
             overrides: dict | None = None) -> RunRecord:
    """The record of `config` from the store or the archive; never trains.

    MissingRun names the run and the launch command (with `profile`, `seeds`, `overrides`)."""
    record = find_record(config)
    if record is not None:
        return record
    st = status(config)
    where = {"absent": "is in neither the run store nor the archive",
             "failed": f"failed in the run store ({st.get('reason', '')})",
             "running": f"is unfinished in the run store (epoch {st.get('epoch')} of "
                        f"{config.epochs})"}.get(st["state"], f"is {st['state']}")
    raise MissingRun(f"run {config.method} seed {config.seed} ({config.run_id}) {where}; "
                     f"make it with: {launch_command(profile, seeds, overrides)}")


# ---- the lock: one trainer per run, across processes


def _holder(lock: Path) -> str:
    """'host H pid P' from a lock file, as its holder wrote it."""
    try:
        host, pid = lock.read_text().split()
        return f"{host} pid {pid}"
    except (OSError, ValueError):   # the holder took the lock but has not written yet
        return "another process"


@contextlib.contextmanager
def run_lock(folder: Path, wait: bool = True):
    """Hold the exclusive flock on `folder`/lock for the block.

    The kernel drops an flock when its holder dies, so a killed trainer leaves no stale lock.
    wait=False: raise RunBusy naming the holder instead of waiting."""
    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / "lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(lock)
            if not wait:
                raise RunBusy(f"run {folder.name} is being trained by {holder} (lock {lock}); "
                              "wait for it to finish, or stop that process") from None
            print(f"waiting for run {folder.name}: held by {holder}", file=sys.stderr,
                  flush=True)
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{platform.node()} {os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)    # releases the lock


def lock_holder(folder: Path) -> str | None:
    """Who trains the run in `folder` right now ('host H pid P'), or None when nobody does."""
    lock = folder / "lock"
    try:
        fd = os.open(lock, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        # a shared probe: it conflicts only with a trainer's exclusive lock
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return None
    except BlockingIOError:
        return _holder(lock)
    finally:
        os.close(fd)


# ---- training


@functools.lru_cache(maxsize=4)
def _data(dataset, ratio, val_fraction, seed, device, test_per_class):
    return load_long_tailed(dataset, ratio, val_fraction, seed, device, subset=test_per_class)


def get_run(config: AnyConfig, device: str | None = None, speed: Speed | None = None,
            force: bool = False, progress: bool = True, on_epoch=None, wait: bool = True,
            use_archive: bool = True) -> RunRecord:
    """The record of `config`: read from the store or the archive when complete, else trained
    (or resumed from its last epoch) under the run's lock.

    force: retrain from scratch (the archive is ignored). on_epoch(record): called after each
    epoch's checkpoint is safe. wait=False: RunBusy instead of waiting for another trainer.
    use_archive=False: only a local record counts (HLS_ARCHIVE=off does the same for all).
    """
    if not force:
        found = find_record(config, use_archive)
        if found is not None:
            return found
    dev = resolve_device(device)
    speed = speed or Speed.default_for(dev)
    parent = _parent_input(config, dev, speed, progress)
    folder = runs_dir() / config.run_id
    with run_lock(folder, wait):
        if force:
            _clear(folder)
        else:   # whoever held the lock before us may have finished the run meanwhile
            found = find_record(config, use_archive)
            if found is not None:
                return found
        return _train(config, folder, dev, speed, parent, progress, on_epoch)


def _parent_input(config: AnyConfig, dev: torch.device, speed: Speed, progress: bool):
    """What a run takes from its parent, made first under the parent's own lock: a continued
    search starts from the parent's final state (net, optimiser moments, data streams: Search
    reads what continue_state asks for); a retraining run needs only the parent's genotype,
    which its record holds (archived or not). None for a run without a parent."""
    if config.parent is None:
        return None
    if is_retraining(config):
        return get_run(config.parent, str(dev), speed, progress=progress).genotype
    return _parent_state(config, dev, speed, progress)


def _parent_state(config: RunConfig, dev: torch.device, speed: Speed, progress: bool) -> dict:
    """The parent's final Search state: an archived parent has no checkpoint, so the parent
    is (re)trained into the local store first."""
    parent = get_run(config.parent, str(dev), speed, progress=progress, use_archive=False)
    checkpoint = parent.path / "checkpoint.pt"
    if not checkpoint.exists():
        raise RecordError(f"{checkpoint} is missing, and continued run {config.run_id} starts "
                          f"from it; {_fix(parent.path)}")
    return torch.load(checkpoint, map_location=dev, weights_only=False)["search"]


def _clear(folder: Path) -> None:
    """Everything of a run but its lock (held by us) and its log (being written)."""
    for entry in folder.iterdir():
        if entry.name in ("lock", "log.txt"):
            continue
        shutil.rmtree(entry) if entry.is_dir() else entry.unlink()


def _train(config: AnyConfig, folder: Path, dev: torch.device, speed: Speed, parent,
           progress: bool, on_epoch) -> RunRecord | RetrainRecord:
    """Train (or resume) one run in `folder`. `parent`: see _parent_input. The search and the
    retraining loop share this driver: each trainer has history, run_epoch, evaluate,
    state_dict and load_state_dict."""
    trainer = _trainer(config, dev, speed, parent)
    wall = _resume(trainer, folder, dev)
    write_json(folder / "config.json", config.to_dict())
    write_json(folder / "status.json", {"state": "running", "epoch": len(trainer.history)})
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    wall = _train_epochs(config, trainer, folder, wall, progress, on_epoch)
    return _finish(config, trainer, folder, dev, speed, wall)


def _trainer(config: AnyConfig, dev: torch.device, speed: Speed, parent):
    """A Search or a Retraining of `config` on its (cached) data set."""
    data = _data(config.dataset, config.ratio, config.val_fraction,
                 getattr(config, "data_seed", config.seed), str(dev), config.test_per_class)
    if is_retraining(config):
        return Retraining(config, data, dev, parent)
    return Search(config, data, dev, speed, parent)


def _resume(trainer, folder: Path, dev: torch.device) -> float:
    """Load the run's last epoch checkpoint into `trainer`, if any; the wall seconds so far."""
    checkpoint = folder / "checkpoint.pt"
    if not checkpoint.exists():
        return 0.0
    state = torch.load(checkpoint, map_location=dev, weights_only=False)
    trainer.load_state_dict(state["search"])
    return state["wall_seconds"]


def _train_epochs(config: AnyConfig, trainer, folder: Path, wall: float, progress: bool,
                  on_epoch) -> float:
    """The remaining epochs, each followed by its checkpoint and history; the wall seconds."""
    retraining = is_retraining(config)
    bar = _progress_bar(config, trainer, progress)
    try:
        for epoch in range(len(trainer.history), config.epochs):
            start = time.perf_counter()
            try:
                trainer.run_epoch(epoch, bar)
            except TrainingDiverged as exc:
                write_json(folder / "status.json", {"state": "failed", "epoch": exc.epoch,
                                                    "reason": str(exc)})
                what = "lr" if retraining else "lr or arch_lr"
                raise RunFailed(f"run {config.run_id} failed: {exc}; lower {what} "
                                "and retry with force=True (--force)") from None
            wall += time.perf_counter() - start
            # the key is "search" for both kinds: a checkpoint's layout is one
            save_torch(folder / "checkpoint.pt",
                       {"search": trainer.state_dict(), "wall_seconds": wall})
            _write_history(folder, trainer.history, alphas=not retraining)
            write_json(folder / "status.json", {"state": "running", "epoch": epoch + 1})
            if on_epoch is not None:
                on_epoch(trainer.history[-1])
    finally:
        if bar is not None:
            bar.close()
    return wall


def _finish(config: AnyConfig, trainer, folder: Path, dev: torch.device, speed: Speed,
            wall: float) -> RunRecord | RetrainRecord:
    """Evaluate the trained run and write its record; status.json says complete last."""
    retraining = is_retraining(config)
    start = time.perf_counter()
    evaluation = trainer.evaluate()
    wall += time.perf_counter() - start
    _write_history(folder, trainer.history, alphas=not retraining)
    write_json(folder / "eval.json", evaluation)
    write_json(folder / "genotype.json",
               trainer.genotype if retraining else trainer.history[-1]["genotype"])
    write_json(folder / "facts.json", _facts(dev, speed, wall, config))
    write_json(folder / "status.json", {"state": "complete", "epoch": config.epochs})
    return load_record(folder)


def _write_history(folder: Path, history: list[dict], alphas: bool = True) -> None:
    # every key of the epoch record: a metric added to the epoch loop is saved without a list
    write_json(folder / "metrics.json", [{k: v for k, v in h.items() if k not in ALPHA_KEYS}
                                         for h in history])
    if alphas:
        write_json(folder / "alphas.json", [{k: h[k] for k in ALPHA_KEYS} for h in history])


def _progress_bar(config: AnyConfig, trainer, enabled: bool):
    if not enabled or os.environ.get("HLS_PROGRESS") == "0":
        return None
    from tqdm import tqdm   # plain text: tqdm.auto wants ipywidgets inside notebooks
    total = config.epochs * trainer.steps_per_epoch
    done = len(trainer.history) * trainer.steps_per_epoch
    # Outside a terminal (papermill, CI logs) every refresh is a new line: refresh rarely.
    interval = 0.5 if _is_tty() else 30.0
    return tqdm(total=total, initial=done, desc=config.run_id, mininterval=interval,
                unit="step", dynamic_ncols=True)


def _is_tty() -> bool:
    return hasattr(sys.stderr, "isatty") and sys.stderr.isatty()


# ---- which code made a record


def git_commit() -> str | None:
    """HEAD's short hash, with "+dirty" when the library's sources differ from it."""
    def git(*args):
        return subprocess.run(["git", *args], capture_output=True, text=True, cwd=ROOT,
                              timeout=10).stdout.strip()
    try:
        head = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--", "hls")
    except (OSError, subprocess.TimeoutExpired):
        return None
    return (head + ("+dirty" if dirty else "")) if head else None


def current_fingerprint(kind: str = "search") -> str:
    """sha256 (12 hex digits) of the sources that decide the numbers of a run of `kind`
    ("search": NUMBER_SOURCES, "retrain": RETRAIN_NUMBER_SOURCES), in that order."""
    digest = hashlib.sha256()
    for name in RETRAIN_NUMBER_SOURCES if kind == "retrain" else NUMBER_SOURCES:
        digest.update((Path(__file__).parent / f"{name}.py").read_bytes())
    return digest.hexdigest()[:12]


def record_kind(record) -> str:
    """"retrain" or "search", from a record's config or, for a facts dict, its "kind"."""
    config = getattr(record, "config", None)
    if config is not None:
        return "retrain" if is_retraining(config) else "search"
    return getattr(record, "facts", record).get("kind", "search")


def reproducible_here(record: RunRecord | RetrainRecord | dict) -> bool:
    """Would this code make the record again: the same version (hls's, and for a retraining
    run RETRAIN_VERSION too) and the same code fingerprint, or one that `verify` has found
    equivalent (equivalent_fingerprints)?"""
    facts = getattr(record, "facts", record)     # a record, or its facts dict
    kind = record_kind(record)
    here = current_fingerprint(kind)
    made_by = facts.get("code_fingerprint")
    same = ((made_by == here or made_by in equivalent_fingerprints(kind, here))
            and facts.get("hls") == VERSION)
    return same and (kind == "search" or facts.get("retrain_version") == RETRAIN_VERSION)


# A change that keeps every number (a refactor, a comment moved) changes the fingerprint all
# the same. `verify` retrains an archived run; when the retraining matches the record bit for bit
# on the CPU, the record's fingerprint is written down here as equivalent to this code's, with
# the run that showed it. The file lives in the archive, beside the records it speaks for.
EQUIVALENCE_FILE = "equivalent-code.json"   # {kind: {fingerprint: {older fingerprint: [runs]}}}


def equivalent_fingerprints(kind: str, fingerprint: str) -> dict[str, list[str]]:
    """{older fingerprint: the runs whose bit-for-bit retraining showed it equivalent} for
    code of `fingerprint` (empty without an archive or an entry)."""
    archive = archive_dir()
    path = archive / EQUIVALENCE_FILE if archive is not None else None
    if path is None or not path.exists():
        return {}
    return read_json(path).get(kind, {}).get(fingerprint, {})


def record_equivalence(kind: str, older: str, run_id: str) -> None:
    """Write down that this code reproduced, bit for bit, a run made by code of fingerprint
    `older`; what `older` was itself shown equivalent to comes along (equivalence is transitive)."""
    archive = archive_dir()
    if archive is None:
        return
    here = current_fingerprint(kind)
    path = archive / EQUIVALENCE_FILE
    table = read_json(path) if path.exists() else {}
    mine = table.setdefault(kind, {}).setdefault(here, {})
    for fingerprint, shown_by in [(older, [run_id]), *table[kind].get(older, {}).items()]:
        if fingerprint != here:
            mine[fingerprint] = sorted(set(mine.get(fingerprint, [])) | set(shown_by))
    archive.mkdir(parents=True, exist_ok=True)
    write_json(path, table)


def _facts(device: torch.device, speed: Speed, wall: float, config=None) -> dict:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        peak = torch.cuda.max_memory_allocated(device)
    else:
        name = f"{platform.machine()} CPU ({torch.get_num_threads()} torch threads)"
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # process peak RSS
    kind = "retrain" if is_retraining(config) else "search"
    facts = {"device": str(device), "device_name": name, "torch": torch.__version__,
             "torch_threads": torch.get_num_threads(), "hls": VERSION,
             "git_commit": git_commit(), "code_fingerprint": current_fingerprint(kind),
             "wall_seconds": wall, "peak_memory_bytes": peak, "speed": speed.__dict__,
             "host": platform.node(), "finished": time.strftime("%Y-%m-%d %H:%M:%S")}
    if kind == "retrain":
        facts.update(kind="retrain", retrain_version=RETRAIN_VERSION)
    return facts


# ---- listing and the notebooks' entry point


def list_runs() -> list[dict]:
    """Every run in the store with its state (for `python -m hls list`)."""
    out = []
    root = runs_dir()
    for folder in sorted(root.iterdir()) if root.exists() else []:
        if (folder / "status.json").exists():
            try:
                st = _status(folder)
            except RecordError as exc:
                st = {"state": "damaged", "reason": str(exc)}
            if st.get("state") == "running" and lock_holder(folder) is None:
                st["state"] = "interrupted"     # nobody trains it: a killed run, resumable
            out.append({"run": folder.name, **st})
    return out
