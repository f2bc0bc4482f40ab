"""Peak INT8 (AVX-512 VNNI / AVX-VNNI) and fp32 multiply-accumulate rate of this CPU, through OpenVINO.

    .venv/bin/python benchmarks/vnni_peak.py [--threads 2] [--seconds 3]

Builds small OpenVINO models that are almost pure multiply-accumulates and times them with the
same settings as the SR engine (one stream, ``--threads`` threads, latency hint):

* ``int8 matmul``: u8 activations x i8 weights (FakeQuantize on both inputs, which OpenVINO's
  low-precision transformations turn into an integer MatMul), M=K=N=1024;
* ``int8 conv3x3``: the same quantisation on a 3x3 convolution, 64 -> 64 channels on 128x128
  (the shape of the model's widest layers, at a size that hides call overhead);
* the same two in fp32.

It prints MAC/s per case and the best INT8 and fp32 rate (the "peak" that benchmarks/int8_profile.py
divides by), and checks in the compiled graph that the INT8 cases really ran in I8/U8. Telemetry is
off (pkdn_edge.telemetry). Timings on a loaded machine are low: run it idle.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

from pkdn_edge.telemetry import import_openvino


def _fq(ops, x, lo: float, hi: float, levels: int = 256):
    c = lambda v: ops.constant(np.array(v, np.float32))  # noqa: E731
    return ops.fake_quantize(x, c(lo), c(hi), c(lo), c(hi), levels)


def build(kind: str, int8: bool):
    """(model, MACs per inference, input shape)."""
    ov = import_openvino()
    import openvino.opset13 as ops

    rng = np.random.default_rng(0)
    if kind == "matmul":
        M = K = N = 1024
        x = ops.parameter([M, K], ov.Type.f32, name="x")
        w = ops.constant(rng.uniform(-1, 1, (K, N)).astype(np.float32))
        a, b = (_fq(ops, x, 0.0, 1.0), _fq(ops, w, -1.0, 1.0, 255)) if int8 else (x, w)
        y = ops.matmul(a, b, False, False)
        return ov.Model([y], [x], f"{kind}_{int8}"), M * K * N, (M, K)
    C, H, W = 64, 128, 128
    x = ops.parameter([1, C, H, W], ov.Type.f32, name="x")
    w = ops.constant(rng.uniform(-0.1, 0.1, (C, C, 3, 3)).astype(np.float32))
    a, b = (_fq(ops, x, 0.0, 1.0), _fq(ops, w, -0.1, 0.1, 255)) if int8 else (x, w)
    y = ops.convolution(a, b, [1, 1], [1, 1], [1, 1], [1, 1])
    if int8:
        y = _fq(ops, y, -8.0, 8.0)  # an INT8 consumer, as between the model's layers
    return ov.Model([y], [x], f"{kind}_{int8}"), C * C * 9 * H * W, (1, C, H, W)


def _precisions(compiled) -> set[str]:
    out = set()
    for op in compiled.get_runtime_model().get_ops():
        rt = op.get_rt_info()
        if "layerType" in rt and rt["layerType"].astype(str) in ("MatMul", "FullyConnected", "Convolution"):
            out.add(f"{rt['runtimePrecision'].astype(str)} {rt['primitiveType'].astype(str)}")
    return out


def time_case(kind: str, int8: bool, threads: int, seconds: float) -> dict:
    ov = import_openvino()
    model, macs, shape = build(kind, int8)
    core = ov.Core()
    compiled = core.compile_model(model, "CPU", {"INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1,
                                                 "PERFORMANCE_HINT": "LATENCY"})
    req = compiled.create_infer_request()
    x = np.random.default_rng(1).uniform(0, 1, shape).astype(np.float32)
    for _ in range(5):
        req.infer({0: x})
    times = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t = time.perf_counter()
        req.infer({0: x})
        times.append(time.perf_counter() - t)
    best, p50 = min(times), float(np.median(times))
    return {"case": f"{'int8' if int8 else 'fp32'} {kind}", "macs": macs, "runs": len(times),
            "ms_min": round(best * 1e3, 3), "ms_p50": round(p50 * 1e3, 3),
            "gmacs_best": round(macs / best / 1e9, 1), "gmacs_p50": round(macs / p50 / 1e9, 1),
            "runtime_precision": sorted(_precisions(compiled))}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=3.0, help="timing per case")
    ap.add_argument("--json", default=None, help="write the results here")
    a = ap.parse_args(argv)
    rows = [time_case(k, q, a.threads, a.seconds) for q in (True, False) for k in ("matmul", "conv3x3")]
    for r in rows:
        print(f"{r['case']:>14}: {r['gmacs_best']:8.1f} GMAC/s best, {r['gmacs_p50']:8.1f} p50 "
              f"({r['ms_min']} ms min, runtime precision {','.join(r['runtime_precision'])})")
    peak = {"int8_gmacs": max(r["gmacs_best"] for r in rows if r["case"].startswith("int8")),
            "fp32_gmacs": max(r["gmacs_best"] for r in rows if r["case"].startswith("fp32")),
            "threads": a.threads, "load": f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs"}
    print(f"peak: int8 {peak['int8_gmacs']} GMAC/s, fp32 {peak['fp32_gmacs']} GMAC/s ({peak['load']})")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"peak": peak, "cases": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
