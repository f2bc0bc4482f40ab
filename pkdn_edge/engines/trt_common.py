"""TensorRT helpers shared by the runtime backend (:mod:`.tensorrt`) and the engine builders of
``pkdn-export`` (no GPU and no torch needed to import): importing ``tensorrt`` with a clear error,
its version, the GPU's compute capability, and the I/O tensor names an engine was built with.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from typing import Any

from pkdn_edge.manifest import Manifest

from .base import missing_backend_error


def _system_tensorrt_hint() -> str:
    """Why ``import tensorrt`` fails inside a venv on a Jetson where JetPack installed it system-wide."""
    in_venv = sys.prefix != getattr(sys, "base_prefix", sys.prefix)
    if not in_venv:
        return ""
    major_minor = f"python{sys.version_info[0]}.{sys.version_info[1]}"
    for root in ("/usr/lib/python3/dist-packages", f"/usr/lib/{major_minor}/dist-packages"):
        if os.path.isdir(os.path.join(root, "tensorrt")):
            return (f" (JetPack's TensorRT is in {root}, which this venv does not see: recreate it with "
                    f"`python3 -m venv --system-site-packages`)")
    return ""


def _import_tensorrt() -> Any:
    try:
        return importlib.import_module("tensorrt")
    except ImportError:
        err = missing_backend_error("tensorrt")
        hint = _system_tensorrt_hint()
        if hint:
            err.args = (str(err) + hint,)
        raise err from None


def trt_version(trt: Any) -> tuple[int, int]:
    """(major, minor) of a tensorrt module (``"10.3.0.30"`` → ``(10, 3)``)."""
    parts = (str(getattr(trt, "__version__", "0.0")).split(".") + ["0"])[:2]
    try:
        return int(parts[0]), int(parts[1])
    except ValueError:
        return 0, 0


def trt_major(trt: Any) -> int:
    return trt_version(trt)[0]


def _rebuild_hint(manifest: Manifest) -> str:
    return (f"rebuild it on this device: `python -m pkdn_edge.engines.tensorrt build {manifest.root}` or trtexec "
            f"(see {manifest.root}/BUILD.md), then register it")


def compute_capability(device: int = 0) -> str | None:
    """``"8.7"`` for CUDA device ``device`` (Orin), from cuda-python or a CUDA torch; None when
    neither can see a GPU. Recorded in the manifest beside the TensorRT version (an engine only runs
    on GPUs of the compute capability that built it)."""
    try:
        try:
            from cuda.bindings import runtime as cudart
        except ImportError:
            from cuda import cudart  # type: ignore[no-redef]
        attrs = cudart.cudaDeviceAttr
        got = []
        for a in (attrs.cudaDevAttrComputeCapabilityMajor, attrs.cudaDevAttrComputeCapabilityMinor):
            err, v = cudart.cudaDeviceGetAttribute(a, device)
            if int(err) != 0:
                raise RuntimeError(err)
            got.append(int(v))
        return f"{got[0]}.{got[1]}"
    except Exception:
        pass
    try:
        if "torch" not in sys.modules and importlib.util.find_spec("torch") is None:
            return None
        import torch

        if torch.cuda.is_available():
            major, minor = torch.cuda.get_device_capability(device)
            return f"{major}.{minor}"
    except Exception:
        pass
    return None


def engine_io_names(manifest: Manifest) -> tuple[str, str]:
    """(input, output) tensor names of the artifact's engine: the manifest's ``input_name`` /
    ``output_name`` (the ONNX names every ONNX-built engine keeps), unless the builder recorded
    others under ``extras.engine.io`` (torch-tensorrt names its output ``output0``)."""
    io = (manifest.extras.get("engine") or {}).get("io") or {}
    return str(io.get("input") or manifest.input_name), str(io.get("output") or manifest.output_name)
