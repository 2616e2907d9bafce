"""Chapter 6's conclusions (hls.retrain_summary) on hand-made records: the best genotype, the rank
correlation and its verdict, HLS against DARTS, the baselines, the loss's gain."""

import math
from types import SimpleNamespace

import pytest

from hls import retrain_summary as rs
from hls.retrain import LOSS_TAGS

GROUPS = {"head": 0.9, "middle": 0.5, "tail": 0.1, "many": 0.7, "medium": 0.1}


def retrained(source, loss, seed, acc, tail=0.1):
    architecture = source if source in ("random", "resnet") else "searched"
    config = SimpleNamespace(source=source, loss=loss, seed=seed, architecture=architecture,
                             resnet_depth=32)
    return SimpleNamespace(config=config, eval={"acc": acc / 100, "groups": {**GROUPS, "tail": tail},
                                                "parameters": 1000, "multiply_adds": 5000})


def searched(acc):
    return SimpleNamespace(eval={"paper_protocol": {"acc": acc / 100, "mu": 1.0}})


def chapter(search, after, losses=("ce", "logit_adjusted"), la_bonus=0.0, baselines=None):
    """records and parents: per method three seeds; search[m] / after[m] are per-seed accs."""
    records, parents = {}, {}
    for loss in losses:
        bonus = la_bonus if loss == "logit_adjusted" else 0.0
        for method in search:
            key = f"re_{method}_{LOSS_TAGS[loss]}"
            records[key] = [retrained(method, loss, s, a + bonus, 0.1 + bonus / 100)
                            for s, a in enumerate(after[method])]
            parents[key] = [searched(a) for a in search[method]]
        for source, accs in (baselines or {}).items():
            records[f"re_{source}_{LOSS_TAGS[loss]}"] = [retrained(source, loss, s, a + bonus)
                                                         for s, a in enumerate(accs)]
    return records, parents


def test_spearman_with_ties_and_degenerate_cases():
    assert rs.ranks([3, 1, 2, 2]).tolist() == [4, 1, 2.5, 2.5]
    assert rs.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert rs.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert rs.spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)
    assert math.isnan(rs.spearman([1, 2, 3], [5, 5, 5]))        # no order on one side
    assert math.isnan(rs.spearman([1, 2], [1, 2]))              # too few pairs
    with pytest.raises(ValueError, match="needs pairs"):
        rs.spearman([1, 2, 3], [1, 2])


def test_correlation_verdicts_follow_the_t_rule():
    assert rs.correlation_verdict(0.8, 7) == "survives"          # t = 2.98
    assert rs.correlation_verdict(0.6, 7) == "not resolved"      # t = 1.68
    assert rs.correlation_verdict(-0.8, 7) == "reverses"
    assert rs.correlation_verdict(0.45, 21) == "survives"        # t = 2.20
    assert rs.correlation_verdict(float("nan"), 7) == "not resolved"
    assert rs.correlation_verdict(1.0, 3) == "survives"


# Seven methods whose search ranking is the retrained ranking turned upside down
SEARCH = {m: [40 + i, 40.5 + i, 41 + i] for i, m in enumerate(
    ["darts", "darts_resample", "darts_reweight", "darts_bbn", "hls", "hls_rs", "ct_mu05"])}
AFTER = {m: [60 - 2 * i, 60.2 - 2 * i, 59.8 - 2 * i] for i, m in enumerate(SEARCH)}


def test_a_reversed_ranking_is_found_and_named():
    records, parents = chapter(SEARCH, AFTER, baselines={"random": [52, 54, 56],
                                                         "resnet": [70, 70.5, 71]})
    v = rs.conclusions(records, parents)
    assert v["best_ce"] == "DARTS" and v["best_acc_ce"] == pytest.approx(60.0)
    assert v["search_best_ce"] == rs.source_label("ct_mu05") == "continued, mu = 0.5"
    assert v["same_best_ce"] == "not the same"
    assert v["rho_methods_ce"] == pytest.approx(-1.0) and v["verdict_methods_ce"] == "reverses"
    assert v["n_methods_ce"] == 7 and v["n_runs_ce"] == 21
    assert v["verdict_runs_ce"] == "reverses"
    # HLS (index 4) retrains to 52 %, DARTS to 60 %: resolved below
    assert v["hls_ce"] == pytest.approx(52.0) and v["darts_ce"] == pytest.approx(60.0)
    assert v["hls_vs_darts_ce"] == "below"
    assert v["searched_ce"] == pytest.approx(54.0)
    assert v["random_ce"] == pytest.approx(54.0) and v["searched_vs_random_ce"] == \
        "not distinguishable from"
    assert v["resnet_ce"] == pytest.approx(70.5) and v["best_vs_resnet_ce"] == "below"


def test_a_surviving_ranking_and_a_loss_that_helps():
    after = {m: [a + 5 for a in accs] for m, accs in SEARCH.items()}     # same order
    records, parents = chapter(SEARCH, after, la_bonus=3.0)
    v = rs.conclusions(records, parents)
    for tag in ("ce", "la"):
        assert v[f"rho_methods_{tag}"] == pytest.approx(1.0)
        assert v[f"verdict_methods_{tag}"] == "survives"
        assert v[f"same_best_{tag}"] == "the same"
        assert v[f"hls_vs_darts_{tag}"] == "above"
    assert v["best_acc_la"] == pytest.approx(v["best_acc_ce"] + 3.0)
    assert v["la_gain"] == pytest.approx(3.0) and v["la_gain_verdict"] == "helps"
    assert v["la_gain_tail"] == pytest.approx(3.0)
    assert "random_ce" not in v and "resnet_la" not in v        # no baselines given
    assert all(type(x) in (str, int, float) for x in v.values())   # what glue formats


def test_one_seed_resolves_nothing():
    search = {"darts": [40.0], "hls": [45.0], "darts_bbn": [30.0]}
    after = {"darts": [50.0], "hls": [55.0], "darts_bbn": [52.0]}
    records, parents = chapter(search, after, losses=("ce",))
    v = rs.conclusions(records, parents)
    assert v["hls_vs_darts_ce"] == "not distinguishable from"   # no spread to measure
    assert v["rho_methods_ce"] == pytest.approx(0.5) and v["verdict_methods_ce"] == "not resolved"
    assert "la_gain" not in v                                    # one loss only


def test_summary_rows_and_labels():
    records, parents = chapter({"hls": [45, 46, 47]}, {"hls": [55, 56, 57]}, losses=("ce",),
                               baselines={"resnet": [70, 71, 72]})
    s = rs.summary(records, parents)
    assert list(s.index) == ["re_hls_ce", "re_resnet_ce"]
    assert s.loc["re_hls_ce", "acc"] == pytest.approx(56) and s.loc["re_hls_ce", "acc_std"] == \
        pytest.approx(1.0)
    assert s.loc["re_hls_ce", "search_acc"] == pytest.approx(46)
    assert math.isnan(s.loc["re_resnet_ce", "search_acc"])
    assert s.loc["re_resnet_ce", "label"] == "ResNet-32" and s.loc["re_hls_ce", "label"] == "HLS"
    assert s.loc["re_hls_ce", "tail"] == pytest.approx(10.0)
