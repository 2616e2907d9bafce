"""The speed levers compute the same search step as the exact path (float32, NCHW, all ops)."""

import dataclasses
import importlib.util
import pathlib
import subprocess
import sys

import pytest
import torch

from hls.agreement import step_agreement, trajectory_agreement
from hls.bench import time_steps
from hls.synthetic import synthetic_data
from hls.config import RunConfig
from hls.supernet import NetConfig, SuperNet
from hls.speed import GraphedStep, Speed
from hls.train import Search

TINY = RunConfig(method="darts_bbn", bilateral=True, channels=4, layers=3, nodes=2, batch_size=8)
CPU = torch.device("cpu")


def test_default_cpu_path_is_the_exact_step():
    # the CPU kernels add the same products in another order (tests/test_darts.py checks each
    # kernel alone, and that leaving out `none` changes no bit)
    rel = step_agreement(CPU, Speed.default_for(CPU), TINY)
    assert max(rel.values()) < 1e-5, rel


def test_channels_last_agrees_within_tolerance_on_the_loss():
    rel = step_agreement(CPU, Speed(channels_last=True), TINY)
    assert rel["loss"] < 1e-5
    # alpha gradients: measured 1e-3 to 1.5e-2 on the CPU, which is why it is off by default
    assert max(rel.values()) < 5e-2


@pytest.mark.parametrize("lever", ["default", "channels_last"])
def test_levers_compute_the_same_function_in_float64(lever):
    # in double precision float32's amplified rounding is gone: what is left would be a bug
    speed = Speed.default_for(CPU) if lever == "default" else Speed(channels_last=True)
    rel = step_agreement(CPU, speed, TINY, dtype=torch.float64)
    assert max(rel.values()) < 1e-10, rel


def test_benchmark_step_runs():
    search = Search(TINY, synthetic_data(64, 64, CPU), CPU, Speed())
    times = time_steps(search, repeats=1, warmup=0)
    assert len(times) == 1 and times[0] > 0


def test_original_darts_baseline_times_the_same_backbone():
    """scripts/original_darts_step.py, the baseline the CPU target was set against, builds the
    same network as `hls`'s DARTS (the same weights, cell for cell, and the classifier) and
    runs; its state dict has the same layout, tensor for tensor."""
    path = pathlib.Path(__file__).parents[1] / "scripts" / "original_darts_step.py"
    spec = importlib.util.spec_from_file_location("original_darts_step", path)
    original = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(original)
    for layers in (3, 8):
        theirs = original.SearchNetwork(c=16, layers=layers)
        ours = SuperNet(NetConfig(channels=16, layers=layers))
        assert weight_shapes(theirs.stem, theirs.cells) == weight_shapes(ours.stem, ours.cells)
        assert weight_shapes(theirs.classifier) == weight_shapes(ours.heads["main"].classifier)
        assert state_shapes(theirs) == state_shapes(ours), layers
    out = subprocess.run([sys.executable, str(path), "--layers", "3", "--batch", "4",
                          "--steps", "1", "--warmup", "0"],
                         capture_output=True, text=True, check=True).stdout
    assert "C=16 L=3 N=4 batch 4" in out and "median" in out


def weight_shapes(*modules):
    return [tuple(p.shape) for m in modules for p in m.parameters()]


def state_shapes(net):
    """Every tensor of the state dict (weights, BatchNorm buffers, alphas) by shape, in order,
    the alphas last: the two networks name them differently."""
    state = net.state_dict()
    alphas = [k for k in state if "alphas" in k]
    return [tuple(state[k].shape) for k in state if k not in alphas] + \
        [tuple(state[k].shape) for k in alphas]


class CallAgain:
    """A CUDA graph's stand-in on the CPU: capture records the function, replay calls it again.
    What it tests is GraphedStep's part: fixed input buffers, outputs, recapture."""

    captures = 0

    def capture(self, fn):
        CallAgain.captures += 1
        self.fn = fn

    def replay(self):
        return self.fn()


def graphed(search, warmup=2):
    return GraphedStep(search.step, warmup=warmup, recorder=CallAgain)


def test_graphed_step_replays_each_new_batch():
    # a replay that read stale batches (or computed nothing) would differ at the third step
    rel = trajectory_agreement(CPU, Speed(), Speed(), steps=5, config=TINY, make_stepper=graphed)
    assert max(rel.values()) == 0.0, rel


def test_graphed_step_recaptures_each_epoch_and_after_loading():
    config = dataclasses.replace(TINY, epochs=2, steps_per_epoch=3, mixing="parabolic")
    data = synthetic_data(64, 64, CPU)
    eager, replayed = Search(config, data, CPU), Search(config, data, CPU)
    replayed.stepper = graphed(replayed)
    CallAgain.captures = 0
    for epoch in range(2):     # a new mu and learning rate each epoch: a stale capture differs
        a, b = eager.run_epoch(epoch), replayed.run_epoch(epoch)
        assert a["train_loss"] == b["train_loss"] and a["mu"] == b["mu"]
    assert CallAgain.captures == 2
    for (k, x), y in zip(eager.net.state_dict().items(), replayed.net.state_dict().values()):
        assert torch.equal(x, y), k
    replayed.load_state_dict(eager.state_dict())
    assert replayed.stepper.captured is None
