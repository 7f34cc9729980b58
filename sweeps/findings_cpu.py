"""The paper's findings, checked on a CPU: Table 1's eight Thin-ResNet recipes at equal compute, 3 seeds each.

8 recipes (every valid loss x sampler pair of Table 1) x embedding sizes 10, 50, 512 x seeds 0, 1, 2 =
72 trials of the narrow Thin-ResNet-34 (model.channels=8) on the ``full`` corpus preset, one CPU each,
two at a time, scheduler fifo: every trial trains its whole budget and is scored once, at its end, so
every cell is reported at the same budget (no early stopping, no pick among evaluations).

Equal compute: one batch size, 24 clips, for both samplers (balanced: 12 systems x 2 clips; random: 24
clips drawn uniformly), and a fixed step budget: ``train.epoch_steps=clips`` makes an epoch
len(train) // 24 steps for either sampler (97 on the full preset; the balanced sampler's own pass is
longer), ``train.steps_per_epoch`` caps it below that, so every cell takes exactly
EPOCHS x STEPS optimiser steps on as many clips (the paper's balanced and random epochs differ in steps,
and its random batch is 128: its losses got different compute). The same seed gives every recipe of an
embedding size the same initial network weights, so cells are paired by seed in the findings report.

Budget: EPOCHS x STEPS = 6 x 25 = 150 steps (3 600 clips, ~1.5 passes over the 2 340 training clips),
lr 2e-3 with one warm-up epoch, then cosine. Measured on the full preset (one thread, CPU seconds, so
the load of other jobs does not inflate them): training 9.2 s per 25-step epoch (~55 s in all, the same
for GE2E/balanced and Softmax/random), the one evaluation (dev, eval and the open-set references at 2 s
crops) 41-43 s, and once per Ray worker (actors are reused) 18 s of imports and decoding: ~100 s per
trial, so 72 trials two at a time take about an hour on 2 idle cores. This budget is far below the
paper's (300 epochs on a GPU): a verdict of "cannot tell at this budget" is an answer, not a failure.

Run it in the background (resumable: the same command again, or ``--resume``, continues it):
    nohup sourcetrace sweep sweeps/findings_cpu.py --root data/full --no-analyze > findings_cpu.log 2>&1 &
    sourcetrace findings ray_results/findings_cpu --out analysis/results/findings_cpu
"""

from ray import tune

EPOCHS, STEPS = 6, 25

BASE = {
    "model.name": "thin_resnet34",
    "model.channels": 8,
    "train.batch_size": 24,
    "train.epochs": EPOCHS,
    "train.epoch_steps": "clips",
    "train.steps_per_epoch": STEPS,
    "train.eval_every": EPOCHS,  # one evaluation, at the end of the budget
    "train.warmup_epochs": 1,
    "train.lr": 2e-3,
    "data.crop_seconds": 2.0,
    "data.eval_seconds": 2.0,
    "data.short_clips": "pad",
    "loss.margin": 0.3,
    "loss.scale": 30.0,
}

_RANDOM = {"sampler.name": "random"}
_BALANCED = {"sampler.name": "balanced", "sampler.per_class": 2}
RECIPES = {
    "recipe": {
        "softmax/random": {"loss.name": "softmax", **_RANDOM},
        "softmax/balanced": {"loss.name": "softmax", **_BALANCED},
        "amsoftmax/random": {"loss.name": "amsoftmax", **_RANDOM},
        "amsoftmax/balanced": {"loss.name": "amsoftmax", **_BALANCED},
        "aamsoftmax/random": {"loss.name": "aamsoftmax", **_RANDOM},
        "aamsoftmax/balanced": {"loss.name": "aamsoftmax", **_BALANCED},
        "ge2e/balanced": {"loss.name": "ge2e", **_BALANCED},
        "angleproto/balanced": {"loss.name": "angleproto", **_BALANCED},
    }
}

SPACE = {
    "recipe": tune.grid_search(list(RECIPES["recipe"])),
    "model.embedding_dim": tune.grid_search([10, 50, 512]),
    "train.seed": tune.grid_search([0, 1, 2]),
}

TUNE = {"search": "grid", "scheduler": "fifo", "max_concurrent": 2, "max_failures": 1, "keep_checkpoints": 1}

RESOURCES = {"cpu": 1, "gpu": 0}

# Every comparison of the findings report, at toy size on the tiny corpus: a metric and a classification
# loss (softmax/random, the recipe of finding c), dims 10 and 512, two seeds = 8 trials of 4 steps.
SMOKE = {
    "BASE": {
        "train.epochs": 2,
        "train.eval_every": 2,
        "train.steps_per_epoch": 2,
        "data.crop_seconds": 1.0,
        "data.eval_seconds": 1.0,
        "train.batch_size": 8,
    },
    "SPACE": {
        "recipe": tune.grid_search(["softmax/random", "ge2e/balanced"]),
        "model.embedding_dim": tune.grid_search([10, 512]),
        "train.seed": tune.grid_search([0, 1]),
    },
}
