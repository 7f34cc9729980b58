"""Table 1, wav2vec2-XLS-R + AASIST beside Thin-ResNet-34 at one budget: AM/AAM-Softmax x random/balanced x
4 embedding sizes x 3 seeds x 2 backbones = 96 trials (finding d of the paper: the ResNet matches AASIST and
generalises better to unseen systems; ``sourcetrace findings`` tests it on this sweep's folder).

Paper budgets: batch 32, 100 epochs, dev EER every 10, lr 1e-4 after 10 warm-up epochs; the SSL front
end is fine-tuned. Equal compute in every cell: one batch of 32 clips for both samplers (balanced: 16
systems x 2 clips) and ``train.epoch_steps=clips`` (an epoch is len(train) // 32 steps for either
sampler: the paper's balanced epochs were shorter than its random ones), the same for both backbones.
The same seed gives every cell of a backbone and size the same initial weights (paired in the report).
One GPU per trial (the 300 M-parameter model fills it; the ResNet trials get one too, and are quick).
Best checkpoints stay in the Tune storage and are not uploaded to MLflow (several GB each with the
optimiser state). The model module is not imported here: the name is only checked against the registry.

The paper's own 16-trial grid (one seed, AASIST only):
``--set model.name=w2v2_aasist --set train.seed=0 --set train.epoch_steps=voxceleb``.
"""

from ray import tune

BASE = {
    "ssl.source": "facebook/wav2vec2-xls-r-300m",
    "ssl.finetune": "full",
    "train.epochs": 100,
    "train.epoch_steps": "clips",  # len(train) // batch steps for either sampler: equal compute in every cell
    "train.eval_every": 10,
    "train.batch_size": 32,
    "train.lr": 1e-4,
    "train.warmup_epochs": 10,
    "data.crop_seconds": 2.0,
    # MLAAD holds clips shorter than the 2 s crop; voxceleb_trainer (the paper's code) wrap-pads them,
    # and so do we, rather than stop the whole grid at start (the default, data.short_clips=error).
    "data.short_clips": "pad",
    "loss.margin": 0.3,
    "loss.scale": 30.0,
}

_BALANCED = {"sampler.name": "balanced", "sampler.per_class": 2}  # 16 classes x 2 clips
RECIPES = {
    "recipe": {
        "amsoftmax/random": {"loss.name": "amsoftmax", "sampler.name": "random"},
        "amsoftmax/balanced": {"loss.name": "amsoftmax", **_BALANCED},
        "aamsoftmax/random": {"loss.name": "aamsoftmax", "sampler.name": "random"},
        "aamsoftmax/balanced": {"loss.name": "aamsoftmax", **_BALANCED},
    }
}

SPACE = {
    "recipe": tune.grid_search(list(RECIPES["recipe"])),
    "model.embedding_dim": tune.grid_search([10, 50, 200, 512]),
    "model.name": tune.grid_search(["w2v2_aasist", "thin_resnet34"]),
    "train.seed": tune.grid_search([0, 1, 2]),
}

TUNE = {"search": "grid", "scheduler": "fifo", "max_failures": 2, "keep_checkpoints": 1, "log_checkpoint": False}

RESOURCES = {"cpu": 8, "gpu": 1}

# Two trials, two capped epochs. The SSL weights cannot be downloaded at run time: pass a local
# save_pretrained folder, e.g. --set ssl.source=/models/wav2vec2-xls-r-300m (or a tiny random one).
SMOKE = {
    "BASE": {
        "train.epochs": 2,
        "train.eval_every": 1,
        "train.warmup_epochs": 1,
        "train.steps_per_epoch": 2,
        "train.batch_size": 8,
        "data.crop_seconds": 1.0,
        "data.eval_seconds": 2.0,
        "data.short_clips": "pad",
    },
    "SPACE": {
        "recipe": tune.grid_search(["aamsoftmax/random", "amsoftmax/balanced"]),
        "model.embedding_dim": 50,
        "model.name": "w2v2_aasist",
        "train.seed": 0,
    },
    "RESOURCES": {"cpu": 1, "gpu": 0},
}
