"""Where a chapter's numbers come from: the provenance table at the top of every chapter, the
sentence each caption ends with (`made_by`), and the loud warning of the smoke profile."""

from __future__ import annotations

import pandas as pd

from . import experiments
from .summaries import flatten, seeds


SMOKE_WARNING = "smoke profile: these numbers mean nothing, they only show that the code runs"


def infer_profile(records) -> str:
    """The profile whose fields every record's config matches, else the closest one + "(modified)"."""
    recs = [r for r in flatten(records)]
    if not recs:
        return "no runs"
    best, best_score = None, -1
    for name, p in experiments.PROFILES.items():
        fields = {k: v for k, v in p["fields"].items() if k != "epochs"}
        score = sum(all(_same(getattr(r.config, k), v) for r in recs) for k, v in fields.items())
        if score == len(fields) and score > best_score:
            best, best_score = name, score
    if best is not None:
        return best
    # no profile matches exactly: the nearest one, marked
    scores = {name: sum(all(_same(getattr(r.config, k), v) for r in recs)
                        for k, v in p["fields"].items()) / len(p["fields"])
              for name, p in experiments.PROFILES.items()}
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


def provenance_table(records, profile: str | None = None) -> pd.DataFrame:
    """Profile, device, seeds, compute time and commit of every run a chapter shows."""
    recs = flatten(records)
    profile = profile or infer_profile(recs)
    p = experiments.PROFILES.get(profile.split(" ")[0], {})
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
    older = sorted({str(r.facts.get("code_fingerprint")) for r in recs if r not in stale
                    and r.facts.get("code_fingerprint") != current_fingerprint(record_kind(r))})
    if older:   # reproduced by code that verify found equivalent (runs.equivalent_fingerprints)
        here += f"; records of {', '.join(older)} verified equivalent bit for bit"
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
