"""Per-stage latency of the video pipeline (:class:`pkdn_edge.pipeline.FacePipeline`) on one
synthetic webcam frame, from the pipeline's own stage timings (``FrameResult.timings``:
``detect``, ``track``, ``align``, ``sr``, ``upscale``, ``paste``, ``total``).

The frame is 640×480 with the shipped demo face (``pkdn_edge/data/demo_face_astronaut.jpg``)
shrunk to a 16-px eye distance (a face far enough from the camera to need SR) on a grey
background. Per scale, one single-engine pipeline (output canvas ×s) processes the same frame:

* ``warmup`` + ``runs`` frames with detection on **every** frame: the distribution of every stage;
* ``warmup`` + ``runs`` frames with detection every 5th frame (the webcam default): ``frame`` = the
  per-frame ``total`` of a one-face video at steady state.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np

from .timing import latency_stats

DEMO_FACE = Path(__file__).resolve().parent.parent / "data" / "demo_face_astronaut.jpg"
FRAME_SIZE = (640, 480)
FACE_IOD = 16.0


def demo_frame(detector: Any, iod: float = FACE_IOD, size: tuple[int, int] = FRAME_SIZE) -> tuple[np.ndarray, list]:
    """(frame BGR uint8, detected faces) with the demo face at eye distance ``iod`` px."""
    img = cv2.imread(str(DEMO_FACE), cv2.IMREAD_COLOR)
    if img is None:
        raise FileNotFoundError(DEMO_FACE)
    faces = detector.detect(img)
    native = faces[0].interocular if faces else 43.0
    k = iod / native
    small = cv2.resize(img, None, fx=k, fy=k, interpolation=cv2.INTER_AREA)
    w, h = size
    frame = np.full((h, w, 3), 96, np.uint8)
    sh, sw = small.shape[:2]
    y0, x0 = (h - sh) // 2, (w - sw) // 2
    frame[y0 : y0 + sh, x0 : x0 + sw] = small
    return frame, detector.detect(frame)


def _run(pipe: Any, frame: np.ndarray, warmup: int, runs: int) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {}
    for i in range(warmup + runs):
        res = pipe.process(frame, t=i / 30.0)
        if i >= warmup:
            for k, v in res.timings.items():
                samples.setdefault(k, []).append(float(v))
    return samples


def measure_stages(engines: dict[int, Any], threads: int = 2, warmup: int = 10, runs: int = 100) -> dict[str, Any]:
    """Stage latencies per scale (:func:`.timing.latency_stats` of each stage). ``engines``:
    ``{scale: engine}`` (anything with ``.scale``, ``.lr_size`` and ``.run``)."""
    from pkdn_edge.face.detector import load_detector
    from pkdn_edge.pipeline import FacePipeline

    cv2.setNumThreads(max(1, threads))
    detector = load_detector(threads=threads)
    frame, faces = demo_frame(detector)
    out: dict[str, Any] = {"frame": f"{frame.shape[1]}x{frame.shape[0]}", "face_iod_px": FACE_IOD,
                           "threads": threads, "warmup": warmup, "runs": runs,
                           "engines": {str(s): getattr(e, "name", str(e)) for s, e in engines.items()}, "scales": {}}
    if not faces:
        out["error"] = "the detector found no face in the benchmark frame"
        return out
    for s, engine in sorted(engines.items()):
        every = _run(FacePipeline(engine, detector=detector, detect_every=1), frame, warmup, runs)
        steady = _run(FacePipeline(engine, detector=detector, detect_every=5), frame, warmup, runs)
        stages = {k: latency_stats(v) for k, v in every.items() if k != "total"}
        stages["total (detect every frame)"] = latency_stats(every["total"])
        stages["frame (detect every 5th)"] = latency_stats(steady["total"])
        out["scales"][str(s)] = {"canvas_scale": s, "stages": stages}
    return out
