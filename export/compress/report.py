"""Stages 4–6 of ``pkdn-compress``: quality under both protocols, latency in alternating blocks, report.

* :func:`evaluate`: PSNR/SSIM of PyTorch models and exported engines on the evaluation faces under
  each LR protocol of :func:`pkdn_edge.train.camera.protocol_lr` (``bicubic``: the paper's;
  ``camera``: the frozen camera protocol), each with its own bicubic row; Δ against the first model.
* :func:`measure_latency`: ms per batch-1 call of several engines timed in alternating blocks.
* :func:`report_markdown`: ``report.md`` from the report dict.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

PROTOCOLS = ("bicubic", "camera")
LATENCY_BLOCK = 25  # timed calls per engine before the next engine's turn (see measure_latency)
SPEEDUP_TARGET = 1.6  # ONNX Runtime fp32 at 50 % pruning (the first compression issue's target)


def _engine_sr(engine: Any, lr: Any) -> Any:
    import numpy as np

    from ..verify import to_uint8

    x = lr.transpose(0, 3, 1, 2).astype(np.float32) / 255.0
    return to_uint8(engine.run_tensor(np.ascontiguousarray(x)))


def evaluate(models: dict[str, Any], hr: Any, scale: int, threads: int,
             protocols: tuple[str, ...] = PROTOCOLS) -> list[dict[str, Any]]:
    """Rows ``{protocol, model, psnr_ctcnet, ssim_ctcnet, psnr_dic, ssim_dic, delta_psnr_ctcnet,
    delta_ssim_ctcnet}`` for each ``name → PKDN or engine`` on HR faces (N,128,128,3) uint8 RGB,
    per protocol, the bicubic baseline first; deltas are against the first model of the protocol."""
    import numpy as np
    import torch

    from pkdn_edge.train.camera import protocol_lr
    from pkdn_edge.train.degradations import bicubic_up
    from pkdn_edge.train.evaluate import mean_metrics, super_resolve

    torch.set_num_threads(threads)
    rows: list[dict[str, Any]] = []
    for protocol in protocols:
        lr = protocol_lr(hr, scale, protocol)
        bicubic = mean_metrics(np.stack([bicubic_up(x, scale) for x in lr]), hr)
        block = [{"protocol": protocol, "model": "bicubic", **bicubic}]
        for name, m in models.items():
            sr = super_resolve(m, hr, scale, lr_faces=lr) if isinstance(m, torch.nn.Module) else _engine_sr(m, lr)
            block.append({"protocol": protocol, "model": name, **mean_metrics(sr, hr)})
        ref = block[1] if len(block) > 1 else block[0]
        for r in block:
            r["delta_psnr_ctcnet"] = r["psnr_ctcnet"] - ref["psnr_ctcnet"]
            r["delta_ssim_ctcnet"] = r["ssim_ctcnet"] - ref["ssim_ctcnet"]
        rows += block
    return rows


def measure_latency(
    engines: dict[Any, Any], runs: int, warmup: int = 20, block: int = LATENCY_BLOCK
) -> dict[Any, dict[str, float]]:
    """ms per batch-1 call of each engine: ``runs`` timed calls each, in blocks of ``block`` calls.

    Blocks take turns (the order reverses every round, so a slow drift of background load hits all
    engines alike), and each block starts with 3 untimed calls. Engines are not interleaved call by
    call: the worker threads of an engine that just ran keep spinning for a while (ONNX Runtime,
    OpenVINO), and on a 2-core machine they steal the next engine's cores: timed once per round, the
    50 %-pruned ×4 student's ONNX Runtime speed-up read 1.18×, in blocks 1.98× (2026-12-03).
    """
    import numpy as np

    x = {k: np.random.default_rng(0).random((1, 3, *e.lr_size), dtype=np.float32) for k, e in engines.items()}
    for k, e in engines.items():
        for _ in range(warmup):
            e.run_tensor(x[k])
    times: dict[Any, list[float]] = {k: [] for k in engines}
    order = list(engines)
    while any(len(v) < runs for v in times.values()):
        for k in order:
            e, n = engines[k], min(block, runs - len(times[k]))
            for _ in range(min(3, n)):
                e.run_tensor(x[k])
            for _ in range(n):
                t = time.perf_counter()
                e.run_tensor(x[k])
                times[k].append((time.perf_counter() - t) * 1e3)
        order.reverse()
    return {k: {"ms_median": float(np.median(v)), "ms_p90": float(np.percentile(v, 90))} for k, v in times.items()}


def speedups(ms: dict[tuple[str, str, str], dict[str, float]], original: str, pruned: str) -> dict[str, float]:
    """``speedup_<backend>_<precision>``: original / pruned median ms for every pair both have."""
    out = {}
    for (name, backend, precision), v in ms.items():
        if name == original and (pruned, backend, precision) in ms:
            out[f"speedup_{backend}_{precision}"] = v["ms_median"] / ms[(pruned, backend, precision)]["ms_median"]
    return out


def notes(cfg: Any, rows: list[dict[str, Any]], latency: dict[str, Any]) -> list[str]:
    """Warnings and verdicts for the report."""
    out = []
    for protocol in PROTOCOLS:
        by = {r["model"]: r for r in rows if r.get("protocol", "bicubic") == protocol}
        q = next((r for r in by.values() if "INT8" in r["model"]), None)
        fp = by.get("pruned + fine-tuned (fp32)") or by.get("pruned, before fine-tuning (fp32)")
        if q and fp and fp["psnr_ctcnet"] - q["psnr_ctcnet"] > cfg.max_drop:
            drop = fp["psnr_ctcnet"] - q["psnr_ctcnet"]
            hint = ("try --int8 qat or --int8 acc" if cfg.int8 == "ptq"
                    else "try more --qat-steps or --ignore edges,shuffle")
            out.append(f"INT8 loses {drop:.3f} dB ({protocol} protocol) against the fp32 pruned model "
                       f"(> {cfg.max_drop} dB): {hint}")
    s = latency.get("speedup_onnxruntime_fp32")
    if s is not None and cfg.target_macs is None and abs(cfg.prune - 0.5) < 1e-9:
        ok = "met" if s >= SPEEDUP_TARGET else "NOT met"
        out.append(f"ONNX Runtime fp32 speed-up at 50 % pruning: {s:.2f}x (target >= {SPEEDUP_TARGET}x: {ok})")
    if cfg.distill_mode() == "none" and cfg.finetune_steps > 0:
        out.append("fine-tuned without distillation (L1 only): --distill-from source distils from the unpruned student")
    return out


def _quality_lines(r: dict[str, Any]) -> list[str]:
    lines = [f"## Quality ({r['source']['num_eval_faces']} faces from `{r['source']['eval_faces']}`, Y channel; "
             "protocols: `bicubic` = LR by PIL bicubic ↓s (paper), `camera` = the frozen camera protocol)", "",
             "| protocol | model | PSNR (CTCNet) | SSIM (CTCNet) | PSNR (DIC, crop 8) | SSIM (DIC) "
             "| Δ PSNR vs original |",
             "|---|---|---|---|---|---|---|"]
    for row in r["quality"]["rows"]:
        lines.append(f"| {row.get('protocol', 'bicubic')} | {row['model']} | {row['psnr_ctcnet']:.3f} | "
                     f"{row['ssim_ctcnet']:.4f} | {row['psnr_dic']:.3f} | {row['ssim_dic']:.4f} | "
                     f"{row['delta_psnr_ctcnet']:+.3f} dB |")
    return lines


def _latency_lines(lat: dict[str, Any]) -> list[str]:
    if not lat["rows"]:
        return []
    lines = ["", f"## Latency (batch 1, {lat['threads']} threads, median of {lat['runs']} calls per model "
                 f"after warm-up, in alternating blocks of {lat.get('block', LATENCY_BLOCK)})", "",
             "| model | backend | precision | ms/face (median) | p90 |", "|---|---|---|---|---|"]
    for row in lat["rows"]:
        lines.append(f"| {row['model']} | {row['backend']} | {row['precision']} | {row['ms_median']:.3f} | "
                     f"{row['ms_p90']:.3f} |")
    for k in sorted(k for k in lat if k.startswith("speedup_")):
        lines.append(f"\n{k.replace('_', ' ')} (original / pruned): **{lat[k]:.2f}x**")
    return lines


def report_markdown(r: dict[str, Any]) -> str:
    """``report.md`` from the report dict."""
    s, m = r["settings"], r["models"]
    src = s.get("distill_source") or "none"
    lines = [f"# pkdn-compress: {Path(r['source']['weights']).name} (x{r['source']['scale']})", "",
             f"Pruning {r['source'].get('label', s['prune'])}; fine-tuning {s['finetune_steps']} steps distilled from "
             f"{src}; INT8: {s['int8']}. Training settings from {r['source'].get('train_settings', '?')}.", "",
             "## Size", "", "| model | params (M) | MMACs / face | widths | refine | mid_ratio |",
             "|---|---|---|---|---|---|"]
    for name, c in m.items():
        lines.append(f"| {name} | {c['params'] / 1e6:.3f} | {c['macs'] / 1e6:.1f} | {c['widths']} | "
                     f"{c.get('refine_width', '')} | {c.get('mid_ratio', '')} |")
    lines += [""] + _quality_lines(r) + _latency_lines(r["latency"])
    if r["notes"]:
        lines += ["", "## Notes", ""] + [f"* {n}" for n in r["notes"]]
    lines += ["", "## Files", ""] + [f"* `{v}` ({k})" for k, v in r["artifacts"].items()]
    lines += ["", "Use: `load_engine(\"<out>/openvino_int8\")`, or export the pruned checkpoint to any target with "
                  "`pkdn-export --target <target> --weights <out>/pruned.pt`.", ""]
    return "\n".join(lines)
