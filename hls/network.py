"""The discrete networks of the evaluation phase: a searched (or random) cell stacked into DARTS'
evaluation network, and ResNet-32, the long-tail literature's CIFAR backbone.

DARTS evaluates a search by training the derived cell from scratch in a deeper, wider network
(quark0/darts, `cnn/model.py`): a stem, L cells whose edges are the genotype's ops on the
genotype's inputs, reduction cells at 1/3 and 2/3 of the depth, global pooling and a linear
classifier, with an auxiliary classifier after the second reduction cell and drop-path on every
edge that is not an identity. BatchNorm has affine parameters here (the search's has none) and
the pooling ops have no BatchNorm after them, as in DARTS' evaluation code.

    DiscreteNet(genotype, channels=36, layers=20)   DARTS' CIFAR evaluation network
    ResNetCIFAR(blocks=5)                           ResNet-32 (3 stages x 5 basic blocks)
    random_genotype(primitives, nodes, seed)        a cell drawn uniformly from the space
    parameter_count(net), multiply_adds(net)        the size columns of the chapter's tables

Both networks return (logits, auxiliary logits or None) in training mode and logits in eval mode.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .ops import DilConv, FactorizedReduce, Pool, ReLUConvBN, SepConv

# name -> constructor(C, stride) with affine BatchNorm (DARTS' OPS with affine=True); `none` is
# never part of a derived cell.
EVAL_OPS = {
    "max_pool_3x3": lambda c, stride: Pool("max", stride),
    "avg_pool_3x3": lambda c, stride: Pool("avg", stride),
    "skip_connect": lambda c, stride: (nn.Identity() if stride == 1
                                       else FactorizedReduce(c, c, affine=True)),
    "sep_conv_3x3": lambda c, stride: SepConv(c, c, 3, stride, 1, affine=True),
    "sep_conv_5x5": lambda c, stride: SepConv(c, c, 5, stride, 2, affine=True),
    "dil_conv_3x3": lambda c, stride: DilConv(c, c, 3, stride, 2, 2, affine=True),
    "dil_conv_5x5": lambda c, stride: DilConv(c, c, 5, stride, 4, 2, affine=True),
}

CELL_TYPES = ("backbone_normal", "backbone_reduce")


def check_genotype(genotype: dict) -> dict:
    """The genotype's backbone cells as lists of (op, input) pairs; a ValueError names what is
    wrong (a missing cell, an unknown op, an input that does not exist yet)."""
    cells = {}
    for name in CELL_TYPES:
        if name not in genotype:
            raise ValueError(f"the genotype has no {name} cell (it has {', '.join(genotype)}); "
                             "derive it from a search run's record")
        cell = [[(str(op), int(j)) for op, j in node] for node in genotype[name]]
        for i, node in enumerate(cell):
            for op, j in node:
                if op not in EVAL_OPS:
                    raise ValueError(f"{name} node {i} uses {op!r}, which a trained cell cannot "
                                     f"have; choose from {', '.join(EVAL_OPS)}")
                if not 0 <= j < i + 2:
                    raise ValueError(f"{name} node {i} reads state {j}, which does not exist "
                                     f"yet (states 0..{i + 1})")
        cells[name] = cell
    if len(cells["backbone_normal"]) != len(cells["backbone_reduce"]):
        raise ValueError("the normal and the reduction cell must have the same number of nodes")
    return cells


def random_genotype(primitives, nodes: int, seed: int) -> dict:
    """A normal and a reduction cell drawn uniformly from the search space: for every node two
    distinct inputs among the states before it, and for each an op other than `none`."""
    ops = [p for p in primitives if p != "none"]
    if not ops:
        raise ValueError("the search space has no op but `none`; a random cell needs one")
    rng = np.random.default_rng(seed)
    genotype = {}
    for name in CELL_TYPES:
        cell = []
        for i in range(nodes):
            inputs = sorted(rng.choice(i + 2, size=2, replace=False).tolist())
            cell.append([(ops[rng.integers(len(ops))], int(j)) for j in inputs])
        genotype[name] = cell
    return genotype


# --------------------------------------------------------------------------------------------
# DARTS' evaluation network


def drop_path(x: torch.Tensor, p: float, generator: torch.Generator) -> torch.Tensor:
    """Zero whole samples of an edge's output with probability p, scaling the rest by 1/(1-p)."""
    keep = 1.0 - p
    mask = torch.rand(x.shape[0], 1, 1, 1, device=x.device, generator=generator) < keep
    return x * mask.to(x.dtype) / keep


class DiscreteCell(nn.Module):
    """A cell with one op per kept edge: node i = op_a(state a) + op_b(state b); the output
    concatenates every node (DARTS' concat = all intermediate nodes)."""

    def __init__(self, cell, c_prev_prev: int, c_prev: int, c: int, reduction: bool,
                 reduction_prev: bool):
        super().__init__()
        self.reduction = reduction
        self.preprocess0 = (FactorizedReduce(c_prev_prev, c, affine=True) if reduction_prev
                            else ReLUConvBN(c_prev_prev, c, 1, 1, 0, affine=True))
        self.preprocess1 = ReLUConvBN(c_prev, c, 1, 1, 0, affine=True)
        self.inputs = [j for node in cell for _, j in node]
        self.ops = nn.ModuleList(EVAL_OPS[op](c, 2 if reduction and j < 2 else 1)
                                 for node in cell for op, j in node)
        self.nodes = len(cell)

    def forward(self, s0, s1, drop_prob: float = 0.0, generator=None):
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        for i in range(self.nodes):
            total = 0
            for k in (2 * i, 2 * i + 1):
                h = self.ops[k](states[self.inputs[k]])
                if self.training and drop_prob > 0 and not isinstance(self.ops[k], nn.Identity):
                    h = drop_path(h, drop_prob, generator)
                total = total + h
            states.append(total)
        return torch.cat(states[2:], dim=1)


class AuxiliaryHead(nn.Module):
    """DARTS' auxiliary classifier on the second reduction cell's output (8x8 maps at 32x32
    input): ReLU, 5x5 average pooling of stride 3 to 2x2, 1x1 conv to 128, 2x2 conv to 768,
    linear. Smaller maps (a stride-2 stem) are pooled to the same 2x2 adaptively, since a 5x5
    window does not fit them."""

    def __init__(self, c: int, num_classes: int, map_size: int):
        super().__init__()
        pool = (nn.AvgPool2d(5, stride=3, padding=0, count_include_pad=False) if map_size == 8
                else nn.AdaptiveAvgPool2d(2))
        self.features = nn.Sequential(
            nn.ReLU(), pool,
            nn.Conv2d(c, 128, 1, bias=False), nn.BatchNorm2d(128), nn.ReLU(),
            nn.Conv2d(128, 768, 2, bias=False), nn.BatchNorm2d(768), nn.ReLU())
        self.classifier = nn.Linear(768, num_classes)

    def forward(self, x):
        return self.classifier(self.features(x).flatten(1))


class DiscreteNet(nn.Module):
    """DARTS' CIFAR evaluation network (NetworkCIFAR) over a genotype's backbone cells."""

    def __init__(self, genotype: dict, channels: int = 36, layers: int = 20,
                 num_classes: int = 10, auxiliary: bool = True, stem_stride: int = 1,
                 stem_multiplier: int = 3, image_size: int = 32):
        super().__init__()
        cells = check_genotype(genotype)
        if layers < 3:
            raise ValueError(f"layers must be >= 3 so that both reduction cells exist "
                             f"(got {layers})")
        nodes = len(cells["backbone_normal"])
        c_curr = stem_multiplier * channels
        self.stem = nn.Sequential(nn.Conv2d(3, c_curr, 3, stem_stride, padding=1, bias=False),
                                  nn.BatchNorm2d(c_curr))
        c_prev_prev, c_prev, c_curr = c_curr, c_curr, channels
        reductions = {layers // 3, 2 * layers // 3}
        self.auxiliary_after = 2 * layers // 3      # DARTS: after the second reduction cell
        self.cells = nn.ModuleList()
        reduction_prev = False
        for i in range(layers):
            reduction = i in reductions
            if reduction:
                c_curr *= 2
            cell = cells["backbone_reduce" if reduction else "backbone_normal"]
            self.cells.append(DiscreteCell(cell, c_prev_prev, c_prev, c_curr, reduction,
                                           reduction_prev))
            reduction_prev = reduction
            c_prev_prev, c_prev = c_prev, nodes * c_curr
            if i == self.auxiliary_after:
                c_auxiliary = c_prev
        map_size = image_size // stem_stride // 4
        self.auxiliary = AuxiliaryHead(c_auxiliary, num_classes, map_size) if auxiliary else None
        self.classifier = nn.Linear(c_prev, num_classes)
        self.drop_prob = 0.0
        self.generator = None       # drop-path's random stream (set by the trainer)

    def forward(self, x):
        s0 = s1 = self.stem(x)
        aux = None
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1, self.drop_prob, self.generator)
            if i == self.auxiliary_after and self.auxiliary is not None and self.training:
                aux = self.auxiliary(s1)
        logits = self.classifier(F.adaptive_avg_pool2d(s1, 1).flatten(1))
        return (logits, aux) if self.training else logits


# --------------------------------------------------------------------------------------------
# ResNet-32 for CIFAR (He et al. 2016; the LDAM-DRW code's resnet32)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with BatchNorm and a shortcut; where the shape changes the shortcut
    subsamples and pads the new channels with zeros (the CIFAR ResNet's "option A", which has
    no parameters)."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.stride, self.pad = stride, c_out - c_in

    def shortcut(self, x):
        if self.stride == 1 and self.pad == 0:
            return x
        x = x[:, :, ::self.stride, ::self.stride]
        return F.pad(x, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNetCIFAR(nn.Module):
    """A 3x3 stem, three stages of `blocks` basic blocks (widths 16, 32, 64; stride 2 into the
    second and third), global pooling and a linear layer: ResNet-(6 blocks + 2), so 32 for 5.
    Convolutions and the linear layer start from Kaiming-normal weights, as LDAM-DRW's."""

    def __init__(self, blocks: int = 5, widths=(16, 32, 64), num_classes: int = 10,
                 stem_stride: int = 1):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, widths[0], 3, stem_stride, 1, bias=False),
                                  nn.BatchNorm2d(widths[0]), nn.ReLU())
        stages, c_in = [], widths[0]
        for k, width in enumerate(widths):
            for b in range(blocks):
                stages.append(BasicBlock(c_in, width, 2 if k > 0 and b == 0 else 1))
                c_in = width
        self.blocks = nn.Sequential(*stages)
        self.classifier = nn.Linear(c_in, num_classes)
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(module.weight)

    def forward(self, x):
        out = self.blocks(self.stem(x))
        logits = self.classifier(F.adaptive_avg_pool2d(out, 1).flatten(1))
        return (logits, None) if self.training else logits


# --------------------------------------------------------------------------------------------
# Size


def parameter_count(net: nn.Module) -> int:
    """Trainable parameters of the network that classifies at test time: the auxiliary head,
    used only in training, is left out (as DARTS' count_parameters_in_MB)."""
    return sum(p.numel() for name, p in net.named_parameters()
               if not name.startswith("auxiliary."))


@torch.no_grad()
def multiply_adds(net: nn.Module, image_size: int = 32) -> int:
    """Multiply-adds of the convolutions and linear layers for one image at test time (pooling,
    BatchNorm and additions are not counted, as is usual for these tables)."""
    total = 0

    def count(module, inputs, output):
        nonlocal total
        if isinstance(module, nn.Conv2d):
            per_output = module.in_channels // module.groups * module.kernel_size[0] * \
                module.kernel_size[1]
            total += output.numel() * per_output
        else:
            total += module.in_features * module.out_features

    hooks = [m.register_forward_hook(count) for m in net.modules()
             if isinstance(m, (nn.Conv2d, nn.Linear))]
    was_training = net.training
    net.eval()
    try:
        device = next(net.parameters()).device
        net(torch.zeros(1, 3, image_size, image_size, device=device))
    finally:
        net.train(was_training)
        for h in hooks:
            h.remove()
    return total
