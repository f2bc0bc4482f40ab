"""Video-pipeline stages on one 640×480 frame with one face (the frame of ``pkdn_edge.export.bench.stages``):
detect, align, SR, upscale, paste, and a whole steady-state frame (``FacePipeline.process``,
detection every 5th frame). The SR engine per scale is the one a deployment would use (OpenVINO
INT8 when pkdn-bench built it); the output canvas is ×s, as in a single-engine pipeline."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import pytest

from pkdn_edge.export.bench.configs import deploy_choice


@pytest.fixture(scope="module")
def detector(threads: int):
    from pkdn_edge.face.detector import load_detector

    cv2.setNumThreads(threads)
    return load_detector(threads=threads)


@pytest.fixture(scope="module")
def scene(detector) -> tuple[np.ndarray, np.ndarray]:
    from pkdn_edge.export.bench.stages import demo_frame

    frame, faces = demo_frame(detector)
    if not faces:
        pytest.skip("the detector found no face in the benchmark frame")
    return frame, faces[0].landmarks


@pytest.fixture(scope="module", params=[4, 8], ids=["x4", "x8"])
def engine(request, index: dict[str, Any], runners) -> Any:
    cfg = deploy_choice({c["id"]: c for c in index["configs"] if c.get("device", "cpu") == "cpu"}, request.param)
    if cfg is None:
        pytest.skip(f"pkdn-bench measured no x{request.param} configuration of our student")
    return runners(cfg)[0]


def _align(frame: np.ndarray, lm: np.ndarray, n: int, out: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    from pkdn_edge.face.align import template, umeyama_similarity, warp_face

    M = umeyama_similarity(lm, template(n))
    return warp_face(frame, M, n, out=out), M


def test_detect(benchmark, detector, scene) -> None:
    frame, _ = scene
    benchmark.group = "pipeline stages"
    faces = benchmark(detector.detect, frame)
    assert len(faces) == 1


def test_align(benchmark, engine, scene) -> None:
    frame, lm = scene
    n = engine.lr_size[0]
    buf = np.empty((n, n, 3), np.uint8)
    benchmark.group = "pipeline stages"
    lr, _ = benchmark(_align, frame, lm, n, buf)
    assert lr.shape == (n, n, 3)


def test_sr(benchmark, engine, scene) -> None:
    frame, lm = scene
    lr = _align(frame, lm, engine.lr_size[0])[0][None]
    benchmark.group = "pipeline stages"
    out = benchmark(engine.run, lr)
    assert out.shape == (1, 128, 128, 3)


def test_upscale(benchmark, engine, scene) -> None:
    frame, _ = scene
    h, w = frame.shape[:2]
    s = engine.scale
    canvas = np.empty((h * s, w * s, 3), np.uint8)
    benchmark.group = "pipeline stages"
    benchmark(cv2.resize, frame, (w * s, h * s), dst=canvas, interpolation=cv2.INTER_CUBIC)


def test_paste(benchmark, engine, scene) -> None:
    from pkdn_edge.face.align import blend_face, feather_mask
    from pkdn_edge.pipeline import FacePipeline

    frame, lm = scene
    lr, M = _align(frame, lm, engine.lr_size[0])
    sr = engine.run(lr[None])[0]
    s = engine.scale
    A = FacePipeline(engine, detector=None).canvas_matrix(M, s)
    h, w = frame.shape[:2]
    canvas = cv2.resize(frame, (w * s, h * s), interpolation=cv2.INTER_CUBIC)
    mask = feather_mask(sr.shape[:2], 0.05 * sr.shape[0])
    benchmark.group = "pipeline stages"
    info = benchmark(blend_face, canvas, sr, A, mask=mask)
    assert info is not None


def test_frame(benchmark, engine, detector, scene) -> None:
    """FacePipeline.process end to end, detection every 5th frame (steady state of a 1-face video)."""
    from pkdn_edge.pipeline import FacePipeline

    frame, _ = scene
    pipe = FacePipeline(engine, detector=detector, detect_every=5)
    clock = iter(range(10**9))
    benchmark.group = "pipeline stages"
    res = benchmark(lambda: pipe.process(frame, t=next(clock) / 30.0))
    assert res.canvas.shape[0] == frame.shape[0] * engine.scale
