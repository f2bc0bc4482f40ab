"""Inference engines for exported PKDN artifacts (no torch needed except for the ``torch`` backend).

    from pkdn_edge.engines import load_engine, available_backends
    engine = load_engine("exports/onnx_fp32_x4", threads=2)
    sr_faces = engine.run(lr_faces_bgr)      # (N,32,32,3) uint8 -> (N,128,128,3) uint8

Backends (:data:`BACKENDS`): ``onnxruntime``, ``openvino``, ``tensorrt``, ``torch``. Each is imported
only when used; a missing one raises :class:`~pkdn_edge.errors.MissingDependencyError` naming
the extra to install.
"""

from .base import BACKENDS, DEFAULT_BACKEND, BackendInfo, Engine, available_backends, load_engine

__all__ = ["BACKENDS", "DEFAULT_BACKEND", "BackendInfo", "Engine", "available_backends", "load_engine"]
