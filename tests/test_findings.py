"""What chapters 1-5 state (hls.findings), on small hand-made records: each verdict both ways."""

import math
import re
from types import SimpleNamespace

import numpy as np
import pytest

from hls import findings, lengths, schedules

GRID = [round(0.1 * i, 1) for i in range(11)]
COMPONENTS = ("backbone_normal", "backbone_reduce", "head_ins", "head_cls")
GENOTYPE = {"normal": [[["skip_connect", 0], ["sep_conv_3x3", 1]], [["skip_connect", 0], ["max_pool_3x3", 2]]],
            "reduce": [[["avg_pool_3x3", 0], ["skip_connect", 1]]]}


def correlated(r, n):
    """n values whose correlation with the mu schedule of `record` (1 down to 0) is exactly r."""
    mu = np.linspace(1.0, 0.0, n)
    u = mu - mu.mean()
    v = np.resize([1.0, -1.0], n) - np.resize([1.0, -1.0], n).mean()
    v = v - (v @ u) / (u @ u) * u             # the part of an alternation orthogonal to mu
    return list(10 + r * u / np.linalg.norm(u) + math.sqrt(1 - r * r) * v / np.linalg.norm(v))


def record(seed=0, acc=0.5, vc=None, plain=None, curve=None, tail=0.3, losses=(2.0, 1.5, 1.0),
           drift=0.0, grads=None, factor_error=0.0, tau=5.0, epochs=None):
    """A stand-in RunRecord. One head: test accuracy `acc` (fraction); two heads: `curve` over
    GRID (its maximum is the paper protocol). `vc` / `plain`: the validation-chosen accuracy by
    balanced / plain validation accuracy. History: an epoch per loss, mu from 1 down to 0, the
    alphas of every component moving by `drift` per epoch, gradient norms `grads`
    (component -> values; else flat), the HLS factor Eq. (17)'s plus `factor_error` in the last
    epoch."""
    if curve is not None:
        best = max(range(len(GRID)), key=lambda i: curve[i])
        ev = {"mu_grid": GRID, "test_acc": list(curve), "paper_protocol": {"mu": GRID[best], "acc": curve[best]}}
    else:
        ev = {"mu_grid": None, "test_acc": [acc], "paper_protocol": {"mu": 1.0, "acc": acc}}
    pp = ev["paper_protocol"]["acc"]
    vc = pp if vc is None else vc
    ev["val_chosen"] = {"mu": 0.5, "acc": vc}
    ev["val_chosen_plain"] = {"mu": 1.0, "acc": vc if plain is None else plain}
    ev["groups"] = {"head": 0.6, "middle": 0.45, "tail": tail}
    n = len(losses)
    mus = np.linspace(1.0, 0.0, n)
    grads = grads or {}
    history = []
    for e, (mu, loss) in enumerate(zip(mus, losses)):
        factor = schedules.hls_factor(float(mu), tau) + (factor_error if e == n - 1 else 0.0)
        history.append({
            "epoch": e + 1, "mu": float(mu), "train_loss": loss, "hls_factor": factor, "lr": 0.05,
            "arch_lr_backbone": 3e-4 * factor,
            "alphas": {c: [[0.5 + drift * e, 0.5 - drift * e]] for c in COMPONENTS},
            "arch_grad_norm": {c: grads.get(c, [1.0] * n)[e] for c in COMPONENTS},
            "arch_update_norm": {c: grads.get(c, [1.0] * n)[e] / 2 for c in COMPONENTS}})
    config = SimpleNamespace(seed=seed, hls_tau=tau, epochs=n if epochs is None else epochs)
    return SimpleNamespace(eval=ev, history=history, config=config, genotype=GENOTYPE, facts={})


def flat(level, mu1=None, mu0=None, **kw):
    """A two-head curve at `level` everywhere, but `mu1` at mu_test = 1 and `mu0` at 0."""
    curve = [level] * len(GRID)
    if mu0 is not None:
        curve[0] = mu0
    if mu1 is not None:
        curve[-1] = mu1
    return record(curve=curve, **kw)


def check_keys(name, out):
    """Every key is one KEYS[name] names, every name of it is returned, every value plain."""
    patterns = [re.compile("^" + re.sub(r"\{[^}]*\}", "[A-Za-z0-9_]+", k) + "$") for k in findings.KEYS[name]]
    assert all(any(p.match(k) for p in patterns) for k in out), [k for k in out if not any(p.match(k) for p in patterns)]
    assert all(any(p.match(k) for k in out) for p in patterns)
    assert all(type(v) in (float, int, str) for v in out.values()), {k: type(v) for k, v in out.items()}


# ---------------------------------------------------------------------------------------------
# Chapter 1


def motivation_runs(darts=0.60, resample=0.55, bbn=0.50, losses=(2.0, 1.5, 1.0), drift=0.01):
    return {"darts": [record(acc=darts)], "darts_resample": [record(acc=resample)],
            "darts_bbn": [flat(bbn - 0.05, mu0=bbn, mu1=bbn - 0.10, losses=losses, drift=drift)]}


@pytest.mark.parametrize("accs, order", [
    ((0.60, 0.55, 0.50), "holds"),             # the paper's order: DARTS > re-sampling > BBN
    ((0.55, 0.60, 0.50), "does not hold"),     # re-sampling above DARTS
    ((0.60, 0.50, 0.55), "does not hold"),     # BBN above re-sampling
    ((0.50, 0.55, 0.60), "does not hold")])    # reversed
def test_table1_order_holds_only_in_the_papers_order(accs, order):
    out = findings.motivation(motivation_runs(*accs))
    assert out["order"] == order


def test_motivation_states_table1_fig2_and_fig4():
    out = findings.motivation(motivation_runs())
    check_keys("motivation", out)
    assert out["acc_darts"] == pytest.approx(60.0) and out["acc_darts_bbn"] == pytest.approx(50.0)
    assert out["paper_darts"] == 64.0
    assert out["bbn_vs_darts"] == "10.0 points below"
    assert out["bbn_mu0"] == pytest.approx(50.0) and out["bbn_mu1"] == pytest.approx(40.0)
    assert out["bbn_best_mu"] == "0.0"
    assert out["fig4"] == "10.0 points above"                    # mu_test = 0 against 1
    assert out["drift_bb"] == pytest.approx(0.01) and out["drift_cls"] == pytest.approx(0.01)


@pytest.mark.parametrize("losses, rise, shape", [
    ((2.0, 1.5, 1.0), -0.5, "falls in every epoch"),
    ((2.0, 1.0, 1.25), 0.25, "rises at least once"),
    ((2.0,), 0.0, "falls in every epoch")])                      # one epoch: nothing to rise
def test_the_bbn_loss_rises_or_falls(losses, rise, shape):
    out = findings.motivation(motivation_runs(losses=losses))
    assert out["loss_rise"] == pytest.approx(rise) and out["loss_shape"] == shape


# ---------------------------------------------------------------------------------------------
# Chapter 2


def method_runs(ins, cls, n=5, factor_error=0.0):
    grads = {"head_ins": correlated(ins, n), "head_cls": correlated(cls, n),
             "backbone_normal": correlated(0.1, n)}
    return {"darts_bbn": [record(losses=(1.0,) * n, grads=grads)],
            "hls": [record(losses=(1.0,) * n, factor_error=factor_error, tau=5.0)]}


@pytest.mark.parametrize("ins, cls, verdict", [
    (0.6, -0.6, "as Theorem 1 predicts"),
    (0.4, -0.6, "not as Theorem 1 predicts"),     # the instance head follows mu too weakly
    (0.6, -0.4, "not as Theorem 1 predicts"),     # the class head follows 1 - mu too weakly
    (-0.6, 0.6, "not as Theorem 1 predicts")])    # the heads swapped
def test_theorem1_verdict_needs_both_heads_beyond_the_threshold(ins, cls, verdict):
    out = findings.method(method_runs(ins, cls))
    assert out["corr_ins"] == pytest.approx(ins, abs=1e-4) and out["corr_cls"] == pytest.approx(cls, abs=1e-4)
    assert out["theorem_verdict"] == verdict


def test_method_states_the_schedule_gradients_and_cells():
    out = findings.method(method_runs(0.9, -0.9, factor_error=0.01))
    check_keys("method", out)
    assert findings.THEOREM1_CORRELATION == 0.5
    assert out["eq17_error"] == pytest.approx(0.01, abs=1e-5)   # the last epoch strays from Eq. (17)
    assert out["last_mu"] == 0.0 and out["tau"] == 5.0
    assert out["last_factor"] == pytest.approx(0.01, abs=1e-5)  # Eq. (17) at mu = 0 is 0
    assert out["corr_bb"] == pytest.approx(0.1, abs=1e-4)
    assert out["upd_corr_cls"] == pytest.approx(-0.9, abs=1e-4)
    assert out["ratio_ins"] == pytest.approx(correlated(0.9, 5)[-1] / correlated(0.9, 5)[0], abs=1e-4)
    assert (out["skips"], out["edges"]) == (3, 6)


# ---------------------------------------------------------------------------------------------
# Chapter 3


def main_runs(darts=0.60, hls=0.62):
    return {"darts": [record(acc=darts), record(1, acc=darts)],
            "darts_resample": [record(acc=0.58), record(1, acc=0.58)],
            "darts_bbn": [flat(0.50, vc=0.45, plain=0.40), flat(0.50, seed=1, vc=0.45, plain=0.40)],
            "hls": [flat(hls, vc=hls - 0.03, plain=hls - 0.06, tail=0.2),
                    flat(hls, seed=1, vc=hls - 0.03, plain=hls - 0.06, tail=0.2)],
            "mystery": [record(acc=0.30), record(1, acc=0.30)]}     # not in the paper's Table II


def by_length(runs):
    core = {m: runs[m] for m in ("darts", "darts_resample", "darts_bbn", "hls")}
    return {"cpu": lengths.LengthRuns("cpu", 3, core),
            "cpu-long": lengths.LengthRuns("cpu-long", 16, {"darts": runs["darts"][:1]})}


def test_main_results_state_table2_the_protocol_and_the_lengths():
    runs = main_runs()
    out = findings.main_results(runs, by_length(runs))
    check_keys("main_results", out)
    assert out["pp_hls"] == pytest.approx(62.0) and out["vc_hls"] == pytest.approx(59.0)
    assert out["tail_hls"] == pytest.approx(20.0)
    assert out["paper_hls"] == 65.12 and out["diff_hls"] == pytest.approx(62.0 - 65.12)
    assert "paper_mystery" not in out and "diff_mystery" not in out
    assert out["best_pp"] == "HLS" and out["best_vc"] == "DARTS"    # 60 on validation beats 59
    assert out["n_seeds"] == 2
    assert out["hls_vs_darts"] == "2.0 points above" and out["hls_vs_bbn"] == "12.0 points above"
    assert out["protocol_gap"] == pytest.approx((5.0 + 3.0) / 2)   # BBN and HLS, the two-head ones
    assert out["plain_gap"] == pytest.approx((5.0 + 3.0) / 2)
    assert out["vp_hls"] == pytest.approx(56.0)
    assert out["best_bilateral_vc"] == "HLS"
    assert out["vc_best_single"] == pytest.approx(60.0) and out["vc_best_bilateral"] == pytest.approx(59.0)
    assert out["n_lengths"] == 2
    assert (out["short_profile"], out["short_epochs"], out["short_seeds"]) == ("cpu", 3, 2)
    assert out["short_rs_gap"] == pytest.approx(-2.0) and out["short_hls_bbn_gap"] == pytest.approx(12.0)
    assert out["short_best"] == "HLS"
    assert (out["long_profile"], out["long_epochs"], out["long_seeds"], out["long_best"]) == ("cpu-long", 16, 1, "DARTS")
    assert math.isnan(out["long_rs_gap"])


def test_the_best_method_and_the_comparison_follow_the_numbers():
    runs = main_runs(darts=0.66, hls=0.62)
    out = findings.main_results(runs, by_length(runs))
    assert out["best_pp"] == "DARTS" and out["hls_vs_darts"] == "4.0 points below"
    assert out["short_best"] == "DARTS"


# ---------------------------------------------------------------------------------------------
# Chapter 4


def ablation_runs(hls_drift=0.01, bbn_drift=0.02):
    hls_curve = [0.50 + 0.01 * i for i in range(11)]                # above 0.52 from mu = 0.3 on
    return {"hls": [record(curve=hls_curve, drift=hls_drift)],
            "darts_bbn": [flat(0.52, drift=bbn_drift)],
            "hls_weights": [flat(0.40, drift=0.0)]}


def test_ablations_state_fig6_and_the_taus():
    by_tau = {1.0: [record(acc=0.50), record(1, acc=0.52)], 5.0: [record(acc=0.60)], 10.0: [record(acc=0.55)]}
    out = findings.ablations(ablation_runs(), by_tau)
    check_keys("ablations", out)
    assert out["n_mu"] == 11 and out["n_better"] == 8                # mu = 0.3 ... 1.0
    assert out["mean_gain"] == pytest.approx(3.0)
    assert out["pp_hls"] == pytest.approx(60.0) and out["vc_hls_weights"] == pytest.approx(40.0)
    assert out["best_tau"] == 5.0 and out["tau_spread"] == pytest.approx(9.0)
    assert out["taus"] == "1, 5, 10"


@pytest.mark.parametrize("hls_drift, bbn_drift, verdict", [
    (0.01, 0.02, "settles more"), (0.02, 0.01, "does not settle more"), (0.01, 0.01, "does not settle more")])
def test_settles_more_only_with_a_smaller_late_drift(hls_drift, bbn_drift, verdict):
    out = findings.ablations(ablation_runs(hls_drift, bbn_drift), {5.0: [record()]})
    assert out["drift_hls"] == pytest.approx(hls_drift) and out["drift_bbn"] == pytest.approx(bbn_drift)
    assert out["drift_verdict"] == verdict


def test_the_best_tau_is_the_best_mean_not_the_best_seed():
    by_tau = {2.0: [record(acc=0.70), record(1, acc=0.40)], 8.0: [record(acc=0.60), record(1, acc=0.58)]}
    assert findings.ablations(ablation_runs(), by_tau)["best_tau"] == 8.0


# ---------------------------------------------------------------------------------------------
# Chapter 5


def continued_runs(losses_mu1):
    """The HLS run at 0.60 for mu_test = 1, its continuations that much lower there."""
    runs = {"hls": [flat(0.55, mu1=0.60, mu0=0.50)]}
    for k, (m, loss) in enumerate(zip(("ct_mu0", "ct_mu05", "ct_rs", "ct_frozen"), losses_mu1)):
        runs[m] = [flat(0.50 + 0.01 * k, mu1=0.60 - loss, mu0=0.58, epochs=4)]
    return runs


def test_a_continuation_forgot_when_its_instance_head_lost_more_than_five_points():
    out = findings.continued_training(continued_runs((0.06, 0.04, 0.0, 0.051)))
    check_keys("continued_training", out)
    assert findings.FORGETTING_POINTS == 5
    assert out["forgot"] == "continued, mu = 0, continued, backbone frozen"
    assert out["ins_ct_mu0"] == pytest.approx(54.0) and out["cls_ct_mu0"] == pytest.approx(58.0)
    assert out["epochs"] == 4


def test_no_continuation_forgot_when_each_lost_less():
    out = findings.continued_training(continued_runs((0.04, 0.0, 0.049, -0.02)))
    assert out["forgot"] == "none of them"


def test_the_best_continuation_is_named_and_compared_with_its_parent():
    runs = continued_runs((0.0, 0.0, 0.0, 0.0))   # every run at 60 % (mu = 1) but one:
    runs["ct_rs"] = [flat(0.70, mu1=0.70, mu0=0.70)]
    out = findings.continued_training(runs)
    assert out["best_ct"] == "continued, reverse sigmoid" and out["best_vs_hls"] == "10.0 points above"
    assert out["pp_ct_rs"] == pytest.approx(70.0)


# ---------------------------------------------------------------------------------------------
# Chapter 7


def verdicts(*outcomes):
    from hls import claims
    return [claims.Verdict(name, outcome, "numbers") for name, outcome in zip(claims.CLAIMS, outcomes)]


def test_the_claims_page_counts_each_verdict_and_names_the_columns():
    from hls import claims
    mine = verdicts(claims.HOLDS, claims.FAILS, claims.FAILS, claims.OPEN, claims.ABSENT,
                    claims.HOLDS, claims.HOLDS)
    other = verdicts(*[claims.ABSENT] * 7)
    records = {"hls": [record(seed=0, acc=0.50), record(seed=1, acc=0.52)],
               "darts": [record(seed=0, acc=0.40)]}
    out = findings.claims_page({"cpu": mine, "cpu-long": other}, "cpu", records)
    check_keys("claims_page", out)
    assert (out["n_holds"], out["n_fails"], out["n_open"], out["n_absent"]) == (3, 2, 1, 1)
    assert out["v_C1"] == claims.HOLDS and out["v_C5"] == claims.ABSENT
    assert out["n_profiles"] == 2 and out["profiles"] == "cpu, cpu-long"
    assert out["acc_hls"] == pytest.approx(51.0) and out["acc_darts"] == pytest.approx(40.0)
    assert out["n_seeds_table"] == 2
    assert out["c3_numbers"] == "HLS 51.00 % (2 seeds) against DARTS 40.00 % (1 seed)"
    records["darts"].append(record(seed=1, acc=0.42))
    out = findings.claims_page({"cpu": mine, "cpu-long": other}, "cpu", records)
    assert out["c3_numbers"] == "HLS 51.00 % against DARTS 41.00 % over 2 seeds"


def test_the_claims_page_reads_the_asked_profile_and_has_nan_without_runs():
    from hls import claims
    out = findings.claims_page({"cpu": verdicts(*[claims.HOLDS] * 7),
                                "cpu-long": verdicts(*[claims.FAILS] * 7)}, "cpu-long", {})
    assert (out["n_holds"], out["n_fails"]) == (0, 7)
    assert math.isnan(out["acc_hls"]) and out["n_seeds_table"] == 0
    assert out["c3_numbers"] == "no HLS or DARTS runs yet"
