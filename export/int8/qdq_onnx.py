"""The INT8 Q/DQ ONNX **builder**: an NNCF fake-quant PyTorch model → a TensorRT-shaped Q/DQ ONNX file.

(Its companion :mod:`.qdq_graph` holds the ONNX graph utilities it calls: the TensorRT rewrite,
toposort, summaries; numpy + onnx only.) Used for ``--target onnx --precision int8`` and
``--target tensorrt --precision int8`` (and the ``torch-tensorrt`` engine builder's INT8 path)
through :func:`.strategy.qdq_onnx`:

the stripped model exports ``QuantizeLinear``/``DequantizeLinear`` ONNX with the TorchScript
exporter (``dynamo=False``, :func:`export_fake_quant_onnx`), :func:`.qdq_graph.make_tensorrt_qdq`
makes it signed/symmetric with per-output-channel weights, and :mod:`.tensorrt_lint` must find no
violation (:func:`qdq_from_model`). ONNX Runtime runs the result (:func:`ort_outputs`: the parity
check; ``--ignore auto`` scores each candidate with it).

Each step logs a line with its time (:class:`Steps`: ``int8 [2/4] ...``), so a long INT8 export is
never silent; see docs/export.md ("Why INT8 takes minutes") for where the time goes.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn

from pkdn_edge.errors import PKDNError

from ..context import ExportContext
from ..onnx_io import INPUT_NAME, OUTPUT_NAME, check_onnx, quiet_export, set_metadata
from .ptq import strip_to_native
from .qdq_graph import make_tensorrt_qdq, qdq_summary
from .tensorrt_lint import lint, quantized_convs


def export_fake_quant_onnx(q: nn.Module, path: Any, lr_size: tuple[int, int], batch: int | None = 1,
                           opset: int = 17) -> Any:
    """An NNCF fake-quant model (PTQ or QAT) → ONNX with ``QuantizeLinear``/``DequantizeLinear``
    (``dynamo=False``), as NNCF made it (no TensorRT rewrite). ``batch=None``: dynamic batch axis.
    Input ``lr`` (N,3,h,w) float32; output ``sr`` (N,3,s·h,s·w). OpenVINO reads the Q/DQ pairs as
    ``FakeQuantize`` and runs the convs with int8 kernels."""
    example = torch.full((batch or 1, 3, *lr_size), 0.5)
    native = strip_to_native(q.eval(), example)
    dynamic = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}} if batch is None else None
    with torch.no_grad(), quiet_export():
        torch.onnx.export(native, (example,), str(path), opset_version=max(opset, 13), dynamo=False,
                          do_constant_folding=True, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          dynamic_axes=dynamic)
    return path


class Steps:
    """``int8 [k/n] <what> ...`` lines, each followed by its time (``... done in 12 s``)."""

    def __init__(self, log: Any, n: int) -> None:
        self.log, self.n, self.k, self.t = log, n, 0, time.perf_counter()

    def __call__(self, what: str) -> None:
        self.k += 1
        self.t = time.perf_counter()
        self.log(f"int8 [{self.k}/{self.n}] {what} ...")

    def done(self, extra: str = "") -> None:
        self.log(f"int8 [{self.k}/{self.n}] done in {time.perf_counter() - self.t:.1f} s{extra}")


def qdq_from_model(ctx: ExportContext, q: nn.Module, dst: Path, steps: Steps | None = None,
                   check: bool = True) -> dict[str, Any]:
    """NNCF fake-quant model ``q`` → TensorRT-shaped Q/DQ ONNX at ``dst``; with ``check`` linted (a
    violation is a :class:`PKDNError`). Returns rewrite facts for the manifest."""
    if steps:
        steps("exporting the fake-quant model to Q/DQ ONNX (TorchScript exporter)")
    raw = export_fake_quant_onnx(q, dst.with_suffix(".raw.onnx"), ctx.lr_size, ctx.batch, ctx.opset)
    if steps:
        steps.done()
        steps("rewriting Q/DQ for TensorRT (signed, symmetric, per-channel weights) + lint")
    proto = onnx.load(str(raw))
    raw.unlink()
    proto, counts = make_tensorrt_qdq(proto)
    set_metadata(proto, ctx.onnx_metadata())
    onnx.save(proto, str(dst))
    check_onnx(dst)
    violations = lint(proto) if check else []
    if violations:
        raise PKDNError(f"the INT8 ONNX breaks {len(violations)} TensorRT Q/DQ rule(s), first: {violations[0]}")
    nq, nconv = quantized_convs(proto)
    if steps:
        steps.done(f" ({nq}/{nconv} convs in INT8)")
    return {"rewrite": counts, "qdq": qdq_summary(proto), "quantized_convs": f"{nq}/{nconv}"}


def ort_outputs(path: Path, x: np.ndarray, threads: int) -> np.ndarray:
    """(N,3,h,w) float32 → (N,3,s·h,s·w) float32 with ONNX Runtime (CPU) on the ONNX at ``path``;
    fixed-batch models get padded chunks."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    s = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    n = s.get_inputs()[0].shape[0]
    b = n if isinstance(n, int) else 16
    outs = []
    for i in range(0, len(x), b):
        chunk = x[i : i + b]
        k = len(chunk)
        if isinstance(n, int) and k < n:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], n - k, 0)])
        outs.append(s.run(None, {INPUT_NAME: chunk})[0][:k])
    return np.concatenate(outs)
