"""``--target tensorrt``: a TensorRT-ready ONNX, the exact build command per TensorRT generation, and
(when TensorRT and a CUDA GPU are present) the engine itself, built and verified here.

Engines are tied to the GPU and TensorRT version that build them: on a workstation without
TensorRT the artifact carries the ONNX + ``BUILD.md`` and the engine is built on the Jetson.

============  ======================================  ==========================================
precision     TensorRT 8.x / 10.x (weakly typed)      TensorRT 11.x (strongly typed only)
============  ======================================  ==========================================
fp32          ``model.onnx``                          ``model.onnx``
fp16          ``model.onnx`` + ``--fp16``             ``model_fp16.onnx`` (fp16 weights and
                                                      compute, float32 I/O; no flag exists)
int8          ``model.onnx`` (Q/DQ) + ``--int8        ``model.onnx`` (Q/DQ; float layers stay
              --fp16``                                fp32 unless the ONNX is autocast to fp16)
============  ======================================  ==========================================

INT8 uses *explicit* quantization: NNCF calibrates the PyTorch model, the stripped model exports
Q/DQ ONNX (``dynamo=False``), :func:`.qdq.make_tensorrt_qdq` makes it signed/symmetric with
per-output-channel weights, :mod:`.tensorrt_lint` must find no violation, and ONNX Runtime runs
it for the parity check.
"""

from __future__ import annotations

import importlib.util
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from pkdn_edge.errors import PKDNError

from .context import ExportContext, TargetResult
from .onnx_export import INPUT_NAME, check_onnx, export_onnx, set_metadata, to_fp16
from .qdq import make_tensorrt_qdq, qdq_summary
from .quantize import Candidate, Int8Settings, default_candidates, export_fake_quant_onnx, pick_best, quantize_torch
from .tensorrt_lint import lint, quantized_convs
from .verify import mean_psnr, torch_outputs

TRTEXEC = "trtexec"  # on Jetson: /usr/src/tensorrt/bin/trtexec
DEFAULT_MAX_BATCH = 16
DEFAULT_OPT_BATCH = 4


# --------------------------------------------------------------------------------------------------
# INT8 Q/DQ ONNX (shared with --target onnx --precision int8)


def _qdq_from_settings(ctx: ExportContext, settings: Int8Settings, calib_lr: np.ndarray, dst: Path) -> dict[str, Any]:
    return _qdq_from_model(ctx, quantize_torch(ctx.model, calib_lr, settings), dst)


def _qdq_from_model(ctx: ExportContext, q: torch.nn.Module, dst: Path) -> dict[str, Any]:
    """NNCF fake-quant model ``q`` → TensorRT-shaped Q/DQ ONNX at ``dst``; returns rewrite facts."""
    raw = export_fake_quant_onnx(q, dst.with_suffix(".raw.onnx"), ctx.lr_size, ctx.batch, ctx.opset)
    proto = onnx.load(str(raw))
    raw.unlink()
    proto, counts = make_tensorrt_qdq(proto)
    set_metadata(proto, ctx.onnx_metadata())
    onnx.save(proto, str(dst))
    check_onnx(dst)
    nq, nconv = quantized_convs(proto)
    return {"rewrite": counts, "qdq": qdq_summary(proto), "quantized_convs": f"{nq}/{nconv}"}


def _ort_outputs(path: Path, x: np.ndarray, threads: int) -> np.ndarray:
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


def export_qdq_onnx(ctx: ExportContext, dst: Path) -> dict[str, Any]:
    """Write the symmetric-INT8 Q/DQ ONNX to ``dst``; lint it (violations → PKDNError). Returns
    manifest extras (settings, calibration, rewrite counts, selection numbers with ``--ignore auto``)."""
    from .data import to_lr

    if ctx.int8_model is not None:
        ctx.log("int8: Q/DQ ONNX of the given INT8 PyTorch model")
        info = _qdq_from_model(ctx, ctx.int8_model.module, dst)
        violations = lint(onnx.load(str(dst)))
        if violations:
            raise PKDNError(f"the INT8 ONNX breaks {len(violations)} TensorRT Q/DQ rule(s), first: {violations[0]}")
        return {"quantization": {"tool": "nncf", "path": "torch → Q/DQ ONNX", **ctx.int8_model.info, **info,
                                 "tensorrt_lint": "clean"}}
    calib_lr, select_hr, source = ctx.calibration()
    base = replace(ctx.calib.settings, overflow_fix="disable")  # TensorRT: full int8 weight range
    extras: dict[str, Any] = {"calibration": {"faces": source, "n": int(len(calib_lr))}}
    if ctx.calib.auto_ignore:
        sel_lr = to_lr(select_hr, ctx.scale)
        ref = mean_psnr(torch_outputs(ctx.model, sel_lr), select_hr)
        cands = []
        for s in default_candidates(base):
            info = _qdq_from_settings(ctx, s, calib_lr, dst)
            d = mean_psnr(_ort_outputs(dst, sel_lr, ctx.threads), select_hr) - ref
            ctx.log(f"int8 auto: {s.label():40s} PSNR delta {d:+.3f} dB on {len(select_hr)} held-out faces")
            cands.append(Candidate(s, ref + d, d, info))
        best = pick_best(cands, ctx.calib.max_drop)
        settings = best.settings
        extras["selection"] = {"faces": len(select_hr), "delta_db": round(best.delta, 4),
                               "tried": {c.settings.label(): round(c.delta, 4) for c in cands}}
    else:
        settings = base
    ctx.log(f"int8: NNCF PTQ on PyTorch ({settings.label()}) with {len(calib_lr)} faces → Q/DQ ONNX")
    info = _qdq_from_settings(ctx, settings, calib_lr, dst)
    violations = lint(onnx.load(str(dst)))
    if violations:
        raise PKDNError(f"the INT8 ONNX breaks {len(violations)} TensorRT Q/DQ rule(s), first: {violations[0]}")
    extras["quantization"] = {"tool": "nncf", "path": "torch → Q/DQ ONNX", **settings.to_dict(), **info,
                              "tensorrt_lint": "clean"}
    return extras


# --------------------------------------------------------------------------------------------------
# build commands


def _shapes(ctx_batch: int | None, lr_size: tuple[int, int]) -> str:
    if ctx_batch is not None:
        return ""
    h, w = lr_size
    return (f" --minShapes={INPUT_NAME}:1x3x{h}x{w} --optShapes={INPUT_NAME}:{DEFAULT_OPT_BATCH}x3x{h}x{w}"
            f" --maxShapes={INPUT_NAME}:{DEFAULT_MAX_BATCH}x3x{h}x{w}")


def build_commands(precision: str, batch: int | None, lr_size: tuple[int, int]) -> dict[str, str]:
    """The ``trtexec`` command per TensorRT generation (run inside the artifact folder)."""
    shapes = _shapes(batch, lr_size)
    flags_8_10 = {"fp32": "", "fp16": " --fp16", "int8": " --int8 --fp16"}[precision]
    onnx_11 = "model_fp16.onnx" if precision == "fp16" else "model.onnx"
    return {
        "8": f"{TRTEXEC} --onnx=model.onnx --saveEngine=model_trt8.plan{flags_8_10}{shapes}",
        "10": f"{TRTEXEC} --onnx=model.onnx --saveEngine=model_trt10.plan{flags_8_10}{shapes}",
        "11": f"{TRTEXEC} --onnx={onnx_11} --saveEngine=model_trt11.plan{shapes}",
    }


def build_doc(precision: str, commands: dict[str, str], scale: int) -> str:
    """``BUILD.md`` of a tensorrt artifact."""
    gen11 = {
        "fp32": "the network is strongly typed; `model.onnx` is float32 throughout.",
        "fp16": "no `--fp16` flag exists; `model_fp16.onnx` already carries fp16 weights and compute "
                "(float32 input/output), which a strongly typed build keeps.",
        "int8": "no `--int8` flag exists; the Q/DQ nodes of `model.onnx` decide the INT8 layers, the rest "
                "stays float32 (optionally run `python -m modelopt.onnx.autocast --onnx_path model.onnx "
                "--output_path model_mixed.onnx` for fp16 float layers; not verified here).",
    }[precision]
    return f"""# Building the TensorRT engine (PKDN ×{scale}, {precision})

Engines only run on the GPU model and TensorRT version that built them: build on the device.
On Jetson, `trtexec` is `/usr/src/tensorrt/bin/trtexec` (JetPack 4.6: TensorRT 8.2; JetPack 5.x: 8.5;
JetPack 6.0: 8.6; JetPack 6.1/6.2: 10.3). Check yours with `dpkg -l | grep nvinfer` or `python3 -c "import tensorrt; print(tensorrt.__version__)"`.

| TensorRT | command (run in this folder) |
|---|---|
| 8.x | `{commands['8']}` |
| 10.x | `{commands['10']}` |
| 11.x | `{commands['11']}` |

TensorRT 11: {gen11}

Then record the engine in `manifest.json` so `load_engine()` finds it:

    python -m pkdn_edge.engines.tensorrt register . model_trt<N>.plan

or build and register in one step with the TensorRT Python API (needs `cuda-python` or a CUDA torch):

    python -m pkdn_edge.engines.tensorrt build .
"""


def _device_can_build() -> str | None:
    """Why an engine cannot be built here (None when TensorRT and a CUDA GPU are present)."""
    if importlib.util.find_spec("tensorrt") is None:
        return "TensorRT is not installed here"
    if not torch.cuda.is_available():
        try:
            from cuda.bindings import runtime as cudart  # noqa: F401
        except ImportError:
            return "no CUDA GPU is visible"
    return None


def export(ctx: ExportContext) -> TargetResult:
    """Write the TensorRT-ready ONNX (+ fp16 ONNX for TensorRT 11), ``BUILD.md`` and the commands;
    build the engine here when TensorRT and a GPU exist."""
    extras: dict[str, Any] = {"opset": ctx.opset}
    onnx_path = ctx.workdir / "model.onnx"
    per_gen = {"8": "model.onnx", "10": "model.onnx", "11": "model.onnx"}
    if ctx.precision == "int8":
        extras.update(export_qdq_onnx(ctx, onnx_path))
        model_file = "model.onnx"
    else:
        export_onnx(ctx.model, onnx_path, ctx.lr_size, ctx.batch, ctx.opset, ctx.onnx_metadata())
        model_file = "model.onnx"
        if ctx.precision == "fp16":
            to_fp16(onnx_path, ctx.workdir / "model_fp16.onnx")
            per_gen["11"] = model_file = "model_fp16.onnx"
    cmds = build_commands(ctx.precision, ctx.batch, ctx.lr_size)
    (ctx.workdir / "BUILD.md").write_text(build_doc(ctx.precision, cmds, ctx.scale))
    extras.update({"trt_onnx": per_gen, "build_commands": cmds,
                   "profile": None if ctx.batch else {"min": 1, "opt": DEFAULT_OPT_BATCH, "max": DEFAULT_MAX_BATCH}})
    why = _device_can_build()
    result = TargetResult(model_file, "onnxruntime", extras)
    if why is None:
        result.checks["build_engine"] = True  # done by the exporter once the manifest exists
    else:
        result.notes.append(f"TensorRT engine not built: {why}. Build it on the device (see BUILD.md), e.g. "
                            f"`{cmds['10']}` (TensorRT 10, JetPack 6.1+), then "
                            f"`python -m pkdn_edge.engines.tensorrt register <artifact> model_trt10.plan`.")
        result.notes.append("parity was checked with ONNX Runtime on the same ONNX the engine is built from.")
    return result
