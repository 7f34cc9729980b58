"""The demo sweep (`make demo`): two front ends trained for the field, a short search in each, their winners fused.

Four trials of the narrow Thin-ResNet-34 (model.channels=8, log-Mel without instance norm, rows-kept
attentive-statistics head: ~55 clips/s on one idle core) with Angular Prototypical (balanced 12 classes x 2
clips, lr 2e-3, 2 warm-up epochs): two front ends x two embedding sizes, two at a time (one core each).
The front ends fail in opposite places (docs/lab-notes.md, "Front end and head"): the plain log-Mel
model wins outside the corpus but loses the unseen-language, unseen-system cell, which the featureless
baseline's MFCC means win; with per-band log-Mel statistics, random band EQ and SpecAugment masks, the
model wins that cell but loses outside the corpus. Their cosine scores averaged win both.

For the field: the model sets its own input level (features.level=rms, the default), half of the training
clips are drawn from renderings of them through a phone band, phone codecs, low-rate MP3/Opus or a
loudspeaker in a room (augment.*), and every choice (halving, each trial's best checkpoint) is made on dev
with its phone-band, AMR-NB and replayed copies beside the clean clips (data.dev_degrade), never on eval.
The sweep ends by scoring what it hands over beside the baseline on eval, clean and under the everyday
conditions (TUNE field_check; a seeded sample of 12 clips per system, to keep the demo quick: the whole
split with `sourcetrace evaluate --degrade everyday`).

So the sweep halves within each front end (TUNE fuse; synchronous successive halving,
sourcetrace/sweep/halving.py, rungs at epochs 4, 8 and 16, factor 2): each front end's worse embedding
size stops at epoch 4, when every trial of the front end has reached it, so the choices do not depend on
how the two cores interleave the trials. Each winner then trains all 24 epochs (864 steps, cosine
schedule) on its own core, and the sweep hands over their equal-weight fusion (sourcetrace/fusion.py),
measured on dev and test as a trial is. Why this budget: 6-epoch trials never learn to beat the
featureless baseline on unseen systems (benchmarks/README.md). dev/test EER at every 4th epoch with 3 s
crops; the final table sets the fusion and each trial beside the baseline, per condition.
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
    "loss.name": "angleproto",
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
    # field conditions: each training clip drawn from one rendering (p 0.5 in all) or clean, and dev scored
    # with three of them beside its clean clips (benchmarks/README.md, "Field conditions")
    "augment.band_8k": 0.1,
    "augment.amr_nb": 0.08,
    "augment.gsm": 0.08,
    "augment.mp3_32": 0.06,
    "augment.opus_16": 0.06,
    "augment.replay": 0.12,
    "data.dev_degrade": "band_8k,amr_nb,replay",
}

RECIPES = {
    "front": {
        "log-mel": {},
        # per-band mean and std of the log-Mel beside the trunk; each training clip's bands get a random
        # gain and tilt (+-8.7 dB), and SpecAugment masks (8 bands, 20 frames) hide parts of the trunk's input
        "log-mel+bands": {
            "model.band_stats": True,
            "augment.band_eq_db": 8.7,
            "augment.freq_mask": 8,
            "augment.time_mask": 20,
        },
    }
}

SPACE = {
    "front": tune.grid_search(list(RECIPES["front"])),
    "model.embedding_dim": tune.grid_search([50, 10]),
}

TUNE = {
    "search": "grid",
    "scheduler": "halving",
    "grace_period": 4,
    "reduction_factor": 2,
    "max_failures": 1,
    "keep_checkpoints": 1,
    "fuse": "front",
    "field_check": "everyday",
    "field_check_clips": 12,
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
        "data.dev_degrade": "band_8k",  # the same code paths, with the quickest renderings
    },
    "SPACE": {"model.embedding_dim": 16},
    "TUNE": {"grace_period": 1, "field_check": "gain,short_1s", "field_check_clips": 4},
}
