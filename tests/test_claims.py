"""The verdicts of the "Does the paper hold?" page, on small hand-made records."""

from types import SimpleNamespace

import pytest

from hls import claims
from hls.claims import FAILS, HOLDS, OPEN

GRID = [round(0.1 * i, 1) for i in range(11)]


def record(seed, acc=None, curve=None, drift=0.0, epochs=3):
    """A stand-in RunRecord: test accuracy (fraction) for one head, or a curve over GRID for
    two; alphas whose backbone moves by `drift` per epoch."""
    if curve is not None:
        ev = {"mu_grid": GRID, "test_acc": list(curve),
              "paper_protocol": {"mu": GRID[max(range(11), key=lambda i: curve[i])],
                                 "acc": max(curve)}}
    else:
        ev = {"mu_grid": None, "test_acc": [acc], "paper_protocol": {"mu": 1.0, "acc": acc}}
    history = [{"alphas": {"backbone_normal": [[0.5 + drift * e, 0.5 - drift * e]],
                           "backbone_reduce": [[0.5 + drift * e, 0.5 - drift * e]]}}
               for e in range(epochs)]
    return SimpleNamespace(eval=ev, history=history, config=SimpleNamespace(seed=seed))


def single(*accs):
    return [record(s, acc=a) for s, a in enumerate(accs)]


def flat(*levels, drift=0.0, mu0_bonus=0.0):
    """Two-head records whose accuracy is `level` at every mu_test, plus a bonus at mu = 0."""
    return [record(s, curve=[level + (mu0_bonus if mu == 0 else 0.0) for mu in GRID], drift=drift)
            for s, level in enumerate(levels)]


def verdicts(records):
    return {v.claim: v for v in claims.evaluate(records)}


def test_a_difference_needs_more_than_twice_its_standard_error():
    assert claims.compare([50, 51, 52], [40, 41, 42]).verdict() == HOLDS
    assert claims.compare([40, 41, 42], [50, 51, 52]).verdict() == FAILS
    assert claims.compare([50, 45, 55], [49, 44, 54]).verdict() == OPEN
    assert claims.compare([50], [40]).verdict() == OPEN          # one seed: no spread
    c = claims.compare([3.0, 4.0, 5.0], [1.0, 1.0, 1.0], paired=True)
    assert c.diff == 3.0 and c.se == pytest.approx(1 / 3 ** 0.5)


@pytest.mark.parametrize("resample, expected", [
    ((0.40, 0.41, 0.42), HOLDS), ((0.60, 0.61, 0.62), FAILS), ((0.45, 0.55, 0.50), OPEN)])
def test_c1_re_sampling_hurts_darts(resample, expected):
    v = verdicts({"darts": single(0.50, 0.51, 0.52), "darts_resample": single(*resample)})["C1"]
    assert v.verdict == expected and "DARTS vs re-sampling" in v.numbers


@pytest.mark.parametrize("hls, expected", [
    ((0.60, 0.61, 0.62), HOLDS),      # far above BBN, above DARTS
    ((0.50, 0.51, 0.52), HOLDS),      # above BBN, level with DARTS: "at least" is not refuted
    ((0.30, 0.31, 0.32), FAILS),      # below both
    ((0.40, 0.50, 0.60), OPEN)])      # too noisy to tell from BBN
def test_c3_hls_at_least_darts_and_above_bbn(hls, expected):
    v = verdicts({"darts": single(0.50, 0.51, 0.52), "darts_bbn": flat(0.40, 0.41, 0.42),
                  "hls": flat(*hls)})["C3"]
    assert v.verdict == expected


@pytest.mark.parametrize("bonus, expected", [(0.05, HOLDS), (-0.05, FAILS)])
def test_c4_the_best_mu_is_zero(bonus, expected):
    # three seeds whose mu = 0 bonus varies a little, so the paired difference has a spread
    recs = [record(s, curve=[0.5 + (bonus + 0.001 * s if mu == 0 else 0.0) for mu in GRID])
            for s in range(3)]
    assert verdicts({"darts_bbn": recs})["C4"].verdict == expected
    assert verdicts({"darts_bbn": recs[:1]})["C4"].verdict == OPEN   # one seed


@pytest.mark.parametrize("hls, expected", [((0.60, 0.61, 0.62), HOLDS),
                                           ((0.30, 0.31, 0.32), FAILS),
                                           ((0.35, 0.41, 0.47), OPEN)])
def test_c5_scaled_beats_unscaled_at_every_mu(hls, expected):
    v = verdicts({"hls": flat(*hls), "darts_bbn": flat(0.40, 0.41, 0.42)})["C5"]
    assert v.verdict == expected and "of 11 mu_test" in v.numbers


def test_c6_the_backbone_settles_under_hls():
    bbn = [record(s, curve=[0.4] * 11, drift=d) for s, d in enumerate((0.05, 0.06, 0.07))]
    settled = [record(s, curve=[0.4] * 11, drift=d) for s, d in enumerate((0.01, 0.011, 0.012))]
    assert verdicts({"hls": settled, "darts_bbn": bbn})["C6"].verdict == HOLDS
    assert verdicts({"hls": bbn, "darts_bbn": settled})["C6"].verdict == FAILS


def instance_head(*accs):
    """Continued-run records whose instance head (mu_test = 1) scores accs."""
    return [record(s, curve=[0.3] * 10 + [a]) for s, a in enumerate(accs)]


@pytest.mark.parametrize("mu05, others, expected", [
    ((0.59, 0.61, 0.61), (0.30, 0.31, 0.32), HOLDS),    # mu = 0.5 keeps it, the others lose 30
    ((0.30, 0.31, 0.32), (0.30, 0.31, 0.32), FAILS),    # mu = 0.5 forgets too
    ((0.59, 0.61, 0.61), (0.59, 0.61, 0.61), FAILS),    # the others keep it
    ((0.59, 0.61, 0.61), (0.57, 0.60, 0.50), OPEN)])    # the others' loss is unclear
def test_c7_continued_training(mu05, others, expected):
    parent = instance_head(0.60, 0.63, 0.61)
    v = verdicts({"hls": parent, "ct_mu05": instance_head(*mu05),
                  "ct_mu0": instance_head(*others)})["C7"]
    assert v.verdict == expected


def test_absent_runs_and_the_table():
    found = claims.evaluate({"darts": single(0.5, 0.51)})
    assert [v.verdict for v in found] == ["no runs"] * len(claims.CLAIMS)
    table = claims.claims_table({"cpu": found, "paper": found})
    assert list(table.columns) == ["cpu", "paper"] and len(table) == len(claims.CLAIMS)
    assert table.iloc[0, 0].startswith("no runs: needs darts, darts_resample")


@pytest.mark.parametrize("bbn, expected", [
    ((0.30, 0.31, 0.32), HOLDS), ((0.60, 0.61, 0.62), FAILS), ((0.40, 0.60, 0.50), OPEN)])
def test_c2_bbn_below_darts(bbn, expected):
    v = verdicts({"darts": single(0.50, 0.51, 0.52), "darts_bbn": flat(*bbn)})["C2"]
    assert v.verdict == expected
