"""One trial of the paper in plain PyTorch: ``train(cfg, out_dir, on_epoch)`` — no Ray in here.

Per epoch: sampler batches -> random crops from the resident wave bank -> model (front end on the
device) -> loss. Every ``train.eval_every`` epochs and at the last one: dev (and test) all-pairs EER
overall and per condition, and the ``best/`` (lowest dev EER — never training loss) and ``last/``
checkpoints; every ``train.checkpoint_every`` epochs ``last/`` alone too (a resume point, not evaluated).
Crops, batches and dropout draw from generators seeded by (seed, epoch), so a run resumed from ``last/``
reproduces the uninterrupted run's metrics exactly (on the same device).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from sourcetrace.config import Config
from sourcetrace.data.samplers import SAMPLERS, voxceleb_epoch_steps
from sourcetrace.device import autocast_dtype, resolve_device
from sourcetrace.errors import DivergenceError, TrainingError
from sourcetrace.evaluation.conditions import split_metrics
from sourcetrace.evaluation.embed import embed_waves
from sourcetrace.evaluation.openset import openset_metrics, reference_rows
from sourcetrace.losses import LOSSES
from sourcetrace.losses.adversary import LanguageAdversary
from sourcetrace.models import build_model
from sourcetrace.registry import lookup
from sourcetrace.training.augment import train_crops
from sourcetrace.training.batches import plan_epoch
from sourcetrace.training.checkpoint import load_state, save_checkpoint
from sourcetrace.training.data import TrialData, prepare_data
from sourcetrace.training.faults import check_weights, diverged
from sourcetrace.training.steps import optimizer_for, speed_up, train_epoch
from sourcetrace.validation import validate


@dataclass
class EpochResult:
    """What ``on_epoch`` receives after each epoch."""

    epoch: int  # completed epochs, from 1
    metrics: dict[str, float]
    evaluated: bool  # dev/test metrics are in ``metrics``
    checkpoint_dir: Path | None  # resumable state after this epoch: evaluations, every train.checkpoint_every


@dataclass
class TrainResult:
    out_dir: Path
    final_metrics: dict[str, float]
    best_metrics: dict[str, float]
    best_epoch: int
    history: list[dict[str, float]] = field(default_factory=list)


def lr_lambda(cfg: Config, steps_per_epoch: int) -> Callable[[int], float]:
    """Linear warm-up over ``warmup_epochs`` to ``lr``, then cosine annealing to ``min_lr`` (per step)."""
    warm = cfg.train.warmup_epochs * steps_per_epoch
    total = max(cfg.train.epochs * steps_per_epoch, warm + 1)
    floor = cfg.train.min_lr / cfg.train.lr

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        progress = min(1.0, (step - warm) / max(1, total - warm))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def steps_per_epoch(cfg: Config, sampler, labels: np.ndarray) -> int:
    """Optimiser steps per epoch as ``train.epoch_steps`` defines it, capped by ``train.steps_per_epoch``."""
    mode, batch = cfg.train.epoch_steps, cfg.train.batch_size
    steps = len(sampler)
    if mode == "clips" or (mode == "voxceleb" and cfg.sampler.name != "balanced"):
        steps = min(steps, len(labels) // batch)
    elif mode == "voxceleb":
        steps = min(steps, voxceleb_epoch_steps(labels, batch, cfg.sampler.per_class, cfg.train.seed))
    return steps if cfg.train.steps_per_epoch == 0 else min(steps, cfg.train.steps_per_epoch)


COLLAPSED = 1e-3  # unit embeddings of every clip within this distance of one another: the model has collapsed


def score_splits(
    model: torch.nn.Module, data: TrialData, cfg: Config, device: torch.device, best_dev_eer: float = math.inf
) -> dict[str, float]:
    """Dev (and test) EER overall and per condition with minDCF, and open-set metrics.

    Test is scored only when dev EER beats ``best_dev_eer`` (the checkpoint that may be reported; by
    default always). Open set: the default open-set scorer, fitted on the training clips that
    ``reference_rows`` picks, detects systems absent from train (``*_openset_auroc``/``_eer``/``_fpr95``);
    best-match accuracy and macro-F1 on known systems are the closed-set scores. Embeddings stay on the
    device for the all-pairs EER.
    """
    amp = autocast_dtype(cfg.train.precision, device)

    def embed(bank, idx=None) -> torch.Tensor:
        emb = embed_waves(model, bank, cfg.data.eval_seconds, 64, device, cfg.data.sample_rate, amp, idx, True)
        finite = torch.isfinite(emb).all(1)
        if not bool(finite.all()):
            raise DivergenceError(f"non-finite embeddings of {int((~finite).sum())} clips")
        if len(emb) > 1 and float((emb - emb[0]).norm(dim=1).max()) < COLLAPSED:
            raise DivergenceError(f"the embeddings collapsed: all {len(emb)} clips embed to one point")
        return emb

    train = data.train.table
    ref_rows = reference_rows(train)
    ref_emb = embed(data.train.bank, ref_rows).cpu().numpy()
    ref_systems = train["system"].to_numpy()[ref_rows]
    metrics: dict[str, float] = {}
    for prefix, split in (("dev", data.dev), ("test", data.test)):
        if split is None or (prefix == "test" and not metrics["dev_eer"] < best_dev_eer):
            continue
        emb = embed(split.bank)
        metrics.update(split_metrics(prefix, emb, split.table))
        openset = openset_metrics(ref_emb, ref_systems, emb.cpu().numpy(), split.systems, data.known_systems)
        metrics.update(openset.metrics(f"{prefix}_openset_"))
    return metrics


def train(
    cfg: Config,
    out_dir: str | Path,
    on_epoch: Callable[[EpochResult], None] | None = None,
    resume_from: str | Path | None = None,
    device: torch.device | None = None,
    save_best: bool = True,
) -> TrainResult:
    """Train and evaluate one configuration; resumable from a ``last/`` checkpoint.

    ``device`` overrides ``train.device`` (a Ray trial passes the one its resources grant); ``save_best=False``
    writes no ``best/`` folder (``last/`` of each improving evaluation is the best, as Tune keeps it).
    """
    validate(cfg)  # names and pairings first: nothing is read or written for a bad config
    out_dir = Path(out_dir)
    if cfg.train.num_threads:
        torch.set_num_threads(cfg.train.num_threads)
    device = device or resolve_device(cfg.train.device)
    data = prepare_data(cfg)  # validates cfg before anything is decoded (memoised per process)
    out_dir.mkdir(parents=True, exist_ok=True)  # after the data checks: a bad input leaves no empty run folder
    validate(cfg, n_classes=len(data.known_systems))  # also on a memo hit
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg).to(device)
    step_model = speed_up(model, cfg, device)  # cuDNN autotune, channels-last, torch.compile if asked
    n_classes = len(data.known_systems)
    loss_fn = lookup(LOSSES, cfg.loss.name, "loss")(model.embedding_dim, n_classes, cfg.loss)
    if cfg.sampler.name == "balanced":
        loss_fn.per_class = cfg.sampler.per_class  # batches laid out class by class: no host sync in the loss
    labels = data.train.labels
    crop_labels = labels
    if cfg.train.language_adversary > 0:  # the batches carry (system, language); the loss adds the adversary
        languages, names = pd.factorize(data.train.table["language"], sort=True)
        loss_fn = LanguageAdversary(loss_fn, len(names), cfg.train.language_adversary)
        crop_labels = np.stack([labels, languages.astype(np.int64)], axis=1)
    loss_fn = loss_fn.to(device)
    params = [p for p in list(model.parameters()) + list(loss_fn.parameters()) if p.requires_grad]
    optimizer = optimizer_for(cfg, params, device)
    sampler = lookup(SAMPLERS, cfg.sampler.name, "sampler")(
        labels, cfg.train.batch_size, cfg.sampler.per_class, cfg.train.seed
    )
    steps = steps_per_epoch(cfg, sampler, labels)
    if steps == 0:
        raise TrainingError(
            f"the sampler yields no batch: {len(labels)} training clips for train.batch_size={cfg.train.batch_size}"
        )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg, steps))
    amp = autocast_dtype(cfg.train.precision, device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp is torch.float16)
    crop = int(round(cfg.data.crop_seconds * cfg.data.sample_rate))
    crops = train_crops(cfg, data.train, crop_labels, crop, device)  # clean: on a GPU the bank lives there
    meta = {"known_systems": list(data.known_systems), "embedding_dim": model.embedding_dim}

    start, best_eer, best_epoch, best_metrics, history = 1, math.inf, 0, {}, []
    if resume_from is not None:
        _, state, _ = load_state(resume_from)
        model.load_state_dict(state["model"])
        loss_fn.load_state_dict(state["loss"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if state["scaler"]:  # empty when saved by a disabled (non-fp16) scaler
            scaler.load_state_dict(state["scaler"])
        start, best_eer, best_epoch = state["epoch"] + 1, state["best_eer"], state["best_epoch"]
        best_metrics, history = state["best_metrics"], state["history"]
    (out_dir / "config.json").write_text(cfg.to_json())
    _write_history(out_dir, history)

    for epoch in range(start, cfg.train.epochs + 1):
        t0 = time.perf_counter()
        model.train()
        loss_fn.train()
        sampler.set_epoch(epoch)
        rng = np.random.default_rng((cfg.train.seed, epoch))
        torch.manual_seed(cfg.train.seed * 100_003 + epoch)
        plan = plan_epoch(sampler, steps, data.train.bank, crop, rng)
        crops.begin_epoch(rng)  # augmentation draws (which rendering, noise) follow the crop starts
        totals = train_epoch(step_model, loss_fn, optimizer, scheduler, scaler, params, crops, plan, cfg, epoch, amp)
        seen = totals.seen
        seconds = time.perf_counter() - t0
        check_weights(cfg, [model, loss_fn], epoch, optimizer.param_groups[0]["lr"])
        metrics = {
            "epoch": float(epoch),
            "train_loss": totals.loss_sum / max(seen, 1),
            "lr": optimizer.param_groups[0]["lr"],
            "epoch_seconds": seconds,
            "clips_per_s": seen / seconds if seconds > 0 else 0.0,
        }
        if totals.correct:
            metrics["train_acc"] = totals.correct / seen
        evaluated = epoch % cfg.train.eval_every == 0 or epoch == cfg.train.epochs
        if evaluated:
            t1 = time.perf_counter()
            try:
                metrics.update(score_splits(model, data, cfg, device, best_eer))  # test only if dev improves
            except DivergenceError as err:  # evaluate cannot know the epoch
                raise diverged(cfg, epoch, optimizer.param_groups[0]["lr"], str(err)) from None
            metrics["eval_seconds"] = time.perf_counter() - t1
        history.append(metrics)
        checkpoint_dir = None
        if evaluated or (cfg.train.checkpoint_every and epoch % cfg.train.checkpoint_every == 0):
            state = {
                "model": model.state_dict(),
                "loss": loss_fn.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(),
                "epoch": epoch,
                "history": history,
            }
            if evaluated and metrics["dev_eer"] < best_eer:
                best_eer, best_epoch, best_metrics = metrics["dev_eer"], epoch, dict(metrics)
                best_state = state | _best(best_eer, best_epoch, best_metrics)
                if save_best:  # a Tune trial's best is Tune's best checkpoint: SSL trials skip this copy
                    save_checkpoint(out_dir / "best", cfg, best_state, meta | {"epoch": epoch})
            checkpoint_dir = save_checkpoint(
                out_dir / "last", cfg, state | _best(best_eer, best_epoch, best_metrics), meta | {"epoch": epoch}
            )
        _write_history(out_dir, history)
        if on_epoch is not None:
            on_epoch(EpochResult(epoch, metrics, evaluated, checkpoint_dir))

    final = next((h for h in reversed(history) if "dev_eer" in h), {})
    result = TrainResult(out_dir, final, best_metrics, best_epoch, history)
    (out_dir / "results.json").write_text(
        json.dumps({"final": final, "best": best_metrics, "best_epoch": best_epoch}, indent=2, sort_keys=True)
    )
    return result


def _best(eer: float, epoch: int, metrics: dict[str, float]) -> dict:
    return {"best_eer": eer, "best_epoch": epoch, "best_metrics": metrics}


def _write_history(out_dir: Path, history: list[dict[str, float]]) -> None:
    lines = "".join(json.dumps(h, sort_keys=True) + "\n" for h in history)
    (out_dir / "metrics.jsonl").write_text(lines)
