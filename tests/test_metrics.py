"""PSNR/SSIM against an independent implementation (scikit-image) and known values."""

import math

import numpy as np
import pytest

from pkdn_edge.metrics import evaluate_pair, psnr, rgb_to_y, ssim

skimage_metrics = pytest.importorskip("skimage.metrics", reason="scikit-image (dev extra) is the reference")


def _pair(seed: int = 0, noise: float = 12.0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:64, 0:64]
    ref = np.stack([(xx * 4) % 256, (yy * 3) % 256, ((xx + yy) * 2) % 256], -1).astype(np.uint8)
    img = np.clip(ref + rng.normal(0, noise, ref.shape), 0, 255).astype(np.uint8)
    return img, ref


def test_y_matches_matlab_coefficients():
    white = np.full((1, 1, 3), 255, np.uint8)
    black = np.zeros((1, 1, 3), np.uint8)
    assert rgb_to_y(white)[0, 0] == pytest.approx(235.0, abs=1e-3)
    assert rgb_to_y(black)[0, 0] == pytest.approx(16.0)


@pytest.mark.parametrize("crop", [0, 8])
def test_psnr_matches_skimage_on_y(crop):
    img, ref = _pair()
    a, b = rgb_to_y(img), rgb_to_y(ref)
    if crop:
        a, b = a[crop:-crop, crop:-crop], b[crop:-crop, crop:-crop]
    expected = skimage_metrics.peak_signal_noise_ratio(b, a, data_range=255)
    assert psnr(img, ref, crop_border=crop) == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize("crop", [0, 8])
def test_ssim_matches_skimage_gaussian_ssim(crop):
    img, ref = _pair(1, noise=20)
    a, b = rgb_to_y(img), rgb_to_y(ref)
    if crop:
        a, b = a[crop:-crop, crop:-crop], b[crop:-crop, crop:-crop]
    expected = skimage_metrics.structural_similarity(
        a, b, data_range=255, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
    )
    assert ssim(img, ref, crop_border=crop) == pytest.approx(expected, abs=2e-3)


def test_identical_images():
    _, ref = _pair()
    assert math.isinf(psnr(ref, ref))
    assert ssim(ref, ref) == pytest.approx(1.0)


def test_more_noise_scores_lower():
    a, ref = _pair(noise=5)
    b, _ = _pair(noise=25)
    assert psnr(a, ref) > psnr(b, ref) + 5
    assert ssim(a, ref) > ssim(b, ref)


def test_evaluate_pair_reports_both_protocols():
    img, ref = _pair()
    m = evaluate_pair(img, ref)
    assert set(m) == {"psnr_ctcnet", "ssim_ctcnet", "psnr_dic", "ssim_dic"}
    assert m["psnr_ctcnet"] != m["psnr_dic"]


def test_shape_mismatch_is_a_clear_error():
    img, ref = _pair()
    with pytest.raises(ValueError, match="shapes differ"):
        psnr(img[:32], ref)
