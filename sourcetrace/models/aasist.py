"""AASIST back end on wav2vec2 features, and the ``w2v2_aasist`` model (wav2vec2-XLS-R + AASIST).

AASIST (Jung et al., ICASSP 2022) as in its SSL variant (Tak et al., Odyssey 2022): a linear projection
of the SSL features to 128, a residual 2-D conv encoder over (feature x time), spectral and temporal
graphs with graph attention (GAT) and graph pooling, two branches of heterogeneous stack graph
attention (HS-GAL) with a stack node, max graph operation (MGO) over the branches, and the readout
[max|.|, mean of temporal nodes, max|.|, mean of spectral nodes, stack node]. A final linear maps the
readout to ``model.embedding_dim`` (instead of 2 classes), so every loss and sampler applies unchanged.

Resources: a trial's request lives in its sweep file (``sweeps/table1_aasist.py``); measure steps/s and
memory with ``benchmarks/bench_ssl.py``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from sourcetrace.models.w2v2 import SSLFrontEnd

if TYPE_CHECKING:
    from transformers import Wav2Vec2Config

    from sourcetrace.config import Config


def _weight(dim: int) -> nn.Parameter:
    w = nn.Parameter(torch.empty(dim, 1))
    nn.init.xavier_normal_(w)
    return w


def _node_bn(bn: nn.BatchNorm1d, x: torch.Tensor) -> torch.Tensor:
    return bn(x.reshape(-1, x.shape[-1])).reshape(x.shape)


class GraphAttention(nn.Module):
    """GAT layer over nodes [B, N, in] -> [B, N, out]; pair scores w . tanh(W (x_i * x_j)) / temperature."""

    def __init__(self, in_dim: int, out_dim: int, temperature: float = 1.0):
        super().__init__()
        self.att_proj, self.att_weight = nn.Linear(in_dim, out_dim), _weight(out_dim)
        self.proj_with_att, self.proj_without_att = nn.Linear(in_dim, out_dim), nn.Linear(in_dim, out_dim)
        self.bn, self.drop, self.temp = nn.BatchNorm1d(out_dim), nn.Dropout(0.2), temperature

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.drop(x)
        pair = torch.tanh(self.att_proj(x[:, :, None] * x[:, None, :]))  # [B, N, N, out]
        att = F.softmax((pair @ self.att_weight).squeeze(-1) / self.temp, dim=-1)
        x = self.proj_with_att(att @ x) + self.proj_without_att(x)
        return F.selu(_node_bn(self.bn, x))


class HSGAL(nn.Module):
    """Heterogeneous stack graph attention: two node types, type-pair attention weights, a stack node."""

    def __init__(self, in_dim: int, out_dim: int, temperature: float = 100.0):
        super().__init__()
        self.proj_type1, self.proj_type2 = nn.Linear(in_dim, in_dim), nn.Linear(in_dim, in_dim)
        self.att_proj, self.att_projM = nn.Linear(in_dim, out_dim), nn.Linear(in_dim, out_dim)
        # attention vectors for type pairs (1,1), (1,2) = (2,1), (2,2), and for the stack node
        self.att_weight11, self.att_weight12, self.att_weight22 = _weight(out_dim), _weight(out_dim), _weight(out_dim)
        self.att_weightM = _weight(out_dim)
        self.proj_with_att, self.proj_without_att = nn.Linear(in_dim, out_dim), nn.Linear(in_dim, out_dim)
        self.proj_with_attM, self.proj_without_attM = nn.Linear(in_dim, out_dim), nn.Linear(in_dim, out_dim)
        self.bn, self.drop, self.temp = nn.BatchNorm1d(out_dim), nn.Dropout(0.2), temperature

    def forward(self, x1: torch.Tensor, x2: torch.Tensor, stack: torch.Tensor):
        n1 = x1.shape[1]
        x = self.drop(torch.cat([self.proj_type1(x1), self.proj_type2(x2)], dim=1))  # [B, N1 + N2, in]
        # stack node: attends to every node
        s_att = F.softmax((torch.tanh(self.att_projM(x * stack)) @ self.att_weightM) / self.temp, dim=1)
        stack = self.proj_with_attM(s_att.transpose(1, 2) @ x) + self.proj_without_attM(stack)
        # node graph: the attention vector depends on the node types of the pair
        node_type = torch.arange(x.shape[1], device=x.device) >= n1
        pair_type = node_type[:, None].long() + node_type[None, :].long()  # 0: (1,1), 1: mixed, 2: (2,2)
        weights = torch.cat([self.att_weight11, self.att_weight12, self.att_weight22], dim=1).T[pair_type]
        pair = torch.tanh(self.att_proj(x[:, :, None] * x[:, None, :]))  # [B, N, N, out]
        att = F.softmax((pair * weights.to(pair.dtype)).sum(-1) / self.temp, dim=-1)
        x = F.selu(_node_bn(self.bn, self.proj_with_att(att @ x) + self.proj_without_att(x)))
        return x[:, :n1], x[:, n1:], stack


class GraphPool(nn.Module):
    """Keep the top ``ratio`` of nodes by a learned sigmoid score, scaled by that score."""

    def __init__(self, ratio: float, dim: int, p: float = 0.3):
        super().__init__()
        self.ratio, self.proj, self.drop = ratio, nn.Linear(dim, 1), nn.Dropout(p)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        scores = torch.sigmoid(self.proj(self.drop(h)))  # [B, N, 1]
        k = max(int(h.shape[1] * self.ratio), 1)
        idx = scores.topk(k, dim=1).indices.expand(-1, -1, h.shape[-1])
        return torch.gather(h * scores, 1, idx)


class ResidualBlock(nn.Module):
    """AASIST's residual block as in Tak et al.'s code: no max pooling (the feature axis is kept), and
    conv1 reads the block input (the reference computes a BN-SELU pre-activation it never uses: omitted)."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, (2, 3), padding=(1, 1))
        self.bn2 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, (2, 3), padding=(0, 1))
        self.downsample = nn.Conv2d(c_in, c_out, (1, 3), padding=(0, 1)) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(F.selu(self.bn2(self.conv1(x)))) + self.downsample(x)


class HSGALBranch(nn.Module):
    """One inference branch: HS-GAL, graph pooling, a second HS-GAL added residually."""

    def __init__(self, in_dim: int, out_dim: int, ratio: float, temperature: float):
        super().__init__()
        self.hsgal1, self.hsgal2 = HSGAL(in_dim, out_dim, temperature), HSGAL(out_dim, out_dim, temperature)
        self.pool_t, self.pool_s = GraphPool(ratio, out_dim), GraphPool(ratio, out_dim)
        self.drop = nn.Dropout(0.2)

    def forward(self, t: torch.Tensor, s: torch.Tensor, stack: torch.Tensor):
        t, s, stack = self.hsgal1(t, s, stack)
        t, s = self.pool_t(t), self.pool_s(s)
        t2, s2, stack2 = self.hsgal2(t, s, stack)
        return self.drop(t + t2), self.drop(s + s2), self.drop(stack + stack2)


class AASIST(nn.Module):
    """SSL features [B, frames, in_dim] -> embeddings [B, embedding_dim]; dims default to Tak et al.'s."""

    def __init__(
        self,
        in_dim: int,
        embedding_dim: int,
        proj_dim: int = 128,
        channels: tuple[int, ...] = (32, 32, 64, 64, 64, 64),
        gat_dims: tuple[int, int] = (64, 32),
        pool_ratios: tuple[float, float, float] = (0.5, 0.5, 0.5),
        temperatures: tuple[float, float, float] = (2.0, 2.0, 100.0),
    ):
        super().__init__()
        self.proj = nn.Linear(in_dim, proj_dim)
        self.first_bn = nn.BatchNorm2d(1)
        widths = (1,) + tuple(channels)
        self.encoder = nn.Sequential(*[ResidualBlock(a, b) for a, b in zip(widths, widths[1:])])
        c = channels[-1]
        self.encoder_bn = nn.BatchNorm2d(c)
        self.attention = nn.Sequential(nn.Conv2d(c, 128, 1), nn.SELU(), nn.BatchNorm2d(128), nn.Conv2d(128, c, 1))
        self.pos_s = nn.Parameter(torch.randn(1, proj_dim // 3, c))  # spectral node positions
        self.gat_s = GraphAttention(c, gat_dims[0], temperatures[0])
        self.gat_t = GraphAttention(c, gat_dims[0], temperatures[1])
        self.pool_s, self.pool_t = GraphPool(pool_ratios[0], gat_dims[0]), GraphPool(pool_ratios[1], gat_dims[0])
        self.stacks = nn.Parameter(torch.randn(2, 1, 1, gat_dims[0]))  # one learnable stack node per branch
        self.branches = nn.ModuleList(HSGALBranch(*gat_dims, pool_ratios[2], temperatures[2]) for _ in range(2))
        self.drop = nn.Dropout(0.5)
        self.out = nn.Linear(5 * gat_dims[1], embedding_dim)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        if feats.shape[1] < 3:
            raise ValueError(
                f"AASIST: {feats.shape[1]} SSL frames is too short; it needs >= 3 (about 60 ms of audio at 16 kHz)"
            )
        x = self.proj(feats).transpose(1, 2).unsqueeze(1)  # [B, 1, proj_dim, frames]
        x = F.selu(self.first_bn(F.max_pool2d(x, (3, 3))))
        x = F.selu(self.encoder_bn(self.encoder(x)))  # [B, C, F, T]
        w = self.attention(x)
        e_s = (x * F.softmax(w, dim=-1)).sum(-1).transpose(1, 2) + self.pos_s  # spectral nodes [B, F, C]
        e_t = (x * F.softmax(w, dim=-2)).sum(-2).transpose(1, 2)  # temporal nodes [B, T, C]
        s, t = self.pool_s(self.gat_s(e_s)), self.pool_t(self.gat_t(e_t))
        outs = [branch(t, s, self.stacks[i].expand(x.shape[0], -1, -1)) for i, branch in enumerate(self.branches)]
        t, s, stack = (torch.maximum(a, b) for a, b in zip(*outs))  # max graph operation
        readout = torch.cat([t.abs().amax(1), t.mean(1), s.abs().amax(1), s.mean(1), stack.squeeze(1)], dim=1)
        return self.out(self.drop(readout))


class W2V2AASIST(nn.Module):
    """wav2vec2 front end + AASIST back end: waveform [B, T] at 16 kHz -> embeddings [B, embedding_dim]."""

    def __init__(self, frontend: SSLFrontEnd, embedding_dim: int, **aasist_kwargs):
        super().__init__()
        self.frontend = frontend
        self.backend = AASIST(frontend.out_dim, embedding_dim, **aasist_kwargs)
        self.embedding_dim = embedding_dim

    @classmethod
    def from_config(cls, cfg: Config, w2v2_config: Wav2Vec2Config | None = None) -> W2V2AASIST:
        """From ``cfg.ssl`` (pretrained ``ssl.source``) and ``cfg.model.embedding_dim``; with
        ``w2v2_config`` the SSL model is that architecture, randomly initialised (benchmarks, counts)."""
        return cls(SSLFrontEnd(cfg.ssl, w2v2_config), cfg.model.embedding_dim)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        return self.backend(self.frontend(wave))

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The parameters the optimiser should update (frozen SSL parts have requires_grad False)."""
        return [p for p in self.parameters() if p.requires_grad]

    def parameter_counts(self) -> dict[str, int]:
        """Total / trainable / SSL / AASIST parameter counts."""
        count = lambda ps: sum(p.numel() for p in ps)  # noqa: E731
        return {
            "total": count(self.parameters()),
            "trainable": count(self.trainable_parameters()),
            "ssl": count(self.frontend.parameters()),
            "aasist": count(self.backend.parameters()),
        }
