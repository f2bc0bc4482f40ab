"""``--target openvino``: OpenVINO IR (``model.xml`` + ``model.bin``).

The IR is converted from the exported fp32 ONNX (:func:`..openvino_io.ir_from_onnx`), so node and
weight names are the ONNX ones; the bicubic skip path is converted as two MatMuls
(:func:`..onnx_io.matmul_skip_path`: OpenVINO's CPU ``Interpolate`` (cubic) is slow; the ``edges``
ignored scope keeps the MatMuls in float). fp16: ``ov.save_model(compress_to_fp16=True)`` (fp16
weights; the CPU plugin decompresses them and computes in the inference precision hint, f32 by
default in :mod:`pkdn_edge.engines.openvino`). int8: one call, :func:`..int8.strategy.openvino_ir`,
returns the quantized IR (NNCF post-training quantization of the OpenVINO model, with accuracy
control or the ``--ignore auto`` search when asked; or the Q/DQ ONNX of a ready INT8 PyTorch model,
``ctx.int8_model``, e.g. after QAT); it runs with OpenVINO's own int8 kernels.
"""

from __future__ import annotations

from typing import Any

from ..context import ExportContext, TargetResult
from ..int8.strategy import openvino_ir
from ..onnx_io import export_onnx
from ..openvino_io import import_openvino, ir_from_onnx


def export(ctx: ExportContext) -> TargetResult:
    """Write ``model.xml``/``model.bin`` in ``ctx.precision``."""
    ov = import_openvino()
    extras: dict[str, Any] = {"converted_from": "onnx", "inference_precision_hint": "f32"}
    if ctx.precision == "int8":
        model = openvino_ir(ctx, extras)
    else:
        onnx_path = export_onnx(ctx.model, ctx.scratch / "fp32.onnx", ctx.lr_size, ctx.batch, ctx.opset,
                                ctx.onnx_metadata())
        model = ir_from_onnx(ov, onnx_path, ctx.lr_size, ctx.scale, extras)
    for k, v in ctx.onnx_metadata().items():
        model.set_rt_info(str(v), ["pkdn", k])
    ov.save_model(model, str(ctx.workdir / "model.xml"), compress_to_fp16=ctx.precision == "fp16")
    return TargetResult("model.xml", "openvino", extras)
