"""One function per table of the book: pandas DataFrames of run records, numbers in % formatted
for the page (hls.page glues them as MyST tables; `python -m hls table` prints Table II)."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pandas as pd

from . import experiments
from .schedules import hls_factor
from .summaries import (COMPONENT_TITLES, accuracy_mean_std, alpha_change, components, correlation,
                        flatten, fmt, label, mean_std, mu_index, summary)


def accuracy_table(records_by_method: Mapping[str, list], paper: Mapping[str, float] | None = None) -> pd.DataFrame:
    """Tables I and II: one row per method, test accuracy in %, mean ± std over seeds.

    'paper protocol': the best mu_test chosen on the test set (what the paper reports);
    'val-chosen mu': mu_test chosen on the validation split, then measured once on test.
    """
    s = summary(records_by_method, paper)
    table = pd.DataFrame({
        "seeds": s["seeds"].astype(int).to_numpy(),
        "paper protocol (%)": [fmt(m, d) for m, d in zip(s["paper_protocol"], s["paper_protocol_std"])],
        "val-chosen mu (%)": [fmt(m, d) for m, d in zip(s["val_chosen"], s["val_chosen_std"])],
        "chosen mu": s["chosen_mus"].to_numpy(),
        "head (%)": [fmt(v, digits=1) for v in s["head"]],
        "middle (%)": [fmt(v, digits=1) for v in s["middle"]],
        "tail (%)": [fmt(v, digits=1) for v in s["tail"]],
        "paper (%)": [fmt(v) if math.isfinite(v) else "not in paper" for v in s["paper"]],
        "ours - paper": [f"{v:+.2f}" if math.isfinite(v) else "–" for v in s["difference"]],
    }, index=pd.Index(s["label"], name="method"))
    return table


def protocol_table(records_by_method: Mapping[str, list]) -> pd.DataFrame:
    """What choosing mu_test on the test set is worth, for the two-head methods: the paper's
    protocol beside the honest choice on validation by balanced accuracy, and the choice by
    plain validation accuracy (which the long-tailed split tilts towards the head classes)."""
    s = summary({m: r for m, r in records_by_method.items() if flatten(r)[0].eval.get("mu_grid")})
    rows = {}
    for method, row in s.iterrows():
        recs = flatten(records_by_method[method])
        mus = lambda key: ", ".join(f"{r.eval[key]['mu']:.1f}" for r in recs)  # noqa: E731
        rows[row["label"]] = {
            "paper protocol (%)": fmt(row["paper_protocol"], row["paper_protocol_std"]),
            "its mu": mus("paper_protocol"),
            "val-chosen, balanced (%)": fmt(row["val_chosen"], row["val_chosen_std"]),
            "its mu ": mus("val_chosen"),
            "val-chosen, plain acc (%)": fmt(row["val_chosen_plain"], row["val_chosen_plain_std"]),
            "its mu  ": mus("val_chosen_plain"),
            "protocol's gain (points)": fmt(row["paper_protocol"] - row["val_chosen"]),
        }
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "method"
    return table


def per_class_table(records_by_method: Mapping[str, list]) -> pd.DataFrame:
    """Test accuracy (%) of every class at the validation-chosen mu, mean over seeds.

    Columns are the classes in order of training images (head first), named with their count.
    """
    rows, columns = {}, None
    for method, recs in records_by_method.items():
        recs = flatten(recs)
        first = recs[0].eval
        columns = [f"{c} ({n})" for c, n in zip(first["classes"], first["train_counts"])]
        rows[label(method)] = 100 * np.mean([r.eval["per_class"] for r in recs], axis=0)
    table = pd.DataFrame.from_dict(rows, orient="index", columns=columns)
    table.index.name = "method"
    counts = [int(c.rsplit("(", 1)[1][:-1]) for c in columns]
    return table[[columns[i] for i in np.argsort(counts, kind="stable")[::-1]]].round(1)


def group_table(records_by_method: Mapping[str, list]) -> pd.DataFrame:
    """Head / middle / tail thirds and many / medium / few-shot classes, accuracy (%) ± std."""
    out = {}
    for method, recs in records_by_method.items():
        recs = flatten(recs)
        groups = list(recs[0].eval["groups"])
        out[label(method)] = {g: fmt(*mean_std([100 * r.eval["groups"][g] for r in recs]), digits=1)
                              for g in groups}
    table = pd.DataFrame.from_dict(out, orient="index")
    table.index.name = "method"
    return table


def mu_table(records_by_method: Mapping[str, list], mus=(1.0, 0.5, 0.0)) -> pd.DataFrame:
    """Test accuracy (%) at chosen mu_test values: mu = 1 is the instance head alone, 0 the class head."""
    out = {}
    for method, recs in records_by_method.items():
        recs = flatten(recs)
        row = {}
        for mu in mus:
            vals = [100 * r.eval["test_acc"][mu_index(r, mu)] for r in recs if r.eval.get("mu_grid")]
            row[f"mu_test = {mu:g} (%)"] = fmt(*mean_std(vals))
        row["best mu_test (%)"] = fmt(*accuracy_mean_std(recs, "paper_protocol"))
        row["val-chosen mu (%)"] = fmt(*accuracy_mean_std(recs, "val_chosen"))
        out[label(method)] = row
    table = pd.DataFrame.from_dict(out, orient="index")
    table.index.name = "method"
    return table


def schedule_table(record) -> pd.DataFrame:
    """What the run actually used per epoch: mu, the HLS factor, weight lr and backbone arch lr."""
    h = record.history
    table = pd.DataFrame({
        "mu": [e["mu"] for e in h],
        "HLS factor": [e["hls_factor"] for e in h],
        "Eq. (17) factor": [hls_factor(e["mu"], record.config.hls_tau) for e in h],
        "weight lr": [e["lr"] for e in h],
        "backbone arch lr": [e["arch_lr_backbone"] for e in h],
    }, index=pd.Index([e["epoch"] for e in h], name="epoch"))
    return table.round(5)


def drift_table(record) -> pd.DataFrame:
    """alpha_change of every component (columns) for epochs 2..T (rows), one record."""
    comps = components(record)
    table = pd.DataFrame({COMPONENT_TITLES.get(c, c): alpha_change(record, c) for c in comps},
                         index=pd.Index(range(2, len(record.history) + 1), name="epoch"))
    return table.round(5)


PREDICTION = {"backbone_normal": "flat", "backbone_reduce": "flat", "head_ins": "follows mu",
              "head_cls": "follows 1 - mu", "head_main": "flat"}


def theorem1_table(records_by_label: Mapping[str, object]) -> pd.DataFrame:
    """Per run and component: gradient norm in the first and last epoch, their ratio, and the
    correlation of the norm with mu over epochs (Theorem 1: heads +1 / -1, backbone ~ 0); the
    same ratio and correlation for the size of Adam's update."""
    rows = []
    for name, recs in records_by_label.items():
        recs = flatten(recs)
        for comp in components(recs[0]):
            g = np.array([[e["arch_grad_norm"][comp] for e in r.history] for r in recs], dtype=float).mean(0)
            u = np.array([[e["arch_update_norm"][comp] for e in r.history] for r in recs], dtype=float).mean(0)
            mu = np.array([e["mu"] for e in recs[0].history], dtype=float)
            rows.append({"run": name, "component": COMPONENT_TITLES.get(comp, comp),
                         "Theorem 1": PREDICTION.get(comp, ""),
                         "first epoch": float(g[0]), "last epoch": float(g[-1]),
                         "last / first": float(g[-1] / g[0]) if g[0] > 0 else float("nan"),
                         "corr(norm, mu)": correlation(g, mu),
                         "update last / first": float(u[-1] / u[0]) if u[0] > 0 else float("nan"),
                         "corr(update, mu)": correlation(u, mu)})
    return pd.DataFrame(rows).set_index(["run", "component"]).round(4)


def tau_table(records_by_tau: Mapping[float, list]) -> pd.DataFrame:
    """HLS accuracy (%) against tau, both headline numbers, mean ± std over seeds."""
    rows = {}
    for tau, recs in sorted(records_by_tau.items()):
        recs = flatten(recs)
        rows[f"{tau:g}"] = {
            "seeds": len(recs),
            "HLS factor at mu = 0.5": round(hls_factor(0.5, tau), 3),
            "paper protocol (%)": fmt(*accuracy_mean_std(recs, "paper_protocol")),
            "val-chosen mu (%)": fmt(*accuracy_mean_std(recs, "val_chosen")),
            "chosen mu": ", ".join(f"{r.eval['val_chosen']['mu']:.1f}" for r in recs),
        }
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "tau"
    return table


def retrain_table(records: Mapping[str, list], parents: Mapping[str, list], loss: str) -> pd.DataFrame:
    """One loss: retrained test accuracy (%) of every Table II method's genotypes, the random
    cells and ResNet, mean ± std over seeds, with size, groups and the search-phase accuracy of
    the same runs; the literature's ResNet-32 number beside ResNet."""
    from .retrain_summary import summary
    s = summary({k: v for k, v in records.items() if flatten(v)[0].config.loss == loss}, parents)
    literature = experiments.LITERATURE_RESNET32.get(loss)
    table = pd.DataFrame({
        "seeds": s["seeds"].astype(int).to_numpy(),
        "retrained test acc (%)": [fmt(m, d) for m, d in zip(s["acc"], s["acc_std"])],
        "head (%)": [fmt(v, digits=1) for v in s["head"]],
        "middle (%)": [fmt(v, digits=1) for v in s["middle"]],
        "tail (%)": [fmt(v, digits=1) for v in s["tail"]],
        "many / medium / few (%)": [" / ".join(fmt(row[g], digits=1) for g in ("many", "medium", "few"))
                                    for _, row in s.iterrows()],
        "params (M)": [f"{v / 1e6:.3f}" for v in s["parameters"]],
        "MACs (M)": [f"{v / 1e6:.2f}" for v in s["multiply_adds"]],
        "search-phase acc (%)": [fmt(m, d) if math.isfinite(m) else "not searched"
                                 for m, d in zip(s["search_acc"], s["search_acc_std"])],
        "literature (%)": [f"{literature[1]:.2f}: {literature[0]}" if kind == "resnet" and literature else "–"
                           for kind in s["kind"]],
    }, index=pd.Index(s["label"], name="architecture"))
    return table


def rank_table(records: Mapping[str, list], parents: Mapping[str, list]) -> pd.DataFrame:
    """Does the supernet's ranking survive retraining? Spearman's rho between the search-phase
    accuracy and the retrained accuracy, over the methods (means) and over the single runs."""
    from .retrain import LOSSES
    from .retrain_summary import rank_correlation
    rows = {}
    for loss, name in LOSSES.items():
        c = rank_correlation(records, parents, loss)
        rows[name] = {"Spearman, methods": f"{c['rho_methods']:+.2f}" if math.isfinite(c["rho_methods"]) else "–",
                      "methods": c["n_methods"], "verdict (methods)": c["verdict_methods"],
                      "Spearman, runs": f"{c['rho_runs']:+.2f}" if math.isfinite(c["rho_runs"]) else "–",
                      "runs": c["n_runs"], "verdict (runs)": c["verdict_runs"]}
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "loss"
    return table
