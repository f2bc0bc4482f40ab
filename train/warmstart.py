"""Start a student from its teacher's weights.

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


def main(argv: list[str] | None = None) -> int:
    """``python -m pkdn_edge.train.warmstart --config C``: validation PSNR of the teacher a student
    config's ``init`` names, with its prior and converted to a student (prior folded / dropped)."""
    import argparse

    import numpy as np

    from pkdn_edge.models.checkpoint import load_model

    from .config import load_config
    from .data import FaceData
    from .loop import load_priors, resolve_device, train_val_split, validate

    ap = argparse.ArgumentParser(prog="python -m pkdn_edge.train.warmstart", description=main.__doc__)
    ap.add_argument("--config", required=True, help="a student config whose init is a teacher")
    args = ap.parse_args(argv)
    cfg = load_config(args.config)
    torch.set_num_threads(cfg.threads)
    teacher, _ = load_model(cfg.init)
    data = FaceData.load(cfg.data, cfg.layout, cfg.hr_size, cfg.cache_dir, limit=cfg.data_limit or None)
    tr, va = train_val_split(data, cfg)
    priors = load_priors(data, cfg)
    pick = np.sort(np.random.default_rng(cfg.seed).choice(len(tr), min(256, len(tr)), replace=False))
    fold = torch.from_numpy(priors[tr][pick]).float().div(255)
    dev, hr = resolve_device(cfg.device), data.hr[va]
    rows = [
        ("teacher, with its prior", validate(teacher.to(dev), hr, cfg.scale, dev, priors[va])),
        ("student from it, prior dropped", validate(student_from_teacher(teacher).to(dev), hr, cfg.scale, dev)),
        ("student from it, mean prior folded", validate(student_from_teacher(teacher, fold).to(dev), hr, cfg.scale, dev)),
    ]
    for name, score in rows:
        print(f"{name:36s} {score:.3f} dB on {len(va)} validation faces")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
