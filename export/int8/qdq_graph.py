"""ONNX graph utilities for Q/DQ models (numpy + onnx only): the TensorRT rewrite, toposort, summaries.

Not the builder: :mod:`.qdq_onnx` makes the Q/DQ ONNX file from a PyTorch model and calls
:func:`make_tensorrt_qdq` here; :mod:`.tensorrt_lint` reads graphs through :class:`Graph`.

:func:`make_tensorrt_qdq` turns the Q/DQ ONNX that NNCF's stripped PyTorch model exports into the
form TensorRT's explicit quantization accepts:

* weight ``Constant → QuantizeLinear → DequantizeLinear`` chains become an **int8 initializer →
  DequantizeLinear** (per output channel, ``axis=0``; a per-tensor weight scale is broadcast to
  per-channel, which is exact);
* activation Q/DQ pairs with a **UINT8** type or a **non-zero zero point** (NNCF's asymmetric
  ``MIXED`` preset, or unsigned quantizers after ReLU) become **INT8 with zero point 0** and a
  scale covering the same real range: ``[lo, hi] = [(qmin-zp)·s, (qmax-zp)·s]`` →
  ``s' = max(|lo|, |hi|) / 127``. An unsigned post-ReLU quantizer loses one bit this way
  (TensorRT has no UINT8 activations);
* a ``Concat`` whose inputs NNCF quantized with one shared scale gets an (exact) Q/DQ pair on its
  output when a Conv consumes it, so that Conv runs in INT8 (:func:`requantize_concats`);
* ``Identity`` and ``Constant`` nodes feeding Q/DQ parameters are folded into initializers.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import onnx
from onnx import helper, numpy_helper

QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
RANGES = {np.dtype(np.int8): (-128, 127), np.dtype(np.uint8): (0, 255)}


class Graph:
    """Index of an ONNX graph: producers, consumers and constant values (initializers,
    ``Constant`` nodes, ``Identity`` of constants)."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = model
        self.g = model.graph
        self.refresh()

    def refresh(self) -> None:
        self.producer = {o: n for n in self.g.node for o in n.output}
        self.consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
        for n in self.g.node:
            for i in n.input:
                self.consumers[i].append(n)
        self.inits = {i.name: i for i in self.g.initializer}
        self.outputs = {o.name for o in self.g.output}

    def const(self, name: str) -> np.ndarray | None:
        """Value of a constant tensor (None if it is computed at run time)."""
        if not name:
            return None
        if name in self.inits:
            return numpy_helper.to_array(self.inits[name])
        n = self.producer.get(name)
        if n is None:
            return None
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    return numpy_helper.to_array(a.t)
            return None
        if n.op_type == "Identity":
            return self.const(n.input[0])
        return None

    def is_const(self, name: str) -> bool:
        return self.const(name) is not None


def attr(node: onnx.NodeProto, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def set_attr(node: onnx.NodeProto, name: str, value) -> None:
    for a in list(node.attribute):
        if a.name == name:
            node.attribute.remove(a)
    node.attribute.append(helper.make_attribute(name, value))


def qparams(g: Graph, node: onnx.NodeProto) -> tuple[np.ndarray | None, np.ndarray | None, int]:
    """(scale, zero_point, axis) of a Q or DQ node; zero_point None when the input is absent."""
    scale = g.const(node.input[1]) if len(node.input) > 1 else None
    zp = g.const(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    return scale, zp, int(attr(node, "axis", 1))


def _add_init(g: Graph, name: str, value: np.ndarray) -> str:
    base, k = name, 0
    while name in g.inits or name in g.producer:
        k += 1
        name = f"{base}_{k}"
    t = numpy_helper.from_array(value, name)
    g.g.initializer.append(t)
    g.inits[name] = t
    return name


def quantize_array(w: np.ndarray, scale: np.ndarray, zp: np.ndarray, axis: int, dtype: np.dtype) -> np.ndarray:
    """ONNX ``QuantizeLinear`` on a constant: ``clip(rint(w/scale) + zp)`` (round half to even)."""
    shape = [1] * w.ndim
    if scale.size > 1:
        shape[axis] = -1
    s = scale.reshape(shape).astype(np.float32)
    z = zp.reshape(shape).astype(np.int32) if zp.size > 1 else np.int32(zp.reshape(-1)[0])
    lo, hi = RANGES[np.dtype(dtype)]
    return np.clip(np.rint(w / s) + z, lo, hi).astype(dtype)


def fold_weight_quantizers(g: Graph) -> int:
    """``float const → Q → DQ`` ⇒ ``int8 const → DQ`` (per-channel, axis 0 for Conv weights).
    Returns the number of folded weight quantizers."""
    folded = 0
    for q in [n for n in g.g.node if n.op_type == "QuantizeLinear"]:
        w = g.const(q.input[0])
        if w is None:
            continue
        scale, zp, axis = qparams(g, q)
        zp = np.zeros((), np.uint8) if zp is None else zp
        dtype = np.dtype(zp.dtype)
        if dtype == np.uint8 or np.any(zp != 0):  # asymmetric weights: requantize symmetric int8
            lo, hi = RANGES[dtype]
            zpf = zp.astype(np.float32)
            amax = np.maximum(np.abs((lo - zpf) * scale), np.abs((hi - zpf) * scale))
            scale, zp, dtype = (amax / 127.0).astype(np.float32), np.zeros_like(zp, np.int8), np.dtype(np.int8)
        if scale.size == 1 and w.ndim >= 2:  # per-tensor weight scale → per output channel (exact)
            scale = np.full((w.shape[0],), float(scale.reshape(-1)[0]), np.float32)
            zp = np.zeros((w.shape[0],), np.int8)
            axis = 0
        qw = quantize_array(w, scale, zp, axis, dtype)
        base = q.input[0].replace("::", "_")
        w_name = _add_init(g, f"{base}_int8", qw)
        s_name = _add_init(g, f"{base}_scale", scale.astype(np.float32))
        z_name = _add_init(g, f"{base}_zero_point", zp.astype(np.int8))
        for dq in list(g.consumers[q.output[0]]):
            if dq.op_type != "DequantizeLinear":
                continue
            dq.input[0], dq.input[1] = w_name, s_name
            if len(dq.input) > 2:
                dq.input[2] = z_name
            else:
                dq.input.append(z_name)
            if scale.ndim == 1:
                set_attr(dq, "axis", axis)
        g.g.node.remove(q)
        folded += 1
        g.refresh()
    return folded


def per_channel_weight_scales(g: Graph) -> int:
    """Conv weight ``int8 const → DQ`` with one (per-tensor) scale ⇒ one scale per output channel
    (the same value repeated: exact), ``axis`` 0. Returns the number of DQ nodes changed."""
    changed = 0
    for conv in [n for n in g.g.node if n.op_type == "Conv"]:
        dq = g.producer.get(conv.input[1])
        if dq is None or dq.op_type != "DequantizeLinear":
            continue
        w = g.const(dq.input[0])
        scale, zp, _ = qparams(g, dq)
        if w is None or scale is None or scale.size != 1 or w.ndim < 2:
            continue
        if zp is not None and np.any(zp != 0):
            continue  # asymmetric int8 weights: left for the lint to report
        cout = w.shape[0]
        base = dq.input[0].replace("::", "_")
        s_name = _add_init(g, f"{base}_scale_oc", np.full((cout,), float(scale.reshape(-1)[0]), np.float32))
        z_name = _add_init(g, f"{base}_zero_point_oc", np.zeros((cout,), np.int8))
        dq.input[1] = s_name
        if len(dq.input) > 2:
            dq.input[2] = z_name
        else:
            dq.input.append(z_name)
        set_attr(dq, "axis", 0)
        changed += 1
    g.refresh()
    return changed


def symmetrize_activations(g: Graph) -> int:
    """Activation Q/DQ pairs: UINT8 or non-zero zero point ⇒ INT8, zero point 0, same real range.
    Returns the number of rewritten quantizers."""
    changed = 0
    for q in [n for n in g.g.node if n.op_type == "QuantizeLinear"]:
        if g.is_const(q.input[0]):
            continue
        scale, zp, _ = qparams(g, q)
        if scale is None:
            continue
        zp = np.zeros((), np.uint8) if zp is None else zp
        dtype = np.dtype(zp.dtype)
        if dtype == np.int8 and not np.any(zp != 0) and len(q.input) > 2:
            continue
        lo, hi = RANGES[dtype]
        zpf = zp.astype(np.float32)
        amax = np.maximum(np.abs((lo - zpf) * scale), np.abs((hi - zpf) * scale)).astype(np.float32)
        new_scale = (amax / 127.0).astype(np.float32).reshape(scale.shape)
        s_name = _add_init(g, f"{q.name or q.output[0]}_sym_scale".lstrip("/").replace("/", "_"), new_scale)
        z_name = _add_init(g, f"{q.name or q.output[0]}_sym_zp".lstrip("/").replace("/", "_"),
                           np.zeros(zp.shape, np.int8))
        for node in [q] + [c for c in g.consumers[q.output[0]] if c.op_type == "DequantizeLinear"]:
            node.input[1] = s_name
            if len(node.input) > 2:
                node.input[2] = z_name
            else:
                node.input.append(z_name)
        changed += 1
    g.refresh()
    return changed


def fold_constant_params(g: Graph) -> None:
    """Scales/zero points that come from ``Constant``/``Identity`` nodes → initializers."""
    for n in g.g.node:
        if n.op_type not in QDQ_OPS:
            continue
        for k in range(1, len(n.input)):
            name = n.input[k]
            if name and name not in g.inits:
                v = g.const(name)
                if v is not None:
                    n.input[k] = _add_init(g, name.replace("::", "_") + "_c", v)
    g.refresh()


def requantize_concats(g: Graph) -> int:
    """``Concat`` of dequantized inputs that share one scale/zero point, feeding a Conv ⇒ insert a
    Q/DQ pair with that scale between the Concat and the Conv.

    NNCF quantizes a Concat's inputs with unified scales instead of its output, so the Conv after
    it has no DQ on its data input and TensorRT would run it in float. The values are already on
    that grid, so the inserted pair is exact. Returns the number of pairs inserted."""
    inserted = 0
    for cat in [n for n in g.g.node if n.op_type == "Concat"]:
        users = [c for c in g.consumers[cat.output[0]] if c.op_type in ("Conv", "ConvTranspose")]
        if not users:
            continue
        dqs = [g.producer.get(i) for i in cat.input]
        if not dqs or any(d is None or d.op_type != "DequantizeLinear" for d in dqs):
            continue
        params = [qparams(g, d) for d in dqs]
        s0, z0, _ = params[0]
        if s0 is None or s0.size != 1 or any(
                s is None or s.shape != s0.shape or not np.array_equal(s, s0)
                or (z is None) != (z0 is None) or (z is not None and not np.array_equal(z, z0)) for s, z, _ in params):
            continue
        q_out, dq_out = cat.output[0] + "_requant_q", cat.output[0] + "_requant"
        extra = [dqs[0].input[2]] if len(dqs[0].input) > 2 and dqs[0].input[2] else []
        q = helper.make_node("QuantizeLinear", [cat.output[0], dqs[0].input[1], *extra], [q_out],
                             name=cat.name + "/requant_Q")
        dq = helper.make_node("DequantizeLinear", [q_out, dqs[0].input[1], *extra], [dq_out],
                              name=cat.name + "/requant_DQ")
        idx = list(g.g.node).index(cat)
        g.g.node.insert(idx + 1, dq)
        g.g.node.insert(idx + 1, q)
        for c in users:
            for k, name in enumerate(c.input):
                if name == cat.output[0]:
                    c.input[k] = dq_out
        inserted += 1
        g.refresh()
    return inserted


def remove_dead(g: Graph) -> None:
    """Drop nodes whose outputs nobody uses and initializers nobody reads."""
    while True:
        g.refresh()
        dead = [n for n in g.g.node if all(not g.consumers[o] and o not in g.outputs for o in n.output)]
        if not dead:
            break
        for n in dead:
            g.g.node.remove(n)
    used = {i for n in g.g.node for i in n.input}
    for init in [i for i in g.g.initializer if i.name not in used]:
        g.g.initializer.remove(init)
    g.refresh()


def toposort(model: onnx.ModelProto) -> onnx.ModelProto:
    """Reorder ``model.graph.node`` topologically (in place; stable for already-sorted graphs)."""
    g = model.graph
    known = {i.name for i in g.input} | {i.name for i in g.initializer} | {""}
    nodes, order = list(g.node), []
    pending = nodes
    while pending:
        rest = []
        for n in pending:
            if all(i in known for i in n.input):
                order.append(n)
                known.update(n.output)
            else:
                rest.append(n)
        if len(rest) == len(pending):
            raise ValueError(f"graph has a cycle or undefined inputs at {rest[0].name or rest[0].op_type}")
        pending = rest
    del g.node[:]
    g.node.extend(order)
    return model


def make_tensorrt_qdq(model: onnx.ModelProto) -> tuple[onnx.ModelProto, dict[str, int]]:
    """Rewrite a Q/DQ model in place into TensorRT's explicit-quantization form (module docstring).
    Returns the model and counts of what changed."""
    g = Graph(model)
    fold_constant_params(g)
    weights = fold_weight_quantizers(g)
    per_channel = per_channel_weight_scales(g)
    acts = symmetrize_activations(g)
    concats = requantize_concats(g)
    remove_dead(g)
    qdq = sum(n.op_type in QDQ_OPS for n in g.g.node)
    return model, {"weights_folded": weights, "weights_per_channel": per_channel, "activations_symmetrized": acts,
                   "concat_requantized": concats, "qdq_nodes": qdq}


def qdq_summary(model: onnx.ModelProto) -> dict[str, int]:
    """Counts of Q/DQ nodes by zero-point type, for reports: ``{"Q int8": 40, "DQ int8": 100, ...}``."""
    g = Graph(model)
    out: dict[str, int] = defaultdict(int)
    for n in g.g.node:
        if n.op_type in QDQ_OPS:
            _, zp, _ = qparams(g, n)
            kind = "Q" if n.op_type == "QuantizeLinear" else "DQ"
            dt = np.dtype(zp.dtype).name if zp is not None else (
                "uint8" if kind == "Q" else np.dtype(helper.tensor_dtype_to_np_dtype(
                    g.inits[n.input[0]].data_type)).name if n.input[0] in g.inits else "?")
            out[f"{kind} {dt}"] += 1
    return dict(out)

