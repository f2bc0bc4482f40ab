"""The webcam loop (pkdn_edge.webcam), its pipeline (pkdn_edge.pipeline) and sources (pkdn_edge.sources).

Fast, no shared/ data and no trained weights: the SR engine is the built-in bicubic one or a fake
engine that visibly sharpens faces; the detector is the project's RetinaFace when it is installed,
else an oracle that returns the demo's true landmarks (the demo source knows where its faces are).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from pkdn_edge import pipeline as pl
from pkdn_edge import webcam
from pkdn_edge.face.tracking import interocular
from pkdn_edge.pipeline import BicubicEngine, FacePipeline, fit_similarity, template, warp_to_lr
from pkdn_edge.sources import DemoSource, FrameSource, ImageFolderSource, VideoFileSource, open_source

ROOT = Path(__file__).resolve().parents[1]


def _real_detector():
    try:
        return webcam.build_detector(threads=2)
    except Exception:
        return None


REAL_DETECTOR = _real_detector()


class Face:
    def __init__(self, lm):
        self.landmarks = np.asarray(lm, np.float32)
        c, iod = self.landmarks.mean(0), interocular(self.landmarks)
        self.box = np.array([c[0] - 1.1 * iod, c[1] - 1.3 * iod, c[0] + 1.1 * iod, c[1] + 1.2 * iod], np.float32)
        self.score = 0.99


class OracleDetector:
    """The demo's true landmarks for the frame the pipeline is on (+ optional noise)."""

    def __init__(self, demo: DemoSource | None, noise: float = 0.0, scale: float = 1.0):
        self.demo, self.noise, self.scale = demo, noise, scale
        self.rng = np.random.default_rng(0)
        self.pipe = None

    def detect(self, frame):
        if self.demo is None:
            return []
        i = self.pipe.frame_index
        out = []
        for lm in self.demo.landmarks_at(i):
            lm = (lm + 0.5) / self.scale - 0.5
            out.append(Face(lm + self.rng.normal(0, self.noise, lm.shape)))
        return out


class SharpenEngine(BicubicEngine):
    """Fake SR engine that visibly changes faces: bicubic then a strong unsharp mask."""

    backend = "fake-sharpen"

    def run(self, faces):
        up = super().run(faces)
        for i in range(len(up)):
            blur = cv2.GaussianBlur(up[i], (0, 0), 2.0)
            up[i] = cv2.addWeighted(up[i], 2.5, blur, -1.5, 0)
        return up


@pytest.fixture
def detector(monkeypatch):
    """Use the real detector when installed, else the oracle; returns a setter for the oracle's demo."""
    state = {"oracle": None}

    def make(threads=2):
        if REAL_DETECTOR is not None:
            return REAL_DETECTOR
        state["oracle"] = OracleDetector(state.get("demo"), state.get("noise", 0.0), state.get("scale", 1.0))
        return state["oracle"]

    class Pipe(FacePipeline):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            if state["oracle"] is not None:
                state["oracle"].pipe = self

    monkeypatch.setattr(webcam, "build_detector", make)
    monkeypatch.setattr(webcam, "FacePipeline", Pipe)
    return state


@pytest.fixture
def sharpen(monkeypatch):
    orig = webcam.build_engine

    def build(backend, scale, *a, **k):
        if backend == "fake-sharpen":
            return SharpenEngine(scale)
        return orig(backend, scale, *a, **k)

    monkeypatch.setattr(webcam, "build_engine", build)
    monkeypatch.setattr(webcam, "BACKENDS", webcam.BACKENDS + ("fake-sharpen",))


def _run(argv, capsys=None):
    rc = webcam.main([str(a) for a in argv])
    err = capsys.readouterr().err if capsys else ""
    return rc, err


def _read_frames(folder: Path) -> list[np.ndarray]:
    return [cv2.imread(str(p)) for p in sorted(folder.glob("*.png"))]


@pytest.fixture(scope="module")
def demo_clip(tmp_path_factory):
    """A small mp4 of the moving demo (2 faces, 320x240, 36 frames) and its DemoSource."""
    demo = DemoSource(faces=2, frames=36, size=(320, 240), noise=1.0)
    path = tmp_path_factory.mktemp("clip") / "demo.mp4"
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30.0, (320, 240))
    assert vw.isOpened()
    for i in range(36):
        vw.write(demo.render(i))
    vw.release()
    return path, demo


def test_headless_video_run_changes_only_faces(tmp_path, capsys, demo_clip, detector, sharpen):
    path, demo = demo_clip
    detector["demo"] = demo
    runs = {}
    for backend in ("fake-sharpen", "bicubic"):
        out, stats = tmp_path / backend, tmp_path / f"{backend}.json"
        rc, err = _run(["--source", path, "--frames", 30, "--headless", "--backend", backend, "--view", "output",
                        "--no-overlay", "--output", out, "--stats-json", stats, "--detect-every", 3], capsys)
        assert rc == 0, err
        runs[backend] = (json.loads(stats.read_text()), _read_frames(out))
    s, frames = runs["fake-sharpen"]
    assert s["frames"] == 30 and len(frames) == 30
    assert s["fps"] > 0 and s["loop_fps"] > 0
    for stage in ("capture", "detect", "track", "align", "sr", "upscale", "paste", "total", "encode", "display"):
        assert set(s["latency_ms"][stage]) >= {"p50", "p90", "p99"}
        assert s["latency_ms"][stage]["p50"] <= s["latency_ms"][stage]["p90"] <= s["latency_ms"][stage]["p99"]
    assert s["latency_ms"]["total"]["p50"] > 0
    assert s["faces_per_frame"]["mean"] >= 1.5  # 2 faces
    assert s["canvas_scale"] == 4 and frames[0].shape == (960, 1280, 3)
    assert "temporal_stability" in s and "temporal_flicker" in s
    # the outputs differ where faces are, and (nearly) only there
    inside = outside = n_in = 0.0
    for i, (a, b) in enumerate(zip(frames, runs["bicubic"][1])):
        d = cv2.absdiff(a, b).max(axis=2).astype(np.float64)
        mask = np.zeros(d.shape, bool)
        yy, xx = np.mgrid[: d.shape[0], : d.shape[1]]
        for lm in demo.landmarks_at(i):
            c = (lm.mean(0) + 0.5) * 4 - 0.5
            r = 2.6 * interocular(lm) * 4
            mask |= (xx - c[0]) ** 2 + (yy - c[1]) ** 2 < r * r
        inside += d[mask].sum()
        outside += d[~mask].sum()
        n_in += mask.sum()
    assert inside / n_in > 1.0, inside / n_in  # faces visibly changed
    assert outside / (inside + outside) < 0.03, outside / (inside + outside)  # ... and nothing else


def test_smoothing_lowers_temporal_stability(tmp_path, capsys, detector):
    """A still scene with a jittery detector: landmark smoothing steadies the pasted faces."""
    spec = "demo:faces=2,frames=40,motion=0,jitter=0,noise=3,size=320x240"
    detector["demo"] = open_source(spec)
    detector["noise"] = 0.6
    res = {}
    for flag in ([], ["--no-smooth"]):
        stats = tmp_path / f"s{len(flag)}.json"
        rc, err = _run(["--source", spec, "--headless", "--backend", "bicubic", "--detect-every", 1, "--output",
                        tmp_path / f"o{len(flag)}.avi", "--stats-json", stats] + flag, capsys)
        assert rc == 0, err
        res[bool(flag)] = json.loads(stats.read_text())
    smooth, raw = res[False], res[True]
    assert smooth["smoothing"] and not raw["smoothing"]
    assert smooth["temporal_stability"] < raw["temporal_stability"]
    assert smooth["temporal_flicker"] < raw["temporal_flicker"]
    if smooth["landmark_nme"] is not None and raw["landmark_nme"] is not None and REAL_DETECTOR is None:
        assert smooth["landmark_nme"] < raw["landmark_nme"]


def test_missing_camera_falls_back_to_demo(tmp_path, capsys, detector):
    idx = next(i for i in range(50, 100) if not os.path.exists(f"/dev/video{i}"))
    detector["demo"] = DemoSource(faces=1)
    stats = tmp_path / "s.json"
    rc, err = _run(["--source", idx, "--frames", 3, "--headless", "--backend", "bicubic", "--output",
                    tmp_path / "o.avi", "--stats-json", stats], capsys)
    assert rc == 0, err
    assert f"no camera at index {idx}" in err and "demo" in err
    assert json.loads(stats.read_text())["source"].startswith("demo")


class CorruptSource(FrameSource):
    """Demo frames interleaved with None, empty, float, 1-channel, BGRA and wrong-size frames."""

    def __init__(self):
        super().__init__()
        self.demo = DemoSource(faces=1, frames=100, size=(320, 240))
        self.seq = []
        for i in range(12):
            self.seq.append(("ok", self.demo.render(i)))
            bad = [None, np.zeros((0, 0, 3), np.uint8), np.zeros((240, 320, 3), np.float32), "junk",
                   np.zeros((4, 4, 3), np.uint8)][i % 5]
            self.seq.append(("ok", bad))
        self.seq.insert(3, ("ok", cv2.cvtColor(self.demo.render(50), cv2.COLOR_BGR2GRAY)))   # gray: converted
        self.seq.insert(5, ("ok", cv2.cvtColor(self.demo.render(51), cv2.COLOR_BGR2BGRA)))   # BGRA: converted
        self.seq.insert(7, ("ok", np.zeros((480, 640, 3), np.uint8)))                        # other size: letterboxed
        self.name = "corrupt"

    def _read(self):
        if not self.seq:
            self.end_reason = "end"
            return "end", None, None
        st, img = self.seq.pop(0)
        return st, img, None


def test_corrupt_frames_are_skipped_and_counted(tmp_path, capsys, detector, monkeypatch):
    src = CorruptSource()
    monkeypatch.setattr(webcam, "_open_input", lambda args: src)
    stats = tmp_path / "s.json"
    rc, err = _run(["--headless", "--backend", "bicubic", "--output", tmp_path / "o.avi", "--stats-json", stats], capsys)
    assert rc == 0, err
    s = json.loads(stats.read_text())
    assert s["frames_skipped_corrupt"] == 12
    assert s["frames"] == 15


def test_zero_face_frames_and_image_folder(tmp_path, capsys, detector):
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        img = cv2.GaussianBlur(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8), (0, 0), 3)
        cv2.imwrite(str(folder / f"{i:03d}.png"), img)
    (folder / "003b.png").write_bytes(b"not a png")  # unreadable: skipped and counted
    detector["demo"] = None
    out, stats = tmp_path / "out", tmp_path / "s.json"
    rc, err = _run(["--source", folder, "--headless", "--backend", "bicubic", "--view", "output", "--no-overlay",
                    "--output", out, "--stats-json", stats], capsys)
    assert rc == 0, err
    s = json.loads(stats.read_text())
    assert s["frames"] == 6 and s["frames_skipped_corrupt"] == 1
    assert s["faces_per_frame"]["mean"] == 0.0
    first = cv2.imread(str(folder / "000.png"))
    expected = cv2.resize(first, (640, 480), interpolation=cv2.INTER_CUBIC)
    assert np.array_equal(_read_frames(out)[0], expected)  # no face: the output is the bicubic frame


def test_ctrl_c_still_writes_summary(tmp_path, capsys, detector, monkeypatch):
    class Interrupting(FrameSource):
        def __init__(self):
            super().__init__()
            self.demo = DemoSource(faces=1, frames=50, size=(320, 240))
            self.i = 0
            self.name = "interrupting"

        def _read(self):
            if self.i == 5:
                raise KeyboardInterrupt
            self.i += 1
            return "ok", self.demo.render(self.i), None

    monkeypatch.setattr(webcam, "_open_input", lambda args: Interrupting())
    stats = tmp_path / "s.json"
    rc, err = _run(["--headless", "--backend", "bicubic", "--output", tmp_path / "o.mp4", "--stats-json", stats], capsys)
    assert rc == 0, err
    s = json.loads(stats.read_text())
    assert s["frames"] == 5 and "interrupted" in s["end_reason"]
    assert "p99" in err  # the summary table was printed
    cap = cv2.VideoCapture(str(tmp_path / "o.mp4"))
    assert cap.isOpened() and cap.read()[0]


def test_missing_artifact_tells_the_export_command(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(webcam, "_export_roots", lambda: [tmp_path / "exports"])
    monkeypatch.setattr(webcam, "_export_tools_available", lambda: False)
    rc, err = _run(["--source", "demo", "--backend", "onnxruntime", "--frames", 1, "--headless"], capsys)
    assert rc == 2
    assert "pkdn-export --target onnx" in err and "--backend bicubic" in err
    assert err.count("\n") == 1  # one line, no traceback


def test_default_artifact_locations(tmp_path, monkeypatch):
    monkeypatch.setenv("PKDN_EXPORTS", str(tmp_path))
    c = webcam.default_artifacts("openvino", 8, None)
    assert c[0] == tmp_path / "openvino_fp32_x8"
    assert tmp_path / "onnx_fp32_x8" in c
    assert webcam.default_artifacts("onnxruntime", 4, "int8")[0] == tmp_path / "onnx_int8_x4"


# ------------------------------------------------------------------------------------------------
# pipeline


def test_alignment_matches_the_128_template():
    demo = DemoSource(faces=1, iod=43.0, motion=0.3, noise=0)
    f, lm = demo.render(5), demo.landmarks_at(5)[0]
    M = fit_similarity(lm, template(128))
    warped_lm = lm @ M[:, :2].T + M[:, 2]
    # least squares is similarity-invariant: same residual as fitting the photo's own landmarks
    P = demo.face.landmarks
    M0 = fit_similarity(P, template(128))
    assert np.allclose(warped_lm - template(128), P @ M0[:, :2].T + M0[:, 2] - template(128), atol=1e-3)
    lr32 = warp_to_lr(f, fit_similarity(lm, template(32)), 32)
    hr = warp_to_lr(f, M, 128)
    ref = cv2.resize(hr, (32, 32), interpolation=cv2.INTER_AREA)
    assert lr32.shape == (32, 32, 3)
    assert np.abs(lr32.astype(int) - ref).mean() < 3.0  # LR grid = INTER_AREA shrink of the 128 crop


def test_paste_is_aligned_with_the_canvas():
    """Bicubic engine on a face already at LR size: the pasted face lands where the canvas has it."""
    demo = DemoSource(faces=1, iod=10.75, motion=0.3, noise=0)
    f, lm = demo.render(10), demo.landmarks_at(10)[0]
    p = FacePipeline(BicubicEngine(4), None)
    r = p.process(f, 0.0, detections=[Face(lm)])
    info = r.faces[0].paste
    x1, y1, x2, y2 = info.rect
    base, a = info.base.astype(float), info.alpha[..., None]

    def err(dx, dy):
        sh = np.roll(r.canvas, (dy, dx), (0, 1))[y1:y2, x1:x2].astype(float)
        return (np.abs(sh - base) * a).sum() / a.sum()

    e0 = err(0, 0)
    assert e0 < 8.0  # the pasted face went through LR and back: blurrier, but in place
    assert all(e0 < err(dx, dy) for dx, dy in ((1, 0), (-1, 0), (0, 1), (0, -1)))


def test_scale_auto_picks_engine_by_face_size():
    demo = DemoSource(faces=2, iod=10, noise=0)
    lms = demo.landmarks_at(0)
    c = lms[0].mean(0)
    lms[0] = (lms[0] - c) * 0.5 + c  # one tiny face (IOD 5) and one normal (IOD 10)
    p = FacePipeline({4: BicubicEngine(4), 8: BicubicEngine(8)}, None, scale="auto")
    assert p.canvas_scale == 4
    r = p.process(demo.render(0), 0.0, detections=[Face(x) for x in lms])
    small, big = sorted(r.faces, key=lambda f: f.iod)
    assert small.iod < 7 < big.iod
    assert (small.engine_scale, big.engine_scale) == (8, 4)
    assert r.canvas.shape == (480 * 4, 640 * 4, 3)
    assert all(f.sr.shape == (128, 128, 3) for f in r.faces)
    assert set(r.timings) >= set(pl.STAGES)


def test_one_sr_batch_per_frame():
    calls = []

    class Counting(BicubicEngine):
        def run(self, faces):
            calls.append(len(faces))
            return super().run(faces)

    demo = DemoSource(faces=3, noise=0)
    p = FacePipeline(Counting(4), None)
    p.process(demo.render(0), 0.0, detections=[Face(x) for x in demo.landmarks_at(0)])
    assert calls == [3]


def test_large_faces_keep_the_bicubic_frame():
    demo = DemoSource(faces=1, iod=60, noise=0)
    det = [Face(demo.landmarks_at(0)[0])]
    r = FacePipeline(BicubicEngine(4), None).process(demo.render(0), 0.0, detections=det)
    assert r.skipped_large == 1 and r.faces[0].paste is None  # eyes 60 px apart > 43 px of the SR output
    r = FacePipeline(BicubicEngine(4), None, max_face_iod=0).process(demo.render(0), 0.0, detections=det)
    assert r.skipped_large == 0 and r.faces[0].paste is not None


# ------------------------------------------------------------------------------------------------
# sources


def test_demo_source_is_deterministic_and_finite():
    a, b = DemoSource(faces=3, frames=7), DemoSource(faces=3, frames=7)
    fa = [f.image for f in a]
    assert len(fa) == 7 and fa[0].shape == (480, 640, 3) and fa[0].dtype == np.uint8
    assert all(np.array_equal(x, f.image) for x, f in zip(fa, b))
    assert not np.array_equal(fa[0], fa[6])  # it moves
    assert len(a.landmarks_at(3)) == 3
    assert a.face.origin.startswith("NASA")  # the shipped public-domain photo


def test_downscale_and_video_file(demo_clip):
    path, _ = demo_clip
    src = open_source(str(path), downscale=2)
    frames = [f for f in src]
    assert len(frames) == 36 and frames[0].image.shape == (120, 160, 3)
    assert isinstance(VideoFileSource(path), VideoFileSource)
    with pytest.raises(Exception, match="not found"):
        open_source("/nonexistent/video.mp4")
    with pytest.raises(Exception, match="no images"):
        ImageFolderSource(Path(path).parent)  # holds only the mp4


# ------------------------------------------------------------------------------------------------
# end to end, as a user runs it


@pytest.mark.skipif(REAL_DETECTOR is None, reason="the face detector (pkdn_edge.face.detector) is not installed")
def test_module_cli_without_torch(tmp_path):
    blocker = (
        "import importlib.abc, sys\n"
        "class B(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in {'torch', 'nncf', 'torchao', 'onnxscript', 'torch_pruning', 'PIL', 'yaml'}:\n"
        "            raise ModuleNotFoundError(name)\n"
        "sys.meta_path.insert(0, B())\n"
        "from pkdn_edge import webcam\n"
        "rc = webcam.main(sys.argv[1:])\n"
        "assert 'torch' not in sys.modules\n"
        "sys.exit(rc)\n")
    stats = tmp_path / "s.json"
    r = subprocess.run([sys.executable, "-c", blocker, "--source", "demo:frames=12,faces=2", "--backend", "bicubic",
                        "--headless", "--output", str(tmp_path / "demo.mp4"), "--stats-json", str(stats)],
                       capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr
    s = json.loads(stats.read_text())
    assert s["frames"] == 12 and s["faces_per_frame"]["mean"] > 1.0
    cap = cv2.VideoCapture(str(tmp_path / "demo.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 12


class FakeCapture:
    """cv2.VideoCapture stand-in: a camera that delivers ``frames`` frames, then is unplugged."""

    opened = 0
    plugged = True

    def __init__(self, index):
        FakeCapture.opened += 1
        self.n = 0
        self.demo = DemoSource(faces=1, frames=100, size=(320, 240))

    def isOpened(self):
        return FakeCapture.plugged

    def set(self, *a):
        return True

    def get(self, prop):
        return 30.0 if prop == cv2.CAP_PROP_FPS else 0.0

    def read(self):
        if not FakeCapture.plugged or self.n >= 4:
            FakeCapture.plugged = False
            return False, None
        self.n += 1
        return True, self.demo.render(self.n)

    def release(self):
        pass


def test_camera_unplugged_mid_stream_reconnects_then_ends(tmp_path, capsys, detector, monkeypatch):
    from pkdn_edge import sources

    FakeCapture.opened, FakeCapture.plugged = 0, True
    monkeypatch.setattr(sources, "_device_missing", lambda i: False)
    monkeypatch.setattr(sources.cv2, "VideoCapture", FakeCapture)
    monkeypatch.setattr(sources.time, "sleep", lambda s: None)
    stats = tmp_path / "s.json"
    rc, err = _run(["--source", 0, "--headless", "--backend", "bicubic", "--output", tmp_path / "o.avi",
                    "--stats-json", stats], capsys)
    assert rc == 0, err
    s = json.loads(stats.read_text())
    assert s["frames"] == 4
    assert "disconnected" in s["end_reason"] and "reconnect" in err
    assert FakeCapture.opened == 1 + 5  # the first open + 5 reconnect attempts


def test_pipeline_alignment_agrees_with_face_align():
    """The pipeline's fast ROI warp and template must agree with pkdn_edge.face.align (when present)."""
    align = pytest.importorskip("pkdn_edge.face.align")
    demo = DemoSource(faces=1, iod=30.0, motion=0.3, noise=0)
    f, lm = demo.render(7), demo.landmarks_at(7)[0]
    for size in (16, 32, 128):
        assert np.allclose(np.asarray(align.template(size), np.float64).reshape(5, 2), template(size), atol=1e-3)
        M_ref = np.asarray(align.estimate_similarity(lm, size), np.float64)
        M = fit_similarity(lm, template(size))
        assert np.abs(M_ref - M).max() < 1e-2 * max(1.0, np.abs(M).max())
        ref = align.warp_face(f, M_ref, size)
        ours = warp_to_lr(f, M, size)
        assert ref.shape == ours.shape
        assert np.abs(ref.astype(int) - ours).mean() < 2.0
