"""AAM-Softmax / ArcFace (Deng et al., 2019): s·cos(θ_y + m) for the target class, s·cos θ_j for the others."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from sourcetrace.config import LossConfig
from sourcetrace.losses.base import CosineHead, LossOutput, angular_margin, check_batch


class AAMSoftmax(nn.Module):
    """Additive angular margin softmax (m=0.3, s=30) with the numerically safe th/mm form (see
    ``base.angular_margin``). ``LossOutput.logits`` are s·cos θ without the margin."""

    min_per_class = 1

    def __init__(self, embedding_dim: int, n_classes: int, cfg: LossConfig):
        super().__init__()
        self.embedding_dim, self.n_classes = embedding_dim, n_classes
        self.margin, self.scale = float(cfg.margin), float(cfg.scale)
        self.head = CosineHead(embedding_dim, n_classes)

    def margin_logits(self, emb: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        cos = self.head(emb)
        return self.scale * angular_margin(cos, labels, self.margin), cos

    def forward(self, emb: Tensor, labels: Tensor) -> LossOutput:
        check_batch("aamsoftmax", emb, labels, self.embedding_dim, self.n_classes)
        logits, cos = self.margin_logits(emb, labels)
        return LossOutput(F.cross_entropy(logits, labels), (self.scale * cos).detach())
