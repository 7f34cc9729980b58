"""One epoch of optimiser steps with no host sync per step, and the CUDA speed settings of a run.

Loss sum, correct predictions and the divergence flag accumulate on the device and are read once per
epoch (the flag also every ``StepGuard.every`` steps); the batches come from ``training/batches.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sourcetrace.config import Config
from sourcetrace.training.batches import Crops, EpochPlan
from sourcetrace.training.faults import StepGuard


@dataclass
class EpochTotals:
    loss_sum: float  # sum over clips of the batch loss
    correct: int  # clips whose logits' argmax is their label (losses with logits)
    seen: int  # clips


def speed_up(model: torch.nn.Module, cfg: Config, device: torch.device) -> torch.nn.Module:
    """On CUDA: cuDNN autotuning and channels-last convolutions. Returns what the steps call:
    ``torch.compile(model, mode=train.compile_mode)`` under ``train.compile`` (its weights are ``model``'s,
    saved unprefixed); ``reduce-overhead`` replays each step's kernels as one CUDA graph."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # one crop length per run: autotuned kernels are reused
        model.to(memory_format=torch.channels_last)
    return torch.compile(model, mode=cfg.train.compile_mode) if cfg.train.compile else model


def optimizer_for(cfg: Config, params: list, device: torch.device) -> torch.optim.Optimizer:
    """Adam/AdamW of ``train.optimizer``; the fused CUDA kernel when on CUDA (one launch per step)."""
    opt_cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[cfg.train.optimizer]
    fused = {"fused": True} if device.type == "cuda" else {}
    return opt_cls(params, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay, **fused)


def train_epoch(
    step_model, loss_fn, optimizer, scheduler, scaler, params: list, crops: Crops, plan: EpochPlan,
    cfg: Config, epoch: int, amp: torch.dtype | None,
) -> EpochTotals:  # fmt: skip
    device = crops.device
    guard = StepGuard(cfg, epoch, device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    uploaded = crops.upload(plan)
    seen = 0
    for s in range(len(plan)):
        wave, target = crops.batch(plan, uploaded, s)
        extra = ()
        if target.dim() == 2:  # (system, language) rows: the loss has a language adversary
            target, extra = target[:, 0], (target[:, 1],)
        with torch.autocast(device.type, dtype=amp or torch.bfloat16, enabled=amp is not None):
            emb = step_model(wave)
        out = loss_fn(emb.float(), target, *extra)
        guard.record(s + 1, out.loss, emb, scheduler.get_last_lr()[0])
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(out.loss).backward()
        if cfg.train.grad_clip > 0:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(params, cfg.train.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        loss_sum += out.loss.detach().double() * len(target)
        seen += len(target)
        if out.logits is not None and out.logits.shape[0] == len(target):
            correct += (out.logits.argmax(1) == target).sum()
    guard.check()
    return EpochTotals(float(loss_sum), int(correct), seen)
