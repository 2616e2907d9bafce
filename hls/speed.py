"""How a search step is made fast, in one place: the levers, the CPU kernels, TF32, the CUDA graph.

None of it changes what is computed, only how (docs/performance.md has each lever's measured
gain and its agreement with the exact step). The model (supernet.py, ops.py) reads like the
paper's equations; an op that has a faster CPU kernel asks `cpu_kernels`, which `Speed.apply`
sets on every module of a network, and calls the kernel below. A lever is not part of a run's
identity: a run trained with another Speed is the same run.
"""

from __future__ import annotations

import functools
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, fields, replace

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class Speed:
    """The levers. Those on by default pay on the device that has them (docs/performance.md);
    those off are for a GPU to judge: each failed the agreement check where it was measured."""
    cpu_kernels: bool = True        # CPU: the kernels below instead of oneDNN's slow NCHW ones
    cuda_graph: bool = False        # CUDA: capture the whole search step once, replay it per step
    channels_last: bool = False     # NHWC layout for the network and its batches
    amp_bf16: bool = False          # CUDA: bf16 autocast
    tf32: bool = False              # CUDA: TF32 convolutions and matmuls (10-bit mantissa)
    batchnorm_unit_affine: bool = False  # non-affine BatchNorm as weight 1, bias 0 (cuDNN's kernel)

    @staticmethod
    def default_for(device: torch.device) -> Speed:
        """float32 NCHW on both devices; on CUDA the step as one graph."""
        return Speed(cuda_graph=device.type == "cuda")

    @staticmethod
    def textbook() -> Speed:
        """Every lever off: PyTorch's own kernels, float32, NCHW. The reference the benchmark
        and the agreement check measure the fast path against."""
        return Speed(**{f.name: False for f in fields(Speed)})

    def override(self, settings: dict[str, str]) -> Speed:
        """This Speed with levers set from text, e.g. {"cuda_graph": "off"} (`--speed`)."""
        names = [f.name for f in fields(Speed)]
        values = {"on": True, "true": True, "1": True, "off": False, "false": False, "0": False}
        changes = {}
        for key, text in settings.items():
            if key not in names:
                raise ValueError(f"unknown speed lever {key!r}; choose one of {', '.join(names)}")
            if text.lower() not in values:
                raise ValueError(f"speed lever {key} takes on or off (got {text!r}), "
                                 f"e.g. --speed {key}=off")
            changes[key] = values[text.lower()]
        return replace(self, **changes)

    def apply(self, net: nn.Module) -> nn.Module:
        """Set the network-level levers on every module of `net` (in place) and return it."""
        for module in net.modules():
            if hasattr(module, "cpu_kernels"):
                module.cpu_kernels = self.cpu_kernels
            if hasattr(module, "unit_affine"):
                module.unit_affine = self.batchnorm_unit_affine
        return net.to(memory_format=torch.channels_last) if self.channels_last else net


# --------------------------------------------------------------------------------------------
# CPU kernels: the same sums as PyTorch's NCHW ops, in an order oneDNN runs faster


def is_cpu_nchw(x: torch.Tensor) -> bool:
    """On the CPU and not in channels_last layout (the pointwise kernel's condition)."""
    channels_last = not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
    return x.device.type == "cpu" and not channels_last


def pointwise_as_matmul(x: torch.Tensor, weight: torch.Tensor, stride: int) -> torch.Tensor:
    """A 1x1 convolution without bias as one batched matmul (oneDNN's NCHW 1x1 convolution
    reorders its operands on every call). An expanded weight, so that the backward does not
    copy it."""
    if stride > 1:
        x = x[:, :, ::stride, ::stride]
    n, c, h, w = x.shape
    c_out = weight.shape[0]
    return torch.bmm(weight.view(1, c_out, c).expand(n, -1, -1),
                     x.reshape(n, c, h * w)).view(n, c_out, h, w)


def pools_fast(x: torch.Tensor) -> bool:
    """The pooling kernels' condition: a contiguous NCHW batch on the CPU, more than 1 channel."""
    return x.device.type == "cpu" and x.dim() == 4 and x.is_contiguous() and x.shape[1] > 1


def max_pool_3x3(x: torch.Tensor, stride: int) -> torch.Tensor:
    """PyTorch's NCHW max pooling is unvectorised on the CPU; its NHWC one is not. Exact."""
    return F.max_pool2d(x.contiguous(memory_format=torch.channels_last), 3, stride, 1).contiguous()


def avg_pool_3x3(x: torch.Tensor, stride: int) -> torch.Tensor:
    """Average pooling over the in-image pixels as a depthwise box convolution divided by the
    pixel count under each window (what count_include_pad=False divides by): the same nine
    numbers summed, and a division, not a multiplication by the reciprocal."""
    c, h, w = x.shape[1:]
    sums = F.conv2d(x, x.new_ones(c, 1, 3, 3), None, stride, 1, 1, c)
    return sums / _window_counts(h, w, stride, x.dtype)


@functools.lru_cache(maxsize=64)
def _window_counts(h: int, w: int, stride: int, dtype: torch.dtype) -> torch.Tensor:
    """The number of in-image pixels under each 3x3 window, shape (1, 1, H', W'), on the CPU."""
    return F.conv2d(torch.ones(1, 1, h, w, dtype=dtype), torch.ones(1, 1, 3, 3, dtype=dtype),
                    None, stride, 1)


def depthwise(x: torch.Tensor, weight: torch.Tensor, stride: int, padding: int,
              dilation: int) -> torch.Tensor:
    """A depthwise convolution on the CPU: a dilation-2 kernel on polyphase sub-images
    (oneDNN's backward of a dilated kernel is slow), and a 5x5 kernel's weight gradient from
    channels_last copies (`_dense`)."""
    if dilation == 2:
        return dilated_depthwise(x, weight, stride, padding, dense=_dense)
    return _dense(x, weight, stride, padding, dilation)


def _dense(x, weight, stride, padding, dilation=1):
    k = weight.shape[-1]
    if (x.device.type == "cpu" and x.is_contiguous() and stride == 1 and dilation == 1
            and k >= 5 and 2 * padding == k - 1 and x.shape[2] * x.shape[3] >= 64
            and torch.is_grad_enabled()):
        return _DepthwiseChannelsLastGrad.apply(x, weight, padding)
    return F.conv2d(x, weight, None, stride, padding, dilation, weight.shape[0])


class _DepthwiseChannelsLastGrad(torch.autograd.Function):
    """F.conv2d(x, w, padding=p, groups=C) whose weight gradient is taken in channels_last:
    for NCHW tensors oneDNN's 5x5 depthwise weight gradient is several times slower. It moves
    weight gradients only, never the architecture gradient of a first-order step."""

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


def dilated_depthwise(x: torch.Tensor, weight: torch.Tensor, stride: int, padding: int,
                      dense=None) -> torch.Tensor:
    """A 'same'-padded depthwise conv with dilation 2, without a dilated kernel.

    A dilation-2 kernel only combines pixels whose row and column parities equal the output
    pixel's. So at stride 2 (padding k-1, even) only the even-even sub-image is ever read, and
    at stride 1 each of the four parity sub-images is convolved on its own with the dense kernel:
    we stack them along the batch dimension, convolve once and interleave the results back.
    `dense(x, weight, stride, padding)` computes the undilated conv (default: F.conv2d).
    """
    k, s, p = weight.shape[-1], stride, padding
    n, c, h, w = x.shape
    dense = dense or (lambda y, wt, s, p, d=1: F.conv2d(y, wt, None, s, p, d, wt.shape[0]))
    if p != k - 1 or weight.shape[:2] != (c, 1) or (s == 1 and (h % 2 or w % 2)):
        return dense(x, weight, s, p, 2)
    if s == 2:
        return dense(x[:, :, ::2, ::2], weight, 1, k // 2)
    channels_last = x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(
        memory_format=torch.channels_last)
    if channels_last:   # permute the physical NHWC tensor, so every copy stays in that layout
        y = x.permute(0, 2, 3, 1).reshape(n, h // 2, 2, w // 2, 2, c)
        y = y.permute(2, 4, 0, 1, 3, 5).reshape(4 * n, h // 2, w // 2, c).permute(0, 3, 1, 2)
    else:
        y = x.reshape(n, c, h // 2, 2, w // 2, 2).permute(3, 5, 0, 1, 2, 4)
        y = y.reshape(4 * n, c, h // 2, w // 2)
    y = dense(y, weight, 1, k // 2)
    if channels_last:
        y = y.permute(0, 2, 3, 1).reshape(2, 2, n, h // 2, w // 2, c)
        return y.permute(2, 3, 0, 4, 1, 5).reshape(n, h, w, c).permute(0, 3, 1, 2)
    y = y.reshape(2, 2, n, c, h // 2, w // 2)
    return y.permute(2, 3, 4, 0, 5, 1).reshape(n, c, h, w)


# --------------------------------------------------------------------------------------------
# TF32 (CUDA)


class tf32_allowed:
    """Allow or forbid TF32 in cuDNN convolutions and cuBLAS matmuls inside a block.

    PyTorch allows it for convolutions by default; Speed.tf32 decides instead (a CUDA graph
    keeps the kernels chosen when it was captured)."""

    def __init__(self, allowed: bool):
        self.allowed = allowed

    def __enter__(self):
        self.saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = self.allowed

    def __exit__(self, *exc):
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = self.saved


# --------------------------------------------------------------------------------------------
# The search step as one CUDA graph


class CudaGraph:
    """Records the kernels one call of a function launches; replay launches them all at once."""

    def capture(self, fn):
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.outputs = fn()

    def replay(self):
        self.graph.replay()
        return self.outputs


@contextmanager
def running_uncaptured():
    """A capturable optimiser stepping outside a graph warns; in warm-up steps that is intended."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*capturable.*")
        yield


class GraphedStep:
    """A search step that is captured once and then replayed with each new pair of batches.

    What a capture fixes: the addresses of every tensor the step reads (so batches are copied
    into fixed input buffers, and the outputs are the same tensors after every replay: read them
    before the next step) and every Python number it was called with (the epoch's schedule: mu,
    learning rates). A new schedule is therefore captured anew; `reset` forgets the capture
    (after loading a checkpoint the optimisers hold new state tensors). The first `warmup`
    calls run eagerly on a side stream, as a capture needs: they create what is allocated
    lazily (momentum buffers, Adam moments, cuDNN plans). `recorder` is CudaGraph on a GPU; the
    tests pass one that replays by calling the function again.
    """

    def __init__(self, step, warmup: int = 3, recorder=CudaGraph):
        self.step, self.warmup, self.recorder = step, warmup, recorder
        self.eager_calls = 0
        self.reset()

    def reset(self) -> None:
        self.captured, self.schedule, self.inputs = None, None, None

    def __call__(self, train_batch, val_batch, schedule):
        if self.eager_calls < self.warmup:
            self.eager_calls += 1
            with running_uncaptured():
                return self._on_side_stream(lambda: self.step(train_batch, val_batch, schedule))
        if self.captured is None or schedule != self.schedule:
            self._capture(train_batch, val_batch, schedule)
        for buffer, batch in zip(self.inputs, (*train_batch, *val_batch)):
            buffer.copy_(batch)
        return self.captured.replay()

    def _capture(self, train_batch, val_batch, schedule) -> None:
        self.captured = None                    # the old graph's memory goes back first
        self.inputs = [t.clone() for t in (*train_batch, *val_batch)]
        n = len(train_batch)
        static_train, static_val = tuple(self.inputs[:n]), tuple(self.inputs[n:])
        recorder = self.recorder()
        recorder.capture(lambda: self.step(static_train, static_val, schedule))
        self.captured, self.schedule = recorder, schedule

    @staticmethod
    def _on_side_stream(fn):
        if not torch.cuda.is_available() or not torch.cuda.is_initialized():
            return fn()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            out = fn()
        torch.cuda.current_stream().wait_stream(side)
        return out
