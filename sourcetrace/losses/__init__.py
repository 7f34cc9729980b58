"""Losses: ``LOSSES[name](embedding_dim, n_classes, cfg: LossConfig) -> nn.Module``.

Every one is a ``base.Loss``: ``forward(emb [B, D] float, labels [B] long) -> LossOutput(loss, logits |
None)``; ``Loss.min_per_class`` (1 for classification, 2 for metric losses) is read by
``sourcetrace.validation``. Each loss owns its head parameters, so the optimiser must include them.

>>> import torch
>>> from sourcetrace.config import LossConfig
>>> loss = LOSSES["ge2e"](4, 3, LossConfig(name="ge2e"))
>>> out = loss(torch.randn(6, 4), torch.tensor([0, 1, 2, 0, 1, 2]))
>>> out.loss.shape, out.logits.shape, LOSSES["ge2e"].min_per_class
(torch.Size([]), torch.Size([6, 3]), 2)
"""

from __future__ import annotations

from sourcetrace.losses.aamsoftmax import AAMSoftmax
from sourcetrace.losses.amsoftmax import AMSoftmax
from sourcetrace.losses.angleproto import AngleProto
from sourcetrace.losses.base import Loss, LossOutput
from sourcetrace.losses.ge2e import GE2E
from sourcetrace.losses.softmax import Softmax

LOSSES: dict[str, type[Loss]] = {
    "softmax": Softmax,
    "amsoftmax": AMSoftmax,
    "aamsoftmax": AAMSoftmax,
    "ge2e": GE2E,
    "angleproto": AngleProto,
}

__all__ = ["LOSSES", "Loss", "LossOutput", "AAMSoftmax", "AMSoftmax", "AngleProto", "GE2E", "Softmax"]
