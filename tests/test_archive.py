"""The committed results archive: complete, readable, and reproduced by the current code."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hls import plan

ROOT = Path(__file__).resolve().parents[1]


def test_the_cpu_archive_holds_every_run_of_the_cpu_book():
    """A fresh clone renders the cpu book from results/ alone (never a checkpoint there)."""
    archive = ROOT / "results" / "cpu"
    missing = [p.run_id for p in plan.book_plan("cpu")
               if not (archive / p.run_id / "status.json").exists()]
    assert not missing, f"not archived: {missing}; python -m hls launch --profile cpu && python -m hls publish --profile cpu"
    assert not list(archive.rglob("*.pt")) and not list(archive.rglob("log.txt"))
    for folder in archive.iterdir():
        facts = json.loads((folder / "facts.json").read_text())
        assert facts["git_commit"] and facts["device"] and facts["torch_threads"] >= 1


@pytest.mark.slow
def test_an_archived_cpu_run_is_reproduced_bit_for_bit(tmp_path):
    """The README's test command retrains the cheapest archived cpu run and compares it."""
    env = {**os.environ, "HLS_RUNS": str(tmp_path / "runs"), "HLS_PROGRESS": "0"}
    env.pop("HLS_ARCHIVE", None)
    out = subprocess.run([sys.executable, "-m", "hls", "verify", "--profile", "cpu",
                          "--methods", "darts", "--seeds", "0"],
                         capture_output=True, text=True, env=env, cwd=ROOT, timeout=1800)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "darts" in out.stdout
