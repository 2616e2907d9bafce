"""The paper's methods and the three profiles, as data.

A method is a set of RunConfig fields (timm-style registry: name -> fields); a profile is the
scale (network size, epochs, batch, seeds). `config(method, profile, seed, **overrides)` gives the
RunConfig of one run. Continued-training methods name the run they start from (`parent`).
"""

from __future__ import annotations

import os

from .config import ConfigError, RunConfig, coerce_overrides

# ---- methods: Table I / II rows, ablations and continued training (Sec. V)

TAU = 5.0   # Eq. (17). Our reading of Fig. 5: the factor stays near 1 while mu is near 1
            # (1 - e^-5 = 0.993) and falls to 0 as mu -> 0 (0.39 at mu = 0.1).
K = 10.0    # Eq. (18). "Prolonged soaking" in the instance head, then a rapid switch:
            # with k = 10, mu > 0.95 until t/T = 0.35 and < 0.05 after t/T = 0.65.

METHODS: dict[str, dict] = {
    "darts": dict(),                        # L cells, global pooling, a linear classifier
    # capacity-matched ablation: a searched normal cell (own alphas) before the classifier, as
    # each BBN head has; not a row of the paper
    "darts_head_cell": dict(head_cell=True),
    "darts_resample": dict(sampler="class_balanced"),
    "darts_reweight": dict(reweight="class_balanced"),
    "darts_bbn": dict(bilateral=True),
    "hls": dict(bilateral=True, hls_tau=TAU),
    "hls_rs": dict(bilateral=True, hls_tau=TAU, mixing="reverse_sigmoid", mixing_k=K),
    # Fig. 6 variant: the HLS factor also scales the backbone's weight learning rate
    "hls_weights": dict(bilateral=True, hls_tau=TAU, hls_scope="arch+weights"),
    # Sec. V.D, each continued from the hls run
    "ct_mu0": dict(bilateral=True, hls_tau=TAU, mixing="constant", mixing_value=0.0),
    "ct_mu05": dict(bilateral=True, hls_tau=TAU, mixing="constant", mixing_value=0.5),
    "ct_rs": dict(bilateral=True, hls_tau=TAU, mixing="reverse_sigmoid", mixing_k=K),
    # "the backbone frozen and solely focusing on the class-sampling head": the instance head
    # is frozen too (at mu = 0 it has no loss anyway, and so is never stepped)
    "ct_frozen": dict(bilateral=True, hls_tau=TAU, mixing="constant", mixing_value=0.0,
                      freeze=("backbone", "ins")),
}
CONTINUED_FROM = {"ct_mu0": "hls", "ct_mu05": "hls", "ct_rs": "hls", "ct_frozen": "hls"}

LABELS = {
    "darts": "DARTS",
    "darts_head_cell": "DARTS + head cell (ablation)",
    "darts_resample": "DARTS+Re-sampling",
    "darts_reweight": "DARTS+Re-weighting",
    "darts_bbn": "DARTS+BBN",
    "hls": "HLS",
    "hls_rs": "HLS+Reverse Sigmoid",
    "hls_weights": "HLS (weights scaled too)",
    "ct_mu0": "continued, mu = 0",
    "ct_mu05": "continued, mu = 0.5",
    "ct_rs": "continued, reverse sigmoid",
    "ct_frozen": "continued, backbone frozen",
}

# The paper's own numbers (test accuracy in %), shown only as the paper's reference column.
PAPER_TABLE_I = {"darts": 64.0, "darts_resample": 61.0, "darts_bbn": 52.0}
PAPER_TABLE_II = {"darts": 64.56, "darts_resample": 61.20, "darts_bbn": 52.14, "hls": 65.12,
                  "hls_rs": 61.85, "ct_mu05": 63.12}
TABLE_II_METHODS = ["darts", "darts_resample", "darts_reweight", "darts_bbn", "hls", "hls_rs",
                    "ct_mu05"]   # "HLS + continued training": the mu = 0.5 variant, Sec. V.D

# The rows of Table II that the paper's argument is about; a longer search runs only these.
CORE_METHODS = ["darts", "darts_resample", "darts_bbn", "hls", "hls_rs"]

# ---- profiles

CPU_LONG_EPOCHS = 16    # chosen from measured epoch times: docs/results-cpu-long.md

PROFILES: dict[str, dict] = {
    # The whole book in a few minutes: every code path runs, the numbers mean nothing.
    "smoke": dict(
        fields=dict(channels=4, layers=3, nodes=2, epochs=2, steps_per_epoch=3, batch_size=16,
                    test_per_class=50, val_curve_images=200, primitives=("none", "max_pool_3x3", "skip_connect",
                                                   "sep_conv_3x3")),
        seeds=[0, 1], continue_epochs=1, taus=[1.0, 20.0],
        why="code paths only: tiny net, 3 steps an epoch, a 500-image test set"),
    # The default: the whole book in about an hour on two CPU cores, with numbers that mean
    # something; each choice was measured on validation (docs/results-cpu.md, "How the cpu
    # profile was chosen").
    "cpu": dict(
        fields=dict(channels=16, layers=3, nodes=2, stem_stride=2, epochs=3, batch_size=64,
                    lr=0.05, order=1, val_curve_images=1000, augment_pad=0,
                    primitives=("none", "max_pool_3x3", "avg_pool_3x3", "skip_connect",
                                "sep_conv_3x3", "dil_conv_3x3")),
        seeds=[0], table_seeds=[0, 1, 2], continue_epochs=1, taus=[20.0], family="cpu",
        why="C=16, 3 cells of 2 nodes on 16x16 maps (stride-2 stem), 3x3 ops only, "
            "3 first-order epochs of batch 64, weight lr 0.05, flips without crops (both chosen "
            "on validation)"),
    # Sec. V.A exactly: 8 cells, C=16, batch 128 per sampler, weight lr 0.02 cosine, alpha lr
    # 0.02, weight decay 3e-4, T = 50, 80/20 split, ratio 100. Second-order as in DARTS.
    "paper": dict(
        fields=dict(channels=16, layers=8, nodes=4, epochs=50, batch_size=128, lr=0.02,
                    arch_lr=0.02, weight_decay=3e-4, order=2),
        seeds=[0, 1, 2], continue_epochs=25, taus=[1.0, 20.0],
        why="the paper's hyper-parameters (Sec. V.A), for a GPU"),
}


# The cpu network searched for longer, so that the search has a late stage (Sec. IV): the five
# core rows of Table II over three seeds, and the chapters those runs make (1-3; the claims page).
PROFILES["cpu-long"] = dict(
    fields={**PROFILES["cpu"]["fields"], "epochs": CPU_LONG_EPOCHS},
    seeds=[0, 1, 2], continue_epochs=1, taus=[20.0], family="cpu",
    chapters=["01_motivation", "02_method", "03_main_results"], table_methods=CORE_METHODS,
    why=f"the cpu network searched for {CPU_LONG_EPOCHS} epochs instead of 3: the five core rows "
        "of Table II over seeds 0, 1, 2 in about four hours of two cores "
        "(docs/results-cpu-long.md has the arithmetic)")


def default_profile() -> str:
    return os.environ.get("HLS_PROFILE") or "cpu"


def check_profile(profile: str | None) -> str:
    profile = profile or default_profile()
    if profile not in PROFILES:
        raise ConfigError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
    return profile


def check_method(method: str) -> str:
    if method not in METHODS:
        raise ConfigError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    return method


def seeds_of(profile: str | None, seeds=None) -> list[int]:
    return list(seeds) if seeds is not None else list(PROFILES[check_profile(profile)]["seeds"])


def config(method: str, profile: str | None = None, seed: int = 0,
           overrides: dict | None = None) -> RunConfig:
    """The RunConfig of `method` at `profile` (overrides win over both)."""
    profile = check_profile(profile)
    check_method(method)
    p = PROFILES[profile]
    overrides = dict(overrides or {})
    continue_epochs = int(overrides.pop("continue_epochs", p["continue_epochs"]))
    fields = {**p["fields"], **METHODS[method], **coerce_overrides(overrides)}
    if method in CONTINUED_FROM:
        fields["parent"] = config(CONTINUED_FROM[method], profile, seed, overrides)
        fields["epochs"] = continue_epochs
    return RunConfig(method=method, seed=seed, **fields)


# ---- the evaluation phase (chapter 6): the derived cells trained from scratch

# What chapter 6 trains from scratch, beside the Table II methods' genotypes: random cells of the
# same space (one draw per seed) and ResNet-32, under both losses of hls.retrain.
RETRAIN_BASELINES = ("random", "resnet")
RETRAIN_LOSSES = ("ce", "logit_adjusted")
RETRAIN_PREFIX = "retrain."     # `--set retrain.epochs=2` sets a RetrainConfig field

# The literature's CIFAR-10-LT (ratio 100) numbers for ResNet-32 at 200 epochs (Cao et al.,
# NeurIPS 2019, Table 2, errors 29.64 and 22.97), shown only as the literature's reference.
LITERATURE_RESNET32 = {"ce": ("cross-entropy (Cao et al. 2019)", 70.36),
                       "logit_adjusted": ("LDAM-DRW, another long-tail method (Cao et al. 2019)",
                                          77.03)}

# Per profile: the fields of a cell network and of ResNet-32, and why.
RETRAIN_PROFILES: dict[str, dict] = {
    "smoke": dict(
        cells=dict(channels=4, layers=3, epochs=2, steps_per_epoch=3, batch_size=16),
        resnet=dict(resnet_blocks=1, resnet_widths=(4, 8, 16)),
        why="code paths only: every part of DARTS' recipe on a tiny net, 3 steps an epoch"),
    # Sized by a measured step (scripts/retrain_step.py, one thread, process CPU time, on the
    # 2-core development machine; docs/retraining.md): batch 128 of the 5-cell C=8 network
    # 0.16 s, of ResNet-32 at half width 0.12 s; 96 steps an epoch, so 15.5 s and 11.8 s an
    # epoch, plus about 8 s for start, data and the test set. 48 cell runs x (3 x 15.5 + 8) s
    # + 6 ResNet runs x (3 x 11.8 + 8) s = 2,900 CPU seconds: about 24 minutes on two cores.
    "cpu": dict(
        cells=dict(channels=8, layers=5, stem_stride=2, epochs=3, batch_size=128, lr=0.05,
                   augment_pad=0, cutout=0, drop_path=0.0, auxiliary_weight=0.0),
        resnet=dict(stem_stride=2, resnet_widths=(8, 16, 32)),
        why="C=8, 5 cells (3 normal, 2 reduction) on 16x16 maps, 3 epochs of batch 128, lr "
            "0.05 cosine, no crops, cutout, drop-path or auxiliary head (3 epochs underfit, as "
            "the search profile found on validation); ResNet-32 at half width (8/16/32), same "
            "recipe; a 0.16 s step x 96 steps x 3 epochs: about 24 min for the 54 runs on 2 "
            "cores"),
    # DARTS' evaluation (quark0/darts, cnn/train.py) for the cells: the RetrainConfig defaults;
    # for ResNet-32 LDAM-DRW's 200-epoch recipe (kaidic/LDAM-DRW, cifar_train.py)
    "paper": dict(
        cells=dict(),
        resnet=dict(epochs=200, batch_size=128, lr=0.1, momentum=0.9, weight_decay=2e-4,
                    lr_schedule="warmup_step", warmup_epochs=5, lr_milestones=(160, 180),
                    lr_step_factor=0.01, grad_clip=None, cutout=0, drop_path=0.0,
                    auxiliary_weight=0.0),
        why="DARTS' evaluation recipe for the cells (20 cells, C=36, 600 epochs, batch 96, "
            "lr 0.025 cosine, auxiliary weight 0.4, cutout 16, drop-path 0.2, weight decay "
            "3e-4); LDAM-DRW's for ResNet-32 (200 epochs, batch 128, lr 0.1, 5-epoch warm-up, "
            "x0.01 after epochs 160 and 180, weight decay 2e-4), for a GPU"),
}


def split_overrides(overrides: dict | None) -> tuple[dict, dict]:
    """(the search's overrides, the retraining's): `retrain.KEY` settings go to RetrainConfig."""
    search, retrain = {}, {}
    for key, value in (overrides or {}).items():
        if key.startswith(RETRAIN_PREFIX):
            retrain[key[len(RETRAIN_PREFIX):]] = value
        else:
            search[key] = value
    return search, retrain


def retrain_config(source: str, profile: str | None = None, seed: int = 0, loss: str = "ce",
                   overrides: dict | None = None):
    """The RetrainConfig that trains `source` from scratch at `profile`: a method's genotype
    (its search run at `seed` is the parent), "random" (the cell drawn with `seed`) or
    "resnet". The search's overrides go to the parent, `retrain.KEY` ones to the retraining;
    the data set is always the search's."""
    from .retrain import RetrainConfig, coerce_retrain_overrides
    profile = check_profile(profile)
    search_overrides, retrain_overrides = split_overrides(overrides)
    if source not in RETRAIN_BASELINES:
        check_method(source)
    # the search run of the source (or, for the baselines, of plain DARTS: its space and data)
    search = config(source if source not in RETRAIN_BASELINES else "darts", profile, seed,
                    search_overrides)
    p = RETRAIN_PROFILES[profile]
    fields = {**p["cells"], **(p["resnet"] if source == "resnet" else {}),
              **coerce_retrain_overrides(retrain_overrides)}
    data = {k: getattr(search, k) for k in ("dataset", "ratio", "val_fraction", "data_seed",
                                             "test_per_class")}
    if source == "random":          # drawn from the search's space
        fields = {"primitives": search.primitives, "nodes": search.nodes, **fields}
    architecture = "searched" if source not in RETRAIN_BASELINES else source
    return RetrainConfig(architecture=architecture, loss=loss, seed=seed,
                         parent=search if architecture == "searched" else None,
                         **{**data, **fields})
