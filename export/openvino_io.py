"""OpenVINO for the export tools: imported with telemetry off, ONNX → IR, and running an IR.

* :func:`import_openvino`: ``openvino`` with its usage telemetry off first (``import openvino``
  itself sends an event; the runtime's :mod:`pkdn_edge.telemetry` is the one implementation);
  a missing package is one ``error:`` line naming the extra.
* :func:`ir_from_onnx`: ``ov.convert_model`` of an ONNX file whose bicubic skip path was first
  rewritten as two MatMuls (:func:`.onnx_io.matmul_skip_path`), so node and weight names are the
  ONNX ones. Used by the ``openvino`` target (fp32/fp16) and by :mod:`.int8.strategy` (INT8).
* :func:`run_ir`: an IR's outputs on a batch (f32 hint), for scoring INT8 candidates.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pkdn_edge.errors import MissingDependencyError
from pkdn_edge.telemetry import disable
from pkdn_edge.telemetry import import_openvino as _import_openvino

from .onnx_io import matmul_skip_path

__all__ = ["disable", "import_openvino", "ir_from_onnx", "run_ir"]


def import_openvino() -> Any:
    """The ``openvino`` module (telemetry off before the import); absent → MissingDependencyError."""
    try:
        return _import_openvino()
    except ImportError:
        raise MissingDependencyError("openvino", "openvino", "--target openvino") from None


def ir_from_onnx(ov: Any, onnx_path: Path, lr_size: tuple[int, int], scale: int, extras: dict[str, Any]) -> Any:
    """``ov.Model`` of the ONNX at ``onnx_path`` (rewritten in place with :func:`.onnx_io.matmul_skip_path`,
    which records ``extras["bicubic_skip"]``)."""
    return ov.convert_model(str(matmul_skip_path(onnx_path, lr_size, scale, extras)))


def run_ir(ov: Any, model: Any, x: np.ndarray, threads: int) -> np.ndarray:
    """Outputs of an OpenVINO model on ``x`` (N,3,h,w), f32 hint, any batch size."""
    model = model.clone()
    model.reshape({model.inputs[0]: ov.PartialShape([-1, *x.shape[1:]])})
    compiled = ov.Core().compile_model(model, "CPU",
                                       {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": threads})
    return np.concatenate([compiled(x[i : i + 16])[0] for i in range(0, len(x), 16)])
