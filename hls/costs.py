"""What the book's runs cost where they were measured: wall time and peak memory from the
records' facts.json, for the "Reproduce this book" page (book/reproduce.md quotes these numbers
and tests/test_book.py checks that it quotes them as they are)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Cost:
    runs: int
    total_seconds: float      # the runs' wall times added up (one worker's time)
    longest_seconds: float
    peak_memory_bytes: int    # the largest peak of any one run (CPU: process RSS; CUDA: device)
    devices: tuple[str, ...]
    hosts: tuple[str, ...]

    def sentence(self) -> str:
        """'26 runs on x86_64 CPU (1 torch threads) (host vm): 2.9 h of compute in all, the
        longest run 12.9 min, at most 1.35 GiB of memory per run'."""
        where = ", ".join(self.devices) + f" (host {', '.join(self.hosts)})"
        return (f"{self.runs} runs on {where}: {hours_minutes(self.total_seconds)} of compute in all, "
                f"the longest run {hours_minutes(self.longest_seconds)}, at most "
                f"{self.peak_memory_bytes / 2**30:.2f} GiB of memory per run")


def archive_cost(profile: str, archive: Path | None = None) -> Cost:
    """The cost of every run of `profile` in the results archive (default: results/ of this
    checkout, whatever HLS_ARCHIVE says: the page is about the committed archive)."""
    folder = (archive or ROOT / "results") / profile
    facts = [json.loads(p.read_text()) for p in sorted(folder.glob("*/facts.json"))]
    if not facts:
        raise FileNotFoundError(f"no archived runs in {folder}; python -m hls publish --profile "
                                f"{profile} puts finished runs there")
    for name in ("wall_seconds", "peak_memory_bytes"):
        if any(name not in f for f in facts):
            raise KeyError(f"a facts.json under {folder} lacks {name!r}; republish that run")
    return Cost(runs=len(facts),
                total_seconds=sum(float(f["wall_seconds"]) for f in facts),
                longest_seconds=max(float(f["wall_seconds"]) for f in facts),
                peak_memory_bytes=max(int(f["peak_memory_bytes"]) for f in facts),
                devices=tuple(sorted({f.get("device_name") or f.get("device", "?") for f in facts})),
                hosts=tuple(sorted({str(f.get("host", "?")) for f in facts})))


def hours_minutes(seconds: float) -> str:
    """'2 h 51 min', '12.9 min', '47 s'."""
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    h, m = divmod(round(seconds / 60), 60)
    return f"{h} h {m:02d} min"
