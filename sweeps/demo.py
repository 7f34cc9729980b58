"""The demo sweep (`make demo`): a short search whose winner trains long enough to beat the baseline.

Four trials of the narrow Thin-ResNet-34 (model.channels=8, log-Mel without instance norm, rows-kept
attentive-statistics head: ~65 clips/s on one idle core) with the two
metric-learning losses (GE2E, Angular Prototypical; balanced 12 classes x 2 clips, lr 2e-3, 2 warm-up
epochs) at two embedding sizes, two at a time (one core each). Synchronous successive halving
(sourcetrace/sweep/halving.py; rungs at epochs 4, 8 and 16, factor 2): every trial reaches a rung, paused
there on its checkpoint, before the worse half stops, so the sweep makes the same choices however
the two cores interleave its trials; two trials stop at epoch 4, one at 8, and the winner trains all
24 epochs (864 steps, cosine schedule). Why this budget: 6-epoch trials never learn to beat the
featureless baseline on unseen systems, while one GE2E run of this model reaches it in ~20 epochs
(benchmarks/README.md). dev/test EER at every 4th epoch with 3 s crops; the final table sets the
best trial beside the baseline, per condition.
"""

from ray import tune

BASE = {
    "model.name": "thin_resnet34",
    "model.channels": 8,
    # Not the paper's front end: per-utterance instance norm of the log-Mel bands removes each band's
    # long-term level, the voice and vocoder colouring that tells systems apart, and the frequency-averaged
    # SAP head keeps 64 numbers per frame. Without the norm, with the rows kept (ResNetSE34V2's flatten +
    # attentive mean and std), the model generalises to systems outside the corpus (benchmarks/README.md).
    "features.instance_norm": False,
    "model.frequency": "flatten",
    "model.pooling": "asp",
    "sampler.name": "balanced",
    "sampler.per_class": 2,
    "train.batch_size": 24,
    "train.epochs": 24,
    "train.epoch_steps": "sampler",  # one pass of the balanced sampler (36 steps on the demo corpus)
    "train.eval_every": 4,
    "train.warmup_epochs": 2,
    "train.lr": 2e-3,
    "data.crop_seconds": 2.0,
    "data.eval_seconds": 3.0,
    "data.short_clips": "pad",
}

BUNDLES = {
    "recipe": {
        "ge2e/balanced": {"loss.name": "ge2e"},
        "angleproto/balanced": {"loss.name": "angleproto"},
    }
}

SPACE = {
    "recipe": tune.grid_search(list(BUNDLES["recipe"])),
    "model.embedding_dim": tune.grid_search([50, 10]),
}

TUNE = {
    "search": "grid",
    "scheduler": "halving",
    "grace_period": 4,
    "reduction_factor": 2,
    "max_failures": 1,
    "keep_checkpoints": 1,
}

RESOURCES = {"cpu": 1, "gpu": 0}

SMOKE = {
    "BASE": {
        "train.epochs": 2,
        "train.eval_every": 1,
        "train.warmup_epochs": 1,
        "train.steps_per_epoch": 2,
        "data.crop_seconds": 1.0,
        "data.eval_seconds": 2.0,
    },
    "SPACE": {"model.embedding_dim": 16},
    "TUNE": {"grace_period": 1},
}
