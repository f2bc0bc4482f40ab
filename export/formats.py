"""The export targets as one table: it drives ``pkdn-export``'s choices and help, the docs and the tests.

=========  =====================  ===========  ====================  ==========================  =========
target     format                 suffix       precisions            needs                       device
=========  =====================  ===========  ====================  ==========================  =========
torch      PyTorch checkpoint     .pt          fp32, fp16            torch                       CPU/GPU
onnx       ONNX                   .onnx        fp32, fp16, int8      torch, onnx                 CPU/GPU
openvino   OpenVINO IR            .xml/.bin    fp32, fp16, int8      torch, onnx, openvino       CPU/iGPU/NPU
tensorrt   TensorRT (ONNX→plan)   .onnx/.plan  fp32, fp16, int8      torch, onnx (tensorrt on    NVIDIA GPU
                                                                     the device for the engine)
=========  =====================  ===========  ====================  ==========================  =========

``int8`` also needs ``nncf`` (calibration on aligned faces). :func:`format_table` renders this
table from :data:`FORMATS` for the CLI help and ``docs/export.md``.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass


@dataclass(frozen=True)
class ExportFormat:
    """One row of the export table.

    Attributes:
        target: ``--target`` value and the artifact folder prefix (``exports/<target>_<precision>_x<s>``).
        name: human-readable format name.
        suffix: the main model file's suffix.
        precisions: supported ``--precision`` values (first = default).
        needs: Python packages the export needs (``int8`` adds ``nncf``).
        device: where the artifact runs.
        backend: the :mod:`pkdn_edge.engines` backend that runs it.
        module: the ``pkdn_edge.export`` module implementing it (``<module>.export(ctx)``).
    """

    target: str
    name: str
    suffix: str
    precisions: tuple[str, ...]
    needs: tuple[str, ...]
    device: str
    backend: str
    module: str

    def missing(self, precision: str) -> list[str]:
        """Packages of :attr:`needs` (plus nncf for int8) that are not importable here."""
        pkgs = list(self.needs) + (["nncf"] if precision == "int8" else [])
        return [p for p in pkgs if importlib.util.find_spec(p) is None]


FORMATS: tuple[ExportFormat, ...] = (
    ExportFormat("torch", "PyTorch checkpoint", ".pt", ("fp32", "fp16"), ("torch",), "CPU/GPU", "torch",
                 "torch_export"),
    ExportFormat("onnx", "ONNX", ".onnx", ("fp32", "fp16", "int8"), ("torch", "onnx"), "CPU/GPU", "onnxruntime",
                 "onnx_export"),
    ExportFormat("openvino", "OpenVINO IR", ".xml", ("fp32", "fp16", "int8"), ("torch", "onnx", "openvino"),
                 "CPU/iGPU/NPU", "openvino", "openvino_export"),
    ExportFormat("tensorrt", "TensorRT (ONNX + engine)", ".onnx/.plan", ("fp32", "fp16", "int8"), ("torch", "onnx"),
                 "NVIDIA GPU/Jetson", "tensorrt", "tensorrt_export"),
)
TARGETS: dict[str, ExportFormat] = {f.target: f for f in FORMATS}


def get_format(target: str) -> ExportFormat:
    """The row for ``target`` (KeyError-free: raises PKDNError naming the choices)."""
    from pkdn_edge.errors import PKDNError

    if target not in TARGETS:
        raise PKDNError(f"unknown target {target!r}; choose from {', '.join(TARGETS)}")
    return TARGETS[target]


def format_table() -> str:
    """The table as Markdown (docs) / plain text (``--help``)."""
    rows = ["| target | format | suffix | precisions | needs | runs on | backend |", "|---|---|---|---|---|---|---|"]
    for f in FORMATS:
        needs = ", ".join(f.needs) + (" (+nncf for int8)" if "int8" in f.precisions else "")
        rows.append(f"| `{f.target}` | {f.name} | `{f.suffix}` | {', '.join(f.precisions)} | {needs} | {f.device} | "
                    f"{f.backend} |")
    return "\n".join(rows)
