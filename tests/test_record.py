"""The record contract (hls.record) is what the loops write and what the archive holds."""

import json
from pathlib import Path

import pytest

from hls import experiments, record, runs

ARCHIVE = Path(__file__).parents[1] / "results"
ARCHIVED = sorted(p.parent for p in ARCHIVE.glob("*/*/facts.json"))


def check(folder: Path):
    facts = json.loads((folder / "facts.json").read_text())
    retraining = facts.get("kind") == "retrain"
    config = json.loads((folder / "config.json").read_text())
    two_heads = bool(config.get("bilateral"))
    metrics = json.loads((folder / "metrics.json").read_text())
    evaluation = json.loads((folder / "eval.json").read_text())
    want = record.epoch_keys(retraining, two_heads)
    for entry in metrics:
        assert set(entry) == want, (f"{folder.name} epoch {entry.get('epoch')}: not in hls.record "
                                    f"{sorted(set(entry) - want)}, missing {sorted(want - set(entry))}")
    assert set(evaluation) == record.eval_keys(retraining), sorted(set(evaluation) ^ record.eval_keys(retraining))
    assert set(facts) == record.facts_keys(retraining), sorted(set(facts) ^ record.facts_keys(retraining))
    if not retraining:
        alphas = json.loads((folder / "alphas.json").read_text())
        assert all(set(a) == set(record.ALPHA_KEYS) for a in alphas) and len(alphas) == len(metrics)


@pytest.mark.parametrize("folder", ARCHIVED, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_archived_record_keeps_the_contract(folder):
    check(folder)


def test_freshly_trained_records_keep_the_contract(store):
    one_head = experiments.config("darts", "smoke", 0, {"epochs": 1})
    two_heads = experiments.config("hls", "smoke", 0, {"epochs": 1})
    retrained = experiments.retrain_config("darts", "smoke", 0, "ce", {"epochs": 1, "retrain.epochs": 1})
    for config in (one_head, two_heads, retrained):
        check(runs.get_run(config, "cpu", progress=False).path)


def test_a_key_outside_the_contract_is_named(tmp_path):
    folder = next(p for p in ARCHIVED if not (p / "config.json").read_text().count('"retrain"'))
    for name in ("facts.json", "config.json", "metrics.json", "eval.json", "alphas.json"):
        (tmp_path / name).write_text((folder / name).read_text())
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    metrics[0]["new_metric"] = 1.0
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))
    with pytest.raises(AssertionError, match="new_metric"):
        check(tmp_path)
