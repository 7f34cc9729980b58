"""Robustness to codecs and replay: the demo's GE2E model trained without and with augmentation.

Two trials of the narrow Thin-ResNet-34 (model.channels=8, the demo's front end and head: log-Mel without
instance norm, rows kept, attentive statistics; GE2E, balanced 12 classes x 2 clips, lr 2e-3, 2 warm-up
epochs, 40 epochs of one balanced pass): ``augment=off`` and ``augment=codecs+replay``, where
each training clip is drawn clean with probability 0.68 or from its MP3 32 kb/s, Opus 16 kb/s, AMR-NB or
replayed rendering (0.08 each), and gets white noise at 5-30 dB SNR with probability 0.1. (With 0.15 each
and noise 0.2 the gap closed as far but clean EER rose 1.48 pp: benchmarks/README.md.) Every trial
trains its full budget (fifo). The renderings are made once and cached (set SOURCETRACE_CACHE to share
them between trials). Score both on the degraded conditions with
``sourcetrace evaluate --model TRIAL --root DIR --degrade mp3_32,opus_16,amr_nb,replay``;
benchmarks/bench_robustness.sh runs the same two configurations with ``sourcetrace train`` and evaluates them.
"""

from ray import tune

BASE = {
    "model.name": "thin_resnet34",
    "model.channels": 8,
    # the demo's front end and head (sweeps/demo.py): no instance norm, rows kept, attentive mean and std
    "features.instance_norm": False,
    "model.frequency": "flatten",
    "model.pooling": "asp",
    "model.embedding_dim": 50,
    "loss.name": "ge2e",
    "sampler.name": "balanced",
    "sampler.per_class": 2,
    "train.batch_size": 24,
    "train.epochs": 40,
    "train.epoch_steps": "sampler",
    "train.eval_every": 4,
    "train.warmup_epochs": 2,
    "train.lr": 2e-3,
    "data.crop_seconds": 2.0,
    "data.eval_seconds": 3.0,
    "data.short_clips": "pad",
}

AUGMENT = {
    "augment.mp3_32": 0.08,
    "augment.opus_16": 0.08,
    "augment.amr_nb": 0.08,
    "augment.replay": 0.08,
    "augment.noise": 0.1,
    "augment.noise_snr_min": 5.0,
    "augment.noise_snr_max": 30.0,
}

RECIPES = {"augment": {"off": {"augment.noise": 0.0}, "codecs+replay": AUGMENT}}

SPACE = {"augment": tune.grid_search(list(RECIPES["augment"]))}

TUNE = {"search": "grid", "scheduler": "fifo", "max_failures": 1, "keep_checkpoints": 1}

RESOURCES = {"cpu": 1, "gpu": 0}

SMOKE = {
    "BASE": {
        "train.epochs": 2,
        "train.eval_every": 1,
        "train.warmup_epochs": 1,
        "train.steps_per_epoch": 2,
        "data.crop_seconds": 1.0,
        "data.eval_seconds": 2.0,
        "model.embedding_dim": 16,
    },
}
