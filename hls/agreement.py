"""Does the fast path compute the same search step as the exact one?

`python -m hls bench --check [--device cuda] [--data real]` prints each speed lever's relative
error against the textbook step (every op computed, float32, NCHW); tests/test_speed.py runs
the same functions. `step_agreement` compares one step's loss and alpha gradients,
`trajectory_agreement` several whole steps (the check for levers that reorganise the step, such
as the CUDA graph).
"""

from __future__ import annotations

import torch

from .config import RunConfig
from .data import LongTailData
from .synthetic import synthetic_data
from .speed import Speed, running_uncaptured, tf32_allowed
from .train import Search, resolve_device


# the checks' network: small, but every kind of cell, op and head of the real one
CHECK_CONFIG = RunConfig(method="darts_bbn", bilateral=True, channels=8, layers=5, nodes=3,
                         batch_size=32)


def search_with_drawn_alphas(config: RunConfig, data: LongTailData, device: torch.device,
                             speed: Speed) -> Search:
    """A search whose alphas are drawn from N(0, 1) with a fixed seed, away from their
    near-zero initialisation (see step_agreement)."""
    search = Search(config, data, device, speed)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for a in search.net.alphas.values():
            a.copy_(torch.randn(a.shape, generator=g))
    return search


def step_agreement(device: torch.device, fast: Speed, config: RunConfig | None = None,
                   data: LongTailData | None = None, dtype: torch.dtype = torch.float32) -> dict:
    """Relative error of the training loss and of every alpha gradient, fast path vs exact,
    for one search step from identical state (same seed, same batches).

    The alpha gradient is ill-conditioned: each entry is a softmax-weighted difference of the
    ops' contributions, which nearly cancel, so float32 rounding in the activations is
    amplified many times in it, more on synthetic data (random pixels and labels: no signal, a
    nearly flat loss in alpha) than on CIFAR-10-LT (docs/performance.md, "How strict the
    agreement check is").

    The alphas are first drawn away from their near-zero initialisation: at init every op has
    the same weight and the alpha gradient is a difference of nearly equal numbers, which no
    two float32 orderings reproduce to 1e-2. TF32 follows each Speed (the exact path: off).

    `dtype=torch.float64` runs both paths in double precision, which tells the two causes of a
    disagreement apart: a lever that computes the same function agrees to 1e-15 or better there,
    one with a bug does not. (Precision levers, bf16 and TF32, act on float32 only.)
    """
    config = config or CHECK_CONFIG
    data = data if data is not None else synthetic_data(256, 256, device)
    exact = step_result(device, Speed.textbook(), config, data, dtype)
    return relative_errors(exact, step_result(device, fast, config, data, dtype))


def step_result(device: torch.device, speed: Speed, config: RunConfig, data: LongTailData,
                dtype: torch.dtype = torch.float32) -> tuple:
    """(training loss, alpha gradients) of one search step from the checks' drawn state."""
    search = search_with_drawn_alphas(config, data, device, speed)
    search.net.to(dtype)     # in place: the optimisers keep their parameters
    train_batch, val_batch = (tuple(t.to(dtype) if t.is_floating_point() else t
                                    for t in search.streams.next(split))
                              for split in ("train", "val"))
    loss_fn = lambda b: search.objective(search.net, b, 0.5)[0]  # noqa: E731
    with tf32_allowed(speed.tf32):
        grads = search.architect.gradient(loss_fn, val_batch, order=1)
        loss = loss_fn(train_batch).detach()
    # compared in double: a float32 cast would hide float64 differences below 1e-7
    return loss.double(), {k: v.double() for k, v in grads.items()}


def relative_errors(exact: tuple, fast: tuple) -> dict:
    (l0, g0), (l1, g1) = exact, fast
    rel = {"loss": ((l1 - l0).abs() / l0.abs()).item()}
    rel.update({f"grad {k}": ((g1[k] - g0[k]).norm() / g0[k].norm()).item() for k in g0})
    return rel


def trajectory_agreement(device: torch.device, fast: Speed, reference: Speed,
                         steps: int = 6, config: RunConfig | None = None,
                         make_stepper=None, make_reference_stepper=None) -> dict:
    """Relative error of `steps` whole search steps, fast against reference, from one state
    on the same batches: each step's training loss and architecture-gradient norms (worst
    step), and the change of every weight over all steps. Deterministic kernels in both.

    The check for levers that reorganise the step and keep its kernels: a CUDA graph that
    replayed stale batches or a stale schedule passes a one-gradient check and fails this one.
    It is no check for levers that change the arithmetic: there a first-step difference grows
    by orders of magnitude within a few steps (docs/performance.md), because max pooling
    breaks ties between equal inputs differently per kernel and Adam's first steps move each
    alpha by about lr times the sign of its gradient.
    `make_stepper(search)` replaces the fast search's stepper (the tests' stand-in graph),
    `make_reference_stepper(search)` the reference's.
    """
    config = config or CHECK_CONFIG
    data = synthetic_data(256, 256, device)
    runs = {}
    with _deterministic():
        for name, speed in (("reference", reference), ("fast", fast)):
            search = search_with_drawn_alphas(config, data, device, speed)
            make = make_stepper if name == "fast" else make_reference_stepper
            if make is not None:
                search.stepper = make(search)
            before = [w.detach().clone() for w in search.weights]
            s = search.start_epoch(0)
            per_step = []
            for _ in range(steps):
                loss, _, norms, _ = search.stepper(search.streams.next("train"),
                                                search.streams.next("val"), s)
                per_step.append({"loss": loss.float().clone(),
                                 **{f"grad norm {k}": v.float().clone() for k, v in norms.items()}})
            change = torch.cat([(w.detach() - b).flatten()
                                for w, b in zip(search.weights, before)])
            runs[name] = per_step, change
    (ref_steps, ref_change), (fast_steps, fast_change) = runs["reference"], runs["fast"]
    rel = {key: max(((f[key] - r[key]).abs() / r[key].abs().clamp_min(1e-12)).item()
                    for f, r in zip(fast_steps, ref_steps)) for key in ref_steps[0]}
    rel["weight change"] = ((fast_change - ref_change).norm() / ref_change.norm()).item()
    return rel


class _deterministic:
    """Deterministic kernels inside a block (cuDNN's and PyTorch's; warn where none exists)."""

    def __enter__(self):
        self.saved = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark,
                      torch.are_deterministic_algorithms_enabled(),
                      torch.is_deterministic_algorithms_warn_only_enabled())
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
        torch.use_deterministic_algorithms(True, warn_only=True)

    def __exit__(self, *exc):
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = self.saved[:2]
        torch.use_deterministic_algorithms(self.saved[2], warn_only=self.saved[3])


def check(args) -> None:
    """Print the agreement of each fast-path lever with the exact step (tolerance 1e-2)."""
    device = resolve_device(args.device)
    levers = {"default": Speed.default_for(device),
              "channels_last": Speed(channels_last=True)}
    if device.type == "cuda":
        levers["bf16 autocast"] = Speed(amp_bf16=True)
        levers["tf32"] = Speed(tf32=True)
        levers["batchnorm_unit_affine"] = Speed(batchnorm_unit_affine=True)
    if args.data == "real":
        from .data import load_long_tailed
        data = load_long_tailed("cifar10", 100, seed=0, device=device)
    else:                                     # random pixels and labels
        data = synthetic_data(256, 256, device)
    print(f"fast path vs exact (float32, NCHW, every op computed), one search step on {device}, "
          f"{args.data} data")
    dtypes = (torch.float32, torch.float64)   # float64: the same function? (step_agreement)
    exact = {d: step_result(device, Speed.textbook(), CHECK_CONFIG, data, d) for d in dtypes}
    for name, speed in levers.items():
        fast = step_result(device, speed, CHECK_CONFIG, data)
        line = _verdict(relative_errors(exact[torch.float32], fast))
        if not (speed.amp_bf16 or speed.tf32):   # precision levers act on float32 only
            fast = step_result(device, speed, CHECK_CONFIG, data, torch.float64)
            worst = max(relative_errors(exact[torch.float64], fast).values())
            line += f"; in float64 worst {worst:.0e}"
        print(f"  {name:<22} {line}", flush=True)
    if device.type == "cuda":
        graphed = Speed.default_for(device)
        steps = 6
        # the reference is the same search stepping eagerly: the same (capturable) Adam
        with running_uncaptured():
            rel = trajectory_agreement(device, graphed, graphed, steps,
                                       make_reference_stepper=lambda search: search.step)
        print(f"cuda_graph vs eager, {steps} whole steps (3 eager warm-up, capture, replays), "
              f"deterministic kernels:\n  {_verdict(rel)}", flush=True)


def _verdict(rel: dict) -> str:
    worst = max(rel.values())
    detail = ", ".join(f"{k} {v:.1e}" for k, v in rel.items())
    return f"worst {worst:.1e} {'OK  ' if worst < 1e-2 else 'FAIL'} ({detail})"
