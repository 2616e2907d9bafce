"""One function per figure of the book; they draw run records and never train.

Inputs are `hls.runs.RunRecord`s: one record, a list of records (the seeds of one method), or a
dict {method or label: [records]}. Figures are matplotlib Figures built without pyplot, so a
notebook shows each exactly once by leaving it as a cell's last expression; the tables are
hls.tables', the numbers they share hls.summaries', where they come from hls.provenance's.

Every figure says where its numbers come from (profile and device) in its title; hls.provenance
says it at the top of every chapter, loudly when the profile is `smoke`. On a chapter page the
caption says it instead (`made_by`, placed by `hls.page.figure`, which drops the title).

Figures are drawn for the page they land on: at most WIDTH inches wide at DPI, which is about
the width of the book's text column at a 1280 px window (so the browser does not shrink them),
and no text below FONT_PT points (`_legible`), about 12 px on the page.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
from matplotlib.figure import Figure

from . import experiments
from .provenance import origin
from .schedules import hls_factor, mixing_ratio
from .summaries import (COMPONENT_ORDER, COMPONENT_TITLES, accuracy_mean_std, alpha_change,
                        components, flatten, label, summary)
from .tables import per_class_table


# sphinx-book-theme 1.3 shows a cell output at most 688 px wide in a 1280 px window (measured in
# headless Chromium); tests/test_browser.py checks that no figure is shrunk below legibility.
DPI = 100
WIDTH = 6.8          # inches: 680 px at DPI
FONT_PT = 9          # the smallest text in a figure: 12.5 px at DPI, unshrunk


def _title(fig: Figure, text: str, records, profile: str | None) -> None:
    fig.suptitle(f"{text}\n({origin(records, profile)})", fontsize=FONT_PT + 1)
    _legible(fig)


def _legible(fig: Figure) -> Figure:
    """Raise every text of `fig` to at least FONT_PT points: tick labels, legends, annotations
    and the labels that hls.genotype draws, so a figure is readable at the page's width."""
    from matplotlib.text import Text
    for ax in fig.axes:
        # ticks made later, at draw time, take the axis' tick label size
        for axis in ("x", "y"):
            size = getattr(ax, f"{axis}axis").get_ticklabels()
            current = size[0].get_fontsize() if size else FONT_PT
            ax.tick_params(axis=axis, labelsize=max(FONT_PT, current))
    for text in fig.findobj(Text):
        if text.get_fontsize() < FONT_PT:
            text.set_fontsize(FONT_PT)
    return fig


def _integer_epochs(ax) -> None:
    """Whole-number epoch ticks, also when a short run has only one or two epochs."""
    from matplotlib.ticker import MaxNLocator
    lo, hi = ax.get_xlim()
    if hi - lo < 2:
        mid = (lo + hi) / 2
        ax.set_xlim(min(lo, mid - 1), max(hi, mid + 1))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _mu_axis(ax, epochs, history: list[dict], **line):
    """A right-hand axis from 0 to 1 with the epochs' mixing ratio mu as a dashed line (grey,
    labelled "mu" unless `line` says otherwise): the twin axis of the training-curve figures."""
    twin = ax.twinx()
    twin.plot(epochs, [e["mu"] for e in history], ls="--", **{"color": "0.5", "label": "mu", **line})
    twin.set_ylim(-0.05, 1.05)
    return twin


def _style(k: int) -> dict:
    """Colour, marker and dash of the k-th line: runs that coincide stay distinguishable."""
    return {"color": f"C{k}", "marker": "osD^v<>"[k % 7], "ms": 4 + (k % 3),
            "ls": ["-", "--", "-.", ":"][k % 4], "mfc": "none" if k % 2 else None}


def _figure(width: float, height: float) -> Figure:
    if width > WIDTH + 1e-9:
        raise ValueError(f"a figure {width} in wide is shrunk on the page; draw it at most "
                         f"plots.WIDTH = {WIDTH} in wide (stack panels instead)")
    return Figure(figsize=(width, height), layout="constrained", dpi=DPI)


def class_counts_figure(record, profile: str | None = None) -> Figure:
    """The long-tailed training split: images per class (log scale)."""
    ev = record.eval
    fig = _figure(WIDTH, 3.2)
    ax = fig.subplots()
    ax.bar(range(len(ev["classes"])), ev["train_counts"], color="tab:blue")
    ax.set_yscale("log")
    ax.set_xticks(range(len(ev["classes"])), ev["classes"], rotation=30, ha="right")
    ax.set_ylabel("training images (log)")
    for i, n in enumerate(ev["train_counts"]):
        ax.text(i, n, str(n), ha="center", va="bottom", fontsize=FONT_PT)
    ratio = max(ev["train_counts"]) / max(1, min(ev["train_counts"]))
    _title(fig, f"CIFAR-10-LT training split, {sum(ev['train_counts'])} images, "
                f"largest / smallest = {ratio:.0f}", record, profile)
    return fig


def training_curves(records, profile: str | None = None, title: str | None = None) -> Figure:
    """Fig. 2: train and validation loss and accuracy over epochs, mu on a twin axis.

    Several records (seeds): the mean, with the range across seeds shaded.
    """
    recs = flatten(records)
    fig = _figure(WIDTH, 6.4)
    ax_loss, ax_acc = fig.subplots(2, 1, sharex=True)
    epochs = [e["epoch"] for e in recs[0].history]
    series = {"loss": [("train_loss", "train"), ("val_loss", "validation")],
              "accuracy": [("train_acc", "train"), ("val_acc", "validation (mixed at mu)"),
                           ("val_bacc", "validation, balanced (mixed at mu)"),
                           ("val_acc_ins", "validation, instance head"),
                           ("val_acc_cls", "validation, class head")]}
    for ax, (name, keys) in zip((ax_loss, ax_acc), series.items()):
        for key, text in keys:
            if key not in recs[0].history[0]:
                continue
            values = np.array([[e.get(key, np.nan) for e in r.history] for r in recs], dtype=float)
            line, = ax.plot(epochs, values.mean(0), marker="o", ms=3, label=text,
                            ls="-" if key.endswith(("loss", "acc")) else
                            "--" if key == "val_bacc" else ":")
            if len(recs) > 1:
                ax.fill_between(epochs, values.min(0), values.max(0), color=line.get_color(), alpha=0.15)
        ax.set(ylabel=name)
        _integer_epochs(ax)
        twin = _mu_axis(ax, epochs, recs[0].history)
        twin.set_ylabel("mixing ratio mu", color="0.4")
        h1, l1 = ax.get_legend_handles_labels()
        h2, l2 = twin.get_legend_handles_labels()
        # beside the panel, not on it: five curves leave no empty corner
        ax.legend(h1 + h2, l1 + l2, loc="upper left", bbox_to_anchor=(1.2, 1.0), borderaxespad=0)
    ax_acc.set_xlabel("epoch")
    n = len(recs)
    _title(fig, title or f"Training curves of {label(recs[0].method)} "
                         f"({n} seed{'s' if n > 1 else ''}; shaded: range over seeds)", recs, profile)
    return fig


def alpha_evolution(record, profile: str | None = None, title: str | None = None) -> Figure:
    """Figs. 3 and 7: softmax(alpha) per op, averaged over a cell's edges, against epoch.

    One panel per component (backbone normal, backbone reduce, instance head, class head);
    the mixing ratio mu is the grey dashed line.
    """
    comps = components(record)
    prims = list(record.config.primitives)
    fig = _figure(WIDTH, 2.2 + 2.4 * math.ceil(len(comps) / 2))
    axes = np.atleast_1d(fig.subplots(math.ceil(len(comps) / 2), 2, sharex=True, squeeze=False)).ravel()
    epochs = [e["epoch"] for e in record.history]
    colors = {p: f"C{i}" for i, p in enumerate(prims)}
    for ax, comp in zip(axes, comps):
        w = np.array([e["alphas"][comp] for e in record.history], dtype=float)  # epoch x edge x op
        mean = w.mean(axis=1)
        for i, p in enumerate(prims):
            ax.plot(epochs, mean[:, i], marker="o", ms=3, color=colors[p], label=p)
        ax.set_title(COMPONENT_TITLES.get(comp, comp), fontsize=FONT_PT + 1)
        ax.set_ylabel("mean softmax(alpha)")
        ax.set_ylim(0, min(1.02, max(2.0 / len(prims), float(mean.max()) * 1.15)))
        _integer_epochs(ax)
        twin = _mu_axis(ax, epochs, record.history, lw=1, label="mu (right axis)")
        twin.tick_params(colors="0.4")
    for ax in axes[len(comps):]:
        ax.axis("off")
    for ax in axes[-2:]:
        ax.set_xlabel("epoch")
    handles, labels = axes[0].get_legend_handles_labels()
    h2, l2 = twin.get_legend_handles_labels()
    fig.legend(handles + h2, labels + l2, loc="outside lower center", ncol=3)
    _title(fig, title or f"Architecture weights over epochs, {label(record.method)} (seed {record.config.seed})",
           record, profile)
    return fig


def alpha_drift(records_by_label: Mapping[str, object], profile: str | None = None) -> Figure:
    """How much each component's architecture still moves: the mean absolute change of
    softmax(alpha) from one epoch to the next, per component, one line per run."""
    items = list(records_by_label.items())
    comps = [c for c in COMPONENT_ORDER if any(c in flatten(r)[0].history[0]["alphas"] for _, r in items)]
    rows = math.ceil(len(comps) / 2)
    fig = _figure(WIDTH, 1.2 + 2.3 * rows)
    axes = np.atleast_1d(fig.subplots(rows, 2, sharey=True, squeeze=False)).ravel()
    for ax in axes[len(comps):]:
        ax.axis("off")
    for ax, comp in zip(axes, comps):
        for k, (name, recs) in enumerate(items):
            drift = [alpha_change(r, comp) for r in flatten(recs) if comp in r.history[0]["alphas"]]
            if not drift:
                continue
            d = np.array(drift, dtype=float)
            epochs = list(range(2, d.shape[1] + 2))
            ax.plot(epochs, d.mean(0), **_style(k), label=name)
        ax.set_title(COMPONENT_TITLES.get(comp, comp), fontsize=FONT_PT + 1)
        ax.set_xlabel("epoch")
        _integer_epochs(ax)
    for ax in axes[::2]:
        ax.set_ylabel("mean |change|")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=min(3, len(labels)))
    _title(fig, "Architecture drift per epoch (epoch e vs e-1; mean over edges, ops and seeds)",
           flatten([r for _, r in items]), profile)
    return fig


def accuracy_vs_mu(records_by_label: Mapping[str, object], profile: str | None = None,
                   title: str = "Test accuracy against the test-time mixing ratio mu_test",
                   references: Mapping[str, object] | None = None) -> Figure:
    """Figs. 4, 6 and 8: test accuracy against mu_test, mean over seeds with the range shaded,
    each seed's validation-chosen mu marked (x). `references`: one-head methods drawn as
    horizontal lines (their accuracy does not depend on mu)."""
    fig = _figure(WIDTH, 4.4)
    ax = fig.subplots()
    everything = []
    for k, (name, recs) in enumerate(records_by_label.items()):
        recs = flatten(recs)
        everything += recs
        grid = recs[0].eval.get("mu_grid")
        if not grid:
            continue
        acc = 100 * np.array([r.eval["test_acc"] for r in recs], dtype=float)
        color = f"C{k}"
        ax.plot(grid, acc.mean(0), **_style(k), label=f"{name} ({len(recs)} seed{'s' * (len(recs) > 1)})")
        if len(recs) > 1:
            ax.fill_between(grid, acc.min(0), acc.max(0), color=color, alpha=0.15)
        for i, r in enumerate(recs):
            vc = r.eval["val_chosen"]
            ax.plot([vc["mu"]], [100 * vc["acc"]], marker="x", ms=9, mew=2, color=color, ls="none",
                    label="validation-chosen mu" if k == 0 and i == 0 else None)
    for j, (name, recs) in enumerate((references or {}).items()):
        recs = flatten(recs)
        everything += recs
        m = 100 * float(np.mean([r.eval["paper_protocol"]["acc"] for r in recs]))
        ax.axhline(m, color=f"C{len(records_by_label) + j}", ls=":", lw=1.5, label=f"{name} (one head)")
    ax.set(xlabel="mu_test (1: instance head only, 0: class head only)", ylabel="test accuracy (%)",
           xlim=(-0.03, 1.03))
    ax.legend(loc="best")
    _title(fig, title, everything, profile)
    return fig


def schedules_figure(T: int = 50, taus=(1.0, experiments.TAU, 20.0), ks=(5.0, experiments.K, 20.0)) -> Figure:
    """Fig. 5: the mixing ratio mu (= the instance weight) and the HLS factor 1 - exp(-tau mu)
    against the normalised epoch, for the parabolic and the reverse-sigmoid schedules."""
    t = np.arange(1, T + 1)
    x = t / T
    fig = _figure(WIDTH, 6.6)
    ax_p, ax_rs = fig.subplots(2, 1, sharex=True)
    mu = [mixing_ratio("parabolic", ti, T) for ti in t]
    ax_p.plot(x, mu, color="k", lw=2, label="mu = Ins Weight (parabolic)")
    ax_p.plot(x, 1 - np.array(mu), color="0.6", lw=1.5, label="1 - mu = Cls Weight")
    for tau in taus:
        ax_p.plot(x, [hls_factor(m, tau) for m in mu], ls="--",
                  lw=2 if tau == experiments.TAU else 1, label=f"HLS factor, tau = {tau:g}")
    ax_p.set(title="parabolic mu = 1 - (t/T)^2 (BBN, Alg. 1)", ylabel="weight")
    for k in ks:
        mu_rs = [mixing_ratio("reverse_sigmoid", ti, T, k) for ti in t]
        line, = ax_rs.plot(x, mu_rs, lw=2 if k == experiments.K else 1, label=f"mu, reverse sigmoid k = {k:g}")
        ax_rs.plot(x, [hls_factor(m, experiments.TAU) for m in mu_rs], ls="--", color=line.get_color(),
                   lw=2 if k == experiments.K else 1, label=f"HLS factor (tau = {experiments.TAU:g}), k = {k:g}")
    ax_rs.set(title="reverse sigmoid, Eq. (18)", xlabel="normalised epoch t/T", ylabel="weight")
    for ax in (ax_p, ax_rs):
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
        ax.grid(alpha=0.3)
    fig.suptitle(f"Fig. 5: mixing ratio and HLS factor, T = {T} (computed by hls.schedules; "
                 "no training, no device)", fontsize=FONT_PT + 1)
    return _legible(fig)


def gradient_norms(records_by_label: Mapping[str, object], profile: str | None = None) -> Figure:
    """Theorem 1 check: per component, the architecture gradient's norm (top row) and the size
    of the update Adam made of it (bottom row) over epochs, mean over seeds, one column per run,
    mu and 1 - mu on a twin axis. Adam divides by the gradient's running RMS, so a factor mu on
    a gradient need not reach the update."""
    items = list(records_by_label.items())
    fig = _figure(WIDTH, 7.6)
    axes = np.atleast_2d(fig.subplots(2, len(items), squeeze=False))
    rows = (("arch_grad_norm", "|d L_val / d alpha| (log)", "gradient"),
            ("arch_update_norm", "|alpha update| per step (log)", "Adam update"))
    for col, (name, recs) in enumerate(items):
        recs = flatten(recs)
        epochs = [e["epoch"] for e in recs[0].history]
        for row, (key, ylabel, what) in enumerate(rows):
            ax = axes[row, col]
            zeros = []
            for comp in components(recs[0]):
                g = np.array([[e[key][comp] for e in r.history] for r in recs], dtype=float).mean(0)
                zero = g <= 0      # e.g. the instance head at mu = 0: nothing to draw on a log axis
                ax.plot(epochs, np.where(zero, np.nan, g), marker="o", ms=3, color=_comp_color(comp),
                        label=COMPONENT_TITLES.get(comp, comp) + (" (v: exactly 0)" if zero.any() else ""))
                if zero.any():
                    zeros.append((comp, np.array(epochs)[zero]))
            ax.set_yscale("log")
            for comp, ep in zeros:     # exact zeros as markers on the bottom edge
                ax.plot(ep, np.full(len(ep), ax.get_ylim()[0]), marker="v", ms=8, ls="none",
                        color=_comp_color(comp), clip_on=False)
            ax.set(xlabel="epoch", ylabel=ylabel if col == 0 else None, title=f"{name}: {what}")
            _integer_epochs(ax)
            twin = _mu_axis(ax, epochs, recs[0].history, color="0.4")
            mu = np.array([e["mu"] for e in recs[0].history])
            twin.plot(epochs, 1 - mu, color="0.7", ls="--", label="1 - mu")
            if col == len(items) - 1:
                twin.set_ylabel("mixing ratio")
            else:
                twin.set_yticklabels([])
    # one legend for all panels: a component has the same colour in each; a triangle on the
    # bottom edge marks an epoch whose value is exactly 0 (nothing to draw on a log axis)
    from matplotlib.lines import Line2D
    legend = {}
    for ax in fig.axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(lab.split(" (v: exactly 0)")[0], h)
    legend["exactly 0 (bottom edge)"] = Line2D([], [], marker="v", ms=8, ls="none", color="0.3")
    fig.legend(list(legend.values()), list(legend), loc="outside lower center", ncol=2)
    _title(fig, "Theorem 1: architecture gradient norms and Adam's updates per component "
                "(prediction for the gradient: instance head ~ mu, class head ~ 1 - mu, backbone flat)",
           flatten([r for _, r in items]), profile)
    return fig


def _comp_color(comp: str) -> str:
    return {"backbone_normal": "C0", "backbone_reduce": "C1", "head_ins": "C2", "head_cls": "C3",
            "head_main": "C4"}.get(comp, "k")


def tau_sensitivity(records_by_tau: Mapping[float, list], profile: str | None = None) -> Figure:
    """Accuracy against tau (log axis; mean ± std over seeds) beside the factors those taus give."""
    taus = sorted(records_by_tau)
    fig = _figure(WIDTH, 6.4)
    ax, ax_f = fig.subplots(2, 1)
    for key, text, color in (("paper_protocol", "paper protocol (best mu_test on test)", "C0"),
                             ("val_chosen", "validation-chosen mu_test", "C1")):
        stats = [accuracy_mean_std(records_by_tau[t], key) for t in taus]
        m = np.array([s[0] for s in stats])
        sd = np.nan_to_num(np.array([s[1] for s in stats]))
        ax.errorbar(taus, m, yerr=sd, marker="o", capsize=3, color=color, label=text)
    ax.axvline(experiments.TAU, color="0.6", ls=":", label=f"default tau = {experiments.TAU:g}")
    ax.set_xscale("log")
    ax.set(xlabel="tau (log)", ylabel="test accuracy (%)", title="HLS accuracy against tau")
    ax.legend(loc="best")
    rec = flatten(records_by_tau[taus[0]])[0]
    T = rec.config.epochs
    t = np.linspace(0, T, 201)
    mu = [mixing_ratio(rec.config.mixing, ti, T, rec.config.mixing_k, rec.config.mixing_value) for ti in t]
    for tau in taus:
        ax_f.plot(t / T, [hls_factor(m, tau) for m in mu], label=f"tau = {tau:g}")
    ax_f.plot(t / T, mu, color="k", ls="--", label="mu")
    ax_f.set(xlabel="normalised epoch t/T", ylabel="backbone arch-lr factor",
             title="the factor each tau gives")
    ax_f.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    _title(fig, "Sensitivity to tau in Eq. (17)", flatten(list(records_by_tau.values())), profile)
    return fig


def genotype_figure(record, profile: str | None = None) -> Figure:
    """The final discrete cell of every component (two strongest inputs per node)."""
    from .genotype import draw_cell

    comps = components(record)
    fig = _figure(WIDTH, 1.9 * len(comps))
    axes = np.atleast_1d(fig.subplots(len(comps), 1, squeeze=False)).ravel()
    for ax, comp in zip(axes, comps):
        draw_cell(record.genotype[comp], ax=ax, title=COMPONENT_TITLES.get(comp, comp))
    for ax in axes[len(comps):]:
        ax.axis("off")
    _title(fig, f"Derived cells of {label(record.method)} (seed {record.config.seed}), "
                f"after epoch {record.history[-1]['epoch']}", record, profile)
    return fig


def headline_figure(records_by_method: Mapping[str, list], paper: Mapping[str, float] | None = None,
                    profile: str | None = None) -> Figure:
    """Table II as bars: ours (paper protocol and val-chosen mu, ± std) beside the paper."""
    s = summary(records_by_method, paper)
    x = np.arange(len(s))
    fig = _figure(WIDTH, 4.6)
    ax = fig.subplots()
    w = 0.27
    ax.bar(x - w, s["paper_protocol"], w, yerr=np.nan_to_num(s["paper_protocol_std"]), capsize=3,
           label="ours, paper protocol (best mu_test)")
    ax.bar(x, s["val_chosen"], w, yerr=np.nan_to_num(s["val_chosen_std"]), capsize=3,
           label="ours, validation-chosen mu_test")
    ax.bar(x + w, s["paper"].fillna(0), w, color="0.6", label="paper")
    for i, v in enumerate(s["paper"]):
        if not math.isfinite(v):
            ax.text(x[i] + w, 1, "n/a", ha="center", fontsize=FONT_PT, rotation=90)
    ax.set_xticks(x, s["label"], rotation=30, ha="right")
    ax.set_ylabel("test accuracy (%)")
    fig.legend(loc="outside lower center", ncol=2)
    _title(fig, "Table II as bars", flatten(list(records_by_method.values())), profile)
    return fig


def per_class_figure(records_by_method: Mapping[str, list], profile: str | None = None) -> Figure:
    """Per-class test accuracy at the validation-chosen mu, classes from head to tail."""
    table = per_class_table(records_by_method)
    fig = _figure(WIDTH, 5.0)
    ax = fig.subplots()
    for i, (name, row) in enumerate(table.iterrows()):
        ax.plot(range(len(row)), row.values, marker="o", ms=4, color=f"C{i}", label=name)
    ax.set_xticks(range(len(table.columns)), table.columns, rotation=35, ha="right")
    ax.set(ylabel="test accuracy (%)", xlabel="class (training images), head to tail")
    fig.legend(loc="outside lower center", ncol=3)
    _title(fig, "Per-class test accuracy at the validation-chosen mu (mean over seeds)",
           flatten(list(records_by_method.values())), profile)
    return fig


def branch_accuracy(records_by_label: Mapping[str, object], parent=None, profile: str | None = None) -> Figure:
    """Validation accuracy of the instance head and of the class head, epoch by epoch, for the
    run continued from (`parent`, drawn first) and each continued run after it (Sec. V.D)."""
    fig = _figure(WIDTH, 4.6)
    ax_ins, ax_cls = fig.subplots(1, 2, sharey=True)
    offset = 0
    everything = flatten(parent)
    if parent is not None:
        p = flatten(parent)
        ep = [e["epoch"] for e in p[0].history]
        for ax, key in ((ax_ins, "val_acc_ins"), (ax_cls, "val_acc_cls")):
            v = 100 * np.array([[e[key] for e in r.history] for r in p], dtype=float).mean(0)
            ax.plot(ep, v, color="k", marker="o", ms=3, label=f"{label(p[0].method)} (search)")
        offset = ep[-1]
    for k, (name, recs) in enumerate(records_by_label.items()):
        recs = flatten(recs)
        everything += recs
        ep = [offset + e["epoch"] for e in recs[0].history]
        for ax, key in ((ax_ins, "val_acc_ins"), (ax_cls, "val_acc_cls")):
            v = 100 * np.array([[e[key] for e in r.history] for r in recs], dtype=float).mean(0)
            if parent is not None:   # join the line to the parent's last epoch
                last = 100 * float(np.mean([r.history[-1][key] for r in flatten(parent)]))
                ep_, v = [offset] + ep, np.concatenate([[last], v])
            else:
                ep_ = ep
            ax.plot(ep_, v, marker="o", ms=3, color=f"C{k}", label=name)
    for ax, text in ((ax_ins, "instance head alone\n(mu = 1)"),
                     (ax_cls, "class head alone\n(mu = 0)")):
        if offset:
            ax.axvline(offset + 0.5, color="0.7", ls=":")
        ax.set(xlabel="epoch (search, then continued)", title=text)
        _integer_epochs(ax)
    ax_ins.set_ylabel("validation accuracy (%)")
    fig.legend(*ax_cls.get_legend_handles_labels(), loc="outside lower center", ncol=2)
    _title(fig, "Each head on the validation split during continued training (mean over seeds)",
           everything, profile)
    return fig


def retrain_scatter(records: Mapping[str, list], parents: Mapping[str, list],
                    profile: str | None = None) -> Figure:
    """Each search run's accuracy at the end of the search (paper protocol) against the accuracy
    of its genotype trained from scratch, one panel per loss; the random cells' and ResNet's
    means as lines."""
    from .retrain import LOSSES
    from .retrain_summary import search_accuracy, source_label
    fig = _figure(WIDTH, 4.0 * len(LOSSES))
    axes = fig.subplots(len(LOSSES), 1, sharex=True)
    for ax, (loss, name) in zip(np.atleast_1d(axes), LOSSES.items()):
        keys = [k for k, v in records.items() if flatten(v)[0].config.loss == loss]
        k_style = 0
        for key in keys:
            recs = flatten(records[key])
            config = recs[0].config
            if key in parents:
                x = [search_accuracy(p) for p in parents[key]]
                ax.plot(x, [100 * r.eval["acc"] for r in recs], **{**_style(k_style), "ls": "none"},
                        label=source_label(config.source))
                k_style += 1
            else:
                mean = float(np.mean([100 * r.eval["acc"] for r in recs]))
                ax.axhline(mean, color="0.3" if config.architecture == "random" else "0.6",
                           ls="--" if config.architecture == "random" else ":",
                           label=f"{source_label(config.source, config.resnet_depth)} (mean)")
        ax.set(xlabel="search-phase test accuracy (%, paper protocol)", title=name)
        ax.grid(alpha=0.3)
    for ax in np.atleast_1d(axes):
        ax.set_ylabel("retrained test accuracy (%)")
    panels = list(np.atleast_1d(axes))
    fullest = max(panels, key=lambda a: len(a.get_legend_handles_labels()[0]))
    if fullest.get_legend_handles_labels()[0]:
        fig.legend(*fullest.get_legend_handles_labels(), loc="outside lower center", ncols=2)
    _title(fig, "Does the supernet's ranking survive retraining? (one point per search run)",
           flatten(list(records.values())), profile)
    return fig


def retrained_cells_figure(records: Mapping[str, list], profile: str | None = None,
                           seed: int = 0) -> Figure:
    """The normal and reduction cells trained in chapter 6: each method's genotype at `seed`,
    and every random draw (ResNet has no cell)."""
    from .genotype import draw_cell
    from .retrain_summary import source_label
    shown, seen = [], set()
    for recs in records.values():
        for r in flatten(recs):
            key = (r.config.source, r.config.seed)
            if r.genotype is None or key in seen:
                continue
            if r.config.architecture == "random" or r.config.seed == seed:
                seen.add(key)
                shown.append((f"{source_label(r.config.source)} (seed {r.config.seed})", r.genotype))
    rows = max(len(shown), 1)
    fig = _figure(WIDTH, 1.9 * rows)
    axes = np.atleast_2d(fig.subplots(rows, 2, squeeze=False))
    for row, (name, genotype) in enumerate(shown):
        draw_cell(genotype["backbone_normal"], ax=axes[row, 0], title=f"{name}: normal")
        draw_cell(genotype["backbone_reduce"], ax=axes[row, 1], title=f"{name}: reduction")
    for ax in axes.ravel()[2 * len(shown):]:
        ax.axis("off")
    _title(fig, "The cells trained from scratch", flatten(list(records.values())), profile)
    return fig
