"""Does the paper hold? Each claim of the paper as a test on run records, and its verdict.

A claim compares two sets of per-seed numbers. Its verdict needs the difference of their means to
exceed `Z` = 2 times its standard error (for independent runs the pooled sqrt(s_a^2/n_a +
s_b^2/n_b); for a continued run against its parent, seed by seed, the standard error of the
paired differences). Within that it is "not resolved", and so it is with a single seed, which
has no spread to measure. With three seeds this is a rough test, not a t-test at a stated level:
the page that shows the verdicts says so.

    evaluate(records)  ->  [Verdict(claim, verdict, numbers), ...]      one profile
    claims_table({profile: verdicts})  ->  a claim per row, a profile per column

`records` maps the keys of the chapters' plans (hls.plan) to per-seed RunRecords: the Table II
methods (chapter 3) and the continued runs (chapter 5). A claim whose runs are absent is
"no runs".
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .summaries import late_drift, mu_index

Z = 2.0
HOLDS, FAILS, OPEN, ABSENT = "holds", "fails", "not resolved", "no runs"
FORGETTING_POINTS = 5.0     # an instance head that lost more than this has "forgotten"

CLAIMS = {
    "C1": "Re-sampling hurts DARTS (Table I/II: 61.20 < 64.56)",
    "C2": "DARTS+BBN is far below DARTS (52.14 < 64.56)",
    "C3": "HLS is at least DARTS and well above DARTS+BBN (65.12)",
    "C4": "The best test-time mu is 0, the class head (Sec. V.D)",
    "C5": "The scaled backbone lr beats the unscaled one at every mu_test (Fig. 6)",
    "C6": "The backbone's alphas settle under HLS (Fig. 7 against Fig. 3)",
    "C7": "Continued training with mu = 0.5 is stable, the others forget (Fig. 8)",
}


@dataclass(frozen=True)
class Comparison:
    """mean(a) - mean(b), its standard error and the resulting z (NaN when unmeasurable)."""
    mean_a: float
    mean_b: float
    diff: float
    se: float
    n: int          # seeds (pairs, or the smaller of the two sets)

    @property
    def z(self) -> float:
        if not (math.isfinite(self.se) and self.se > 0):
            return math.nan
        return self.diff / self.se

    def verdict(self, margin: float = 0.0) -> str:
        """"holds" if diff - margin is above Z standard errors, "fails" if below -Z."""
        if not (math.isfinite(self.se) and self.se > 0):
            return OPEN
        z = (self.diff - margin) / self.se
        return HOLDS if z > Z else FAILS if z < -Z else OPEN

    def text(self, unit: str = "%") -> str:
        se = f", SE {self.se:.2f}" if math.isfinite(self.se) else ", no spread"
        return (f"{self.mean_a:.2f}{unit} vs {self.mean_b:.2f}{unit} "
                f"({self.diff:+.2f}{se}, {self.n} seed{'s' * (self.n != 1)})")


def compare(a, b, paired: bool = False) -> Comparison:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if paired:
        d = a - b
        se = d.std(ddof=1) / math.sqrt(len(d)) if len(d) > 1 else math.nan
        return Comparison(a.mean(), b.mean(), float(d.mean()), float(se), len(d))
    if len(a) > 1 and len(b) > 1:
        se = math.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b))
    else:
        se = math.nan
    return Comparison(a.mean(), b.mean(), float(a.mean() - b.mean()), se, min(len(a), len(b)))


@dataclass(frozen=True)
class Verdict:
    claim: str
    verdict: str
    numbers: str

    @property
    def cell(self) -> str:
        return f"{self.verdict}: {self.numbers}"


# ---- what a claim reads from a record


def accuracy(records, key: str = "paper_protocol") -> list[float]:
    """Test accuracy (%) per seed: the paper's protocol (best mu_test on test) by default."""
    return [100 * r.eval[key]["acc"] for r in records]


def accuracy_at(records, mu: float) -> list[float]:
    return [100 * r.eval["test_acc"][mu_index(r, mu)] for r in records]


def by_seed(child, parent) -> tuple[list, list]:
    """The records of `child` and `parent` paired by seed (the seeds both have)."""
    parents = {r.config.seed: r for r in parent}
    pairs = [(c, parents[c.config.seed]) for c in child if c.config.seed in parents]
    return [c for c, _ in pairs], [p for _, p in pairs]


# ---- the claims


def _has(records, *keys) -> bool:
    return all(records.get(k) for k in keys)


def _both(first: str, second: str) -> str:
    """A claim of two parts: fails if either fails, holds only if both hold."""
    if FAILS in (first, second):
        return FAILS
    return HOLDS if first == second == HOLDS else OPEN


def evaluate(records: dict) -> list[Verdict]:
    """The verdict on every claim of CLAIMS from one profile's records."""
    out = []

    def absent(claim, *keys):
        out.append(Verdict(claim, ABSENT, "needs " + ", ".join(keys)))

    if _has(records, "darts", "darts_resample"):
        c = compare(accuracy(records["darts"]), accuracy(records["darts_resample"]))
        out.append(Verdict("C1", c.verdict(), "DARTS vs re-sampling " + c.text()))
    else:
        absent("C1", "darts", "darts_resample")

    if _has(records, "darts", "darts_bbn"):
        c = compare(accuracy(records["darts"]), accuracy(records["darts_bbn"]))
        out.append(Verdict("C2", c.verdict(), "DARTS vs DARTS+BBN " + c.text()))
    else:
        absent("C2", "darts", "darts_bbn")

    if _has(records, "hls", "darts", "darts_bbn"):
        hls = accuracy(records["hls"])
        over_bbn = compare(hls, accuracy(records["darts_bbn"]))
        vs_darts = compare(hls, accuracy(records["darts"]))
        # "at least DARTS": only a resolved deficit speaks against it
        not_below = FAILS if vs_darts.verdict() == FAILS else HOLDS
        out.append(Verdict("C3", _both(over_bbn.verdict(), not_below),
                           f"HLS vs DARTS+BBN {over_bbn.text()}; HLS vs DARTS {vs_darts.text()}"))
    else:
        absent("C3", "hls", "darts", "darts_bbn")

    bilateral = [k for k in ("darts_bbn", "hls", "hls_rs") if records.get(k)]
    if bilateral:
        parts, verdicts = [], []
        for key in bilateral:
            recs = records[key]
            grid = recs[0].eval["mu_grid"]
            means = {mu: float(np.mean(accuracy_at(recs, mu))) for mu in grid if mu != 0}
            rival = max(means, key=means.get)
            c = compare(accuracy_at(recs, 0.0), accuracy_at(recs, rival), paired=True)
            verdicts.append(c.verdict())
            parts.append(f"{key}: mu 0 vs best other (mu {rival:g}) {c.text()}")
        verdict = (FAILS if FAILS in verdicts else
                   HOLDS if all(v == HOLDS for v in verdicts) else OPEN)
        out.append(Verdict("C4", verdict, "; ".join(parts)))
    else:
        absent("C4", "darts_bbn", "hls")

    if _has(records, "hls", "darts_bbn"):
        grid = records["hls"][0].eval["mu_grid"]
        per_mu = [compare(accuracy_at(records["hls"], mu), accuracy_at(records["darts_bbn"], mu))
                  for mu in grid]
        verdicts = [c.verdict() for c in per_mu]
        verdict = (FAILS if FAILS in verdicts else
                   HOLDS if all(v == HOLDS for v in verdicts) else OPEN)
        counts = {v: verdicts.count(v) for v in (HOLDS, OPEN, FAILS)}
        out.append(Verdict("C5", verdict,
                           f"HLS above at {counts[HOLDS]} of {len(grid)} mu_test, below at "
                           f"{counts[FAILS]}, unresolved at {counts[OPEN]}; mean difference "
                           f"{np.mean([c.diff for c in per_mu]):+.2f} points"))
    else:
        absent("C5", "hls", "darts_bbn")

    if _has(records, "hls", "darts_bbn"):
        # the backbone's mean change of softmax(alpha) per epoch over the last third (plots)
        c = compare([late_drift(r) for r in records["darts_bbn"]],
                    [late_drift(r) for r in records["hls"]])
        out.append(Verdict("C6", c.verdict(),
                           "late backbone drift, DARTS+BBN vs HLS "
                           f"{c.mean_a:.4f} vs {c.mean_b:.4f} per epoch "
                           f"({c.diff:+.4f}, SE {c.se:.4f}, {c.n} seeds)"))
    else:
        absent("C6", "hls", "darts_bbn")

    continued = [k for k in ("ct_mu0", "ct_rs", "ct_frozen") if records.get(k)]
    if _has(records, "hls", "ct_mu05") and continued:
        def loss_of_instance_head(key):   # parent minus child, seed by seed, at mu_test = 1
            child, parent = by_seed(records[key], records["hls"])
            return compare(accuracy_at(parent, 1.0), accuracy_at(child, 1.0), paired=True)
        stable = loss_of_instance_head("ct_mu05")
        # stable: its loss is resolved below the forgetting threshold
        stable_verdict = {HOLDS: FAILS, FAILS: HOLDS, OPEN: OPEN}[stable.verdict(FORGETTING_POINTS)]
        forgets = {k: loss_of_instance_head(k) for k in continued}
        forget_verdicts = [c.verdict(FORGETTING_POINTS) for c in forgets.values()]
        others = (FAILS if FAILS in forget_verdicts else
                  HOLDS if all(v == HOLDS for v in forget_verdicts) else OPEN)
        text = "; ".join(f"{k} lost {c.diff:+.2f} points" + (f" (SE {c.se:.2f})" if math.isfinite(c.se) else "")
                         for k, c in [("ct_mu05", stable), *forgets.items()])
        out.append(Verdict("C7", _both(stable_verdict, others),
                           f"instance head (mu_test = 1) against the HLS run, seed by seed: {text}; "
                           f"forgetting = more than {FORGETTING_POINTS:g} points"))
    else:
        absent("C7", "hls", "ct_mu05", "ct_mu0 / ct_rs / ct_frozen")
    return out


def claims_table(verdicts_by_profile: dict[str, list[Verdict]]):
    """A claim per row (its text), a profile per column, each cell the verdict and numbers."""
    import pandas as pd
    columns = {profile: {CLAIMS[v.claim]: v.cell for v in verdicts}
               for profile, verdicts in verdicts_by_profile.items()}
    table = pd.DataFrame(columns).reindex(list(CLAIMS.values()))
    table.index.name = "claim"
    return table
