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
        protocol_lr(hr, 4, "jpeg2000")  # ("jpeg" is a family protocol now)




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


# ---------------------------------------------------------------------- the wider camera model (issue 29)
NEW_STAGES = [
    dict(p_denoise=1.0, denoisers=("bilateral",), p_noise=1.0),  # noise reduction: bilateral
    dict(p_denoise=1.0, denoisers=("guided",), p_noise=1.0),     # noise reduction: self-guided filter
    dict(p_tone=1.0),                                            # gamma / S-curve
    dict(p_sharpen=1.0),                                         # unsharp mask
    dict(p_chroma=1.0, chroma_sampling=("420",)),                # 4:2:0
    dict(p_chroma=1.0, chroma_sampling=("422",)),                # 4:2:2
    dict(p_mjpeg=1.0, mjpeg_sampling=("422",)),                  # MJPEG
    dict(resamplers=("bicubic_point",)),                         # no low-pass
    dict(resamplers=("nearest",)),                               # point sampling / line skipping
    dict(p_shuffle=1.0, p_blur=1.0, p_noise=1.0, p_sharpen=1.0),  # BSRGAN-style random order
]


@pytest.mark.parametrize("stage", NEW_STAGES)
def test_every_new_stage_changes_the_lr_and_is_deterministic_under_a_seed(stage):
    hr = _faces(1, 128)[0]
    # the same chain without the stage (with the same sensor noise where the stage is a denoiser)
    ref = CameraDegradation(**{**OFF, "resamplers": ("area",), **({"p_noise": 1.0} if "p_denoise" in stage else {})})
    deg = CameraDegradation(**{**OFF, "resamplers": ("area",), **stage})
    a, b = _draw(deg, hr, seed=5), _draw(deg, hr, seed=5)
    assert a.shape == (32, 32, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b), stage
    if stage.get("p_shuffle"):  # another seed, another order
        assert not np.array_equal(a, _draw(deg, hr, seed=6))
    else:
        assert np.abs(a.astype(int) - _draw(ref, hr, seed=5).astype(int)).mean() > 0.2, stage


def test_stages_that_are_off_draw_nothing_and_stay_out_of_the_settings():
    on = CameraDegradation(p_sharpen=0.5, p_shuffle=0.1)
    assert "p_denoise" not in CameraDegradation().to_dict() and "denoisers" not in CameraDegradation().to_dict()
    assert {"p_sharpen", "sharpen_amount", "sharpen_radius", "p_shuffle"} <= set(on.to_dict())
    assert CameraDegradation.from_dict(on.to_dict()) == on
    rng_a, rng_b = np.random.default_rng(3), np.random.default_rng(3)
    hr = _faces(1, 64)[0]
    v1, explicit_off = CameraDegradation(), CameraDegradation(p_denoise=0.0, p_tone=0.0, p_mjpeg=0.0, p_shuffle=0.0,
                                                              sharpen_amount=(2.0, 3.0))
    for _ in range(10):
        assert np.array_equal(v1(hr, 4, rng_a), explicit_off(hr, 4, rng_b))
    assert rng_a.random() == rng_b.random()


def test_point_sampling_is_line_skipping_at_a_random_phase():
    from pkdn_edge.train.camera import point_sample

    x = np.random.default_rng(0).random((32, 32, 3)).astype(np.float32)
    assert np.array_equal(point_sample(x, (8, 8), np.array([0.3, 0.6])), x[2::4, 1::4])
    assert point_sample(x, (10, 7), np.array([0.99, 0.0])).shape == (7, 10, 3)


def test_chroma_subsampling_keeps_luma_and_averages_colour():
    from pkdn_edge.train.camera import chroma_subsample

    x = np.random.default_rng(1).random((16, 17, 3)).astype(np.float32) * 255
    y = np.array([0.299, 0.587, 0.114], np.float32)
    for mode in ("420", "422"):
        out = chroma_subsample(x, mode)
        assert out.shape == x.shape and np.abs(out @ y - x @ y).max() < 1e-2
        assert np.abs(out - x).mean() > 5  # colour detail is gone
    assert np.array_equal(chroma_subsample(x, "444"), x)


def test_denoisers_smooth_flat_noise_and_keep_a_step_edge():
    from pkdn_edge.train.camera import guided_filter

    rng = np.random.default_rng(2)
    step = np.zeros((24, 24, 3), np.float32)
    step[:, 12:] = 200
    noisy = step + rng.normal(0, 4, step.shape).astype(np.float32)
    deg = CameraDegradation(**{**OFF, "p_denoise": 1.0, "denoise_strength": (20.0, 20.0), "denoise_radius": (1.5, 1.5)})
    for kind in ("bilateral", "guided"):
        d = CameraDegradation(**{**deg.to_dict(), "denoisers": (kind,)})
        out = d.denoise(noisy, 1.0, np.random.default_rng(0))
        assert out[:, 2:9].std() < 0.6 * noisy[:, 2:9].std(), kind      # flat area smoothed
        assert out[:, 13].mean() - out[:, 10].mean() > 180, kind        # the edge stays
    assert guided_filter(step, 2, 1.0).max() <= 200.5


def test_sharpening_overshoots_at_edges():
    step = np.zeros((16, 16, 3), np.float32)
    step[:, 8:] = 150
    d = CameraDegradation(**{**OFF, "p_sharpen": 1.0, "sharpen_amount": (1.0, 1.0), "sharpen_radius": (1.0, 1.0)})
    out = d.sharpen(step, 1.0, np.random.default_rng(0))
    assert out.max() > 165 and out.min() < -15  # halos on both sides of the edge


def test_new_settings_are_validated():
    with pytest.raises(PKDNError, match="resamplers"):
        CameraDegradation(resamplers=("nearest", "lanczos"))
    with pytest.raises(PKDNError, match="denoisers"):
        CameraDegradation(denoisers=("median",))
    with pytest.raises(PKDNError, match="mjpeg_sampling"):
        CameraDegradation(mjpeg_sampling="422")
    with pytest.raises(PKDNError, match="mjpeg_quality"):
        CameraDegradation(mjpeg_quality=(50, 120))
    with pytest.raises(PKDNError, match="probability"):
        CameraDegradation(p_shuffle=float("nan"))
    with pytest.raises(PKDNError, match="range"):
        CameraDegradation(gamma=(0.0, 1.0))
    with pytest.raises(PKDNError, match="sharpen_amount must be a range"):
        CameraDegradation(sharpen_amount=1.0)
    with pytest.raises(PKDNError, match="unknown camera preset"):
        CameraDegradation.from_dict({"preset": "wider"})


def test_the_wide_preset_runs_every_stage_and_is_seeded():
    from pkdn_edge.train.camera import WIDE

    deg = CameraDegradation.from_dict({"preset": "wide", "p_clean": 0.0})
    assert deg.p_shuffle > 0 and deg.p_mjpeg > 0 and "nearest" in deg.resamplers and deg.blur_sigma[0] == 0.0
    assert deg == CameraDegradation(**{**WIDE, "p_clean": 0.0})
    hr = _faces(6, 64)
    for s in (4, 8):
        a = [deg(x, s, np.random.default_rng([9, i])) for i, x in enumerate(hr)]
        b = [deg(x, s, np.random.default_rng([9, i])) for i, x in enumerate(hr)]
        assert all(np.array_equal(p, q) and p.shape == (64 // s, 64 // s, 3) for p, q in zip(a, b))


# ---------------------------------------------------------------------- frozen per-family protocols
# sha256 of each family's settings, version and seed: changing one without bumping
# FAMILY_PROTOCOL_VERSION (and so silently changing published robustness numbers) fails here.
FROZEN_FAMILIES_V1 = {
    "clean": "ecc359e7a46f7a750831f0d1bd154c6365079730d17d29aa60455928c3049396",
    "blur": "2124d974dc7092c4b64f83226b5a566d83c2d6a2dffc96de1ebb189beb6083da",
    "aliasing": "af737650836be007f18f73e135dc3007a4f430e680de451d75246b4d66b8a87e",
    "noise": "64c42749029085af84bda6209546bc8e62da92857180f5cd865c04beb2438640",
    "isp": "6059cc188cefce1f6efd1118be362a0d044e43d1eb8071ea1083a58e835155a1",
    "jpeg": "d182b96b8c360a0f3db2e6f1c92692a0e0c4133fb16de05c46d1a81591fd0ac8",
    "video": "c2d93fb14e8ed66faa70a1af79a7f731308401ee6f159a543ad8e210ba65a02c",
    "mixed": "6155aa4884d05b801566df678432525e0ebabefabd425726b245b720288c54f0",
}


def test_family_protocols_are_frozen_for_their_version():
    from pkdn_edge.train.camera import FAMILIES, FAMILY_PROTOCOL_VERSION, family_protocol_key

    assert FAMILY_PROTOCOL_VERSION == 1 and FAMILIES == tuple(FROZEN_FAMILIES_V1)
    got = {f: hashlib.sha256(json.dumps(family_protocol_key(f), sort_keys=True).encode()).hexdigest() for f in FAMILIES}
    assert got == FROZEN_FAMILIES_V1


def test_family_protocols_are_stable_and_isolate_their_family():
    from pkdn_edge.train.camera import FAMILIES, family_protocol

    hr = _faces(6, 64, seed=4)
    for f in FAMILIES:
        a = protocol_lr(hr, 4, f)
        assert a.shape == (6, 16, 16, 3) and np.array_equal(a, protocol_lr(hr, 4, f)), f
        assert np.array_equal(protocol_lr(hr[:3], 4, f), a[:3]), f  # face i depends on the face and i only
        assert family_protocol(f).p_clean == 0.0
    clean = protocol_lr(hr, 4, "clean")
    area = np.stack([np.clip(cv2_area(x, 4) + 0.5, 0, 255).astype(np.uint8) for x in hr])
    assert np.array_equal(clean, area)  # clean = area binning, nothing else
    for f in FAMILIES[1:]:
        assert np.abs(protocol_lr(hr, 4, f).astype(int) - clean.astype(int)).mean() > 0.5, f


def cv2_area(x, s):
    import cv2

    return cv2.resize(x.astype(np.float32), (x.shape[1] // s, x.shape[0] // s), interpolation=cv2.INTER_AREA)
