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
    head = search.net.heads[silent]     # not run at all: outside the graph, no gradient
    assert all(p.grad is None for p in head.parameters())
    assert search.net.alphas[f"head_{silent}"].grad is None
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
    s = search.start_epoch(1)   # last epoch of 2: mu = 0, factor = 0
    lrs = {g["name"]: g["lr"] for g in search.architect.optimizer.param_groups}
    base = search.config.arch_lr
    assert s.mu == 0.0 and s.hls_factor == 0.0
    assert lrs == {"backbone_normal": 0.0, "backbone_reduce": 0.0, "head_ins": base,
                   "head_cls": base}
    assert all(g["lr"] == s.lr for g in search.weight_optimizer.param_groups)


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


def head_state(search, head):
    """Weights, BatchNorm statistics and alphas of one head, copied."""
    state = {k: v.clone() for k, v in search.net.heads[head].state_dict().items()}
    state["alphas"] = search.net.alphas[f"head_{head}"].detach().clone()
    return state


@pytest.mark.parametrize("mu, silent", [(0.0, "ins"), (1.0, "cls")])
def test_a_head_with_zero_loss_weight_is_not_stepped(lt_data, mu, silent):
    """Neither optimiser touches it (no decay, no moments) and its BatchNorm statistics stay."""
    from hls.train import Search
    cfg = experiments.config("hls", "smoke", 0, {"mixing": "constant", "mixing_value": mu})
    search = Search(cfg, lt_data, torch.device("cpu"))
    s = search.start_epoch(0)
    other = "cls" if silent == "ins" else "ins"
    before, before_other = head_state(search, silent), head_state(search, other)
    for _ in range(2):
        search.step(search.streams.next("train"), search.streams.next("val"), s)
    after = head_state(search, silent)
    assert all(torch.equal(before[k], after[k]) for k in before), "the silent head moved"
    silent_params = [*search.net.heads[silent].parameters(), search.net.alphas[f"head_{silent}"]]
    for optimizer in (search.weight_optimizer, search.architect.optimizer):
        assert not any(p in optimizer.state for p in silent_params), "moments were created"
    moved = head_state(search, other)
    assert not all(torch.equal(before_other[k], moved[k]) for k in moved)   # the other learns


def test_two_backbone_passes_run_each_half_alone(lt_data):
    """backbone_passes=2 (BBN's code) sends each half through the backbone by itself, so each
    is normalised with its own batch statistics; one pass (Alg. 1) shares them."""
    from hls.train import Search
    losses = {}
    for passes in (1, 2):
        cfg = experiments.config("darts_bbn", "smoke", 0, {"backbone_passes": passes})
        search = Search(cfg, lt_data, torch.device("cpu"))
        batch = search.streams.next("train")
        losses[passes] = search.objective(search.net, batch, 0.3)[0]
    net, (x_ins, y_ins, x_cls, y_cls) = search.net, batch
    mixed = 0.3 * net.head("ins", *net.features(x_ins)) + 0.7 * net.head("cls", *net.features(x_cls))
    by_hand = 0.3 * F.cross_entropy(mixed, y_ins) + 0.7 * F.cross_entropy(mixed, y_cls)
    assert losses[2].item() == pytest.approx(by_hand.item(), rel=1e-6)
    assert losses[1].item() != pytest.approx(losses[2].item(), rel=1e-4)


def test_mixing_index_alg1_reaches_zero_and_bbn_starts_at_one(lt_data):
    from hls.train import Search
    mus = {}
    for index in ("alg1", "bbn"):
        cfg = experiments.config("darts_bbn", "smoke", 0, {"epochs": 4, "mixing_index": index})
        search = Search(cfg, lt_data, torch.device("cpu"))
        mus[index] = [search.schedule(e).mu for e in range(4)]
    assert mus["alg1"] == [1 - (t / 4) ** 2 for t in (1, 2, 3, 4)] and mus["alg1"][-1] == 0
    assert mus["bbn"] == [1 - (t / 4) ** 2 for t in (0, 1, 2, 3)] and mus["bbn"][0] == 1


def parent_state_of(lt_data, method="hls", steps=2):
    """A few trained steps of the parent, as a checkpoint's "search" dict holds them."""
    from hls.train import Search
    cfg = experiments.config(method, "smoke", 0)
    parent = Search(cfg, lt_data, torch.device("cpu"))
    s = parent.start_epoch(0)
    for _ in range(steps):
        parent.step(parent.streams.next("train"), parent.streams.next("val"), s)
    return parent.state_dict()


@pytest.mark.parametrize("continue_state", ["carry", "restart"])
def test_continued_training_carries_or_restarts_the_optimiser_state(lt_data, continue_state):
    from hls.train import Search
    state = parent_state_of(lt_data)
    cfg = experiments.config("ct_mu05", "smoke", 0, {"continue_state": continue_state})
    child = Search(cfg, lt_data, torch.device("cpu"), parent_state=state)
    assert all(torch.equal(v, state["net"][k]) for k, v in child.net.state_dict().items())
    momentum = [v["momentum_buffer"] for v in child.weight_optimizer.state_dict()["state"].values()]
    adam = child.architect.state_dict()["state"]
    if continue_state == "carry":
        parent_momentum = [v["momentum_buffer"]
                           for v in state["weight_optimizer"]["state"].values()]
        assert momentum and all(torch.equal(a, b) for a, b in zip(momentum, parent_momentum))
        assert all(torch.equal(adam[k]["exp_avg"], v["exp_avg"])
                   for k, v in state["architect"]["state"].items())
        assert child.streams.state_dict()["augment"]["generator"].equal(
            state["streams"]["augment"]["generator"])
    else:
        assert momentum == [] and adam == {}


@pytest.mark.parametrize("continue_lr", ["hold", "restart"])
def test_continued_learning_rate_reading(lt_data, continue_lr):
    from hls.train import Search
    cfg = experiments.config("ct_mu05", "smoke", 0, {"continue_lr": continue_lr,
                                                     "continue_epochs": 3})
    child = Search(cfg, lt_data, torch.device("cpu"), parent_state=parent_state_of(lt_data))
    lrs = [child.schedule(e).lr for e in range(3)]
    if continue_lr == "hold":     # where the parent's cosine ended
        assert lrs == [cfg.lr_min] * 3
    else:
        assert lrs[0] == cfg.lr and lrs[0] > lrs[1] > lrs[2] > cfg.lr_min


def test_ct_frozen_trains_only_the_class_head(lt_data):
    from hls.train import Search
    cfg = experiments.config("ct_frozen", "smoke", 0)
    assert set(cfg.freeze) == {"backbone", "ins"}
    child = Search(cfg, lt_data, torch.device("cpu"), parent_state=parent_state_of(lt_data))
    trainable = {n for n, p in child.net.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(("heads.cls.", "alphas.head_cls")) for n in trainable)


@pytest.mark.parametrize("method", ["ct_mu0", "ct_frozen"])
def test_continued_runs_leave_the_instance_head_bit_identical(store, method):
    """mu = 0 throughout: the instance head (weights, BatchNorm statistics, alphas) must end
    exactly as the parent left it; the class head must have moved."""
    child = runs.get_run(experiments.config(method, "smoke", 0), "cpu")
    parent = runs.get_run(child.config.parent, "cpu")
    load = lambda r: torch.load(r.path / "checkpoint.pt", weights_only=False)["search"]["net"]  # noqa
    before, after = load(parent), load(child)
    ins = [k for k in before if k.startswith(("heads.ins.", "alphas.head_ins"))]
    assert any("running_mean" in k for k in ins) and any(k.startswith("alphas") for k in ins)
    assert all(torch.equal(before[k], after[k]) for k in ins)
    assert not all(torch.equal(before[k], after[k]) for k in before if k.startswith("heads.cls"))
    for epoch in child.history:
        assert epoch["arch_grad_norm"]["head_ins"] == 0 == epoch["arch_update_norm"]["head_ins"]


def test_mu_sweep_chooses_on_balanced_validation_accuracy():
    """Hand-made logits where plain and balanced validation accuracy pick different mu."""
    from hls.train import balanced_accuracy, mu_sweep
    # validation: 4 images of class 0 (head), 1 of class 1 (tail). The instance head (mu = 1)
    # gets every class-0 image and misses the tail; the class head (mu = 0) gets the tail
    # image and two of the four head images.
    y_val = torch.tensor([0, 0, 0, 0, 1])
    ins = torch.tensor([[1.0, 0.0]] * 5)
    cls = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [0.0, 1.0]])
    assert balanced_accuracy(ins, y_val) == pytest.approx((1 + 0) / 2)
    assert balanced_accuracy(cls, y_val) == pytest.approx((2 / 4 + 1) / 2)
    y_test = torch.tensor([0, 1])
    test = {"ins": torch.tensor([[1.0, 0.0], [1.0, 0.0]]), "cls": torch.tensor([[1.0, 0.0], [0.0, 1.0]])}
    out = mu_sweep(test, y_test, {"ins": ins, "cls": cls}, y_val, [0.0, 1.0])
    assert out["val_acc"] == pytest.approx([3 / 5, 4 / 5]) and out["val_bacc"] == [0.75, 0.5]
    assert out["val_chosen"] == {"mu": 0.0, "acc": 1.0}          # balanced: the class head
    assert out["val_chosen_plain"] == {"mu": 1.0, "acc": 0.5}    # plain: the instance head
    assert out["paper_protocol"] == {"mu": 0.0, "acc": 1.0}
