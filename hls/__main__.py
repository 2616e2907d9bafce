"""Command line: python -m hls {run, list, table, plan, launch, publish, verify, data, bench,
book} ...

Bad input ends with one line `hls: error: ...` naming the problem and the fix, exit code 2; a
run that diverged ends the same way with exit code 1.
"""

from __future__ import annotations

import argparse
import sys

from .config import ConfigError
from .data import DataError


def parse_settings(pairs: list[str], flag: str = "--set", example: str = "epochs=3") -> dict:
    out = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"{flag} expects key=value (got {pair!r}), e.g. {flag} {example}")
        out[key] = value
    return out


def parse_speed(args):
    """The device's default Speed with the `--speed lever=on|off` changes, or None."""
    if not getattr(args, "speed", None):
        return None
    from .speed import Speed
    from .train import resolve_device
    settings = parse_settings(args.speed, "--speed", "cuda_graph=off")
    return Speed.default_for(resolve_device(args.device)).override(settings)


def cmd_run(args) -> None:
    from . import experiments, runs
    profile = experiments.check_profile(args.profile)
    experiments.check_method(args.method)
    overrides = parse_settings(args.set)
    speed = parse_speed(args)
    for seed in experiments.seeds_of(profile, args.seeds):
        cfg = experiments.config(args.method, profile, seed, overrides)
        record = runs.get_run(cfg, args.device, speed, force=args.force)
        ev = record.eval
        print(f"{cfg.run_id}  seed {seed}  test acc {100 * ev['paper_protocol']['acc']:.2f}% "
              f"(paper protocol, mu={ev['paper_protocol']['mu']})  "
              f"{100 * ev['val_chosen']['acc']:.2f}% (mu={ev['val_chosen']['mu']} chosen on val)"
              f"  {record.facts['wall_seconds']:.0f} s on {record.facts['device_name']}")


def cmd_list(args) -> None:
    from .runs import list_runs, runs_dir
    rows = list_runs()
    if not rows:
        print(f"no runs in {runs_dir()}")
    for row in rows:
        extra = f"  ({row['reason']})" if "reason" in row else ""
        print(f"{row['run']:<32} {row['state']:<9} epoch {row.get('epoch', '?')}{extra}")


def cmd_table(args) -> None:
    """The book's Table II (hls.tables.accuracy_table) over the finished runs; trains nothing."""
    import pandas as pd
    from . import experiments, runs, tables
    profile = experiments.check_profile(args.profile)
    methods = args.methods or experiments.PROFILES[profile].get("table_methods",
                                                             experiments.TABLE_II_METHODS)
    done, not_run = {}, []
    for method in methods:
        experiments.check_method(method)
        configs = [experiments.config(method, profile, seed, parse_settings(args.set))
                   for seed in experiments.seeds_of(profile, args.seeds)]
        records = [r for r in map(runs.find_record, configs) if r is not None]  # store, then archive
        if records:
            done[method] = records
        else:
            not_run.append(experiments.LABELS[method])
    print(f"profile {profile}; test accuracy in %, mean ± std over seeds; paper = the paper's Table II")
    table = tables.accuracy_table(done).astype(object) if done else pd.DataFrame(
        columns=["seeds", "paper protocol (%)"])
    for name in not_run:
        table.loc[name] = ["0", "not run"] + ["–"] * (len(table.columns) - 2)
    with pd.option_context("display.width", 200, "display.max_columns", None):
        print(table.to_string())


def cmd_plan(args) -> None:
    from . import plan
    print(plan.plan_table(plan.book_plan(args.profile, args.seeds, parse_settings(args.set),
                                         args.chapters, args.methods)))


def cmd_launch(args) -> int:
    from .launch import launch
    result = launch(args.profile, args.seeds, parse_settings(args.set), backend=args.backend,
                    workers=args.workers, runs_per_gpu=args.runs_per_gpu, device=args.device,
                    retrain=args.retrain, chapters=args.chapters, methods=args.methods,
                    threads=args.threads, time_limit=args.time_limit, partition=args.partition,
                    slurm=parse_settings(args.slurm, "--slurm", "account=myproject"),
                    cluster=args.slurm_cluster, ray_address=args.ray_address)
    print(result.table())
    return 0 if result.ok else 1


def cmd_publish(args) -> None:
    from .experiments import check_profile
    from .launch import folder_bytes, format_bytes, publish
    from .runs import archive_dir, runs_dir
    profile = check_profile(args.profile)
    done = publish(profile, args.seeds, parse_settings(args.set), args.chapters, args.methods)
    for run, what in done:
        print(f"{what:<10} {run.method:<16} seed {run.seed:<3} {run.run_id}")
    if not done:
        print(f"no complete run of the {profile} plan in {runs_dir()}; "
              f"run python -m hls launch --profile {profile} first")
    archive = archive_dir()
    runs_there = [f for f in archive.glob("*/*") if f.is_dir()] if archive.exists() else []
    size = folder_bytes(archive) if archive.exists() else 0
    print(f"archive {archive}: {len(runs_there)} runs, {format_bytes(size)}")


def cmd_verify(args) -> int:
    from .experiments import check_profile
    from .launch import verify, verify_table
    checks = verify(check_profile(args.profile), args.methods, args.seeds,
                    parse_settings(args.set), device=args.device)
    print(verify_table(checks))
    return 0 if all(c.matches for c in checks) else 1


def cmd_train_one(args) -> None:
    """The launcher's worker: train (or reuse) one config with the store's get_run."""
    from .launch import train_one
    print(train_one(args.config, args.device), flush=True)


def cmd_data(args) -> None:
    import time
    from .data import load_long_tailed
    start = time.perf_counter()
    data = load_long_tailed(args.dataset, args.ratio, seed=args.seed)
    counts = (data.train.class_counts + data.val.class_counts).tolist()
    print(f"{args.dataset}-LT ratio {args.ratio}: per-class {counts} ({sum(counts)} images); "
          f"train {len(data.train)}, val {len(data.val)}, test {len(data.test)} "
          f"[{time.perf_counter() - start:.1f} s]")


def cmd_bench(args) -> None:
    from . import agreement, bench
    if args.check:
        agreement.check(args)
    elif args.trace:
        bench.trace(args)
    elif args.levers:
        bench.levers(args)
    else:
        bench.main(args)


def cmd_book(args) -> None:
    from .book import run_book
    from .experiments import check_profile
    overrides = parse_settings(args.set)
    print(run_book(check_profile(args.profile), seeds=args.seeds, device=args.device,
                   overrides=overrides or None, build=not args.no_build))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hls", description=" ".join(__doc__.split("\n\n")[0].split()))
    public = "run,list,table,plan,launch,publish,verify,data,bench,book"
    sub = p.add_subparsers(dest="command", required=True, metavar="{" + public + "}")

    def common(sp, method=False):
        if method:
            sp.add_argument("method", help="e.g. darts, darts_bbn, hls (see experiments.METHODS)")
        sp.add_argument("--profile", help="smoke, cpu (default, or HLS_PROFILE), cpu-long or paper")
        sp.add_argument("--seeds", type=int, nargs="+", help="default: the profile's seeds")
        sp.add_argument("--set", action="append", metavar="KEY=VALUE",
                        help="override any config field, e.g. --set epochs=3 --set hls_tau=2")

    sp = sub.add_parser("run", help="train (or read from the run store) one method")
    common(sp, method=True)
    sp.add_argument("--device", help="cpu, cuda or auto (default: HLS_DEVICE or auto)")
    sp.add_argument("--force", action="store_true", help="retrain even if the run is complete")
    sp.add_argument("--speed", action="append", metavar="LEVER=on|off",
                    help="change a speed lever (hls.speed.Speed), e.g. --speed cuda_graph=off; "
                         "levers change speed, not the run's identity")
    sp.set_defaults(func=cmd_run)

    sp = sub.add_parser("list", help="runs in the store and their state")
    sp.set_defaults(func=cmd_list)

    sp = sub.add_parser("table", help="results table of finished runs")
    common(sp)
    sp.add_argument("--methods", nargs="+")
    sp.set_defaults(func=cmd_table)

    def selection(sp):
        from .plan import CHAPTERS
        sp.add_argument("--chapters", nargs="+", choices=CHAPTERS, help="default: every chapter")
        sp.add_argument("--methods", nargs="+", help="only these methods (and their parents)")

    sp = sub.add_parser("plan", help="every run of the book: state and estimated cost")
    common(sp)
    selection(sp)
    sp.set_defaults(func=cmd_plan)

    sp = sub.add_parser("launch", help="train the plan's missing runs in parallel")
    common(sp)
    selection(sp)
    from .launch import BACKENDS, DEFAULT_TIME_LIMIT_MIN, SLURM_CPUS_PER_TASK
    sp.add_argument("--backend", default="local", choices=BACKENDS,
                    help="local (worker processes here, the default), slurm (submitit job "
                         "arrays) or ray (Ray tasks)")
    sp.add_argument("--workers", type=int,
                    help="runs at once (default: 1 on the CPU, GPUs x runs-per-gpu on CUDA; "
                         "slurm: the job arrays' parallelism, default unlimited)")
    sp.add_argument("--runs-per-gpu", type=int, default=1,
                    help="runs sharing one GPU (local and ray; a Slurm task has its own GPU)")
    sp.add_argument("--threads", type=int,
                    help="torch threads (and CPUs) per run (default: the cores divided between "
                         f"the runs at once; slurm: {SLURM_CPUS_PER_TASK})")
    sp.add_argument("--device", help="cpu, cuda or auto (default: HLS_DEVICE or auto; slurm: "
                                     "cuda, cpu asks for no GPU)")
    sp.add_argument("--retrain", action="store_true",
                    help="ignore the archive: train every run into the local store")
    slurm = sp.add_argument_group("slurm backend")
    slurm.add_argument("--time-limit", type=int, default=DEFAULT_TIME_LIMIT_MIN,
                       metavar="MINUTES", help="per task; a task that reaches it is requeued "
                       f"and resumes from its epoch checkpoint (default {DEFAULT_TIME_LIMIT_MIN})")
    slurm.add_argument("--partition", help="the Slurm partition (default: the cluster's)")
    slurm.add_argument("--slurm", action="append", metavar="KEY=VALUE",
                       help="any other submitit Slurm parameter, e.g. --slurm account=me "
                            "--slurm mem=32G --slurm max_num_timeout=5")
    slurm.add_argument("--slurm-cluster", default="slurm", choices=("slurm", "local"),
                       help="local: submitit's local executor runs the tasks on this machine")
    ray = sp.add_argument_group("ray backend")
    ray.add_argument("--ray-address", help="a running Ray cluster (default: RAY_ADDRESS, else "
                                           "a local instance for the launch)")
    sp.set_defaults(func=cmd_launch)

    sp = sub.add_parser("publish", help="copy the plan's complete runs into results/<profile>")
    common(sp)
    selection(sp)
    sp.set_defaults(func=cmd_publish)

    sp = sub.add_parser("verify", help="retrain archived runs and compare with the archive")
    common(sp)
    sp.add_argument("--methods", nargs="+")
    sp.add_argument("--device", default="cpu",
                    help="where to retrain (default cpu: bit for bit; else within 1e-4)")
    sp.set_defaults(func=cmd_verify)

    sp = sub.add_parser("train-one")    # the launcher's worker; not for people
    sp.add_argument("config", help="a run folder or a config.json")
    sp.add_argument("--device")
    sp.set_defaults(func=cmd_train_one)

    sp = sub.add_parser("data", help="decode and cache the data set, print the LT counts")
    sp.add_argument("--dataset", default="cifar10")
    sp.add_argument("--ratio", type=float, default=100)
    sp.add_argument("--seed", type=int, default=0)
    sp.set_defaults(func=cmd_data)

    sp = sub.add_parser("bench", help="search-step throughput and memory, fast vs textbook")
    sp.add_argument("--device", help="cpu, cuda or auto")
    sp.add_argument("--sizes", nargs="+", default=["paper", "cpu"], help="paper and/or cpu")
    sp.add_argument("--repeats", type=int, default=3)
    sp.add_argument("--orders", type=int, nargs="+", default=[1, 2])
    sp.add_argument("--check", action="store_true",
                    help="instead: does the fast path compute the same step as the exact one?")
    sp.add_argument("--data", choices=["synthetic", "real"], default="synthetic",
                    help="with --check: random images, or CIFAR-10-LT (decoded once)")
    sp.add_argument("--levers", action="store_true",
                    help="instead: the default step with each speed lever turned off alone")
    sp.add_argument("--rounds", type=int, default=2, help="with --levers: interleaved rounds")
    sp.add_argument("--trace", action="store_true",
                    help="instead: torch.profiler table of the default step (first size, order)")
    sp.set_defaults(func=cmd_bench)

    sp = sub.add_parser("book", help="papermill batch: every chapter at one profile, rendered")
    common(sp)
    sp.add_argument("--device")
    sp.add_argument("--no-build", action="store_true", help="execute only, do not render HTML")
    sp.set_defaults(func=cmd_book)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except (ConfigError, DataError, ValueError) as exc:
        print(f"hls: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("hls: interrupted; the run resumes from its last finished epoch next time",
              file=sys.stderr)
        return 130
    except RuntimeError as exc:
        from .runs import RunBusy, RunFailed
        if isinstance(exc, (RunFailed, RunBusy)):   # a diverged run: 1; a busy one: 2
            print(f"hls: error: {exc}", file=sys.stderr)
            return 1 if isinstance(exc, RunFailed) else 2
        raise


if __name__ == "__main__":
    sys.exit(main())
