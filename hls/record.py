"""What a run record holds: the contract between the training loops, the run store, the
tables and figures, the command line and the notebooks, stated once.

A run's folder (hls.runs) holds config.json, metrics.json (one dict per epoch: every key the
epoch loop returns but the alphas), alphas.json (the alphas and the derived genotype per epoch;
search runs only), eval.json (the final evaluation), genotype.json and facts.json (how it ran).
Each mapping below names a file's keys with what they mean; tests/test_record.py holds every
freshly trained record and every archived one to them, so a key added to a loop without a line
here fails there rather than reaching a page unexplained.
"""

from __future__ import annotations

# ---- a search run (hls.train.Search)

SEARCH_EPOCH = {
    "epoch": "1-based epoch number",
    "mu": "the epoch's mixing ratio (1.0 for a one-head network)",
    "hls_factor": "the factor on the backbone's architecture lr (1.0 without HLS)",
    "lr": "the weight learning rate of the epoch",
    "arch_lr_backbone": "the backbone's architecture learning rate (factor x arch_lr, 0 when frozen)",
    "train_loss": "mean training loss over the epoch's steps",
    "train_acc": "mean training accuracy over the epoch's steps",
    "val_loss": "validation loss at the epoch's mu (a subsample, config.val_curve_images)",
    "val_acc": "validation accuracy at the epoch's mu",
    "val_bacc": "balanced (mean per-class) validation accuracy at the epoch's mu",
    "arch_grad_norm": "{component: mean norm of its alpha gradient over the epoch's steps}",
    "arch_update_norm": "{component: mean norm of its alpha update over the epoch's steps}",
    "skip_count": "skip connections in the epoch's derived genotype",
    "seconds": "wall seconds of the epoch",
}
TWO_HEAD_EPOCH = {   # a bilateral (BBN) network also reports each head alone
    "val_acc_ins": "validation accuracy of the instance-sampling head alone",
    "val_bacc_ins": "balanced validation accuracy of the instance-sampling head alone",
    "val_acc_cls": "validation accuracy of the class-sampling head alone",
    "val_bacc_cls": "balanced validation accuracy of the class-sampling head alone",
}
ALPHA_KEYS = ("alphas", "genotype")   # per epoch in alphas.json, not in metrics.json

SEARCH_EVAL = {
    "mu_grid": "the test-time mixing ratios evaluated (None for a one-head network: mu = 1)",
    "test_acc": "test accuracy at each mu of the grid",
    "val_acc": "validation accuracy at each mu of the grid",
    "val_bacc": "balanced validation accuracy at each mu of the grid",
    "paper_protocol": "{mu, acc}: the mu_test with the best test accuracy (the paper's protocol)",
    "val_chosen": "{mu, acc}: mu_test chosen by balanced validation accuracy, measured on test",
    "val_chosen_plain": "{mu, acc}: mu_test chosen by plain validation accuracy",
    "per_class": "test accuracy per class at the val-chosen mu",
    "groups": "{head, middle, tail, many, medium[, few]: mean per-class test accuracy}",
    "train_counts": "training images per class",
    "classes": "class names",
}

# ---- a retraining run (hls.retrain.Retraining)

RETRAIN_EPOCH = {
    "epoch": "1-based epoch number",
    "lr": "the weight learning rate of the epoch",
    "drop_prob": "the drop-path probability of the epoch",
    "train_loss": "mean training loss over the epoch's steps",
    "train_acc": "mean training accuracy over the epoch's steps",
    "seconds": "wall seconds of the epoch",
}
RETRAIN_EVAL = {
    "acc": "test accuracy",
    "balanced_acc": "mean per-class test accuracy (equal to acc on the balanced test set)",
    "test_loss": "test loss",
    "per_class": "test accuracy per class",
    "groups": "{head, middle, tail, many, medium[, few]: mean per-class test accuracy}",
    "train_counts": "training images per class",
    "classes": "class names",
    "parameters": "parameters of the network that classifies at test time (no auxiliary head)",
    "multiply_adds": "multiply-adds of one 32x32 image through that network",
}

# ---- how any run ran (hls.runs)

FACTS = {
    "device": "torch device type",
    "device_name": "the GPU's name, or the CPU with its torch threads",
    "torch": "torch version",
    "torch_threads": "torch's intra-op threads",
    "hls": "hls version",
    "git_commit": "HEAD's short hash (+dirty when hls/ differed from it)",
    "code_fingerprint": "sha256 of the sources that decide the numbers (runs.NUMBER_SOURCES)",
    "wall_seconds": "training and evaluation wall time, summed over resumed sittings",
    "peak_memory_bytes": "peak GPU memory, or the process's peak resident memory on the CPU",
    "speed": "the Speed levers the run used",
    "host": "the machine's name",
    "finished": "local time the record was completed",
}
RETRAIN_FACTS = {
    "kind": '"retrain"',
    "retrain_version": "hls.retrain's own version (RETRAIN_VERSION)",
}


def epoch_keys(retraining: bool, two_heads: bool = False) -> set[str]:
    """The keys of one metrics.json entry for a run of this kind."""
    if retraining:
        return set(RETRAIN_EPOCH)
    return set(SEARCH_EPOCH) | (set(TWO_HEAD_EPOCH) if two_heads else set())


def eval_keys(retraining: bool) -> set[str]:
    return set(RETRAIN_EVAL if retraining else SEARCH_EVAL)


def facts_keys(retraining: bool) -> set[str]:
    return set(FACTS) | (set(RETRAIN_FACTS) if retraining else set())
