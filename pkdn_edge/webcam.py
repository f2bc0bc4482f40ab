"""Real-time face super-resolution on a camera, a video, an image folder or the built-in demo.

    python -m pkdn_edge.webcam                       # camera 0; no camera -> the demo; no display -> headless
    python -m pkdn_edge.webcam --source demo:3 --frames 300 --stats-json out/stats.json
    python -m pkdn_edge.webcam --source clip.mp4 --downscale 4 --backend onnxruntime --scale 4
    python -m pkdn_edge.webcam --source 0 --backend openvino --precision int8 --view output

Each frame: capture -> detect (every N frames) / track -> smooth landmarks -> align to the model's
LR grid -> super-resolve all faces in one batch -> upscale the frame -> paste the faces back
(:class:`pkdn_edge.pipeline.FacePipeline`). ``--view side-by-side`` shows bicubic | pkdn-edge.

Model selection (``--backend auto`` and no ``--artifact``; see ``MODEL_SELECTION``): the first
exported artifact ``<target>_<precision>_x<scale>/`` (a ``pkdn-export`` folder with its
``manifest.json``) found in $PKDN_EXPORTS, ./exports or the source checkout's exports/, trying the
installed backends in the order TensorRT, OpenVINO, ONNX Runtime; else the model shipped in the
package, ``pkdn_edge/weights/onnx_fp32_x<scale>/`` (``model.onnx`` + ``manifest.json``, exported from
``pkdn_edge_x<scale>.pt``), run by OpenVINO when installed, else ONNX Runtime (a runtime
dependency: the default works on a runtime-only install, no torch); else, on a development install
with the export tools, one is exported now from the shipped checkpoint into ./exports.

Timing: ``capture`` (reading/decoding/rendering a frame; on a camera it includes waiting for the
device), the processing stages ``detect``, ``track``, ``align``, ``sr``, ``upscale``, ``paste`` and
their sum ``total``, and ``e2e`` = ``capture`` + ``total``: capture to the composited output frame.
``compose`` (side-by-side view and overlay), ``display`` and ``encode`` (video/PNG writing) are timed
apart and are in neither. ``fps`` in the summary is the end-to-end processing rate,
frames / sum(e2e); ``pipeline_fps`` = frames / sum(total) (without capture); ``loop_fps`` = frames /
wall time of the whole loop (display and encoding included).

Temporal stability: ``temporal_stability`` is the mean absolute frame-to-frame change (gray levels,
0-255) of the output inside the face regions (pixels pasted with weight > 0.5 in both frames, same
track); ``temporal_stability_bicubic`` the same on the bicubic canvas (what the input's own motion
gives); ``temporal_flicker`` the mean |change of output - change of bicubic|, i.e. change that is not
in the input (jitter of the pasted faces, SR instability). Landmark smoothing lowers them; compare with
``--no-smooth``. On the demo source, ``landmark_nme`` is the error of the landmarks used for alignment
against the true ones, in units of the eye distance.

Memory: every per-frame structure is bounded (latency rings, reused canvas/composition buffers,
tracks capped by ``--max-faces``); nothing grows with the number of frames.

Runs without torch (numpy, cv2, onnxruntime/openvino); ``--backend torch`` needs torch.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from pkdn_edge.errors import MissingDependencyError, PKDNError, run_cli
from pkdn_edge.manifest import MANIFEST_NAME, sha256_file
from pkdn_edge.pipeline import SR_IOD, STAGES, BicubicEngine, FacePipeline, FrameResult
from pkdn_edge.pretrained import WEIGHTS_DIR, pretrained_path
from pkdn_edge.sources import (CameraNotFoundError, DemoSource, Downscale, FrameSource, open_source)

BACKENDS = ("auto", "openvino", "onnxruntime", "tensorrt", "torch", "bicubic")
# artifact folder target name per backend (pkdn-export --target ...), in order of preference
_TARGETS = {"onnxruntime": ("onnx",), "openvino": ("openvino", "onnx"), "tensorrt": ("tensorrt",),
            "torch": ("torch",)}
_PRECISIONS = {"tensorrt": ("fp16", "int8", "fp32"), "openvino": ("fp32", "int8", "fp16"),
               "onnxruntime": ("fp32", "int8", "fp16"), "torch": ("fp32", "fp16")}
DEFAULT_OUTPUT = Path("out") / "webcam_demo.mp4"
NO_OUTPUT = "none"  # --output none: write nothing (latency runs)
LOOP_STAGES = ("capture",) + STAGES + ("e2e", "compose", "display", "encode", "stats")

MODEL_SELECTION = """\
model selection (--backend auto, no --artifact), per scale s (4, 8; both for --scale auto):
  1. an exported artifact <target>_<precision>_x<s>/ (pkdn-export output: model + manifest.json) in
     $PKDN_EXPORTS, ./exports or the source checkout's exports/, trying the installed backends in the
     order tensorrt, openvino, onnxruntime (--precision narrows the search);
  2. the model shipped in the package: pkdn_edge/weights/onnx_fp32_x<s>/ (model.onnx +
     manifest.json, the ONNX export of pkdn_edge/weights/pkdn_edge_x<s>.pt), run by openvino when
     installed, else onnxruntime (a runtime dependency: works without torch);
  3. development installs only (torch + the export extra): exported now from the shipped
     pkdn_edge_x<s>.pt into ./exports (pkdn-export --target onnx --precision fp32 --scale <s> --dynamic).
  Otherwise: an error naming the export command. --backend X restricts 1-3 to backend X
  (--backend torch runs pkdn_edge_x<s>.pt directly); --backend bicubic needs no model (baseline)."""


# --------------------------------------------------------------------------------------------------
# statistics


class LatencyRecorder:
    """Per-stage latencies in preallocated rings (no per-frame allocation, bounded memory).

    ``capacity`` samples per stage are kept (default 2**16: 36 min at 30 fps); percentiles are over
    the kept window, counts and sums over the whole run."""

    def __init__(self, stages: tuple[str, ...] = LOOP_STAGES, capacity: int = 1 << 16) -> None:
        self.stages = stages
        self.capacity = capacity
        self.buf = np.zeros((len(stages), capacity), np.float32)
        self.index = {s: i for i, s in enumerate(stages)}
        self.n = 0
        self.sums = np.zeros(len(stages), np.float64)

    def add(self, timings: dict[str, float]) -> None:
        j = self.n % self.capacity
        for s, v in timings.items():
            i = self.index.get(s)
            if i is not None:
                self.buf[i, j] = v
                self.sums[i] += v
        self.n += 1

    def summary(self) -> dict[str, dict[str, float]]:
        k = min(self.n, self.capacity)
        out = {}
        for s, i in self.index.items():
            if k == 0:
                out[s] = {"p50": 0.0, "p90": 0.0, "p99": 0.0, "mean": 0.0}
                continue
            v = self.buf[i, :k]
            p50, p90, p99 = np.percentile(v, [50, 90, 99])
            out[s] = {"p50": round(float(p50), 3), "p90": round(float(p90), 3), "p99": round(float(p99), 3),
                      "mean": round(float(self.sums[i] / self.n), 3)}
        return out

    def total_s(self, stage: str) -> float:
        return float(self.sums[self.index[stage]]) / 1e3


class StabilityMeter:
    """Mean absolute frame-to-frame change (gray levels) inside face regions, for the output and
    for the bicubic canvas at the same places (see the module docstring)."""

    def __init__(self) -> None:
        self.prev: dict[int, tuple] = {}
        self.sum_out = 0.0
        self.sum_base = 0.0
        self.sum_flicker = 0.0
        self.count = 0
        self.pairs = 0

    def update(self, res: FrameResult) -> None:
        cur: dict[int, tuple] = {}
        for fr in res.faces:
            p = fr.paste
            if p is None or p.base.size == 0:
                continue
            x1, y1, x2, y2 = p.box
            g_out = cv2.cvtColor(res.canvas[y1:y2, x1:x2], cv2.COLOR_BGR2GRAY)
            g_base = cv2.cvtColor(p.base, cv2.COLOR_BGR2GRAY)
            m = p.alpha > 0.5
            cur[fr.track_id] = (p.box, g_out, g_base, m)
            prev = self.prev.get(fr.track_id)
            if prev is None:
                continue
            (px1, py1, px2, py2), pg_out, pg_base, pm = prev
            ix1, iy1, ix2, iy2 = max(x1, px1), max(y1, py1), min(x2, px2), min(y2, py2)
            if ix2 <= ix1 or iy2 <= iy1:
                continue
            a = (slice(iy1 - y1, iy2 - y1), slice(ix1 - x1, ix2 - x1))
            b = (slice(iy1 - py1, iy2 - py1), slice(ix1 - px1, ix2 - px1))
            mm = m[a] & pm[b]
            n = int(mm.sum())
            if n == 0:
                continue
            d_out = g_out[a].astype(np.int16) - pg_out[b]
            d_base = g_base[a].astype(np.int16) - pg_base[b]
            self.sum_out += float(np.abs(d_out)[mm].sum(dtype=np.float64))
            self.sum_base += float(np.abs(d_base)[mm].sum(dtype=np.float64))
            self.sum_flicker += float(np.abs(d_out - d_base)[mm].sum(dtype=np.float64))
            self.count += n
            self.pairs += 1
        self.prev = cur

    def summary(self) -> dict[str, float]:
        c = max(1, self.count)
        return {"output": round(self.sum_out / c, 4), "bicubic": round(self.sum_base / c, 4),
                "flicker": round(self.sum_flicker / c, 4), "pairs": self.pairs}


def _truth_landmarks(source: FrameSource, index: int) -> list[np.ndarray] | None:
    """True landmarks of a demo frame (also through --downscale), else None."""
    src, k = source, 1.0
    if isinstance(src, Downscale):
        k, src = src.factor, src.source
    if not isinstance(src, DemoSource):
        return None
    lms = src.landmarks_at(index)
    if k != 1.0:
        lms = [(lm + 0.5) / k - 0.5 for lm in lms]
    return lms


class LandmarkError:
    """Normalised mean error (point error / true IOD) of the landmarks used for alignment, on the
    demo source, where the truth is known."""

    def __init__(self) -> None:
        self.sum = 0.0
        self.n = 0

    def update(self, res: FrameResult, truth: list[np.ndarray]) -> None:
        for fr in res.faces:
            c = fr.landmarks[:2].mean(0)
            best = min(truth, key=lambda t: float(np.hypot(*(t[:2].mean(0) - c))))
            iod = float(np.hypot(*(best[1] - best[0])))
            err = float(np.sqrt(((fr.landmarks - best) ** 2).sum(-1)).mean()) / max(iod, 1e-6)
            if err < 1.0:  # a matched face (not a false detection)
                self.sum += err
                self.n += 1

    def summary(self) -> float | None:
        return round(self.sum / self.n, 5) if self.n else None


# --------------------------------------------------------------------------------------------------
# engines, detector


def _export_roots() -> list[Path]:
    """Where user exports are looked for: $PKDN_EXPORTS, ./exports, the source checkout's exports/."""
    roots = []
    env = os.environ.get("PKDN_EXPORTS")
    if env:
        roots.append(Path(env))
    roots.append(Path.cwd() / "exports")
    proj = Path(__file__).resolve().parent.parent / "exports"  # editable install / source checkout
    if proj not in roots:
        roots.append(proj)
    return roots


def _shipped_roots() -> list[Path]:
    """Where the models shipped inside the package are: pkdn_edge/weights/."""
    return [WEIGHTS_DIR]


def _backend_available(backend: str) -> bool:
    mod = {"onnxruntime": "onnxruntime", "openvino": "openvino", "tensorrt": "tensorrt", "torch": "torch"}[backend]
    return importlib.util.find_spec(mod) is not None


def _auto_backends() -> list[str]:
    order = ["tensorrt", "openvino", "onnxruntime"]
    return [b for b in order if _backend_available(b)] or ["onnxruntime"]


def default_artifacts(backend: str, scale: int, precision: str | None, roots: list[Path] | None = None) -> list[Path]:
    """Candidate artifact folders (first existing wins): ``<root>/<target>_<precision>_x<scale>`` for
    the backend's targets and precisions, under ``roots`` (default: the export folders,
    :func:`_export_roots`)."""
    out = []
    precs = (precision,) if precision else _PRECISIONS[backend]
    for root in (_export_roots() if roots is None else roots):
        for target in _TARGETS[backend]:
            for p in precs:
                out.append(root / f"{target}_{p}_x{scale}")
    return out


def model_candidates(backends: list[str], scale: int, precision: str | None) -> list[tuple[Path, str]]:
    """``(artifact folder, backend)`` in order of preference: the user's exports for each backend
    in turn, then the shipped models (``pkdn_edge/weights/onnx_fp32_x<scale>/``) for each backend."""
    return [(cand, b) for roots in (_export_roots(), _shipped_roots()) for b in backends
            for cand in default_artifacts(b, scale, precision, roots)]


def stale_export_note(artifact: Path, scale: int) -> str | None:
    """A warning when ``artifact`` was exported from the shipped ``pkdn_edge_x<scale>.pt`` but that
    checkpoint has changed since (e.g. a newer pkdn-edge shipped better weights): the old export
    still runs, but it is not the model this install ships. ``None`` when current or unknown."""
    ckpt = WEIGHTS_DIR / f"pkdn_edge_x{scale}.pt"
    try:
        manifest = json.loads((artifact / MANIFEST_NAME).read_text())
        source = manifest.get("source") or {}
    except (OSError, ValueError, AttributeError):
        return None  # load_engine reports unreadable manifests itself
    if source.get("weights") != ckpt.name or not source.get("sha256") or not ckpt.is_file():
        return None
    if source["sha256"] == sha256_file(ckpt):
        return None
    target, precision = manifest.get("target", "onnx"), manifest.get("precision", "fp32")
    return (f"warning: {artifact} was exported from an older {ckpt.name} (sha256 {source['sha256'][:12]}, shipped "
            f"now {sha256_file(ckpt)[:12]}); it still runs, but re-export it for the shipped model: "
            f"`{' '.join(_export_command(target, precision, scale))} --out {artifact}`")


def _export_tools_available() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("torch", "onnx")) and \
        importlib.util.find_spec("pkdn_edge.export.cli") is not None


def _export_command(target: str, precision: str, scale: int) -> list[str]:
    """The pkdn-export call for a missing model: dynamic batch, so all faces of a frame run in one call."""
    return ["pkdn-export", "--target", target, "--precision", precision, "--scale", str(scale), "--dynamic"]


def _load_engine(path: Path, backend: str | None, threads: int, precision: str | None, tta: str = "none") -> Any:
    from pkdn_edge.engines import load_engine

    return load_engine(path, backend=backend, threads=threads, precision=precision, tta=tta)


def build_engine(backend: str, scale: int, precision: str | None = None, artifact: str | None = None,
                 threads: int = 2, build: bool = True, log=print, tta: str = "none") -> Any:
    """One SR engine for ``scale`` (see MODEL_SELECTION): bicubic; an explicit artifact; the first
    artifact found in the export folders, then among the shipped models; for ``torch`` the shipped
    checkpoint; else one exported now from the shipped checkpoint (only where the export tools are
    installed). ``tta`` is the engines' test-time augmentation (``load_engine``; bicubic has none)."""
    if backend == "bicubic":
        return BicubicEngine(scale)
    if artifact:
        p = Path(artifact)
        if not p.exists():
            raise PKDNError(f"--artifact {p} does not exist")
        return _load_engine(p, None if backend == "auto" else backend, threads, precision, tta)
    backends = _auto_backends() if backend == "auto" else [backend]
    if backend != "auto" and not _backend_available(backend):
        extra = {"onnxruntime": "onnxruntime", "openvino": "openvino", "torch": "train"}.get(backend)
        if backend == "tensorrt":
            raise PKDNError("TensorRT is not installed (it comes with JetPack / NVIDIA's installers)")
        raise MissingDependencyError(backend, extra, f"--backend {backend}")
    for cand, b in model_candidates(backends, scale, precision):
        if (cand / MANIFEST_NAME).is_file():
            log(f"engine x{scale}: {cand} ({b})")
            stale = stale_export_note(cand, scale)
            if stale:
                log(stale)
            return _load_engine(cand, b, threads, precision, tta)
    if backend == "torch":  # torch runs the shipped checkpoint itself: no export needed
        ckpt = pretrained_path(scale)
        log(f"engine x{scale}: {ckpt} (torch)")
        return _load_engine(ckpt, "torch", threads, precision, tta)
    b = "onnxruntime" if backend == "auto" else backends[0]  # auto builds the plain ONNX model
    target = _TARGETS[b][0]
    prec = precision or _PRECISIONS[b][0]
    cmd = _export_command(target, prec, scale)
    have_ckpt = (WEIGHTS_DIR / f"pkdn_edge_x{scale}.pt").is_file()
    if build and have_ckpt and b != "tensorrt" and _export_tools_available():
        log(f"engine x{scale}: no exported model for {b}; building one from the shipped checkpoint now: {' '.join(cmd)}")
        runner = "import sys; from pkdn_edge.export.cli import main; sys.argv[0] = 'pkdn-export'; sys.exit(main())"
        r = subprocess.run([sys.executable, "-c", runner] + cmd[1:], capture_output=True, text=True)
        if r.returncode != 0:
            tail = (r.stderr or r.stdout).strip().splitlines()[-3:]
            raise PKDNError(f"building the x{scale} {target} model failed ({' | '.join(tail)}); "
                            f"run `{' '.join(cmd)}` yourself or use --backend bicubic")
        for cand in default_artifacts(b, scale, prec):
            if (cand / MANIFEST_NAME).is_file():
                return _load_engine(cand, b, threads, prec, tta)
        raise PKDNError(f"`{' '.join(cmd)}` ran but no artifact appeared in {_export_roots()[0]}")
    exports = ", ".join(dict.fromkeys(str(r) for r in _export_roots()))
    shipped = " or ".join(str(r / f"onnx_fp32_x{scale}") for r in _shipped_roots())
    names = "/".join(dict.fromkeys(t for x in backends for t in _TARGETS[x]))
    raise PKDNError(
        f"no x{scale} model for {'backend ' + b if backend != 'auto' else 'the installed backends'}: no exported "
        f"{names}_<precision>_x{scale}/ in {exports}, no shipped {shipped}/. Export one with `{' '.join(cmd)}` "
        f"(needs pip install 'pkdn-edge[export]' and pkdn_edge/weights/pkdn_edge_x{scale}.pt), pass --artifact DIR, "
        f"or run the comparison baseline with --backend bicubic")


def build_detector(threads: int = 2) -> Any:
    """The project's face detector (:func:`pkdn_edge.face.detector.load_detector`, RetinaFace)."""
    from pkdn_edge.face.detector import load_detector

    return load_detector(threads=threads)


# --------------------------------------------------------------------------------------------------
# display / overlay / output


def display_available() -> bool:
    if sys.platform.startswith("linux") or "bsd" in sys.platform:
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


def _put(img: np.ndarray, text: str, org: tuple[int, int], scale: float, color=(255, 255, 255)) -> None:
    th = max(1, int(round(scale * 2)))
    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), th + 2, cv2.LINE_AA)
    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, color, th, cv2.LINE_AA)


class Composer:
    """Builds the frame to show/write (output, or bicubic | pkdn-edge) with the FPS/latency overlay,
    in reused buffers."""

    def __init__(self, view: str, label: str, overlay: bool = True) -> None:
        self.view, self.label, self.overlay = view, label, overlay
        self.buf: np.ndarray | None = None
        self.ema: dict[str, float] = {}

    def compose(self, res: FrameResult, timings: dict[str, float]) -> np.ndarray:
        """The frame to show/write for ``res``; ``timings``: this frame's stage latencies (ms)."""
        canvas = res.canvas
        H, W = canvas.shape[:2]
        if self.view == "side-by-side":
            shape = (H, 2 * W, 3)
            if self.buf is None or self.buf.shape != shape:
                self.buf = np.empty(shape, np.uint8)
            out = self.buf
            out[:, W:] = canvas
            out[:, :W] = canvas
            for fr in reversed(res.faces):  # the bicubic baseline where faces were pasted (undo in reverse)
                if fr.paste is not None and fr.paste.base.size:
                    x1, y1, x2, y2 = fr.paste.box
                    out[y1:y2, x1:x2] = fr.paste.base
        else:
            out = canvas
        if self.overlay:
            for k, v in timings.items():
                self.ema[k] = v if k not in self.ema else 0.9 * self.ema[k] + 0.1 * v
            s = max(0.4, min(1.5, H / 900))
            lh = int(32 * s)
            e2e = self.ema.get("e2e", 0.0)
            fps = 1000.0 / e2e if e2e > 0 else 0.0
            _put(out, f"{self.label} | {fps:.1f} FPS (end-to-end) | faces {len(res.faces)}", (10, lh), s)
            stages = " ".join(f"{k} {self.ema.get(k, 0):.1f}" for k in ("capture", "detect", "track", "align",
                                                                         "sr", "upscale", "paste"))
            _put(out, f"{stages} | e2e {e2e:.1f} ms", (10, 2 * lh), s * 0.8)
            if self.view == "side-by-side":
                _put(out, "input bicubic", (10, H - lh // 2), s, (200, 200, 255))
                _put(out, "pkdn-edge", (W + 10, H - lh // 2), s, (200, 255, 200))
        return out


VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".mov", ".m4v")


class FrameWriter:
    """A video file (.mp4: MPEG-4 part 2 'mp4v', .avi: MJPG, ...) or, for a path without a video
    extension, a folder of lossless PNG frames (000000.png, ...)."""

    def __init__(self, path: Path, fps: float) -> None:
        self.path, self.fps = Path(path), float(fps)
        self.video = self.path.suffix.lower() in VIDEO_EXTENSIONS
        self.vw: cv2.VideoWriter | None = None
        self.n = 0
        if self.video:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        else:
            self.path.mkdir(parents=True, exist_ok=True)

    def write(self, img: np.ndarray) -> None:
        if not self.video:
            cv2.imwrite(str(self.path / f"{self.n:06d}.png"), img, [cv2.IMWRITE_PNG_COMPRESSION, 1])
        else:
            if self.vw is None:
                ext = self.path.suffix.lower()
                fourcc = cv2.VideoWriter_fourcc(*("MJPG" if ext == ".avi" else "mp4v"))
                self.vw = cv2.VideoWriter(str(self.path), fourcc, self.fps, (img.shape[1], img.shape[0]))
                if not self.vw.isOpened():
                    raise PKDNError(f"cannot write video {self.path} (OpenCV/FFmpeg refused it; try .avi or a folder)")
            self.vw.write(img)
        self.n += 1

    def release(self) -> None:
        if self.vw is not None:
            self.vw.release()
            self.vw = None


# --------------------------------------------------------------------------------------------------
# CLI


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults in the option help (unless unset), the epilog (model selection) kept as written."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default in (None, False):
            return action.help or ""
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m pkdn_edge.webcam",
        description="Real-time face super-resolution (PKDN) on a camera, video, image folder or the built-in demo.",
        epilog=MODEL_SELECTION, formatter_class=_HelpFormatter)
    p.add_argument("--source", default=None,
                   help="camera index, video file, image folder, or demo[:FACES] / demo:faces=3,frames=300,jitter=0.5 "
                        "(default: camera 0, or the demo when there is no camera)")
    p.add_argument("--backend", choices=BACKENDS, default="auto",
                   help="SR runtime; auto = the best installed one for the model found (see 'model selection' "
                        "below); bicubic = plain bicubic baseline (no model)")
    p.add_argument("--precision", choices=("fp32", "fp16", "int8"), default=None,
                   help="model precision (default: the first model found; the shipped one is fp32)")
    p.add_argument("--scale", default="4", choices=("4", "8", "auto"),
                   help="x4 (32x32 faces) or x8 (16x16); auto = both engines, x4 canvas, per-face choice by size")
    p.add_argument("--artifact", default=None,
                   help="an exported model folder (pkdn-export output) instead of the model selection below; "
                        "with --scale auto give two comma-separated folders X4,X8")
    p.add_argument("--downscale", type=float, default=None, help="shrink input frames by F (simulate a low-res camera)")
    p.add_argument("--detect-every", type=int, default=5, help="run the face detector every N frames")
    p.add_argument("--threads", type=int, default=2, help="CPU threads for the engine, detector and OpenCV")
    p.add_argument("--view", choices=("side-by-side", "output"), default="side-by-side",
                   help="side-by-side = input bicubic | pkdn-edge")
    p.add_argument("--headless", action="store_true", help="no window (automatic when there is no display)")
    p.add_argument("--output", default=None,
                   help="write the shown frames to a video (.mp4/.avi) or, for a path without a video extension, a "
                        f"folder of PNG frames; '{NO_OUTPUT}' writes nothing. Headless default: {DEFAULT_OUTPUT} "
                        f"(+ its stats {DEFAULT_OUTPUT.with_suffix('.json')})")
    p.add_argument("--frames", type=int, default=None, help="stop after N frames")
    p.add_argument("--stats-json", default=None,
                   help="write the run summary here (JSON: p50/p90/p99 per stage, fps = end-to-end processing FPS, "
                        "temporal stability, faces)")
    p.add_argument("--no-smooth", action="store_true", help="disable landmark smoothing (to compare flicker)")
    p.add_argument("--max-faces", type=int, default=8, help="super-resolve at most N faces per frame (largest first)")
    p.add_argument("--max-face-iod", type=float, default=None, metavar="PX",
                   help="faces whose eyes are more than PX input pixels apart keep the bicubic frame: they already have "
                        "the detail of the model's 128x128 output (default 43 = its eye distance; 0 = super-resolve all)")
    p.add_argument("--feather", type=float, default=None,
                   help="soft edge of the paste mask in SR-face px (weight 1 about 2F+1 px in; default 5%% of the face)")
    p.add_argument("--tta", choices=("none", "flip"), default="none",
                   help="flip: average each face's output with its mirror image's (about +0.1 dB at x8, twice the "
                        "model time; README: test-time augmentation)")
    p.add_argument("--no-overlay", action="store_true", help="no FPS/latency text on the frames")
    p.add_argument("--loop", action="store_true", help="restart video files / folders at the end")
    return p


def _open_input(args) -> FrameSource:
    spec = args.source if args.source is not None else "0"
    try:
        return open_source(spec, downscale=args.downscale, loop=args.loop)
    except CameraNotFoundError as exc:
        print(f"{exc}: running the built-in demo instead (choose with --source VIDEO|FOLDER|demo)", file=sys.stderr)
        return open_source("demo", downscale=args.downscale)


def _engines(args, log) -> tuple[Any, str]:
    scales = (4, 8) if args.scale == "auto" else (int(args.scale),)
    arts = (args.artifact.split(",") if args.artifact else [None] * len(scales))
    if len(arts) != len(scales):
        raise PKDNError("--scale auto with --artifact needs two folders: X4_DIR,X8_DIR")
    engines = {}
    for s, a in zip(scales, arts):
        e = build_engine(args.backend, s, args.precision, a, args.threads, log=log, tta=args.tta)
        engines[int(e.scale)] = e
        if getattr(e, "batch", None) == 1 and args.max_faces > 1:
            log(f"note: {e.name} has a fixed batch of 1, so the faces of a frame run one call each; "
                "export it with pkdn-export --dynamic to run them in one batch")
    if args.scale == "auto" and sorted(engines) != [4, 8]:
        raise PKDNError(f"--scale auto needs a x4 and a x8 model, got {sorted(engines)}")
    first = next(iter(engines.values()))
    label = (f"pkdn-edge {'auto' if args.scale == 'auto' else f'x{first.scale}'} "
             f"{getattr(first, 'backend', args.backend)} {getattr(first, 'precision', args.precision) or ''}").strip()
    return (engines if len(engines) > 1 else first), label


def run(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.detect_every < 1:
        raise PKDNError("--detect-every must be >= 1")
    if args.frames is not None and args.frames < 1:
        raise PKDNError("--frames must be >= 1")
    log = lambda msg: print(msg, file=sys.stderr)  # noqa: E731
    cv2.setNumThreads(max(1, args.threads))

    headless = args.headless
    if not headless and not display_available():
        headless = True
        log("no display ($DISPLAY/$WAYLAND_DISPLAY unset): running headless")
    if args.output == NO_OUTPUT:
        out_path = None
    else:
        out_path = Path(args.output) if args.output else (DEFAULT_OUTPUT if headless else None)
    stats_path = Path(args.stats_json) if args.stats_json else \
        (out_path.with_suffix(".json") if out_path and not args.output else None)

    engine, label = _engines(args, log)
    detector = build_detector(args.threads)
    source = _open_input(args)
    pipe = FacePipeline(engine, detector, detect_every=args.detect_every, scale=None, smoothing=not args.no_smooth,
                        feather=args.feather, max_faces=args.max_faces, max_face_iod=args.max_face_iod)
    t = time.perf_counter()
    pipe.warmup()
    warmup_ms = (time.perf_counter() - t) * 1e3
    log(f"source: {source.name}; {label}; canvas x{pipe.canvas_scale}; detector every {args.detect_every} frames; "
        f"smoothing {'off' if args.no_smooth else 'on'}" + (f"; writing {out_path}" if out_path else ""))

    rec = LatencyRecorder()
    stab = StabilityMeter()
    lmerr = LandmarkError()
    composer = Composer(args.view, label, overlay=not args.no_overlay)
    faces_hist: dict[int, int] = {}
    by_engine: dict[int, int] = {}  # face-frames per engine scale (0 = left bicubic)
    writer = None
    window = "pkdn-edge (q to quit)"
    stop = {"flag": False, "why": ""}

    def on_term(signum, frame):  # SIGTERM: finish like Ctrl-C
        stop["flag"], stop["why"] = True, "terminated"

    old_term = signal.signal(signal.SIGTERM, on_term) if hasattr(signal, "SIGTERM") else None
    frames = 0
    wall0 = time.perf_counter()
    end_reason = ""
    warned_large = False
    skipped_large = 0
    try:
        it = iter(source)
        while not stop["flag"]:
            if args.frames is not None and frames >= args.frames:
                end_reason = f"--frames {args.frames} reached"
                break
            tc = time.perf_counter()
            fr = next(it, None)
            capture_ms = (time.perf_counter() - tc) * 1e3
            if fr is None:
                end_reason = source.end_reason or "end of source"
                break
            res = pipe.process(fr.image, fr.t)
            tm = dict(res.timings)
            tm["capture"] = capture_ms
            tm["e2e"] = capture_ms + res.timings["total"]  # capture -> composited output frame
            n_faces = len(res.faces)
            faces_hist[n_faces] = faces_hist.get(n_faces, 0) + 1
            for f in res.faces:
                by_engine[f.engine_scale] = by_engine.get(f.engine_scale, 0) + 1

            ts = time.perf_counter()
            stab.update(res)
            truth = _truth_landmarks(source, fr.index)
            if truth:
                lmerr.update(res, truth)
            tm["stats"] = (time.perf_counter() - ts) * 1e3

            ts = time.perf_counter()
            shown = composer.compose(res, tm)
            tm["compose"] = (time.perf_counter() - ts) * 1e3

            ts = time.perf_counter()
            if out_path is not None:
                if writer is None:
                    writer = FrameWriter(out_path, source.fps)
                writer.write(shown)
            tm["encode"] = (time.perf_counter() - ts) * 1e3

            ts = time.perf_counter()
            if not headless:
                disp = shown
                if disp.shape[1] > 1600:
                    k = 1600 / disp.shape[1]
                    disp = cv2.resize(disp, (1600, int(disp.shape[0] * k)), interpolation=cv2.INTER_AREA)
                try:
                    cv2.imshow(window, disp)
                    key = cv2.waitKey(1) & 0xFF
                except cv2.error as exc:  # OpenCV without GUI support (e.g. a -headless wheel)
                    log(f"cannot open a window ({str(exc).strip().splitlines()[-1][:120]}): continuing headless")
                    headless = True
                    key = -1
                    if out_path is None:
                        out_path = DEFAULT_OUTPUT
                        log(f"writing {out_path} instead")
                if key in (ord("q"), 27):
                    end_reason = "quit key"
                    break
                if not headless and frames > 0 and cv2.getWindowProperty(window, cv2.WND_PROP_VISIBLE) < 1:
                    end_reason = "window closed"
                    break
            tm["display"] = (time.perf_counter() - ts) * 1e3
            rec.add(tm)
            frames += 1
            skipped_large += res.skipped_large
            if not warned_large and res.skipped_large:
                warned_large = True
                k = max(2, math.ceil(pipe.max_iod_seen / pipe.max_face_iod))
                log(f"note: faces with eyes {pipe.max_iod_seen:.0f} px apart are larger than the model's output "
                    f"({pipe.max_face_iod:.0f} px): they keep the bicubic frame. Simulate a low-res camera with "
                    f"--downscale {k}, or force SR with --max-face-iod 0")
            elif not warned_large and frames >= 10 and pipe.max_face_iod == 0 and pipe.max_iod_seen > 2 * SR_IOD:
                warned_large = True
                log(f"note: faces with eyes {pipe.max_iod_seen:.0f} px apart get less detail from the model's "
                    f"{SR_IOD:.0f} px output than the input had; try --downscale "
                    f"{max(2, math.ceil(pipe.max_iod_seen / SR_IOD))}")
    except KeyboardInterrupt:
        end_reason = "interrupted (Ctrl-C)"
    finally:
        if stop["flag"]:
            end_reason = stop["why"]
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)
        wall = time.perf_counter() - wall0
        if writer is not None:
            writer.release()
        if not headless:
            try:
                cv2.destroyAllWindows()
            except cv2.error:
                pass
        source.close()

    skipped = getattr(source, "skipped_total", source.skipped)
    lat = rec.summary()
    e2e_s, total_s = rec.total_s("e2e"), rec.total_s("total")
    summary = {
        "source": source.name,
        "backend": getattr(next(iter(pipe.engines.values())), "backend", args.backend),
        "precision": getattr(next(iter(pipe.engines.values())), "precision", args.precision),
        "scale": args.scale if args.scale == "auto" else pipe.canvas_scale,
        "canvas_scale": pipe.canvas_scale,
        "engines": {f"x{s}": getattr(e, "name", type(e).__name__) for s, e in pipe.engines.items()},
        "frames": frames,
        "frames_skipped_corrupt": skipped,
        "faces_left_bicubic_large": skipped_large,
        "end_reason": end_reason,
        "fps": round(frames / e2e_s, 2) if e2e_s > 0 else 0.0,
        "pipeline_fps": round(frames / total_s, 2) if total_s > 0 else 0.0,
        "loop_fps": round(frames / wall, 2) if wall > 0 else 0.0,
        "wall_s": round(wall, 3),
        "warmup_ms": round(warmup_ms, 2),
        "latency_ms": lat,
        "faces_per_frame": {
            "mean": round(sum(k * v for k, v in faces_hist.items()) / frames, 3) if frames else 0.0,
            "max": max(faces_hist, default=0),
            "frames_with_faces": sum(v for k, v in faces_hist.items() if k > 0),
            "histogram": {str(k): v for k, v in sorted(faces_hist.items())},
            "by_engine": {(f"x{k}" if k else "bicubic"): v for k, v in sorted(by_engine.items())},
        },
        "temporal_stability": stab.summary()["output"],
        "temporal_stability_bicubic": stab.summary()["bicubic"],
        "temporal_flicker": stab.summary()["flicker"],
        "temporal_stability_pairs": stab.pairs,
        "landmark_nme": lmerr.summary(),
        "smoothing": not args.no_smooth,
        "detect_every": args.detect_every,
        "tracker": dict(pipe.tracker.stats),
        "input_size": list(source.size) if source.size else None,
        "output": str(out_path) if out_path else None,
        "view": args.view,
        "threads": args.threads,
    }
    _print_summary(summary, log)
    if stats_path is not None:
        stats_path.parent.mkdir(parents=True, exist_ok=True)
        stats_path.write_text(json.dumps(summary, indent=2) + "\n")
        log(f"stats: {stats_path.resolve()}")
    if out_path is not None and frames:
        log(f"video: {out_path.resolve()} ({frames} frames, {'bicubic | pkdn-edge' if args.view == 'side-by-side' else 'output'})")
    return 0


def _print_summary(s: dict, log) -> None:
    log(f"{s['frames']} frames ({s['end_reason']}); end-to-end processing {s['fps']} FPS (pipeline without "
        f"capture {s['pipeline_fps']}, whole loop with display/encoding {s['loop_fps']}); "
        f"faces/frame {s['faces_per_frame']['mean']}; corrupt frames skipped {s['frames_skipped_corrupt']}")
    log(f"{'stage':>8} {'p50':>8} {'p90':>8} {'p99':>8}  ms")
    for k, v in s["latency_ms"].items():
        log(f"{k:>8} {v['p50']:8.2f} {v['p90']:8.2f} {v['p99']:8.2f}")
    log(f"temporal stability (mean |frame-to-frame change| in faces, gray levels): output "
        f"{s['temporal_stability']}, bicubic {s['temporal_stability_bicubic']}; "
        f"flicker (change not in the bicubic input) {s['temporal_flicker']}")
    if s.get("landmark_nme") is not None:
        log(f"landmark error vs the demo's truth: {100 * s['landmark_nme']:.2f} % of the eye distance")


def main(argv: list[str] | None = None) -> int:
    return run_cli(lambda: run(argv))


if __name__ == "__main__":
    sys.exit(main())
