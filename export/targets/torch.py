"""``--target torch``: the checkpoint itself, fp32 or fp16 weights, in an artifact folder with a
manifest (runs with the ``torch`` engine backend; handy for GPU users and as a reference)."""

from __future__ import annotations

from pkdn_edge.models.checkpoint import export_weights

from ..context import ExportContext, TargetResult


def export(ctx: ExportContext) -> TargetResult:
    """Write ``model.pt`` (inference-only checkpoint, weights in ``ctx.precision``)."""
    meta = {**ctx.meta, "exported_from": ctx.weights.name}
    export_weights(ctx.model, ctx.workdir / "model.pt", meta, half=ctx.precision == "fp16")
    note = [] if ctx.precision == "fp32" else ["fp16 weights: fp16 arithmetic on CUDA, fp32 arithmetic on CPU"]
    return TargetResult("model.pt", "torch", {}, note)
