"""Maths shared by every loss, written once: batch checks, cosine logits, margins, balanced grouping.

Every loss is a ``Loss``: ``LOSSES[name](embedding_dim, n_classes, cfg)`` whose
``forward(emb [B, D], labels [B]) -> LossOutput(loss, logits)``. ``Loss.min_per_class`` is what
``sourcetrace.validation`` reads: 1 for classification losses, 2 for metric losses.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sourcetrace.config import LossConfig


@dataclass
class LossOutput:
    """``loss``: scalar to back-propagate. ``logits``: detached class scores [B, n_classes] whose
    argmax is the predicted label, or None where a loss has no per-clip class scores."""

    loss: Tensor
    logits: Tensor | None


class Loss(nn.Module):
    """The loss contract: built as ``cls(embedding_dim, n_classes, cfg)``; ``forward(emb, labels) -> LossOutput``.

    ``min_per_class``: the clips of one class every batch must hold (2 for metric losses, which need a
    balanced sampler). ``params``: the ``LossConfig`` fields it reads.
    """

    min_per_class: ClassVar[int] = 1
    params: ClassVar[tuple[str, ...]] = ()  # the ``loss.*`` keys it reads (MLflow logs only these)

    def __init__(self, embedding_dim: int, n_classes: int, cfg: LossConfig):
        super().__init__()
        self.embedding_dim, self.n_classes = embedding_dim, n_classes
        # clips per class of every batch when a balanced sampler lays batches out (the trainer sets it; 0 =
        # unknown): metric losses then group a batch on the GPU without reading the labels back to the host
        self.per_class = 0

    def forward(self, emb: Tensor, labels: Tensor) -> LossOutput:
        raise NotImplementedError


def check_batch(name: str, emb: Tensor, labels: Tensor, embedding_dim: int, n_classes: int) -> None:
    """Raise a ValueError naming ``name`` for a malformed batch (wrong shapes, labels out of range)."""
    if emb.dim() != 2 or emb.shape[1] != embedding_dim:
        raise ValueError(f"{name}: embeddings must be [batch, {embedding_dim}], got {list(emb.shape)}")
    if labels.dim() != 1 or labels.shape[0] != emb.shape[0]:
        raise ValueError(f"{name}: labels must be [{emb.shape[0]}] to match the embeddings, got {list(labels.shape)}")
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise ValueError(f"{name}: labels must be integer class indices, got dtype {labels.dtype}")
    if emb.shape[0] == 0:
        raise ValueError(f"{name}: empty batch")
    if labels.device.type != "cpu":
        return  # reading min/max stalls the device every step; the trainer's labels index the known systems
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0 or hi >= n_classes:
        raise ValueError(f"{name}: labels must lie in [0, {n_classes - 1}] (n_classes={n_classes}), got {lo}..{hi}")


class CosineHead(nn.Module):
    """Class weight matrix W [C, D] and the cosines cos θ[b, c] between L2-normalised rows of emb and W."""

    def __init__(self, embedding_dim: int, n_classes: int):
        super().__init__()
        if embedding_dim < 1 or n_classes < 2:
            raise ValueError(f"need embedding_dim >= 1 and n_classes >= 2, got {embedding_dim}, {n_classes}")
        self.weight = nn.Parameter(torch.empty(n_classes, embedding_dim))
        nn.init.xavier_normal_(self.weight, gain=1.0)

    def forward(self, emb: Tensor) -> Tensor:
        return F.linear(F.normalize(emb, dim=1), F.normalize(self.weight, dim=1))


def additive_margin(cos: Tensor, labels: Tensor, margin: float) -> Tensor:
    """AM-Softmax: cos θ_y − m for the target column, cos θ_j elsewhere.

    >>> additive_margin(torch.tensor([[0.5, 0.2]]), torch.tensor([0]), 0.3)
    tensor([[0.2000, 0.2000]])
    """
    return cos - margin * F.one_hot(labels, cos.shape[1]).to(cos.dtype)


def angular_margin(cos: Tensor, labels: Tensor, margin: float) -> Tensor:
    """ArcFace: cos(θ_y + m) for the target, cos θ_j elsewhere; numerically safe form.

    1 − cos² is clamped to [1e-7, 1] before the square root, so at |cos θ| = 1 the gradient is finite
    (an exact 0 there gives 0·∞ = NaN, as in voxceleb_trainer); the value moves by < 1e-4. Where θ_y + m
    would pass π (cos θ_y < cos(π − m)), cos(θ + m) stops decreasing in θ, so the target is given
    cos θ − m·sin(π − m) instead (insightface / voxceleb_trainer's ``th`` / ``mm``, easy_margin=False),
    which keeps the penalty monotone.

    >>> round(float(angular_margin(torch.tensor([[0.0, 0.1]]), torch.tensor([0]), 0.3)[0, 0]), 4)
    -0.2955
    """
    cos_m, sin_m = math.cos(margin), math.sin(margin)
    th, mm = math.cos(math.pi - margin), math.sin(math.pi - margin) * margin
    sine = (1.0 - cos * cos).clamp(1e-7, 1.0).sqrt()
    phi = cos * cos_m - sine * sin_m
    phi = torch.where(cos > th, phi, cos - mm)
    target = F.one_hot(labels, cos.shape[1]).bool()
    return torch.where(target, phi, cos)


def group_by_label(
    name: str, emb: Tensor, labels: Tensor, min_per_class: int, per_class: int = 0
) -> tuple[Tensor, Tensor, Tensor]:
    """Arrange a flat balanced batch as [N classes, M clips, D]; the batch order does not matter.

    Returns ``(grouped, classes, order)``: ``classes`` [N] the sorted labels, ``order`` [B] the batch rows
    in grouped (class-major, then batch-order) order, so ``grouped.reshape(B, D) == emb[order]``. Every
    label must occur the same number of times M >= ``min_per_class``, else a ValueError names the counts.

    ``per_class`` (the balanced sampler's M, known to the trainer): on a GPU the batch is then grouped by
    ``group_by_layout``, with no host sync; the counts are checked wherever reading them is free (the CPU).

    >>> g, c, o = group_by_label("ge2e", torch.arange(4.0)[:, None], torch.tensor([1, 0, 1, 0]), 2)
    >>> g[:, :, 0].tolist(), c.tolist()
    ([[1.0, 3.0], [0.0, 2.0]], [0, 1])
    """
    if per_class and labels.device.type != "cpu":
        return group_by_layout(name, emb, labels, min_per_class, per_class)
    order = torch.argsort(labels, stable=True)
    classes, counts = torch.unique_consecutive(labels[order], return_counts=True)
    m = int(counts[0])
    if len(classes) < 2 or m < min_per_class or bool((counts != m).any()):
        shown = dict(zip(classes.tolist()[:12], counts.tolist()[:12]))
        more = "" if len(classes) <= 12 else f" ... ({len(classes)} labels)"
        raise ValueError(
            f"{name} needs a balanced batch: >= 2 labels, each occurring the same number of times "
            f"(>= {min_per_class}); got clips per label {shown}{more}. Use sampler.name=balanced "
            f"with sampler.per_class >= {min_per_class}."
        )
    return emb[order].reshape(len(classes), m, emb.shape[1]), classes, order


def group_by_layout(
    name: str, emb: Tensor, labels: Tensor, min_per_class: int, per_class: int
) -> tuple[Tensor, Tensor, Tensor]:
    """``group_by_label`` of a batch known to hold distinct classes ``per_class`` times each (the balanced
    sampler's layout): shapes come from the batch size alone, so nothing waits for the device.

    >>> g, c, o = group_by_layout("ge2e", torch.arange(4.0)[:, None], torch.tensor([1, 0, 1, 0]), 2, 2)
    >>> g[:, :, 0].tolist(), c.tolist()
    ([[1.0, 3.0], [0.0, 2.0]], [0, 1])
    """
    b = labels.shape[0]
    if per_class < min_per_class or b % per_class or b // per_class < 2:
        raise ValueError(
            f"{name} needs a balanced batch of >= 2 labels x >= {min_per_class} clips; a batch of {b} cannot be "
            f"laid out {per_class} clips per label"
        )
    order = torch.argsort(labels, stable=True)
    return emb[order].reshape(b // per_class, per_class, emb.shape[1]), labels[order][::per_class], order


class PositiveScale(nn.Module):
    """Learned similarity scale and offset, S = w·cos + b, with w > 0 by construction.

    w = softplus(ρ) + 1e-6, ρ initialised so that w starts at ``init_w``. Unlike clamping after each step
    (voxceleb_trainer forgets to assign its ``torch.clamp(self.w, 1e-6)``), this needs no hook in the
    trainer and no checkpoint can ever hold w <= 0; at w ≈ 10 the gradient is that of w itself
    (dw/dρ = sigmoid(ρ) ≈ 1), so training behaves as the paper's unconstrained w away from 0.
    """

    def __init__(self, init_w: float, init_b: float):
        super().__init__()
        if not init_w > 0:
            raise ValueError(f"loss.init_w must be > 0 (w is kept positive), got {init_w}")
        rho = init_w + math.log(-math.expm1(-init_w))  # inverse softplus, stable for large init_w
        self.rho = nn.Parameter(torch.tensor(float(rho)))
        self.b = nn.Parameter(torch.tensor(float(init_b)))

    @property
    def w(self) -> Tensor:
        return F.softplus(self.rho) + 1e-6

    def forward(self, cos: Tensor) -> Tensor:
        return self.w * cos + self.b


def scatter_class_logits(scores: Tensor, classes: Tensor, n_classes: int) -> Tensor:
    """Place per-batch-class scores [Q, N] into [Q, n_classes] columns (−inf for classes absent from the batch)."""
    out = scores.new_full((scores.shape[0], n_classes), float("-inf"))
    out[:, classes] = scores
    return out


class MarginSoftmax(Loss):
    """Cosine-head classification loss with a margin on the target logit (AM / AAM share all but the margin).

    Subclasses set ``name`` and ``margin_fn`` (a function ``(cos, labels, m) -> cos with margin``).
    ``LossOutput.logits`` are s·cos θ without the margin (the scores used at inference / for accuracy);
    ``margin_logits`` gives the training logits the cross-entropy sees.
    """

    params = ("margin", "scale")
    name: str
    margin_fn: Callable[[Tensor, Tensor, float], Tensor]

    def __init__(self, embedding_dim: int, n_classes: int, cfg: LossConfig):
        super().__init__(embedding_dim, n_classes, cfg)
        self.margin, self.scale = float(cfg.margin), float(cfg.scale)
        self.head = CosineHead(embedding_dim, n_classes)

    def margin_logits(self, emb: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        cos = self.head(emb)
        return self.scale * type(self).margin_fn(cos, labels, self.margin), cos

    def forward(self, emb: Tensor, labels: Tensor) -> LossOutput:
        check_batch(self.name, emb, labels, self.embedding_dim, self.n_classes)
        logits, cos = self.margin_logits(emb, labels)
        return LossOutput(F.cross_entropy(logits, labels), (self.scale * cos).detach())
