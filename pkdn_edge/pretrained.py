"""The shipped student weights and their model cards (torchvision-style metadata, no torch needed).

``pkdn_edge/weights/pkdn_edge_x{4,8}.pt`` are fp16 checkpoints of the ``edge`` students; beside
each, ``pkdn_edge_x{s}.json`` carries its card: training data, steps, wall time, hardware, the
evaluation table and the command that produced it, plus the preprocessing the runtime must use.
"""

from __future__ import annotations

import json
from pathlib import Path

from .errors import PKDNError

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
SCALES = (4, 8)


def pretrained_path(scale: int) -> Path:
    """Path of the shipped ``edge`` student checkpoint for ``scale`` (4 or 8)."""
    if scale not in SCALES:
        raise PKDNError(f"no shipped student for ×{scale}; shipped scales: {SCALES}")
    path = WEIGHTS_DIR / f"pkdn_edge_x{scale}.pt"
    if not path.is_file():
        raise PKDNError(
            f"shipped ×{scale} weights are missing ({path}); pass --weights PATH or train them with "
            f"`pkdn-train student --config train/configs/edge_x{scale}_student.yaml`"
        )
    return path


def model_card(scale: int) -> dict:
    """The shipped student's card (``{}`` when it has none)."""
    card = WEIGHTS_DIR / f"pkdn_edge_x{scale}.json"
    if not card.is_file():
        return {}
    try:
        return json.loads(card.read_text())
    except json.JSONDecodeError as exc:
        raise PKDNError(f"model card {card} is not valid JSON: {exc}") from None
