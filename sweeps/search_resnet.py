"""Hyper-parameter search around the paper's ResNet (AAM-Softmax, balanced sampler) with Optuna + ASHA.

Searched: margin, scale, learning rate, crop length, batch shape (classes x clips per class) and the
embedding size. ASHA stops the worse two thirds at each rung (25, 75, 225 epochs); Optuna (TPE) sees
the dev EER of every evaluation.
"""

from ray import tune

BASE = {
    "model.name": "thin_resnet34",
    "loss.name": "aamsoftmax",
    "sampler.name": "balanced",
    "train.epochs": 300,
    "train.eval_every": 25,
    "train.warmup_epochs": 10,
    "data.short_clips": "pad",  # wrap-pad clips shorter than the crop, as voxceleb_trainer (MLAAD has some)
}

# Batch shapes a balanced batch can take with MLAAD's 24 training classes.
RECIPES = {
    "batch": {
        "12x2": {"train.batch_size": 24, "sampler.per_class": 2},
        "24x2": {"train.batch_size": 48, "sampler.per_class": 2},
        "8x4": {"train.batch_size": 32, "sampler.per_class": 4},
        "16x4": {"train.batch_size": 64, "sampler.per_class": 4},
    }
}

SPACE = {
    "loss.margin": tune.uniform(0.1, 0.5),
    "loss.scale": tune.uniform(15.0, 45.0),
    "train.lr": tune.loguniform(3e-5, 1e-3),
    "data.crop_seconds": tune.choice([1.0, 2.0, 3.0]),
    "batch": tune.choice(list(RECIPES["batch"])),
    "model.embedding_dim": tune.choice([10, 50, 200, 512]),
}

TUNE = {
    "search": "optuna",
    "num_samples": 64,
    "scheduler": "asha",
    "grace_period": 25,
    "reduction_factor": 3,
    "max_failures": 2,
    "keep_checkpoints": 2,
    "seed": 0,
}

RESOURCES = {"cpu": 3, "gpu": 0.25}

# Six trials of four capped epochs on CPU; ASHA decides at epochs 2 and 4 (grace 2, factor 2).
SMOKE = {
    "BASE": {
        "train.epochs": 4,
        "train.eval_every": 2,
        "train.warmup_epochs": 1,
        "train.steps_per_epoch": 3,
        "model.channels": 8,
        "data.eval_seconds": 2.0,
        "data.short_clips": "pad",
    },
    "RECIPES": {
        "batch": {
            "4x2": {"train.batch_size": 8, "sampler.per_class": 2},
            "8x2": {"train.batch_size": 16, "sampler.per_class": 2},
        }
    },
    "SPACE": {
        "batch": tune.choice(["4x2", "8x2"]),
        "train.lr": tune.loguniform(3e-4, 3e-3),
        "data.crop_seconds": tune.choice([1.0, 1.5]),
        "model.embedding_dim": tune.choice([16, 32]),
    },
    "TUNE": {"num_samples": 6, "grace_period": 2, "reduction_factor": 2, "keep_checkpoints": 1},
    "RESOURCES": {"cpu": 1, "gpu": 0},
}
