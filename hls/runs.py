"""The run store: one folder per run identity, cache hits, resume, atomic writes, failures.

    data/runs/<method>-<hash>/
        config.json     the full config (parent included)
        status.json     {"state": running | failed | complete, ...}: written last, atomically
        metrics.json    per-epoch scalars (loss, accuracy, mu, HLS factor, gradient norms ...)
        alphas.json     per-epoch softmax(alpha) of every component, and genotypes
        eval.json       the mu_test sweep, headline numbers, per-class and group accuracy
        genotype.json   the final discrete architecture
        facts.json      how it ran: device, torch, git commit, wall time, peak memory
        checkpoint.pt   the state after the last finished epoch (resume; continued training)

Every file is written to a temporary name and renamed, so a crash never leaves a record that
reads as complete: only `status.json` saying "complete" makes a run a result.
"""

from __future__ import annotations

import functools
import json
import os
import platform
import resource
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from . import experiments
from .config import VERSION, RunConfig
from .data import data_dir, load_long_tailed
from .train import Search, Speed, TrainingDiverged, resolve_device

SCALARS = ("epoch", "mu", "hls_factor", "lr", "arch_lr_backbone", "train_loss", "train_acc",
           "val_loss", "val_acc", "val_acc_ins", "val_acc_cls", "arch_grad_norm", "skip_count",
           "seconds")


class RunFailed(RuntimeError):
    """A run that diverged; it is stored as failed and never shown as a result."""


def runs_dir() -> Path:
    return Path(os.environ.get("HLS_RUNS") or data_dir() / "runs")


def write_atomic(path: Path, data: bytes | str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data.encode() if isinstance(data, str) else data)
    os.replace(tmp, path)


def write_json(path: Path, obj) -> None:
    write_atomic(path, json.dumps(obj, indent=1))


def save_torch(path: Path, obj) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


@dataclass
class RunRecord:
    """A finished run as the notebooks see it."""
    config: RunConfig
    path: Path
    history: list[dict]         # per epoch: scalars + "alphas" + "genotype"
    eval: dict
    facts: dict

    @property
    def method(self) -> str:
        return self.config.method

    @property
    def genotype(self) -> dict:
        return self.history[-1]["genotype"]


def status(config: RunConfig) -> dict:
    path = runs_dir() / config.run_id / "status.json"
    return json.loads(path.read_text()) if path.exists() else {"state": "absent"}


def load_record(path: Path) -> RunRecord:
    read = lambda name: json.loads((path / name).read_text())  # noqa: E731
    metrics, alphas = read("metrics.json"), read("alphas.json")
    history = [{**m, **a} for m, a in zip(metrics, alphas)]
    return RunRecord(RunConfig.from_dict(read("config.json")), path, history, read("eval.json"),
                     read("facts.json"))


@functools.lru_cache(maxsize=4)
def _data(dataset, ratio, val_fraction, seed, device, test_per_class):
    return load_long_tailed(dataset, ratio, val_fraction, seed, device, subset=test_per_class)


def get_run(config: RunConfig, device: str | None = None, speed: Speed | None = None,
            force: bool = False, progress: bool = True, on_epoch=None) -> RunRecord:
    """The record of `config`: read from the store when complete, else trained (or resumed).

    force: retrain from scratch. on_epoch(record): called after each epoch's checkpoint is safe.
    """
    folder = runs_dir() / config.run_id
    if not force and status(config).get("state") == "complete":
        return load_record(folder)
    if force and folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)

    dev = resolve_device(device)
    speed = speed or Speed.default_for(dev)
    parent_net = None
    if config.parent is not None:   # continued training starts from the parent's final state
        parent = get_run(config.parent, device, speed, progress=progress)
        parent_net = torch.load(parent.path / "checkpoint.pt", map_location=dev,
                                weights_only=False)["search"]["net"]
    data = _data(config.dataset, config.ratio, config.val_fraction, config.seed, str(dev),
                 config.test_per_class)
    search = Search(config, data, dev, speed, parent_net)

    checkpoint = folder / "checkpoint.pt"
    wall = 0.0
    if checkpoint.exists():
        state = torch.load(checkpoint, map_location=dev, weights_only=False)
        search.load_state_dict(state["search"])
        wall = state["wall_seconds"]
    write_json(folder / "config.json", config.to_dict())
    write_json(folder / "status.json", {"state": "running", "epoch": len(search.history)})

    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    bar = _progress_bar(config, search, progress)
    try:
        for epoch in range(len(search.history), config.epochs):
            start = time.perf_counter()
            try:
                search.run_epoch(epoch, bar)
            except TrainingDiverged as exc:
                write_json(folder / "status.json", {"state": "failed", "epoch": exc.epoch,
                                                    "reason": str(exc)})
                raise RunFailed(f"run {config.run_id} failed: {exc}; lower lr or arch_lr "
                                "and retry with force=True") from None
            wall += time.perf_counter() - start
            save_torch(checkpoint, {"search": search.state_dict(), "wall_seconds": wall})
            _write_history(folder, search.history)
            write_json(folder / "status.json", {"state": "running", "epoch": epoch + 1})
            if on_epoch is not None:
                on_epoch(search.history[-1])
    finally:
        if bar is not None:
            bar.close()

    start = time.perf_counter()
    evaluation = search.evaluate()
    wall += time.perf_counter() - start
    _write_history(folder, search.history)
    write_json(folder / "eval.json", evaluation)
    write_json(folder / "genotype.json", search.history[-1]["genotype"])
    write_json(folder / "facts.json", _facts(dev, speed, wall))
    write_json(folder / "status.json", {"state": "complete", "epoch": config.epochs})
    return load_record(folder)


def _write_history(folder: Path, history: list[dict]) -> None:
    write_json(folder / "metrics.json", [{k: h[k] for k in SCALARS if k in h} for h in history])
    write_json(folder / "alphas.json", [{"alphas": h["alphas"], "genotype": h["genotype"]}
                                        for h in history])


def _progress_bar(config: RunConfig, search: Search, enabled: bool):
    if not enabled or os.environ.get("HLS_PROGRESS") == "0":
        return None
    from tqdm import tqdm   # plain text: tqdm.auto wants ipywidgets inside notebooks
    total = config.epochs * search.steps_per_epoch
    done = len(search.history) * search.steps_per_epoch
    # Outside a terminal (papermill, CI logs) every refresh is a new line: refresh rarely.
    interval = 0.5 if _is_tty() else 30.0
    return tqdm(total=total, initial=done, desc=config.run_id, mininterval=interval,
                unit="step", dynamic_ncols=True)


def _is_tty() -> bool:
    import sys
    return hasattr(sys.stderr, "isatty") and sys.stderr.isatty()


def _facts(device: torch.device, speed: Speed, wall: float) -> dict:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        peak = torch.cuda.max_memory_allocated(device)
    else:
        name = f"{platform.machine()} CPU ({torch.get_num_threads()} torch threads)"
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # process peak RSS
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, cwd=Path(__file__).parent, timeout=5).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        commit = ""
    return {"device": str(device), "device_name": name, "torch": torch.__version__,
            "hls": VERSION, "git_commit": commit or None, "wall_seconds": wall,
            "peak_memory_bytes": peak, "speed": speed.__dict__, "host": platform.node(),
            "finished": time.strftime("%Y-%m-%d %H:%M:%S")}


def list_runs() -> list[dict]:
    """Every run in the store with its state (for `python -m hls list`)."""
    out = []
    root = runs_dir()
    for folder in sorted(root.iterdir()) if root.exists() else []:
        if (folder / "status.json").exists():
            out.append({"run": folder.name, **json.loads((folder / "status.json").read_text())})
    return out


def method_runs(method: str, profile: str | None = None, seeds=None, device: str | None = None,
                overrides: dict | None = None, **kwargs) -> list[RunRecord]:
    """One record per seed of a method at a profile (trained where missing)."""
    return [get_run(experiments.config(method, profile, seed, overrides), device, **kwargs)
            for seed in experiments.seeds_of(profile, seeds)]
