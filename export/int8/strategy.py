"""How an INT8 export gets its quantized model: the one place the INT8 strategy is chosen.

A target asks once and gets the finished INT8 model back (the walk is target → here → the
exporter's verification; nothing here calls back into a target):

* :func:`qdq_onnx` (``--target onnx`` and ``--target tensorrt``): writes the symmetric INT8 Q/DQ
  ONNX (:mod:`.qdq_onnx`, linted by :mod:`.tensorrt_lint`) and returns the manifest extras;
* :func:`openvino_ir` (``--target openvino``): returns the INT8 ``ov.Model`` and fills the extras.

The strategy, first match wins:

1. a ready INT8 PyTorch model (``ctx.int8_model``, e.g. after QAT, :mod:`.qat`): its Q/DQ ONNX, no
   calibration here;
2. ``--accuracy-control`` (OpenVINO only): NNCF's accuracy-controlled PTQ
   (:func:`.ptq.quantize_openvino_accuracy`);
3. ``--ignore auto``: :func:`.auto_ignore.search_ignored` (the one search, for both paths), whose
   best model is kept (OpenVINO) or quantized once more with the best settings (Q/DQ ONNX, whose
   candidates overwrite one file);
4. otherwise NNCF PTQ once with the given settings (:mod:`.ptq`).

Settings differ per path in one field: the Q/DQ ONNX quantizes weights over the full int8 range
(``overflow_fix="disable"``, what TensorRT expects), OpenVINO keeps NNCF's CPU default
(``first_layer_only``).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from ..context import ExportContext
from ..data import to_lr
from ..onnx_io import export_onnx
from ..openvino_io import import_openvino, ir_from_onnx, run_ir
from ..verify import mean_psnr, torch_outputs
from .auto_ignore import search_ignored
from .ptq import ignored_weights, quantize_openvino, quantize_openvino_accuracy, quantize_torch
from .qdq_onnx import Steps, export_fake_quant_onnx, ort_outputs, qdq_from_model


def qdq_onnx(ctx: ExportContext, dst: Path) -> dict[str, Any]:
    """Write the symmetric-INT8 Q/DQ ONNX to ``dst``; lint it (violations → PKDNError). Returns
    manifest extras (settings, calibration, rewrite counts, selection numbers with ``--ignore auto``)."""
    if ctx.int8_model is not None:
        steps = Steps(ctx.log, 2)
        ctx.log("int8: Q/DQ ONNX of the given INT8 PyTorch model")
        info = qdq_from_model(ctx, ctx.int8_model.module, dst, steps)
        return {"quantization": {"tool": "nncf", "path": "torch → Q/DQ ONNX", **ctx.int8_model.info, **info,
                                 "tensorrt_lint": "clean"}}
    steps = Steps(ctx.log, 4)
    steps("loading calibration faces")
    calib_lr, select_hr, source = ctx.calibration()
    steps.done(f" ({len(calib_lr)} faces from {source})")
    base = replace(ctx.calib.settings, overflow_fix="disable")  # TensorRT: full int8 weight range
    extras: dict[str, Any] = {"calibration": {"faces": source, "n": int(len(calib_lr))}}
    settings = base
    if ctx.calib.auto_ignore:
        settings, _, extras["selection"] = search_ignored(
            ctx, base, select_hr,
            quantize=lambda s: qdq_from_model(ctx, quantize_torch(ctx.model, calib_lr, s), dst, check=False),
            outputs=lambda _info, lr: ort_outputs(dst, lr, ctx.threads))
    steps(f"NNCF PTQ on PyTorch ({settings.label()}), statistics on {min(settings.subset_size, len(calib_lr))} "
          f"of {len(calib_lr)} faces")
    q = quantize_torch(ctx.model, calib_lr, settings)
    steps.done()
    info = qdq_from_model(ctx, q, dst, steps)
    extras["quantization"] = {"tool": "nncf", "path": "torch → Q/DQ ONNX", **settings.to_dict(), **info,
                              "tensorrt_lint": "clean"}
    return extras


def openvino_ir(ctx: ExportContext, extras: dict[str, Any]) -> Any:
    """The INT8 ``ov.Model`` of this export; its facts (calibration, quantization, the ONNX it was
    converted from) go into ``extras``."""
    ov = import_openvino()
    if ctx.int8_model is not None:
        ctx.log("int8: converting the given INT8 PyTorch model (Q/DQ ONNX) to OpenVINO")
        qdq = export_fake_quant_onnx(ctx.int8_model.module, ctx.scratch / "int8_qdq.onnx", ctx.lr_size, ctx.batch,
                                     ctx.opset)
        model = ir_from_onnx(ov, qdq, ctx.lr_size, ctx.scale, extras)
        extras["converted_from"] = "Q/DQ onnx of an INT8 PyTorch model"
        extras["quantization"] = {"tool": "nncf", "path": "torch → Q/DQ ONNX → openvino", **ctx.int8_model.info}
        return model
    onnx_path = export_onnx(ctx.model, ctx.scratch / "fp32.onnx", ctx.lr_size, ctx.batch, ctx.opset,
                            ctx.onnx_metadata())
    fp32 = ir_from_onnx(ov, onnx_path, ctx.lr_size, ctx.scale, extras)
    model, facts = _openvino_ptq(ctx, ov, fp32)
    extras.update(facts)
    return model


def _openvino_ptq(ctx: ExportContext, ov: Any, fp32: Any) -> tuple[Any, dict[str, Any]]:
    """NNCF PTQ of the fp32 ``ov.Model``: accuracy-controlled, ``--ignore auto`` or the given settings
    (chosen on held-out training faces, never the eval set). Returns (model, manifest extras)."""
    calib_lr, select_hr, source = ctx.calibration()
    base = replace(ctx.calib.settings, overflow_fix="first_layer_only")  # NNCF's OpenVINO CPU default
    extras: dict[str, Any] = {"calibration": {"faces": source, "n": int(len(calib_lr))}}
    if ctx.calib.accuracy_control:
        q, extras["quantization"] = _openvino_accuracy_control(ctx, ov, fp32, calib_lr, select_hr, base)
        return q, extras
    if not ctx.calib.auto_ignore:
        ctx.log(f"int8: NNCF PTQ on OpenVINO ({base.label()}) with {len(calib_lr)} faces")
        q = quantize_openvino(fp32, calib_lr, base, ignored_weights(ctx.model, base.ignore))
        extras["quantization"] = {"tool": "nncf", "path": "openvino", **base.to_dict()}
        return q, extras
    best, q, selection = search_ignored(
        ctx, base, select_hr,
        quantize=lambda s: quantize_openvino(fp32, calib_lr, s, ignored_weights(ctx.model, s.ignore)),
        outputs=lambda m, lr: run_ir(ov, m, lr, ctx.threads))
    extras["quantization"] = {"tool": "nncf", "path": "openvino", **best.to_dict(), "selection": selection}
    return q, extras


def _openvino_accuracy_control(ctx: ExportContext, ov: Any, fp32: Any, calib_lr: Any, select_hr: Any,
                               base: Any) -> tuple[Any, dict[str, Any]]:
    """``--accuracy-control``: NNCF reverts ops to float until the PSNR drop on the held-out faces is
    within ``--max-drop``. Returns (model, the manifest's ``quantization`` facts)."""
    sel_lr = to_lr(select_hr, ctx.scale)
    ctx.log(f"int8: NNCF accuracy-controlled PTQ on OpenVINO ({base.label()}, max drop {ctx.calib.max_drop} dB "
            f"on {len(select_hr)} held-out faces)")
    q = quantize_openvino_accuracy(fp32, calib_lr, sel_lr, select_hr, base,
                                   ignored_weights(ctx.model, base.ignore), ctx.calib.max_drop)
    ref = mean_psnr(torch_outputs(ctx.model, sel_lr), select_hr)
    d = mean_psnr(run_ir(ov, q, sel_lr, ctx.threads), select_hr) - ref
    fq = sum(op.get_type_name() == "FakeQuantize" for op in q.get_ops())
    ctx.log(f"int8 accuracy control: PSNR delta {d:+.3f} dB on {len(select_hr)} held-out faces, "
            f"{fq} FakeQuantize ops")
    return q, {"tool": "nncf", "path": "openvino", "accuracy_control": True, **base.to_dict(),
               "max_drop_db": ctx.calib.max_drop,
               "selection": {"faces": len(select_hr), "delta_db": round(d, 4), "fake_quantize_ops": fq}}
