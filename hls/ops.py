"""The DARTS primitives (Liu et al., 2018), as used in the search cell.

Search-time convention: BatchNorm without affine parameters everywhere, and the pooling ops are
followed by a non-affine BatchNorm so that their output scale matches the convolutions'.
"""

from __future__ import annotations

import torch
from torch import nn

PRIMITIVES = (
    "none",
    "max_pool_3x3",
    "avg_pool_3x3",
    "skip_connect",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
)


class ReLUConvBN(nn.Sequential):
    def __init__(self, c_in, c_out, kernel, stride, padding, affine=False):
        super().__init__(nn.ReLU(inplace=False),
                         nn.Conv2d(c_in, c_out, kernel, stride, padding, bias=False),
                         nn.BatchNorm2d(c_out, affine=affine))


class DilConv(nn.Sequential):
    """ReLU, depthwise (dilated) conv, pointwise conv, BatchNorm."""

    def __init__(self, c_in, c_out, kernel, stride, padding, dilation, affine=False):
        super().__init__(nn.ReLU(inplace=False),
                         nn.Conv2d(c_in, c_in, kernel, stride, padding, dilation, groups=c_in,
                                   bias=False),
                         nn.Conv2d(c_in, c_out, 1, bias=False),
                         nn.BatchNorm2d(c_out, affine=affine))


class SepConv(nn.Sequential):
    """Two stacked DilConvs without dilation (the first carries the stride)."""

    def __init__(self, c_in, c_out, kernel, stride, padding, affine=False):
        super().__init__(DilConv(c_in, c_in, kernel, stride, padding, 1, affine),
                         DilConv(c_in, c_out, kernel, 1, padding, 1, affine))


class FactorizedReduce(nn.Module):
    """Halve the resolution with two offset 1x1 stride-2 convolutions, concatenated."""

    def __init__(self, c_in, c_out, affine=False):
        super().__init__()
        self.relu = nn.ReLU(inplace=False)
        self.conv_1 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
        self.conv_2 = nn.Conv2d(c_in, c_out - c_out // 2, 1, stride=2, bias=False)
        self.bn = nn.BatchNorm2d(c_out, affine=affine)

    def forward(self, x):
        x = self.relu(x)
        return self.bn(torch.cat([self.conv_1(x), self.conv_2(x[:, :, 1:, 1:])], dim=1))


class Zero(nn.Module):
    """The `none` op. Mixed ops skip it (its term is exactly zero); it exists for completeness."""

    def __init__(self, stride):
        super().__init__()
        self.stride = stride

    def forward(self, x):
        return x[:, :, ::self.stride, ::self.stride].mul(0.0)


def _pool_bn(pool: nn.Module, c: int) -> nn.Module:
    return nn.Sequential(pool, nn.BatchNorm2d(c, affine=False))


# name -> constructor(C, stride); a small registry in the timm manner instead of an if-chain.
OPS = {
    "none": lambda c, stride: Zero(stride),
    "max_pool_3x3": lambda c, stride: _pool_bn(nn.MaxPool2d(3, stride, padding=1), c),
    "avg_pool_3x3": lambda c, stride: _pool_bn(
        nn.AvgPool2d(3, stride, padding=1, count_include_pad=False), c),
    "skip_connect": lambda c, stride: nn.Identity() if stride == 1 else FactorizedReduce(c, c),
    "sep_conv_3x3": lambda c, stride: SepConv(c, c, 3, stride, 1),
    "sep_conv_5x5": lambda c, stride: SepConv(c, c, 5, stride, 2),
    "dil_conv_3x3": lambda c, stride: DilConv(c, c, 3, stride, 2, 2),
    "dil_conv_5x5": lambda c, stride: DilConv(c, c, 5, stride, 4, 2),
}


def check_primitives(primitives) -> tuple[str, ...]:
    unknown = [p for p in primitives if p not in OPS]
    if unknown:
        raise ValueError(f"unknown primitive(s) {unknown}; choose from {', '.join(OPS)}")
    return tuple(primitives)
