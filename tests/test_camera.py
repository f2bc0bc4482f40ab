"""The camera degradation model (train/camera.py) and the frozen ``camera`` evaluation protocol."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("av")

from pkdn_edge.errors import PKDNError  # noqa: E402
from pkdn_edge.train.camera import (  # noqa: E402
    CAMERA_PROTOCOL,
    CAMERA_PROTOCOL_VERSION,
    CameraDegradation,
    camera_protocol_lr,
    gaussian_kernel,
    motion_kernel,
    protocol_lr,
    video_codec,
)
from pkdn_edge.train.degradations import bicubic_down  # noqa: E402

# Only stage under test switched on: every probability 0 except the ones a test sets.
OFF = dict(p_clean=0.0, p_blur=0.0, p_aniso=0.0, p_motion=0.0, p_noise=0.0, p_jpeg=0.0, p_codec=0.0, p_second=0.0)


def _faces(n: int = 4, size: int = 64, seed: int = 0) -> np.ndarray:
    """Smooth synthetic 'faces' with edges: low-frequency colour fields plus a dark ellipse."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    out = []
    for _ in range(n):
        a = rng.uniform(0.2, 0.8, 3)
        img = np.stack([80 + 120 * a[c] * np.sin(3 * xx + c) * np.cos(2 * yy) + 60 for c in range(3)], -1)
        img[((xx - 0.5) / 0.3) ** 2 + ((yy - 0.45) / 0.2) ** 2 < 1] *= 0.4
        out.append(np.clip(img, 0, 255).astype(np.uint8))
    return np.stack(out)


def _draw(deg: CameraDegradation, hr: np.ndarray, scale: int = 4, seed: int = 1) -> np.ndarray:
    return deg(hr, scale, np.random.default_rng(seed))


def test_same_seed_same_lr_and_other_seed_other_lr():
    hr = _faces(1)[0]
    deg = CameraDegradation(p_clean=0.0)
    a, b, c = _draw(deg, hr, seed=3), _draw(deg, hr, seed=3), _draw(deg, hr, seed=4)
    assert a.shape == (16, 16, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_clean_pairs_are_exactly_the_paper_protocol():
    hr = _faces(1)[0]
    assert np.array_equal(_draw(CameraDegradation(**{**OFF, "p_clean": 1.0}), hr, 8), bicubic_down(hr, 8))


@pytest.mark.parametrize("stage", [
    dict(p_blur=1.0),                                # isotropic Gaussian
    dict(p_blur=1.0, p_aniso=1.0),                   # anisotropic Gaussian
    dict(p_blur=1.0, p_motion=1.0),                  # motion streak
    dict(p_noise=1.0, p_color_noise=1.0),            # colour sensor noise
    dict(p_noise=1.0, p_color_noise=0.0),            # luma-only noise
    dict(p_jpeg=1.0, jpeg_quality=(30, 30)),         # JPEG
    dict(p_codec=1.0, codecs=("libx264",)),          # H.264
    dict(p_codec=1.0, codecs=("mpeg4",)),            # MPEG-4 part 2
    dict(p_second=1.0, p_noise=1.0),                 # second order
])
def test_every_stage_changes_the_lr(stage):
    hr = _faces(1)[0]
    only_resample = CameraDegradation(**OFF, resamplers=("area",))
    with_stage = CameraDegradation(**{**OFF, **stage}, resamplers=("area",))
    base, got = _draw(only_resample, hr), _draw(with_stage, hr)
    assert got.shape == base.shape == (16, 16, 3)
    assert np.abs(got.astype(int) - base.astype(int)).mean() > 0.3, stage


def test_the_three_resamplers_differ():
    hr = _faces(1)[0]
    outs = [_draw(CameraDegradation(**OFF, resamplers=(r,)), hr) for r in ("area", "bilinear", "bicubic")]
    assert not np.array_equal(outs[0], outs[1]) and not np.array_equal(outs[1], outs[2])
    assert np.abs(outs[2].astype(int) - bicubic_down(hr, 4).astype(int)).max() <= 1  # PIL bicubic in float


def test_luma_noise_is_the_same_on_every_channel():
    hr = np.full((32, 32, 3), 128, np.uint8)
    lr = _draw(CameraDegradation(**{**OFF, "p_noise": 1.0, "p_color_noise": 0.0, "read_sigma": (4.0, 4.0)}), hr)
    d = lr.astype(int) - 128
    assert d.std() > 2 and np.array_equal(d[..., 0], d[..., 1]) and np.array_equal(d[..., 1], d[..., 2])


def test_kernels_are_normalised_and_oriented():
    k = gaussian_kernel(3.0, 0.5, 0.0)
    assert abs(k.sum() - 1) < 1e-5
    c = k.shape[0] // 2
    assert k[c, c + 3] > 10 * k[c + 3, c]  # wide along x, narrow along y
    m = motion_kernel(5.0, np.pi / 2)
    assert abs(m.sum() - 1) < 1e-5
    c = m.shape[0] // 2
    assert m[:, c].sum() > 0.8  # a vertical streak


def test_video_codec_handles_odd_sizes_and_is_deterministic():
    x = _faces(1, 64)[0][:17, :23]
    a, b = video_codec(x, "libx264", 30), video_codec(x, "libx264", 30)
    assert a.shape == x.shape and np.array_equal(a, b)


def test_bad_settings_fail_at_construction():
    with pytest.raises(PKDNError, match="unknown camera settings"):
        CameraDegradation.from_dict({"blur_sgima": [0, 1]})
    with pytest.raises(PKDNError, match="probability"):
        CameraDegradation(p_jpeg=1.5)
    with pytest.raises(PKDNError, match="range"):
        CameraDegradation(read_sigma=(3.0, 1.0))
    with pytest.raises(PKDNError, match="resamplers"):
        CameraDegradation(resamplers=("lanczos",))


def test_a_training_config_rejects_bad_camera_settings_before_loading_data():
    from pkdn_edge.train.config import load_config

    with pytest.raises(PKDNError, match="unknown camera settings"):
        load_config(overrides=["degradation=camera", "camera={p_nosie: 0.5}"])
    cfg = load_config(overrides=["degradation=camera", "camera={p_clean: 0.5}", "select_on=mean"])
    assert cfg.camera == {"p_clean": 0.5}


def test_camera_batches_are_a_pure_function_of_seed_and_step():
    from pkdn_edge.train.data import BatchSampler

    hr = _faces(8, 64)
    a = BatchSampler(hr, 4, "camera", seed=5, camera={"p_clean": 0.0}).batch(7, 4)["lr"]
    b = BatchSampler(hr, 4, "camera", seed=5, camera={"p_clean": 0.0}).batch(7, 4)["lr"]
    c = BatchSampler(hr, 4, "camera", seed=5, camera={"p_clean": 0.0}).batch(8, 4)["lr"]
    assert a.shape == (4, 3, 16, 16) and bool((a == b).all()) and not bool((a == c).all())


# ---------------------------------------------------------------------- the frozen protocol
# sha256 of the protocol's settings: changing them without bumping CAMERA_PROTOCOL_VERSION (and so
# silently changing every published camera-protocol number) fails here.
FROZEN_V1 = "5866813f74e33dddcee2b83e07ddd1794d55a3796407e5b0471df1d790393d78"


def _settings_hash() -> str:
    return hashlib.sha256(json.dumps(CAMERA_PROTOCOL.to_dict(), sort_keys=True).encode()).hexdigest()


def test_camera_protocol_settings_are_frozen_for_their_version():
    assert CAMERA_PROTOCOL_VERSION == 1
    assert CAMERA_PROTOCOL.p_clean == 0.0  # every evaluation face is degraded
    assert _settings_hash() == FROZEN_V1


def test_camera_protocol_set_is_stable_and_harder_than_the_paper_protocol():
    from pkdn_edge.metrics import psnr
    from pkdn_edge.train.degradations import bicubic_up

    hr = _faces(12, 128, seed=9)
    a, b = camera_protocol_lr(hr, 4), protocol_lr(hr, 4, "camera")
    assert a.shape == (12, 32, 32, 3) and np.array_equal(a, b)
    assert np.array_equal(camera_protocol_lr(hr[:5], 4), a[:5])  # face i's LR depends on the face and i only
    clean = protocol_lr(hr, 4, "bicubic")
    cam = np.mean([psnr(bicubic_up(x, 4), h) for x, h in zip(a, hr)])
    ref = np.mean([psnr(bicubic_up(x, 4), h) for x, h in zip(clean, hr)])
    assert cam < ref - 0.5
    with pytest.raises(PKDNError, match="unknown protocol"):
        protocol_lr(hr, 4, "jpeg")




def test_clean_teacher_lr_leaves_the_degraded_batch_unchanged():
    """``teacher_lr: clean``: the teacher gets the PIL-bicubic LR of the same (flipped) HR faces; the
    student's degraded LR is the same batch as without it (a fair distillation ablation)."""
    from pkdn_edge.train.data import BatchSampler, to_tensor

    hr = _faces(8, 64)
    plain = BatchSampler(hr, 4, "camera", seed=2, camera={"p_clean": 0.0}).batch(3, 4)
    both = BatchSampler(hr, 4, "camera", seed=2, camera={"p_clean": 0.0}, clean_lr=True).batch(3, 4)
    assert bool((plain["lr"] == both["lr"]).all()) and "lr_clean" not in plain
    hr_b = (both["hr"].permute(0, 2, 3, 1).numpy() * 255 + 0.5).astype(np.uint8)
    want = to_tensor(np.stack([bicubic_down(np.ascontiguousarray(x), 4) for x in hr_b]))
    assert bool((both["lr_clean"] == want).all())
    assert not bool((both["lr_clean"] == both["lr"]).all())
