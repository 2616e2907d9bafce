"""Numbers and words from run records: the seeds of a method flattened, mean ± std over seeds,
the method's label, a comparison in words, Table II's plain floats (`summary`), accuracy at one
mu_test, the alphas' drift. The tables, the figures and the chapters' findings build on these."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pandas as pd

from . import experiments


COMPONENT_TITLES = {
    "backbone_normal": "backbone, normal cell",
    "backbone_reduce": "backbone, reduction cell",
    "head_ins": "instance-sampling head",
    "head_cls": "class-sampling head",
    "head_main": "classifier head",
}
COMPONENT_ORDER = list(COMPONENT_TITLES)


def flatten(records) -> list:
    """Every RunRecord in a record, a list of them or a dict of either, in order."""
    if records is None:
        return []
    if isinstance(records, Mapping):
        return [r for v in records.values() for r in flatten(v)]
    if isinstance(records, (list, tuple)):
        return [r for v in records for r in flatten(v)]
    return [records]


def label(method: str) -> str:
    return experiments.LABELS.get(method, method)


def seeds(records) -> list[int]:
    return sorted({r.config.seed for r in flatten(records)})


def mean_std(values) -> tuple[float, float]:
    """Mean and sample standard deviation of the finite values (NaN std for one value)."""
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=float)
    if len(v) == 0:
        return float("nan"), float("nan")
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else float("nan")


def accuracy_mean_std(records, key: str = "paper_protocol") -> tuple[float, float]:
    """Test accuracy (%) of `key`'s choice of mu_test, mean and std over the records (seeds)."""
    return mean_std([100 * r.eval[key]["acc"] for r in flatten(records)])


def fmt(mean: float, std: float = float("nan"), digits: int = 2) -> str:
    """'64.56 ± 0.31' (or '64.56' for one seed, '–' for nothing)."""
    if mean is None or not math.isfinite(mean):
        return "–"
    if std is None or not math.isfinite(std):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def compare(ours: float, theirs: float, tolerance: float = 0.5, unit: str = " points") -> str:
    """Words for ours - theirs: 'x points above', 'x points below' or 'within tolerance'."""
    if not (math.isfinite(ours) and math.isfinite(theirs)):
        return "not comparable"
    d = ours - theirs
    if abs(d) <= tolerance:
        return f"within {tolerance:g}{unit} of"
    return f"{abs(d):.1f}{unit} {'above' if d > 0 else 'below'}"


def summary(records_by_method: Mapping[str, list], paper: Mapping[str, float] | None = None) -> pd.DataFrame:
    """Plain floats (percent) per method: means and stds of both headline numbers, groups, paper."""
    paper = experiments.PAPER_TABLE_II if paper is None else paper
    rows = []
    for method, recs in records_by_method.items():
        recs = flatten(recs)
        pp, vc, vp = (accuracy_mean_std(recs, key)
                      for key in ("paper_protocol", "val_chosen", "val_chosen_plain"))
        mus = [r.eval["val_chosen"]["mu"] for r in recs] if recs and recs[0].eval.get("mu_grid") else []
        row = {"method": method, "label": label(method), "seeds": len(recs),
               "paper_protocol": pp[0], "paper_protocol_std": pp[1],
               "val_chosen": vc[0], "val_chosen_std": vc[1],
               "val_chosen_plain": vp[0], "val_chosen_plain_std": vp[1],
               "chosen_mu": float(np.mean(mus)) if mus else float("nan"),
               "chosen_mus": ", ".join(f"{m:.1f}" for m in mus) if mus else "–",
               "best_test_mu": ", ".join(f"{r.eval['paper_protocol']['mu']:.1f}" for r in recs)
               if mus else "–"}
        for g in ("head", "middle", "tail", "many", "medium", "few"):
            vals = [100 * r.eval["groups"][g] for r in recs if g in r.eval.get("groups", {})]
            row[g] = mean_std(vals)[0]
        row["paper"] = float(paper[method]) if method in paper else float("nan")
        row["difference"] = row["paper_protocol"] - row["paper"]
        rows.append(row)
    return pd.DataFrame(rows).set_index("method")


def mu_accuracy(records, mu: float) -> float:
    """Mean test accuracy (%) at one mu_test over the records (NaN for one-head methods)."""
    vals = [100 * r.eval["test_acc"][mu_index(r, mu)] for r in flatten(records) if r.eval.get("mu_grid")]
    return mean_std(vals)[0]


def mu_index(record, mu: float) -> int:
    """Where mu_test = mu sits in a record's grid (the nearest grid point)."""
    grid = record.eval["mu_grid"]
    return int(np.argmin([abs(m - mu) for m in grid]))


def components(record) -> list[str]:
    names = list(record.history[0]["alphas"])
    return sorted(names, key=lambda c: COMPONENT_ORDER.index(c) if c in COMPONENT_ORDER else 99)


def alpha_change(record, component: str) -> list[float]:
    """Mean |softmax(alpha)_e - softmax(alpha)_{e-1}| for epochs 2..T of one component."""
    w = np.array([e["alphas"][component] for e in record.history], dtype=float)
    return [float(x) for x in np.abs(np.diff(w, axis=0)).mean(axis=(1, 2))]


def late_drift(records, component_prefix: str = "backbone") -> float:
    """The backbone's mean alpha change over the last third of the epochs (plain float)."""
    vals = []
    for r in flatten(records):
        for comp in r.history[0]["alphas"]:
            if comp.startswith(component_prefix):
                d = alpha_change(r, comp)
                if d:
                    vals += d[-max(1, len(d) // 3):]
    return float(np.mean(vals)) if vals else float("nan")


def correlation(a, b) -> float:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(a) < 2 or a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])
