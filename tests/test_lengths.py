"""The longer search (profile cpu-long) and chapter 3's comparison of search lengths."""

import math
from types import SimpleNamespace

import pytest

from hls import experiments
from hls import lengths, plan, runs


def test_cpu_long_plans_the_five_core_rows_over_three_seeds_and_nothing_else():
    todo = plan.book_plan("cpu-long")
    assert len(todo) == 15
    assert {r.method for r in todo} == set(experiments.CORE_METHODS)
    assert {r.seed for r in todo} == {0, 1, 2}
    cpu = experiments.config("darts", "cpu").to_dict()
    for r in todo:
        assert r.config.epochs == experiments.CPU_LONG_EPOCHS
        # the cpu network and recipe, only searched for longer
        same = experiments.config(r.method, "cpu", r.seed).replace(epochs=experiments.CPU_LONG_EPOCHS)
        assert r.config == same
    assert experiments.config("darts", "cpu-long").to_dict().keys() == cpu.keys()


def test_profiles_of_one_network_are_ordered_by_search_length():
    assert plan.family_profiles("cpu") == ["cpu", "cpu-long"]
    assert plan.family_profiles("cpu-long") == ["cpu", "cpu-long"]
    assert plan.family_profiles("smoke") == ["smoke"]


def test_finished_records_returns_the_seeds_made_so_far_and_counts_the_rest(monkeypatch):
    made = {c.run_id for c in plan.chapter_configs("03_main_results", "cpu-long")["darts"][:2]}
    monkeypatch.setattr(runs, "find_record", lambda c: SimpleNamespace(config=c)
                        if c.run_id in made else None)
    found, missing = plan.finished_records("03_main_results", "cpu-long")
    assert list(found) == ["darts"] and [r.config.seed for r in found["darts"]] == [0, 1]
    assert len(missing) == 13
    # a chapter that the profile does not make runs for has nothing, and nothing missing
    assert plan.finished_records("05_continued_training", "cpu-long") == ({}, [])


def record(seed, pp, vc=None, groups=(0.5, 0.4, 0.3)):
    """A stand-in RunRecord with a paper-protocol and a validation-chosen test accuracy."""
    vc = pp if vc is None else vc
    ev = {"paper_protocol": {"acc": pp, "mu": 0.0}, "val_chosen": {"acc": vc, "mu": 0.0},
          "val_chosen_plain": {"acc": vc, "mu": 1.0}, "mu_grid": None,
          "groups": dict(zip(("head", "middle", "tail"), groups))}
    return SimpleNamespace(eval=ev, config=SimpleNamespace(seed=seed), history=[], facts={})


def length(profile, epochs, **accs):
    return lengths.LengthRuns(profile, epochs, {m: [record(s, a) for s, a in enumerate(v)]
                                                for m, v in accs.items()})


@pytest.fixture
def two_lengths():
    return {"cpu": length("cpu", 3, darts=[0.34, 0.33, 0.35], darts_resample=[0.47, 0.48, 0.46],
                          darts_bbn=[0.46, 0.46, 0.46], hls=[0.48, 0.48, 0.48]),
            "cpu-long": length("cpu-long", 16, darts=[0.60, 0.62], darts_resample=[0.55, 0.57],
                               darts_bbn=[0.50])}


def test_the_findings_are_the_paper_protocol_gaps_at_each_length(two_lengths):
    short, long = lengths.length_findings(two_lengths)
    assert (short.profile, short.epochs, short.seeds) == ("cpu", 3, 3)
    assert short.resample_minus_darts == pytest.approx(13.0)
    assert short.hls_minus_bbn == pytest.approx(2.0)
    assert short.best == "hls"
    assert (long.epochs, long.seeds) == (16, 1)               # the fewest seeds of its methods
    assert long.resample_minus_darts == pytest.approx(-5.0)   # the paper's sign (61.20 < 64.56)
    assert math.isnan(long.hls_minus_bbn)                     # no HLS run at that length yet
    assert long.best == "darts"


def test_the_length_table_has_a_row_per_method_and_length_and_marks_absent_runs(two_lengths):
    table = lengths.length_table(two_lengths)
    assert list(table.index) == [(m, length) for m in ("DARTS", "DARTS+Re-sampling", "DARTS+BBN", "HLS")
                                 for length in ("cpu, 3 epochs", "cpu-long, 16 epochs")]
    assert list(table.xs("cpu-long, 16 epochs", level="search")["seeds"]) == [2, 2, 1, 0]
    assert table.loc[("DARTS", "cpu-long, 16 epochs"), "paper protocol (%)"] == "61.00 ± 1.41"
    assert table.loc[("HLS", "cpu-long, 16 epochs"), "paper protocol (%)"] == "–"
    assert table.loc[("HLS", "cpu, 3 epochs"), "tail (%)"] == "30.0"


def test_the_length_figure_draws_a_line_per_method_in_both_panels(two_lengths):
    fig = lengths.length_figure(two_lengths, "cpu")
    left, right = fig.axes[:2]     # stacked: paper protocol above, val-chosen below
    assert len(left.lines) >= 4 and len(right.lines) >= 4
    assert [t.get_text() for t in right.get_legend().get_texts()] == [
        "DARTS", "DARTS+Re-sampling", "DARTS+BBN", "HLS"]
