"""The one configuration type. A paper row is a RunConfig value, never a code path.

A run's identity is the hash of its full config (parent included) and the library version;
device and speed settings are not part of it, they are recorded beside the result.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass

from .ops import PRIMITIVES, check_primitives
from .schedules import MIXING

VERSION = "0.1.0"


class ConfigError(ValueError):
    """A bad setting; the message names it and the fix, in one line."""


@dataclass(frozen=True)
class RunConfig:
    method: str = "darts"
    # data (Sec. V.A)
    dataset: str = "cifar10"
    ratio: float = 100.0
    val_fraction: float = 0.2
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
    sampler: str = "instance"               # the single branch's sampler
    rebalance_sampler: str = "class_balanced"  # BBN's re-balancing branch
    reweight: str | None = None             # "class_balanced": Cui et al. effective-number weights
    mixing: str = "parabolic"
    mixing_k: float = 10.0                  # reverse sigmoid steepness (Eq. 18)
    mixing_value: float = 0.5               # mu of the constant schedule
    hls_tau: float | None = None            # Eq. (17); None: no heterogeneous scheduling
    hls_scope: str = "arch"                 # "arch" or "arch+weights" (the backbone's weights too)
    freeze_backbone: bool = False           # continued training with the backbone frozen
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
    # continued training (Sec. V.D): the run this one starts from
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
        for key in ("primitives", "arch_betas"):
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

    if c.ratio < 1:
        bad(f"ratio must be >= 1 (got {c.ratio}); use 1 for the balanced data set")
    if c.hls_tau is not None and c.hls_tau <= 0:
        bad(f"hls_tau must be > 0 (got {c.hls_tau}); use hls_tau=None to switch HLS off")
    if not 0 <= c.mixing_value <= 1:
        bad(f"mixing_value (mu) must be in [0, 1] (got {c.mixing_value})")
    if c.mixing not in MIXING:
        bad(f"unknown mixing schedule {c.mixing!r}; choose one of {', '.join(MIXING)}")
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
    if c.freeze_backbone and c.parent is None:
        bad("freeze_backbone needs a parent run to start from; set parent")
    try:
        check_primitives(c.primitives)
    except ValueError as exc:
        bad(str(exc))


def field_names() -> set[str]:
    return {f.name for f in dataclasses.fields(RunConfig)}


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

