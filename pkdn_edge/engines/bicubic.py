"""The bicubic "engine": plain ``cv2.resize`` with the engines' interface (no model, no backend).

``--backend bicubic-face`` runs it on the face path (a diagnostic of crop, paste and blend); tests use
it as a stand-in for a model. The baseline a user sees without pkdn-edge is not this but the whole
frame upscaled (``--backend bicubic``: ``FacePipeline(plain=True)``).
"""

from __future__ import annotations

import cv2
import numpy as np

from pkdn_edge.errors import PKDNError

__all__ = ["BicubicEngine"]


class BicubicEngine:
    """Upscales each LR face crop with ``cv2.resize(INTER_CUBIC)``; same interface as
    :func:`pkdn_edge.engines.load_engine`'s engines (``scale``, ``lr_size``, ``run``, ``warmup``)."""

    backend = "bicubic-face"
    precision = "none"

    def __init__(self, scale: int = 4, lr_size: int | None = None) -> None:
        if scale not in (2, 4, 8):
            raise PKDNError("bicubic engine: scale must be 2, 4 or 8")
        self.scale = int(scale)
        n = int(lr_size or 128 // self.scale)
        self.lr_size = (n, n)
        self.name = f"bicubic x{self.scale}"

    def warmup(self) -> None:
        pass

    def run(self, faces: np.ndarray) -> np.ndarray:
        faces = np.asarray(faces)
        n, h, w = faces.shape[:3]
        out = np.empty((n, h * self.scale, w * self.scale, 3), np.uint8)
        for i in range(n):
            cv2.resize(faces[i], (w * self.scale, h * self.scale), dst=out[i], interpolation=cv2.INTER_CUBIC)
        return out
