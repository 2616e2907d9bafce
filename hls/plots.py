"""One function per figure and table of the book; they draw run records and never train.

Inputs are `hls.runs.RunRecord`s: one record, a list of records (the seeds of one method), or a
dict {method or label: [records]}. Tables are pandas DataFrames (numbers in %, formatted for the
page; `summary` keeps the plain floats), figures are matplotlib Figures built without pyplot, so
a notebook shows each exactly once by leaving it as a cell's last expression.

Every figure says where its numbers come from (profile and device) in its title; `provenance`
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
import pandas as pd
from matplotlib.figure import Figure

from . import experiments as E
from .schedules import hls_factor, mixing_ratio

# sphinx-book-theme 1.3 shows a cell output at most 688 px wide in a 1280 px window (measured in
# headless Chromium); tests/test_browser.py checks that no figure is shrunk below legibility.
DPI = 100
WIDTH = 6.8          # inches: 680 px at DPI
FONT_PT = 9          # the smallest text in a figure: 12.5 px at DPI, unshrunk

SMOKE_WARNING = "smoke profile: these numbers mean nothing, they only show that the code runs"

COMPONENT_TITLES = {
    "backbone_normal": "backbone, normal cell",
    "backbone_reduce": "backbone, reduction cell",
    "head_ins": "instance-sampling head",
    "head_cls": "class-sampling head",
    "head_main": "classifier head",
}
COMPONENT_ORDER = list(COMPONENT_TITLES)


# ---------------------------------------------------------------------------------------------
# Helpers: records, labels, where numbers come from


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
    return E.LABELS.get(method, method)


def infer_profile(records) -> str:
    """The profile whose fields every record's config matches, else the closest one + "(modified)"."""
    recs = [r for r in flatten(records)]
    if not recs:
        return "no runs"
    best, best_score = None, -1
    for name, p in E.PROFILES.items():
        fields = {k: v for k, v in p["fields"].items() if k != "epochs"}
        score = sum(all(_same(getattr(r.config, k), v) for r in recs) for k, v in fields.items())
        if score == len(fields) and score > best_score:
            best, best_score = name, score
    if best is not None:
        return best
    # no profile matches exactly: the nearest one, marked
    scores = {name: sum(all(_same(getattr(r.config, k), v) for r in recs)
                        for k, v in p["fields"].items()) / len(p["fields"])
              for name, p in E.PROFILES.items()}
    return f"{max(scores, key=scores.get)} (modified)"


def _same(a, b) -> bool:
    if isinstance(a, (list, tuple)) or isinstance(b, (list, tuple)):
        return tuple(a) == tuple(b)
    return a == b


def devices(records) -> str:
    names = []
    for r in flatten(records):
        name = r.facts.get("device_name") or r.facts.get("device") or "unknown device"
        if name not in names:
            names.append(name)
    return "; ".join(names) or "no device"


def origin(records, profile: str | None = None) -> str:
    """'profile smoke, <device>': the line every figure's title ends with."""
    profile = profile or infer_profile(records)
    return f"profile {profile}, {devices(records)}"


def seeds(records) -> list[int]:
    return sorted({r.config.seed for r in flatten(records)})


def provenance_table(records, profile: str | None = None) -> pd.DataFrame:
    """Profile, device, seeds, compute time and commit of every run a chapter shows."""
    recs = flatten(records)
    profile = profile or infer_profile(recs)
    p = E.PROFILES.get(profile.split(" ")[0], {})
    commits = sorted({str(r.facts.get("git_commit") or "not in git") for r in recs})
    torches = sorted({str(r.facts.get("torch", "?")) for r in recs})
    wall = sum(float(r.facts.get("wall_seconds", 0.0)) for r in recs)
    finished = sorted(str(r.facts.get("finished", "")) for r in recs)
    rows = {
        "profile": f"{profile}: {p['why']}" if p else profile,
        "device": devices(recs),
        "seeds": ", ".join(map(str, seeds(recs))) or "none",
        "data seed": ", ".join(sorted({str(getattr(r.config, "data_seed", "?")) for r in recs})),
        "runs": f"{len(recs)} ({', '.join(sorted({r.method for r in recs}))})",
        "total compute time": _duration(wall),
        "git commit": ", ".join(commits),
        "reproduced by this code": _reproducible(recs),
        "torch": ", ".join(torches),
        "finished": f"{finished[0]} to {finished[-1]}" if finished else "",
    }
    return pd.DataFrame({"value": list(rows.values())}, index=pd.Index(list(rows), name="provenance"))


def _reproducible(recs) -> str:
    """Whether the current code would make these records: the same code fingerprint and hls
    version (`python -m hls verify` retrains and checks). Search and retraining runs have
    fingerprints of their own sources."""
    from .runs import current_fingerprint, record_kind, reproducible_here
    kinds = sorted({record_kind(r) for r in recs}, reverse=True)    # search first
    here = ", ".join(f"{k} {current_fingerprint(k)}" if len(kinds) > 1 else current_fingerprint(k)
                     for k in kinds) or current_fingerprint()
    stale = [r for r in recs if not reproducible_here(r)]
    if not stale:
        return f"yes, all {len(recs)} (code fingerprint {here})"
    made_by = sorted({str(r.facts.get("code_fingerprint", "unknown")) for r in stale})
    return (f"NO for {len(stale)} of {len(recs)}: made by other code ({', '.join(made_by)}; "
            f"this checkout: {here}); python -m hls verify tells")


def provenance(records, profile: str | None = None) -> str:
    """Markdown: a loud warning for the smoke profile, then the provenance table."""
    recs = flatten(records)
    profile = profile or infer_profile(recs)
    table = provenance_table(recs, profile)
    lines = []
    if profile.split(" ")[0] == "smoke":
        lines += [":::{warning}", f"**{SMOKE_WARNING}.**", ":::", ""]
    lines += ["| provenance | |", "| --- | --- |"]
    lines += [f"| {k} | {_md(v)} |" for k, v in table["value"].items()]
    return "\n".join(lines) + "\n"


def made_by(records, profile: str | None = None, computed: str | None = None) -> str:
    """The sentence a caption ends with: which profile, device(s), seeds and commit(s) made the
    records it draws, e.g. 'Profile cpu on x86_64 CPU (1 torch threads); seeds 0, 1, 2; runs of
    commit 3e8afad, hls 0.2.0.' A record the current code would not reproduce is named as such.

    `computed` (no records): what drew the figure instead of a run, e.g. 'hls.schedules'.
    """
    recs = flatten(records)
    if not recs:
        if computed is None:
            raise ValueError("made_by needs the records the figure draws, or computed='what drew it' "
                             "for a figure made without runs")
        return f"Computed by {computed}; no run, no device."
    profile = profile or infer_profile(recs)
    seed_list = seeds(recs)
    commits = sorted({str(r.facts.get("git_commit") or "not in git") for r in recs})
    versions = sorted({str(r.facts.get("hls", "?")) for r in recs})
    text = (f"Profile {profile} on {devices(recs)}; "
            f"seed{'s' * (len(seed_list) != 1)} {', '.join(map(str, seed_list))}; "
            f"runs of commit{'s' * (len(commits) != 1)} {', '.join(commits)}, "
            f"hls {', '.join(versions)}")
    from .runs import reproducible_here
    stale = sum(not reproducible_here(r) for r in recs)
    if stale:
        text += f"; {stale} of {len(recs)} runs made by other code than this checkout's"
    return text + "."


def _md(text: str) -> str:
    return str(text).replace("|", "\\|")


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


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


def _style(k: int) -> dict:
    """Colour, marker and dash of the k-th line: runs that coincide stay distinguishable."""
    return {"color": f"C{k}", "marker": "osD^v<>"[k % 7], "ms": 4 + (k % 3),
            "ls": ["-", "--", "-.", ":"][k % 4], "mfc": "none" if k % 2 else None}


def _figure(width: float, height: float) -> Figure:
    if width > WIDTH + 1e-9:
        raise ValueError(f"a figure {width} in wide is shrunk on the page; draw it at most "
                         f"plots.WIDTH = {WIDTH} in wide (stack panels instead)")
    return Figure(figsize=(width, height), layout="constrained", dpi=DPI)


def _mean_std(values) -> tuple[float, float]:
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=float)
    if len(v) == 0:
        return float("nan"), float("nan")
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else float("nan")


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


# ---------------------------------------------------------------------------------------------
# Tables


def summary(records_by_method: Mapping[str, list], paper: Mapping[str, float] | None = None) -> pd.DataFrame:
    """Plain floats (percent) per method: means and stds of both headline numbers, groups, paper."""
    paper = E.PAPER_TABLE_II if paper is None else paper
    rows = []
    for method, recs in records_by_method.items():
        recs = flatten(recs)
        pp = _mean_std([100 * r.eval["paper_protocol"]["acc"] for r in recs])
        vc = _mean_std([100 * r.eval["val_chosen"]["acc"] for r in recs])
        vp = _mean_std([100 * r.eval["val_chosen_plain"]["acc"] for r in recs])
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
            row[g] = _mean_std(vals)[0]
        row["paper"] = float(paper[method]) if method in paper else float("nan")
        row["difference"] = row["paper_protocol"] - row["paper"]
        rows.append(row)
    return pd.DataFrame(rows).set_index("method")


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
        out[label(method)] = {g: fmt(*_mean_std([100 * r.eval["groups"][g] for r in recs]), digits=1)
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
            row[f"mu_test = {mu:g} (%)"] = fmt(*_mean_std(vals))
        row["best mu_test (%)"] = fmt(*_mean_std([100 * r.eval["paper_protocol"]["acc"] for r in recs]))
        row["val-chosen mu (%)"] = fmt(*_mean_std([100 * r.eval["val_chosen"]["acc"] for r in recs]))
        out[label(method)] = row
    table = pd.DataFrame.from_dict(out, orient="index")
    table.index.name = "method"
    return table


def mu_accuracy(records, mu: float) -> float:
    """Mean test accuracy (%) at one mu_test over the records (NaN for one-head methods)."""
    vals = [100 * r.eval["test_acc"][mu_index(r, mu)] for r in flatten(records) if r.eval.get("mu_grid")]
    return _mean_std(vals)[0]


def mu_index(record, mu: float) -> int:
    """Where mu_test = mu sits in a record's grid (the nearest grid point)."""
    grid = record.eval["mu_grid"]
    return int(np.argmin([abs(m - mu) for m in grid]))


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


# ---------------------------------------------------------------------------------------------
# Figures


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
        twin = ax.twinx()
        twin.plot(epochs, [e["mu"] for e in recs[0].history], color="0.5", ls="--", label="mu")
        twin.set_ylim(-0.05, 1.05)
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


def _components(record) -> list[str]:
    names = list(record.history[0]["alphas"])
    return sorted(names, key=lambda c: COMPONENT_ORDER.index(c) if c in COMPONENT_ORDER else 99)


def alpha_evolution(record, profile: str | None = None, title: str | None = None) -> Figure:
    """Figs. 3 and 7: softmax(alpha) per op, averaged over a cell's edges, against epoch.

    One panel per component (backbone normal, backbone reduce, instance head, class head);
    the mixing ratio mu is the grey dashed line.
    """
    comps = _components(record)
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
        twin = ax.twinx()
        twin.plot(epochs, [e["mu"] for e in record.history], color="0.5", ls="--", lw=1, label="mu (right axis)")
        twin.set_ylim(-0.05, 1.05)
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


def alpha_change(record, component: str) -> list[float]:
    """Mean |softmax(alpha)_e - softmax(alpha)_{e-1}| for epochs 2..T of one component."""
    w = np.array([e["alphas"][component] for e in record.history], dtype=float)
    return [float(x) for x in np.abs(np.diff(w, axis=0)).mean(axis=(1, 2))]


def drift_table(record) -> pd.DataFrame:
    """alpha_change of every component (columns) for epochs 2..T (rows), one record."""
    comps = _components(record)
    table = pd.DataFrame({COMPONENT_TITLES.get(c, c): alpha_change(record, c) for c in comps},
                         index=pd.Index(range(2, len(record.history) + 1), name="epoch"))
    return table.round(5)


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


def schedules_figure(T: int = 50, taus=(1.0, E.TAU, 20.0), ks=(5.0, E.K, 20.0)) -> Figure:
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
                  lw=2 if tau == E.TAU else 1, label=f"HLS factor, tau = {tau:g}")
    ax_p.set(title="parabolic mu = 1 - (t/T)^2 (BBN, Alg. 1)", ylabel="weight")
    for k in ks:
        mu_rs = [mixing_ratio("reverse_sigmoid", ti, T, k) for ti in t]
        line, = ax_rs.plot(x, mu_rs, lw=2 if k == E.K else 1, label=f"mu, reverse sigmoid k = {k:g}")
        ax_rs.plot(x, [hls_factor(m, E.TAU) for m in mu_rs], ls="--", color=line.get_color(),
                   lw=2 if k == E.K else 1, label=f"HLS factor (tau = {E.TAU:g}), k = {k:g}")
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
            for comp in _components(recs[0]):
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
            twin = ax.twinx()
            mu = [e["mu"] for e in recs[0].history]
            twin.plot(epochs, mu, color="0.4", ls="--", label="mu")
            twin.plot(epochs, 1 - np.array(mu), color="0.7", ls="--", label="1 - mu")
            twin.set_ylim(-0.05, 1.05)
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


PREDICTION = {"backbone_normal": "flat", "backbone_reduce": "flat", "head_ins": "follows mu",
              "head_cls": "follows 1 - mu", "head_main": "flat"}


def theorem1_table(records_by_label: Mapping[str, object]) -> pd.DataFrame:
    """Per run and component: gradient norm in the first and last epoch, their ratio, and the
    correlation of the norm with mu over epochs (Theorem 1: heads +1 / -1, backbone ~ 0); the
    same ratio and correlation for the size of Adam's update."""
    rows = []
    for name, recs in records_by_label.items():
        recs = flatten(recs)
        for comp in _components(recs[0]):
            g = np.array([[e["arch_grad_norm"][comp] for e in r.history] for r in recs], dtype=float).mean(0)
            u = np.array([[e["arch_update_norm"][comp] for e in r.history] for r in recs], dtype=float).mean(0)
            mu = np.array([e["mu"] for e in recs[0].history], dtype=float)
            rows.append({"run": name, "component": COMPONENT_TITLES.get(comp, comp),
                         "Theorem 1": PREDICTION.get(comp, ""),
                         "first epoch": float(g[0]), "last epoch": float(g[-1]),
                         "last / first": float(g[-1] / g[0]) if g[0] > 0 else float("nan"),
                         "corr(norm, mu)": _corr(g, mu),
                         "update last / first": float(u[-1] / u[0]) if u[0] > 0 else float("nan"),
                         "corr(update, mu)": _corr(u, mu)})
    return pd.DataFrame(rows).set_index(["run", "component"]).round(4)


def _corr(a, b) -> float:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(a) < 2 or a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def tau_table(records_by_tau: Mapping[float, list]) -> pd.DataFrame:
    """HLS accuracy (%) against tau, both headline numbers, mean ± std over seeds."""
    rows = {}
    for tau, recs in sorted(records_by_tau.items()):
        recs = flatten(recs)
        rows[f"{tau:g}"] = {
            "seeds": len(recs),
            "HLS factor at mu = 0.5": round(hls_factor(0.5, tau), 3),
            "paper protocol (%)": fmt(*_mean_std([100 * r.eval["paper_protocol"]["acc"] for r in recs])),
            "val-chosen mu (%)": fmt(*_mean_std([100 * r.eval["val_chosen"]["acc"] for r in recs])),
            "chosen mu": ", ".join(f"{r.eval['val_chosen']['mu']:.1f}" for r in recs),
        }
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "tau"
    return table


def tau_sensitivity(records_by_tau: Mapping[float, list], profile: str | None = None) -> Figure:
    """Accuracy against tau (log axis; mean ± std over seeds) beside the factors those taus give."""
    taus = sorted(records_by_tau)
    fig = _figure(WIDTH, 6.4)
    ax, ax_f = fig.subplots(2, 1)
    for key, text, color in (("paper_protocol", "paper protocol (best mu_test on test)", "C0"),
                             ("val_chosen", "validation-chosen mu_test", "C1")):
        stats = [_mean_std([100 * r.eval[key]["acc"] for r in flatten(records_by_tau[t])]) for t in taus]
        m = np.array([s[0] for s in stats])
        sd = np.nan_to_num(np.array([s[1] for s in stats]))
        ax.errorbar(taus, m, yerr=sd, marker="o", capsize=3, color=color, label=text)
    ax.axvline(E.TAU, color="0.6", ls=":", label=f"default tau = {E.TAU:g}")
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

    comps = _components(record)
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



# ---------------------------------------------------------------------------------------------
# Chapter 6: the derived cells trained from scratch (hls.retrain, hls.retrain_summary)


def retrain_table(records: Mapping[str, list], parents: Mapping[str, list], loss: str) -> pd.DataFrame:
    """One loss: retrained test accuracy (%) of every Table II method's genotypes, the random
    cells and ResNet, mean ± std over seeds, with size, groups and the search-phase accuracy of
    the same runs; the literature's ResNet-32 number beside ResNet."""
    from .retrain_summary import summary
    s = summary({k: v for k, v in records.items() if flatten(v)[0].config.loss == loss}, parents)
    literature = E.LITERATURE_RESNET32.get(loss)
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
