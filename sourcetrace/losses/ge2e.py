"""GE2E (Wan et al., 2018) on a balanced batch of N classes x M clips (M >= 2).

Every clip is a query. Embeddings are L2-normalised first (Wan et al. define the d-vector as the
normalised network output). Centroids: the query's own class uses the mean of its other M−1 clips
(leave-one-out); other classes use all M. S = w·cos(e, c) + b with learned w > 0 (softplus, see
``base.PositiveScale``) and b; softmax cross-entropy over the N batch classes, averaged over queries.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from sourcetrace.config import LossConfig
from sourcetrace.losses.base import Loss, LossOutput, PositiveScale, check_batch, group_by_label, scatter_class_logits


class GE2E(Loss):
    """Generalised end-to-end softmax loss.

    ``LossOutput.logits`` are the query-vs-centroid similarities S in batch order, [B, n_classes], with
    −inf for classes absent from the batch (so argmax vs the labels is the in-batch accuracy).
    """

    min_per_class = 2
    params = ("init_w", "init_b")

    def __init__(self, embedding_dim: int, n_classes: int, cfg: LossConfig):
        super().__init__(embedding_dim, n_classes, cfg)
        self.scale = PositiveScale(cfg.init_w, cfg.init_b)

    def similarities(self, emb: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """S [N, M, N] (query class, clip, centroid class), the sorted batch classes, the grouping order."""
        unit = F.normalize(emb, dim=1)
        x, classes, order = group_by_label("ge2e", unit, labels, self.min_per_class, self.per_class)
        n, m, _ = x.shape
        total = x.sum(dim=1)  # [N, D]
        centroids = F.normalize(total / m, dim=1)
        own = F.normalize((total[:, None, :] - x) / (m - 1), dim=2)  # leave-one-out, [N, M, D]
        cos = torch.einsum("nmd,kd->nmk", x, centroids)
        cos_own = (x * own).sum(dim=2)  # x is unit-norm already
        eye = torch.eye(n, dtype=torch.bool, device=x.device)[:, None, :]
        cos = torch.where(eye, cos_own[:, :, None], cos)
        return self.scale(cos), classes, order

    def forward(self, emb: Tensor, labels: Tensor) -> LossOutput:
        check_batch("ge2e", emb, labels, self.embedding_dim, self.n_classes)
        s, classes, order = self.similarities(emb, labels)
        n, m, _ = s.shape
        flat = s.reshape(n * m, n)
        target = torch.arange(n, device=s.device).repeat_interleave(m)
        loss = F.cross_entropy(flat, target)
        logits = torch.empty_like(flat)
        logits[order] = flat.detach()
        return LossOutput(loss, scatter_class_logits(logits, classes, self.n_classes))
