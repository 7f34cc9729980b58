"""The only Ray-trial code: one Tune trial = one ``train()`` call, reporting every epoch to Tune.

The trial's config (flat keys and bundle labels) becomes a ``Config`` through the sweep's ``TrialSpec``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sourcetrace.config import Config
from sourcetrace.training.faults import failure_result

if TYPE_CHECKING:
    from sourcetrace.sweep.spec import TrialSpec


def cpu_share(resources: Mapping[str, float]) -> int:
    """Torch threads for a trial holding ``resources`` (at least one)."""
    return max(1, int(resources.get("CPU", 1)))


def keeps_best_copy(cfg: Config) -> bool:
    """Whether a trial also writes ``run/best/``: Tune keeps the best checkpoint already (dev EER scored),
    so the wav2vec2 trials (a few GB per copy) skip it; Thin-ResNet copies are small."""
    return cfg.model.name != "w2v2_aasist"


# What Tune ranks a trial's checkpoints by (the sweep's CheckpointConfig): see ``checkpoint_score``.
CHECKPOINT_SCORE = "checkpoint_score"


def checkpoint_score(metrics: Mapping[str, float], evaluated: bool, metric: str, mode: str) -> float:
    """An evaluation's checkpoint scores the sweep's ``metric``; a resume-only one (``train.checkpoint_every``)
    the worst value of ``mode``, so keeping the best checkpoints never keeps it in place of an evaluated one.

    >>> checkpoint_score({"dev_eer": 4.0}, True, "dev_eer", "min"), checkpoint_score({}, False, "dev_eer", "min")
    (4.0, inf)
    >>> checkpoint_score({"dev_openset_auroc": 0.9}, False, "dev_openset_auroc", "max")
    -inf
    """
    if evaluated and metric in metrics:
        return float(metrics[metric])
    return math.inf if mode == "min" else -math.inf


def run_trial(config: dict[str, Any], spec: TrialSpec, metric: str = "dev_eer", mode: str = "min") -> None:
    """Tune function trainable: train one configuration, resuming from Tune's newest checkpoint if any.

    ``metric``/``mode``: the sweep's, which each checkpoint's ``CHECKPOINT_SCORE`` follows."""
    import torch
    from ray import tune

    from sourcetrace.device import device_name, share_gpu_memory, trial_device
    from sourcetrace.training.loop import EpochResult, train

    reached, name = [0], ["cpu"]

    def on_epoch(r: EpochResult) -> None:
        reached[0] = r.epoch
        metrics = dict(r.metrics, epoch=float(r.epoch), device=name[0])  # the device: an MLflow tag
        if r.checkpoint_dir is not None:
            # Tune copies the folder into the trial's storage before report returns; the trainer may then
            # overwrite its ``last/`` in place.
            metrics[CHECKPOINT_SCORE] = checkpoint_score(r.metrics, r.evaluated, metric, mode)
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(str(r.checkpoint_dir)))
        else:
            tune.report(metrics)

    try:
        ctx = tune.get_context()
        resources = ctx.get_trial_resources().required_resources
        threads = cpu_share(resources)
        flat = spec.resolve(config)
        flat.setdefault("train.num_threads", threads)
        cfg = Config.from_dict(flat)
        torch.set_num_threads(cfg.train.num_threads or threads)
        out_dir = Path(ctx.get_trial_dir()) / "run"
        gpus = float(resources.get("GPU", 0))
        device = trial_device(cfg.train.device, gpus)  # CUDA for a GPU trial, or an error; never CUDA without one
        share_gpu_memory(device, gpus)
        name[0] = device_name(device)
        run = {"on_epoch": on_epoch, "device": device, "save_best": keeps_best_copy(cfg)}
        checkpoint = tune.get_checkpoint()
        if checkpoint is None:
            train(cfg, out_dir, **run)
            return
        with checkpoint.as_directory() as folder:
            train(cfg, out_dir, resume_from=folder, **run)
    except Exception as err:  # flagged, so Tune's retries tell it from a lost worker (sweep/retry.py)
        tune.report(failure_result(err, reached[0]))
        raise
