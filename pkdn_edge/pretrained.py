"""The shipped student weights and their model cards (torchvision-style metadata, no torch needed).

Three variants per scale, in ``pkdn_edge/weights/``:

* ``camera`` (the default everywhere: webcam, pkdn-export, pkdn-bench): ``pkdn_edge_x{s}.pt``, the
  student fine-tuned on the camera degradation model (``train/camera.py``); use it for anything a
  camera feeds.
* ``paper``: ``pkdn_edge_x{s}_paper.pt``, the student trained on clean PIL-bicubic LR only (the
  papers' protocol); use it to compare with the literature.
* ``wide``: ``pkdn_edge_x{s}_wide.pt``, the camera student fine-tuned further on the wide camera
  mixture (image processor, aliasing, MJPEG; docs/camera.md): more robust on the face-level
  robustness matrix, weaker than ``camera`` in the webcam loop on the simulated camera clips.

Each ``.pt`` (fp16 weights) has a ``.json`` card beside it: training data, degradation, steps, wall
time, hardware, the evaluation under both protocols and the commands that produced it, plus the
preprocessing the runtime must use.
"""

from __future__ import annotations

import json
from pathlib import Path

from .errors import PKDNError

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
SCALES = (4, 8)
VARIANTS = {"camera": "pkdn_edge_x{scale}", "paper": "pkdn_edge_x{scale}_paper", "wide": "pkdn_edge_x{scale}_wide"}
DEFAULT_VARIANT = "camera"


#: Side of the LR window each scale is exported and served with (see :func:`serve_window`).
SERVE_WINDOWS = {2: 64, 4: 40, 8: 16}


def serve_window(scale: int) -> int:
    """Side of the LR window the models are exported and served with. x4: 40, 1.25x its 32x32 training
    crop: a face at the training scale sits in the middle with its whole head around it (on real clips the
    32 window cut the face box's edges and kept about half of the model's gain). x8: its 16x16 training
    crop (a 20 window kept only a third of the x8 student's gain: benchmarks/loop_fidelity.py)."""
    return SERVE_WINDOWS.get(int(scale), 128 // int(scale))


def _stem(scale: int, variant: str) -> str:
    if scale not in SCALES:
        raise PKDNError(f"no shipped student for ×{scale}; shipped scales: {SCALES}")
    if variant not in VARIANTS:
        raise PKDNError(f"unknown variant {variant!r}; choose from {', '.join(VARIANTS)}")
    return VARIANTS[variant].format(scale=scale)


def pretrained_path(scale: int, variant: str = DEFAULT_VARIANT) -> Path:
    """Path of the shipped ``edge`` student checkpoint for ``scale`` (4 or 8) and ``variant``
    (``camera``, the default, ``paper`` or ``wide``)."""
    path = WEIGHTS_DIR / f"{_stem(scale, variant)}.pt"
    if not path.is_file():
        raise PKDNError(
            f"shipped ×{scale} {variant} weights are missing ({path}); pass --weights PATH or train them with "
            f"`pkdn-train student --config train/configs/camera_x{scale}_student.yaml`"
        )
    return path


def model_card(scale: int, variant: str = DEFAULT_VARIANT) -> dict:
    """The shipped student's card (``{}`` when it has none)."""
    card = WEIGHTS_DIR / f"{_stem(scale, variant)}.json"
    if not card.is_file():
        return {}
    try:
        return json.loads(card.read_text())
    except json.JSONDecodeError as exc:
        raise PKDNError(f"model card {card} is not valid JSON: {exc}") from None
