"""PSNR and SSIM on the Y channel, as used in the face-SR literature (numpy + OpenCV, no torch).

Protocols (``../shared/design/PKDN.md`` §4; never mix them in one table):

* ``ctcnet`` (default): Y channel (BT.601, MATLAB ``rgb2ycbcr`` coefficients), **no border crop**.
* ``dic``: the same with an **8-pixel border crop** (DIC / KDFSRNet / SFMNet).

SSIM is the Gaussian-window SSIM of Wang et al. (11×11, σ = 1.5, K1 = 0.01, K2 = 0.03, statistics
over the 'valid' region), the form of MATLAB's ``ssim_index`` and BasicSR's ``calculate_ssim``.
Y is kept in float (not rounded to uint8), as BasicSR does.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

PROTOCOLS: dict[str, int] = {"ctcnet": 0, "dic": 8}  # name → border crop in pixels


def rgb_to_y(img: np.ndarray) -> np.ndarray:
    """RGB uint8 (H,W,3) or float in [0,255] → Y (H,W) float64 in [16, 235] (BT.601, MATLAB)."""
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"expected an (H,W,3) RGB image, got shape {img.shape}")
    x = img.astype(np.float64)
    return 16.0 + (65.481 * x[..., 0] + 128.553 * x[..., 1] + 24.966 * x[..., 2]) / 255.0


def _prepare(a: np.ndarray, b: np.ndarray, crop_border: int, y_channel: bool) -> tuple[np.ndarray, np.ndarray]:
    if a.shape != b.shape:
        raise ValueError(f"image shapes differ: {a.shape} vs {b.shape}")
    if y_channel and a.ndim == 3:
        a, b = rgb_to_y(a), rgb_to_y(b)
    else:
        a, b = a.astype(np.float64), b.astype(np.float64)
    if crop_border:
        a = a[crop_border:-crop_border, crop_border:-crop_border]
        b = b[crop_border:-crop_border, crop_border:-crop_border]
    return a, b


def psnr(img: np.ndarray, ref: np.ndarray, crop_border: int = 0, y_channel: bool = True) -> float:
    """PSNR in dB between two RGB uint8 images (H,W,3) (values 0..255). ``inf`` when identical."""
    a, b = _prepare(img, ref, crop_border, y_channel)
    mse = float(np.mean((a - b) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    g = cv2.getGaussianKernel(size, sigma)
    return g @ g.T


def _ssim_2d(a: np.ndarray, b: np.ndarray) -> float:
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    win = _gaussian_window()

    def filt(x: np.ndarray) -> np.ndarray:
        return cv2.filter2D(x, -1, win)[5:-5, 5:-5]  # 'valid' region of an 11×11 window

    mu_a, mu_b = filt(a), filt(b)
    var_a = filt(a * a) - mu_a**2
    var_b = filt(b * b) - mu_b**2
    cov = filt(a * b) - mu_a * mu_b
    num = (2 * mu_a * mu_b + c1) * (2 * cov + c2)
    den = (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    return float(np.mean(num / den))


def ssim(img: np.ndarray, ref: np.ndarray, crop_border: int = 0, y_channel: bool = True) -> float:
    """Gaussian SSIM between two RGB uint8 images (H,W,3); per-channel mean when ``y_channel=False``."""
    a, b = _prepare(img, ref, crop_border, y_channel)
    if a.ndim == 2:
        return _ssim_2d(a, b)
    return float(np.mean([_ssim_2d(a[..., c], b[..., c]) for c in range(a.shape[2])]))


def evaluate_pair(img: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    """PSNR and SSIM under every protocol: ``{"psnr_ctcnet": …, "ssim_ctcnet": …, "psnr_dic": …}``."""
    out: dict[str, float] = {}
    for name, crop in PROTOCOLS.items():
        out[f"psnr_{name}"] = psnr(img, ref, crop)
        out[f"ssim_{name}"] = ssim(img, ref, crop)
    return out
