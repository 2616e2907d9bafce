"""Synthetic CIFAR-sized data for the benchmark and the agreement checks: speed and agreement
do not need real pixels."""

from __future__ import annotations

import torch

from .data import LongTailData, Split


def synthetic_data(n_train: int, n_val: int, device, num_classes: int = 10) -> LongTailData:
    """Random uint8 images with a long-tailed label profile: speed does not need real pixels."""
    g = torch.Generator().manual_seed(0)

    def split(n):
        labels = torch.arange(n) % num_classes
        images = torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
        return Split(images.to(device), labels.to(device), num_classes)

    return LongTailData(split(n_train), split(n_val), split(num_classes * 10),
                        tuple(str(c) for c in range(num_classes)))
