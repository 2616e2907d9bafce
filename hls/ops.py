"""The DARTS primitives (Liu et al., 2018), as used in the search cell.

Search-time convention: BatchNorm without affine parameters everywhere, and the pooling ops are
followed by a non-affine BatchNorm so that their output scale matches the convolutions'.
"""

from __future__ import annotations

import functools

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


class Pointwise(nn.Conv2d):
    """A 1x1 convolution without bias.

    On the CPU an NCHW input is multiplied by the weight matrix with one batched matmul instead
    of going through oneDNN, whose NCHW 1x1 convolution reorders its operands and was up to 13x
    slower at these widths (docs/performance.md). The same products, summed in another order.
    """

    def __init__(self, c_in, c_out, stride=1):
        super().__init__(c_in, c_out, 1, stride, bias=False)
        self.as_matmul = True

    def forward(self, x):
        channels_last = not x.is_contiguous() and x.is_contiguous(
            memory_format=torch.channels_last)
        if not (self.as_matmul and x.device.type == "cpu" and not channels_last):
            return super().forward(x)
        s = self.stride[0]
        if s > 1:
            x = x[:, :, ::s, ::s]
        n, c, h, w = x.shape
        weight = self.weight.view(1, self.out_channels, c).expand(n, -1, -1)
        return torch.bmm(weight, x.reshape(n, c, h * w)).view(n, self.out_channels, h, w)


class BatchNorm(nn.BatchNorm2d):
    """BatchNorm2d whose non-affine form can run as an affine one with weight 1 and bias 0.

    x_hat * 1 + 0 is x_hat exactly. The point is the kernel: PyTorch hands a BatchNorm to cuDNN
    only when it has a weight and a bias, so every non-affine one of the search cell runs
    PyTorch's own NCHW kernels, which gather each channel's statistics in one thread block: 16
    blocks at the paper's width. On an H200 those kernels took 47% of the step's device time
    (docs/performance.md). `unit_affine` is Speed.batchnorm_unit_affine; the unit weight and
    bias are buffers outside the state dict, so checkpoints do not change.
    """

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

    def forward(self, x, activated=None):
        """`activated`, when given, is relu(x), computed once by the cell for every op that
        starts with a ReLU on this input (the same values, one ReLU instead of several)."""
        relu, depthwise, pointwise, bn = self
        x = relu(x) if activated is None else activated
        return bn(pointwise(depthwise(x)))


class Depthwise(nn.Conv2d):
    """A depthwise convolution (one filter per channel, no bias), with two levers that keep the
    sums (docs/performance.md):

    - `phases`: a dilation-2 kernel runs as a dense one on the four polyphase sub-images
      (`dilated_depthwise`); oneDNN's backward of a dilated kernel is 2-3x slower on the CPU.
    - `cpu_grad_channels_last`: on the CPU, the weight gradient of a stride-1 kernel of 5x5 or
      larger is computed from channels_last copies of the input and the output gradient; for
      NCHW tensors oneDNN takes 3-4x longer on these shapes (3x3 kernels are fast either way).
    """

    def __init__(self, c, kernel, stride, padding, dilation=1):
        super().__init__(c, c, kernel, stride, padding, dilation, groups=c, bias=False)
        self.phases = True
        self.cpu_grad_channels_last = True

    def forward(self, x):
        if self.phases and self.dilation[0] == 2:
            return dilated_depthwise(x, self, self.dense)
        return self.dense(x, self.stride[0], self.padding[0], self.dilation[0])

    def dense(self, x, stride, padding, dilation=1):
        k = self.kernel_size[0]
        if (self.cpu_grad_channels_last and x.device.type == "cpu" and x.is_contiguous()
                and stride == 1 and dilation == 1 and k >= 5 and 2 * padding == k - 1
                and x.shape[2] * x.shape[3] >= 64 and torch.is_grad_enabled()):
            return _DepthwiseChannelsLastGrad.apply(x, self.weight, padding)
        return F.conv2d(x, self.weight, None, stride, padding, dilation, self.groups)


class _DepthwiseChannelsLastGrad(torch.autograd.Function):
    """F.conv2d(x, w, padding=p, groups=C) whose weight gradient is taken in channels_last."""

    @staticmethod
    def forward(ctx, x, weight, padding):
        ctx.save_for_backward(x, weight)
        ctx.padding = padding
        return F.conv2d(x, weight, None, 1, padding, 1, x.shape[1])

    @staticmethod
    @torch.autograd.function.once_differentiable   # a loud error, not a silent one, if asked
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        p, c = ctx.padding, x.shape[1]
        args = (None, [1, 1], [p, p], [1, 1], False, [0, 0], c)
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.ops.aten.convolution_backward(
                grad, x, weight, *args, [True, False, False])[0]
        if ctx.needs_input_grad[1]:
            cl = torch.channels_last
            grad_w = torch.ops.aten.convolution_backward(
                grad.contiguous(memory_format=cl), x.contiguous(memory_format=cl), weight,
                *args, [False, True, False])[1]
        return grad_x, grad_w, None


def dilated_depthwise(x: torch.Tensor, conv: nn.Conv2d, dense=None) -> torch.Tensor:
    """`conv(x)` for a 'same'-padded depthwise conv with dilation 2, without a dilated kernel.

    A dilation-2 kernel only combines pixels whose row and column parities equal the output
    pixel's. So at stride 2 (padding k-1, even) only the even-even sub-image is ever read, and
    at stride 1 each of the four parity sub-images is convolved on its own with the dense kernel:
    we stack them along the batch dimension, convolve once and interleave the results back.
    `dense(x, stride, padding, dilation)` computes the undilated conv (default: F.conv2d).
    """
    k, (s, d, p) = conv.kernel_size[0], (conv.stride[0], conv.dilation[0], conv.padding[0])
    n, c, h, w = x.shape
    dense = dense or (lambda y, s, p, d=1: F.conv2d(y, conv.weight, None, s, p, d, conv.groups))
    if d != 2 or p != k - 1 or conv.groups != c or (s == 1 and (h % 2 or w % 2)):
        return dense(x, s, p, d)
    if s == 2:
        return dense(x[:, :, ::2, ::2], 1, k // 2)
    channels_last = x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(
        memory_format=torch.channels_last)
    if channels_last:   # permute the physical NHWC tensor, so every copy stays in that layout
        y = x.permute(0, 2, 3, 1).reshape(n, h // 2, 2, w // 2, 2, c)
        y = y.permute(2, 4, 0, 1, 3, 5).reshape(4 * n, h // 2, w // 2, c).permute(0, 3, 1, 2)
    else:
        y = x.reshape(n, c, h // 2, 2, w // 2, 2).permute(3, 5, 0, 1, 2, 4)
        y = y.reshape(4 * n, c, h // 2, w // 2)
    y = dense(y, 1, k // 2)
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

    def forward(self, x, activated=None):
        first, second = self
        return second(first(x, activated))


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
    """The `none` op. Mixed ops skip it (its term is exactly zero); it exists for completeness."""

    def __init__(self, stride):
        super().__init__()
        self.stride = stride

    def forward(self, x):
        return x[:, :, ::self.stride, ::self.stride].mul(0.0)


class Pool(nn.Module):
    """3x3 max or average pooling (average over the in-image pixels only, as DARTS).

    On the CPU, PyTorch's NCHW pooling kernels are slow (docs/performance.md), so with
    `fast_on_cpu` an NCHW input is max-pooled in channels_last layout and copied back, and
    average-pooled as a depthwise convolution with a 3x3 box of ones divided by the pixel count.
    Max pooling is exact in either layout; the box sum adds the same nine numbers.
    """

    def __init__(self, kind: str, stride: int):
        super().__init__()
        self.kind, self.stride = kind, stride
        self.fast_on_cpu = True

    def forward(self, x):
        fast = (self.fast_on_cpu and x.device.type == "cpu" and x.dim() == 4
                and x.is_contiguous() and x.shape[1] > 1)
        if self.kind == "avg":
            if fast:
                c, h, w = x.shape[1:]
                box = x.new_ones(c, 1, 3, 3)
                sums = F.conv2d(x, box, None, self.stride, 1, 1, c)
                return sums / _window_counts(h, w, self.stride, x.dtype)
            return F.avg_pool2d(x, 3, self.stride, 1, count_include_pad=False)
        if fast:
            return F.max_pool2d(x.contiguous(memory_format=torch.channels_last),
                                3, self.stride, 1).contiguous()
        return F.max_pool2d(x, 3, self.stride, 1)

    def extra_repr(self):
        return f"{self.kind}, stride={self.stride}"


@functools.lru_cache(maxsize=64)
def _window_counts(h: int, w: int, stride: int, dtype: torch.dtype) -> torch.Tensor:
    """The number of in-image pixels under each 3x3 window, shape (1, 1, H', W'), on the CPU."""
    return F.conv2d(torch.ones(1, 1, h, w, dtype=dtype), torch.ones(1, 1, 3, 3, dtype=dtype),
                    None, stride, 1)


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
