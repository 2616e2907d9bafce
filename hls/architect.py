"""The architecture optimiser: Adam on the alphas, one parameter group per component.

`gradient` computes d L_val / d alpha either first-order (at the current weights) or second-order
(Eq. 9: after one virtual SGD step w' = w - xi * (momentum buffer + grad + wd * w), with the
finite-difference Hessian-vector product of DARTS). The virtual step is taken in place on the
same network and undone afterwards: no second copy is built per step.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable

import torch

from .supernet import SuperNet

LossFn = Callable[[object], torch.Tensor]   # batch -> scalar loss on the network


class Architect:
    def __init__(self, net: SuperNet, lr: float, betas=(0.5, 0.999), weight_decay: float = 1e-3,
                 capturable: bool = False):
        self.net = net
        self.base_lr = lr
        self.alphas = net.arch_parameters()
        self.optimizer = torch.optim.Adam(
            [{"params": [a], "name": name, "lr": lr} for name, a in self.alphas.items()],
            lr=lr, betas=tuple(betas), weight_decay=weight_decay,
            capturable=capturable)   # CUDA graphs: its step counter stays on the device

    def set_lr_multipliers(self, multipliers: dict[str, float]) -> None:
        """Per-component learning rate = base * multiplier (components not named keep 1)."""
        for group in self.optimizer.param_groups:
            group["lr"] = self.base_lr * multipliers.get(group["name"], 1.0)

    def step(self, loss_fn: LossFn, val_batch, train_batch=None, order: int = 1, xi: float = 0.0,
             weight_optimizer: torch.optim.Optimizer | None = None) -> dict[str, torch.Tensor]:
        """One architecture update; returns each component's gradient norm (tensors, no sync)."""
        grads = self.gradient(loss_fn, val_batch, train_batch, order, xi, weight_optimizer)
        for name, a in self.alphas.items():
            a.grad = grads[name]
        self.optimizer.step()
        return {name: g.norm() for name, g in grads.items()}

    def gradient(self, loss_fn, val_batch, train_batch=None, order=1, xi=0.0,
                 weight_optimizer=None) -> dict[str, torch.Tensor]:
        names, alphas = list(self.alphas), list(self.alphas.values())
        if order == 1:
            return dict(zip(names, self._grad(loss_fn, val_batch, alphas)))
        if order != 2:
            raise ValueError(f"order must be 1 or 2 (got {order})")
        weights = [w for w in self.net.weight_parameters() if w.requires_grad]
        saved = [w.detach().clone() for w in weights]

        # virtual step w' = w - xi * (momentum * buf + g + wd * w), as the weight optimiser would
        g_train = self._grad(loss_fn, train_batch, weights)
        momentum, wd, buffers = _sgd_terms(weight_optimizer, weights)
        with torch.no_grad():
            for w, g, buf in zip(weights, g_train, buffers):
                step = g + wd * w
                if buf is not None:
                    step = step + momentum * buf
                w.sub_(xi * step)

        # gradient of L_val at w' with respect to alpha (direct term) and w' (for the HVP)
        grads = self._grad(loss_fn, val_batch, alphas + weights)
        d_alpha, d_w = grads[:len(alphas)], grads[len(alphas):]

        # finite differences: (grad_a L_train(w + eps v) - grad_a L_train(w - eps v)) / (2 eps)
        eps = 0.01 / torch.sqrt(sum((v * v).sum() for v in d_w))
        with torch.no_grad():
            for w, s, v in zip(weights, saved, d_w):
                w.copy_(s + eps * v)
        g_plus = self._grad(loss_fn, train_batch, alphas)
        with torch.no_grad():
            for w, s, v in zip(weights, saved, d_w):
                w.copy_(s - eps * v)
        g_minus = self._grad(loss_fn, train_batch, alphas)
        with torch.no_grad():
            for w, s in zip(weights, saved):
                w.copy_(s)
        return {name: d - xi * (gp - gm) / (2 * eps)
                for name, d, gp, gm in zip(names, d_alpha, g_plus, g_minus)}

    def _grad(self, loss_fn, batch, params) -> list[torch.Tensor]:
        """d loss / d params on `batch`, the loss built with every other parameter held fixed.

        autograd.grad alone would skip most of the other gradients, but not inside a custom
        autograd Function, which only sees requires_grad (ops.py's depthwise one would compute
        a weight gradient in every first-order architecture step), and the graph would keep
        tensors that only those gradients read. The numbers are the same either way.
        """
        wanted = {id(p) for p in params}
        with held_fixed(p for p in self.net.parameters() if id(p) not in wanted):
            loss = loss_fn(batch)
        # a frozen or untouched parameter gets an explicit zero
        live = [p for p in params if p.requires_grad]
        grads = iter(torch.autograd.grad(loss, live, allow_unused=True))
        out = []
        for p in params:
            g = next(grads) if p.requires_grad else None
            out.append(torch.zeros_like(p) if g is None else g)
        return out

    def state_dict(self) -> dict:
        return self.optimizer.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state)


@contextmanager
def held_fixed(params):
    """Build a loss inside this block with these parameters as constants: requires_grad is off
    while the graph is recorded (that decides what its backward computes), then restored."""
    held = [p for p in params if p.requires_grad]
    for p in held:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in held:
            p.requires_grad_(True)


def _sgd_terms(optimizer, weights):
    """Momentum, weight decay and momentum buffers of an SGD optimiser (zeros when absent)."""
    if optimizer is None:
        return 0.0, 0.0, [None] * len(weights)
    group = optimizer.param_groups[0]
    buffers = [optimizer.state.get(w, {}).get("momentum_buffer") for w in weights]
    return group.get("momentum", 0.0), group.get("weight_decay", 0.0), buffers
