"""``pkdn-webcam``: real-time face super-resolution on a camera, a video, an image folder or the demo.

    python -m pkdn_edge.webcam                       # camera 0; no camera -> the demo; no display -> headless
    python -m pkdn_edge.webcam --source demo:3 --frames 300 --stats-json out/stats.json
    python -m pkdn_edge.webcam --source clip.mp4 --downscale 4 --backend onnxruntime --scale 4
    python -m pkdn_edge.webcam --source 0 --backend openvino --precision int8 --view output

This module is the CLI and the loop: capture a frame, run :class:`pkdn_edge.pipeline.FacePipeline` on
it (its stages and their timings are described there), count it (:mod:`pkdn_edge.loopstats`), compose
and show it (:mod:`pkdn_edge.display`), write it (:mod:`pkdn_edge.writers`). Which model runs:
:data:`pkdn_edge.engines.select.MODEL_SELECTION` (the epilog of ``--help``).

The loop adds its own timings to the pipeline's: ``capture`` (reading a frame; on a camera, waiting
for it), ``e2e`` = ``capture`` + ``total``, ``stats``, ``compose``, ``encode`` (the hand-over to the
writer thread), ``display`` and ``loop`` (the whole iteration); the headline ``fps`` is
:data:`FPS_DEFINITION`. The stats file's fields: docs/webcam.md ("FPS: what the numbers mean").
Every per-frame structure is bounded: nothing grows with the number of frames.

Runs without torch (numpy, cv2, onnxruntime/openvino); ``--backend torch`` needs torch.
"""

from __future__ import annotations

import argparse
import json
import math
import signal
import sys
import time
from pathlib import Path
from typing import Any

import cv2

from pkdn_edge.display import VIEWS, Composer, Window, display_available
from pkdn_edge.engines.select import BACKENDS, MODEL_SELECTION, build_engine
from pkdn_edge.errors import CLIParser, PKDNError, run_cli
from pkdn_edge.loopstats import LoopStats, print_summary, truth_landmarks
from pkdn_edge.outputs import (
    Outputs,
    check_artifact_scale,
    check_model,
    check_not_inputs,
    check_png_folder,
    default_output,
    inputs_of,
    is_video,
    writer_error,
)
from pkdn_edge.pipeline import SR_IOD, FacePipeline, FrameResult
from pkdn_edge.sources import CameraNotFoundError, FrameSource, open_source
from pkdn_edge.stagetimer import StageTimer
from pkdn_edge.writers import ENCODERS, VIDEO_EXTENSIONS, FrameWriter, check_writable, resolve_encoder

DEFAULT_OUTPUT = Path("out") / "webcam_YYYYmmdd-HHMMSS.mp4"  # the pattern; default_output() gives the name
DEFAULT_CANVAS = "1920x1080"
NO_OUTPUT = "none"  # --output none: write nothing (latency runs)


def build_detector(threads: int = 2) -> Any:
    """The project's face detector (:func:`pkdn_edge.face.detector.load_detector`, RetinaFace)."""
    from pkdn_edge.face.detector import load_detector

    return load_detector(threads=threads)


def _small_faces(detector: Any, min_iod: float) -> Any:
    """RetinaFace made to find faces down to ``min_iod`` px between the eyes in large frames
    (:class:`pkdn_edge.face.scan.ScanDetector`); other detectors (and ``min_iod`` 0) as they are."""
    from pkdn_edge.face.detector import RetinaFaceDetector
    from pkdn_edge.face.scan import ScanDetector

    if min_iod > 0 and isinstance(detector, RetinaFaceDetector):
        return ScanDetector(detector, min_iod=min_iod)
    return detector


# --------------------------------------------------------------------------------------------------
# CLI


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults in the option help (unless unset), the epilog (model selection) kept as written."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default in (None, False):
            return action.help or ""
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    p = CLIParser(
        prog="python -m pkdn_edge.webcam",
        description="Real-time face super-resolution (PKDN) on a camera, video, image folder or the built-in demo.",
        epilog=MODEL_SELECTION, formatter_class=_HelpFormatter)
    p.add_argument("--source", default=None,
                   help="camera index, video file, image folder, or demo[:FACES] / demo:faces=3,frames=300,jitter=0.5 "
                        "(default: camera 0, or the demo when there is no camera; an explicit --source that cannot be "
                        "opened is an error)")
    p.add_argument("--backend", choices=BACKENDS, default="auto",
                   help="SR runtime; auto = the best installed one for the model found (see 'model selection' "
                        "below); bicubic = the whole frame upscaled bicubically, no face path (what you see without "
                        "pkdn-edge: the baseline); bicubic-face = the face path with bicubic in place of the model "
                        "(a diagnostic)")
    p.add_argument("--precision", choices=("fp32", "fp16", "int8"), default=None,
                   help="model precision (default: the first model found; the shipped one is fp32)")
    p.add_argument("--scale", default="auto", choices=("4", "8", "auto"),
                   help="auto = the x4 and x8 models, x4 canvas, each face to the model whose input template fits "
                        "its size (eyes < 5.4 px: x8), faces larger than 1.7x the x4 template (eyes > 18.3 px) keep "
                        "the plain upscale (docs/webcam.md); 4 or 8 = that model only")
    p.add_argument("--artifact", default=None,
                   help="an exported model folder (pkdn-export output) instead of the model selection below; "
                        "with --scale auto give two comma-separated folders X4,X8, or one folder to run that model "
                        "alone")
    p.add_argument("--downscale", type=float, default=None, help="shrink input frames by F (simulate a low-res camera)")
    p.add_argument("--detect-every", type=int, default=5, help="run the face detector every N frames")
    p.add_argument("--threads", type=int, default=2, help="CPU threads for the engine, detector and OpenCV")
    p.add_argument("--view", choices=VIEWS, default="auto",
                   help="output = the super-resolved frame; side-by-side = input bicubic | pkdn-edge; zoom = the "
                        "output with, on its right, each SR face at its native 128x128 next to the same region "
                        "upscaled by plain bicubic; auto = side-by-side in a window; headless: zoom when the canvas "
                        "is smaller than the frame x the scale (the pasted faces are shrunk), else output")
    p.add_argument("--canvas", default=DEFAULT_CANVAS, metavar="WxH|full",
                   help="largest output canvas (turned for portrait frames): the frame x scale, shrunk to fit, never "
                        "below the input size; SR faces are pasted at this resolution; full = always the frame x scale")
    p.add_argument("--min-face-iod", type=float, default=8.0, metavar="PX",
                   help="smallest face to find, as its eye distance in input px: the detector scans large frames "
                        "in tiles at the scale this needs (bounded cost per run) and refines tracked faces in small "
                        "regions; 0 = the plain detector on the frame shrunk to 640 px")
    p.add_argument("--encoder", choices=ENCODERS, default="auto",
                   help="video encoder for --output: auto = H.264 through PyAV when installed, else mp4v (.avi: MJPG); "
                        "nvv4l2h264enc = a Jetson's hardware H.264 encoder through GStreamer")
    p.add_argument("--headless", action="store_true", help="no window (automatic when there is no display)")
    p.add_argument("--output", default=None,
                   help="write the shown frames to a video (.mp4/.avi) or, for a path without a video extension, a "
                        f"folder of PNG frames; '{NO_OUTPUT}' writes nothing. Headless default: {DEFAULT_OUTPUT} "
                        f"(+ its stats {DEFAULT_OUTPUT.with_suffix('.json')})")
    p.add_argument("--overwrite", action="store_true",
                   help="--output is a PNG folder that already holds files: replace its frames (000000.png, ...); "
                        "without it such a folder is refused (files this run did not write are never mixed in)")
    p.add_argument("--frames", type=int, default=None, help="stop after N frames")
    p.add_argument("--stats-json", default=None,
                   help="write the run summary here (JSON: p50/p90/p99 per stage, fps = whole-loop FPS, "
                        "temporal stability, faces)")
    p.add_argument("--no-smooth", action="store_true", help="disable landmark smoothing (to compare flicker)")
    p.add_argument("--max-faces", type=int, default=8, help="super-resolve at most N faces per frame (largest first)")
    p.add_argument("--max-face-iod", type=float, default=None, metavar="PX",
                   help="faces whose eyes are more than PX input pixels apart keep the plain upscale (default: 1.7x "
                        "the largest model template's eye distance, 18.3 px with x4, where the model's gain ends; "
                        "0 = super-resolve all)")
    p.add_argument("--align", choices=("native", "template"), default="native",
                   help="native = cut each face out of the frame at its own resolution (integer pixels, no "
                        "resampling); template = warp it onto the model's template (the old path, a diagnostic)")
    p.add_argument("--feather", type=float, default=None,
                   help="soft edge of the paste mask in SR-face px (weight 1 about 2F+1 px in; default 5%% of the "
                        "face)")
    p.add_argument("--tta", choices=("none", "flip"), default="none",
                   help="flip: average each face's output with its mirror image's (about +0.1 dB at x8, twice the "
                        "model time; docs/models.md: flip test-time augmentation)")
    p.add_argument("--no-overlay", action="store_true", help="no FPS/latency text on the frames")
    p.add_argument("--loop", action="store_true", help="restart video files / folders at the end")
    return p


def _open_input(args) -> FrameSource:
    """The frame source. An explicit ``--source`` that cannot be opened is an error (exit 2: a
    service pointed at the wrong camera must fail, not run something else); only without
    ``--source`` does a missing camera 0 fall back to the built-in demo."""
    if args.source is not None:
        return open_source(args.source, downscale=args.downscale, loop=args.loop)
    try:
        return open_source("0", downscale=args.downscale, loop=args.loop)
    except CameraNotFoundError as exc:
        print(f"{exc}: running the built-in demo instead (choose with --source VIDEO|FOLDER|demo)", file=sys.stderr)
        return open_source("demo", downscale=args.downscale)


def _engines(args, log) -> tuple[Any, str]:
    scales = (4, 8) if args.scale == "auto" else (int(args.scale),)
    if args.scale == "auto" and args.artifact and "," not in args.artifact:
        scales = (4,)  # one artifact: that model alone, whatever its scale (build_engine reads it from the folder)
    arts = (args.artifact.split(",") if args.artifact else [None] * len(scales))
    if len(arts) != len(scales):
        raise PKDNError("--scale auto with --artifact needs two folders: X4_DIR,X8_DIR")
    engines = {}
    for s, a in zip(scales, arts):
        if args.scale == "auto" and s == 8 and not a:
            try:  # auto without an x8 model: the x4 model alone (faces it does not fit keep the plain upscale)
                e = build_engine(args.backend, s, args.precision, a, args.threads, log=log, tta=args.tta)
            except PKDNError as exc:
                log(f"note: --scale auto runs the x4 model alone: {str(exc).split(': ', 1)[-1][:160]}")
                scales = scales[:1]
                continue
        else:
            e = build_engine(args.backend, s, args.precision, a, args.threads, log=log, tta=args.tta)
        engines[int(e.scale)] = e
        if getattr(e, "batch", None) == 1 and args.max_faces > 1:
            log(f"note: {e.name} has a fixed batch of 1, so the faces of a frame run one call each; "
                "export it with pkdn-export --dynamic to run them in one batch")
    if args.scale == "auto" and len(scales) == 2 and sorted(engines) != [4, 8]:
        raise PKDNError(f"--scale auto needs a x4 and a x8 model, got {sorted(engines)}")
    first = next(iter(engines.values()))
    label = (f"pkdn-edge {'auto' if args.scale == 'auto' else f'x{first.scale}'} "
             f"{getattr(first, 'backend', args.backend)} {getattr(first, 'precision', args.precision) or ''}").strip()
    return (engines if len(engines) > 1 else first), label


# --------------------------------------------------------------------------------------------------
# the loop


def _plan_outputs(args, log) -> Outputs:
    headless = args.headless
    if not headless and not display_available():
        headless = True
        log("no display ($DISPLAY/$WAYLAND_DISPLAY unset): running headless")
    if args.output == NO_OUTPUT:
        out_path = None
    else:
        out_path = Path(args.output) if args.output else (default_output() if headless else None)
    stats_path = Path(args.stats_json) if args.stats_json else \
        (out_path.with_suffix(".json") if out_path and not args.output else None)
    stale: tuple = ()
    check_not_inputs(Outputs(headless, out_path, stats_path), inputs_of(args))
    if out_path is not None and not is_video(out_path):
        stale = check_png_folder(out_path, getattr(args, "overwrite", False))
    if stats_path is not None:
        check_writable(stats_path, "--stats-json")
    if out_path is not None:
        resolve_encoder(out_path, args.encoder)  # a missing encoder fails now, not after the first frame
        check_writable(out_path if out_path.suffix.lower() in VIDEO_EXTENSIONS else out_path / "000000.png", "--output")
    if args.view == "auto" and not headless:
        args.view = "side-by-side"  # headless: the Composer decides on the first frame (display.auto_view)
    return Outputs(headless, out_path, stats_path, stale)


class WebcamLoop:
    """One run: the pipeline on every frame of the source, composed, shown and/or written, counted."""

    def __init__(self, args, outputs: Outputs, log) -> None:
        self.args, self.out, self.log = args, outputs, log
        engine, self.label = _engines(args, log)
        plain = args.backend == "bicubic"  # the baseline: the frame upscaled, no detector, no face path
        detector = None if plain else _small_faces(build_detector(args.threads), args.min_face_iod)
        self.source: FrameSource = _open_input(args)
        self.pipe = FacePipeline(engine, detector, detect_every=args.detect_every, scale=None,
                                 smoothing=not args.no_smooth, feather=args.feather, max_faces=args.max_faces,
                                 max_face_iod=args.max_face_iod, canvas=args.canvas_limit, align=args.align,
                                 plain=plain)
        t = time.perf_counter()
        self.pipe.warmup()
        self.warmup_ms = (time.perf_counter() - t) * 1e3
        self.stats = LoopStats()
        zoom_scale = 0 if self.pipe.detector is None else self.pipe.canvas_scale  # no face path: nothing to zoom
        self.composer = Composer(args.view, self.label, overlay=not args.no_overlay,
                                 engine_scale=zoom_scale, max_tiles=args.max_faces)
        self.window = None if outputs.headless else Window(log)
        self.writer: FrameWriter | None = None
        self.writer_stats: dict | None = None
        self.writer_error: PKDNError | None = None
        self.warned_large = False
        self.end_reason = ""
        self.source_lost = False  # a live camera stopped delivering frames (not a stop asked for)
        self.wall = 0.0

    def announce(self) -> None:
        a, out = self.args, self.out.out_path
        lim = a.canvas_limit
        canvas = f"x{self.pipe.canvas_scale}" + (f" up to {lim[0]}x{lim[1]}" if lim else "")
        self.log(f"source: {self.source.name}; {self.label}; canvas {canvas}; detector every "
                 f"{a.detect_every} frames; smoothing {'off' if a.no_smooth else 'on'}"
                 + (f"; writing {out}" if out else ""))

    # -- per frame ------------------------------------------------------------------------------
    def step(self, image, t: float, index: int, t_capture: float, capture_ms: float) -> str:
        """Process, count, compose, write and show one frame (captured from ``t_capture`` on, a
        perf_counter time); returns why to stop ("" = go on)."""
        if self.stats.frames == 0:
            self._describe_detector(image)
        res = self.pipe.process(image, t)
        tm = StageTimer(start=t_capture)  # "loop": the whole iteration, capture to display
        tm.ms.update(res.timings, capture=capture_ms, e2e=capture_ms + res.timings["total"])
        self.stats.count_faces(res)
        with tm.stage("stats"):
            self.stats.measure(res, truth_landmarks(self.source, index))
        with tm.stage("compose"):
            shown = self.composer.compose(res, tm.ms, frame=image)
        self.pipe.zoom = self.composer.view == "zoom"  # decided on the first frame: SR faces for the panel too
        with tm.stage("encode"):
            self._write(shown)
        why = ""
        with tm.stage("display"):
            if self.window is not None:
                why = self.window.show(shown)
                if self.window.failed:
                    self._window_failed()
        if why:
            return why
        self._note_large_faces(res)
        tm.stop("loop")
        self.composer.note_loop(tm.ms["loop"])
        self.stats.finish_frame(res, tm.ms)
        return ""

    def _describe_detector(self, image) -> None:
        describe = getattr(self.pipe.detector, "describe", None)
        if describe is not None:
            self.log(describe(image.shape[1], image.shape[0]))

    def _write(self, shown) -> None:
        if self.out.out_path is None:
            return
        try:
            if self.writer is None:
                self._remove_stale_frames()
                self.writer = FrameWriter(self.out.out_path, self.source.fps, encoder=self.args.encoder)
            self.writer.write(shown)
        except (PKDNError, OSError) as exc:  # disk full, ...: the run ends, the summary is still printed
            self.writer_error = writer_error(self.out.out_path, exc)
            raise self.writer_error from None

    def _remove_stale_frames(self) -> None:
        """--overwrite on a PNG folder: the earlier run's frames go (else its later frames would mix in)."""
        for p in self.out.stale_frames:
            p.unlink(missing_ok=True)
        if self.out.stale_frames:
            self.log(f"--overwrite: removed {len(self.out.stale_frames)} earlier frame(s) from {self.out.out_path}")

    def _window_failed(self) -> None:
        self.window = None
        self.out.headless = True
        if self.out.out_path is None:
            self.out.out_path = default_output()
            self.log(f"writing {self.out.out_path} instead")

    def _note_large_faces(self, res: FrameResult) -> None:
        """Say once when faces are too large for SR to help (or forced through it)."""
        pipe = self.pipe
        if self.warned_large:
            return
        if res.skipped_large:
            self.warned_large = True
            self.log(f"note: faces with eyes {pipe.max_iod_seen:.0f} px apart are larger than the models are for "
                     f"(> {pipe.max_face_iod:.1f} px): they keep the plain upscale, which the models would not beat "
                     f"(docs/webcam.md: the decision rule)")
        elif self.stats.frames >= 10 and pipe.max_face_iod == 0 and pipe.max_iod_seen > 2 * SR_IOD:
            self.warned_large = True
            self.log(f"note: faces with eyes {pipe.max_iod_seen:.0f} px apart get less detail from the model's "
                     f"{SR_IOD:.0f} px output than the input had; try --downscale "
                     f"{max(2, math.ceil(pipe.max_iod_seen / SR_IOD))}")

    # -- the run --------------------------------------------------------------------------------
    def run(self) -> None:
        """Frames until the source ends, --frames, quit, Ctrl-C or SIGTERM; always closes everything."""
        stop = {"why": ""}

        def on_term(signum, frame):  # SIGTERM: finish like Ctrl-C
            stop["why"] = "terminated"

        old_term = signal.signal(signal.SIGTERM, on_term) if hasattr(signal, "SIGTERM") else None
        wall0 = time.perf_counter()
        try:
            self.end_reason = self._frames(stop)
        except KeyboardInterrupt:
            self.end_reason = "interrupted (Ctrl-C)"
        except PKDNError as exc:  # the writer failed mid-run (disk full, ...): summary first, then the error
            if self.writer_error is not exc:
                raise
            self.end_reason = "the writer failed"
        finally:
            if stop["why"]:  # e.g. SIGTERM while a lost camera was being reconnected: a stop, not a failure
                self.end_reason, self.source_lost = stop["why"], False
            if old_term is not None:
                signal.signal(signal.SIGTERM, old_term)
            try:
                self._close()  # the writer's drain is part of the loop's time
            finally:
                self.wall = time.perf_counter() - wall0

    def _frames(self, stop: dict) -> str:
        it = iter(self.source)
        limit = self.args.frames
        while not stop["why"]:
            if limit is not None and self.stats.frames >= limit:
                return f"--frames {limit} reached"
            tc = time.perf_counter()
            fr = next(it, None)
            capture_ms = (time.perf_counter() - tc) * 1e3
            if fr is None:
                self.source_lost = bool(getattr(self.source, "lost", False))
                return self.source.end_reason or "end of source"
            why = self.step(fr.image, fr.t, fr.index, tc, capture_ms)
            if why:
                return why
        return stop["why"]

    def detector_info(self) -> dict | None:
        det, size = self.pipe.detector, self.source.size
        if det is None:
            return None
        info = {"type": type(det).__name__, "min_face_iod": getattr(det, "min_iod", None)}
        if hasattr(det, "plan") and size:
            plan = det.plan(*size)
            info.update(slots=len(plan), calls=getattr(det, "calls", None),
                        plan=[{"kind": s.kind, "scale": round(s.scale, 4), "net_size": list(s.net_size)} for s in plan])
        return info

    def _close(self) -> None:
        if self.writer is not None:
            try:
                self.writer.release()
            except (PKDNError, OSError) as exc:  # reported after the summary (see _report)
                self.writer_error = self.writer_error or writer_error(self.out.out_path, exc)
                if self.writer.video:  # a video that could not be finished is unplayable (no moov atom)
                    self._remove_partial_video()
            self.writer_stats = self.writer.stats
        if self.window is not None:
            self.window.close()
        self.source.close()

    def _remove_partial_video(self) -> None:
        out = self.out.out_path
        try:
            out.unlink(missing_ok=True)
            note = f"; the unfinished video {out} was removed"
        except OSError as exc:
            note = f"; the unfinished video {out} could not be removed ({exc.strerror or exc}): it is not playable"
        self.writer_error = PKDNError(f"{self.writer_error}{note}")

    def summary(self) -> dict:
        """The run summary (--stats-json)."""
        a, pipe, st, src = self.args, self.pipe, self.stats, self.source
        first = next(iter(pipe.engines.values()))
        summary = {
            "source": src.name,
            "backend": getattr(first, "backend", a.backend),
            "precision": getattr(first, "precision", a.precision),
            "scale": a.scale if a.scale == "auto" else pipe.canvas_scale,
            "canvas_scale": pipe.canvas_scale,
            "canvas_size": list(pipe.canvas_wh) if pipe.canvas_wh else None,
            "canvas_limit": list(a.canvas_limit) if a.canvas_limit else "full",
            "engines": {f"x{s}": getattr(e, "name", type(e).__name__) for s, e in pipe.engines.items()},
            "frames": st.frames,
            "frames_skipped_corrupt": getattr(src, "skipped_total", src.skipped),
            "faces_left_bicubic_large": st.skipped_large,
            "end_reason": self.end_reason,
            "source_incomplete": bool(getattr(src, "incomplete", False)),
            "source_lost": self.source_lost,
            **st.rates(self.wall),
            "fps_definition": FPS_DEFINITION,
            "wall_s": round(self.wall, 3),
            "warmup_ms": round(self.warmup_ms, 2),
            "latency_ms": st.rec.summary(),
            "faces_per_frame": st.faces_summary(),
            **st.stability_summary(),
            "smoothing": not a.no_smooth,
            "detect_every": a.detect_every,
            "tracker": dict(pipe.tracker.stats),
            "input_size": list(src.size) if src.size else None,
            "output": str(self.out.out_path) if self.out.out_path else None,
            "view": self.composer.view,
            "writer": self.writer_stats,
            "detector": self.detector_info(),
            "threads": a.threads,
        }
        return summary


FPS_DEFINITION = ("fps = loop_fps = frames / wall time of the whole loop (capture, detect, track, align, SR, upscale, "
                  "paste, stats, compose, encode hand-over, display, and the writer's final drain); processing_fps "
                  "= frames / sum(capture + pipeline stages); pipeline_fps = frames / sum(pipeline stages)")


def parse_canvas(spec: str) -> tuple[int, int] | None:
    """``--canvas``: ``WxH`` -> (w, h); ``full`` -> None (the frame x the scale)."""
    s = str(spec).strip().lower()
    if s == "full":
        return None
    try:
        w, h = (int(v) for v in s.split("x"))
    except ValueError:
        raise PKDNError(f"--canvas {spec!r} is not WxH (e.g. 1920x1080) or 'full'") from None
    if w < 16 or h < 16:
        raise PKDNError(f"--canvas {spec} is too small (at least 16x16)")
    return w, h


def _check_args(args) -> None:
    if args.detect_every < 1:
        raise PKDNError("--detect-every must be >= 1")
    if args.frames is not None and args.frames < 1:
        raise PKDNError("--frames must be >= 1")
    if not args.min_face_iod >= 0 or not math.isfinite(args.min_face_iod):
        raise PKDNError("--min-face-iod must be a number >= 0")
    if args.threads < 1:
        raise PKDNError(f"--threads must be >= 1, got {args.threads}")
    if args.max_faces < 1:
        raise PKDNError(f"--max-faces must be >= 1, got {args.max_faces}")
    for flag, v in (("--feather", args.feather), ("--max-face-iod", args.max_face_iod)):
        if v is not None and not (math.isfinite(v) and v >= 0):
            raise PKDNError(f"{flag} must be a number >= 0, got {v:g}")
    if args.downscale is not None and not (math.isfinite(args.downscale) and 0 < args.downscale <= 64):
        raise PKDNError(f"--downscale must be in (0, 64], got {args.downscale:g}")
    check_artifact_scale(args)
    args.canvas_limit = parse_canvas(args.canvas)


def _report(loop: WebcamLoop, summary: dict, log) -> None:
    """Print the summary; write the stats file; say where the video went. A lost live camera then
    fails the run (one ``error:`` line, exit 2): a service's ``Restart=on-failure`` must fire."""
    print_summary(summary, log)
    if summary["source_incomplete"] and not loop.source_lost:
        log(f"warning: the source ended early: {summary['end_reason']}")
    elif not summary["frames"] and not loop.source_lost and loop.writer_error is None:
        bad = summary.get("frames_skipped_corrupt") or 0
        log(f"warning: no frame was processed: {summary['source']} gave none ({summary['end_reason']}"
            + (f"; {bad} unreadable" if bad else "")
            + "): an empty or damaged video, or a folder of unreadable images?")
    out, stats_path = loop.out.out_path, loop.out.stats_path
    if stats_path is not None:
        try:
            stats_path.parent.mkdir(parents=True, exist_ok=True)
            stats_path.write_text(json.dumps(summary, indent=2) + "\n")
        except OSError as exc:  # e.g. the disk filled up during the run: the summary above is printed
            raise PKDNError(f"cannot write --stats-json {stats_path}: {exc.strerror or exc}") from None
        log(f"stats: {stats_path.resolve()}")
    if loop.writer_error is not None:
        raise loop.writer_error
    if out is not None and summary["frames"]:
        what = {"side-by-side": "bicubic | pkdn-edge", "zoom": "output + zoom panel of the SR faces"}.get(
            summary["view"], "output")
        log(f"video: {out.resolve()} ({summary['frames']} frames, {what})")
    if loop.source_lost:
        raise PKDNError(f"{summary['end_reason']} after {summary['frames']} frames: the live source stopped "
                        "delivering frames (exit status 2, so a service manager's Restart=on-failure restarts the "
                        "loop)")


def run(argv: list[str] | None = None) -> int:
    """The webcam CLI: parse, plan the outputs, build the loop, run it, report."""
    args = build_parser().parse_args(argv)
    _check_args(args)
    log = lambda msg: print(msg, file=sys.stderr)  # noqa: E731
    cv2.setNumThreads(max(1, args.threads))
    outputs = _plan_outputs(args, log)
    loop = WebcamLoop(args, outputs, log)
    try:
        check_model(loop.pipe.engines, args, loop.out)
    except PKDNError:
        loop.source.close()
        raise
    loop.announce()
    loop.run()
    _report(loop, loop.summary(), log)
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_cli(lambda: run(argv))


if __name__ == "__main__":
    sys.exit(main())
