"""HR → LR degradations (numpy / Pillow / OpenCV).

* ``bicubic``: the paper protocol (CTCNet/SPARNet): PIL bicubic ↓s, antialiased. Deterministic.
  (cv2.INTER_CUBIC does not antialias when shrinking and must not be used to make LR faces.)
* ``blur_noise_jpeg`` (:class:`BlurNoiseJPEGDegradation`; formerly ``webcam``): the older fixed
  four-stage chain, Gaussian blur, a random resampler, Gaussian noise, JPEG, each drawn from a seeded
  generator, with fixed ranges. Superseded by ``camera`` (:class:`~pkdn_edge.train.camera.CameraDegradation`
  in ``train/camera.py``: a configurable camera model with signal-dependent sensor noise, video codecs,
  second order and clean pairs, and the frozen evaluation protocols).

All functions take and return RGB uint8 arrays (H,W,3).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

#: The training degradations (``degradation:`` of a config, :class:`~pkdn_edge.train.data.BatchSampler`):
#: ``bicubic`` (the paper protocol), ``camera`` (train/camera.py), ``blur_noise_jpeg`` (the older chain below).
DEGRADATIONS = ("bicubic", "camera", "blur_noise_jpeg")
#: Former or alternative names still accepted in configs: ``webcam`` (the old name of ``blur_noise_jpeg``),
#: ``paper`` (the paper protocol's name in ``pkdn-train eval --protocol``).
DEGRADATION_ALIASES = {"webcam": "blur_noise_jpeg", "paper": "bicubic"}


def degradation_name(name: str) -> str:
    """The canonical name of a training degradation (an alias resolved); unknown names are returned as given."""
    return DEGRADATION_ALIASES.get(name, name)


def bicubic_down(hr: np.ndarray, scale: int) -> np.ndarray:
    """PIL antialiased bicubic ↓scale: (H,W,3) uint8 → (H/s,W/s,3) uint8."""
    h, w = hr.shape[:2]
    if h % scale or w % scale:
        raise ValueError(f"HR size {w}x{h} is not divisible by scale {scale}")
    return np.asarray(Image.fromarray(hr).resize((w // scale, h // scale), Image.BICUBIC))


def bicubic_up(lr: np.ndarray, scale: int) -> np.ndarray:
    """PIL bicubic ↑scale, the bicubic baseline of the protocol: (h,w,3) → (sh,sw,3) uint8."""
    h, w = lr.shape[:2]
    return np.asarray(Image.fromarray(lr).resize((w * scale, h * scale), Image.BICUBIC))


@dataclass(frozen=True)
class BlurNoiseJPEGDegradation:
    """The older fixed chain (``degradation: blur_noise_jpeg``, formerly ``webcam``): Gaussian blur →
    resample ↓s (area, bilinear or PIL bicubic) → Gaussian noise → JPEG. Unlike
    :class:`~pkdn_edge.train.camera.CameraDegradation` it has no settings in configs, signal-independent
    noise, no video codec, second order or clean pairs. Ranges are inclusive; set a range to (0, 0) to skip."""

    blur_sigma: tuple[float, float] = (0.2, 1.6)
    noise_sigma: tuple[float, float] = (0.0, 6.0)  # in 0..255 units
    jpeg_quality: tuple[int, int] = (55, 95)
    p_jpeg: float = 0.7

    def __call__(self, hr: np.ndarray, scale: int, rng: np.random.Generator) -> np.ndarray:
        x = hr.astype(np.float32)
        sigma = rng.uniform(*self.blur_sigma)
        if sigma > 0.05:
            x = cv2.GaussianBlur(x, (0, 0), sigma)
        h, w = hr.shape[:2]
        interp = [cv2.INTER_AREA, cv2.INTER_LINEAR, "pil"][rng.integers(3)]
        if interp == "pil":
            lr = bicubic_down(np.clip(x + 0.5, 0, 255).astype(np.uint8), scale).astype(np.float32)
        else:
            lr = cv2.resize(x, (w // scale, h // scale), interpolation=interp)
        noise = rng.uniform(*self.noise_sigma)
        if noise > 0:
            lr = lr + rng.normal(0.0, noise, lr.shape).astype(np.float32)
        lr = np.clip(lr + 0.5, 0, 255).astype(np.uint8)
        if rng.random() < self.p_jpeg:
            q = int(rng.integers(self.jpeg_quality[0], self.jpeg_quality[1] + 1))
            ok, buf = cv2.imencode(".jpg", lr[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, q])
            lr = cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1]
        return np.ascontiguousarray(lr)


