"""The DARTS primitives (Liu et al., 2018), as used in the search cell.

Search-time convention: BatchNorm without affine parameters everywhere, and the pooling ops are
followed by a non-affine BatchNorm so that their output scale matches the convolutions'.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import speed

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


class Pointwise(nn.Conv2d):
    """A 1x1 convolution without bias."""

    cpu_kernels = True      # Speed.cpu_kernels: a batched matmul on the CPU (hls/speed.py)

    def __init__(self, c_in, c_out, stride=1):
        super().__init__(c_in, c_out, 1, stride, bias=False)

    def forward(self, x):
        if self.cpu_kernels and speed.is_cpu_nchw(x):
            return speed.pointwise_as_matmul(x, self.weight, self.stride[0])
        return super().forward(x)


class BatchNorm(nn.BatchNorm2d):
    """BatchNorm2d whose non-affine form can run as an affine one with weight 1 and bias 0
    (Speed.batchnorm_unit_affine): x_hat * 1 + 0 is x_hat exactly, and PyTorch hands a
    BatchNorm to cuDNN only when it has a weight and a bias. The unit weight and bias are
    buffers outside the state dict, so checkpoints do not change."""

    def __init__(self, channels: int, affine: bool = False):
        super().__init__(channels, affine=affine)
        self.unit_affine = False
        if not affine:
            self.register_buffer("unit_weight", torch.ones(channels), persistent=False)
            self.register_buffer("unit_bias", torch.zeros(channels), persistent=False)

    def forward(self, x):
        if self.affine or not self.unit_affine:
            return super().forward(x)
        if self.training:                 # what nn.BatchNorm2d does with a fixed momentum
            self.num_batches_tracked.add_(1)
        return F.batch_norm(x, self.running_mean, self.running_var, self.unit_weight,
                            self.unit_bias, self.training, self.momentum, self.eps)


class ReLUConvBN(nn.Sequential):
    def __init__(self, c_in, c_out, kernel, stride, padding, affine=False):
        conv = (Pointwise(c_in, c_out, stride) if kernel == 1 and padding == 0
                else nn.Conv2d(c_in, c_out, kernel, stride, padding, bias=False))
        super().__init__(nn.ReLU(inplace=False), conv, BatchNorm(c_out, affine=affine))


class DilConv(nn.Sequential):
    """ReLU, depthwise (dilated) conv, pointwise conv, BatchNorm."""

    def __init__(self, c_in, c_out, kernel, stride, padding, dilation, affine=False):
        super().__init__(nn.ReLU(inplace=False),
                         Depthwise(c_in, kernel, stride, padding, dilation),
                         Pointwise(c_in, c_out),
                         BatchNorm(c_out, affine=affine))

    def forward(self, x, x_relu=None):
        """`x_relu`, when given, is relu(x): the search cell computes it once per state for
        every convolution reading that state."""
        relu, depthwise, pointwise, bn = self
        return bn(pointwise(depthwise(relu(x) if x_relu is None else x_relu)))


class Depthwise(nn.Conv2d):
    """A depthwise (possibly dilated) convolution: one filter per channel, no bias."""

    cpu_kernels = True      # Speed.cpu_kernels: hls/speed.py's depthwise kernels on the CPU

    def __init__(self, c, kernel, stride, padding, dilation=1):
        super().__init__(c, c, kernel, stride, padding, dilation, groups=c, bias=False)

    def forward(self, x):
        if self.cpu_kernels and x.device.type == "cpu":
            return speed.depthwise(x, self.weight, self.stride[0], self.padding[0],
                                   self.dilation[0])
        return super().forward(x)


class SepConv(nn.Sequential):
    """Two stacked DilConvs without dilation (the first carries the stride)."""

    def __init__(self, c_in, c_out, kernel, stride, padding, affine=False):
        super().__init__(DilConv(c_in, c_in, kernel, stride, padding, 1, affine),
                         DilConv(c_in, c_out, kernel, 1, padding, 1, affine))

    def forward(self, x, x_relu=None):
        first, second = self
        return second(first(x, x_relu))


class FactorizedReduce(nn.Module):
    """Halve the resolution with two offset 1x1 stride-2 convolutions, concatenated."""

    def __init__(self, c_in, c_out, affine=False):
        super().__init__()
        self.relu = nn.ReLU(inplace=False)
        self.conv_1 = Pointwise(c_in, c_out // 2, stride=2)
        self.conv_2 = Pointwise(c_in, c_out - c_out // 2, stride=2)
        self.bn = BatchNorm(c_out, affine=affine)

    def forward(self, x):
        x = self.relu(x)
        return self.bn(torch.cat([self.conv_1(x), self.conv_2(x[:, :, 1:, 1:])], dim=1))


class Zero(nn.Module):
    """The `none` op. The search's mixed ops leave its exactly-zero term out; the tests' literal
    Eq. (6) computes it."""

    def __init__(self, stride):
        super().__init__()
        self.stride = stride

    def forward(self, x):
        return x[:, :, ::self.stride, ::self.stride].mul(0.0)


class Pool(nn.Module):
    """3x3 max or average pooling (average over the in-image pixels only, as DARTS)."""

    cpu_kernels = True      # Speed.cpu_kernels: hls/speed.py's pooling kernels on the CPU

    def __init__(self, kind: str, stride: int):
        super().__init__()
        self.kind, self.stride = kind, stride

    def forward(self, x):
        fast = self.cpu_kernels and speed.pools_fast(x)
        if self.kind == "avg":
            return (speed.avg_pool_3x3(x, self.stride) if fast
                    else F.avg_pool2d(x, 3, self.stride, 1, count_include_pad=False))
        return speed.max_pool_3x3(x, self.stride) if fast else F.max_pool2d(x, 3, self.stride, 1)

    def extra_repr(self):
        return f"{self.kind}, stride={self.stride}"


def _pool_bn(kind: str, c: int, stride: int) -> nn.Module:
    return nn.Sequential(Pool(kind, stride), BatchNorm(c, affine=False))


# name -> constructor(C, stride); a small registry in the timm manner instead of an if-chain.
OPS = {
    "none": lambda c, stride: Zero(stride),
    "max_pool_3x3": lambda c, stride: _pool_bn("max", c, stride),
    "avg_pool_3x3": lambda c, stride: _pool_bn("avg", c, stride),
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
