"""``--target openvino``: OpenVINO IR (``model.xml`` + ``model.bin``).

The IR is converted from the exported fp32 ONNX (``ov.convert_model``), so node and weight names
are the ONNX ones. fp16: ``ov.save_model(compress_to_fp16=True)`` (fp16 weights; the CPU plugin
decompresses them and computes in the inference precision hint, f32 by default in
:mod:`pkdn_edge.engines.openvino`). int8: NNCF post-training quantization of the OpenVINO model
(:func:`.quantize.quantize_openvino`); on held-out training faces this path matched the PyTorch
→ Q/DQ ONNX path within 0.01 dB, and it runs with OpenVINO's own int8 kernels. With
``calib.accuracy_control`` NNCF's accuracy-controlled PTQ is used instead
(:func:`.quantize.quantize_openvino_accuracy`). The bicubic skip path is converted as two MatMuls
(:func:`.onnx_io.matmul_skip_path`): OpenVINO's CPU ``Interpolate`` (cubic) took 0.61 of the
1.85 ms of the INT8 x8 student per face (2 threads, ``PERF_COUNT``); the ``edges`` ignored scope
keeps the MatMuls in float. Given a ready INT8 PyTorch model (``ctx.int8_model``,
e.g. after QAT), its Q/DQ ONNX is converted instead (no calibration here).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from pkdn_edge.errors import MissingDependencyError

from . import telemetry
from .context import ExportContext, TargetResult
from .onnx_io import export_onnx, matmul_skip_path
from .qdq_onnx import export_fake_quant_onnx
from .quantize import (Candidate, default_candidates, ignored_weights, pick_best, quantize_openvino,
                       quantize_openvino_accuracy)
from .verify import mean_psnr, torch_outputs


def _ov() -> Any:
    try:
        return telemetry.import_openvino()  # telemetry off first: import openvino itself reports usage
    except ImportError:
        raise MissingDependencyError("openvino", "openvino", "--target openvino") from None


def _run(ov: Any, model: Any, x: np.ndarray, threads: int) -> np.ndarray:
    """Outputs of an OpenVINO model on ``x`` (N,3,h,w), f32 hint, any batch size."""
    model = model.clone()
    model.reshape({model.inputs[0]: ov.PartialShape([-1, *x.shape[1:]])})
    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": threads})
    return np.concatenate([compiled(x[i : i + 16])[0] for i in range(0, len(x), 16)])


def quantize(ctx: ExportContext, fp32_model: Any) -> tuple[Any, dict[str, Any]]:
    """INT8 OpenVINO model from ``fp32_model``; with ``--ignore auto`` the settings are chosen on
    held-out training faces (never the eval set). Returns (model, manifest extras)."""
    ov = _ov()
    from .data import to_lr

    calib_lr, select_hr, source = ctx.calibration()
    base = replace(ctx.calib.settings, overflow_fix="first_layer_only")  # NNCF's OpenVINO CPU default
    extras: dict[str, Any] = {"calibration": {"faces": source, "n": int(len(calib_lr))}}
    if ctx.calib.accuracy_control:
        sel_lr = to_lr(select_hr, ctx.scale)
        ctx.log(f"int8: NNCF accuracy-controlled PTQ on OpenVINO ({base.label()}, max drop {ctx.calib.max_drop} dB "
                f"on {len(select_hr)} held-out faces)")
        q = quantize_openvino_accuracy(fp32_model, calib_lr, sel_lr, select_hr, base,
                                       ignored_weights(ctx.model, base.ignore), ctx.calib.max_drop)
        ref = mean_psnr(torch_outputs(ctx.model, sel_lr), select_hr)
        d = mean_psnr(_run(ov, q, sel_lr, ctx.threads), select_hr) - ref
        fq = sum(op.get_type_name() == "FakeQuantize" for op in q.get_ops())
        ctx.log(f"int8 accuracy control: PSNR delta {d:+.3f} dB on {len(select_hr)} held-out faces, "
                f"{fq} FakeQuantize ops")
        extras["quantization"] = {"tool": "nncf", "path": "openvino", "accuracy_control": True, **base.to_dict(),
                                  "max_drop_db": ctx.calib.max_drop,
                                  "selection": {"faces": len(select_hr), "delta_db": round(d, 4),
                                                "fake_quantize_ops": fq}}
        return q, extras
    if not ctx.calib.auto_ignore:
        ctx.log(f"int8: NNCF PTQ on OpenVINO ({base.label()}) with {len(calib_lr)} faces")
        q = quantize_openvino(fp32_model, calib_lr, base, ignored_weights(ctx.model, base.ignore))
        extras["quantization"] = {"tool": "nncf", "path": "openvino", **base.to_dict()}
        return q, extras
    sel_lr = to_lr(select_hr, ctx.scale)
    ref = mean_psnr(torch_outputs(ctx.model, sel_lr), select_hr)
    cands, models = [], {}
    for s in default_candidates(base):
        q = quantize_openvino(fp32_model, calib_lr, s, ignored_weights(ctx.model, s.ignore))
        d = mean_psnr(_run(ov, q, sel_lr, ctx.threads), select_hr) - ref
        ctx.log(f"int8 auto: {s.label():40s} PSNR delta {d:+.3f} dB on {len(select_hr)} held-out faces")
        cands.append(Candidate(s, ref + d, d))
        models[s] = q
    best = pick_best(cands, ctx.calib.max_drop)
    extras["quantization"] = {"tool": "nncf", "path": "openvino", **best.settings.to_dict(),
                              "selection": {"faces": len(select_hr), "delta_db": round(best.delta, 4),
                                            "tried": {c.settings.label(): round(c.delta, 4) for c in cands}}}
    return models[best.settings], extras


def export(ctx: ExportContext) -> TargetResult:
    """Write ``model.xml``/``model.bin`` in ``ctx.precision``."""
    ov = _ov()
    extras: dict[str, Any] = {"converted_from": "onnx", "inference_precision_hint": "f32"}
    if ctx.precision == "int8" and ctx.int8_model is not None:
        ctx.log("int8: converting the given INT8 PyTorch model (Q/DQ ONNX) to OpenVINO")
        qdq = export_fake_quant_onnx(ctx.int8_model.module, ctx.scratch / "int8_qdq.onnx", ctx.lr_size, ctx.batch,
                                     ctx.opset)
        model = ov.convert_model(str(matmul_skip_path(qdq, ctx.lr_size, ctx.scale, extras)))
        extras["converted_from"] = "Q/DQ onnx of an INT8 PyTorch model"
        extras["quantization"] = {"tool": "nncf", "path": "torch → Q/DQ ONNX → openvino", **ctx.int8_model.info}
    else:
        onnx_path = export_onnx(ctx.model, ctx.scratch / "fp32.onnx", ctx.lr_size, ctx.batch, ctx.opset,
                                ctx.onnx_metadata())
        model = ov.convert_model(str(matmul_skip_path(onnx_path, ctx.lr_size, ctx.scale, extras)))
    if ctx.precision == "int8" and ctx.int8_model is None:
        model, q = quantize(ctx, model)
        extras.update(q)
    for k, v in ctx.onnx_metadata().items():
        model.set_rt_info(str(v), ["pkdn", k])
    ov.save_model(model, str(ctx.workdir / "model.xml"), compress_to_fp16=ctx.precision == "fp16")
    return TargetResult("model.xml", "openvino", extras)
