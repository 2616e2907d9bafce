"""Which runs each chapter of the book needs, as data, and the whole book's plan.

A chapter's needs are entries (key, method, overrides): the key is what the chapter's notebook
calls the runs ("darts", or "tau=20" in the tau sweep), the overrides are the entry's own
settings, which win over the user's (`--set`), as the tau sweep must. Every entry is trained for
every seed of the chapter. A retraining entry (chapter 6) has a loss: it trains the genotype of
its method's search run at that seed (or a random cell, or ResNet-32) from scratch; its key is
the retraining run's method (re_darts_ce, re_random_la, ...). `--set retrain.KEY=VALUE` changes
the retraining runs only, every other `--set` the search runs (and so the retrained genotypes).

    chapter_configs("04_ablations", "cpu")  ->  {"hls": [RunConfig], ..., "tau=20": [...]}
    chapter_records(...)                     ->  the same keys, RunRecords (never trains)
    parent_records(records)                  ->  the search run of each retrained genotype
    book_plan("cpu")                         ->  every distinct run, parents first, with state
"""

from __future__ import annotations

from dataclasses import dataclass, field

from . import experiments, runs
from .config import ConfigError, RunConfig
from .retrain import LOSS_TAGS, RetrainConfig

CHAPTERS = ("01_motivation", "02_method", "03_main_results", "04_ablations",
            "05_continued_training", "06_retraining")


@dataclass(frozen=True)
class Need:
    key: str            # what the notebook calls it
    method: str         # a retraining need: the method whose genotype it trains, or a baseline
    overrides: dict = field(default_factory=dict)
    loss: str | None = None     # a retraining need's loss (experiments.RETRAIN_LOSSES)

    def config(self, profile: str, seed: int, overrides: dict | None):
        settings = {**(overrides or {}), **self.overrides}
        if self.loss is not None:
            return experiments.retrain_config(self.method, profile, seed, self.loss, settings)
        search_settings, _ = experiments.split_overrides(settings)
        return experiments.config(self.method, profile, seed, search_settings)


def _methods(*names: str) -> list[Need]:
    return [Need(name, name) for name in names]


def chapter_needs(chapter: str, profile: str) -> list[Need]:
    """The entries of one chapter at one profile (the tau sweep depends on the profile)."""
    if chapter == "01_motivation":
        return _methods("darts", "darts_resample", "darts_bbn")
    if chapter == "02_method":
        return _methods("darts_bbn", "hls")
    if chapter == "03_main_results":
        table = experiments.PROFILES[profile].get("table_methods", experiments.TABLE_II_METHODS)
        return _methods(*table)
    if chapter == "04_ablations":
        taus = sorted({*experiments.PROFILES[profile]["taus"], experiments.TAU})
        return _methods("hls", "darts_bbn", "hls_weights") + [
            Need(f"tau={tau:g}", "hls", {"hls_tau": tau}) for tau in taus]
    if chapter == "05_continued_training":
        return _methods("hls", "ct_mu0", "ct_mu05", "ct_rs", "ct_frozen")
    if chapter == "06_retraining":
        return [Need(f"re_{source}_{LOSS_TAGS[loss]}", source, loss=loss)
                for loss in experiments.RETRAIN_LOSSES
                for source in (*experiments.TABLE_II_METHODS, *experiments.RETRAIN_BASELINES)]
    raise ConfigError(f"unknown chapter {chapter!r}; choose one of {', '.join(CHAPTERS)}")


def chapter_seeds(chapter: str, profile: str, seeds=None) -> list[int]:
    """Explicit seeds win; Table II and its retraining (chapter 6) use the profile's table_seeds
    (else its seeds)."""
    if seeds is not None:
        return list(seeds)
    p = experiments.PROFILES[profile]
    if chapter in ("03_main_results", "06_retraining"):
        return list(p.get("table_seeds", p["seeds"]))
    return list(p["seeds"])


def profile_chapters(profile: str) -> list[str]:
    """The chapters a profile makes runs for: all, unless the profile names fewer."""
    return list(experiments.PROFILES[profile].get("chapters", CHAPTERS))


def chapter_configs(chapter: str, profile: str | None = None, seeds=None,
                    overrides: dict | None = None) -> dict[str, list[RunConfig | RetrainConfig]]:
    """key -> one config per seed, for every entry of the chapter."""
    profile = experiments.check_profile(profile)
    return {need.key: [need.config(profile, seed, overrides)
                       for seed in chapter_seeds(chapter, profile, seeds)]
            for need in chapter_needs(chapter, profile)}


def chapter_records(chapter: str, profile: str | None = None, seeds=None,
                    overrides: dict | None = None) -> dict[str, list[runs.RunRecord]]:
    """key -> one RunRecord per seed, from the store or the archive; never trains.

    A missing run raises runs.MissingRun naming the launch command that makes it."""
    profile = experiments.check_profile(profile)
    return {key: [runs.read_run(c, profile, seeds, overrides) for c in configs]
            for key, configs in chapter_configs(chapter, profile, seeds, overrides).items()}


def finished_records(chapter: str, profile: str, seeds=None, overrides: dict | None = None
                     ) -> tuple[dict[str, list[runs.RunRecord]], list[RunConfig]]:
    """What a chapter's plan has finished at `profile`, for pages that compare profiles.

    (key -> the RunRecords that exist, keys with none left out; the configs still missing).
    A profile whose runs are still being made contributes the seeds it has."""
    found, missing = {}, []
    if chapter not in profile_chapters(profile):
        return found, missing
    for key, configs in chapter_configs(chapter, profile, seeds, overrides).items():
        for config in configs:
            record = runs.find_record(config)
            if record is None:
                missing.append(config)
            else:
                found.setdefault(key, []).append(record)
    return found, missing


def family_profiles(profile: str) -> list[str]:
    """The profiles that search the same network as `profile` (cpu: cpu, cpu-long), by length."""
    family = experiments.PROFILES[profile].get("family")
    if family is None:
        return [profile]
    members = [p for p, spec in experiments.PROFILES.items() if spec.get("family") == family]
    return sorted(members, key=lambda p: experiments.PROFILES[p]["fields"]["epochs"])


def parent_records(records: dict[str, list], profile: str | None = None, seeds=None,
                   overrides: dict | None = None) -> dict[str, list[runs.RunRecord]]:
    """key -> the search run whose genotype each retraining record trained (the same order),
    for the keys whose runs have one (not the random cells or ResNet); never trains."""
    return {key: [runs.read_run(r.config.parent, profile, seeds, overrides) for r in recs]
            for key, recs in records.items()
            if recs and all(getattr(r.config, "parent", None) is not None for r in recs)}


# ---- the whole book

# Measured seconds per epoch, by profile and kind of run, for the plan's cost column:
#   cpu: docs/results-cpu.md, 2-core development machine: single-branch runs 186-198 s for
#        3 epochs (~62 s/epoch), two-branch 334-387 s for 3 (~115 s/epoch), continued training
#        122-140 s for its one epoch (~130 s).
#   cpu-long: the fastest of the archived cpu runs of each kind, made two at a time with one
#        thread each as cpu-long's are (darts seed 0: 173 s for 3 epochs; darts_bbn seed 2: 424 s)
#   smoke: about a second an epoch (3 steps of a tiny net), plus start-up.
#   paper: docs/performance.md, one H200: 50 x 77 second-order BBN steps of 1.97 s = 2.1 h,
#        ~150 s/epoch with the per-epoch validation; single-branch runs are not measured.
#   retraining (chapter 6), cpu: docs/retraining.md, a measured step of one thread, 96 steps an
#        epoch: the cell network 15.5 s, ResNet-32 at half width 11.8 s; paper: not measured on
#        a GPU.
SECONDS_PER_EPOCH = {
    ("cpu", "single"): 62, ("cpu", "bilateral"): 115, ("cpu", "continued"): 130,
    ("cpu-long", "single"): 58, ("cpu-long", "bilateral"): 141,
    ("cpu", "retrain_cells"): 16, ("cpu", "retrain_resnet"): 12,
    ("smoke", "single"): 1, ("smoke", "bilateral"): 1, ("smoke", "continued"): 1,
    ("smoke", "retrain_cells"): 1, ("smoke", "retrain_resnet"): 1,
    ("paper", "bilateral"): 150, ("paper", "continued"): 150,
}
START_SECONDS = {"cpu": 5, "cpu-long": 5, "smoke": 5, "paper": 15}   # process start, data, evaluation


def run_kind(config: RunConfig | RetrainConfig) -> str:
    if runs.is_retraining(config):
        return "retrain_resnet" if config.architecture == "resnet" else "retrain_cells"
    if config.parent is not None:
        return "continued"
    return "bilateral" if config.bilateral else "single"


def estimate_seconds(config: RunConfig | RetrainConfig, profile: str) -> float | None:
    """Seconds to train `config` from scratch at `profile`; None where nothing was measured."""
    per_epoch = SECONDS_PER_EPOCH.get((profile, run_kind(config)))
    if per_epoch is None:
        return None
    return START_SECONDS.get(profile, 0) + per_epoch * config.epochs


@dataclass
class PlannedRun:
    config: RunConfig | RetrainConfig
    chapters: list[str]
    keys: list[str]             # what the chapters call it ("darts", "tau=20")
    state: str                  # archived | complete | running | interrupted | failed | missing
    est_seconds: float | None   # from scratch; None: unknown
    holder: str | None = None   # who trains it, when running

    @property
    def method(self) -> str:
        return self.config.method

    @property
    def seed(self) -> int:
        return self.config.seed

    @property
    def run_id(self) -> str:
        return self.config.run_id

    @property
    def parent(self) -> str | None:
        return self.config.parent.run_id if self.config.parent is not None else None

    @property
    def done(self) -> bool:
        return self.state in ("complete", "archived")

    @property
    def starts_from_parent_checkpoint(self) -> bool:
        """A continued search starts from its parent's checkpoint, which the archive does not
        keep; a retraining run needs only its parent's genotype, which the archive does."""
        return self.config.parent is not None and not runs.is_retraining(self.config)


def run_state(config: RunConfig | RetrainConfig) -> tuple[str, str | None]:
    """(state, holder) of one run: complete (local) > archived > the local store's state.

    A status "running" whose lock nobody holds is a run killed mid-way: "interrupted"."""
    folder = runs.runs_dir() / config.run_id
    local = runs._status(folder)["state"]
    if local == "complete":
        return "complete", None
    if runs.archived_folder(config.run_id) is not None:
        return "archived", None
    if local == "running":
        holder = runs.lock_holder(folder)
        return ("running", holder) if holder else ("interrupted", None)
    return ("failed" if local == "failed" else "missing"), None


def book_plan(profile: str | None = None, seeds=None, overrides: dict | None = None,
              chapters=None, methods=None) -> list[PlannedRun]:
    """Every distinct run of the book (or of `chapters`), parents before their children.

    methods: keep only runs of these methods (and the parents they start from)."""
    profile = experiments.check_profile(profile)
    chapters = list(chapters) if chapters is not None else profile_chapters(profile)
    by_id: dict[str, tuple[RunConfig | RetrainConfig, list[str], list[str]]] = {}

    def add(config: RunConfig | RetrainConfig, chapter: str | None, key: str | None):
        if config.parent is not None:     # the parent first, so it comes earlier in the plan
            add(config.parent, None, None)
        _, needed_by, keys = by_id.setdefault(config.run_id, (config, [], []))
        if chapter is not None and chapter not in needed_by:
            needed_by.append(chapter)
        if key is not None and key not in keys:
            keys.append(key)

    for chapter in chapters:
        for key, configs in chapter_configs(chapter, profile, seeds, overrides).items():
            for config in configs:
                if methods is None or config.method in methods:
                    add(config, chapter, key)

    plan = []
    for config, needed_by, keys in by_id.values():
        state, holder = run_state(config)
        plan.append(PlannedRun(config, needed_by, keys, state,
                               estimate_seconds(config, profile), holder))
    return plan


def label(run: PlannedRun) -> str:
    """The method, and the sweep key when that is how a chapter names the run (hls tau=20)."""
    extra = [k for k in run.keys if k != run.method]
    return run.method + (f" {extra[0]}" if extra and run.method not in run.keys else "")


def format_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def plan_table(plan: list[PlannedRun]) -> str:
    """The plan as the `plan` command prints it, with the totals."""
    lines = [f"{'method':<20} {'seed':>4}  {'run id':<34} {'parent':<28} {'state':<12} "
             f"{'est. cost':>12}  chapters"]
    for r in plan:
        chapters = ", ".join(c.split("_")[0] for c in r.chapters) or "(parent)"
        state = r.state + (f" by {r.holder}" if r.holder else "")
        lines.append(f"{label(r):<20} {r.seed:>4}  {r.run_id:<34} {r.parent or '-':<28} "
                     f"{state:<12} {format_seconds(r.est_seconds):>12}  {chapters}")
    todo = [r for r in plan if not r.done]
    known = [r.est_seconds for r in todo if r.est_seconds is not None]
    unknown = len(todo) - len(known)
    left = format_seconds(sum(known)) + (f" + {unknown} of unknown cost" if unknown else "")
    counts = {s: sum(r.state == s for r in plan) for s in dict.fromkeys(r.state for r in plan)}
    lines.append(f"{len(plan)} runs ({', '.join(f'{n} {s}' for s, n in counts.items())}); "
                 f"left to train: {len(todo)} runs, about {left} on one worker")
    return "\n".join(lines)
