"""Schedules as pure functions of (t, T): the figures that draw them and the loop that uses them
are the same code. `t` runs over epochs 1..T, as in Algorithm 1 (so the last epoch has t = T).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class EpochSchedule:
    """What one epoch of the search runs at; the epoch's record stores these fields as they are."""
    mu: float                 # the mixing ratio (Alg. 1, line 9); 1 for a single branch
    hls_factor: float         # Eq. (17): the backbone's share of the architecture learning rate
    lr: float                 # the weights' learning rate (cosine)
    arch_lr_backbone: float   # the backbone alphas' learning rate, xi_0 times the factor


def parabolic(t: float, T: float) -> float:
    """BBN's cumulative-learning mixing ratio (Alg. 1, line 9): mu = 1 - (t/T)^2."""
    return 1.0 - (t / T) ** 2


def reverse_sigmoid(t: float, T: float, k: float = 10.0) -> float:
    """Eq. (18): RS(t) = 1 - sigmoid((t - T/2) / (T/2) * k); symmetric about t = T/2."""
    return 1.0 - 1.0 / (1.0 + math.exp(-(t - T / 2) / (T / 2) * k))


def constant(t: float, T: float, value: float = 0.5) -> float:
    return value


# name -> mu(t, T, k, value): one signature, so the loop never special-cases a schedule
MIXING = {
    "parabolic": lambda t, T, k, value: parabolic(t, T),
    "reverse_sigmoid": lambda t, T, k, value: reverse_sigmoid(t, T, k),
    "constant": lambda t, T, k, value: constant(t, T, value),
}


def check_mixing(name: str) -> None:
    if name not in MIXING:
        raise ValueError(f"unknown mixing schedule {name!r}; choose one of {', '.join(MIXING)}")


def check_tau(tau: float | None, name: str = "tau") -> None:
    if tau is not None and tau <= 0:
        raise ValueError(f"{name} must be > 0 (got {tau}); use {name}=None to switch HLS off")


def mixing_ratio(name: str, t: float, T: float, k: float = 10.0, value: float = 0.5) -> float:
    """The mixing ratio mu(t) of the schedule `name`, clipped to [0, 1]."""
    check_mixing(name)
    return min(1.0, max(0.0, MIXING[name](t, T, k, value)))


def hls_factor(mu: float, tau: float | None) -> float:
    """Eq. (17): the backbone's architecture learning rate is xi_0 * (1 - exp(-tau * mu)).

    tau = None means no heterogeneous scheduling (factor 1).
    """
    check_tau(tau)
    if tau is None:
        return 1.0
    return 1.0 - math.exp(-tau * mu)


def cosine_lr(epoch: int, epochs: int, lr: float, lr_min: float) -> float:
    """Cosine annealing over epochs 0..epochs-1, as torch's CosineAnnealingLR stepped per epoch."""
    return lr_min + 0.5 * (lr - lr_min) * (1 + math.cos(math.pi * epoch / epochs))
