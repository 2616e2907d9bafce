"""The DARTS engine: mixed op, first/second-order architecture gradients, genotypes, a short run."""

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from hls import experiments, genotype, runs
from hls.architect import Architect
from hls.ops import BatchNorm, Depthwise, DilConv, Pointwise, Pool, SepConv
from hls.speed import dilated_depthwise
from hls.supernet import NetConfig, SuperNet

SMALL_OPS = ("none", "max_pool_3x3", "skip_connect", "sep_conv_3x3", "dil_conv_3x3")


def tiny_net(seed=0, smooth=False):
    """A small float64 supernet. smooth=True swaps ReLU for Tanh and drops max pooling, so that
    finite differences of its gradients converge (ReLU kinks and max-pool ties make the
    gradient jump, which no finite-difference scheme can follow)."""
    torch.manual_seed(seed)
    ops = tuple(p for p in SMALL_OPS if p != "max_pool_3x3") if smooth else SMALL_OPS
    net = SuperNet(NetConfig(channels=2, layers=3, nodes=2, primitives=ops)).double()
    if smooth:
        for module in list(net.modules()):
            for name, child in module.named_children():
                if isinstance(child, torch.nn.ReLU):
                    setattr(module, name, torch.nn.Tanh())
    with torch.no_grad():  # alphas far from uniform, so every term of the gradient matters
        for a in net.alphas.values():
            a.normal_(0, 0.5)
    return net


def batches(seed=1, n=6):
    g = torch.Generator().manual_seed(seed)
    x = lambda: torch.randn(n, 3, 8, 8, generator=g, dtype=torch.float64)  # noqa: E731
    y = lambda: torch.randint(0, 10, (n,), generator=g)  # noqa: E731
    return (x(), y()), (x(), y())


def loss_of(net):
    return lambda batch: F.cross_entropy(net.head("main", *net.features(batch[0])), batch[1])


def literal_features(net, x, share_relu=False):
    """The backbone as Eq. (5) and (6) read literally: every primitive on every edge, `none` as
    x * 0, and (unless `share_relu`) each convolution applying its own ReLU to its input."""
    primitives = net.config.primitives
    mixing = {k: F.softmax(net.alphas[k], dim=-1) for k in ("backbone_normal", "backbone_reduce")}
    s0 = s1 = net.stem(x)
    for cell in net.cells:
        weights = mixing["backbone_reduce" if cell.reduction else "backbone_normal"]
        states = [cell.preprocess0(s0), cell.preprocess1(s1)]
        relus = [cell.relu(h) for h in states]
        offset = 0
        for _ in range(cell.nodes):
            node = 0
            for j, (h, r) in enumerate(zip(states, relus)):
                edge, w = cell.edges[offset + j], weights[offset + j]
                ops, out = iter(edge.ops), None
                for i, p in enumerate(primitives):
                    if p == "none":
                        stride = 2 if cell.reduction and j < 2 else 1
                        y = h[:, :, ::stride, ::stride].mul(0.0)
                    else:
                        op = next(ops)
                        takes_relu = share_relu and isinstance(op, (DilConv, SepConv))
                        y = op(h, r) if takes_relu else op(h)
                    out = w[i] * y if out is None else torch.addcmul(out, w[i], y)
                node = node + out
            states.append(node)
            relus.append(cell.relu(node))
            offset += len(states) - 1
        s0, s1 = s1, torch.cat(states[2:], dim=1)
    return s0, s1


def test_the_supernet_computes_equations_5_and_6():
    """Leaving `none`'s exactly-zero term out changes no bit; one ReLU per state instead of one
    per convolution gives the same values and sums the gradients in another order."""
    (x, y), _ = batches()

    def result(features):
        net = tiny_net()
        s0, s1 = features(net, x)
        loss = F.cross_entropy(net.heads["main"](s0, s1), y)
        return (s1, *torch.autograd.grad(loss, list(net.parameters())))

    ours = result(lambda net, x: net.features(x))
    with_none = result(lambda net, x: literal_features(net, x, share_relu=True))
    literal = result(literal_features)
    assert all(torch.equal(a, b) for a, b in zip(ours, with_none))
    for ref, got in zip(literal, ours):
        torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("kernel", [3, 5])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("size", [8, 7])   # odd sizes take the plain dilated conv at stride 1
def test_dilated_conv_as_phases_is_the_same_function(channels_last, kernel, stride, size):
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 3, kernel, stride, kernel - 1, 2, groups=3, bias=False).double()
    x = torch.randn(4, 3, size, size, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    g = torch.randn_like(conv(x))
    results = []
    for phases in (False, True):
        y = dilated_depthwise(x, conv.weight, stride, kernel - 1) if phases else conv(x)
        results.append((y, *torch.autograd.grad(y, (x, conv.weight), g)))
    for ref, got in zip(*results):
        assert got.shape == ref.shape
        torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)
    if channels_last and stride == 1 and size % 2 == 0:   # the fast path keeps the layout
        assert results[1][0].is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("kind", ["max", "avg"])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("size", [9, 8])
def test_fast_cpu_pooling_is_the_same_function(kind, stride, size):
    # max pooling through channels_last, average pooling as a box convolution / window counts
    torch.manual_seed(0)
    x = torch.randn(4, 3, size, size, dtype=torch.float64, requires_grad=True)
    results = []
    for fast in (False, True):
        pool = Pool(kind, stride)
        pool.cpu_kernels = fast
        y = pool(x)
        g = torch.randn(y.shape, generator=torch.Generator().manual_seed(1), dtype=y.dtype)
        results.append((y, *torch.autograd.grad(y, x, g)))
        assert y.is_contiguous()
    for ref, got in zip(*results):
        assert got.shape == ref.shape
        torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("channels_last", [False, True])
def test_pointwise_as_matmul_is_the_same_function(stride, channels_last):
    torch.manual_seed(0)
    conv = Pointwise(6, 5, stride).double()
    x = torch.randn(4, 6, 7, 7, dtype=torch.float64)
    if channels_last:   # channels_last inputs keep the convolution
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    results = []
    for as_matmul in (False, True):
        conv.cpu_kernels = as_matmul
        y = conv(x)
        g = torch.randn(y.shape, generator=torch.Generator().manual_seed(1), dtype=y.dtype)
        results.append((y, *torch.autograd.grad(y, (x, conv.weight), g)))
    for ref, got in zip(*results):
        torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("size", [16, 7])   # maps under 8x8 keep the plain gradient
def test_depthwise_weight_grad_through_channels_last(size):
    # oneDNN has no float64 kernels, so float32 against a float64 reference: the channels_last
    # weight gradient sums in a less careful order (measured 1.1e-6 here, 4.5e-6 at 64x16x32x32,
    # against 2.5e-7 for the NCHW kernel), still float32 rounding of a sum of thousands of terms
    torch.manual_seed(0)
    conv = Depthwise(8, 5, 1, 2)
    x = torch.randn(16, 8, size, size, requires_grad=True)
    g = torch.randn(16, 8, size, size)
    ref = torch.autograd.grad(F.conv2d(x.double(), conv.weight.double(), None, 1, 2, 1, 8),
                              (x, conv.weight), g.double())
    for fast in (False, True):
        conv.cpu_kernels = fast
        y = conv(x)
        torch.testing.assert_close(y.double(), F.conv2d(x.double(), conv.weight.double(), None,
                                                        1, 2, 1, 8), rtol=1e-5, atol=1e-5)
        for got, want in zip(torch.autograd.grad(y, (x, conv.weight), g), ref):
            assert ((got.double() - want).norm() / want.norm()).item() < 1e-5


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_batchnorm_as_unit_affine_is_the_same_function(dtype):
    torch.manual_seed(0)
    plain, unit = BatchNorm(6).to(dtype), BatchNorm(6).to(dtype)
    unit.unit_affine = True
    assert plain.state_dict().keys() == unit.state_dict().keys()   # checkpoints unchanged
    x = torch.randn(8, 6, 5, 5, dtype=dtype) * 3 + 1
    g = torch.randn_like(x)
    outputs = []
    for bn in (plain, unit):
        xx = x.clone().requires_grad_()
        y = bn(xx)
        y.backward(g)
        bn.eval()
        outputs.append((y, xx.grad, bn(x), bn.running_mean, bn.running_var,
                        bn.num_batches_tracked))
    tol = 1e-12 if dtype == torch.float64 else 1e-6
    for a, b in zip(*outputs):
        assert torch.allclose(a.double(), b.double(), rtol=tol, atol=tol)


@pytest.mark.parametrize("heads, head_cell, components", [
    (("main",), False, 2), (("main",), True, 3), (("ins", "cls"), True, 4)])
def test_alphas_and_weights_are_separate(heads, head_cell, components):
    net = SuperNet(NetConfig(channels=2, layers=3, nodes=2, primitives=SMALL_OPS, heads=heads,
                             head_cell=head_cell))
    alpha_ids = {id(a) for a in net.alphas.values()}
    assert not alpha_ids & {id(w) for w in net.weight_parameters()}
    assert len(alpha_ids) == len(net.components) == components
    n_all = len(list(net.parameters()))
    assert len(net.weight_parameters()) + len(alpha_ids) == n_all


def test_darts_is_cells_pooling_and_a_linear_classifier():
    """The single-branch methods are DARTS' search network (quark0/darts): no head cell, no
    head alphas; the head cell is an ablation of its own."""
    from hls.train import build_net
    for method, has_cell in (("darts", False), ("darts_resample", False),
                             ("darts_reweight", False), ("darts_head_cell", True)):
        net = build_net(experiments.config(method, "smoke"), 10, 0)
        assert (net.heads["main"].cell is not None) == has_cell, method
        assert ("head_main" in net.alphas) == has_cell, method


def test_first_order_gradient_is_autograd():
    net = tiny_net()
    train, val = batches()
    arch = Architect(net, lr=0.1)
    got = arch.gradient(loss_of(net), val, order=1)
    want = torch.autograd.grad(loss_of(net)(val), list(net.alphas.values()))
    assert all(torch.equal(got[k], w) for k, w in zip(net.alphas, want))


def exact_unrolled_gradient(net, train, val, xi, momentum, wd, buffers):
    """d/d alpha of L_val(w - xi (momentum buf + grad_w L_train(w, alpha) + wd w), alpha),
    by double backpropagation through the virtual step. xi: one rate, or one per weight."""
    names = [n for n, _ in net.named_parameters() if not n.startswith("alphas.")]
    weights = dict(net.named_parameters())
    alphas = [weights[f"alphas.{k}"] for k in net.alphas]
    w = [weights[n] for n in names]
    g = torch.autograd.grad(loss_of(net)(train), w, create_graph=True)
    rates = xi if isinstance(xi, list) else [xi] * len(w)
    virtual = {n: wi - r * (momentum * b + gi + wd * wi)
               for n, wi, gi, b, r in zip(names, w, g, buffers, rates)}
    params = {**virtual, **{f"alphas.{k}": a for k, a in net.alphas.items()}}
    logits = functional_call(net, params, (val[0],))["main"]
    return torch.autograd.grad(F.cross_entropy(logits, val[1]), alphas)


def test_second_order_gradient_matches_double_backprop():
    net = tiny_net(smooth=True)
    train, val = batches()
    weights = net.weight_parameters()
    sgd = torch.optim.SGD(weights, lr=0.5, momentum=0.9, weight_decay=3e-4)
    loss_of(net)(train).backward()   # one real step, so momentum buffers exist
    sgd.step()
    net.zero_grad(set_to_none=True)
    xi = 0.5
    buffers = [sgd.state[w]["momentum_buffer"] for w in weights]
    exact = exact_unrolled_gradient(net, train, val, xi, 0.9, 3e-4, buffers)
    got = Architect(net, lr=0.1).gradient(loss_of(net), val, train, order=2, xi=xi,
                                          weight_optimizer=sgd)
    first = Architect(net, lr=0.1).gradient(loss_of(net), val, order=1)
    for k, e in zip(net.alphas, exact):
        rel = ((got[k] - e).norm() / e.norm()).item()
        assert rel < 1e-3, (k, rel)
    # the second-order term is not negligible here, so the test can tell the two apart
    diff = sum((first[k] - e).norm() for k, e in zip(net.alphas, exact))
    assert diff / sum(e.norm() for e in exact) > 1e-2


def test_second_order_uses_each_groups_learning_rate():
    """HLS with hls_scope="arch+weights" gives the backbone's weights a scaled rate: Eq. (9)'s
    virtual step must take each group's own rate, as the weight optimiser will."""
    net = tiny_net(smooth=True)
    train, val = batches()
    backbone = net.weight_parameters("backbone")
    head = net.weight_parameters("main")
    sgd = torch.optim.SGD([{"params": backbone, "lr": 0.1}, {"params": head, "lr": 0.5}],
                          lr=0.5, momentum=0.9, weight_decay=3e-4)
    loss_of(net)(train).backward()
    sgd.step()
    net.zero_grad(set_to_none=True)
    weights = net.weight_parameters()      # stem, cells, then the head: the names' order
    rates = [0.1 if any(w is b for b in backbone) else 0.5 for w in weights]
    buffers = [sgd.state[w]["momentum_buffer"] for w in weights]
    exact = exact_unrolled_gradient(net, train, val, rates, 0.9, 3e-4, buffers)
    unscaled = exact_unrolled_gradient(net, train, val, 0.5, 0.9, 3e-4, buffers)
    got = Architect(net, lr=0.1).gradient(loss_of(net), val, train, order=2, xi=0.5,
                                          weight_optimizer=sgd)
    for k, e, u in zip(net.alphas, exact, unscaled):
        assert ((got[k] - e).norm() / e.norm()).item() < 1e-3, k
        assert ((u - e).norm() / e.norm()).item() > 1e-2, k   # the test can tell them apart


def test_second_order_restores_the_weights():
    net = tiny_net()
    train, val = batches()
    before = [w.detach().clone() for w in net.weight_parameters()]
    Architect(net, lr=0.1).gradient(loss_of(net), val, train, order=2, xi=0.1)
    assert all(torch.equal(a, b) for a, b in zip(before, net.weight_parameters()))


def test_each_pass_records_only_the_gradients_it_needs():
    # a pass for the alpha gradient holds the weights fixed and vice versa (the depthwise
    # Function would otherwise compute weight gradients nobody reads), and all is restored
    net = tiny_net()
    train, val = batches()
    frozen = net.weight_parameters()[0]
    frozen.requires_grad_(False)
    alphas, weights = list(net.alphas.values()), net.weight_parameters()[1:]
    passes = []

    def recording(batch):
        passes.append((all(a.requires_grad for a in alphas),
                       all(w.requires_grad for w in weights),
                       any(w.requires_grad for w in weights), frozen.requires_grad))
        return loss_of(net)(batch)

    arch = Architect(net, lr=0.1)
    arch.gradient(recording, val, order=1)
    arch.gradient(recording, val, train, order=2, xi=0.1)
    # (alphas, all weights, any weight, the frozen weight) as each loss was built
    alpha_only, weight_only, both = (True, False, False, False), (False, True, True, False), \
        (True, True, True, False)
    assert passes == [alpha_only, weight_only, both, alpha_only, alpha_only]
    assert all(p.requires_grad for p in alphas + weights) and not frozen.requires_grad


def test_per_component_learning_rate_multiplier():
    net = tiny_net()
    train, val = batches()
    arch = Architect(net, lr=0.1)
    arch.set_lr_multipliers({"backbone_normal": 0.0})
    frozen = net.alphas["backbone_normal"].detach().clone()
    other = net.alphas["backbone_reduce"].detach().clone()
    arch.step(loss_of(net), val)
    assert torch.equal(net.alphas["backbone_normal"], frozen)
    assert not torch.equal(net.alphas["backbone_reduce"], other)


def test_genotype_from_softmax():
    prims = ("none", "max_pool_3x3", "skip_connect", "sep_conv_3x3")
    w = torch.full((5, 4), 0.25)
    w[0] = torch.tensor([0.97, 0.01, 0.01, 0.01])   # `none` dominates: never chosen as an op
    w[1] = torch.tensor([0.1, 0.1, 0.1, 0.7])
    w[2] = torch.tensor([0.1, 0.6, 0.2, 0.1])
    w[3] = torch.tensor([0.1, 0.1, 0.5, 0.3])
    w[4] = torch.tensor([0.4, 0.3, 0.2, 0.1])
    cell = genotype.derive_cell(w, prims, nodes=2)
    assert cell[0] == [("max_pool_3x3", 0), ("sep_conv_3x3", 1)]
    assert cell[1] == [("max_pool_3x3", 0), ("skip_connect", 1)]
    with pytest.raises(ValueError, match="softmax"):
        genotype.derive_cell(torch.randn(5, 4), prims, nodes=2)


def test_genotype_save_load(tmp_path):
    g = {"backbone_normal": [[("sep_conv_3x3", 0), ("skip_connect", 1)]]}
    genotype.save(g, tmp_path / "g.json")
    assert genotype.load(tmp_path / "g.json") == g
    assert genotype.count_op(g) == 1


def test_two_epoch_darts_run(store):
    record = runs.get_run(experiments.config("darts", "smoke", 0, {"epochs": 2}), "cpu")
    assert [h["epoch"] for h in record.history] == [1, 2]
    for h in record.history:
        assert set(h["alphas"]) == {"backbone_normal", "backbone_reduce"}   # DARTS: no head cell
        assert abs(sum(h["alphas"]["backbone_normal"][0]) - 1) < 1e-5
        assert h["skip_count"] == genotype.count_op(h["genotype"])
        assert h["lr"] > 0 and 0 <= h["train_acc"] <= 1
    assert 0 <= record.eval["paper_protocol"]["acc"] <= 1
    assert record.history[0]["lr"] > record.history[1]["lr"]   # cosine annealing
