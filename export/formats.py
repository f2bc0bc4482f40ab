"""The export targets as one table: it drives ``pkdn-export``'s choices, options and help, the docs
and the tests. Torch-free (``pkdn-export --help`` works on a runtime-only install).

=========  =====================  ===========  ====================  ==========================  =========
target     format                 suffix       precisions            needs                       device
=========  =====================  ===========  ====================  ==========================  =========
torch      PyTorch checkpoint     .pt          fp32, fp16            torch                       CPU/GPU
onnx       ONNX                   .onnx        fp32, fp16, int8      torch, onnx                 CPU/GPU
openvino   OpenVINO IR            .xml/.bin    fp32, fp16, int8      torch, onnx, openvino       CPU/iGPU/NPU
tensorrt   TensorRT (ONNX→plan)   .onnx/.plan  fp32, fp16, int8      torch, onnx (tensorrt on    NVIDIA GPU
                                                                     the device for the engine)
=========  =====================  ===========  ====================  ==========================  =========

``int8`` also needs ``nncf`` (calibration on aligned faces). The ``options`` column lists the flags
only that target takes (``--builder`` for tensorrt, ``--accuracy-control`` for openvino); the CLI
refuses them elsewhere. ``backend`` names a row of the runtime's one backend table,
:data:`pkdn_edge.engines.base.BACKENDS` (a test checks both tables agree). :func:`format_table`
renders this table for the CLI help and ``docs/export.md``. A new target is a row here plus a
module ``export/targets/<target>.py`` with ``export(ctx) -> TargetResult``.
"""

from __future__ import annotations

from dataclasses import dataclass

from pkdn_edge.engines.base import module_available


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
        backend: the :mod:`pkdn_edge.engines` backend that runs it (a key of ``BACKENDS``).
        module: the ``pkdn_edge.export`` module implementing it (``targets.<target>``; ``<module>.export(ctx)``).
        options: ``pkdn-export`` flags that only this target takes (dest names, e.g. ``builder``).
    """

    target: str
    name: str
    suffix: str
    precisions: tuple[str, ...]
    needs: tuple[str, ...]
    device: str
    backend: str
    module: str
    options: tuple[str, ...] = ()

    def missing(self, precision: str) -> list[str]:
        """Packages of :attr:`needs` (plus nncf for int8) that are not importable here."""
        pkgs = list(self.needs) + (["nncf"] if precision == "int8" else [])
        return [p for p in pkgs if not module_available(p)]

    def require(self, precision: str) -> None:
        """Raise :class:`~pkdn_edge.errors.MissingDependencyError` naming the extra to install
        when a package this export needs is absent (before anything heavy is imported)."""
        from pkdn_edge.errors import MissingDependencyError

        missing = self.missing(precision)
        if missing:
            extra = "openvino" if missing[0] == "openvino" else "export"
            raise MissingDependencyError(missing[0], extra, f"--target {self.target} --precision {precision}")


FORMATS: tuple[ExportFormat, ...] = (
    ExportFormat("torch", "PyTorch checkpoint", ".pt", ("fp32", "fp16"), ("torch",), "CPU/GPU", "torch",
                 "targets.torch"),
    ExportFormat("onnx", "ONNX", ".onnx", ("fp32", "fp16", "int8"), ("torch", "onnx"), "CPU/GPU", "onnxruntime",
                 "targets.onnx"),
    ExportFormat("openvino", "OpenVINO IR", ".xml", ("fp32", "fp16", "int8"), ("torch", "onnx", "openvino"),
                 "CPU/iGPU/NPU", "openvino", "targets.openvino", ("accuracy_control",)),
    ExportFormat("tensorrt", "TensorRT (ONNX + engine)", ".onnx/.plan", ("fp32", "fp16", "int8"), ("torch", "onnx"),
                 "NVIDIA GPU/Jetson", "tensorrt", "targets.tensorrt", ("builder", "exported_program")),
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
    rows = ["| target | format | suffix | precisions | needs | runs on | backend | options |",
            "|---|---|---|---|---|---|---|---|"]
    for f in FORMATS:
        needs = ", ".join(f.needs) + (" (+nncf for int8)" if "int8" in f.precisions else "")
        opts = ", ".join(option_flag(o) for o in f.options) or "-"
        rows.append(f"| `{f.target}` | {f.name} | `{f.suffix}` | {', '.join(f.precisions)} | {needs} | {f.device} | "
                    f"{f.backend} | {opts} |")
    return "\n".join(rows)


def option_flag(dest: str) -> str:
    """``exported_program`` → ``--exported-program``."""
    return "--" + dest.replace("_", "-")


def target_options() -> set[str]:
    """Every target-specific option (dest names) of the table."""
    return {o for f in FORMATS for o in f.options}
