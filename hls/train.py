"""One search run (Algorithm 1), its evaluation, and continued training (Sec. V.D).

Read top to bottom: the loss (Objective), the data streams (Streams), the search itself (Search:
one epoch = for each step an architecture step on validation batches, then a weight step on
training batches), and the evaluation sweep over the test-time mixing ratio.
"""

from __future__ import annotations

import dataclasses
import math
import time
from contextlib import nullcontext

import torch
import torch.nn.functional as F

from . import genotype as gt
from .architect import Architect, held_fixed
from .config import ConfigError, RunConfig
from .data import Augmenter, LongTailData, make_sampler
from .schedules import EpochSchedule, cosine_lr, hls_factor, mixing_ratio
from .speed import GraphedStep, Speed, tf32_allowed
from .supernet import NetConfig, SuperNet

MU_GRID = [round(0.1 * i, 1) for i in range(11)]


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the run is marked failed with its epoch."""

    def __init__(self, epoch: int):
        super().__init__(f"loss became non-finite in epoch {epoch}")
        self.epoch = epoch


def resolve_device(name: str | None) -> torch.device:
    """'auto' / None: CUDA when present, else CPU. Asking for CUDA without one is an error."""
    import os
    name = name or os.environ.get("HLS_DEVICE") or "auto"
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} asked for but no CUDA device is available; "
                          "use --device cpu (or auto)")
    try:
        return torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r}; use cpu, cuda or auto") from None


# --------------------------------------------------------------------------------------------
# The loss


def class_balanced_weights(counts: torch.Tensor, beta: float = 0.9999) -> torch.Tensor:
    """Cui et al. (2019): w_c proportional to (1 - beta) / (1 - beta^n_c), summing to C."""
    effective = (1 - beta ** counts.double()) / (1 - beta)
    w = 1 / effective
    return (w / w.sum() * len(counts)).float()


class Objective:
    """The training loss of one branch (plain CE) or of Algorithm 1, lines 6-11.

    Bilateral: the instance and the class-balanced batch go through the backbone in one pass
    (`backbone_passes` = 2: one pass each, as BBN's code); o_ins = f_ins on the instance half,
    o_cls = f_cls on the balanced half; p = softmax(mu o_ins + (1 - mu) o_cls),
    L = mu CE(p, y_ins) + (1 - mu) CE(p, y_cls).

    A head whose loss weight is exactly 0 (the instance head at mu = 0, the class head at
    mu = 1) is not run: its term is exactly zero, and a head outside the graph gets no gradient,
    so neither optimiser's weight decay or moments touch it and its BatchNorm statistics stay.
    """

    def __init__(self, config: RunConfig, class_counts: torch.Tensor, amp: bool = False):
        self.bilateral = config.bilateral
        self.passes = config.backbone_passes
        self.class_weights = (class_balanced_weights(class_counts).to(class_counts.device)
                              if config.reweight == "class_balanced" else None)
        # no autocast cache: a CUDA graph capture must not keep casts made outside of it
        self.autocast = (torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=False)
                         if amp else nullcontext())

    def __call__(self, net: SuperNet, batch, mu: float):
        """(loss, accuracy) as tensors; accuracy follows BBN: mu acc(y_ins) + (1-mu) acc(y_cls)."""
        with self.autocast:
            if not self.bilateral:
                x, y = batch
                logits = net.head("main", *net.features(x)).float()
                loss = F.cross_entropy(logits, y, weight=self.class_weights)
                return loss, (logits.argmax(1) == y).float().mean()
            x_ins, y_ins, x_cls, y_cls = batch
            share = {"ins": mu, "cls": 1 - mu}
            live = [h for h in ("ins", "cls") if share[h] != 0]
            if self.passes == 1:
                n = len(x_ins)
                s0, s1 = net.features(torch.cat([x_ins, x_cls]))
                features = {"ins": (s0[:n], s1[:n]), "cls": (s0[n:], s1[n:])}
            else:
                features = {h: net.features(x) for h, x in (("ins", x_ins), ("cls", x_cls))
                            if h in live}
            logits = {h: net.head(h, *features[h]).float() for h in live}
        mixed = sum(share[h] * logits[h] for h in live)
        labels = {"ins": y_ins, "cls": y_cls}
        loss = sum(share[h] * F.cross_entropy(mixed, labels[h]) for h in live)
        pred = mixed.argmax(1)
        acc = mu * (pred == y_ins).float().mean() + (1 - mu) * (pred == y_cls).float().mean()
        return loss, acc


# --------------------------------------------------------------------------------------------
# Data streams: persistent samplers over the train and val splits, one augmenter


class Streams:
    """Index samplers (instance, and the re-balancing one for BBN) over train and val."""

    def __init__(self, data: LongTailData, config: RunConfig, device: torch.device,
                 channels_last: bool = False):
        self.data = data
        self.channels_last = channels_last
        b, seed = config.batch_size, config.seed
        names = ["instance", config.rebalance_sampler] if config.bilateral else [config.sampler]
        self.samplers = {
            split: [make_sampler(name, getattr(data, split).labels, b, seed * 1000 + 10 * k + i)
                    for i, name in enumerate(names)]
            for k, split in enumerate(("train", "val"))}
        self.augment = Augmenter(device, seed, pad=config.augment_pad)

    def next(self, split: str):
        """(x, y) per sampler, flattened: (x, y) or (x_ins, y_ins, x_cls, y_cls)."""
        part = getattr(self.data, split)
        out = []
        for sampler in self.samplers[split]:
            idx = next(sampler).to(part.images.device, non_blocking=True)
            x = self.augment(part.images[idx])
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            out += [x, part.labels[idx]]
        return tuple(out)

    def state_dict(self) -> dict:
        return {"samplers": {k: [s.state_dict() for s in v] for k, v in self.samplers.items()},
                "augment": self.augment.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        for k, v in self.samplers.items():
            for s, st in zip(v, state["samplers"][k]):
                s.load_state_dict(st)
        self.augment.load_state_dict(state["augment"])


# --------------------------------------------------------------------------------------------
# The search


def build_net(config: RunConfig, num_classes: int, seed: int) -> SuperNet:
    """Initialise under a fixed seed without touching the caller's global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return SuperNet(NetConfig(channels=config.channels, layers=config.layers,
                                  nodes=config.nodes, num_classes=num_classes,
                                  heads=config.heads, head_cell=config.bilateral or config.head_cell,
                                  primitives=config.primitives,
                                  stem_stride=config.stem_stride))


class Search:
    """Algorithm 1 (and plain DARTS when there is one head), epoch by epoch, resumable."""

    def __init__(self, config: RunConfig, data: LongTailData, device: torch.device,
                 speed: Speed | None = None, parent_state: dict | None = None):
        self.config, self.data, self.device = config, data, device
        self.speed = speed or Speed.default_for(device)
        self.net = build_net(config, data.train.num_classes, config.seed).to(device)
        if parent_state is not None:            # continued training starts from the saved net
            self.net.load_state_dict(parent_state["net"])
        self.net = self.speed.apply(self.net)
        self.objective = Objective(config, data.train.class_counts,
                                   amp=self.speed.amp_bf16 and device.type == "cuda")
        self.streams = Streams(data, config, device, self.speed.channels_last)

        groups = [{"params": self.net.weight_parameters("backbone"), "name": "backbone"}]
        groups += [{"params": self.net.weight_parameters(h), "name": f"head_{h}"}
                    for h in config.heads]
        self.weights = [p for g in groups for p in g["params"]]
        self.weight_optimizer = torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum,
                                                weight_decay=config.weight_decay)
        graphed = self.speed.cuda_graph and device.type == "cuda"
        self.architect = Architect(self.net, config.arch_lr, config.arch_betas,
                                   config.arch_weight_decay, capturable=graphed)
        # a frozen component is outside every graph: no gradient, so no step of either optimiser
        for component in config.freeze:
            for p in self.frozen_parameters(component):
                p.requires_grad_(False)
        if parent_state is not None and config.continue_state == "carry":
            # continued training continues: SGD momentum, Adam moments and the data streams
            self.weight_optimizer.load_state_dict(parent_state["weight_optimizer"])
            self.architect.load_state_dict(parent_state["architect"])
            self.streams.load_state_dict(parent_state["streams"])
        self.steps_per_epoch = config.steps_per_epoch or len(data.train) // config.batch_size
        self.history: list[dict] = []
        # what the loop calls each step: the eager step, or its CUDA graph (Speed.cuda_graph)
        self.stepper = GraphedStep(self.step) if graphed else self.step

    def frozen_parameters(self, component: str) -> list[torch.nn.Parameter]:
        """Weights and alphas of "backbone" or of a head ("ins", "cls")."""
        if component == "backbone":
            alphas = [self.net.alphas["backbone_normal"], self.net.alphas["backbone_reduce"]]
        else:
            alphas = [a for name, a in self.net.alphas.items() if name == f"head_{component}"]
        return self.net.weight_parameters(component) + alphas

    # ---- one epoch's schedule (t = epoch + 1, as in Algorithm 1)

    def schedule(self, epoch: int) -> EpochSchedule:
        """mu, the HLS factor and the learning rates of epoch `epoch` (0-based).

        Algorithm 1 indexes epochs t = 1..T and evaluates mu at t/T (so the last epoch has
        mu = 0); BBN's code uses (t-1)/T (mixing_index="bbn"). A continued run holds the weight
        lr where the parent's cosine ended (continue_lr="hold") or runs a new cosine."""
        c = self.config
        t = epoch + 1 if c.mixing_index == "alg1" else epoch
        mu = mixing_ratio(c.mixing, t, c.epochs, c.mixing_k, c.mixing_value)
        factor = hls_factor(mu, c.hls_tau) if c.bilateral else 1.0
        frozen = 0.0 if "backbone" in c.freeze else 1.0
        if c.parent is not None and c.continue_lr == "hold":
            lr = c.lr_min
        else:
            lr = cosine_lr(epoch, c.epochs, c.lr, c.lr_min)
        return EpochSchedule(mu=mu if c.bilateral else 1.0, hls_factor=factor, lr=lr,
                             arch_lr_backbone=c.arch_lr * factor * frozen)

    def start_epoch(self, epoch: int) -> EpochSchedule:
        """Set epoch `epoch`'s learning rates (Eq. 17 scales the backbone's alphas') and put the
        network in training mode, a frozen part excepted; return the epoch's schedule."""
        s, c = self.schedule(epoch), self.config
        scale_weights = c.hls_scope == "arch+weights"
        for group in self.weight_optimizer.param_groups:
            backbone = group["name"] == "backbone"
            group["lr"] = s.lr * (s.hls_factor if backbone and scale_weights else 1.0)
        self.architect.set_lr_multipliers({"backbone_normal": s.hls_factor,
                                           "backbone_reduce": s.hls_factor})
        self.net.train()
        for component in c.freeze:   # a frozen part keeps its BatchNorm statistics
            if component == "backbone":
                self.net.stem.eval()
                self.net.cells.eval()
            else:
                self.net.heads[component].eval()
        return s

    # ---- one epoch

    def step(self, train_batch, val_batch, s: EpochSchedule):
        """One search step: an architecture step on validation data (first- or second-order,
        Eq. 9), then a weight step on training data with the alphas held fixed."""
        with tf32_allowed(self.speed.tf32):
            return self._step(train_batch, val_batch, s)

    def _step(self, train_batch, val_batch, s: EpochSchedule):
        c, mu = self.config, s.mu
        loss_fn = lambda batch: self.objective(self.net, batch, mu)[0]  # noqa: E731
        grad_norms, update_norms = self.architect.step(loss_fn, val_batch, train_batch, c.order,
                                                       s.lr, self.weight_optimizer)
        with held_fixed(self.net.alphas.values()):     # no alpha gradient in this step
            loss, acc = self.objective(self.net, train_batch, mu)
        self.weight_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in self.weights if p.grad is not None],
                                       c.grad_clip)
        self.weight_optimizer.step()
        return loss.detach(), acc.detach(), grad_norms, update_norms

    def run_epoch(self, epoch: int, progress=None) -> dict:
        c, s = self.config, self.start_epoch(epoch)
        mu = s.mu
        start = time.perf_counter()
        loss_sum = torch.zeros((), device=self.device)
        acc_sum = torch.zeros((), device=self.device)
        grad_sums = {name: torch.zeros((), device=self.device) for name in self.net.alphas}
        update_sums = {name: torch.zeros((), device=self.device) for name in self.net.alphas}
        for step in range(self.steps_per_epoch):
            loss, acc, grad_norms, update_norms = self.stepper(
                self.streams.next("train"), self.streams.next("val"), s)
            for name in grad_sums:
                grad_sums[name] += grad_norms[name]
                update_sums[name] += update_norms[name]
            loss_sum += loss
            acc_sum += acc
            if progress is not None:
                progress.update(1)
                if step % 10 == 0 or step == self.steps_per_epoch - 1:
                    progress.set_postfix(epoch=f"{epoch + 1}/{c.epochs}", loss=f"{loss.item():.3f}",
                                         mu=f"{mu:.2f}", refresh=False)  # tqdm paces output
        train_loss = (loss_sum / self.steps_per_epoch).item()
        if not math.isfinite(train_loss):
            raise TrainingDiverged(epoch + 1)
        alphas = self.net.alpha_softmax()
        genotype = gt.derive(alphas, c.primitives, c.nodes)
        record = {"epoch": epoch + 1, **dataclasses.asdict(s),
                  "train_loss": train_loss,
                  "train_acc": (acc_sum / self.steps_per_epoch).item(),
                  **self.validate(mu),
                  "arch_grad_norm": {k: (v / self.steps_per_epoch).item()
                                     for k, v in grad_sums.items()},
                  "arch_update_norm": {k: (v / self.steps_per_epoch).item()
                                       for k, v in update_sums.items()},
                  "alphas": alphas, "genotype": genotype,
                  "skip_count": gt.count_op(genotype, "skip_connect"),
                  "seconds": time.perf_counter() - start}
        self.history.append(record)
        return record

    def validate(self, mu: float) -> dict:
        """Per-epoch validation loss, accuracy and balanced accuracy at the epoch's mu (Fig. 2),
        and each head's alone. The split is long-tailed: plain accuracy weighs the head classes,
        balanced accuracy (the mean over classes) estimates the balanced test accuracy."""
        val = self.data.val
        if self.config.val_curve_images is not None:   # every k-th image: classes stay in
            k = max(1, -(-len(val) // self.config.val_curve_images))   # proportion (sorted)
            val = type(val)(val.images[::k], val.labels[::k], val.num_classes)
        logits = head_logits(self.net, val, self.config.eval_batch_size,
                             self.speed.channels_last, self.streams.augment)
        y = val.labels.cpu()
        mixed = mix(logits, mu)
        out = {"val_loss": F.cross_entropy(mixed, y).item(),
               "val_acc": accuracy(mixed, y), "val_bacc": balanced_accuracy(mixed, y)}
        if self.config.bilateral:
            for h in ("ins", "cls"):
                out[f"val_acc_{h}"] = accuracy(logits[h], y)
                out[f"val_bacc_{h}"] = balanced_accuracy(logits[h], y)
        return out

    def evaluate(self) -> dict:
        return evaluate(self.net, self.data, self.config, self.speed.channels_last,
                        self.streams.augment)

    # ---- checkpoints

    def state_dict(self) -> dict:
        return {"net": self.net.state_dict(), "weight_optimizer": self.weight_optimizer.state_dict(),
                "architect": self.architect.state_dict(), "streams": self.streams.state_dict(),
                "history": self.history}

    def load_state_dict(self, state: dict) -> None:
        self.net.load_state_dict(state["net"])
        self.weight_optimizer.load_state_dict(state["weight_optimizer"])
        self.architect.load_state_dict(state["architect"])
        self.streams.load_state_dict(state["streams"])
        self.history = list(state["history"])
        if isinstance(self.stepper, GraphedStep):   # the capture points at the old state tensors
            self.stepper.reset()


# --------------------------------------------------------------------------------------------
# Evaluation


@torch.no_grad()
def head_logits(net: SuperNet, split, batch_size: int, channels_last: bool,
                augment: Augmenter) -> dict[str, torch.Tensor]:
    """Every head's logits on every image of a split (eval mode), on the CPU as float32."""
    was_training = net.training
    net.eval()
    out: dict[str, list] = {}
    for i in range(0, len(split), batch_size):
        x = augment.normalize(split.images[i:i + batch_size])
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        for name, logits in net(x).items():
            out.setdefault(name, []).append(logits.float().cpu())
    net.train(was_training)
    return {k: torch.cat(v) for k, v in out.items()}


def accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    return (logits.argmax(1) == y).float().mean().item()


def balanced_accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    """The mean over the classes present in y of each class's accuracy."""
    correct = (logits.argmax(1) == y).double()
    classes = torch.unique(y)
    return torch.stack([correct[y == c].mean() for c in classes]).mean().item()


def mix(logits: dict[str, torch.Tensor], mu: float) -> torch.Tensor:
    """Inference at mixing ratio mu: mu o_ins + (1 - mu) o_cls on the same image."""
    if "main" in logits:
        return logits["main"]
    return mu * logits["ins"] + (1 - mu) * logits["cls"]


def class_groups(train_counts: list[int]) -> dict[str, list[int]]:
    """Many (>100 images) / medium (20-100) / few (<20) shot classes where they exist, and the
    head / middle / tail thirds of the classes sorted by training count."""
    order = sorted(range(len(train_counts)), key=lambda c: -train_counts[c])
    third = round(len(order) / 3)
    groups = {"head": order[:third], "middle": order[third:len(order) - third],
              "tail": order[len(order) - third:]}
    shots = {"many": [c for c, n in enumerate(train_counts) if n > 100],
             "medium": [c for c, n in enumerate(train_counts) if 20 <= n <= 100],
             "few": [c for c, n in enumerate(train_counts) if n < 20]}
    groups.update({k: v for k, v in shots.items() if v})
    return groups


def evaluate(net: SuperNet, data: LongTailData, config: RunConfig, channels_last: bool,
             augment: Augmenter) -> dict:
    """Test accuracy over mu_test in 0, 0.1, ..., 1 and the headline numbers.

    paper protocol: the best mu_test chosen on the test set itself (what the paper reports);
    val-chosen: mu_test chosen on the validation split by balanced accuracy (the split is
    long-tailed, the test set balanced), then measured once on test; val-chosen (plain): chosen
    by plain validation accuracy, which favours the head classes. Ties go to the smaller mu.
    """
    test = head_logits(net, data.test, config.eval_batch_size, channels_last, augment)
    val = head_logits(net, data.val, config.eval_batch_size, channels_last, augment)
    y_test, y_val = data.test.labels.cpu(), data.val.labels.cpu()
    grid = MU_GRID if config.bilateral else [1.0]
    sweep = mu_sweep(test, y_test, val, y_val, grid)
    pred = mix(test, sweep["val_chosen"]["mu"]).argmax(1)
    per_class = [(pred[y_test == c] == c).float().mean().item()
                 for c in range(data.test.num_classes)]
    counts = data.train.class_counts.cpu().tolist()
    groups = {name: sum(per_class[c] for c in cls) / len(cls)
              for name, cls in class_groups(counts).items()}
    return {"mu_grid": grid if config.bilateral else None, **sweep,
            "per_class": per_class, "groups": groups, "train_counts": counts,
            "classes": list(data.classes)}


def mu_sweep(test: dict, y_test, val: dict, y_val, grid: list[float]) -> dict:
    """Accuracy at every mu_test of the grid, and the three choices of mu_test."""
    test_acc = [accuracy(mix(test, mu), y_test) for mu in grid]
    val_acc = [accuracy(mix(val, mu), y_val) for mu in grid]
    val_bacc = [balanced_accuracy(mix(val, mu), y_val) for mu in grid]
    best = lambda scores: max(range(len(grid)), key=lambda i: scores[i])  # noqa: E731
    chosen = lambda i: {"mu": grid[i], "acc": test_acc[i]}  # noqa: E731
    return {"test_acc": test_acc, "val_acc": val_acc, "val_bacc": val_bacc,
            "paper_protocol": chosen(best(test_acc)),
            "val_chosen": chosen(best(val_bacc)),
            "val_chosen_plain": chosen(best(val_acc))}
