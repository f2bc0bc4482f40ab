"""Quality side of the benchmark: the evaluation faces, their protocol LR inputs, and PSNR/SSIM.

Same protocol as ``pkdn-train eval`` (``shared/design/PKDN.md`` §4): HR = aligned 128×128 faces
(default ``shared/faces/eval``; read like ``pkdn-train``: centre square, INTER_AREA to 128), LR =
PIL antialiased bicubic ↓s (:func:`pkdn_edge.train.degradations.bicubic_down`, the function training
and evaluation use), metrics = :func:`pkdn_edge.metrics.evaluate_pair` (Y channel; ``ctcnet``: no
crop, ``dic``: 8-pixel crop), averaged over the faces.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from pkdn_edge.errors import PKDNError
from pkdn_edge.metrics import evaluate_pair

METRIC_KEYS = ("psnr_ctcnet", "ssim_ctcnet", "psnr_dic", "ssim_dic")


def default_faces_dir() -> Path | None:
    """``shared/faces/eval`` when present."""
    from pkdn_edge.export.data import shared_faces

    return shared_faces("eval")


def load_faces(folder: str | Path, limit: int | None = None) -> tuple[np.ndarray, list[str]]:
    """(N,128,128,3) uint8 RGB HR faces from ``folder`` (sorted; ``parsing/`` maps excluded) and names."""
    from pkdn_edge.export.data import list_faces, read_faces

    root = Path(folder)
    if not root.is_dir():
        raise PKDNError(f"face folder {root} does not exist (pass --faces DIR of aligned 128x128 faces)")
    files = list_faces(root)
    if limit:
        files = files[: int(limit)]
    if not files:
        raise PKDNError(f"no face images in {root}")
    return read_faces(files), [f.relative_to(root).as_posix() for f in files]


def make_lr(hr: np.ndarray, scale: int) -> np.ndarray:
    """Protocol LR faces: PIL bicubic ↓``scale`` of (N,H,W,3) uint8 RGB → (N,H/s,W/s,3) uint8 RGB."""
    from pkdn_edge.train.degradations import bicubic_down

    return np.ascontiguousarray(np.stack([bicubic_down(x, scale) for x in hr]))


def evaluate(run: Callable[[np.ndarray], np.ndarray], lr_bgr: np.ndarray, hr_rgb: np.ndarray) -> dict[str, float]:
    """Mean PSNR/SSIM (both protocols) of ``run`` (one (h,w,3) uint8 BGR face → (H,W,3) uint8 BGR)
    over the faces; also ``faces`` (count)."""
    per = []
    for lr, hr in zip(lr_bgr, hr_rgb):
        sr = np.asarray(run(lr))
        if sr.shape != hr.shape or sr.dtype != np.uint8:
            raise PKDNError(f"SR output {sr.dtype} {sr.shape} does not match the HR face {hr.shape}")
        per.append(evaluate_pair(np.ascontiguousarray(sr[..., ::-1]), hr))
    out = {k: float(np.mean([m[k] for m in per])) for k in METRIC_KEYS}
    out["faces"] = len(per)
    return out
