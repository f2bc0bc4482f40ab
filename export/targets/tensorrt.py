"""``--target tensorrt``: a TensorRT-ready ONNX, the exact build command per TensorRT generation, and
(when TensorRT and a CUDA GPU are present) the engine itself, built and verified here.

Engines are tied to the GPU and TensorRT version that build them: on a workstation without
TensorRT the artifact carries the ONNX + ``BUILD.md`` and the engine is built on the Jetson.

============  ======================================  ==========================================
precision     TensorRT 8.x / 10.x (weakly typed)      TensorRT 11.x (strongly typed only)
============  ======================================  ==========================================
fp32          ``model.onnx``                          ``model.onnx``
fp16          ``model.onnx`` + ``--fp16``             ``model_fp16.onnx`` (fp16 weights and
                                                      compute, float32 I/O; no flag exists)
int8          ``model.onnx`` (Q/DQ) + ``--int8        ``model.onnx`` (Q/DQ; float layers stay
              --fp16``                                fp32 unless the ONNX is autocast to fp16)
============  ======================================  ==========================================

INT8 uses *explicit* quantization: the Q/DQ ONNX of :func:`..int8.strategy.qdq_onnx` (shared with
the ``onnx`` target). The engine is built here when a builder is available (``--builder``,
:mod:`.tensorrt_builders`:
torch-tensorrt, the TensorRT Python API or trtexec); otherwise on the device from BUILD.md.
"""

from __future__ import annotations

from typing import Any

from ..context import ExportContext, TargetResult
from ..int8.strategy import qdq_onnx
from ..onnx_io import INPUT_NAME, export_onnx, to_fp16
from .tensorrt_builders import choose

TRTEXEC = "trtexec"  # on Jetson: /usr/src/tensorrt/bin/trtexec
DEFAULT_MAX_BATCH = 16
DEFAULT_OPT_BATCH = 4
CHECK_VERSION = '`dpkg -l | grep nvinfer` or `python3 -c "import tensorrt; print(tensorrt.__version__)"`'


# --------------------------------------------------------------------------------------------------
# build commands


def _shapes(ctx_batch: int | None, lr_size: tuple[int, int]) -> str:
    if ctx_batch is not None:
        return ""
    h, w = lr_size
    return (f" --minShapes={INPUT_NAME}:1x3x{h}x{w} --optShapes={INPUT_NAME}:{DEFAULT_OPT_BATCH}x3x{h}x{w}"
            f" --maxShapes={INPUT_NAME}:{DEFAULT_MAX_BATCH}x3x{h}x{w}")


def build_commands(precision: str, batch: int | None, lr_size: tuple[int, int]) -> dict[str, str]:
    """The ``trtexec`` command per TensorRT generation (run inside the artifact folder)."""
    shapes = _shapes(batch, lr_size)
    flags_8_10 = {"fp32": "", "fp16": " --fp16", "int8": " --int8 --fp16"}[precision]
    onnx_11 = "model_fp16.onnx" if precision == "fp16" else "model.onnx"
    return {
        "8": f"{TRTEXEC} --onnx=model.onnx --saveEngine=model_trt8.plan{flags_8_10}{shapes}",
        "10": f"{TRTEXEC} --onnx=model.onnx --saveEngine=model_trt10.plan{flags_8_10}{shapes}",
        "11": f"{TRTEXEC} --onnx={onnx_11} --saveEngine=model_trt11.plan{shapes}",
    }


def build_doc(precision: str, commands: dict[str, str], scale: int) -> str:
    """``BUILD.md`` of a tensorrt artifact."""
    gen11 = {
        "fp32": "the network is strongly typed; `model.onnx` is float32 throughout.",
        "fp16": "no `--fp16` flag exists; `model_fp16.onnx` already carries fp16 weights and compute "
                "(float32 input/output), which a strongly typed build keeps.",
        "int8": "no `--int8` flag exists; the Q/DQ nodes of `model.onnx` decide the INT8 layers, the rest "
                "stays float32 (optionally run `python -m modelopt.onnx.autocast --onnx_path model.onnx "
                "--output_path model_mixed.onnx` for fp16 float layers; not verified here).",
    }[precision]
    return f"""# Building the TensorRT engine (PKDN ×{scale}, {precision})

Engines only run on the GPU model and TensorRT version that built them: build on the device.
On Jetson, `trtexec` is `/usr/src/tensorrt/bin/trtexec` (JetPack 4.6: TensorRT 8.2; JetPack 5.x: 8.5;
JetPack 6.0: 8.6; JetPack 6.1/6.2: 10.3). Check yours with {CHECK_VERSION}.

| TensorRT | command (run in this folder) |
|---|---|
| 8.x | `{commands['8']}` |
| 10.x | `{commands['10']}` |
| 11.x | `{commands['11']}` |

TensorRT 11: {gen11}

Then record the engine in `manifest.json` so `load_engine()` finds it:

    python -m pkdn_edge.engines.tensorrt register . model_trt<N>.plan

or build and register in one step with the TensorRT Python API (needs `cuda-python` or a CUDA torch):

    python -m pkdn_edge.engines.tensorrt build .
"""


def export(ctx: ExportContext) -> TargetResult:
    """Write the TensorRT-ready ONNX (+ fp16 ONNX for TensorRT 11), ``BUILD.md`` and the commands;
    the exporter then builds the engine here when a builder is available (``ctx.builder``,
    :func:`.tensorrt_builders.choose`). Every ONNX an engine may be built from is listed in
    ``extras.trt_onnx`` and verified (``TargetResult.also_verify``)."""
    builder, why = choose(ctx.builder)  # an explicit --builder that cannot run: error before any work
    extras: dict[str, Any] = {"opset": ctx.opset}
    onnx_path = ctx.workdir / "model.onnx"
    per_gen = {"8": "model.onnx", "10": "model.onnx", "11": "model.onnx"}
    model_file = "model.onnx"
    if ctx.precision == "int8":
        extras.update(qdq_onnx(ctx, onnx_path))
    else:
        export_onnx(ctx.model, onnx_path, ctx.lr_size, ctx.batch, ctx.opset, ctx.onnx_metadata())
        if ctx.precision == "fp16":
            to_fp16(onnx_path, ctx.workdir / "model_fp16.onnx")
            per_gen["11"] = model_file = "model_fp16.onnx"
    cmds = build_commands(ctx.precision, ctx.batch, ctx.lr_size)
    (ctx.workdir / "BUILD.md").write_text(build_doc(ctx.precision, cmds, ctx.scale))
    extras.update({"trt_onnx": per_gen, "build_commands": cmds,
                   "profile": None if ctx.batch else {"min": 1, "opt": DEFAULT_OPT_BATCH, "max": DEFAULT_MAX_BATCH}})
    result = TargetResult(model_file, "onnxruntime", extras)
    result.also_verify = sorted(set(per_gen.values()) - {model_file})
    if builder is not None:
        result.checks["build_engine"] = builder  # done by the exporter once the manifest exists
    else:
        result.notes.append(f"TensorRT engine not built: {why}. Build it on the device (see BUILD.md), e.g. "
                            f"`{cmds['10']}` (TensorRT 10, JetPack 6.1+), then "
                            f"`python -m pkdn_edge.engines.tensorrt register <artifact> model_trt10.plan`.")
        result.notes.append("parity was checked with ONNX Runtime on every ONNX the engine may be built from.")
    return result
