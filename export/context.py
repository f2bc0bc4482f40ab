"""What every target exporter receives (:class:`ExportContext`) and returns (:class:`TargetResult`).

:class:`~.settings.CalibOptions` is defined in the torch-free :mod:`.settings` (re-exported here)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np
from torch import nn

from .settings import CalibOptions


@dataclass
class QuantizedModel:
    """An INT8 PyTorch model made elsewhere (e.g. NNCF PTQ + quantization-aware training in
    :mod:`.int8.qat`) that an export ships instead of calibrating the fp32 model anew.

    Attributes:
        module: the NNCF fake-quantized model (output of ``nncf.quantize``, possibly fine-tuned).
        info: facts recorded under ``extras.quantization`` in the manifest (method, settings, steps).
    """

    module: nn.Module
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class ExportContext:
    """Inputs of one export.

    Attributes:
        model: the fp32 PyTorch model in eval mode (the reference for verification).
        scale / lr_size: SR factor and (h, w) of the input.
        batch: fixed batch, or None for a dynamic batch axis.
        workdir: the (temporary) artifact folder: every file written here ships.
        scratch: a folder for intermediate files that do not ship.
        calib: INT8 options.
        int8_model: a ready INT8 PyTorch model (QAT) to export for ``precision == "int8"`` instead
            of quantizing ``model`` (the fp32 reference for verification) here.
        log: progress printer (one line per step).
        builder: ``--target tensorrt``: who builds the engine here (:data:`.settings.BUILDERS`).
    """

    model: nn.Module
    meta: dict[str, Any]
    weights: Path
    scale: int
    lr_size: tuple[int, int]
    precision: str
    batch: int | None
    workdir: Path
    scratch: Path
    threads: int = 2
    opset: int = 17
    calib: CalibOptions = field(default_factory=CalibOptions)
    log: Callable[[str], None] = print
    int8_model: QuantizedModel | None = None
    builder: str = "auto"
    _faces: Any = None

    def onnx_metadata(self) -> dict[str, Any]:
        return {"model": "pkdn", "preset": self.meta.get("preset", "edge"), "scale": self.scale,
                "input": "lr: N,3,h,w float32 RGB in [0,1]", "output": "sr: N,3,s*h,s*w float32 RGB (clamp to [0,1])",
                "precision": self.precision}

    def calibration(self) -> tuple[np.ndarray, np.ndarray, str]:
        """(calibration LR (N,3,h,w) float32, selection HR faces (M,128,128,3) uint8, source), loaded once."""
        if self._faces is None:
            from .data import calibration_faces, to_lr

            c = self.calib
            fs = calibration_faces(c.folder, c.size, c.select_size, synthetic=c.synthetic)
            calib, select = pad_hr(fs.calib, self.lr_size, self.scale), pad_hr(fs.select, self.lr_size, self.scale)
            self._faces = (to_lr(calib, self.scale), select, fs.source)
        return self._faces


def pad_hr(hr: np.ndarray, lr_size: tuple[int, int], scale: int) -> np.ndarray:
    """(N,128,128,3) HR faces mirrored out to the input window x scale (a window larger than the
    training crop: the face in the middle, as the loop cuts it)."""
    ph, pw = lr_size[0] * scale - hr.shape[1], lr_size[1] * scale - hr.shape[2]
    if ph <= 0 and pw <= 0:
        return hr
    top, left = ph // 2, pw // 2
    return np.stack([cv2.copyMakeBorder(f, top, ph - top, left, pw - left, cv2.BORDER_REFLECT_101) for f in hr])


@dataclass
class TargetResult:
    """What a target exporter produced.

    Attributes:
        model_file: the main file (relative to ``workdir``).
        verify_backend: the engine backend that checks parity here (None: cannot be checked on
            this machine).
        extras: target-specific manifest facts (quantization settings, build commands, ...).
        notes: lines printed after the summary (e.g. "build the engine on the device").
        checks: additional pass/fail checks, e.g. ``{"tensorrt_lint": []}`` (lists = violations);
            ``build_engine``: the engine builder the exporter runs once the manifest exists.
        engine_file: a ready engine (relative to ``workdir``).
        also_verify: other model files that ship and must pass the same parity check as
            ``model_file`` (the tensorrt target's fp32-graph ONNX beside ``model_fp16.onnx``).
    """

    model_file: str
    verify_backend: str | None
    extras: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    checks: dict[str, Any] = field(default_factory=dict)
    engine_file: str | None = None
    also_verify: list[str] = field(default_factory=list)
