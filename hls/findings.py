"""What chapters 1-5 conclude from their records: every number and verdict their closing text glues.

One function per chapter, each taking the records the chapter reads (hls.plan.chapter_records:
a key -> one RunRecord per seed) and returning {glued name: plain value} (float, int or str, which
glue can format), in the order the chapter glues them. A chapter's last code cell only glues what
its function returns; the comparisons, orderings and thresholds live here, under test
(tests/test_findings.py) on small hand-made records.

    motivation(runs)                 chapter 1: Table I's order, Fig. 2's loss, Fig. 4's mu_test
    method(runs)                     chapter 2: Eq. (17) as run, Theorem 1's verdict, the cells
    main_results(runs, by_length)    chapter 3: Table II, the protocol's worth, search lengths
    ablations(runs, by_tau)          chapter 4: scaled against unscaled, "settles more", best tau
    continued_training(runs)         chapter 5: the best continuation, which ones "forgot"

Accuracies are test accuracies in %. Chapter 6's conclusions are hls.retrain_summary's, chapter
7's verdicts hls.claims'. `KEYS` names, per function, the keys it returns ({method} and the like
stand for the run keys they are made with): tests/test_book.py checks the chapters' text
against it, tests/test_findings.py the functions.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from . import claims, experiments, lengths, summaries, tables
from .genotype import count_op

# Theorem 1 predicts the instance head's gradient norm to follow mu and the class head's to
# follow 1 - mu: a correlation with mu beyond +0.5 / below -0.5 counts as following (over a
# handful of epochs a correlation of 0.5 is a clear trend, not a perfect one).
THEOREM1_CORRELATION = 0.5
# A continuation whose instance head (mu_test = 1) lost more than this many points of test
# accuracy against its parent has "forgotten" it; the claims page's C7 uses the same number.
FORGETTING_POINTS = claims.FORGETTING_POINTS

KEYS = {
    "motivation": (
        "acc_{method}", "val_{method}", "paper_{method}", "order", "bbn_vs_darts",
        "bbn_mu0", "bbn_mu1", "bbn_best_mu", "fig4", "loss_rise", "loss_shape",
        "drift_bb", "drift_cls", "drift_ins"),
    "method": (
        "eq17_error", "last_factor", "last_mu", "tau", "corr_ins", "corr_cls", "corr_bb",
        "ratio_ins", "ratio_cls", "ratio_bb", "theorem_verdict", "upd_corr_cls",
        "upd_ratio_cls", "upd_corr_bb", "skips", "edges"),
    "main_results": (
        "pp_{method}", "vc_{method}", "tail_{method}", "paper_{method}", "diff_{method}",
        "best_pp", "best_vc", "n_seeds", "hls_vs_darts", "hls_vs_bbn", "protocol_gap",
        "plain_gap", "vp_hls", "best_bilateral_vc", "vc_best_single", "vc_best_bilateral",
        "mean_abs_diff", "n_lengths",
        *(f"{end}_{name}" for end in ("short", "long")
          for name in ("profile", "epochs", "seeds", "rs_gap", "hls_bbn_gap", "best"))),
    "ablations": (
        "n_mu", "n_better", "mean_gain", "pp_{method}", "vc_{method}", "drift_hls",
        "drift_bbn", "drift_verdict", "best_tau", "tau_spread", "taus"),
    "continued_training": (
        "pp_{method}", "vc_{method}", "ins_{method}", "cls_{method}", "best_ct",
        "best_vs_hls", "forgot", "epochs"),
    "claims_page": (
        "v_{claim}", "n_holds", "n_fails", "n_open", "n_absent", "n_profiles", "profiles",
        "acc_hls", "acc_darts", "n_seeds_table", "c3_numbers"),
}


def _per_method(summary, **columns) -> dict:
    """{<prefix>_<method>: float} for each prefix=column of a summaries.summary frame."""
    return {f"{prefix}_{m}": float(summary.loc[m, column])
            for m in summary.index for prefix, column in columns.items()}


def motivation(runs: Mapping[str, list]) -> dict:
    """Chapter 1 (DARTS, DARTS+Re-sampling, DARTS+BBN; Table I, Figs. 2-4).

    acc_<m>, val_<m>: mean test accuracy of method m, paper protocol / mu_test chosen on
    validation; paper_<m>: the paper's Table I; order: "holds" if DARTS > re-sampling >
    DARTS+BBN (paper protocol), as in the paper, else "does not hold"; bbn_vs_darts: words for
    DARTS+BBN minus DARTS (summaries.compare); bbn_mu0 / bbn_mu1: DARTS+BBN at mu_test = 0 / 1;
    bbn_best_mu: each seed's best mu_test; fig4: words for mu_test = 0 against 1; loss_rise:
    the largest epoch-to-epoch rise of DARTS+BBN's mean training loss (0 with one epoch),
    loss_shape: "rises at least once" if that is above 0, else "falls in every epoch";
    drift_bb / drift_cls / drift_ins: late alpha change of the backbone and of each head."""
    s = summaries.summary(runs, experiments.PAPER_TABLE_I)
    out = _per_method(s, acc="paper_protocol", val="val_chosen", paper="paper")
    pp = s["paper_protocol"]
    order = pp["darts"] > pp["darts_resample"] > pp["darts_bbn"]
    out["order"] = "holds" if order else "does not hold"
    out["bbn_vs_darts"] = summaries.compare(float(pp["darts_bbn"]), float(pp["darts"]))

    bbn = runs["darts_bbn"]
    mu0, mu1 = summaries.mu_accuracy(bbn, 0.0), summaries.mu_accuracy(bbn, 1.0)
    out["bbn_mu0"] = float(mu0)
    out["bbn_mu1"] = float(mu1)
    out["bbn_best_mu"] = ", ".join(f"{r.eval['paper_protocol']['mu']:.1f}" for r in bbn)
    out["fig4"] = summaries.compare(float(mu0), float(mu1))

    loss = np.mean([[e["train_loss"] for e in r.history] for r in bbn], axis=0)
    rise = np.diff(loss)
    out["loss_rise"] = float(rise.max()) if len(rise) else 0.0
    out["loss_shape"] = "rises at least once" if len(rise) and rise.max() > 0 else "falls in every epoch"
    out["drift_bb"] = summaries.late_drift(bbn, "backbone")
    out["drift_cls"] = summaries.late_drift(bbn, "head_cls")
    out["drift_ins"] = summaries.late_drift(bbn, "head_ins")
    return out


def method(runs: Mapping[str, list]) -> dict:
    """Chapter 2 (the HLS run's schedule, Theorem 1 on DARTS+BBN, the cells HLS derives).

    eq17_error: the largest gap between the HLS factor the run applied and Eq. (17);
    last_factor / last_mu: the factor and mu of its last epoch; tau: its tau;
    corr_<c> / ratio_<c> (c: ins, cls, bb = instance head, class head, normal backbone cell):
    DARTS+BBN's correlation of the architecture gradient norm with mu, and its last / first
    epoch ratio (tables.theorem1_table); theorem_verdict: "as Theorem 1 predicts" if corr_ins
    is above THEOREM1_CORRELATION and corr_cls below minus it, else "not as Theorem 1
    predicts"; upd_corr_cls, upd_ratio_cls, upd_corr_bb: the same for the size of Adam's
    update; skips / edges: skip connections and edges in the HLS run's (seed 0) genotype."""
    hls_run = runs["hls"][0]
    sched = tables.schedule_table(hls_run)
    out: dict = {
        "eq17_error": float((sched["HLS factor"] - sched["Eq. (17) factor"]).abs().max()),
        "last_factor": float(sched["HLS factor"].iloc[-1]),
        "last_mu": float(sched["mu"].iloc[-1]),
        "tau": float(hls_run.config.hls_tau),
    }
    t = tables.theorem1_table({"DARTS+BBN": runs["darts_bbn"], "HLS": runs["hls"]}).reset_index()

    def bbn(comp, column):
        row = t[(t["run"] == "DARTS+BBN") & (t["component"] == summaries.COMPONENT_TITLES[comp])]
        return float(row[column].iloc[0])

    for tag, comp in (("ins", "head_ins"), ("cls", "head_cls"), ("bb", "backbone_normal")):
        out[f"corr_{tag}"] = bbn(comp, "corr(norm, mu)")
    for tag, comp in (("ins", "head_ins"), ("cls", "head_cls"), ("bb", "backbone_normal")):
        out[f"ratio_{tag}"] = bbn(comp, "last / first")
    ok = out["corr_ins"] > THEOREM1_CORRELATION and out["corr_cls"] < -THEOREM1_CORRELATION
    out["theorem_verdict"] = "as Theorem 1 predicts" if ok else "not as Theorem 1 predicts"
    out["upd_corr_cls"] = bbn("head_cls", "corr(update, mu)")
    out["upd_ratio_cls"] = bbn("head_cls", "update last / first")
    out["upd_corr_bb"] = bbn("backbone_normal", "corr(update, mu)")
    out["skips"] = int(count_op(hls_run.genotype, "skip_connect"))
    out["edges"] = int(sum(len(node) for cell in hls_run.genotype.values() for node in cell))
    return out


def main_results(runs: Mapping[str, list], by_length: Mapping) -> dict:
    """Chapter 3 (Table II, the protocol's worth, the search lengths of hls.lengths).

    pp_<m>, vc_<m>, tail_<m>: method m's paper-protocol, validation-chosen and tail-class test
    accuracy; paper_<m> / diff_<m> (methods in the paper's Table II): its number and ours
    minus it; best_pp / best_vc: the label of the best method by each; n_seeds: the seeds
    seen; hls_vs_darts / hls_vs_bbn: words for HLS against DARTS / DARTS+BBN (paper protocol);
    protocol_gap: paper protocol minus validation-chosen, mean over the two-head methods;
    plain_gap: validation-chosen by balanced minus by plain validation accuracy, the same
    mean; vp_hls: HLS chosen by plain validation accuracy; best_bilateral_vc: the best
    two-head method, validation-chosen; vc_best_single / vc_best_bilateral: the best one-head
    / two-head validation-chosen accuracy; mean_abs_diff: mean |ours - paper|; n_lengths: the
    search lengths with runs, and for the shortest (short_) and longest (long_): profile,
    epochs, seeds, rs_gap (re-sampling minus DARTS), hls_bbn_gap (HLS minus DARTS+BBN), best."""
    s = summaries.summary(runs, experiments.PAPER_TABLE_II)
    out = _per_method(s, pp="paper_protocol", vc="val_chosen", tail="tail")
    for m in runs:
        if m in experiments.PAPER_TABLE_II:
            out[f"paper_{m}"] = float(experiments.PAPER_TABLE_II[m])
            out[f"diff_{m}"] = float(s.loc[m, "difference"])
    out["best_pp"] = summaries.label(str(s["paper_protocol"].idxmax()))
    out["best_vc"] = summaries.label(str(s["val_chosen"].idxmax()))
    out["n_seeds"] = len(summaries.seeds(runs))
    pp = s["paper_protocol"]
    out["hls_vs_darts"] = summaries.compare(float(pp["hls"]), float(pp["darts"]))
    out["hls_vs_bbn"] = summaries.compare(float(pp["hls"]), float(pp["darts_bbn"]))
    bilateral = [m for m in runs if runs[m][0].eval.get("mu_grid")]
    out["protocol_gap"] = float((s.loc[bilateral, "paper_protocol"] - s.loc[bilateral, "val_chosen"]).mean())
    out["plain_gap"] = float((s.loc[bilateral, "val_chosen"] - s.loc[bilateral, "val_chosen_plain"]).mean())
    out["vp_hls"] = float(s.loc["hls", "val_chosen_plain"])
    out["best_bilateral_vc"] = summaries.label(str(s.loc[bilateral, "val_chosen"].idxmax()))
    out["vc_best_single"] = max(float(s.loc[m, "val_chosen"]) for m in s.index if m not in bilateral)
    out["vc_best_bilateral"] = float(s.loc[bilateral, "val_chosen"].max())
    out["mean_abs_diff"] = float(s["difference"].abs().mean())

    found = lengths.length_findings(by_length)
    out["n_lengths"] = len(found)
    for name, f in (("short", found[0]), ("long", found[-1])):
        out[f"{name}_profile"] = f.profile
        out[f"{name}_epochs"] = f.epochs
        out[f"{name}_seeds"] = f.seeds
        out[f"{name}_rs_gap"] = f.resample_minus_darts
        out[f"{name}_hls_bbn_gap"] = f.hls_minus_bbn
        out[f"{name}_best"] = summaries.label(f.best)
    return out


def ablations(runs: Mapping[str, list], by_tau: Mapping[float, list]) -> dict:
    """Chapter 4 (Fig. 6's scaled against unscaled backbone lr, Fig. 7's alphas, tau).

    n_mu: the mu_test grid's size; n_better: the grid points where HLS's mean test accuracy
    is above DARTS+BBN's; mean_gain: HLS minus DARTS+BBN, mean over the grid; pp_<m>, vc_<m>:
    paper-protocol and validation-chosen accuracy of each method; drift_hls / drift_bbn: the
    backbone's late alpha change (summaries.late_drift); drift_verdict: "settles more" if HLS's is
    below DARTS+BBN's, else "does not settle more"; best_tau: the tau with the best mean
    paper-protocol accuracy, tau_spread: best minus worst over the taus; taus: the taus run."""
    hls_acc = 100 * np.mean([r.eval["test_acc"] for r in runs["hls"]], axis=0)
    bbn_acc = 100 * np.mean([r.eval["test_acc"] for r in runs["darts_bbn"]], axis=0)
    out: dict = {"n_mu": len(hls_acc), "n_better": int((hls_acc > bbn_acc).sum()),
                 "mean_gain": float((hls_acc - bbn_acc).mean())}
    out.update(_per_method(summaries.summary(runs), pp="paper_protocol", vc="val_chosen"))
    out["drift_hls"] = summaries.late_drift(runs["hls"], "backbone")
    out["drift_bbn"] = summaries.late_drift(runs["darts_bbn"], "backbone")
    out["drift_verdict"] = ("settles more" if out["drift_hls"] < out["drift_bbn"]
                            else "does not settle more")
    tau_pp = {tau: float(np.mean([r.eval["paper_protocol"]["acc"] for r in recs])) * 100
              for tau, recs in by_tau.items()}
    out["best_tau"] = float(max(tau_pp, key=tau_pp.get))
    out["tau_spread"] = float(max(tau_pp.values()) - min(tau_pp.values()))
    out["taus"] = ", ".join(f"{t:g}" for t in sorted(tau_pp))
    return out


def continued_training(runs: Mapping[str, list]) -> dict:
    """Chapter 5 (the HLS run, key "hls", and its continuations ct_*; Fig. 8).

    pp_<m>, vc_<m>: paper-protocol and validation-chosen accuracy; ins_<m> / cls_<m>: test
    accuracy at mu_test = 1 (instance head) / 0 (class head); best_ct: the label of the best
    continuation (paper protocol); best_vs_hls: words for it against the HLS run; forgot: the
    labels of the continuations whose instance head is more than FORGETTING_POINTS below the
    HLS run's, or "none of them"; epochs: the epochs of continued training (ct_mu05's)."""
    s = summaries.summary(runs, experiments.PAPER_TABLE_II)
    out = _per_method(s, pp="paper_protocol", vc="val_chosen")
    for m in runs:
        out[f"ins_{m}"] = float(summaries.mu_accuracy(runs[m], 1.0))
        out[f"cls_{m}"] = float(summaries.mu_accuracy(runs[m], 0.0))
    ct = [m for m in runs if m != "hls"]
    best = max(ct, key=lambda m: s.loc[m, "paper_protocol"])
    out["best_ct"] = summaries.label(best)
    out["best_vs_hls"] = summaries.compare(float(s.loc[best, "paper_protocol"]),
                                           float(s.loc["hls", "paper_protocol"]))
    ins_hls = summaries.mu_accuracy(runs["hls"], 1.0)
    forgot = [summaries.label(m) for m in ct
              if summaries.mu_accuracy(runs[m], 1.0) < ins_hls - FORGETTING_POINTS]
    out["forgot"] = ", ".join(forgot) if forgot else "none of them"
    out["epochs"] = int(runs["ct_mu05"][0].config.epochs)
    return out


def claims_page(verdicts: Mapping[str, list], profile: str, records: Mapping[str, list]) -> dict:
    """Chapter 7, "Does the paper hold?": `verdicts` {profile: [claims.Verdict]} in the page's
    column order, `records` the runs of `profile` (the page's own), by method.

    v_<claim>: the verdict at `profile` of each claim in claims.CLAIMS; n_holds / n_fails /
    n_open / n_absent: how many hold, fail, are not resolved, have no runs yet; n_profiles,
    profiles: the columns; acc_hls / acc_darts: mean paper-protocol test accuracy (%) over the
    seeds at hand, NaN without runs; n_seeds_table: HLS's seeds; c3_numbers: those numbers in
    words ("HLS 47.92 % against DARTS 33.98 % over 3 seeds", each method's seeds where they
    differ, or which runs are missing)."""
    mine = {v.claim: v.verdict for v in verdicts[profile]}
    out: dict = {f"v_{name}": mine[name] for name in claims.CLAIMS}
    for key, verdict in (("n_holds", claims.HOLDS), ("n_fails", claims.FAILS),
                         ("n_open", claims.OPEN), ("n_absent", claims.ABSENT)):
        out[key] = sum(v == verdict for v in mine.values())
    out["n_profiles"] = len(verdicts)
    out["profiles"] = ", ".join(verdicts)
    for method in ("hls", "darts"):   # NaN without runs
        out[f"acc_{method}"] = summaries.accuracy_mean_std(records.get(method, []))[0]
    out["n_seeds_table"] = len(records.get("hls", []))
    lacking = [summaries.label(m) for m in ("hls", "darts") if not records.get(m)]
    if lacking:
        out["c3_numbers"] = f"no {' or '.join(lacking)} runs yet"
        return out
    hls, darts = f"HLS {out['acc_hls']:.2f} %", f"DARTS {out['acc_darts']:.2f} %"
    n_hls, n_darts = _seeds(len(records["hls"])), _seeds(len(records["darts"]))
    out["c3_numbers"] = (f"{hls} against {darts} over {n_hls}" if n_hls == n_darts else
                         f"{hls} ({n_hls}) against {darts} ({n_darts})")
    return out


def _seeds(n: int) -> str:
    return f"{n} seed{'s' * (n != 1)}"
