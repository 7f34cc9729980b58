"""The demo sweep (`make demo`): three losses x two embedding sizes on the demo corpus, ~7 min on 2 cores.

Each trial: the narrow Thin-ResNet-34 (model.channels=8, a quarter of the FLOPs: 2 CPU cores train the
full-width one at ~10 clips/s, this one at ~80 clips/s per core), 6 full passes over the training split,
dev/test EER at epochs 3 and 6 with 3 s crops; ASHA (grace 3, factor 2) stops the worse half at epoch 3.
Two trials run at once, one core each. The numbers are far from the paper's (minutes of CPU, not 300 GPU
epochs): it shows the system; a single 8-epoch run of this model reaches ~14 % dev EER (chance: 50 %).
"""

from ray import tune

BASE = {
    "model.name": "thin_resnet34",
    "model.channels": 8,
    "train.epochs": 6,
    "train.eval_every": 3,
    "train.warmup_epochs": 1,
    "train.steps_per_epoch": 0,
    "train.lr": 2e-3,
    "data.crop_seconds": 2.0,
    "data.eval_seconds": 3.0,
    "data.short_clips": "pad",
}

BUNDLES = {
    "recipe": {
        "softmax/random": {"loss.name": "softmax", "sampler.name": "random", "train.batch_size": 32},
        "aamsoftmax/random": {"loss.name": "aamsoftmax", "sampler.name": "random", "train.batch_size": 32},
        "ge2e/balanced": {
            "loss.name": "ge2e",
            "sampler.name": "balanced",
            "sampler.per_class": 2,
            "train.batch_size": 24,
        },
    }
}

SPACE = {
    "recipe": tune.grid_search(list(BUNDLES["recipe"])),
    "model.embedding_dim": tune.grid_search([10, 50]),
}

TUNE = {
    "search": "grid",
    "scheduler": "asha",
    "grace_period": 3,
    "reduction_factor": 2,
    "max_failures": 1,
    "keep_checkpoints": 1,
}

RESOURCES = {"cpu": 1, "gpu": 0}

SMOKE = {
    "BASE": {
        "train.epochs": 2,
        "train.eval_every": 1,
        "train.steps_per_epoch": 2,
        "model.channels": 8,
        "data.crop_seconds": 1.0,
        "data.eval_seconds": 2.0,
    },
    "SPACE": {"model.embedding_dim": 16},
}
