"""Per-layer profile of the OpenVINO INT8 x4 student (``PERF_COUNT``) and its achieved MAC/s as a
fraction of this CPU's measured INT8 peak (benchmarks/vnni_peak.py). A report, not a change.

    .venv/bin/python benchmarks/int8_profile.py                                  # quantise the shipped ONNX now
    .venv/bin/python benchmarks/int8_profile.py --model exports/openvino_int8_x4  # a pkdn-export artifact

Model: ``--model`` (a ``pkdn-export --target openvino --precision int8`` folder or its .xml), else the
shipped ``pkdn_edge/weights/onnx_fp32_x4/model.onnx`` quantised here by NNCF post-training
quantisation on the OpenVINO backend (no torch), calibrated on 300 aligned training faces of
``../shared/faces/train`` shrunk to 32x32 (the demo face, jittered, when ../shared is absent). The
quantised model is only profiled, never shipped.

Timing: batch 1 (one face), one stream, ``--threads`` threads, latency hint, as the webcam runs it;
p50 over ``--runs`` inferences with and without CPU pinning. Per layer (PERF_COUNT of the compiled
graph, summed over the runs): executed kernel, runtime precision, mean ms per inference, share of
the total, MMACs (from the original graph's convolutions/matmuls fused into it) and GMAC/s. The peak
is measured now (``--peak`` skips that). Telemetry is off (pkdn_edge.telemetry). Numbers from a
loaded machine are inflated: run it idle. Writes ``int8_profile.json`` and ``.md`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np

from pkdn_edge.pretrained import WEIGHTS_DIR
from pkdn_edge.telemetry import import_openvino

sys.path.insert(0, str(Path(__file__).resolve().parent))

SHARED_FACES = Path(__file__).resolve().parents[1].parent / "shared" / "faces" / "train"


def calibration_faces(n: int = 300) -> list[np.ndarray]:
    """(1, 3, 32, 32) float32 RGB [0, 1] LR faces: area-shrunk aligned 128x128 crops."""
    files = sorted(SHARED_FACES.glob("*.jpg"))[:n] + sorted(SHARED_FACES.glob("*.png"))[: max(0, n)]
    imgs = [cv2.imread(str(f)) for f in files[:n]]
    imgs = [i for i in imgs if i is not None]
    if not imgs:
        from pkdn_edge.sources import load_demo_face

        face = load_demo_face().image
        rng = np.random.default_rng(0)
        for _ in range(64):
            x, y = rng.integers(0, 60, 2)
            imgs.append(cv2.resize(face[y:y + 300, x:x + 300], (128, 128), interpolation=cv2.INTER_AREA))
    out = []
    for i in imgs:
        lr = cv2.resize(i, (32, 32), interpolation=cv2.INTER_AREA)[..., ::-1].astype(np.float32) / 255.0
        out.append(np.ascontiguousarray(lr.transpose(2, 0, 1)[None]))
    return out


def load_model(path: str | None):
    """The INT8 ov.Model (batch 1) and a description of where it came from."""
    ov = import_openvino()
    core = ov.Core()
    if path:
        p = Path(path)
        xml = p if p.suffix == ".xml" else next(p.glob("*.xml"))
        model, what = core.read_model(str(xml)), str(xml)
    else:
        import nncf  # after import_openvino: telemetry already off

        src = WEIGHTS_DIR / "onnx_fp32_x4" / "model.onnx"
        fp32 = core.read_model(str(src))
        fp32.reshape({fp32.inputs[0].get_any_name(): [1, 3, 32, 32]})
        data = calibration_faces()
        model = nncf.quantize(fp32, nncf.Dataset(data), subset_size=len(data))
        what = f"{src} quantised now by NNCF PTQ (OpenVINO backend, {len(data)} calibration faces)"
    model.reshape({model.inputs[0].get_any_name(): [1, 3, 32, 32]})
    return model, what


def original_macs(model) -> dict[str, int]:
    """MACs of every Convolution / GroupConvolution / MatMul of the (batch-1) original graph, by name."""
    macs = {}
    for op in model.get_ops():
        t = op.get_type_name()
        if t in ("Convolution", "GroupConvolution"):
            out = list(op.get_output_shape(0))
            w = list(op.input_value(1).get_shape())
            macs[op.get_friendly_name()] = int(np.prod(out[:1] + out[2:])) * int(np.prod(w))
        elif t == "MatMul":
            a = list(op.input_value(0).get_shape())
            out = list(op.get_output_shape(0))
            k = a[-1] if not op.get_attributes().get("transpose_a") else a[-2]
            macs[op.get_friendly_name()] = int(np.prod(out)) * int(k)
    return macs


def _rt(op, key: str) -> str:
    rt = op.get_rt_info()
    return rt[key].astype(str) if key in rt else ""


def profile(model, threads: int, runs: int, pin: bool) -> dict:
    ov = import_openvino()
    cfg = {"INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY", "PERF_COUNT": True,
           "ENABLE_CPU_PINNING": pin}
    compiled = ov.Core().compile_model(model, "CPU", cfg)
    req = compiled.create_infer_request()
    x = calibration_faces(1)[0]
    for _ in range(20):
        req.infer({0: x})
    per_layer: dict[str, float] = defaultdict(float)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        req.infer({0: x})
        times.append(time.perf_counter() - t)
        for info in req.profiling_info:
            per_layer[info.node_name] += info.real_time.total_seconds()
    runtime = {op.get_friendly_name(): op for op in compiled.get_runtime_model().get_ops()}
    return {"p50_ms": float(np.median(times)) * 1e3, "min_ms": min(times) * 1e3, "per_layer": per_layer,
            "runtime": runtime, "runs": runs}


def layer_table(prof: dict, macs: dict[str, int], peak_gmacs: float | None) -> tuple[list[dict], dict]:
    runs = prof["runs"]
    rows = []
    total = sum(prof["per_layer"].values()) / runs
    for name, s in prof["per_layer"].items():
        ms = s / runs * 1e3
        op = prof["runtime"].get(name)
        orig = _rt(op, "originalLayersNames").split(",") if op is not None else []
        m = sum(macs.get(o, 0) for o in orig)
        rows.append({"layer": name, "type": _rt(op, "layerType") if op is not None else "?",
                     "kernel": _rt(op, "primitiveType") if op is not None else "?",
                     "precision": _rt(op, "runtimePrecision") if op is not None else "?",
                     "ms": round(ms, 4), "share": round(ms / (total * 1e3), 4) if total > 0 else 0.0,
                     "mmacs": round(m / 1e6, 2),
                     "gmacs": round(m / (ms / 1e3) / 1e9, 1) if m and ms > 0 else None})
    rows.sort(key=lambda r: -r["ms"])
    by_type: dict[str, float] = defaultdict(float)
    for r in rows:
        by_type[f"{r['type']} ({r['precision']})"] += r["ms"]
    all_macs = sum(macs.values())
    summary = {"model_mmacs": round(all_macs / 1e6, 1), "sum_layers_ms": round(total * 1e3, 4),
               "p50_ms": round(prof["p50_ms"], 4), "min_ms": round(prof["min_ms"], 4),
               "achieved_gmacs_p50": round(all_macs / (prof["p50_ms"] / 1e3) / 1e9, 1),
               "ms_by_type": {k: round(v, 4) for k, v in sorted(by_type.items(), key=lambda kv: -kv[1])},
               "conv_ms": round(sum(r["ms"] for r in rows if r["mmacs"]), 4),
               "non_mac_ms": round(sum(r["ms"] for r in rows if not r["mmacs"]), 4)}
    if peak_gmacs:
        summary["peak_int8_gmacs"] = peak_gmacs
        summary["fraction_of_peak_p50"] = round(summary["achieved_gmacs_p50"] / peak_gmacs, 3)
        summary["p50_at_peak_ms"] = round(all_macs / (peak_gmacs * 1e9) * 1e3, 4)
    return rows, summary


def to_markdown(what: str, load: str, summaries: dict, rows: list[dict], top: int = 25) -> str:
    s = summaries["pinned"]
    lines = [f"INT8 x4 student, OpenVINO, batch 1 ({load}); model: {what}", ""]
    for k, v in summaries.items():
        lines.append(f"- {k}: p50 {v['p50_ms']} ms, min {v['min_ms']} ms, {v['achieved_gmacs_p50']} GMAC/s at p50"
                     + (f" = {100 * v['fraction_of_peak_p50']:.1f} % of the measured INT8 peak "
                        f"{v['peak_int8_gmacs']} GMAC/s (the MACs alone would take {v['p50_at_peak_ms']} ms)"
                        if "fraction_of_peak_p50" in v else ""))
    lines += [f"- model: {s['model_mmacs']} MMACs; layers with MACs {s['conv_ms']} ms, layers without MACs "
              f"(reorders, eltwise, pooling, resize, ...) {s['non_mac_ms']} ms of {s['sum_layers_ms']} ms", "",
              "Time by layer type:", "", "| type (precision) | ms | share |", "|---|---|---|"]
    for k, v in s["ms_by_type"].items():
        lines.append(f"| {k} | {v} | {100 * v / max(s['sum_layers_ms'], 1e-9):.1f} % |")
    lines += ["", f"Top {top} layers (pinned run):", "",
              "| layer | type | kernel | precision | ms | share | MMACs | GMAC/s |",
              "|---|---|---|---|---|---|---|---|"]
    for r in rows[:top]:
        lines.append(f"| {r['layer'][:60]} | {r['type']} | {r['kernel']} | {r['precision']} | {r['ms']} | "
                     f"{100 * r['share']:.1f} % | {r['mmacs']} | {r['gmacs'] or ''} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="an exported OpenVINO INT8 x4 folder or .xml")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=300)
    ap.add_argument("--peak", type=float, default=None, help="INT8 peak GMAC/s (default: measured now)")
    ap.add_argument("--out", default="reports/int8_profile")
    a = ap.parse_args(argv)
    load = f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs at the start"
    model, what = load_model(a.model)
    macs = original_macs(model)
    if a.peak is None:
        from vnni_peak import time_case

        a.peak = max(time_case(k, True, a.threads, 2.0)["gmacs_best"] for k in ("matmul", "conv3x3"))
    summaries, tables = {}, {}
    for name, pin in (("unpinned", False), ("pinned", True)):
        prof = profile(model, a.threads, a.runs, pin)
        tables[name], summaries[name] = layer_table(prof, macs, a.peak)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "int8_profile.json").write_text(json.dumps({"model": what, "load": load, "summaries": summaries,
                                                       "layers": tables["pinned"]}, indent=2) + "\n")
    md = to_markdown(what, load, summaries, tables["pinned"])
    (out / "int8_profile.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
