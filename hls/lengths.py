"""Table II at every search length of one network: does the ordering move towards the paper's?

The `cpu` profile searches for 3 epochs, `cpu-long` the same network for longer (a profile's
`family` names the network). Chapter 3 shows the core rows at each length that has runs, from
the run store or the archive; a length whose runs are still being made shows the seeds it has.

    by_length = length_records("cpu")      ->  {profile: LengthRuns}, shortest search first
    length_table(by_length)                ->  a row per method, a column group per length
    length_figure(by_length)               ->  test accuracy against search epochs
    length_findings(by_length)             ->  the numbers chapter 3's text states
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from . import experiments, plan, plots, summaries


@dataclass
class LengthRuns:
    profile: str
    epochs: int
    records: dict[str, list] = field(default_factory=dict)   # method -> the finished seeds
    missing: int = 0                                         # runs of the plan not yet made

    @property
    def title(self) -> str:
        return f"{self.profile}, {self.epochs} epochs"


def length_records(profile: str, seeds=None, overrides: dict | None = None,
                   methods=None) -> dict[str, LengthRuns]:
    """The core rows of Table II at every profile of `profile`'s family that has any of them.

    seeds and overrides apply to `profile` itself (the book's), not to its family's others."""
    methods = list(methods) if methods is not None else list(experiments.CORE_METHODS)
    out = {}
    for p in plan.family_profiles(profile):
        own = p == profile
        found, missing = plan.finished_records("03_main_results", p, seeds if own else None,
                                               overrides if own else None)
        records = {m: found[m] for m in methods if m in found}
        if records:
            missing_core = sum(c.method in methods for c in missing)
            out[p] = LengthRuns(p, experiments.PROFILES[p]["fields"]["epochs"], records, missing_core)
    return out


def length_table(by_length: dict[str, LengthRuns]) -> pd.DataFrame:
    """Test accuracy (%) per method and search length, mean ± std over the seeds each has."""
    rows, index = [], []
    methods = list(dict.fromkeys(m for runs in by_length.values() for m in runs.records))
    by_profile = {p: summaries.summary(runs.records) for p, runs in by_length.items()}
    for method in methods:
        for p, runs in by_length.items():
            s = by_profile[p]
            index.append((summaries.label(method), runs.title))
            if method not in s.index:
                rows.append({"seeds": 0, **{k: "–" for k in (
                    "paper protocol (%)", "val-chosen mu (%)", "head (%)", "middle (%)", "tail (%)")}})
                continue
            row = s.loc[method]
            rows.append({
                "seeds": int(row["seeds"]),
                "paper protocol (%)": summaries.fmt(row["paper_protocol"], row["paper_protocol_std"]),
                "val-chosen mu (%)": summaries.fmt(row["val_chosen"], row["val_chosen_std"]),
                **{f"{g} (%)": summaries.fmt(row[g], digits=1) for g in ("head", "middle", "tail")}})
    return pd.DataFrame(rows, index=pd.MultiIndex.from_tuples(index, names=["method", "search"]))


def _accuracies(records, key: str) -> list[float]:
    return [100 * r.eval[key]["acc"] for r in records]


def length_figure(by_length: dict[str, LengthRuns], profile: str | None = None) -> Figure:
    """Each method's test accuracy against the search length: paper protocol, val-chosen mu."""
    fig = plots._figure(plots.WIDTH, 6.4)
    axes = fig.subplots(2, 1, sharex=True, sharey=True)
    methods = list(dict.fromkeys(m for runs in by_length.values() for m in runs.records))
    for ax, key, name in zip(axes, ("paper_protocol", "val_chosen"),
                             ("paper protocol (mu_test on test)", "mu_test chosen on validation")):
        for k, method in enumerate(methods):
            points = [(runs.epochs, _accuracies(runs.records[method], key))
                      for runs in by_length.values() if method in runs.records]
            x = [epochs for epochs, _ in points]
            mean = [np.mean(a) for _, a in points]
            std = [np.std(a, ddof=1) if len(a) > 1 else 0.0 for _, a in points]
            ax.errorbar(x, mean, yerr=std, capsize=3, label=summaries.label(method), **plots._style(k))
        ax.set_title(name)
        ax.set_ylabel("test accuracy (%)")
        ax.set_xticks(sorted({runs.epochs for runs in by_length.values()}))
        ax.grid(alpha=0.3)
    axes[1].set_xlabel("search epochs")
    axes[1].legend(loc="best")
    records = [r for runs in by_length.values() for recs in runs.records.values() for r in recs]
    plots._title(fig, "Table II's core rows against the search length", records, profile)
    return fig


@dataclass(frozen=True)
class LengthFinding:
    profile: str
    epochs: int
    seeds: int                      # the fewest seeds of the compared methods
    resample_minus_darts: float     # paper: 61.20 - 64.56 = -3.36
    hls_minus_bbn: float            # paper: 65.12 - 52.14 = +12.98
    hls_minus_darts: float          # paper: 65.12 - 64.56 = +0.56
    best: str                       # the method with the best mean, paper protocol


def length_findings(by_length: dict[str, LengthRuns]) -> list[LengthFinding]:
    """The paper-protocol gaps the paper's argument is about, at each length (shortest first).

    A gap is NaN where one of its methods has no run at that length."""
    out = []
    for runs in by_length.values():
        mean = {m: float(np.mean(_accuracies(recs, "paper_protocol")))
                for m, recs in runs.records.items()}
        gap = lambda a, b: mean[a] - mean[b] if a in mean and b in mean else float("nan")  # noqa: E731
        out.append(LengthFinding(
            runs.profile, runs.epochs, min(len(recs) for recs in runs.records.values()),
            gap("darts_resample", "darts"), gap("hls", "darts_bbn"), gap("hls", "darts"),
            max(mean, key=mean.get)))
    return out
