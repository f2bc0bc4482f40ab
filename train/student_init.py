"""Start a student from its teacher's weights (the conversion; ``python -m pkdn_edge.train.warmstart``
scores it).

The student has the teacher's skeleton without the prior path: no :class:`PriorEncoder`, and each
:class:`ParsingFusionBlock` guide conv sees the image features only. A student built from a teacher
keeps every shared weight; each guide conv keeps its image-feature input slice, and the prior slice
is folded into the bias as its response to the mean prior feature (per channel, over a batch of
training priors), so the converted student starts as the teacher fed an "average face" prior.
Distillation then only has to teach the student to infer the part of the prior that differs from
that average.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from pkdn_edge.errors import PKDNError
from pkdn_edge.models import PKDN


@torch.no_grad()
def student_from_teacher(teacher: PKDN, priors: torch.Tensor | None = None) -> PKDN:
    """A student (LR only) with ``teacher``'s widths and weights.

    Args:
        teacher: a PKDN built with ``prior_channels > 0``.
        priors: (B,K,sH,sW) parsing priors of training faces; their mean prior features are folded
            into the guide biases. ``None`` drops the prior slice (as if the prior features were 0).

    Returns:
        the student in eval mode, on the CPU, fp32.
    """
    if teacher.cfg.role != "teacher" or teacher.prior_encoder is None:
        raise PKDNError("student_from_teacher needs a teacher checkpoint (one built with a parsing prior)")
    teacher = teacher.float().cpu().eval()
    student = PKDN(replace(teacher.cfg, prior_channels=0)).eval()
    prior_means: list[torch.Tensor] | None = None
    if priors is not None:
        feats = teacher.prior_encoder(priors.float().cpu())
        prior_means = [f.mean(dim=(0, 2, 3)) for f in feats]  # [(P,) per stage]
    t_state = teacher.state_dict()
    state: dict[str, torch.Tensor] = {}
    folds: list[tuple[str, torch.Tensor, int]] = []
    for name, value in student.state_dict().items():
        src = t_state[name]
        if src.shape == value.shape:
            state[name] = src.clone()
        elif name.startswith("fusions.") and name.endswith("guide.weight"):
            # teacher (C, C+P, 3, 3) → student (C, C, 3, 3)
            c = value.shape[1]
            state[name] = src[:, :c].clone()
            folds.append((name[: -len("weight")] + "bias", src[:, c:], int(name.split(".")[1])))
        else:
            raise PKDNError(f"cannot map teacher weight {name} {tuple(src.shape)} to {tuple(value.shape)}")
    if prior_means is not None:
        # a constant input m_p through a 3×3 conv adds sum_{p,kh,kw} W[o,C+p,kh,kw]·m_p (away from
        # the borders, where the zero padding makes it smaller)
        for bias, w_prior, stage in folds:
            state[bias] = state[bias] + torch.einsum("opkl,p->o", w_prior, prior_means[stage])
    student.load_state_dict(state)
    return student
