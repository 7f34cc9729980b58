"""Softmax: a linear layer (with bias) on the embeddings, then cross-entropy over the training classes."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from sourcetrace.config import LossConfig
from sourcetrace.losses.base import Loss, LossOutput, check_batch


class Softmax(Loss):
    """Plain softmax classifier; logits are the linear layer's outputs [B, C]."""

    def __init__(self, embedding_dim: int, n_classes: int, cfg: LossConfig):
        super().__init__(embedding_dim, n_classes, cfg)
        self.fc = nn.Linear(embedding_dim, n_classes)

    def forward(self, emb: Tensor, labels: Tensor) -> LossOutput:
        check_batch("softmax", emb, labels, self.embedding_dim, self.n_classes)
        logits = self.fc(emb)
        return LossOutput(F.cross_entropy(logits, labels), logits.detach())
