"""PKDN losses: L1 reconstruction plus feature and output distillation from a frozen teacher."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class FeatureAdapters(nn.Module):
    """1×1 convs mapping student features to the teacher's widths.

    ``kind="conv"``: a learnable 1×1 conv for every feature (FitNets-style regressor), started as
    the identity where the widths match, so the student only has to hold the teacher's features up
    to a linear map (the teacher's prior-driven features are not all computable from the LR face).
    ``kind="identity"``: no adapter where the widths match (the student must copy the features).
    """

    def __init__(self, student_channels: list[int], teacher_channels: list[int], kind: str = "identity") -> None:
        super().__init__()
        if len(student_channels) != len(teacher_channels):
            raise ValueError("student and teacher must expose the same number of distilled features")
        if kind not in ("conv", "identity"):
            raise ValueError(f"adapter kind must be 'conv' or 'identity', got {kind!r}")
        maps: list[nn.Module] = []
        for cs, ct in zip(student_channels, teacher_channels):
            if cs == ct and kind == "identity":
                maps.append(nn.Identity())
                continue
            conv = nn.Conv2d(cs, ct, 1)
            if cs == ct:
                with torch.no_grad():
                    conv.weight.copy_(torch.eye(cs)[:, :, None, None])
                    conv.bias.zero_()
            maps.append(conv)
        self.maps = nn.ModuleList(maps)

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        return [m(f) for m, f in zip(self.maps, feats)]

    @torch.no_grad()
    def init_selection(self, index: list[list[int]]) -> int:
        """Start each 1×1 adapter as a channel *selection*: student channel ``j`` → teacher channel
        ``index[k][j]``, zeros elsewhere (no bias).

        For a pruned student, ``index`` lists the channels it kept (see
        :meth:`pkdn_edge.export.compress.prune.PruningPlan.feature_index`): its surviving features then start
        compared with the teacher features they were distilled against, instead of through a random
        projection. Adapters whose widths do not fit ``index`` keep their random init. Returns how
        many adapters were set.
        """
        if len(index) != len(self.maps):
            raise ValueError(f"got {len(index)} feature index lists for {len(self.maps)} adapters")
        done = 0
        for m, idx in zip(self.maps, index):
            if not isinstance(m, nn.Conv2d) or len(idx) != m.in_channels or max(idx, default=-1) >= m.out_channels:
                continue
            m.weight.zero_()
            m.weight[torch.as_tensor(idx), torch.arange(m.in_channels), 0, 0] = 1.0
            if m.bias is not None:
                m.bias.zero_()
            done += 1
        return done


def feature_distillation(student: list[torch.Tensor], teacher: list[torch.Tensor]) -> torch.Tensor:
    """Mean over stages of L1(F_s^k, F_t^k); every pair has the same shape (B,C_k,h_k,w_k)."""
    return torch.stack([F.l1_loss(s, t) for s, t in zip(student, teacher)]).mean()


def feat_weight(step: int, start: float, end: float, decay_steps: int) -> float:
    """Linear decay of the feature-distillation weight from ``start`` to ``end`` over ``decay_steps``."""
    if decay_steps <= 0:
        return end
    t = min(step / decay_steps, 1.0)
    return start + (end - start) * t
