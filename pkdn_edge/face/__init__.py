"""Face detection, alignment, tracking and crop preparation (runtime: numpy + OpenCV + onnxruntime).

Submodules: :mod:`~pkdn_edge.face.detector` (RetinaFace with 5 landmarks),
:mod:`~pkdn_edge.face.align` (5-point template, similarity fit, antialiased warp, paste-back),
:mod:`~pkdn_edge.face.tracking` (video tracks with landmark smoothing) and
:mod:`~pkdn_edge.face.prepare` (the ``pkdn-prepare`` CLI).

The names below are imported lazily, on first attribute access: ``import pkdn_edge.face`` loads
nothing heavy (no onnxruntime session, no model bytes).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    # detector
    "Face": "detector",
    "RetinaFaceDetector": "detector",
    "load_detector": "detector",
    # alignment
    "TEMPLATE_SIZE": "align",
    "TEMPLATE_128": "align",
    "template": "align",
    "umeyama_similarity": "align",
    "estimate_similarity": "align",
    "inverse_matrix": "align",
    "matrix_scale": "align",
    "rescale_matrix": "align",
    "transform_points": "align",
    "warp_face": "align",
    "align_faces": "align",
    "feather_mask": "align",
    "footprint": "align",
    "Pasted": "align",
    "blend_face": "align",
    "paste_back": "align",
    "paste_faces": "align",
    # tracking
    "FaceTracker": "tracking",
    "Track": "tracking",
    "OneEuroFilter": "tracking",
    "LandmarkSmoother": "tracking",
    "interocular": "tracking",
    "box_iou": "tracking",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    mod = _EXPORTS.get(name)
    if mod is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{mod}"), name)
    globals()[name] = value
    return value


def __dir__() -> list:
    return sorted(set(globals()) | set(_EXPORTS))
