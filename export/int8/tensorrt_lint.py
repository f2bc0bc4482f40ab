"""Lint a Q/DQ ONNX graph against TensorRT's explicit-quantization rules (every INT8 Q/DQ ONNX export runs it).

TensorRT (8.x–11.x) builds INT8 layers only from Q/DQ graphs of a specific shape; anything else
either fails to parse, silently runs in float, or (worst) computes something else. Rules checked:

===========  ===================================================================================
rule         what TensorRT needs
===========  ===================================================================================
int8         Q/DQ are signed INT8 (a missing zero point means UINT8 in ONNX: not accepted)
zero-point   every zero point is 0 (symmetric quantization only)
scale        scales are constant, finite and > 0
per-tensor   activation quantizers have one scale (per-channel only for weights)
weights      a Conv/ConvTranspose weight DQ is per output channel: ``axis`` 0 (Conv) or 1
             (ConvTranspose) with one scale per output channel
pair         a quantized Conv has a DQ on its data input *and* its weight input
dangling     a Q output feeds only DQ nodes (no Q → other op, no Q as graph output)
match        a Q and the DQ it feeds use the same scale and zero point
custom-op    no non-standard quantization ops (e.g. OpenVINO ``FakeQuantize``)
===========  ===================================================================================

:func:`lint` returns a list of :class:`Violation` (empty = clean); :func:`lint_file` loads a path.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from .qdq_graph import Graph, attr, qparams

CONV_OPS = {"Conv": 0, "ConvTranspose": 1}


@dataclass(frozen=True)
class Violation:
    """One broken rule at one node."""

    rule: str
    node: str
    message: str

    def __str__(self) -> str:
        return f"[{self.rule}] {self.node}: {self.message}"


def _name(n: onnx.NodeProto) -> str:
    return n.name or f"{n.op_type}({n.output[0]})"


def _check_params(g: Graph, n: onnx.NodeProto, out: list[Violation]) -> None:
    scale, zp, _ = qparams(g, n)
    name = _name(n)
    if scale is None:
        out.append(Violation("scale", name, "scale is not a constant"))
    elif not np.all(np.isfinite(scale)) or np.any(scale <= 0):
        out.append(Violation("scale", name, f"scales must be finite and > 0 (min {float(np.min(scale)):.3g})"))
    has_zp_input = len(n.input) > 2 and bool(n.input[2])
    if n.op_type == "QuantizeLinear" and not has_zp_input:
        out.append(Violation("int8", name, "no zero point: ONNX then quantizes to UINT8; give an INT8 zero point of 0"))
        return
    if has_zp_input and zp is None:
        out.append(Violation("zero-point", name, "zero point is not a constant"))
        return
    if zp is not None:
        if np.dtype(zp.dtype) != np.int8:
            out.append(Violation("int8", name, f"zero point is {np.dtype(zp.dtype).name}; TensorRT needs INT8"))
        if np.any(zp != 0):
            out.append(Violation("zero-point", name, f"zero point {int(np.max(np.abs(zp.astype(np.int32))))} ≠ 0; "
                                                     f"TensorRT quantization is symmetric"))
    elif n.op_type == "DequantizeLinear":
        x = g.const(n.input[0])
        if x is not None and np.dtype(x.dtype) != np.int8:
            out.append(Violation("int8", name, f"dequantizes a {np.dtype(x.dtype).name} constant; TensorRT needs INT8"))


def lint(model: onnx.ModelProto) -> list[Violation]:
    """All TensorRT explicit-quantization violations of ``model`` (empty list = clean)."""
    g = Graph(model)
    out: list[Violation] = []
    for n in g.g.node:
        name = _name(n)
        if n.op_type == "FakeQuantize" or (n.domain and "quant" in n.op_type.lower()):
            out.append(Violation("custom-op", name,
                                 f"{n.domain or 'ai.onnx'}::{n.op_type} is not an ONNX op TensorRT parses"))
        if n.op_type == "QuantizeLinear":
            _check_params(g, n, out)
            if g.is_const(n.input[0]):
                pass  # weight Q: checked through its DQ
            else:
                scale, _, _ = qparams(g, n)
                if scale is not None and scale.size > 1:
                    out.append(Violation("per-tensor", name, f"activation quantized per channel ({scale.size} scales)"))
            cons = g.consumers[n.output[0]]
            if n.output[0] in g.outputs:
                out.append(Violation("dangling", name, "Q output is a graph output"))
            bad = [c for c in cons if c.op_type != "DequantizeLinear"]
            if bad or not cons:
                what = ", ".join(c.op_type for c in bad) or "nothing"
                out.append(Violation("dangling", name, f"Q output feeds {what} instead of DequantizeLinear"))
            s_q, z_q, _ = qparams(g, n)
            for c in cons:
                if c.op_type == "DequantizeLinear":
                    s_d, z_d, _ = qparams(g, c)
                    same_s = (s_q is not None and s_d is not None and s_q.shape == s_d.shape
                              and np.allclose(s_q, s_d, rtol=1e-6))
                    same_z = (z_q is None and z_d is None) or (z_q is not None and z_d is not None
                                                               and np.array_equal(z_q, z_d))
                    if not (same_s and same_z):
                        out.append(Violation("match", _name(c), f"scale/zero point differ from its Q {name}"))
        elif n.op_type == "DequantizeLinear":
            _check_params(g, n, out)
            src = g.producer.get(n.input[0])
            if not g.is_const(n.input[0]) and (src is None or src.op_type != "QuantizeLinear"):
                out.append(Violation("pair", name, f"DQ input comes from {src.op_type if src else 'a graph input'}, "
                                                   f"not from QuantizeLinear"))
        elif n.op_type in CONV_OPS:
            _check_conv(g, n, out)
    return out


def _dq_of(g: Graph, tensor: str) -> onnx.NodeProto | None:
    p = g.producer.get(tensor)
    return p if p is not None and p.op_type == "DequantizeLinear" else None


def _weight_shape(g: Graph, dq: onnx.NodeProto) -> tuple[int, ...] | None:
    w = g.const(dq.input[0])
    if w is not None:
        return w.shape
    q = g.producer.get(dq.input[0])
    if q is not None and q.op_type == "QuantizeLinear":
        w = g.const(q.input[0])
        return None if w is None else w.shape
    return None


def _check_conv(g: Graph, n: onnx.NodeProto, out: list[Violation]) -> None:
    name = _name(n)
    x_dq, w_dq = _dq_of(g, n.input[0]), _dq_of(g, n.input[1])
    if w_dq is None and x_dq is None:
        return  # a float conv: fine (runs in fp16/fp32)
    if w_dq is None:
        out.append(Violation("pair", name, "data input is dequantized but the weight is float: quantize the weight "
                                           "per output channel too"))
        return
    if x_dq is None:
        out.append(Violation("pair", name, "weight is quantized but the data input has no Q/DQ pair"))
    axis_want = CONV_OPS[n.op_type]
    scale, _, axis = qparams(g, w_dq)
    shape = _weight_shape(g, w_dq)
    if scale is None or shape is None:
        out.append(Violation("weights", name, "weight or weight scale is not a constant"))
        return
    cout = shape[0] if axis_want == 0 else shape[1] * int(attr(n, "group", 1))
    if scale.size == 1 and (cout != 1 or scale.ndim == 0):
        out.append(Violation("weights", name, f"weight scale is per tensor; expected one per output channel ({cout})"))
    elif scale.size != cout or (cout > 1 and axis % len(shape) != axis_want):
        out.append(Violation("weights", name, f"weight scales along axis {axis} ({scale.size}); expected axis "
                                              f"{axis_want} with {cout} output channels"))


def lint_file(path: str | Path) -> list[Violation]:
    """:func:`lint` on an ONNX file."""
    return lint(onnx.load(str(path)))


def quantized_convs(model: onnx.ModelProto) -> tuple[int, int]:
    """(quantized, total) Conv count: a conv is quantized when its weight comes through a DQ."""
    g = Graph(model)
    convs = [n for n in g.g.node if n.op_type in CONV_OPS]
    return sum(_dq_of(g, n.input[1]) is not None for n in convs), len(convs)
