"""The DARTS primitives (Liu et al., 2018), as used in the search cell.

Search-time convention: BatchNorm without affine parameters everywhere, and the pooling ops are
followed by a non-affine BatchNorm so that their output scale matches the convolutions'.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
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
    """ReLU, depthwise (dilated) conv, pointwise conv, BatchNorm.

    `phases` computes a dilation-2 depthwise conv as a dense one on the image's four polyphase
    sub-images (see `dilated_depthwise`): the same sums, and oneDNN's backward of the dense
    kernel is 2-3x faster than of the dilated one on the CPU (docs/performance.md).
    """

    def __init__(self, c_in, c_out, kernel, stride, padding, dilation, affine=False):
        super().__init__(nn.ReLU(inplace=False),
                         nn.Conv2d(c_in, c_in, kernel, stride, padding, dilation, groups=c_in,
                                   bias=False),
                         nn.Conv2d(c_in, c_out, 1, bias=False),
                         nn.BatchNorm2d(c_out, affine=affine))
        self.phases = True

    def forward(self, x):
        relu, depthwise, pointwise, bn = self
        x = relu(x)
        x = dilated_depthwise(x, depthwise) if self.phases else depthwise(x)
        return bn(pointwise(x))


def dilated_depthwise(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """`conv(x)` for a 'same'-padded depthwise conv with dilation 2, without a dilated kernel.

    A dilation-2 kernel only combines pixels whose row and column parities equal the output
    pixel's. So at stride 2 (padding k-1, even) only the even-even sub-image is ever read, and
    at stride 1 each of the four parity sub-images is convolved on its own with the dense kernel:
    we stack them along the batch dimension, convolve once and interleave the results back.
    """
    k, (s, d, p) = conv.kernel_size[0], (conv.stride[0], conv.dilation[0], conv.padding[0])
    n, c, h, w = x.shape
    if d != 2 or p != k - 1 or conv.groups != c or (s == 1 and (h % 2 or w % 2)):
        return conv(x)
    if s == 2:
        return F.conv2d(x[:, :, ::2, ::2], conv.weight, None, 1, k // 2, 1, c)
    channels_last = x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(
        memory_format=torch.channels_last)
    if channels_last:   # permute the physical NHWC tensor, so every copy stays in that layout
        y = x.permute(0, 2, 3, 1).reshape(n, h // 2, 2, w // 2, 2, c)
        y = y.permute(2, 4, 0, 1, 3, 5).reshape(4 * n, h // 2, w // 2, c).permute(0, 3, 1, 2)
    else:
        y = x.reshape(n, c, h // 2, 2, w // 2, 2).permute(3, 5, 0, 1, 2, 4)
        y = y.reshape(4 * n, c, h // 2, w // 2)
    y = F.conv2d(y, conv.weight, None, 1, k // 2, 1, c)
    if channels_last:
        y = y.permute(0, 2, 3, 1).reshape(2, 2, n, h // 2, w // 2, c)
        return y.permute(2, 3, 0, 4, 1, 5).reshape(n, h, w, c).permute(0, 3, 1, 2)
    y = y.reshape(2, 2, n, c, h // 2, w // 2)
    return y.permute(2, 3, 4, 0, 5, 1).reshape(n, c, h, w)


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


class Pool(nn.Module):
    """3x3 max or average pooling.

    On the CPU an NCHW input is pooled in channels_last layout and copied back: PyTorch's NCHW
    pooling kernels there are about 3x (max) and 1.4x (average) slower than the channels_last
    ones plus both copies (docs/performance.md). Pooling is exact in either layout.
    """

    def __init__(self, kind: str, stride: int):
        super().__init__()
        self.kind, self.stride = kind, stride
        self.channels_last_on_cpu = True

    def forward(self, x):
        relayout = (self.channels_last_on_cpu and x.device.type == "cpu" and x.dim() == 4
                    and x.is_contiguous() and x.shape[1] > 1)
        if relayout:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.kind == "max":
            y = F.max_pool2d(x, 3, self.stride, 1)
        else:
            y = F.avg_pool2d(x, 3, self.stride, 1, count_include_pad=False)
        return y.contiguous() if relayout else y

    def extra_repr(self):
        return f"{self.kind}, stride={self.stride}"


def _pool_bn(kind: str, c: int, stride: int) -> nn.Module:
    return nn.Sequential(Pool(kind, stride), nn.BatchNorm2d(c, affine=False))


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
