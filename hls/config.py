"""The one configuration type. A paper row is a RunConfig value, never a code path.

A run's identity is the hash of its full config (parent included) and the library version;
device and speed settings are not part of it, they are recorded beside the result. VERSION
changes whenever a change to the code changes the numbers a config produces (README, "When a
change must change run identity").
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass

from .ops import PRIMITIVES, check_primitives
from .schedules import check_mixing, check_tau

VERSION = "0.2.0"


class ConfigError(ValueError):
    """A bad setting; the message names it and the fix, in one line."""


@dataclass(frozen=True)
class RunConfig:
    method: str = "darts"
    # data (Sec. V.A)
    dataset: str = "cifar10"
    ratio: float = 100.0
    val_fraction: float = 0.2
    data_seed: int = 0                      # the long-tailed subset and the 80/20 split: one
                                            # data set for every run seed (LDAM-DRW, BBN fix it)
    test_per_class: int | None = None       # None: the whole balanced test set
    val_curve_images: int | None = None     # per-epoch validation curve on the first n val
                                            # images (None: all); mu is always chosen on all
    augment_pad: int = 4                    # random crop from a zero-padded image (DARTS: 4);
                                            # 0: flips only
    # search space
    channels: int = 16
    layers: int = 8
    nodes: int = 4
    primitives: tuple[str, ...] = PRIMITIVES
    stem_stride: int = 1                    # 2: cells work at 16x16 (the cpu profile's economy)
    # branches (Alg. 1): one head, or the instance and class-balanced heads of BBN
    bilateral: bool = False
    head_cell: bool = False                 # single branch: a searched normal cell before the
                                            # classifier (capacity-matched ablation); False is
                                            # DARTS: L cells, pooling, linear. BBN heads always
                                            # have their cell (Sec. IV.A)
    backbone_passes: int = 1                # BBN: 1 = both halves in one pass (Alg. 1 line 6,
                                            # shared BatchNorm statistics); 2 = one pass each (BBN)
    sampler: str = "instance"               # the single branch's sampler
    rebalance_sampler: str = "class_balanced"  # BBN's re-balancing branch
    reweight: str | None = None             # "class_balanced": Cui et al. effective-number weights
    mixing: str = "parabolic"
    mixing_index: str = "alg1"              # "alg1": t/T, t = 1..T (mu reaches 0 at t = T);
                                            # "bbn": (t-1)/T as BBN's code (starts at 1, never 0)
    mixing_k: float = 10.0                  # reverse sigmoid steepness (Eq. 18)
    mixing_value: float = 0.5               # mu of the constant schedule
    hls_tau: float | None = None            # Eq. (17); None: no heterogeneous scheduling
    hls_scope: str = "arch"                 # "arch" or "arch+weights" (the backbone's weights too)
    freeze: tuple[str, ...] = ()            # components not trained: "backbone", "ins", "cls"
    # optimisation (Sec. V.A, DARTS defaults elsewhere)
    epochs: int = 50
    steps_per_epoch: int | None = None      # None: one pass of the instance sampler
    batch_size: int = 128
    lr: float = 0.02
    lr_min: float = 0.001
    momentum: float = 0.9
    weight_decay: float = 3e-4
    grad_clip: float = 5.0
    arch_lr: float = 0.02
    arch_betas: tuple[float, float] = (0.5, 0.999)
    arch_weight_decay: float = 1e-3
    order: int = 1                          # 1: first-order DARTS, 2: second-order (Eq. 9)
    eval_batch_size: int = 500
    seed: int = 0
    # continued training (Sec. V.D): the run this one starts from, and how
    continue_state: str = "carry"           # "carry": the parent's net, optimiser moments and
                                            # data streams; "restart": its net only
    continue_lr: str = "hold"               # "hold": weight lr stays where the parent's cosine
                                            # ended (lr_min); "restart": a new cosine lr -> lr_min
    parent: RunConfig | None = None

    def __post_init__(self):
        validate(self)

    def replace(self, **changes) -> RunConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @staticmethod
    def from_dict(d: dict) -> RunConfig:
        d = dict(d)
        if d.get("parent") is not None:
            d["parent"] = RunConfig.from_dict(d["parent"])
        for key in ("primitives", "arch_betas", "freeze"):
            if key in d:
                d[key] = tuple(d[key])
        return RunConfig(**d)

    @property
    def run_id(self) -> str:
        blob = json.dumps({"config": self.to_dict(), "version": VERSION}, sort_keys=True)
        return f"{self.method}-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"

    @property
    def heads(self) -> tuple[str, ...]:
        return ("ins", "cls") if self.bilateral else ("main",)


def validate(c: RunConfig) -> None:
    from .data import SAMPLERS

    def bad(msg: str):
        raise ConfigError(msg)

    for f in dataclasses.fields(c):
        value = getattr(c, f.name)
        numbers = value if isinstance(value, tuple) else (value,)
        if any(isinstance(v, float) and not math.isfinite(v) for v in numbers):
            bad(f"{f.name} must be a finite number (got {value}); set it to a real value")
    if c.ratio < 1:
        bad(f"ratio must be >= 1 (got {c.ratio}); use 1 for the balanced data set")
    if not 0 <= c.mixing_value <= 1:
        bad(f"mixing_value (mu) must be in [0, 1] (got {c.mixing_value})")
    for name in (c.sampler, c.rebalance_sampler):
        if name not in SAMPLERS:
            bad(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}")
    if c.reweight not in (None, "class_balanced"):
        bad(f"unknown reweight {c.reweight!r}; use 'class_balanced' or None")
    if c.hls_scope not in ("arch", "arch+weights"):
        bad(f"unknown hls_scope {c.hls_scope!r}; use 'arch' or 'arch+weights'")
    if c.order not in (1, 2):
        bad(f"order must be 1 or 2 (got {c.order})")
    for name in ("epochs", "batch_size", "channels", "layers", "nodes", "eval_batch_size"):
        if getattr(c, name) < 1:
            bad(f"{name} must be >= 1 (got {getattr(c, name)})")
    if not 0 <= c.augment_pad <= 16:
        bad(f"augment_pad must be in [0, 16] pixels (got {c.augment_pad}); DARTS uses 4")
    if c.stem_stride not in (1, 2):
        bad(f"stem_stride must be 1 or 2 (got {c.stem_stride})")
    if c.layers < 3:
        bad(f"layers must be >= 3 so that both reduction cells exist (got {c.layers})")
    if not 0 < c.val_fraction < 1:
        bad(f"val_fraction must be in (0, 1) (got {c.val_fraction})")
    if c.freeze and c.parent is None:
        bad("freeze needs a parent run to start from; set parent")
    known = {"backbone", *c.heads}
    if not set(c.freeze) <= known:
        bad(f"freeze names unknown components {sorted(set(c.freeze) - known)}; "
            f"choose from {', '.join(sorted(known))}")
    choices = {"mixing_index": ("alg1", "bbn"), "continue_state": ("carry", "restart"),
               "continue_lr": ("hold", "restart"), "backbone_passes": (1, 2)}
    for name, allowed in choices.items():
        if getattr(c, name) not in allowed:
            bad(f"{name} must be one of {', '.join(map(str, allowed))} (got {getattr(c, name)!r})")
    if c.head_cell and c.bilateral:
        bad("head_cell is for single-branch methods; BBN's heads always have their cell")
    try:    # the checks the schedules and the ops make themselves, stated there once
        check_tau(c.hls_tau, "hls_tau")
        check_mixing(c.mixing)
        check_primitives(c.primitives)
    except ValueError as exc:
        bad(str(exc))


def coerce_overrides(overrides: dict) -> dict:
    """Check override names against RunConfig and cast strings (from the command line)."""
    types = {f.name: f.type for f in dataclasses.fields(RunConfig)}
    out = {}
    for key, value in overrides.items():
        if key not in types or key in ("parent", "method"):
            raise ConfigError(f"unknown setting {key!r}; valid settings: "
                              f"{', '.join(sorted(types.keys() - {'parent', 'method'}))}")
        out[key] = _cast(key, value, types[key]) if isinstance(value, str) else value
        if isinstance(out[key], list):
            out[key] = tuple(out[key])
    return out


def _cast(key: str, text: str, type_name: str):
    t = str(type_name)
    if text.lower() in ("none", "null") and "None" in t:
        return None
    try:
        if t.startswith("bool"):
            if text.lower() not in ("true", "false", "1", "0"):
                raise ValueError
            return text.lower() in ("true", "1")
        if t.startswith("int"):
            return int(text)
        if t.startswith("float"):
            return float(text)
        if t.startswith("tuple"):
            items = [s for s in text.split(",") if s]
            return tuple(float(s) for s in items) if "float" in t else tuple(items)
    except ValueError:
        raise ConfigError(f"setting {key}={text!r} is not a valid {t}") from None
    return text

