"""PyTorch → ONNX for PKDN (fp32 and fp16): the ONNX helpers every target builds on (no target here;
``--target onnx`` is :mod:`.targets.onnx`).

``torch.onnx.export(..., dynamo=False)`` (the TorchScript exporter: deterministic node names
that keep the module path, pixel-shuffle as ``DepthToSpace``, pixel-unshuffle as
``Reshape``/``Transpose``, opset 17 by default), constant folding, input ``lr`` (N,3,h,w) float32 RGB in
[0,1], output ``sr`` (N,3,s·h,s·w). ``batch=None`` makes the batch axis dynamic. The result is
checked with ``onnx.checker`` (full check, with shape inference). The ``onnx`` target's fp32/fp16
models compute the bicubic skip path with two MatMuls instead of a cubic ``Resize``
(:func:`resize_to_matmul`: same numbers, much faster in ONNX Runtime).
"""

from __future__ import annotations

import contextlib
import io
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn

from pkdn_edge.errors import PKDNError

from .int8.qdq_graph import toposort

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


def store_exact_fp16(proto: onnx.ModelProto, min_elements: int = 64) -> int:
    """Store every float32 initializer whose values are exactly representable in fp16 as an fp16
    initializer plus a ``Cast`` to float32, in place: the model computes the same fp32 numbers
    (backends fold the casts when they load it) from half the bytes. The shipped checkpoints hold
    fp16 weights, so all their weights qualify; anything else (fp32-trained weights, the bicubic
    matrices) stays float32. Initializers under ``min_elements`` are left alone. Returns the
    number of initializers converted."""
    g = proto.graph
    casts, converted = [], 0
    for init in g.initializer:
        if init.data_type != onnx.TensorProto.FLOAT or int(np.prod(init.dims)) < min_elements:
            continue
        arr = onnx.numpy_helper.to_array(init)
        half = arr.astype(np.float16)
        if not np.array_equal(half.astype(np.float32), arr):
            continue
        name = init.name
        init.CopyFrom(onnx.numpy_helper.from_array(half, f"{name}/fp16"))
        casts.append(onnx.helper.make_node("Cast", [f"{name}/fp16"], [name], name=f"{name}/to_fp32",
                                           to=onnx.TensorProto.FLOAT))
        converted += 1
    for k, node in enumerate(casts):
        g.node.insert(k, node)
    return converted


def bicubic_matrix(n: int, scale: int) -> np.ndarray:
    """(n·s, n) float32 matrix ``M`` with ``M @ v`` = PyTorch's bicubic ×s upsampling of a 1-D signal
    ``v`` (``align_corners=False``, a = −0.75, clamped borders): the response to each unit impulse."""
    eye = torch.eye(n).reshape(n, 1, n, 1)
    up = torch.nn.functional.interpolate(eye, size=(n * scale, 1), mode="bicubic", align_corners=False)
    return np.ascontiguousarray(up.reshape(n, n * scale).T.numpy())


def resize_to_matmul(proto: onnx.ModelProto, lr_size: tuple[int, int], scale: int) -> int:
    """Replace the cubic ``Resize`` of the graph input (PKDN's bicubic skip path) by two ``MatMul``s
    with constant interpolation matrices: ``y = R @ x @ Cᵀ`` (separable bicubic, exact up to float
    rounding, ≤ 1e-6). ONNX Runtime's cubic Resize is scalar code, the MatMuls are not (timings: docs/results.md,
    "Numbers moved out of docstrings (issue 32)"). Returns the
    number of replaced nodes (0 or 1); unused inputs of the removed node are dropped."""
    g = proto.graph
    inp = g.input[0].name
    h, w = lr_size
    for i, node in enumerate(g.node):
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type != "Resize" or node.input[0] != inp or attrs.get("mode") != b"cubic":
            continue
        if attrs.get("coordinate_transformation_mode", b"half_pixel") not in (b"half_pixel", b"pytorch_half_pixel") \
                or abs(attrs.get("cubic_coeff_a", -0.75) + 0.75) > 1e-6 or attrs.get("exclude_outside", 0):
            return 0
        rows, cols_t = f"{node.name}/bicubic_rows", f"{node.name}/bicubic_cols_t"
        g.initializer.extend([onnx.numpy_helper.from_array(bicubic_matrix(h, scale), rows),
                              onnx.numpy_helper.from_array(np.ascontiguousarray(bicubic_matrix(w, scale).T), cols_t)])
        mid = f"{node.output[0]}/cols"
        matmuls = [onnx.helper.make_node("MatMul", [inp, cols_t], [mid], name=f"{node.name}/matmul_cols"),
                   onnx.helper.make_node("MatMul", [rows, mid], [node.output[0]], name=f"{node.name}/matmul_rows")]
        dropped = set(node.input[1:]) - {""}
        del g.node[i]
        for k, m in enumerate(matmuls):
            g.node.insert(i + k, m)
        used = {x for n in g.node for x in n.input}
        for name in dropped - used:
            for j in reversed(range(len(g.initializer))):
                if g.initializer[j].name == name:
                    del g.initializer[j]
            for j in reversed(range(len(g.node))):
                if g.node[j].op_type == "Constant" and name in g.node[j].output:
                    del g.node[j]
        return 1
    return 0


def matmul_skip_path(path: Path, lr_size: tuple[int, int], scale: int, extras: dict) -> Path:
    """Rewrite the ONNX file at ``path`` in place with :func:`resize_to_matmul` (the ``onnx`` and
    ``openvino`` targets); when it applied, record ``extras["bicubic_skip"] = "matmul"``."""
    proto = onnx.load(str(path))
    if resize_to_matmul(proto, lr_size, scale):
        extras["bicubic_skip"] = "matmul"
        onnx.save(proto, str(path))
        check_onnx(path)
    return path
