"""AM-Softmax (Wang et al., 2018): s·(cos θ_y − m) for the target class, s·cos θ_j for the others."""

from __future__ import annotations

from sourcetrace.losses.base import MarginSoftmax, additive_margin


class AMSoftmax(MarginSoftmax):
    """Additive-margin softmax on cosines of L2-normalised embeddings and class weights (m=0.3, s=30)."""

    name = "amsoftmax"
    margin_fn = staticmethod(additive_margin)
