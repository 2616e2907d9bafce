"""The paper's method: Algorithm 1's loss, gradient routing by mu, schedules, continued training."""

import math

import pytest
import torch
import torch.nn.functional as F

from hls import experiments, runs, schedules
from hls.config import RunConfig
from hls.train import Objective, class_balanced_weights, mix


class FixedLogits:
    """A stand-in network whose heads return given logits: the loss alone is under test."""

    def __init__(self, o_ins, o_cls):
        self.o = {"ins": o_ins, "cls": o_cls}

    def features(self, x):
        n = len(x) // 2
        return torch.arange(2 * n), torch.arange(2 * n)

    def head(self, name, s0, s1):
        return self.o[name]


def test_algorithm_1_loss_by_hand():
    o_ins = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 0.0]])
    o_cls = torch.tensor([[0.0, 1.0, 0.0], [-1.0, 2.0, 1.0]])
    y_ins, y_cls = torch.tensor([0, 1]), torch.tensor([2, 1])
    mu = 0.3
    x = torch.zeros(2, 3, 4, 4)
    loss, _ = Objective(RunConfig(bilateral=True), torch.ones(3))(
        FixedLogits(o_ins, o_cls), (x, y_ins, x, y_cls), mu)
    expected = 0.0
    for i in range(2):  # p = softmax(mu o_ins + (1 - mu) o_cls), written out
        z = [mu * a + (1 - mu) * b for a, b in zip(o_ins[i].tolist(), o_cls[i].tolist())]
        log_p = [v - math.log(sum(math.exp(u) for u in z)) for v in z]
        expected += -(mu * log_p[y_ins[i]] + (1 - mu) * log_p[y_cls[i]]) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_inference_mix():
    logits = {"ins": torch.ones(2, 3), "cls": torch.zeros(2, 3)}
    assert torch.allclose(mix(logits, 0.25), torch.full((2, 3), 0.25))
    assert torch.equal(mix({"main": logits["ins"]}, 0.0), logits["ins"])


@pytest.mark.parametrize("mu, silent", [(1.0, "cls"), (0.0, "ins")])
def test_mu_routes_gradients(lt_data, mu, silent):
    from hls.train import Search, Streams
    cfg = experiments.config("darts_bbn", "smoke", 0)
    search = Search(cfg, lt_data, torch.device("cpu"))
    batch = Streams(lt_data, cfg, torch.device("cpu")).next("train")
    loss, _ = search.objective(search.net, batch, mu)
    loss.backward()
    head = search.net.heads[silent]
    assert all(p.grad is None or torch.count_nonzero(p.grad) == 0 for p in head.parameters())
    assert torch.count_nonzero(search.net.alphas[f"head_{silent}"].grad) == 0
    other = "ins" if silent == "cls" else "cls"
    assert torch.count_nonzero(search.net.alphas[f"head_{other}"].grad) > 0
    assert torch.count_nonzero(search.net.alphas["backbone_normal"].grad) > 0


@pytest.mark.parametrize("T", [10, 50])
def test_schedules_match_their_formulas(T):
    for t in [0, 1, T / 4, T / 2, 3 * T / 4, T]:
        assert schedules.parabolic(t, T) == pytest.approx(1 - (t / T) ** 2)
        assert schedules.reverse_sigmoid(t, T, 7.0) == pytest.approx(
            1 - 1 / (1 + math.exp(-(t - T / 2) / (T / 2) * 7.0)))
        for name in schedules.MIXING:
            assert 0 <= schedules.mixing_ratio(name, t, T) <= 1
        for tau in (0.5, 5, 50):
            mu = schedules.parabolic(t, T)
            f = schedules.hls_factor(mu, tau)
            assert f == pytest.approx(1 - math.exp(-tau * mu)) and 0 <= f <= 1
    assert schedules.reverse_sigmoid(T / 2, T) == pytest.approx(0.5)
    assert schedules.parabolic(T, T) == 0.0 and schedules.hls_factor(0.0, 5.0) == 0.0
    assert schedules.hls_factor(0.3, None) == 1.0
    with pytest.raises(ValueError, match="tau must be > 0"):
        schedules.hls_factor(0.5, 0.0)


def test_class_balanced_weights_favour_the_tail():
    w = class_balanced_weights(torch.tensor([5000, 500, 50]))
    assert w.sum().item() == pytest.approx(3.0) and w[0] < w[1] < w[2]


def test_hls_scales_only_the_backbone_arch_lr(lt_data):
    from hls.train import Search
    search = Search(experiments.config("hls", "smoke", 0), lt_data, torch.device("cpu"))
    s = search.schedule(1)   # last epoch of 2: mu = 0, factor = 0
    search._set_learning_rates(s)
    lrs = {g["name"]: g["lr"] for g in search.architect.optimizer.param_groups}
    base = search.config.arch_lr
    assert s["mu"] == 0.0 and s["hls_factor"] == 0.0
    assert lrs == {"backbone_normal": 0.0, "backbone_reduce": 0.0, "head_ins": base,
                   "head_cls": base}
    assert all(g["lr"] == s["lr"] for g in search.weight_optimizer.param_groups)


def test_frozen_backbone_is_bit_identical_after_continued_training(store):
    child = runs.get_run(experiments.config("ct_frozen", "smoke", 0), "cpu")
    parent = runs.get_run(child.config.parent, "cpu")
    load = lambda r: torch.load(r.path / "checkpoint.pt", weights_only=False)["search"]["net"]  # noqa
    before, after = load(parent), load(child)
    backbone = [k for k in before if k.startswith(("stem.", "cells.", "alphas.backbone"))]
    assert backbone and all(torch.equal(before[k], after[k]) for k in backbone)
    assert not all(torch.equal(before[k], after[k]) for k in before if k.startswith("heads.cls"))


@pytest.mark.parametrize("method", sorted(experiments.METHODS))
def test_every_method_runs(store, method):
    record = runs.get_run(experiments.config(method, "smoke", 0), "cpu")
    assert len(record.history) == record.config.epochs
    ev = record.eval
    if record.config.bilateral:
        assert ev["mu_grid"] == [round(0.1 * i, 1) for i in range(11)]
        assert len(ev["test_acc"]) == 11 and ev["paper_protocol"]["acc"] == max(ev["test_acc"])
        assert ev["val_chosen"]["acc"] <= ev["paper_protocol"]["acc"]
    assert set(ev["groups"]) >= {"head", "middle", "tail"}
    assert len(ev["per_class"]) == 10
