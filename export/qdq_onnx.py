"""The INT8 Q/DQ ONNX builder, shared by ``--target onnx --precision int8`` and ``--target tensorrt
--precision int8`` (and the ``torch-tensorrt`` engine builder's INT8 path).

NNCF calibrates the PyTorch model (:func:`.quantize.quantize_torch`), the stripped model exports
``QuantizeLinear``/``DequantizeLinear`` ONNX with the TorchScript exporter (``dynamo=False``,
:func:`export_fake_quant_onnx`), :func:`.qdq.make_tensorrt_qdq` makes it signed/symmetric with
per-output-channel weights, and :mod:`.tensorrt_lint` must find no violation. ONNX Runtime runs
the result (parity check; ``--ignore auto`` scores each candidate with it).

Each step logs a line with its time (``int8 [2/4] ...``), so a long INT8 export is never silent;
see docs/export.md ("Why INT8 takes minutes") for where the time goes.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn

from pkdn_edge.errors import PKDNError

from .context import ExportContext
from .onnx_io import INPUT_NAME, OUTPUT_NAME, check_onnx, quiet_export, set_metadata
from .qdq import make_tensorrt_qdq, qdq_summary
from .quantize import Candidate, default_candidates, pick_best, quantize_torch, strip_to_native
from .settings import Int8Settings
from .tensorrt_lint import lint, quantized_convs
from .verify import mean_psnr, torch_outputs


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


class _Steps:
    """``int8 [k/n] <what> ...`` lines, each followed by its time (``... done in 12 s``)."""

    def __init__(self, log: Any, n: int) -> None:
        self.log, self.n, self.k, self.t = log, n, 0, time.perf_counter()

    def __call__(self, what: str) -> None:
        self.k += 1
        self.t = time.perf_counter()
        self.log(f"int8 [{self.k}/{self.n}] {what} ...")

    def done(self, extra: str = "") -> None:
        self.log(f"int8 [{self.k}/{self.n}] done in {time.perf_counter() - self.t:.1f} s{extra}")


def qdq_from_model(ctx: ExportContext, q: nn.Module, dst: Path, steps: _Steps | None = None,
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


def _auto_settings(ctx: ExportContext, base: Int8Settings, calib_lr: np.ndarray, select_hr: np.ndarray,
                   dst: Path) -> tuple[Int8Settings, dict[str, Any]]:
    """``--ignore auto``: every candidate of :func:`.quantize.default_candidates` → Q/DQ ONNX, scored
    with ONNX Runtime on the held-out faces; the best within ``max_drop``."""
    from .data import to_lr

    sel_lr = to_lr(select_hr, ctx.scale)
    ref = mean_psnr(torch_outputs(ctx.model, sel_lr), select_hr)
    cands = []
    for s in default_candidates(base):
        info = qdq_from_model(ctx, quantize_torch(ctx.model, calib_lr, s), dst, check=False)
        d = mean_psnr(ort_outputs(dst, sel_lr, ctx.threads), select_hr) - ref
        ctx.log(f"int8 auto: {s.label():40s} PSNR delta {d:+.3f} dB on {len(select_hr)} held-out faces")
        cands.append(Candidate(s, ref + d, d, info))
    best = pick_best(cands, ctx.calib.max_drop)
    return best.settings, {"faces": len(select_hr), "delta_db": round(best.delta, 4),
                           "tried": {c.settings.label(): round(c.delta, 4) for c in cands}}


def export_qdq_onnx(ctx: ExportContext, dst: Path) -> dict[str, Any]:
    """Write the symmetric-INT8 Q/DQ ONNX to ``dst``; lint it (violations → PKDNError). Returns
    manifest extras (settings, calibration, rewrite counts, selection numbers with ``--ignore auto``)."""
    if ctx.int8_model is not None:
        steps = _Steps(ctx.log, 2)
        ctx.log("int8: Q/DQ ONNX of the given INT8 PyTorch model")
        info = qdq_from_model(ctx, ctx.int8_model.module, dst, steps)
        return {"quantization": {"tool": "nncf", "path": "torch → Q/DQ ONNX", **ctx.int8_model.info, **info,
                                 "tensorrt_lint": "clean"}}
    steps = _Steps(ctx.log, 4)
    steps("loading calibration faces")
    calib_lr, select_hr, source = ctx.calibration()
    steps.done(f" ({len(calib_lr)} faces from {source})")
    base = replace(ctx.calib.settings, overflow_fix="disable")  # TensorRT: full int8 weight range
    extras: dict[str, Any] = {"calibration": {"faces": source, "n": int(len(calib_lr))}}
    settings = base
    if ctx.calib.auto_ignore:
        settings, extras["selection"] = _auto_settings(ctx, base, calib_lr, select_hr, dst)
    steps(f"NNCF PTQ on PyTorch ({settings.label()}), statistics on {min(settings.subset_size, len(calib_lr))} "
          f"of {len(calib_lr)} faces")
    q = quantize_torch(ctx.model, calib_lr, settings)
    steps.done()
    info = qdq_from_model(ctx, q, dst, steps)
    extras["quantization"] = {"tool": "nncf", "path": "torch → Q/DQ ONNX", **settings.to_dict(), **info,
                              "tensorrt_lint": "clean"}
    return extras
