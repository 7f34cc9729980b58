"""A language adversary: the run's loss plus a gradient-reversed language classifier on the embeddings.

Domain-adversarial training (Ganin & Lempitsky, 2015): a small classifier learns to name each training
clip's language from its embedding, and the gradient it sends back into the model is reversed and
scaled by ``train.language_adversary``, so the model learns embeddings from which the language cannot
be read. The systems a model must tell apart at test time often share an unseen language (two Italian
diphone voices, none in training): embeddings that carry the language pull such clips together. The
classifier is trained only here; embedding and scoring never use it.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from sourcetrace.losses.base import Loss, LossOutput


class _Reverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, scale: float) -> Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        return -ctx.scale * grad, None


def reverse_gradient(x: Tensor, scale: float) -> Tensor:
    """Identity forward; the backward pass multiplies the gradient by ``-scale``."""
    return _Reverse.apply(x, scale)


class LanguageAdversary(nn.Module):
    """``forward(emb, labels, languages)``: ``loss``'s output with the adversary's cross-entropy added.

    The classifier (linear, ReLU, linear) sees the L2-normalised embeddings through a gradient reversal of ``weight``:
    its own weights minimise the cross-entropy, the model's maximise it at that weight.
    """

    def __init__(self, loss: Loss, n_languages: int, weight: float, hidden: int = 128):
        super().__init__()
        self.loss, self.weight = loss, float(weight)
        self.classifier = nn.Sequential(
            nn.Linear(loss.embedding_dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, n_languages)
        )

    def forward(self, emb: Tensor, labels: Tensor, languages: Tensor) -> LossOutput:
        out = self.loss(emb, labels)
        # on the unit sphere that scoring uses: the model cannot win by inflating the embeddings' norm
        logits = self.classifier(reverse_gradient(nn.functional.normalize(emb, dim=1), self.weight))
        return LossOutput(out.loss + nn.functional.cross_entropy(logits, languages), out.logits)
