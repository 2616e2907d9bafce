"""Deriving, saving and drawing the discrete architecture (DARTS' parse rule).

Each intermediate node keeps its two strongest incoming edges, an edge's strength being the
largest softmax(alpha) weight among its non-`none` ops, and that op becomes the edge's operation.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .ops import PRIMITIVES

# A cell genotype: per node, a list of (op, input) pairs; inputs 0 and 1 are the cell inputs.
CellGenotype = list[list[tuple[str, int]]]


def derive_cell(weights, primitives=PRIMITIVES, nodes: int = 4) -> CellGenotype:
    """Discrete cell from softmax(alpha) (edges x ops), never from raw alphas."""
    w = torch.as_tensor(weights, dtype=torch.float64)
    if not torch.allclose(w.sum(-1), torch.ones(len(w), dtype=w.dtype), atol=1e-4):
        raise ValueError("derive_cell expects softmax(alpha) rows summing to 1, got raw alphas")
    real = [i for i, p in enumerate(primitives) if p != "none"]
    cell, start = [], 0
    for node in range(nodes):
        n_in = node + 2
        edges = w[start:start + n_in][:, real]
        strength, best = edges.max(dim=1)
        keep = sorted(torch.argsort(strength, descending=True, stable=True)[:2].tolist())
        cell.append([(primitives[real[best[j]]], j) for j in keep])
        start += n_in
    return cell


def derive(alpha_softmax: dict[str, list], primitives=PRIMITIVES, nodes: int = 4) -> dict:
    """Genotype of every component, from {component: softmax(alpha)}."""
    return {name: derive_cell(w, primitives, nodes) for name, w in alpha_softmax.items()}


def count_op(genotype: dict, op: str = "skip_connect") -> int:
    return sum(o == op for cell in genotype.values() for node in cell for o, _ in node)


def save(genotype: dict, path: str | Path) -> None:
    Path(path).write_text(json.dumps(genotype, indent=1))


def load(path: str | Path) -> dict:
    return {name: [[(op, int(j)) for op, j in node] for node in cell]
            for name, cell in json.loads(Path(path).read_text()).items()}


def draw_cell(cell: CellGenotype, ax=None, title: str | None = None):
    """Draw one cell as a left-to-right DAG with matplotlib; returns the axes."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3))
    n = len(cell)
    pos = {0: (0.0, 0.8), 1: (0.0, 0.2)}
    for i in range(n):
        pos[i + 2] = (1.0 + i, 0.5 + (0.25 if i % 2 else -0.25))
    pos["out"] = (n + 1.0, 0.5)
    labels = {0: "c_{k-2}", 1: "c_{k-1}", "out": "c_k"}
    for i, node in enumerate(cell):
        for op, j in node:
            (x0, y0), (x1, y1) = pos[j], pos[i + 2]
            ax.annotate("", (x1, y1), (x0, y0),
                        arrowprops=dict(arrowstyle="->", color="0.4", shrinkA=12, shrinkB=12))
            ax.text((x0 + x1) / 2, (y0 + y1) / 2, op, fontsize=7, ha="center",
                    color="tab:blue", bbox=dict(fc="white", ec="none", alpha=0.8, pad=0.5))
        (x0, y0), (x1, y1) = pos[i + 2], pos["out"]
        ax.annotate("", (x1, y1), (x0, y0),
                    arrowprops=dict(arrowstyle="->", color="0.8", shrinkA=12, shrinkB=12))
    for key, (x, y) in pos.items():
        ax.text(x, y, labels[key] if key in labels else str(key - 2), ha="center", va="center", fontsize=8,
                bbox=dict(boxstyle="round", fc="lightyellow" if key in labels else "lightblue"))
    ax.set_xlim(-0.5, n + 1.5)
    ax.set_ylim(0, 1)
    ax.axis("off")
    if title:
        ax.set_title(title, fontsize=9)
    return ax
