"""The demo sweep (`make demo`): three losses x two embedding sizes on the demo corpus, ~10 min on 2 cores.

Each trial: 6 epochs of 10 capped steps after a one-epoch warm-up, dev/test EER at epochs 3 and 6
(evaluation dominates on CPU: ~45 s per evaluation of the demo corpus's 1.5 k dev+test clips on one
core); ASHA (grace 3, factor 2) stops the worse half at epoch 3. Two trials run at once, one core each.
Measured on a busy 2-core machine with the previous, heavier settings: 11.8 min. The numbers are far
from the paper's (minutes of CPU, not 300 GPU epochs): it shows the system.
"""

from ray import tune

BASE = {
    "model.name": "thin_resnet34",
    "model.channels": 16,
    "train.epochs": 6,
    "train.eval_every": 3,
    "train.warmup_epochs": 1,
    "train.steps_per_epoch": 10,
    "train.lr": 1e-3,
    "data.crop_seconds": 2.0,
    "data.eval_seconds": 3.0,
    "data.short_clips": "pad",
}

BUNDLES = {
    "recipe": {
        "softmax/random": {"loss.name": "softmax", "sampler.name": "random", "train.batch_size": 32},
        "aamsoftmax/random": {"loss.name": "aamsoftmax", "sampler.name": "random", "train.batch_size": 32},
        "ge2e/balanced": {"loss.name": "ge2e", "sampler.name": "balanced", "sampler.per_class": 2,
                          "train.batch_size": 24},
    }
}

SPACE = {
    "recipe": tune.grid_search(list(BUNDLES["recipe"])),
    "model.embedding_dim": tune.grid_search([10, 50]),
}

TUNE = {"search": "grid", "scheduler": "asha", "grace_period": 3, "reduction_factor": 2, "max_failures": 1,
        "keep_checkpoints": 1}

RESOURCES = {"cpu": 1, "gpu": 0}

SMOKE = {
    "BASE": {"train.epochs": 2, "train.eval_every": 1, "train.steps_per_epoch": 2, "model.channels": 8,
             "data.crop_seconds": 1.0, "data.eval_seconds": 2.0},
    "SPACE": {"model.embedding_dim": 16},
}
