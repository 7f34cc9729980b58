"""AAM-Softmax / ArcFace (Deng et al., 2019): s·cos(θ_y + m) for the target class, s·cos θ_j for the others."""

from __future__ import annotations

from sourcetrace.losses.base import MarginSoftmax, angular_margin


class AAMSoftmax(MarginSoftmax):
    """Additive angular margin softmax (m=0.3, s=30) with the numerically safe th/mm form (see
    ``base.angular_margin``)."""

    name = "aamsoftmax"
    margin_fn = staticmethod(angular_margin)
