"""OpenVINO backend: runs ``openvino`` IR artifacts (fp32, fp16-compressed, int8) and ONNX files.

Settings: ``INFERENCE_NUM_THREADS = threads``, ``PERFORMANCE_HINT = LATENCY``, one stream, and
``INFERENCE_PRECISION_HINT = f32`` by default: OpenVINO's CPU plugin otherwise runs float layers
in bf16 on CPUs that have it (AMX/AVX512-BF16), which breaks parity with PyTorch. Pass
``precision="fp16"``/``"bf16"`` to opt into the faster hint on an fp32/fp16 artifact.

Dynamic-batch artifacts are reshaped once per batch size seen and the compiled models cached
(static shapes are faster on CPU than a dynamic-shape compile); fixed-batch ones compile once.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from pkdn_edge.errors import PKDNError
from pkdn_edge.manifest import Manifest
from pkdn_edge.telemetry import import_openvino

from .base import Engine, check_precision, external_data_hint

HINTS = {"fp32": "f32", "fp16": "f16", "bf16": "bf16"}
MAX_CACHED_BATCHES = 8


def ov_reason(exc: BaseException, limit: int = 400) -> str:
    """OpenVINO's error in one line, reason included: its messages start with lines like ``Exception from
    src/inference/src/cpp/core.cpp:84:`` (where, not why), which used to be all that was shown."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    why = [ln for ln in lines if not re.match(r"^(Exception from |Check '.*' failed at )?\S*src/\S+:\d+:?$", ln)
           and not ln.startswith("Exception from src/")]
    text = " ".join(why or lines) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


class OpenVinoEngine(Engine):
    """An OpenVINO model compiled for ``device`` (default ``CPU``)."""

    backend = "openvino"

    def __init__(self, manifest: Manifest, threads: int = 2, precision: str | None = None,
                 device: str = "CPU", model_file: str | None = None, config: dict[str, Any] | None = None) -> None:
        ov = import_openvino()  # telemetry off before the import (it sends on import)

        super().__init__(manifest, threads, precision)
        hints = ("fp16", "bf16") if manifest.precision != "int8" else ()
        check_precision(manifest, precision, self.backend, allowed_hints=hints)
        hint = HINTS[precision] if precision in ("fp16", "bf16") else "f32"
        self.inference_precision = hint
        self.device = device
        self.config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": hint, "PERFORMANCE_HINT": "LATENCY",
                                       "NUM_STREAMS": 1}
        if device.upper().startswith("CPU"):
            self.config["INFERENCE_NUM_THREADS"] = max(1, self.threads)
        self.config.update(config or {})
        self.core = ov.Core()
        path = manifest.path(model_file)
        try:  # an ONNX model from its bytes: no external-data file beside it is read (IR: its listed .bin)
            self.model = self.core.read_model(path.read_bytes() if path.suffix == ".onnx" else str(path))
        except Exception as exc:
            raise PKDNError(f"openvino cannot read {path}: {external_data_hint(exc, ov_reason(exc))}") from None
        names = set().union(*(i.get_names() for i in self.model.inputs))
        if manifest.input_name not in names:
            raise PKDNError(f"{path} has inputs {sorted(names)}, the manifest says {manifest.input_name!r}")
        self._compiled: dict[int, Any] = {}
        self._requests: dict[int, Any] = {}
        if self.batch is not None:
            self._compile(self.batch)

    def _compile(self, n: int) -> Any:
        if n in self._requests:
            return self._requests[n]
        if len(self._requests) >= MAX_CACHED_BATCHES:  # drop the oldest batch size
            old = next(iter(self._requests))
            del self._requests[old], self._compiled[old]
        ov = import_openvino()

        model = self.model.clone()
        h, w = self.lr_size
        model.reshape({self.manifest.input_name: ov.PartialShape([n, 3, h, w])})
        try:
            compiled = self.core.compile_model(model, self.device, self.config)
        except Exception as exc:
            raise PKDNError(f"openvino cannot compile {self.manifest.path()} for {self.device} (batch {n}): "
                            f"{ov_reason(exc)}") from None
        self._compiled[n] = compiled
        self._requests[n] = compiled.create_infer_request()
        return self._requests[n]

    def _infer(self, x: np.ndarray) -> np.ndarray:
        req = self._compile(x.shape[0])
        req.infer({0: x}, share_inputs=True)
        return req.get_output_tensor(0).data.copy()

    def compiled_precision(self) -> str:
        """The CPU plugin's effective ``INFERENCE_PRECISION_HINT`` (e.g. ``f32``)."""
        if not self._compiled:
            self._compile(self.batch or 1)
        t = next(iter(self._compiled.values())).get_property("INFERENCE_PRECISION_HINT")
        return str(t.to_string() if hasattr(t, "to_string") else t)


def open_engine(manifest: Manifest, threads: int = 2, precision: str | None = None, **options: Any) -> OpenVinoEngine:
    """Backend entry point used by :func:`pkdn_edge.engines.load_engine`."""
    return OpenVinoEngine(manifest, threads, precision, **options)
