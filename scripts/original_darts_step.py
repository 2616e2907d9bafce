"""Time the original DARTS formulation of a first-order search step: the baseline of the CPU speed target.

The target was set against "the original DARTS code (Liu et al., 2018), ported to current
PyTorch". This script restates that formulation without `hls`'s speed levers (it takes
only the primitive names and the `none` op from `hls.ops`), so the baseline is measured rather
than quoted: every op computed (`none` as x * 0), plain nn.Conv2d for every convolution (1x1
included), NCHW pooling, the mixed op as a Python sum of weighted outputs, and a first-order
architecture step that calls `loss.backward()` on the whole network (so it also computes every
weight gradient, which that code then discards). The search network is the
paper's: C=16, 8 cells of 4 nodes, reductions at 1/3 and 2/3, stem multiplier 3, batch 64 of
random 32x32 images. Compare with `python -m hls bench --device cpu --sizes paper --orders 1`,
whose "textbook" column is `hls`'s own network with every speed lever off.

    python scripts/original_darts_step.py [--steps 3] [--warmup 2] [--threads N]
                                          [--layers 8] [--batch 64]
"""

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from hls.ops import PRIMITIVES, Zero   # Zero: the `none` op as x * 0, as the original has it


def bn(c):
    return nn.BatchNorm2d(c, affine=False)


def relu_conv_bn(c_in, c_out):
    return nn.Sequential(nn.ReLU(), nn.Conv2d(c_in, c_out, 1, bias=False), bn(c_out))


def dil_conv(c, kernel, stride, padding, dilation):
    return nn.Sequential(nn.ReLU(), nn.Conv2d(c, c, kernel, stride, padding, dilation, groups=c,
                                              bias=False),
                         nn.Conv2d(c, c, 1, bias=False), bn(c))


def sep_conv(c, kernel, stride, padding):
    return nn.Sequential(*dil_conv(c, kernel, stride, padding, 1),
                         *dil_conv(c, kernel, 1, padding, 1))


class FactorizedReduce(nn.Module):
    def __init__(self, c_in, c_out):
        super().__init__()
        self.even = nn.Conv2d(c_in, c_out // 2, 1, 2, bias=False)
        self.odd = nn.Conv2d(c_in, c_out // 2, 1, 2, bias=False)
        self.bn = bn(c_out)

    def forward(self, x):
        x = F.relu(x)
        return self.bn(torch.cat([self.even(x), self.odd(x[:, :, 1:, 1:])], dim=1))


def make_op(name, c, stride):
    if name == "none":
        return Zero(stride)
    if name == "max_pool_3x3":
        return nn.Sequential(nn.MaxPool2d(3, stride, 1), bn(c))
    if name == "avg_pool_3x3":
        return nn.Sequential(nn.AvgPool2d(3, stride, 1, count_include_pad=False), bn(c))
    if name == "skip_connect":
        return nn.Identity() if stride == 1 else FactorizedReduce(c, c)
    kernel = int(name[-1])
    if name.startswith("sep"):
        return sep_conv(c, kernel, stride, kernel // 2)
    return dil_conv(c, kernel, stride, kernel - 1, 2)


class Edge(nn.Module):
    def __init__(self, c, stride):
        super().__init__()
        self.ops = nn.ModuleList(make_op(name, c, stride) for name in PRIMITIVES)

    def forward(self, x, weights):
        return sum(w * op(x) for w, op in zip(weights, self.ops))


class Cell(nn.Module):
    def __init__(self, nodes, c_prev_prev, c_prev, c, reduction, reduction_prev):
        super().__init__()
        self.reduction, self.nodes = reduction, nodes
        self.pre0 = (FactorizedReduce(c_prev_prev, c) if reduction_prev
                     else relu_conv_bn(c_prev_prev, c))
        self.pre1 = relu_conv_bn(c_prev, c)
        self.edges = nn.ModuleList(Edge(c, 2 if reduction and j < 2 else 1)
                                   for i in range(nodes) for j in range(2 + i))

    def forward(self, s0, s1, weights):
        states, k = [self.pre0(s0), self.pre1(s1)], 0
        for _ in range(self.nodes):
            node = sum(self.edges[k + j](h, weights[k + j]) for j, h in enumerate(states))
            k += len(states)
            states.append(node)
        return torch.cat(states[2:], dim=1)


class SearchNetwork(nn.Module):
    def __init__(self, c=16, layers=8, nodes=4, num_classes=10, stem_multiplier=3):
        super().__init__()
        c_stem = stem_multiplier * c
        self.stem = nn.Sequential(nn.Conv2d(3, c_stem, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(c_stem))
        c_prev_prev, c_prev, reduction_prev = c_stem, c_stem, False
        self.cells = nn.ModuleList()
        for i in range(layers):
            reduction = i in (layers // 3, 2 * layers // 3)
            c = 2 * c if reduction else c
            self.cells.append(Cell(nodes, c_prev_prev, c_prev, c, reduction, reduction_prev))
            c_prev_prev, c_prev, reduction_prev = c_prev, nodes * c, reduction
        self.classifier = nn.Linear(c_prev, num_classes)
        n_edges = sum(2 + i for i in range(nodes))
        self.alphas_normal = nn.Parameter(1e-3 * torch.randn(n_edges, len(PRIMITIVES)))
        self.alphas_reduce = nn.Parameter(1e-3 * torch.randn(n_edges, len(PRIMITIVES)))

    def forward(self, x):
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            alphas = self.alphas_reduce if cell.reduction else self.alphas_normal
            s0, s1 = s1, cell(s0, s1, F.softmax(alphas, dim=-1))
        return self.classifier(s1.mean(dim=(2, 3)))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--layers", type=int, default=8, help="cells (the paper: 8)")
    parser.add_argument("--batch", type=int, default=64, help="images per batch (the paper: 64)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    net = SearchNetwork(layers=args.layers)
    alphas = [net.alphas_normal, net.alphas_reduce]
    weights = [p for p in net.parameters() if all(p is not a for a in alphas)]
    weight_opt = torch.optim.SGD(weights, 0.025, momentum=0.9, weight_decay=3e-4)
    alpha_opt = torch.optim.Adam(alphas, 3e-4, betas=(0.5, 0.999), weight_decay=1e-3)
    train_x, val_x = torch.randn(2, args.batch, 3, 32, 32)
    train_y, val_y = torch.randint(0, 10, (2, args.batch))

    def step():
        alpha_opt.zero_grad()
        F.cross_entropy(net(val_x), val_y).backward()
        alpha_opt.step()
        weight_opt.zero_grad()
        F.cross_entropy(net(train_x), train_y).backward()
        nn.utils.clip_grad_norm_(weights, 5.0)
        weight_opt.step()

    times = []
    for _ in range(args.warmup + args.steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    timed = times[args.warmup:]
    print(f"original DARTS formulation, first-order step, C=16 L={args.layers} N=4 "
          f"batch {args.batch}, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}: median "
          f"{statistics.median(timed):.2f} s over {len(timed)} steps "
          f"({', '.join(f'{t:.2f}' for t in timed)}) after {args.warmup} warm-up")


if __name__ == "__main__":
    main()
