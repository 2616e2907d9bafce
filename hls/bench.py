"""Search-step benchmark: throughput and peak memory, fast path against the textbook formulation.

`python -m hls bench [--device cuda] [--sizes paper cpu] [--orders 1 2]`; `--levers` and `--trace`
here too. Whether the fast path computes the same step is hls.agreement's (`bench --check`).

A step is what the search loop does per iteration: one architecture step on validation batches
(first- or second-order) and one weight step on training batches. Images/s counts every image
that goes forward and backward in it: the training and the validation batches of each sampler.
On the CPU the paper-size step is the plain DARTS step at batch 64 (what a CPU user would search); on
CUDA it is the BBN step at batch 128 per sampler, both branches (the paper's setting).

"textbook" is Speed.textbook() (PyTorch's own kernels, float32, the contiguous NCHW layout);
"fast" is the device's default Speed. Both run in the same process on the same data.

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
from .data import LongTailData
from .synthetic import synthetic_data
from .speed import GraphedStep, Speed
from .train import Search, resolve_device

PEAK_BANDWIDTH = {"H100": 3.35e12, "H200": 4.8e12, "A100": 2.0e12, "A6000": 0.768e12}


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
    schedule = search.start_epoch(0)
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
        elif device.type == "cuda":             # on CUDA, each lever that is off
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
