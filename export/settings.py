"""Export settings as plain dataclasses, importable without torch, NNCF or ONNX.

``pkdn-export --help`` is built from this module and :mod:`.formats` only, so a runtime-only
device install (``pip install pkdn-edge``, no ``[export]`` extra) can read the help and is told
which extra to install before anything heavy is imported.

* :class:`Int8Settings`, :data:`IGNORE_GROUPS`, :data:`PRESETS`, :func:`parse_ignore`: NNCF
  post-training quantization settings (used by :mod:`.int8.ptq`, which needs torch + nncf);
* :class:`CalibOptions`: INT8 calibration options from the CLI;
* :class:`ExportRequest`: one export, the argument of :func:`.exporter.run_export`;
* :data:`BUILDERS`: the TensorRT engine builders of ``--builder``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from pkdn_edge.errors import PKDNError

EXPORT_EXTRA = "pip install 'pkdn-edge[export]'"

IGNORE_GROUPS: dict[str, tuple[str, ...]] = {
    "edges": ("stem", "upsampler.to_rgb"),
    "shuffle": ("ups.", "downs.", "upsampler.ups.", "upsampler.refines."),
    "upsampler": ("upsampler.",),
    "gates": ("fusions.*.channel_gate.", "fusions.*.spatial_gate", "fusions.*.affine"),
}
BOUNDARY_GROUPS = {"edges"}  # groups that also keep the input resize and the output add in float
PRESETS = ("performance", "mixed")

# --builder for --target tensorrt: who turns the exported model into a TensorRT engine on this machine
BUILDERS: dict[str, str] = {
    "auto": "the first installed of torch-tensorrt, tensorrt, trtexec; none: ONNX + BUILD.md only",
    "torch-tensorrt": "torch_tensorrt.dynamo from the PyTorch student (fp32/fp16; int8: our Q/DQ ONNX through "
                      "the TensorRT that torch-tensorrt installs); with --exported-program also model_trt.ep "
                      "(ExportedProgram)",
    "tensorrt": "the TensorRT Python API on the exported ONNX (python -m pkdn_edge.engines.tensorrt build)",
    "trtexec": "NVIDIA's trtexec on the exported ONNX (the BUILD.md command of this TensorRT generation)",
    "none": "build no engine here (the ONNX + BUILD.md are the artifact; build on the device)",
}


@dataclass(frozen=True)
class Int8Settings:
    """NNCF post-training quantization settings.

    Attributes:
        preset: ``performance`` (symmetric activations) or ``mixed`` (asymmetric activations;
            TensorRT output is re-symmetrized).
        ignore: ignored-scope groups (keys of :data:`IGNORE_GROUPS`) kept in float.
        subset_size: calibration faces NNCF uses for statistics.
        fast_bias_correction: NNCF's fast bias correction (False: the slower full one).
        overflow_fix: NNCF overflow fix (``disable`` for TensorRT; ``first_layer_only`` is NNCF's
            OpenVINO default for CPUs without VNNI).
    """

    preset: str = "performance"
    ignore: tuple[str, ...] = ("edges",)
    subset_size: int = 300
    fast_bias_correction: bool = True
    overflow_fix: str = "disable"

    def label(self) -> str:
        return f"{self.preset}/ignore={'+'.join(self.ignore) or 'none'}/{'fbc' if self.fast_bias_correction else 'bc'}"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ignore"] = list(self.ignore)
        return d


def parse_ignore(spec: str) -> tuple[str, ...]:
    """``"edges,shuffle"`` → ``("edges", "shuffle")``; ``"none"``/``""`` → ``()``."""
    groups = tuple(g.strip() for g in spec.replace("+", ",").split(",") if g.strip() and g.strip() != "none")
    bad = [g for g in groups if g not in IGNORE_GROUPS]
    if bad:
        raise PKDNError(f"unknown ignored-scope group(s) {bad}; choose from {', '.join(IGNORE_GROUPS)} or none")
    return groups


@dataclass
class CalibOptions:
    """INT8 calibration options from the CLI.

    Attributes:
        folder: aligned faces (None: ``shared/faces/train``).
        size: calibration faces (``--calib-size``).
        synthetic: generated faces instead (CI/tests only).
        settings: NNCF settings; ``auto_ignore`` tries :func:`~.int8.auto_ignore.default_candidates` on
            held-out faces and keeps the one with the fewest float groups within ``max_drop`` dB.
        accuracy_control: OpenVINO path only: ``nncf.quantize_with_accuracy_control`` starting from
            ``settings``; ops are reverted to float until the mean PSNR drop on the held-out
            selection faces is at most ``max_drop`` dB.
    """

    folder: Path | None = None
    size: int = 300
    synthetic: bool = False
    settings: Int8Settings = field(default_factory=Int8Settings)
    auto_ignore: bool = False
    max_drop: float = 0.1
    select_size: int = 64
    accuracy_control: bool = False


MIN_OPSET, MAX_OPSET = 13, 20  # --opset: Q/DQ per channel needs 13; torch.onnx.export(dynamo=False) supports <= 20


@dataclass
class ExportRequest:
    """One export (what ``pkdn-export``'s flags say); :func:`.exporter.run_export` carries it out.

    Attributes:
        target: a row of :data:`.formats.FORMATS` (``torch``, ``onnx``, ``openvino``, ``tensorrt``).
        precision: ``fp32`` / ``fp16`` / ``int8``; None: the target's first (fp32).
        weights: the checkpoint (None: the shipped student for ``scale``).
        scale: 2/4/8; None: the checkpoint's (4 for the shipped one).
        window: side of the LR input (None: :func:`pkdn_edge.pretrained.serve_window`, 40 at x4, 16 at
            x8, what the webcam loop feeds; 0: the 128/s training crop); at least 128/s and a multiple of 4.
        out: artifact folder (None: ``exports/<target>_<precision>_x<scale>``).
        batch: fixed batch, or None for a dynamic batch axis.
        calib: INT8 calibration options (None: defaults).
        threads: CPU threads for export, calibration and verification.
        verify: check parity against PyTorch (``--no-verify`` turns it off).
        verify_faces / verify_synthetic: the faces of the parity check.
        opset: ONNX opset (>= 13).
        benchmark: time one batch-1 call after verification (recorded in the manifest).
        builder: ``--target tensorrt`` only: a key of :data:`BUILDERS` (``auto``: by what is installed).
        exported_program: the torch-tensorrt builder also saves ``model_trt.ep`` (``--exported-program``).
        int8_model: a ready INT8 PyTorch model (:class:`.context.QuantizedModel`, e.g. after QAT)
            to ship for ``int8`` instead of calibrating the checkpoint anew.
        log: progress printer (one line per step).
    """

    target: str
    precision: str | None = None
    weights: str | Path | None = None
    scale: int | None = None
    window: int | None = None
    out: str | Path | None = None
    batch: int | None = 1
    calib: CalibOptions | None = None
    threads: int = 2
    verify: bool = True
    verify_faces: str | Path | None = None
    verify_synthetic: bool = False
    opset: int = 17
    benchmark: bool = True
    builder: str = "auto"
    exported_program: bool = False
    int8_model: Any = None
    log: Callable[[str], None] = print

    def check(self) -> None:
        """Refuse values no target accepts (one :class:`PKDNError` line)."""
        from pkdn_edge.manifest import MAX_BATCH

        if self.batch is not None and not 1 <= self.batch <= MAX_BATCH:  # checked before anything is allocated
            raise PKDNError(f"--batch must be in [1, {MAX_BATCH}], got {self.batch} (for any batch: --dynamic)")
        if not MIN_OPSET <= self.opset <= MAX_OPSET:
            raise PKDNError(f"--opset must be in [{MIN_OPSET}, {MAX_OPSET}] (per-channel Q/DQ needs 13; torch's "
                            f"TorchScript ONNX exporter stops at {MAX_OPSET}), got {self.opset}")
        if self.threads < 1:
            raise PKDNError(f"--threads must be >= 1, got {self.threads}")
        if self.builder not in BUILDERS:
            raise PKDNError(f"unknown --builder {self.builder!r}; choose from {', '.join(BUILDERS)}")
        if self.builder not in ("auto", "none") and self.target != "tensorrt":
            raise PKDNError(f"--builder {self.builder} builds TensorRT engines: use it with --target tensorrt")
        if self.exported_program and self.builder not in ("auto", "torch-tensorrt"):
            raise PKDNError("--exported-program comes from the torch-tensorrt builder: use --builder torch-tensorrt")
        if self.calib is not None and self.calib.folder is not None and not Path(self.calib.folder).is_dir():
            raise PKDNError(f"--calib folder {self.calib.folder} does not exist")
