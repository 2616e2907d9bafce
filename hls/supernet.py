"""The DARTS supernet with named components (Sec. III.B, IV.A).

One class serves plain DARTS and the bilateral-branch network: a backbone of stacked cells (stem,
normal cells, reduction cells at 1/3 and 2/3 of the depth) and one or more heads. Plain DARTS has
one head: global pooling of the last cell and a linear layer (quark0/darts). A BBN head is a
single normal cell fed by the last two backbone outputs, then pooling and a linear layer
(Sec. IV.A); `head_cell` gives a single-branch network such a head too. Every cell type has its
own architecture parameters, addressed by component name:

    backbone_normal, backbone_reduce, head_<name>     e.g. head_ins and head_cls

so the optimiser can give each component its own learning rate (HLS, Eq. 17).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .ops import OPS, PRIMITIVES, DilConv, FactorizedReduce, ReLUConvBN, SepConv, check_primitives


@dataclass(frozen=True)
class NetConfig:
    channels: int = 16          # C: width of the first stage
    layers: int = 8             # L: backbone cells
    nodes: int = 4              # intermediate nodes per cell (the paper's N - 3)
    num_classes: int = 10
    heads: tuple[str, ...] = ("main",)
    head_cell: bool = False     # each head starts with a searched normal cell (BBN: True)
    primitives: tuple[str, ...] = PRIMITIVES
    stem_multiplier: int = 3
    stem_stride: int = 1        # 2 halves the resolution before the first cell (cpu profile)


class MixedOp(nn.Module):
    """Eq. (6): the softmax-weighted sum of every primitive o on one edge, sum_o w_o o(x).

    `none`'s term is exactly zero, so it is left out of the sum (its alpha still moves, through
    the softmax). The convolutions start with relu(x), which the cell computes once per state
    and passes in as `x_relu`.
    """

    def __init__(self, c: int, stride: int, primitives: tuple[str, ...]):
        super().__init__()
        self.active = [i for i, p in enumerate(primitives) if p != "none"]
        self.ops = nn.ModuleList(OPS[primitives[i]](c, stride) for i in self.active)
        self.takes_relu = [isinstance(op, (DilConv, SepConv)) for op in self.ops]

    def forward(self, x, weights, x_relu):
        out = None
        for i, op, takes_relu in zip(self.active, self.ops, self.takes_relu):
            y = op(x, x_relu) if takes_relu else op(x)
            out = weights[i] * y if out is None else torch.addcmul(out, weights[i], y)
        return out


class Cell(nn.Module):
    """Eq. (5): a DAG of `nodes` intermediate nodes over two inputs, node j summing a mixed op
    of every earlier state; the output concatenates the intermediate nodes."""

    def __init__(self, nodes, c_prev_prev, c_prev, c, reduction, reduction_prev, primitives):
        super().__init__()
        self.reduction = reduction
        self.nodes = nodes
        self.preprocess0 = (FactorizedReduce(c_prev_prev, c) if reduction_prev
                            else ReLUConvBN(c_prev_prev, c, 1, 1, 0))
        self.preprocess1 = ReLUConvBN(c_prev, c, 1, 1, 0)
        self.edges = nn.ModuleList()
        for i in range(nodes):
            for j in range(2 + i):
                stride = 2 if reduction and j < 2 else 1
                self.edges.append(MixedOp(c, stride, primitives))
        self.relu = nn.ReLU()   # the convolutions' leading ReLU, once per state

    def forward(self, s0, s1, weights):
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        relus = [self.relu(h) for h in states]
        offset = 0
        for node in range(self.nodes):
            states.append(sum(self.edges[offset + j](h, weights[offset + j], r)
                              for j, (h, r) in enumerate(zip(states, relus))))
            if node < self.nodes - 1:         # the last node feeds no edge
                relus.append(self.relu(states[-1]))
            offset += len(states) - 1
        return torch.cat(states[2:], dim=1)


def num_edges(nodes: int) -> int:
    return sum(2 + i for i in range(nodes))


class Head(nn.Module):
    """Global pooling and a linear classifier, on the last backbone output (DARTS) or, with a
    head cell, on one normal cell fed by the backbone's last two outputs (a BBN head)."""

    def __init__(self, nodes, c_prev_prev, c_prev, c, reduction_prev, primitives, num_classes,
                 cell=True):
        super().__init__()
        self.cell = (Cell(nodes, c_prev_prev, c_prev, c, False, reduction_prev, primitives)
                     if cell else None)
        self.classifier = nn.Linear(nodes * c if cell else c_prev, num_classes)

    def forward(self, s0, s1, weights=None):
        out = s1 if self.cell is None else self.cell(s0, s1, weights)
        return self.classifier(F.adaptive_avg_pool2d(out, 1).flatten(1))


class SuperNet(nn.Module):
    def __init__(self, config: NetConfig):
        super().__init__()
        self.config = config
        primitives = check_primitives(config.primitives)
        c, nodes = config.channels, config.nodes
        c_curr = config.stem_multiplier * c
        self.stem = nn.Sequential(nn.Conv2d(3, c_curr, 3, config.stem_stride, padding=1, bias=False),
                                  nn.BatchNorm2d(c_curr))
        c_prev_prev, c_prev, c_curr = c_curr, c_curr, c
        self.cells = nn.ModuleList()
        reduction_prev = False
        reductions = {config.layers // 3, 2 * config.layers // 3}
        for i in range(config.layers):
            reduction = i in reductions
            if reduction:
                c_curr *= 2
            self.cells.append(Cell(nodes, c_prev_prev, c_prev, c_curr, reduction,
                                   reduction_prev, primitives))
            reduction_prev = reduction
            c_prev_prev, c_prev = c_prev, nodes * c_curr
        self.heads = nn.ModuleDict({
            name: Head(nodes, c_prev_prev, c_prev, c_curr, reduction_prev, primitives,
                       config.num_classes, config.head_cell)
            for name in config.heads})

        # Architecture parameters, one tensor (edges x ops) per component, initialised as DARTS.
        shape = (num_edges(nodes), len(primitives))
        self.alphas = nn.ParameterDict({
            name: nn.Parameter(1e-3 * torch.randn(shape)) for name in self.components})

    @property
    def components(self) -> list[str]:
        heads = [f"head_{h}" for h in self.config.heads] if self.config.head_cell else []
        return ["backbone_normal", "backbone_reduce"] + heads

    def arch_parameters(self) -> dict[str, nn.Parameter]:
        return dict(self.alphas.items())

    def weight_parameters(self, component: str | None = None) -> list[nn.Parameter]:
        """The network weights (never the alphas); `component` is "backbone" or a head name."""
        if component is None:
            return [p for n, p in self.named_parameters() if not n.startswith("alphas.")]
        if component == "backbone":
            return list(self.stem.parameters()) + list(self.cells.parameters())
        return list(self.heads[component].parameters())

    def features(self, x):
        """The backbone: the outputs of its last two cells."""
        w_normal = F.softmax(self.alphas["backbone_normal"], dim=-1)
        w_reduce = F.softmax(self.alphas["backbone_reduce"], dim=-1)
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1, w_reduce if cell.reduction else w_normal)
        return s0, s1

    def head(self, name: str, s0, s1):
        if not self.config.head_cell:
            return self.heads[name](s0, s1)
        return self.heads[name](s0, s1, F.softmax(self.alphas[f"head_{name}"], dim=-1))

    def forward(self, x) -> dict[str, torch.Tensor]:
        """Every head's logits on the same images (inference; training splits the batch)."""
        s0, s1 = self.features(x)
        return {name: self.head(name, s0, s1) for name in self.config.heads}

    def alpha_softmax(self) -> dict[str, list[list[float]]]:
        return {k: F.softmax(a.detach().float(), dim=-1).cpu().tolist()
                for k, a in self.alphas.items()}
