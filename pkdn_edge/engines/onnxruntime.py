"""ONNX Runtime backend: runs ``onnx`` artifacts (fp32, fp16, int8 Q/DQ) and the TensorRT-ready
ONNX of ``tensorrt`` artifacts (to check them on a machine without a GPU).

``threads`` sets ``intra_op_num_threads`` (inter-op 1, sequential execution: one small model per
call). ``providers`` (keyword) overrides the execution providers; default CPU.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from pkdn_edge.errors import PKDNError
from pkdn_edge.manifest import Manifest

from .base import Engine, check_precision, external_data_hint


class OnnxRuntimeEngine(Engine):
    """An ONNX model in an ``onnxruntime.InferenceSession``."""

    backend = "onnxruntime"

    def __init__(self, manifest: Manifest, threads: int = 2, precision: str | None = None,
                 providers: Sequence[str] | None = None, model_file: str | None = None) -> None:
        import onnxruntime as ort

        super().__init__(manifest, threads, precision)
        check_precision(manifest, precision, self.backend)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = max(1, self.threads)
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        path = manifest.path(model_file)
        try:  # from its bytes: only the listed, hashed file is read (no external-data files beside it)
            self.session = ort.InferenceSession(path.read_bytes(), sess_options=opts,
                                                providers=list(providers or ["CPUExecutionProvider"]))
        except Exception as exc:  # ORT raises its own Fail/InvalidGraph types
            raise PKDNError(f"onnxruntime cannot load {path}: {external_data_hint(exc)}") from None
        names = [i.name for i in self.session.get_inputs()]
        if manifest.input_name not in names:
            raise PKDNError(f"{path} has inputs {names}, the manifest says {manifest.input_name!r}")
        self._input = manifest.input_name
        self._outputs = [manifest.output_name]

    def _infer(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(self._outputs, {self._input: x})[0]


def open_engine(
    manifest: Manifest, threads: int = 2, precision: str | None = None, **options: Any
) -> OnnxRuntimeEngine:
    """Backend entry point used by :func:`pkdn_edge.engines.load_engine`."""
    return OnnxRuntimeEngine(manifest, threads, precision, **options)
