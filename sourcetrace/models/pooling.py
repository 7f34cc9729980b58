"""Temporal pooling: frame features [B, C, T] -> one utterance vector [B, out_dim].

Both follow voxceleb_trainer's ResNetSE34L encoders: a frame-wise ``tanh(W x_t + b)`` scored by a
learned context vector, softmax over time. SAP returns the attention-weighted mean (out_dim = C);
ASP also the attention-weighted standard deviation (out_dim = 2C).
"""

from __future__ import annotations

import torch
import torch.nn as nn


class SelfAttentivePooling(nn.Module):
    """SAP: ``sum_t softmax_t(u . tanh(W x_t + b)) x_t`` (Cai et al. 2018, voxceleb_trainer SAP).

    >>> pool = SelfAttentivePooling(8)
    >>> tuple(pool(torch.randn(2, 8, 13)).shape), pool.out_dim
    ((2, 8), 8)
    """

    def __init__(self, channels: int):
        super().__init__()
        self.linear = nn.Linear(channels, channels)
        self.attention = nn.Parameter(torch.empty(channels, 1))
        nn.init.xavier_normal_(self.attention)
        self.out_dim = channels

    def weights(self, x: torch.Tensor) -> torch.Tensor:
        """Attention weights [B, T, 1] over the frames of x [B, C, T] (softmax in fp32)."""
        h = torch.tanh(self.linear(x.transpose(1, 2)))  # [B, T, C]
        return torch.softmax((h @ self.attention).float(), dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weights(x).to(x.dtype)
        return torch.bmm(x, w).squeeze(-1)  # [B, C]


class AttentiveStatsPooling(SelfAttentivePooling):
    """ASP: attention-weighted mean and standard deviation, concatenated (out_dim = 2C).

    >>> tuple(AttentiveStatsPooling(8)(torch.randn(2, 8, 13)).shape)
    (2, 16)
    """

    def __init__(self, channels: int):
        super().__init__(channels)
        self.out_dim = 2 * channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weights(x)  # fp32: the variance is a difference of squares
        xf = x.float()
        mu = torch.bmm(xf, w).squeeze(-1)
        var = torch.bmm(xf * xf, w).squeeze(-1) - mu * mu
        sd = torch.sqrt(var.clamp(min=1e-5))
        return torch.cat([mu, sd], dim=1).to(x.dtype)


POOLINGS: dict[str, type[SelfAttentivePooling]] = {"sap": SelfAttentivePooling, "asp": AttentiveStatsPooling}
