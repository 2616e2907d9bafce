"""The architecture optimiser: Adam on the alphas, one parameter group per component.

`gradient` computes d L_val / d alpha either first-order (at the current weights) or second-order
(Eq. 9: after one virtual SGD step w' = w - xi_w * (momentum buffer + grad + wd * w), xi_w the
learning rate of w's parameter group, with the finite-difference Hessian-vector product of
DARTS). The virtual step is taken in place on the
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
             weight_optimizer: torch.optim.Optimizer | None = None):
        """One architecture update. Returns, per component, the gradient's norm and the norm of
        the update Adam applied (tensors, no sync): Adam divides by the gradient's running RMS,
        so the two differ by more than the learning rate (docs: the Theorem 1 check).

        A component the loss does not reach (a head whose loss weight is exactly 0, or a frozen
        one) gets no gradient at all, so Adam leaves it alone: no decay, no moment update."""
        grads = self.gradient(loss_fn, val_batch, train_batch, order, xi, weight_optimizer)
        before = {name: a.detach().clone() for name, a in self.alphas.items()}
        for name, a in self.alphas.items():
            a.grad = grads[name]
        self.optimizer.step()
        zero = next(iter(self.alphas.values())).new_zeros(())
        grad_norms = {name: zero if g is None else g.norm() for name, g in grads.items()}
        update_norms = {name: (a.detach() - before[name]).norm()
                        for name, a in self.alphas.items()}
        return grad_norms, update_norms

    def gradient(self, loss_fn, val_batch, train_batch=None, order=1, xi=0.0,
                 weight_optimizer=None) -> dict[str, torch.Tensor | None]:
        """d L_val / d alpha per component; None for a component the loss does not reach."""
        names, alphas = list(self.alphas), list(self.alphas.values())
        if order == 1:
            return dict(zip(names, self._grad(loss_fn, val_batch, alphas)))
        if order != 2:
            raise ValueError(f"order must be 1 or 2 (got {order})")
        weights = [w for w in self.net.weight_parameters() if w.requires_grad]
        saved = [w.detach().clone() for w in weights]

        # virtual step w' = w - xi_w (momentum buf + g + wd w), as the weight optimiser would
        # take it, with each parameter group's own learning rate xi_w (HLS may scale the
        # backbone's); a weight the loss does not reach is not stepped, as SGD skips it
        g_train = self._grad(loss_fn, train_batch, weights)
        terms = _sgd_terms(weight_optimizer, weights, xi)
        with torch.no_grad():
            for w, g, (lr, momentum, wd, buf) in zip(weights, g_train, terms):
                if g is None:
                    continue
                step = g + wd * w
                if buf is not None:
                    step = step + momentum * buf
                w.sub_(lr * step)

        # gradient of L_val at w' with respect to alpha (direct term) and w' (for the HVP)
        grads = self._grad(loss_fn, val_batch, alphas + weights)
        d_alpha, d_w = grads[:len(alphas)], grads[len(alphas):]

        # d w' / d alpha = -xi_w d^2 L_train / (d w d alpha), so the Hessian-vector product is
        # taken along v = (xi_w / xi) d_w (= d_w when every group has the rate xi), by finite
        # differences: (grad_a L_train(w + eps v) - grad_a L_train(w - eps v)) / (2 eps)
        v = [None if d is None else (lr / xi if xi else 1.0) * d
             for d, (lr, *_) in zip(d_w, terms)]
        live = [(w, s, u) for w, s, u in zip(weights, saved, v) if u is not None]
        eps = 0.01 / torch.sqrt(sum((u * u).sum() for _, _, u in live))
        with torch.no_grad():
            for w, s, u in live:
                w.copy_(s + eps * u)
        g_plus = self._grad(loss_fn, train_batch, alphas)
        with torch.no_grad():
            for w, s, u in live:
                w.copy_(s - eps * u)
        g_minus = self._grad(loss_fn, train_batch, alphas)
        with torch.no_grad():
            for w, s in zip(weights, saved):
                w.copy_(s)
        out = {}
        for name, d, gp, gm in zip(names, d_alpha, g_plus, g_minus):
            if gp is None:
                out[name] = d
            else:
                hvp = xi * (gp - gm) / (2 * eps)
                out[name] = -hvp if d is None else d - hvp
        return out

    def _grad(self, loss_fn, batch, params) -> list[torch.Tensor | None]:
        """d loss / d params on `batch`, the loss built with every other parameter held fixed;
        None for a parameter the loss does not reach (or that is frozen).

        autograd.grad alone would skip most of the other gradients, but not inside a custom
        autograd Function, which only sees requires_grad (ops.py's depthwise one would compute
        a weight gradient in every first-order architecture step), and the graph would keep
        tensors that only those gradients read. The numbers are the same either way.
        """
        wanted = {id(p) for p in params}
        with held_fixed(p for p in self.net.parameters() if id(p) not in wanted):
            loss = loss_fn(batch)
        live = [p for p in params if p.requires_grad]
        if not live:
            return [None] * len(params)
        grads = iter(torch.autograd.grad(loss, live, allow_unused=True))
        return [next(grads) if p.requires_grad else None for p in params]

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


def _sgd_terms(optimizer, weights, xi: float):
    """(learning rate, momentum, weight decay, momentum buffer) of each weight, from its
    parameter group in an SGD optimiser; (xi, 0, 0, None) without one."""
    if optimizer is None:
        return [(xi, 0.0, 0.0, None)] * len(weights)
    group_of = {id(p): g for g in optimizer.param_groups for p in g["params"]}
    terms = []
    for w in weights:
        g = group_of[id(w)]
        terms.append((g["lr"], g.get("momentum", 0.0), g.get("weight_decay", 0.0),
                      optimizer.state.get(w, {}).get("momentum_buffer")))
    return terms
