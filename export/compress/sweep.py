"""``pkdn-compress --sweep F1 F2 …``: the recipe at several MAC fractions, one ratio table.

Each fraction ``F`` is an ordinary compression (``--target-macs F``, same flags otherwise) in
``<out>/macs_<F>/`` (resumable, its own ``report.md``); the source's channel importance is measured
once (``<out>/importance.pt``). Then, in one run, every model is timed in alternating blocks
(:func:`.report.measure_latency`): the original and each pruned student in ONNX Runtime
fp32 and as OpenVINO INT8 (the original quantized with the same NNCF settings, ``<out>/reference/``),
so the speed-ups share one machine state. ``sweep.md`` / ``sweep.json``:

| MAC fraction | MMACs | widths | Δ PSNR bicubic | Δ PSNR camera | INT8 vs own fp32 |
| ORT fp32 speed-up | OV INT8 speed-up |  (one table row)

Quality deltas are the fine-tuned fp32 model against the original under each protocol (the same
bicubic baseline, so they are also the change of the gain over bicubic); the INT8 column is the
OpenVINO INT8 artifact against its own fp32 model (camera protocol).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

from .config import CompressConfig
from .report import LATENCY_BLOCK, measure_latency


def _row(report: dict[str, Any], protocol: str, prefix: str) -> dict[str, Any] | None:
    return next((r for r in report["quality"]["rows"] if r["protocol"] == protocol and r["model"].startswith(prefix)),
                None)


def _point(frac: float, report: dict[str, Any]) -> dict[str, Any]:
    """One table row from a compression report (quality part)."""
    pruned = report["models"]["pruned"]
    row: dict[str, Any] = {"fraction": frac, "folder": Path(report["settings"]["out"]).name, "macs": pruned["macs"],
                           "macs_fraction": pruned["macs"] / report["models"]["original"]["macs"],
                           "widths": pruned["widths"], "refine_width": pruned["refine_width"],
                           "mid_ratio": pruned["mid_ratio"]}
    for protocol in ("bicubic", "camera"):
        fp = _row(report, protocol, "pruned + fine-tuned") or _row(report, protocol, "pruned, before")
        q = _row(report, protocol, "pruned + INT8")
        row[f"delta_{protocol}"] = fp["delta_psnr_ctcnet"] if fp else None
        row[f"int8_vs_fp32_{protocol}"] = q["psnr_ctcnet"] - fp["psnr_ctcnet"] if q and fp else None
    return row


def _reference_int8(cfg: CompressConfig, out: Path, source: Path, export: Callable, calib: Callable,
                    data: str) -> Path:
    """The original student as OpenVINO INT8 (same NNCF settings as the points), made once."""
    folder = out / "reference" / "openvino_int8"
    if not (folder / "manifest.json").is_file():
        export("openvino", "int8", source, folder, cfg.threads, calib=calib(cfg, data))
    return folder


def _timings(cfg: CompressConfig, out: Path, points: list[dict[str, Any]], export: Callable, calib: Callable,
             data: str) -> dict[str, Any]:
    """Every model of the sweep timed in one :func:`measure_latency` run; adds speed-ups to ``points``."""
    from pkdn_edge.engines import load_engine

    first = out / points[0]["folder"]
    ort_ref = out / "reference" / "onnx_fp32"
    if not (ort_ref / "manifest.json").is_file():
        export("onnx", "fp32", first / "source.pt", ort_ref, cfg.threads)
    engines: dict[tuple[str, str], Any] = {
        ("original", "onnxruntime fp32"): load_engine(ort_ref, threads=cfg.threads),
        ("original", "openvino int8"): load_engine(_reference_int8(cfg, out, first / "source.pt", export, calib, data),
                                                   threads=cfg.threads)}
    for p in points:
        engines[(p["folder"], "onnxruntime fp32")] = load_engine(out / p["folder"] / "onnx_fp32", threads=cfg.threads)
        engines[(p["folder"], "openvino int8")] = load_engine(out / p["folder"] / "openvino_int8", threads=cfg.threads)
    ms = measure_latency(engines, cfg.latency_runs)
    for p in points:
        for key, backend in (("speedup_ort_fp32", "onnxruntime fp32"), ("speedup_ov_int8", "openvino int8")):
            p[f"ms_{key[8:]}"] = ms[(p["folder"], backend)]["ms_median"]
            p[key] = ms[("original", backend)]["ms_median"] / ms[(p["folder"], backend)]["ms_median"]
    return {"threads": cfg.threads, "runs": cfg.latency_runs, "block": LATENCY_BLOCK,
            "rows": [{"model": m, "backend": b, **v} for (m, b), v in ms.items()]}


def _fmt(v: Any, spec: str) -> str:
    return "–" if v is None else format(v, spec)


def sweep_markdown(s: dict[str, Any]) -> str:
    """``sweep.md`` from the sweep dict."""
    lat = s["latency"]
    lines = [f"# pkdn-compress sweep: {Path(s['weights']).name} (x{s['scale']}, "
             f"{s['source_macs'] / 1e6:.1f} MMACs)", "",
             f"Each row: `--target-macs F`, {s['settings']['finetune_steps']} fine-tuning steps distilled from "
             f"{s['distill_source']}, INT8 {s['settings']['int8']}; {s['num_eval_faces']} eval faces. Speed-ups: "
             f"original / pruned, median of {lat.get('runs', 0)} batch-1 calls per model at {lat.get('threads')} "
             f"threads, all models in alternating blocks of {LATENCY_BLOCK} in one run.", "",
             "| MAC fraction | MMACs | widths / refine / mid | Δ PSNR bicubic | Δ PSNR camera | INT8 vs own fp32 "
             "(camera) | ORT fp32 speed-up | OV INT8 speed-up |", "|---|---|---|---|---|---|---|---|"]
    for p in s["points"]:
        lines.append(f"| {p['fraction']:g} ({p['macs_fraction']:.0%}) | {p['macs'] / 1e6:.1f} | {p['widths']} / "
                     f"{p['refine_width']} / {p['mid_ratio']} | {_fmt(p['delta_bicubic'], '+.3f')} dB | "
                     f"{_fmt(p['delta_camera'], '+.3f')} dB | {_fmt(p['int8_vs_fp32_camera'], '+.3f')} dB | "
                     f"{_fmt(p.get('speedup_ort_fp32'), '.2f')}x | {_fmt(p.get('speedup_ov_int8'), '.2f')}x |")
    return "\n".join(lines + ["", "Per-point reports: `macs_<F>/report.md`.", ""])


def run_sweep(cfg: CompressConfig, log: Callable[[str], None], run_one: Callable, export: Callable,
              calib: Callable) -> dict[str, Any]:
    """Run the sweep (module docstring); ``run_one``/``export``/``calib`` are
    :func:`.run.run_compress`, :func:`.run.export`, :func:`.run.calib_options`."""
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    int8 = cfg.int8 if cfg.int8 != "none" else "ptq"
    points, last = [], {}
    for frac in cfg.sweep:
        sub = replace(cfg, sweep=(), target_macs=frac, out=out / f"macs_{frac:g}", latency_runs=0, int8=int8,
                      importance_cache=out / "importance.pt")
        log(f"=== sweep point --target-macs {frac:g} -> {sub.out}")
        last = run_one(sub, log)
        points.append(_point(frac, last))
    data = last["source"]["data"]
    latency: dict[str, Any] = {"runs": 0}
    if cfg.latency_runs > 0:
        log(f"=== timing {2 * len(points) + 2} models in alternating blocks ({cfg.latency_runs} calls each)")
        latency = _timings(replace(cfg, int8=int8), out, points, export, calib, data)
    s = {"weights": str(cfg.weights), "scale": last["source"]["scale"],
         "source_macs": last["models"]["original"]["macs"],
         "num_eval_faces": last["source"]["num_eval_faces"], "settings": cfg.to_dict(),
         "distill_source": last["settings"]["distill_source"] or "none", "points": points, "latency": latency}
    (out / "sweep.json").write_text(json.dumps(s, indent=2, default=str))
    (out / "sweep.md").write_text(sweep_markdown(s))
    log(f"wrote {out / 'sweep.md'}")
    return s
