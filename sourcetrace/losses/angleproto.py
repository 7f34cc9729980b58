"""Angular Prototypical (Chung et al., 2020) on a balanced batch of N classes x M clips (M >= 2).

Per class, the query is its last clip in batch order; the prototype of every class is the mean of its
other M−1 clips (raw embeddings, as in the paper). S = w·cos(query, prototype) + b with learned w > 0
(softplus, see ``base.PositiveScale``) and b; cross-entropy over the N batch classes, N queries.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from sourcetrace.config import LossConfig
from sourcetrace.losses.base import Loss, LossOutput, PositiveScale, check_batch, group_by_label


class AngleProto(Loss):
    """Angular prototypical loss. ``LossOutput.logits`` is None: only N of the B clips are queries."""

    min_per_class = 2
    params = ("init_w", "init_b")

    def __init__(self, embedding_dim: int, n_classes: int, cfg: LossConfig):
        super().__init__(embedding_dim, n_classes, cfg)
        self.scale = PositiveScale(cfg.init_w, cfg.init_b)

    def similarities(self, emb: Tensor, labels: Tensor) -> Tensor:
        """S [N, N]: row = query of a batch class (sorted labels), column = prototype of a batch class."""
        x, _, _ = group_by_label("angleproto", emb, labels, self.min_per_class, self.per_class)
        query = F.normalize(x[:, -1, :], dim=1)
        proto = F.normalize(x[:, :-1, :].mean(dim=1), dim=1)
        return self.scale(query @ proto.T)

    def forward(self, emb: Tensor, labels: Tensor) -> LossOutput:
        check_batch("angleproto", emb, labels, self.embedding_dim, self.n_classes)
        s = self.similarities(emb, labels)
        loss = F.cross_entropy(s, torch.arange(s.shape[0], device=s.device))
        return LossOutput(loss, None)
