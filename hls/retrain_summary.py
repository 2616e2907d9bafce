"""Do the searched cells hold up? What chapter 6 concludes from its retraining records.

Inputs are the chapter's records as hls.plan gives them: `records` maps a retraining key
(re_darts_ce, re_random_la, re_resnet_ce, ...) to one RetrainRecord per seed, `parents` maps the
keys of searched genotypes to the search run each record trained (hls.plan.parent_records, in
the same order). Accuracies are test accuracies in %.

    summary(records, parents)       one row per key: retrained accuracy and groups (mean, std),
                                    size, and the search-phase accuracy of the same runs
    rank_correlation(...)           does the supernet's ranking survive retraining? (Spearman)
    conclusions(records, parents)   every number and verdict the chapter's closing text glues

The rules are those of the claims page (hls.claims): a difference of means is a verdict only
beyond twice its standard error, and so is a rank correlation (its t statistic beyond 2); with
three seeds or seven methods that is a rough rule, not a test at a stated level.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pandas as pd

from . import claims, experiments, summaries
from .retrain import LOSS_TAGS, LOSSES

GROUPS = ("head", "middle", "tail", "many", "medium", "few")
T_CRITICAL = 2.0    # |t| of a rank correlation beyond this: resolved (claims.Z's rule)


def source_label(source: str, depth: int | None = None) -> str:
    if source == "random":
        return "random cells"
    if source == "resnet":
        return f"ResNet-{depth}" if depth else "ResNet"
    return experiments.LABELS.get(source, source)


def search_accuracy(record) -> float:
    """The search-phase number the paper reports: test accuracy under its protocol (%)."""
    return 100 * record.eval["paper_protocol"]["acc"]


def summary(records: Mapping[str, list], parents: Mapping[str, list] | None = None) -> pd.DataFrame:
    """One row per key, in the order given: source, loss, label, seeds, retrained accuracy
    (mean, std), the groups' means, parameters and multiply-adds, and the search-phase
    accuracy of the parents (mean, std; NaN for the baselines)."""
    parents = parents or {}
    rows = []
    for key, recs in records.items():
        config = recs[0].config
        acc = summaries.mean_std([100 * r.eval["acc"] for r in recs])
        search = summaries.mean_std([search_accuracy(p) for p in parents.get(key, [])])
        row = {"key": key, "source": config.source, "loss": config.loss,
               "label": source_label(config.source, config.resnet_depth),
               "kind": config.architecture, "seeds": len(recs),
               "acc": acc[0], "acc_std": acc[1],
               "search_acc": search[0], "search_acc_std": search[1],
               "parameters": float(np.mean([r.eval["parameters"] for r in recs])),
               "multiply_adds": float(np.mean([r.eval["multiply_adds"] for r in recs]))}
        for g in GROUPS:
            row[g] = summaries.mean_std([100 * r.eval["groups"][g] for r in recs
                                if g in r.eval["groups"]])[0]
        rows.append(row)
    return pd.DataFrame(rows).set_index("key")


# ---- rank correlation


def ranks(values) -> np.ndarray:
    """Ranks 1..n, ties given the mean of the ranks they share."""
    v = np.asarray(values, dtype=float)
    order = np.argsort(v, kind="stable")
    out = np.empty(len(v))
    i = 0
    while i < len(v):
        j = i
        while j + 1 < len(v) and v[order[j + 1]] == v[order[i]]:
            j += 1
        out[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return out


def spearman(a, b) -> float:
    """Spearman's rho: the Pearson correlation of the ranks (NaN when either side is constant
    or there are fewer than three pairs)."""
    if len(a) != len(b):
        raise ValueError(f"spearman needs pairs: {len(a)} values against {len(b)}")
    if len(a) < 3:
        return math.nan
    ra, rb = ranks(a), ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return math.nan
    return float(np.corrcoef(ra, rb)[0, 1])


def correlation_verdict(rho: float, n: int) -> str:
    """"survives" (resolved positive), "reverses" (resolved negative) or "not resolved",
    by t = rho sqrt((n - 2) / (1 - rho^2)) against T_CRITICAL."""
    if not math.isfinite(rho) or n < 3:
        return claims.OPEN
    if abs(rho) >= 1:
        return "survives" if rho > 0 else "reverses"
    t = rho * math.sqrt((n - 2) / (1 - rho ** 2))
    return "survives" if t > T_CRITICAL else "reverses" if t < -T_CRITICAL else claims.OPEN


def _searched(records: Mapping[str, list], parents: Mapping[str, list], loss: str) -> list[str]:
    return [k for k, recs in records.items()
            if recs[0].config.loss == loss and recs[0].config.architecture == "searched"
            and k in parents]


def rank_correlation(records: Mapping[str, list], parents: Mapping[str, list],
                     loss: str) -> dict:
    """Spearman's rho between search-phase and retrained accuracy under `loss`: over the methods
    (their means over seeds) and over the single runs (each search run and its retraining)."""
    keys = _searched(records, parents, loss)
    method_search = [float(np.mean([search_accuracy(p) for p in parents[k]])) for k in keys]
    method_retrained = [float(np.mean([100 * r.eval["acc"] for r in records[k]])) for k in keys]
    run_search = [search_accuracy(p) for k in keys for p in parents[k]]
    run_retrained = [100 * r.eval["acc"] for k in keys for r in records[k]]
    rho_methods = spearman(method_search, method_retrained)
    rho_runs = spearman(run_search, run_retrained)
    return {"loss": loss, "rho_methods": rho_methods, "n_methods": len(keys),
            "verdict_methods": correlation_verdict(rho_methods, len(keys)),
            "rho_runs": rho_runs, "n_runs": len(run_search),
            "verdict_runs": correlation_verdict(rho_runs, len(run_search))}


# ---- the chapter's conclusions


def _accs(records, key) -> list[float]:
    return [100 * r.eval["acc"] for r in records.get(key, [])]


def _words(comparison: claims.Comparison) -> str:
    """'above' / 'below' (resolved by the 2-SE rule) or 'not distinguishable from'."""
    return {claims.HOLDS: "above", claims.FAILS: "below"}.get(comparison.verdict(),
                                                             "not distinguishable from")


def conclusions(records: Mapping[str, list], parents: Mapping[str, list]) -> dict:
    """Every value the closing text glues (plain Python numbers and strings, which glue can
    format), by name with the loss's tag as suffix (_ce, _la):

    best_<tag> / best_acc_<tag>: the searched genotype with the best retrained mean;
    search_best_<tag>: the method the search phase ranks first; same_best_<tag>: "the same"
    or "not the same"; rho_methods_<tag>, rho_runs_<tag> and their verdicts;
    hls_<tag>, darts_<tag>, hls_vs_darts_<tag> ("above" / "below" / "not distinguishable
    from", by the claims' 2-SE rule); searched_<tag> (mean over every searched run),
    random_<tag>, resnet_<tag>, searched_vs_random_<tag>, best_vs_resnet_<tag>;
    and la_gain (logit adjustment minus cross-entropy, mean over the searched runs, paired),
    la_gain_tail, la_gain_verdict."""
    out: dict = {}
    for loss in LOSSES:
        tag = LOSS_TAGS[loss]
        keys = _searched(records, parents, loss)
        if not keys:
            continue
        means = {k: float(np.mean(_accs(records, k))) for k in keys}
        search_means = {k: float(np.mean([search_accuracy(p) for p in parents[k]]))
                        for k in keys}
        best = max(means, key=means.get)
        search_best = max(search_means, key=search_means.get)
        out[f"best_{tag}"] = source_label(records[best][0].config.source)
        out[f"best_acc_{tag}"] = means[best]
        out[f"search_best_{tag}"] = source_label(records[search_best][0].config.source)
        out[f"same_best_{tag}"] = "the same" if best == search_best else "not the same"
        corr = rank_correlation(records, parents, loss)
        for name in ("rho_methods", "rho_runs", "verdict_methods", "verdict_runs",
                     "n_methods", "n_runs"):
            out[f"{name}_{tag}"] = corr[name]
        by_source = {records[k][0].config.source: k for k in records
                     if records[k][0].config.loss == loss}
        searched_runs = [a for k in keys for a in _accs(records, k)]
        out[f"searched_{tag}"] = float(np.mean(searched_runs))
        if "hls" in by_source and "darts" in by_source:
            c = claims.compare(_accs(records, by_source["hls"]),
                               _accs(records, by_source["darts"]))
            out[f"hls_{tag}"], out[f"darts_{tag}"] = float(c.mean_a), float(c.mean_b)
            out[f"hls_vs_darts_{tag}"] = _words(c)
        for baseline in experiments.RETRAIN_BASELINES:
            if baseline in by_source:
                out[f"{baseline}_{tag}"] = float(np.mean(_accs(records, by_source[baseline])))
        if "random" in by_source:
            c = claims.compare(searched_runs, _accs(records, by_source["random"]))
            out[f"searched_vs_random_{tag}"] = _words(c)
        if "resnet" in by_source:
            c = claims.compare(_accs(records, best), _accs(records, by_source["resnet"]))
            out[f"best_vs_resnet_{tag}"] = _words(c)
    ce, la = _searched(records, parents, "ce"), _searched(records, parents, "logit_adjusted")
    if ce and la:   # the same genotypes under both losses, run by run
        pairs_ce = {(r.config.source, r.config.seed): r for k in ce for r in records[k]}
        pairs_la = {(r.config.source, r.config.seed): r for k in la for r in records[k]}
        common = sorted(pairs_ce.keys() & pairs_la.keys())
        c = claims.compare([100 * pairs_la[p].eval["acc"] for p in common],
                           [100 * pairs_ce[p].eval["acc"] for p in common], paired=True)
        out["la_gain"] = float(c.diff)
        out["la_gain_verdict"] = {claims.HOLDS: "helps", claims.FAILS: "hurts"}.get(
            c.verdict(), "makes no resolved difference")
        out["la_gain_tail"] = float(np.mean([100 * (pairs_la[p].eval["groups"]["tail"] -
                                                    pairs_ce[p].eval["groups"]["tail"])
                                             for p in common]))
    return out
