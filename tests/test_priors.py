"""Parsing priors: CelebAMask-HQ mapping, landmark polygons, dlib prior, disk cache, eval IoU."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import cv2
import numpy as np
import pytest

from pkdn_edge.train import priors as P

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
FACES = SHARED / "faces"
HAS_DLIB = all(importlib.util.find_spec(m) is not None for m in ("dlib", "face_recognition_models"))

needs_dlib = pytest.mark.skipif(not HAS_DLIB, reason="dlib-bin / face_recognition_models not installed (extra 'train')")
needs_shared = pytest.mark.skipif(
    not (FACES / "eval" / "parsing").is_dir() or not (FACES / "train").is_dir(),
    reason=f"{FACES} (shared face data) is absent",
)


def _template_landmarks(size: int = 128) -> np.ndarray:
    """A plausible frontal 68-point shape for the 128² alignment template (synthetic, hand-made)."""
    s = size / 128.0
    theta = np.linspace(np.pi, 0.0, 17)  # jaw: lower half-ellipse, point 0 on the image-left
    jaw = np.stack([64 + 46 * np.cos(theta), 50 + 68 * np.sin(theta)], 1)
    brow_l = np.stack([np.linspace(26, 56, 5), [40, 36, 35, 36, 38]], 1)
    brow_r = np.stack([128 - brow_l[::-1, 0], brow_l[::-1, 1]], 1)
    bridge = np.stack([[64] * 4, np.linspace(50, 70, 4)], 1)
    base = np.stack([np.linspace(56, 72, 5), [76, 78, 79, 78, 76]], 1)

    def eye(cx: float) -> np.ndarray:
        return np.array([[cx - 9, 49.5], [cx - 4, 46.5], [cx + 3, 46.5], [cx + 9, 49.5], [cx + 3, 52], [cx - 4, 52]])

    outer_up = np.array([[45.5, 93.5], [52, 89], [59, 87], [64, 88], [69, 87], [76, 89], [82.5, 93.5]])
    outer_low = np.array([[76, 99], [69, 102], [64, 102.5], [59, 102], [52, 99]])
    inner = np.array([[49, 93.5], [59, 91.5], [64, 92], [69, 91.5], [79, 93.5], [69, 96], [64, 96.5], [59, 96]])
    pts = np.vstack([jaw, brow_l, brow_r, bridge, base, eye(42.5), eye(85.5), outer_up, outer_low, inner])
    assert pts.shape == (68, 2)
    return (pts * s).astype(np.float32)


def _synthetic_face(size: int = 128) -> np.ndarray:
    """A drawn BGR face (skin ellipse, dark eyes/brows, red mouth) on the template positions."""
    img = np.full((size, size, 3), (90, 120, 60), np.uint8)
    pts = _template_landmarks(size)
    for poly, colour in (
        (P._face_hull(pts, np.array([0.0, 1.0]), 70.0), (150, 180, 225)),
        (pts[P.EYE_L], (30, 30, 30)), (pts[P.EYE_R], (30, 30, 30)),
        (pts[48:60], (70, 60, 190)),
    ):
        cv2.fillPoly(img, [np.rint(poly).astype(np.int32)], colour)
    for brow in (pts[P.BROW_L], pts[P.BROW_R]):
        cv2.polylines(img, [np.rint(brow).astype(np.int32)], False, (40, 50, 60), 3)
    return cv2.GaussianBlur(img, (3, 3), 0.8)


# --- CelebAMask-HQ mapping -------------------------------------------------------------------


def test_regions_and_mapping_table():
    assert P.K == len(P.REGIONS) == 11
    assert P.REGIONS[4] == "l_eye" and P.REGIONS[10] == "hair_or_other"
    assert len(P.CELEBAMASK_TO_REGION) == len(P.CELEBAMASK_CLASSES) == 19
    assert set(P.CELEBAMASK_TO_REGION.tolist()) == set(range(P.K))  # every region is reachable


def test_celebamask_every_class_maps_to_one_channel():
    label = np.tile(np.arange(19, dtype=np.uint8), (4, 3))  # (4, 57): every class, several times
    onehot = P.celebamask_to_regions(label)
    assert onehot.shape == (P.K, 4, 57) and onehot.dtype == np.float32
    assert set(np.unique(onehot).tolist()) <= {0.0, 1.0}
    np.testing.assert_array_equal(onehot.sum(0), 1.0)
    np.testing.assert_array_equal(onehot.argmax(0), P.CELEBAMASK_TO_REGION[label])
    named = {P.CELEBAMASK_CLASSES[c]: P.REGIONS[onehot[:, 0, c].argmax()] for c in range(19)}
    assert named["skin"] == "skin" and named["nose"] == "nose" and named["mouth"] == "inner_mouth"
    assert named["u_lip"] == "upper_lip" and named["l_lip"] == "lower_lip" and named["hair"] == "hair_or_other"


def test_celebamask_image_left_eye_lands_in_channel_4():
    # CelebAMask-HQ's r_eye (5) / r_brow (7) are the subject's right = image-left
    label = np.zeros((32, 64), np.uint8)
    label[10:14, 10:20], label[10:14, 44:54] = 5, 4
    label[5:8, 10:20], label[5:8, 44:54] = 7, 6
    onehot = P.celebamask_to_regions(label)
    for ch, side in ((P.L_EYE, "left"), (P.R_EYE, "right"), (P.L_BROW, "left"), (P.R_BROW, "right")):
        xs = np.nonzero(onehot[ch])[1]
        assert xs.size and (xs.mean() < 32) == (side == "left"), P.REGIONS[ch]


def test_celebamask_rejects_bad_labels():
    with pytest.raises(ValueError):
        P.celebamask_to_regions(np.full((4, 4), 19, np.uint8))
    with pytest.raises(ValueError):
        P.celebamask_to_regions(np.zeros((2, 4, 4), np.uint8))


# --- polygons and soft maps (no dlib) --------------------------------------------------------


def test_rasterize_template_landmarks_regions_in_place():
    lab = P.rasterize_regions(_template_landmarks(), (128, 128))
    assert lab.shape == (128, 128) and lab.dtype == np.uint8 and lab.max() < P.K
    present = set(np.unique(lab).tolist())
    assert present >= set(range(P.K)) - {P.INNER_MOUTH}  # a slightly open mouth still gives a sliver
    centre = {c: np.argwhere(lab == c).mean(0) for c in present}  # (y, x)
    assert centre[P.L_EYE][1] < 64 < centre[P.R_EYE][1] and centre[P.L_BROW][1] < 64 < centre[P.R_BROW][1]
    order = [P.L_BROW, P.L_EYE, P.NOSE, P.UPPER_LIP, P.LOWER_LIP]
    assert all(centre[a][0] < centre[b][0] for a, b in zip(order, order[1:]))
    assert lab[0, 0] == P.BACKGROUND and lab[64, 64] in (P.NOSE, P.SKIN)


def test_soft_map_sums_to_one_and_keeps_argmax():
    lab = P.rasterize_regions(_template_landmarks(), (128, 128))
    soft = P.soften(lab)
    assert soft.shape == (P.K, 128, 128) and soft.dtype == np.float32
    assert soft.min() >= 0 and soft.max() <= 1
    np.testing.assert_allclose(soft.sum(0), 1.0, atol=1e-5)
    assert (soft.argmax(0) == lab).mean() > 0.95
    q = P.quantize(soft)
    assert q.dtype == np.uint8 and np.abs(q.astype(int).sum(0) - 255).max() <= P.K


def test_prior_scales_with_image_size():
    soft = P.prior_from_landmarks(_template_landmarks(64), (64, 64))
    assert soft.shape == (P.K, 64, 64)
    np.testing.assert_allclose(soft.sum(0), 1.0, atol=1e-5)


# --- dlib landmark prior ---------------------------------------------------------------------


def test_missing_dlib_raises_missing_dependency(monkeypatch):
    import builtins

    from pkdn_edge.errors import MissingDependencyError

    real_import = builtins.__import__

    def no_dlib(name, *a, **kw):
        if name == "dlib":
            raise ImportError("no dlib")
        return real_import(name, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", no_dlib)
    with pytest.raises(MissingDependencyError, match=r"train"):
        P.LandmarkPrior().landmarks68(np.zeros((128, 128, 3), np.uint8))


def test_missing_model_package_raises(monkeypatch):
    from pkdn_edge.errors import MissingDependencyError

    monkeypatch.setattr(P.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(MissingDependencyError, match=r"face_recognition_models.*train"):
        P.shape_predictor_path()


@needs_dlib
def test_landmark_prior_on_synthetic_face():
    model = P.LandmarkPrior()
    img = _synthetic_face()
    pts = model.landmarks68(img)
    assert pts.shape == (68, 2) and pts.dtype == np.float32
    assert np.isfinite(pts).all() and (pts > -20).all() and (pts < 148).all()
    soft = model.prior(img)
    assert soft.shape == (P.K, 128, 128) and soft.dtype == np.float32
    np.testing.assert_allclose(soft.sum(0), 1.0, atol=1e-5)
    assert pts[P.EYE_L, 0].mean() < pts[P.EYE_R, 0].mean()  # 36–41 is the image-left eye


@needs_dlib
@needs_shared
def test_landmark_prior_on_real_training_face():
    img = cv2.imread(str(sorted((FACES / "train").glob("*.jpg"))[0]))
    model = P.LandmarkPrior()
    pts = model.landmarks68(img)
    # aligned crop: the eye centres sit near the template points (42.5, 49.5) / (85.5, 49.5)
    assert np.abs(pts[P.EYE_L].mean(0) - (42.5, 49.5)).max() < 10
    assert np.abs(pts[P.EYE_R].mean(0) - (85.5, 49.5)).max() < 10
    soft = model.prior(img)
    np.testing.assert_allclose(soft.sum(0), 1.0, atol=1e-5)
    lab = soft.argmax(0)
    assert lab[int(pts[P.EYE_L, 1].mean()), int(pts[P.EYE_L, 0].mean())] == P.L_EYE


# --- cache -----------------------------------------------------------------------------------


class _CountingModel(P.LandmarkPrior):
    """Template landmarks instead of dlib (no dependency), counting the calls."""

    def __init__(self) -> None:
        super().__init__(detect=False)
        self.calls = 0

    def _landmarks(self, img):
        self.calls += 1
        return _template_landmarks(img.shape[0]), False


def test_cache_hit_returns_identical_data_and_corrupt_entry_is_recomputed(tmp_path):
    model = _CountingModel()
    cache = P.PriorCache(tmp_path, model)
    img = _synthetic_face()
    first = cache.get("face_0", img)
    path = cache.path("face_0", img)
    assert path is not None and path.exists() and model.calls == 1
    assert not list(path.parent.glob("*.tmp"))  # atomic write left no temporary file

    again = P.PriorCache(tmp_path, model).get("face_0", img)
    np.testing.assert_array_equal(first, again)
    assert model.calls == 1  # served from disk

    other = img.copy()
    other[0, 0, 0] ^= 1  # one changed bit → another content hash → another entry
    assert cache.path("face_0", other) != path

    path.write_bytes(b"not a zip file")
    fixed = cache.get("face_0", img)
    np.testing.assert_array_equal(first, fixed)
    assert model.calls == 2  # recomputed …
    assert P.PriorCache._read(path, img.shape[:2]) is not None  # … and rewritten

    path.write_bytes(path.read_bytes()[:40])  # truncated
    np.testing.assert_array_equal(first, cache.get("face_0", img))
    assert model.calls == 3


def test_cache_disabled_without_folder():
    model = _CountingModel()
    cache = P.PriorCache(None, model)
    cache.get("x", _synthetic_face())
    cache.get("x", _synthetic_face())
    assert cache.path("x", _synthetic_face()) is None and model.calls == 2


@needs_dlib
def test_compute_priors_batch_uses_cache(tmp_path):
    imgs = np.stack([_synthetic_face(), cv2.flip(_synthetic_face(), 1)])
    out = P.compute_priors(imgs, tmp_path, progress=False)
    assert out.shape == (2, P.K, 128, 128) and out.dtype == np.uint8
    assert np.abs(out.astype(int).sum(1) - 255).max() <= P.K
    assert len(list(tmp_path.rglob("*.npz"))) == 2
    np.testing.assert_array_equal(out, P.compute_priors(imgs, tmp_path, progress=False))
    np.testing.assert_array_equal(out, P.compute_priors(imgs, None, progress=False))


# --- quality against labels (shared data only) -----------------------------------------------


@needs_dlib
@needs_shared
def test_landmark_prior_beats_mean_shape_prior_on_labelled_faces():
    """Per-face landmarks must beat the same polygons drawn from the mean training shape."""
    from pkdn_edge.train import eval_priors as E

    faces = E.load_faces(E.eval_dir(FACES))
    assert len(faces) >= 10
    model = P.LandmarkPrior()
    template = E.mean_shape(FACES / "train", model, n=100)
    res = E.evaluate(faces, model, template)
    ours, base = res["landmarks"].miou(), res["mean shape"].miou()
    assert ours > base + 0.1, (ours, base)
    assert ours > 0.55
    # and the side convention agrees with the dataset labels
    assert res["landmarks"].region_means()[P.L_EYE] > 0.4


def test_eval_priors_cli_clear_error_without_faces(tmp_path, capsys):
    from pkdn_edge.train import eval_priors as E

    assert E.main(["--faces", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "parsing" in err and "\n" not in err


@needs_shared
def test_dataset_labels_put_the_image_left_eye_in_channel_4():
    """On the real CelebAMask-HQ maps, channel 4/2 (l_eye/l_brow) lie on the image-left half."""
    for lab_path in sorted((FACES / "eval" / "parsing").glob("*.png")):
        onehot = P.celebamask_to_regions(cv2.imread(str(lab_path), cv2.IMREAD_UNCHANGED))
        w = onehot.shape[2]
        for ch, left in ((P.L_EYE, True), (P.R_EYE, False), (P.L_BROW, True), (P.R_BROW, False)):
            xs = np.nonzero(onehot[ch])[1]
            if xs.size:
                assert (xs.mean() < w / 2) == left, (lab_path.name, P.REGIONS[ch])


def test_fixed_box_is_a_centred_face_box():
    left, top, right, bottom = P.FIXED_BOX
    assert 0 < left < 0.5 < right < 1 and 0 < top < 0.5 < bottom <= 1
    assert abs((left + right) / 2 - 0.5) < 0.05 and 0.5 < right - left < 0.9
