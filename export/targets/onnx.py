"""``--target onnx``: ``model.onnx`` in fp32, fp16 or int8, run by ONNX Runtime.

The ONNX helpers (``export_onnx``, ``to_fp16``, ``resize_to_matmul`` ...) live in
:mod:`..onnx_io`; the INT8 Q/DQ graph comes from :func:`..int8.strategy.qdq_onnx` (the same call
the ``tensorrt`` target makes).
"""

from __future__ import annotations

from typing import Any

import onnx

from ..context import ExportContext, TargetResult
from ..int8.strategy import qdq_onnx
from ..onnx_io import check_onnx, export_onnx, matmul_skip_path, store_exact_fp16, to_fp16


def export(ctx: ExportContext) -> TargetResult:
    """``model.onnx`` in fp32, fp16 (fp16 weights/compute, float32 I/O) or int8 (symmetric INT8
    Q/DQ, the same graph the TensorRT target ships; runs in ONNX Runtime). The fp32 model stores
    weights that are exact in fp16 as fp16 (:func:`..onnx_io.store_exact_fp16`: fp32 compute,
    identical numbers, half the file for the shipped fp16 checkpoints). fp32/fp16 compute the
    bicubic skip path with two MatMuls (:func:`..onnx_io.resize_to_matmul`)."""
    dst = ctx.workdir / "model.onnx"
    extras: dict[str, Any] = {"opset": ctx.opset}
    if ctx.precision == "int8":
        extras.update(qdq_onnx(ctx, dst))
        return TargetResult("model.onnx", "onnxruntime", extras)
    tmp = export_onnx(ctx.model, ctx.scratch / "fp32.onnx", ctx.lr_size, ctx.batch, ctx.opset, ctx.onnx_metadata())
    matmul_skip_path(tmp, ctx.lr_size, ctx.scale, extras)
    if ctx.precision == "fp32":
        proto = onnx.load(str(tmp))
        extras["fp16_stored_weights"] = store_exact_fp16(proto)
        onnx.save(proto, str(dst))
        check_onnx(dst)
    else:
        to_fp16(tmp, dst)
    return TargetResult("model.onnx", "onnxruntime", extras)
