"""The evaluation phase: a discrete network trained from scratch, DARTS' way.

Every number of the search chapters is the supernet's accuracy at the end of the search. DARTS
judges a search differently: the derived cell is stacked into a deeper, wider network and
trained from scratch (quark0/darts, `cnn/train.py`). This module is that second phase:

    RetrainConfig    one retraining run as data: which architecture (a search run's derived
                     cells, a random draw from the same space, or ResNet-32), which loss, the
                     network's size and the training recipe; its own identity and version
    Retraining       the training loop, epoch by epoch and resumable, and the evaluation

The training set is the search's whole long-tailed set, its train and validation splits
together: nothing is chosen on validation here (the network trains for a fixed number of epochs
and is measured once), so holding images out would only throw them away. The test set is the
balanced one, measured once at the end with the search's evaluation (overall, per class,
head / middle / tail and many / medium / few shot).

Two losses: plain cross-entropy, and the logit-adjusted loss of Menon et al. (ICLR 2021),
CE(logits + tau log pi, y) with pi the training set's class frequencies and plain logits at test
time. It changes only the loss: the network, its classifier and the schedule stay as they are
for every architecture, which LDAM-DRW would not leave alone (a cosine classifier with a scale of
30, and a re-weighting that starts at epoch 160 of 200).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .config import ConfigError, RunConfig, _cast
from .data import Augmenter, InstanceSampler, LongTailData, Split
from .network import (CELL_TYPES, DiscreteNet, ResNetCIFAR, check_genotype, multiply_adds,
                      parameter_count, random_genotype)
from .ops import PRIMITIVES, check_primitives
from .schedules import cosine_lr
from .train import TrainingDiverged, accuracy, balanced_accuracy, class_groups

# Changes whenever a change to this code changes the numbers a RetrainConfig produces.
RETRAIN_VERSION = "retrain-0.1.0"

ARCHITECTURES = ("searched", "random", "resnet")
LOSSES = {"ce": "cross-entropy", "logit_adjusted": "logit-adjusted cross-entropy"}
LOSS_TAGS = {"ce": "ce", "logit_adjusted": "la"}     # in run ids: re_darts_la-...
LR_SCHEDULES = ("cosine", "warmup_step")


@dataclass(frozen=True)
class RetrainConfig:
    architecture: str = "searched"      # "searched": the parent's backbone cells; "random": a
                                        # cell drawn with `seed`; "resnet": ResNet-(6 blocks+2)
    parent: RunConfig | None = None     # the search run whose genotype is trained (searched)
    loss: str = "ce"                    # "ce" or "logit_adjusted"
    logit_tau: float = 1.0              # the logit adjustment's tau (Menon et al.: 1)
    # data: the search's long-tailed set (train and validation splits together), balanced test
    dataset: str = "cifar10"
    ratio: float = 100.0
    val_fraction: float = 0.2           # the search's split, undone: only the order depends on it
    data_seed: int = 0
    test_per_class: int | None = None
    augment_pad: int = 4                # random crop from a zero-padded image (DARTS: 4)
    cutout: int = 16                    # a zeroed square of this side (DARTS: 16); 0: none
    # the space a random cell is drawn from (a searched cell comes with its parent)
    primitives: tuple[str, ...] = PRIMITIVES
    nodes: int = 4
    # the network (DARTS' evaluation network: 20 cells, C = 36)
    channels: int = 36
    layers: int = 20
    stem_stride: int = 1                # 2: cells at 16x16 (the cpu profile's economy)
    auxiliary_weight: float = 0.4       # 0: no auxiliary head
    drop_path: float = 0.2              # the final drop probability, reached linearly
    resnet_blocks: int = 5              # basic blocks per stage: ResNet-32
    resnet_widths: tuple[int, ...] = (16, 32, 64)
    # optimisation (DARTS' train.py)
    epochs: int = 600
    steps_per_epoch: int | None = None  # None: one pass over the training set
    batch_size: int = 96
    lr: float = 0.025
    lr_schedule: str = "cosine"         # "cosine" to lr_min (DARTS), or "warmup_step" (LDAM-DRW)
    lr_min: float = 0.0
    warmup_epochs: int = 0              # warmup_step: lr * e / warmup_epochs for e = 1..warmup
    lr_milestones: tuple[int, ...] = ()  # warmup_step: after each, lr times lr_step_factor
    lr_step_factor: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 3e-4
    grad_clip: float | None = 5.0       # None: no clipping (LDAM-DRW)
    eval_batch_size: int = 500
    seed: int = 0

    def __post_init__(self):
        validate(self)

    def replace(self, **changes) -> RetrainConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        # the kind marker tells config.json readers which type to build (a RunConfig has none)
        return {"kind": "retrain", **dataclasses.asdict(self)}

    @staticmethod
    def from_dict(d: dict) -> RetrainConfig:
        d = {k: v for k, v in d.items() if k != "kind"}
        if d.get("parent") is not None:
            d["parent"] = RunConfig.from_dict(d["parent"])
        for key in ("primitives", "resnet_widths", "lr_milestones"):
            if key in d:
                d[key] = tuple(d[key])
        return RetrainConfig(**d)

    @property
    def method(self) -> str:
        """re_<source>_<loss>: re_darts_ce, re_hls_la, re_random_ce, re_resnet_la."""
        return f"re_{self.source}_{LOSS_TAGS[self.loss]}"

    @property
    def run_id(self) -> str:
        blob = json.dumps({"config": self.to_dict(), "version": RETRAIN_VERSION,
                           "parent": self.parent.run_id if self.parent else None},
                          sort_keys=True)
        return f"{self.method}-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"

    @property
    def source(self) -> str:
        """Where the architecture comes from: the parent's method ('darts', 'hls', ...),
        'random' or 'resnet'."""
        return self.parent.method if self.architecture == "searched" else self.architecture

    @property
    def resnet_depth(self) -> int:
        return 6 * self.resnet_blocks + 2


def validate(c: RetrainConfig) -> None:
    def bad(msg: str):
        raise ConfigError(msg)

    for f in dataclasses.fields(c):
        value = getattr(c, f.name)
        numbers = value if isinstance(value, tuple) else (value,)
        if any(isinstance(v, float) and not math.isfinite(v) for v in numbers):
            bad(f"{f.name} must be a finite number (got {value}); set it to a real value")
    if c.architecture not in ARCHITECTURES:
        bad(f"unknown architecture {c.architecture!r}; choose one of {', '.join(ARCHITECTURES)}")
    if (c.architecture == "searched") != (c.parent is not None):
        bad("a searched architecture needs the search run it comes from (parent), and only it "
            "has one; set parent for architecture='searched', none otherwise")
    if c.loss not in LOSSES:
        bad(f"unknown loss {c.loss!r}; choose one of {', '.join(LOSSES)}")
    if c.lr_schedule not in LR_SCHEDULES:
        bad(f"unknown lr_schedule {c.lr_schedule!r}; choose one of {', '.join(LR_SCHEDULES)}")
    for name in ("epochs", "batch_size", "channels", "layers", "nodes", "eval_batch_size",
                 "resnet_blocks"):
        if getattr(c, name) < 1:
            bad(f"{name} must be >= 1 (got {getattr(c, name)})")
    if c.steps_per_epoch is not None and c.steps_per_epoch < 1:
        bad(f"steps_per_epoch must be >= 1 or None (got {c.steps_per_epoch})")
    if c.layers < 3:
        bad(f"layers must be >= 3 so that both reduction cells exist (got {c.layers})")
    if c.stem_stride not in (1, 2):
        bad(f"stem_stride must be 1 or 2 (got {c.stem_stride})")
    if not 0 <= c.augment_pad <= 16:
        bad(f"augment_pad must be in [0, 16] pixels (got {c.augment_pad}); DARTS uses 4")
    if not 0 <= c.cutout <= 32:
        bad(f"cutout must be in [0, 32] pixels (got {c.cutout}); DARTS uses 16, 0 is none")
    if not 0 <= c.drop_path < 1:
        bad(f"drop_path must be in [0, 1) (got {c.drop_path}); DARTS uses 0.2")
    if c.auxiliary_weight < 0:
        bad(f"auxiliary_weight must be >= 0 (got {c.auxiliary_weight}); 0 switches it off")
    if c.lr <= 0 or c.lr_min < 0 or c.lr_min > c.lr:
        bad(f"need 0 <= lr_min <= lr and lr > 0 (got lr={c.lr}, lr_min={c.lr_min})")
    if c.warmup_epochs < 0 or list(c.lr_milestones) != sorted(set(c.lr_milestones)):
        bad(f"warmup_epochs must be >= 0 and lr_milestones increasing (got {c.warmup_epochs}, "
            f"{c.lr_milestones})")
    if c.grad_clip is not None and c.grad_clip <= 0:
        bad(f"grad_clip must be > 0 or None (got {c.grad_clip})")
    if len(c.resnet_widths) != 3 or min(c.resnet_widths) < 1:
        bad(f"resnet_widths must be three widths >= 1 (got {c.resnet_widths})")
    if not 0 < c.val_fraction < 1:
        bad(f"val_fraction must be in (0, 1) (got {c.val_fraction})")
    if c.parent is not None:
        for name in ("dataset", "ratio", "val_fraction", "data_seed"):
            if getattr(c, name) != getattr(c.parent, name):
                bad(f"{name} is {getattr(c, name)!r} but the parent search used "
                    f"{getattr(c.parent, name)!r}; retrain on the search's data set")
    try:
        check_primitives(c.primitives)
    except ValueError as exc:
        bad(str(exc))


def coerce_retrain_overrides(overrides: dict) -> dict:
    """Check override names against RetrainConfig and cast strings (`--set retrain.KEY=VALUE`)."""
    types = {f.name: f.type for f in dataclasses.fields(RetrainConfig)}
    planned = ("parent", "architecture", "seed", "loss")    # what the plan decides, per run
    out = {}
    for key, value in overrides.items():
        if key in planned:
            raise ConfigError(f"retrain.{key} is chosen by the plan for each run (chapter 6 "
                              "trains every architecture under both losses); leave it out")
        if key not in types:
            raise ConfigError(f"unknown retraining setting {key!r}; valid settings: "
                              f"{', '.join(sorted(types.keys() - set(planned)))}")
        out[key] = _cast(key, value, types[key]) if isinstance(value, str) else value
        if isinstance(out[key], list):
            out[key] = tuple(out[key])
        if key in ("resnet_widths", "lr_milestones") and isinstance(out[key], tuple):
            out[key] = tuple(int(v) for v in out[key])
    return out


# --------------------------------------------------------------------------------------------
# Data and augmentation


def whole_training_set(data: LongTailData) -> Split:
    """The search's train and validation splits together: every long-tailed training image."""
    return Split(torch.cat([data.train.images, data.val.images]),
                 torch.cat([data.train.labels, data.val.labels]), data.train.num_classes)


class Cutout:
    """A size x size square of every normalised image set to zero, centred on a uniform pixel
    and clipped at the border (DARTS' Cutout), drawn for the whole batch at once."""

    def __init__(self, device: torch.device, seed: int, size: int):
        self.size = size
        self.generator = torch.Generator(device=device).manual_seed(seed)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.size == 0:
            return x
        n, _, h, w = x.shape
        centre = torch.rand(n, 2, device=x.device, generator=self.generator)
        cy = (centre[:, 0] * h).long().view(n, 1)
        cx = (centre[:, 1] * w).long().view(n, 1)
        rows, cols = torch.arange(h, device=x.device), torch.arange(w, device=x.device)
        half = self.size // 2
        in_rows = (rows >= cy - half) & (rows < cy + half)          # (n, h)
        in_cols = (cols >= cx - half) & (cols < cx + half)          # (n, w)
        hole = in_rows.view(n, 1, h, 1) & in_cols.view(n, 1, 1, w)
        return x.masked_fill(hole, 0.0)

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])


# --------------------------------------------------------------------------------------------
# The network and the loss


def trained_genotype(config: RetrainConfig, parent_genotype: dict | None) -> dict | None:
    """The cells the network is built from: the parent's backbone cells (its BBN head cells have
    no place in DARTS' evaluation network), a random draw, or None for ResNet."""
    if config.architecture == "searched":
        if parent_genotype is None:
            raise ConfigError(f"run {config.run_id} trains the genotype of search run "
                              f"{config.parent.run_id}, which was not given")
        return check_genotype({k: parent_genotype[k] for k in CELL_TYPES if k in parent_genotype})
    if config.architecture == "random":
        return random_genotype(config.primitives, config.nodes, config.seed)
    return None


def build_network(config: RetrainConfig, genotype: dict | None, num_classes: int):
    """The network under a fixed seed, without touching the caller's global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        if config.architecture == "resnet":
            return ResNetCIFAR(config.resnet_blocks, config.resnet_widths, num_classes,
                               config.stem_stride)
        return DiscreteNet(genotype, config.channels, config.layers, num_classes,
                           auxiliary=config.auxiliary_weight > 0,
                           stem_stride=config.stem_stride)


class Loss:
    """Cross-entropy, or the logit-adjusted one: CE(logits + tau log pi, y)."""

    def __init__(self, config: RetrainConfig, class_counts: torch.Tensor):
        self.adjustment = None
        if config.loss == "logit_adjusted":
            prior = class_counts.double() / class_counts.sum()
            self.adjustment = (config.logit_tau * prior.log()).float()

    def __call__(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.adjustment is not None:
            logits = logits + self.adjustment
        return F.cross_entropy(logits, y)


def learning_rate(config: RetrainConfig, epoch: int) -> float:
    """The weight lr of epoch `epoch` (0-based).

    cosine: torch's CosineAnnealingLR over the epochs, stepped once per epoch (DARTS).
    warmup_step: LDAM-DRW's adjust_learning_rate, with e = epoch + 1: lr * e / warmup for
    e <= warmup, then lr times lr_step_factor for each milestone that e has passed."""
    if config.lr_schedule == "cosine":
        return cosine_lr(epoch, config.epochs, config.lr, config.lr_min)
    e = epoch + 1
    if e <= config.warmup_epochs:
        return config.lr * e / config.warmup_epochs
    passed = sum(e > m for m in config.lr_milestones)
    return config.lr * config.lr_step_factor ** passed


# --------------------------------------------------------------------------------------------
# Training


class Retraining:
    """One network trained from scratch, epoch by epoch, resumable; then evaluated once."""

    def __init__(self, config: RetrainConfig, data: LongTailData, device: torch.device,
                 parent_genotype: dict | None = None):
        self.config, self.device = config, device
        self.train_set, self.test, self.classes = whole_training_set(data), data.test, data.classes
        self.genotype = trained_genotype(config, parent_genotype)
        self.net = build_network(config, self.genotype, self.train_set.num_classes).to(device)
        # every random stream seeded from the run's seed, and part of the checkpoint
        seed = config.seed
        self.sampler = InstanceSampler(self.train_set.labels, config.batch_size, seed * 1000)
        self.augment = Augmenter(device, seed * 1000 + 1, pad=config.augment_pad)
        self.cutout = Cutout(device, seed * 1000 + 2, config.cutout)
        self.drop_path_generator = torch.Generator(device=device).manual_seed(seed * 1000 + 3)
        self.net.generator = self.drop_path_generator
        self.loss = Loss(config, self.train_set.class_counts.to(device))
        self.optimizer = torch.optim.SGD(self.net.parameters(), lr=config.lr,
                                         momentum=config.momentum,
                                         weight_decay=config.weight_decay)
        self.steps_per_epoch = config.steps_per_epoch or len(self.train_set) // config.batch_size
        self.history: list[dict] = []

    def schedule(self, epoch: int) -> dict:
        """The weight lr and the drop-path probability of epoch `epoch` (0-based; DARTS ramps
        drop-path linearly from 0 in the first epoch)."""
        c = self.config
        return {"lr": learning_rate(c, epoch), "drop_prob": c.drop_path * epoch / c.epochs}

    def batch(self):
        idx = next(self.sampler).to(self.train_set.images.device, non_blocking=True)
        x = self.cutout(self.augment(self.train_set.images[idx]))
        return x, self.train_set.labels[idx]

    def step(self, x, y):
        logits, aux = self.net(x)
        loss = self.loss(logits, y)
        if aux is not None:
            loss = loss + self.config.auxiliary_weight * self.loss(aux, y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.config.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.net.parameters(), self.config.grad_clip)
        self.optimizer.step()
        return loss.detach(), (logits.argmax(1) == y).float().mean()

    def run_epoch(self, epoch: int, progress=None) -> dict:
        c, s = self.config, self.schedule(epoch)
        for group in self.optimizer.param_groups:
            group["lr"] = s["lr"]
        self.net.drop_prob = s["drop_prob"]
        self.net.train()
        start = time.perf_counter()
        loss_sum = torch.zeros((), device=self.device)
        acc_sum = torch.zeros((), device=self.device)
        for step in range(self.steps_per_epoch):
            loss, acc = self.step(*self.batch())
            loss_sum += loss
            acc_sum += acc
            if progress is not None:
                progress.update(1)
                if step % 10 == 0 or step == self.steps_per_epoch - 1:
                    progress.set_postfix(epoch=f"{epoch + 1}/{c.epochs}", loss=f"{loss.item():.3f}",
                                         lr=f"{s['lr']:.4f}", refresh=False)
        train_loss = (loss_sum / self.steps_per_epoch).item()
        if not math.isfinite(train_loss):
            raise TrainingDiverged(epoch + 1)
        record = {"epoch": epoch + 1, **s, "train_loss": train_loss,
                  "train_acc": (acc_sum / self.steps_per_epoch).item(),
                  "seconds": time.perf_counter() - start}
        self.history.append(record)
        return record

    @torch.no_grad()
    def test_logits(self) -> torch.Tensor:
        self.net.eval()
        out = [self.net(self.augment.normalize(self.test.images[i:i + self.config.eval_batch_size]))
               .float().cpu() for i in range(0, len(self.test), self.config.eval_batch_size)]
        self.net.train()
        return torch.cat(out)

    def evaluate(self) -> dict:
        """Test accuracy, balanced and per class, and the groups of hls.train.evaluate (head /
        middle / tail thirds, many / medium / few shot), with the network's size."""
        logits, y = self.test_logits(), self.test.labels.cpu()
        pred = logits.argmax(1)
        per_class = [(pred[y == c] == c).float().mean().item()
                     for c in range(self.test.num_classes)]
        counts = self.train_set.class_counts.cpu().tolist()
        groups = {name: sum(per_class[c] for c in cls) / len(cls)
                  for name, cls in class_groups(counts).items()}
        return {"acc": accuracy(logits, y), "balanced_acc": balanced_accuracy(logits, y),
                "test_loss": F.cross_entropy(logits, y).item(),
                "per_class": per_class, "groups": groups, "train_counts": counts,
                "classes": list(self.classes),
                "parameters": parameter_count(self.net), "multiply_adds": multiply_adds(self.net)}

    # ---- checkpoints

    def state_dict(self) -> dict:
        return {"net": self.net.state_dict(), "optimizer": self.optimizer.state_dict(),
                "sampler": self.sampler.state_dict(), "augment": self.augment.state_dict(),
                "cutout": self.cutout.state_dict(),
                "drop_path": self.drop_path_generator.get_state(), "history": self.history}

    def load_state_dict(self, state: dict) -> None:
        self.net.load_state_dict(state["net"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.sampler.load_state_dict(state["sampler"])
        self.augment.load_state_dict(state["augment"])
        self.cutout.load_state_dict(state["cutout"])
        self.drop_path_generator.set_state(state["drop_path"])
        self.history = list(state["history"])
