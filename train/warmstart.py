"""``python -m pkdn_edge.train.warmstart --config C``: score a student started from its teacher.

The conversion itself is :func:`pkdn_edge.train.student_init.student_from_teacher` (re-exported
here); it lives in its own module so that the training loop, which uses it, and this CLI, which
uses the loop's helpers, do not import each other.
"""

from __future__ import annotations

import torch

from .student_init import student_from_teacher

__all__ = ["main", "student_from_teacher"]


def main(argv: list[str] | None = None) -> int:
    """``python -m pkdn_edge.train.warmstart --config C``: validation PSNR of the teacher a student
    config's ``init`` names, with its prior and converted to a student (prior folded / dropped)."""
    from pkdn_edge.errors import CLIParser, run_cli

    ap = CLIParser(prog="python -m pkdn_edge.train.warmstart", description=main.__doc__)
    ap.add_argument("--config", required=True, help="a student config whose init is a teacher")
    return run_cli(lambda: _score(ap.parse_args(argv).config))


def _score(config: str) -> int:
    """Print the three validation scores of ``main`` for the student config ``config``."""
    import numpy as np

    from pkdn_edge.models.checkpoint import load_model

    from .config import load_config
    from .data import FaceData
    from .loop import load_priors, resolve_device, train_val_split, validate

    cfg = load_config(config)
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
        ("student from it, mean prior folded",
         validate(student_from_teacher(teacher, fold).to(dev), hr, cfg.scale, dev)),
    ]
    for name, score in rows:
        print(f"{name:36s} {score:.3f} dB on {len(va)} validation faces")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
