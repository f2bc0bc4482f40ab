"""Issue 28: the loop against what a user sees without it (the frame upscaled plainly).

The decision rule, the plain baseline, the native crop and the fidelity benchmark's rendering.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from pkdn_edge import webcam
from pkdn_edge.engines.bicubic import BicubicEngine
from pkdn_edge.face.align import TEMPLATE_128, inverse_matrix, template, umeyama_similarity
from pkdn_edge.face.detector import Face
from pkdn_edge.pipeline import MAX_FACE_Q, MIN_FACE_Q, FacePipeline
from pkdn_edge.pretrained import serve_window

ROOT = Path(__file__).resolve().parent.parent


class SharpenEngine(BicubicEngine):
    """Bicubic plus an unsharp mask: an 'engine' whose output differs from any plain resize."""

    def run(self, faces):
        up = super().run(faces).astype(np.float32)
        blur = np.stack([cv2.GaussianBlur(f, (0, 0), 1.5) for f in up])
        return np.clip(up + 0.8 * (up - blur) + 0.5, 0, 255).astype(np.uint8)


def _face(lm: np.ndarray) -> Face:
    box = np.array([*lm.min(0) - 4, *lm.max(0) + 4], np.float32)
    return Face(box, 0.99, lm.astype(np.float32))


def _landmarks(iod: float, centre=(80.0, 60.0)) -> np.ndarray:
    t = TEMPLATE_128 - TEMPLATE_128[:2].mean(0)
    return t * iod / 43.0 + np.asarray(centre)


def _frame(h=120, w=160, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return cv2.GaussianBlur(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), (0, 0), 1.0)


def test_decision_rule_keeps_faces_larger_than_every_template_plain():
    p = FacePipeline({4: BicubicEngine(4), 8: BicubicEngine(8)}, None)
    x4_iod, x8_iod = p.lr_iod[4], p.lr_iod[8]
    assert x4_iod == pytest.approx(10.75) and x8_iod == pytest.approx(5.375)
    assert p.choose_scale(MAX_FACE_Q * x4_iod + 0.1) == 0  # larger than every template: plain upscale
    assert p.choose_scale(60.0) == 0
    assert p.choose_scale(MAX_FACE_Q * x4_iod - 0.1) == 4
    assert p.choose_scale(10.75) == 4 and p.choose_scale(MIN_FACE_Q * x4_iod + 0.01) == 4
    assert p.choose_scale(MIN_FACE_Q * x4_iod - 0.01) == 8 and p.choose_scale(2.0) == 8
    assert p.choose_scale(10.75, canvas_scale=1.0) == 0  # a canvas no larger than the frame: nothing to gain
    assert FacePipeline({4: BicubicEngine(4)}, None, max_face_iod=0).choose_scale(500.0) == 4  # 0 = all faces


def test_a_face_larger_than_every_template_is_left_as_the_plain_upscale():
    f = _frame()
    lm = _landmarks(30.0)  # > 1.7 x 10.75
    p = FacePipeline({4: SharpenEngine(4), 8: SharpenEngine(8)}, None)
    r = p.process(f, 0.0, detections=[_face(lm)])
    assert r.skipped_large == 1 and r.faces[0].engine_scale == 0 and r.faces[0].paste is None
    assert np.array_equal(r.canvas, cv2.resize(f, (640, 480), interpolation=cv2.INTER_CUBIC))


def test_native_crop_is_the_frames_own_pixels_and_pastes_back_exactly():
    """A native crop is an integer window of the frame (no resampling); on a canvas at the engine's scale
    the SR face lands at exactly s times that window's position."""
    f = _frame(seed=1)
    lm = _landmarks(11.3, centre=(77.4, 58.8))
    p = FacePipeline(SharpenEngine(4, lr_size=40), None, smoothing=False, feather=0)
    r = p.process(f, 0.0, detections=[_face(lm)])
    fr = r.faces[0]
    ix, iy = -fr.M[0, 2], -fr.M[1, 2]
    assert ix == int(ix) and iy == int(iy) and np.array_equal(fr.M[:, :2], np.eye(2))
    ix, iy = int(ix), int(iy)
    assert np.array_equal(fr.lr, f[iy : iy + 40, ix : ix + 40])
    # the window's middle is where the template (32x32, centred in the 40 window) puts the crop centre
    centre = inverse_matrix(umeyama_similarity(lm, template(32) + 4.0)) @ np.array([19.5, 19.5, 1.0])
    assert abs(ix + 19.5 - centre[0]) <= 0.5 and abs(iy + 19.5 - centre[1]) <= 0.5
    assert np.array_equal(r.canvas[4 * iy : 4 * iy + 160, 4 * ix : 4 * ix + 160], fr.sr)  # feather 0: exact


def test_native_crop_is_steadier_than_the_template_warp_under_landmark_jitter():
    """Landmark noise moves a template warp's sampling grid every frame; a native crop moves only when the
    face moves by a whole pixel, so the pasted face changes less from frame to frame."""
    f = _frame(seed=2)
    rng = np.random.default_rng(0)
    change = {}
    for align in ("native", "template"):
        p = FacePipeline(SharpenEngine(4), None, smoothing=False, align=align)
        prev, diffs = None, []
        for i in range(12):
            lm = _landmarks(10.75) + rng.normal(0, 0.3, (5, 2))
            c = p.process(f, i / 30, detections=[_face(lm)]).canvas[200:280, 280:360].astype(np.float32)
            if prev is not None:
                diffs.append(np.abs(c - prev).mean())
            prev = c
        change[align] = float(np.mean(diffs))
    assert change["native"] < 0.5 * change["template"], change


def test_backend_bicubic_is_a_plain_resize_of_the_frame(tmp_path, capsys, monkeypatch):
    """--backend bicubic: no detector, no face path: every output frame is cv2.resize(frame, canvas, cubic)."""
    monkeypatch.setattr(webcam, "build_detector", lambda threads=2: pytest.fail("the baseline runs no detector"))
    src = tmp_path / "src"
    src.mkdir()
    frames = [_frame(90, 120, seed=k) for k in range(3)]
    for k, f in enumerate(frames):
        cv2.imwrite(str(src / f"{k:03d}.png"), f)
    out, stats = tmp_path / "out", tmp_path / "s.json"
    rc = webcam.main(["--source", str(src), "--backend", "bicubic", "--headless", "--view", "output", "--no-overlay",
                      "--output", str(out), "--stats-json", str(stats)])
    assert rc == 0, capsys.readouterr().err
    got = sorted(out.glob("*.png"))
    assert len(got) == 3
    for f, g in zip(frames, got):
        img = cv2.imread(str(g))
        assert img.shape == (360, 480, 3)
        assert np.array_equal(img, cv2.resize(f, (480, 360), interpolation=cv2.INTER_CUBIC))
    assert json.loads(stats.read_text())["faces_per_frame"]["mean"] == 0


def test_serving_windows_and_shipped_onnx_agree():
    from pkdn_edge.manifest import read_manifest

    assert serve_window(4) == 40 and serve_window(8) == 16
    for s in (4, 8):
        m = read_manifest(ROOT / "pkdn_edge" / "weights" / f"onnx_fp32_x{s}", verify=False)
        assert list(m.lr_size) == [serve_window(s)] * 2


def _fidelity():
    spec = importlib.util.spec_from_file_location("loop_fidelity", ROOT / "benchmarks" / "loop_fidelity.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["loop_fidelity"] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("condition", ["clean", "camera"])
def test_fidelity_rendering_is_deterministic(condition):
    lf = _fidelity()
    face = _frame(128, 128, seed=5)
    a, b = lf.render_scene(face, 4, condition, 7), lf.render_scene(face, 4, condition, 7)
    for k in ("hr", "lr", "landmarks", "protocol_lr"):
        assert np.array_equal(getattr(a, k), getattr(b, k)), k
    assert a.region == b.region
    c = lf.render_scene(face, 4, condition, 8)
    assert not np.array_equal(a.lr, c.lr)  # the seed matters (offset and, for camera, the draws)
    # the landmarks are where the face was put: the HR face sits at the region's offset
    ox, oy = a.region[0] - lf.REGION[0], a.region[1] - lf.REGION[1]
    assert np.array_equal(a.hr[oy : oy + 128, ox : ox + 128], face)
    assert np.allclose(a.landmarks, (TEMPLATE_128 + [ox, oy] + 0.5) / 4 - 0.5)


def test_a_canvas_no_larger_than_the_frame_runs_no_face_path_unless_the_zoom_view_shows_it():
    f = _frame(480, 640)
    lm = _landmarks(10.75, centre=(300.0, 200.0))
    calls = []

    class Det:
        def detect(self, frame):
            calls.append(1)
            return [_face(lm)]

    p = FacePipeline({4: SharpenEngine(4, lr_size=40)}, Det(), canvas=(640, 480))
    r = p.process(f, 0.0)
    assert not calls and r.faces == [] and np.array_equal(r.canvas, f)  # nothing the canvas could show
    p.zoom = True
    r = p.process(f, 1 / 30)
    assert calls and r.faces[0].engine_scale == 4 and r.faces[0].sr is not None  # SR'd for the zoom panel
    assert r.faces[0].paste is None and np.array_equal(r.canvas, f)  # ... but not pasted
