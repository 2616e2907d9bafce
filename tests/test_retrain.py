"""The evaluation phase: the discrete network against a hand-built one, random cells, ResNet-32,
the losses and schedules, resume, and retraining runs through the store, launch, publish and
verify like every other run."""

import json
import math
import os
import shutil
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hls import experiments, launch, plan, runs
from hls.network import (DiscreteNet, ResNetCIFAR, drop_path, multiply_adds, parameter_count,
                         random_genotype)
from hls.retrain import Cutout, Loss, RetrainConfig, learning_rate, whole_training_set

GENOTYPE = {   # every op kind, inputs from both cell inputs and from an earlier node
    "backbone_normal": [[("sep_conv_3x3", 0), ("skip_connect", 1)],
                        [("dil_conv_3x3", 1), ("avg_pool_3x3", 2)]],
    "backbone_reduce": [[("max_pool_3x3", 0), ("skip_connect", 1)],
                        [("sep_conv_3x3", 1), ("max_pool_3x3", 2)]],
}


@pytest.fixture(autouse=True)
def private_stores(tmp_path, monkeypatch):
    monkeypatch.setenv("HLS_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("HLS_ARCHIVE", str(tmp_path / "results"))
    monkeypatch.setenv("HLS_PROGRESS", "0")


# ---- the network, by hand


def bn(c):
    return nn.BatchNorm2d(c)


def relu_conv_bn(c_in, c_out):
    return nn.Sequential(nn.ReLU(), nn.Conv2d(c_in, c_out, 1, bias=False), bn(c_out))


def sep_conv(c, stride):
    return nn.Sequential(nn.ReLU(), nn.Conv2d(c, c, 3, stride, 1, groups=c, bias=False),
                         nn.Conv2d(c, c, 1, bias=False), bn(c),
                         nn.ReLU(), nn.Conv2d(c, c, 3, 1, 1, groups=c, bias=False),
                         nn.Conv2d(c, c, 1, bias=False), bn(c))


def dil_conv(c):
    return nn.Sequential(nn.ReLU(), nn.Conv2d(c, c, 3, 1, 2, dilation=2, groups=c, bias=False),
                         nn.Conv2d(c, c, 1, bias=False), bn(c))


class FactorizedReduce(nn.Module):
    def __init__(self, c_in, c_out):
        super().__init__()
        self.a = nn.Conv2d(c_in, c_out // 2, 1, 2, bias=False)
        self.b = nn.Conv2d(c_in, c_out - c_out // 2, 1, 2, bias=False)
        self.bn = bn(c_out)

    def forward(self, x):
        x = F.relu(x)
        return self.bn(torch.cat([self.a(x), self.b(x[:, :, 1:, 1:])], 1))


class HandNormal(nn.Module):
    """node 2 = sep_conv(s0) + s1; node 3 = dil_conv(s1) + avg_pool(node 2)."""

    def __init__(self, c_pp, c_p, c, reduction_prev):
        super().__init__()
        self.pre0 = FactorizedReduce(c_pp, c) if reduction_prev else relu_conv_bn(c_pp, c)
        self.pre1 = relu_conv_bn(c_p, c)
        self.sep, self.dil = sep_conv(c, 1), dil_conv(c)

    def forward(self, s0, s1):
        s0, s1 = self.pre0(s0), self.pre1(s1)
        n2 = self.sep(s0) + s1
        n3 = self.dil(s1) + F.avg_pool2d(n2, 3, 1, 1, count_include_pad=False)
        return torch.cat([n2, n3], 1)


class HandReduce(nn.Module):
    """node 2 = max_pool(s0, stride 2) + factorized reduce(s1); node 3 = sep_conv(s1, stride 2)
    + max_pool(node 2, stride 1)."""

    def __init__(self, c_pp, c_p, c, reduction_prev):
        super().__init__()
        self.pre0 = FactorizedReduce(c_pp, c) if reduction_prev else relu_conv_bn(c_pp, c)
        self.pre1 = relu_conv_bn(c_p, c)
        self.skip, self.sep = FactorizedReduce(c, c), sep_conv(c, 2)

    def forward(self, s0, s1):
        s0, s1 = self.pre0(s0), self.pre1(s1)
        n2 = F.max_pool2d(s0, 3, 2, 1) + self.skip(s1)
        n3 = self.sep(s1) + F.max_pool2d(n2, 3, 1, 1)
        return torch.cat([n2, n3], 1)


class HandNet(nn.Module):
    """C = 4, 4 cells: normal, reduction (layers // 3 = 1), reduction (2 layers // 3 = 2),
    normal; the auxiliary head on the third cell's 8x8 output."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 12, 3, 1, 1, bias=False), bn(12))
        self.cells = nn.ModuleList([HandNormal(12, 12, 4, False), HandReduce(12, 8, 8, False),
                                    HandReduce(8, 16, 16, True), HandNormal(16, 32, 16, True)])
        self.aux = nn.Sequential(nn.ReLU(), nn.AvgPool2d(5, 3, 0, count_include_pad=False),
                                 nn.Conv2d(32, 128, 1, bias=False), bn(128), nn.ReLU(),
                                 nn.Conv2d(128, 768, 2, bias=False), bn(768), nn.ReLU(),
                                 nn.Flatten(), nn.Linear(768, 10))
        self.classifier = nn.Linear(32, 10)

    def forward(self, x):
        s0 = s1 = self.stem(x)
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1)
            if i == 2:
                aux = self.aux(s1)
        return self.classifier(s1.mean((2, 3))), aux


def test_the_discrete_network_is_the_hand_built_one():
    net = DiscreteNet(GENOTYPE, channels=4, layers=4)
    hand = HandNet()
    ours, theirs = list(net.parameters()), list(hand.parameters())
    assert [p.shape for p in ours] == [p.shape for p in theirs]
    with torch.no_grad():
        for a, b in zip(ours, theirs):
            a.normal_(0, 0.3)
            b.copy_(a)
    x = torch.randn(6, 3, 32, 32)
    logits, aux = net(x)             # training mode: batch statistics, the auxiliary head
    hand_logits, hand_aux = hand(x)
    torch.testing.assert_close(logits, hand_logits, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(aux, hand_aux, rtol=1e-4, atol=1e-5)
    net.eval(), hand.eval()          # running statistics, updated alike by that pass
    torch.testing.assert_close(net(x), hand(x)[0], rtol=1e-4, atol=1e-5)
    assert parameter_count(net) == sum(p.numel() for p in hand.parameters()) - \
        sum(p.numel() for p in hand.aux.parameters())


def test_drop_path_drops_whole_samples_and_keeps_the_mean():
    g = torch.Generator().manual_seed(0)
    x = torch.ones(4000, 2, 3, 3)
    y = drop_path(x, 0.2, g)
    per_sample = y.flatten(1)
    assert set(per_sample.unique().tolist()) == {0.0, 1.25}
    assert (per_sample == per_sample[:, :1]).all()          # a sample is dropped entirely
    assert abs(y.mean().item() - 1.0) < 0.05
    net = DiscreteNet(GENOTYPE, channels=4, layers=4, auxiliary=False)
    net.drop_prob, net.generator = 0.5, torch.Generator().manual_seed(1)
    net.eval()                                               # never at test time
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(net(x), net(x))


def test_random_cells_draw_two_distinct_inputs_and_real_ops():
    space = ("none", "max_pool_3x3", "skip_connect", "sep_conv_3x3")
    draws = [random_genotype(space, 4, seed) for seed in range(200)]
    assert random_genotype(space, 4, 7) == draws[7]
    assert draws[0] != draws[1]
    seen = {}
    for genotype in draws:
        for cell in genotype.values():
            for i, node in enumerate(cell):
                (op_a, a), (op_b, b) = node
                assert a < b < i + 2
                for op in (op_a, op_b):
                    seen[op] = seen.get(op, 0) + 1
    assert set(seen) == set(space) - {"none"}
    assert max(seen.values()) / min(seen.values()) < 1.2     # uniform over the three
    DiscreteNet(draws[0], channels=4, layers=3)              # and it builds


def test_resnet32_is_the_literatures():
    net = ResNetCIFAR(blocks=5)
    assert parameter_count(net) == 464_154                   # "ResNet32 0.46M" (He et al.)
    assert multiply_adds(net) == pytest.approx(69e6, rel=0.01)
    net.eval()
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    half = ResNetCIFAR(blocks=5, widths=(8, 16, 32), stem_stride=2)
    assert multiply_adds(half) < multiply_adds(net) / 10


def test_the_losses_and_the_schedules():
    counts = torch.tensor([5000, 500, 50])
    logits, y = torch.randn(8, 3), torch.randint(0, 3, (8,))
    plain = Loss(RetrainConfig(architecture="random"), counts)
    adjusted = Loss(RetrainConfig(architecture="random", loss="logit_adjusted"), counts)
    assert torch.equal(plain(logits, y), F.cross_entropy(logits, y))
    prior = counts.double() / counts.sum()
    torch.testing.assert_close(adjusted(logits, y),
                               F.cross_entropy(logits + prior.log().float(), y))

    darts = RetrainConfig(architecture="random", epochs=600, lr=0.025)
    assert learning_rate(darts, 0) == 0.025 and learning_rate(darts, 300) == pytest.approx(0.0125)
    ldam = experiments.retrain_config("resnet", "paper", 0, "ce")
    lr = lambda e: learning_rate(ldam, e - 1)       # noqa: E731  LDAM-DRW counts e from 1
    assert [lr(1), lr(5), lr(6), lr(160), lr(161), lr(180), lr(181), lr(200)] == \
        pytest.approx([0.02, 0.1, 0.1, 0.1, 1e-3, 1e-3, 1e-5, 1e-5])


def test_cutout_zeroes_one_clipped_square_per_image():
    cut = Cutout(torch.device("cpu"), 0, 16)
    x = torch.ones(500, 3, 32, 32)
    y = cut(x)
    holes = (y[:, 0] == 0)
    sizes = holes.sum((1, 2))
    assert sizes.max() == 256 and sizes.min() >= 64          # 16 x 16, at most halved per side
    assert torch.equal(holes, (y[:, 2] == 0))                # every channel alike
    rows, cols = holes.any(2), holes.any(1)
    assert torch.equal(holes, rows[:, :, None] & cols[:, None, :])   # a rectangle
    again = Cutout(torch.device("cpu"), 0, 16)
    assert torch.equal(again(x), y)
    assert torch.equal(Cutout(torch.device("cpu"), 0, 0)(x), x)


def test_the_training_set_is_the_whole_long_tailed_set(lt_data):
    whole = whole_training_set(lt_data)
    assert whole.class_counts.tolist() == [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
    assert len(whole) == 12406 == len(lt_data.train) + len(lt_data.val)


def test_bad_retraining_settings_are_one_line_errors():
    for setting, message in (("retrain.epoch=3", "unknown retraining setting 'epoch'"),
                             ("retrain.loss=focal", "retrain.loss is chosen by the plan"),
                             ("retrain.lr_schedule=step", "unknown lr_schedule 'step'"),
                             ("retrain.cutout=40", "cutout must be in [0, 32]"),
                             ("retrain.drop_path=1", "drop_path must be in [0, 1)")):
        result = subprocess.run([sys.executable, "-m", "hls", "plan", "--profile", "smoke",
                                 "--chapters", "06_retraining", "--set", setting],
                                capture_output=True, text=True, env=dict(os.environ))
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1, result.stderr
        assert lines[0].startswith("hls: error: ") and message in lines[0], lines
    with pytest.raises(ValueError, match="needs the search run it comes from"):
        RetrainConfig(architecture="searched")


# ---- runs like every other run


def smoke(source="darts", loss="ce", **retrain):
    return experiments.retrain_config(source, "smoke", 0, loss,
                                      {f"retrain.{k}": v for k, v in retrain.items()})


@pytest.mark.slow
def test_a_genotype_from_every_methods_run_builds_and_trains():
    """Every method's search run at smoke size gives cells that DARTS' network trains; so do a
    random cell and ResNet. (Slow: twelve smoke searches, each evaluated on its whole
    validation split.)"""
    for source in (*experiments.METHODS, *experiments.RETRAIN_BASELINES):
        config = experiments.retrain_config(source, "smoke", 0, "ce",
                                            {"epochs": 1, "retrain.epochs": 1})
        record = runs.get_run(config, "cpu")
        assert math.isfinite(record.history[-1]["train_loss"]) and 0 <= record.eval["acc"] <= 1
        assert set(record.eval["groups"]) >= {"head", "middle", "tail"}
        assert record.eval["parameters"] > 0 and record.eval["multiply_adds"] > 0
        if config.parent is not None:
            searched = runs.read_run(config.parent).genotype
            assert record.genotype == {k: searched[k] for k in
                                       ("backbone_normal", "backbone_reduce")}
        assert (record.genotype is None) == (source == "resnet")
        assert record.facts["kind"] == "retrain" and runs.reproducible_here(record)


class Crash(Exception):
    pass


def test_resume_equals_uninterrupted(tmp_path, monkeypatch):
    """Killed after its first epoch and resumed, a run ends bit for bit where an uninterrupted
    one ends: the sampler, the crops, cutout and drop-path all continue their streams."""
    config = smoke("darts", epochs=3)
    assert config.cutout and config.drop_path and config.auxiliary_weight and config.augment_pad
    whole = runs.get_run(config, "cpu")

    monkeypatch.setenv("HLS_RUNS", str(tmp_path / "again"))

    def crash_after_first(record):
        if record["epoch"] == 1:
            raise Crash
    with pytest.raises(Crash):
        runs.get_run(config, "cpu", on_epoch=crash_after_first)
    assert runs.status(config)["state"] == "running"
    runs._data.cache_clear()          # as a new process would
    resumed = runs.get_run(config, "cpu")
    assert resumed.eval == whole.eval
    strip = lambda h: [{k: v for k, v in e.items() if k != "seconds"} for e in h]  # noqa: E731
    assert strip(resumed.history) == strip(whole.history)


def test_retraining_runs_launch_publish_and_verify(tmp_path):
    """The parent search first, then its retraining; published, the retraining run reads its
    archived parent's genotype (no parent training, no checkpoint), and verify reproduces it."""
    overrides = {"epochs": 1, "retrain.epochs": 2}
    selection = dict(chapters=["06_retraining"], methods=["re_darts_ce"], progress=False)
    result = launch.launch("smoke", [0], overrides, threads=1, **selection)
    assert [(o.run.method, o.outcome) for o in result.outcomes] == \
        [("darts", "trained"), ("re_darts_ce", "trained")], result.table()
    published = launch.publish("smoke", [0], overrides, ["06_retraining"], ["re_darts_ce"])
    assert sorted(what for _, what in published) == ["published", "published"]
    child = result.outcomes[1].run
    folder = tmp_path / "results" / "smoke" / child.run_id
    assert sorted(p.name for p in folder.iterdir()) == sorted(runs.RETRAIN_RECORD_FILES)
    assert json.loads((folder / "config.json").read_text())["kind"] == "retrain"

    # a new retraining setting, with only the archive: the parent is read, not trained
    shutil.rmtree(tmp_path / "runs")
    other = {"epochs": 1, "retrain.epochs": 1}
    again = launch.launch("smoke", [0], other, threads=1, **selection)
    assert [o.outcome for o in again.outcomes] == ["reused", "trained"], again.table()
    [planned] = [r for r in plan.book_plan("smoke", [0], other, ["06_retraining"],
                                           ["re_darts_ce"]) if r.method == "re_darts_ce"]
    assert planned.state == "complete" and not planned.starts_from_parent_checkpoint

    out = subprocess.run([sys.executable, "-m", "hls", "verify", "--profile", "smoke",
                          "--methods", "re_darts_ce", "--seeds", "0", "--set", "epochs=1",
                          "--set", "retrain.epochs=2"], capture_output=True, text=True,
                         env=dict(os.environ), timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "re_darts_ce" in out.stdout and "1 of 1 match" in out.stdout
    # what lets verify skip the parent's search: its archived record, copied into the store
    verify_store = tmp_path / "verify"
    launch._provide_parent_record(planned, verify_store)
    assert runs.read_run(planned.config.parent).path.parent.name == "smoke"   # archived
    assert runs._status(verify_store / planned.parent)["state"] == "complete"
    assert sorted(p.name for p in (verify_store / planned.parent).iterdir()) == \
        sorted(runs.RECORD_FILES)
