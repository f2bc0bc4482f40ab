"""PyTorch → ONNX for PKDN (fp32 and fp16), the base of every other target.

``torch.onnx.export(..., dynamo=False)`` (the TorchScript exporter: deterministic node names
that keep the module path, pixel-shuffle as ``DepthToSpace``, pixel-unshuffle as
``Reshape``/``Transpose``, opset 17 by default), constant folding, input ``lr`` (N,3,h,w) float32 RGB in
[0,1], output ``sr`` (N,3,s·h,s·w). ``batch=None`` makes the batch axis dynamic. The result is
checked with ``onnx.checker`` (full check, with shape inference).
"""

from __future__ import annotations

import contextlib
import io
import json
import warnings
from pathlib import Path
from typing import Any

import onnx
import torch
from torch import nn

from pkdn_edge.errors import PKDNError

from .qdq import toposort

INPUT_NAME = "lr"
OUTPUT_NAME = "sr"
DEFAULT_OPSET = 17


@contextlib.contextmanager
def quiet_export():
    """Silence the TorchScript exporter's tracer warnings and stdout chatter."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with contextlib.redirect_stdout(io.StringIO()):
            yield


def export_onnx(model: nn.Module, path: str | Path, lr_size: tuple[int, int], batch: int | None = 1,
                opset: int = DEFAULT_OPSET, metadata: dict[str, Any] | None = None) -> Path:
    """Export ``model`` (eval mode, fp32) to ``path``.

    Args:
        model: a PKDN student (or any module mapping (N,3,h,w) → (N,3,s·h,s·w)).
        lr_size: (h, w) of the LR input.
        batch: fixed batch size, or None for a dynamic batch axis named ``batch``.
        opset: ONNX opset (≥ 13: per-channel Q/DQ needs it; 17 default).
        metadata: string-able key/values stored in the model's ``metadata_props``.
    """
    if opset < 13:
        raise PKDNError(f"opset {opset} is too old: use 13 or newer")
    path = Path(path)
    example = torch.rand(batch or 1, 3, *lr_size)
    dynamic = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}} if batch is None else None
    model = model.eval()
    with torch.no_grad(), quiet_export():
        torch.onnx.export(model, (example,), str(path), opset_version=opset, dynamo=False,
                          do_constant_folding=True, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          dynamic_axes=dynamic)
    proto = onnx.load(str(path))
    if metadata:
        set_metadata(proto, metadata)
        onnx.save(proto, str(path))
    check_onnx(path)
    return path


def set_metadata(proto: onnx.ModelProto, metadata: dict[str, Any]) -> None:
    """Store ``metadata`` in ``proto.metadata_props`` (non-strings as JSON)."""
    del proto.metadata_props[:]
    for k, v in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = str(k), v if isinstance(v, str) else json.dumps(v)
    proto.producer_name = "pkdn-export"


def check_onnx(path: str | Path) -> None:
    """``onnx.checker`` with full shape inference; one clear error if the model is invalid."""
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except onnx.checker.ValidationError as exc:
        raise PKDNError(f"exported ONNX {path} is invalid: {str(exc).splitlines()[0]}") from None


def to_fp16(src: str | Path, dst: str | Path) -> Path:
    """fp16 copy of an fp32 ONNX: weights and compute in fp16, input/output kept float32.

    This is what strongly typed TensorRT (11.x, or 10.x with ``--stronglyTyped``) needs for fp16,
    and what ONNX Runtime's CUDA provider runs fast. Resize keeps fp32 scales (the converter
    leaves shape-like inputs alone).
    """
    from onnxruntime.transformers.float16 import convert_float_to_float16

    proto = onnx.load(str(src))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        half = convert_float_to_float16(proto, keep_io_types=True, disable_shape_infer=False)
    onnx.save(toposort(half), str(dst))
    check_onnx(dst)
    return Path(dst)


def export(ctx) -> "TargetResult":
    """``--target onnx``: ``model.onnx`` in fp32, fp16 (fp16 weights/compute, float32 I/O) or int8
    (symmetric INT8 Q/DQ, the same graph the TensorRT target ships; runs in ONNX Runtime)."""
    from .context import TargetResult

    dst = ctx.workdir / "model.onnx"
    extras: dict = {"opset": ctx.opset}
    if ctx.precision == "fp32":
        export_onnx(ctx.model, dst, ctx.lr_size, ctx.batch, ctx.opset, ctx.onnx_metadata())
    elif ctx.precision == "fp16":
        tmp = export_onnx(ctx.model, ctx.scratch / "fp32.onnx", ctx.lr_size, ctx.batch, ctx.opset, ctx.onnx_metadata())
        to_fp16(tmp, dst)
    else:
        from .tensorrt_export import export_qdq_onnx

        extras.update(export_qdq_onnx(ctx, dst))
    return TargetResult("model.onnx", "onnxruntime", extras)
