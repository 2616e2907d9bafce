"""Time one training step of the evaluation phase's networks on the CPU, for sizing a profile.

    python scripts/retrain_step.py --profile cpu [--threads 1] [--steps 20]
    python scripts/retrain_step.py --profile paper --steps 3 --no-test   # the paper's size

For the profile's cell network (with the genotype of the archived DARTS run of seed 0, or a
random cell when there is none) and its ResNet, on real CIFAR-10-LT batches with the profile's
augmentation: the median seconds of a training step, in process CPU time (what a shared machine
does not inflate) and in wall time, and what an epoch and a run of the profile's length cost.
"""

import argparse
import statistics
import time

import torch

from hls import experiments, runs
from hls.retrain import Retraining


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--no-test", action="store_true", help="do not time the test set")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    for source in ("darts", "resnet"):
        config = experiments.retrain_config(source, args.profile, 0, "ce")
        genotype = None
        if config.parent is not None:
            parent = runs.find_record(config.parent)
            if parent is None:      # no archived search: time a random cell of the same space
                config = experiments.retrain_config("random", args.profile, 0, "ce")
            else:
                genotype = parent.genotype
        data = runs._data(config.dataset, config.ratio, config.val_fraction, config.data_seed,
                          "cpu", config.test_per_class)
        trainer = Retraining(config, data, torch.device("cpu"), genotype)
        trainer.net.train()
        cpu, wall = [], []
        for step in range(args.steps + 2):      # two warm-up steps
            c0, w0 = time.process_time(), time.perf_counter()
            trainer.step(*trainer.batch())
            if step >= 2:
                cpu.append(time.process_time() - c0)
                wall.append(time.perf_counter() - w0)
        eval_cpu = eval_wall = 0.0
        if not args.no_test:
            c0, w0 = time.process_time(), time.perf_counter()
            trainer.evaluate()
            eval_cpu, eval_wall = time.process_time() - c0, time.perf_counter() - w0
        step_cpu, step_wall = statistics.median(cpu), statistics.median(wall)
        epoch_cpu = step_cpu * trainer.steps_per_epoch
        total = config.epochs * epoch_cpu + eval_cpu
        print(f"{config.method} ({args.threads} thread(s)): step {step_cpu * 1000:.0f} ms CPU "
              f"({step_wall * 1000:.0f} ms wall), batch {config.batch_size}, "
              f"{trainer.steps_per_epoch} steps an epoch = {epoch_cpu:.1f} s CPU; test set "
              f"{eval_cpu:.1f} s CPU ({eval_wall:.1f} s wall); {config.epochs} epochs + test = "
              f"{total:.0f} s CPU ({total / 3600:.1f} h)", flush=True)


if __name__ == "__main__":
    main()
