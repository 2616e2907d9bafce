"""Search-step benchmark: throughput and peak memory, fast path against the textbook formulation.

`python -m hls bench [--device cuda] [--sizes paper cpu] [--orders 1 2]`

A step is what the search loop does per iteration: one architecture step on validation batches
(first- or second-order) and one weight step on training batches. Images/s counts every image
that goes forward and backward in it: the training and the validation batches of each sampler.
On the CPU the paper-size step is the plain DARTS step at batch 64 (the issue's CPU target); on
CUDA it is the BBN step at batch 128 per sampler, both branches (the paper's setting).

"textbook" computes every op (the `none` term as x * 0), in float32 and the contiguous NCHW
layout; "fast" is the device's default Speed. Both run in the same process on the same data.

Bandwidth (CUDA): bytes the step must move are estimated from the activations: every module
output is written once in the forward pass and read once in the backward pass, and its gradient
is written once and read once, so 4 x activation bytes per forward+backward pass (weights are
negligible at this size). Achieved fraction = those bytes / step time / the device's peak.
"""

from __future__ import annotations

import dataclasses
import gc
import resource
import statistics
import time

import torch

from . import experiments
from .config import RunConfig
from .data import Augmenter, LongTailData, Split
from .train import (GraphedStep, Search, Speed, resolve_device, running_uncaptured,
                    tf32_allowed)

PEAK_BANDWIDTH = {"H100": 3.35e12, "H200": 4.8e12, "A100": 2.0e12, "A6000": 0.768e12}


def synthetic_data(n_train: int, n_val: int, device, num_classes: int = 10) -> LongTailData:
    """Random uint8 images with a long-tailed label profile: speed does not need real pixels."""
    g = torch.Generator().manual_seed(0)

    def split(n):
        labels = torch.arange(n) % num_classes
        images = torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
        return Split(images.to(device), labels.to(device), num_classes)

    return LongTailData(split(n_train), split(n_val), split(num_classes * 10),
                        tuple(str(c) for c in range(num_classes)))


def bench_config(size: str, device: torch.device, order: int) -> RunConfig:
    if size == "paper":
        fields = dict(experiments.PROFILES["paper"]["fields"])
        if device.type == "cpu":
            fields.update(batch_size=64)
            return RunConfig(method="darts", **{**fields, "order": order})
        return RunConfig(method="darts_bbn", bilateral=True, **{**fields, "order": order})
    fields = dict(experiments.PROFILES["cpu"]["fields"])
    return RunConfig(method="darts_bbn", bilateral=True, **{**fields, "order": order})


def bench_data(config: RunConfig, device) -> LongTailData:
    """Enough synthetic images for a few steps of every sampler at this config's batch size."""
    n = max(4 * config.batch_size, 512)
    return synthetic_data(n, n, device)


def images_per_step(config: RunConfig) -> int:
    samplers = 2 if config.bilateral else 1
    return 2 * samplers * config.batch_size   # train + val batches of every sampler


def time_steps(search: Search, repeats: int, warmup: int = 2) -> list[float]:
    """Seconds per search step (architecture step + weight step), after warm-up steps.

    A graphed step also warms up through its eager calls and the call that captures (that
    call's time is kept in `search.capture_seconds`: it recurs once an epoch).
    """
    schedule = search.schedule(0)
    search._set_learning_rates(schedule)
    search._set_train_mode()
    sync = torch.cuda.synchronize if search.device.type == "cuda" else (lambda: None)
    graphed = isinstance(search.stepper, GraphedStep)
    capture_call = search.stepper.warmup if graphed else None
    warmup += capture_call + 1 if graphed else 0
    times = []
    for i in range(warmup + repeats):
        sync()
        start = time.perf_counter()
        search.stepper(search.streams.next("train"), search.streams.next("val"), schedule)
        sync()
        if i == capture_call:
            search.capture_seconds = time.perf_counter() - start
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return times


def activation_bytes(search: Search) -> int:
    """Bytes of every leaf module's output in one forward pass of a training batch."""
    total = 0

    def hook(_, __, out):
        nonlocal total
        if torch.is_tensor(out):
            total += out.numel() * out.element_size()

    handles = [m.register_forward_hook(hook) for m in search.net.modules()
               if not list(m.children())]
    with torch.no_grad():
        search.objective(search.net, search.streams.next("train"), 0.5)
    for h in handles:
        h.remove()
    return total


def release_memory(device: torch.device) -> None:
    """Free the last measured network now: a graphed search refers to itself (its stepper holds
    its step), so only the cycle collector frees it, and its graph's memory with it."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def measure(size: str, order: int, device: torch.device, speed: Speed, repeats: int) -> dict:
    release_memory(device)
    config = bench_config(size, device, order)
    search = Search(config, bench_data(config, device), device, speed)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = time_steps(search, repeats)
    seconds = statistics.median(times)
    row = {"size": size, "order": order, "speed": speed, "seconds": seconds,
           "images_per_s": images_per_step(config) / seconds,
           "capture_s": getattr(search, "capture_seconds", None),
           "config": f"C={config.channels} L={config.layers} N={config.nodes} "
                     f"batch {config.batch_size}{' x2 samplers' if config.bilateral else ''}"}
    if device.type == "cuda":
        row["peak_gb"] = torch.cuda.max_memory_allocated(device) / 1e9
        # forward+backward passes in a step: weight step 1, first-order arch step 1,
        # second-order arch step 4 (train grad, val grad, two finite-difference passes)
        passes = 1 + (1 if order == 1 else 4)
        moved = 4 * activation_bytes(search) * passes
        name = torch.cuda.get_device_name(device)
        peak = next((v for k, v in PEAK_BANDWIDTH.items() if k in name), None)
        row["bandwidth_fraction"] = moved / seconds / peak if peak else None
    else:
        row["peak_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9
    return row


def main(args) -> None:
    device = resolve_device(args.device)
    fast = Speed.default_for(device)
    textbook = Speed.textbook()
    print(f"device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}"
          f", {torch.get_num_threads()} threads), torch {torch.__version__}; median of "
          f"{args.repeats} steps after 2 warm-up steps")
    print(f"fast = {fast}\ntextbook = {textbook}")
    header = (f"{'size':<6} {'config':<28} {'order':>5} {'fast s/step':>12} {'img/s':>8} "
              f"{'textbook s':>11} {'img/s':>8} {'speed-up':>9} {'peak GB':>8}")
    if device.type == "cuda":
        header += f" {'BW frac':>8} {'capture s':>10}"
    print(header)
    for size in args.sizes:
        for order in args.orders:
            f = measure(size, order, device, fast, args.repeats)
            t = measure(size, order, device, textbook, args.repeats)
            line = (f"{size:<6} {f['config']:<28} {order:>5} {f['seconds']:>12.3f} "
                    f"{f['images_per_s']:>8.0f} {t['seconds']:>11.3f} {t['images_per_s']:>8.0f} "
                    f"{t['seconds'] / f['seconds']:>8.2f}x {f['peak_gb']:>8.2f}")
            if device.type == "cuda":
                frac = f.get("bandwidth_fraction")
                line += f" {frac:>8.2f}" if frac is not None else f" {'?':>8}"
                cap = f.get("capture_s")
                line += f" {cap:>10.2f}" if cap is not None else f" {'-':>10}"
            print(line, flush=True)


def levers(args) -> None:
    """What each lever buys: the default path against the default with that one lever off.

    Each variant runs `repeats` steps in each of `rounds` interleaved rounds (so a slow minute
    of the machine hits every variant alike); the median over all its steps is reported.
    """
    device = resolve_device(args.device)
    default = Speed.default_for(device)
    variants = {"default": default}
    for field in dataclasses.fields(Speed):
        name, on = field.name, getattr(default, field.name)
        if name.startswith("cpu_") and device.type != "cpu":
            continue                            # no-ops off the CPU
        if on:
            variants[f"without {name}"] = dataclasses.replace(default, **{name: False})
        elif device.type == "cuda" and name != "compile":   # on CUDA, each lever that is off
            variants[f"with {name}"] = dataclasses.replace(default, **{name: True})
    variants["textbook"] = Speed.textbook()
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"median of {args.rounds} x {args.repeats} steps, first order")
    for size in args.sizes:
        config = bench_config(size, device, 1)
        data = bench_data(config, device)
        times = {name: [] for name in variants}
        for _ in range(args.rounds):
            for name, speed in variants.items():
                release_memory(device)
                times[name] += time_steps(Search(config, data, device, speed), args.repeats)
        base = statistics.median(times["default"])
        print(f"{size}: C={config.channels} L={config.layers} N={config.nodes} "
              f"batch {config.batch_size}{' x2 samplers' if config.bilateral else ''}")
        for name, ts in times.items():
            t = statistics.median(ts)
            print(f"  {name:<40} {t:8.3f} s/step  {t / base:5.2f}x the default", flush=True)


def trace(args) -> None:
    """Where a step's device time goes: torch.profiler over eager steps of the default path
    (a graph replays the same kernels), the kernels with the most self time first."""
    from torch.profiler import ProfilerActivity, profile
    device = resolve_device(args.device)
    speed = dataclasses.replace(Speed.default_for(device), cuda_graph=False)
    config = bench_config(args.sizes[0], device, args.orders[0])
    search = Search(config, bench_data(config, device), device, speed)
    time_steps(search, repeats=0)               # warm-up
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        time_steps(search, repeats=args.repeats, warmup=0)
    key = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    print(f"{args.sizes[0]} size, order {args.orders[0]}, {args.repeats} steps, {speed}")
    print(prof.key_averages().table(sort_by=key, row_limit=25, max_name_column_width=60))


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
    ops' contributions, which nearly cancel, so a relative error of 1e-7 in the activations
    can become 1e-2 in it. It is worse on synthetic data (random pixels and labels: no signal,
    a nearly flat loss in alpha) than on CIFAR-10-LT: on the CPU channels_last differs by
    1.5e-2 on synthetic data and 5.8e-3 on the real one (the default path: 4.4e-7 and 2.8e-7).

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
    It is no check for levers that change the arithmetic: there a first-step difference of
    1e-6 grows to 1e-2 within three steps (measured on the CPU, default levers vs textbook),
    because max pooling breaks ties between equal inputs differently per kernel and Adam's
    first steps move each alpha by about lr times the sign of its gradient.
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
            s = search.schedule(0)
            search._set_learning_rates(s)
            search._set_train_mode()
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
    if args.compile:
        levers["torch.compile"] = Speed(compile=True)
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
