"""Where ONNX Runtime spends its time in PKDN models, and what call-by-call interleaving costs.

    .venv/bin/python benchmarks/ort_op_profile.py pkdn_edge/weights/onnx_fp32_x4/model.onnx \
        compressed/x4_c8_p50/onnx_fp32/model.onnx

For each model: ms per batch-1 call and ONNX Runtime's profiler summed per operator type. Then the
models timed alone (one after the other, ``--calls`` each) and interleaved call by call (A B A B
...): on a small CPU the worker threads of the session that just ran keep spinning and slow the
next one, which is why ``pkdn-compress`` times engines in blocks (``measure_latency``).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort


def session(path: str, threads: int, profile_prefix: str | None = None) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    if profile_prefix:
        so.enable_profiling = True
        so.profile_file_prefix = profile_prefix
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def feed(s: ort.InferenceSession) -> dict[str, np.ndarray]:
    i = s.get_inputs()[0]
    shape = [d if isinstance(d, int) else 1 for d in i.shape]
    return {i.name: np.random.default_rng(0).random(shape, dtype=np.float32)}


def op_profile(path: str, threads: int, calls: int) -> tuple[float, list[tuple[str, float, int]]]:
    """(ms per call, [(op type, ms per call, nodes)]) from ONNX Runtime's profiler."""
    s = session(path, threads, profile_prefix=f"/tmp/ort_op_profile_{os.getpid()}")
    x = feed(s)
    t = time.perf_counter()
    for _ in range(calls):
        s.run(None, x)
    ms = (time.perf_counter() - t) / calls * 1e3
    trace = Path(s.end_profiling())
    events = json.loads(trace.read_text())
    trace.unlink()
    dur, nodes = collections.Counter(), collections.defaultdict(set)
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            op = e["args"]["op_name"]
            dur[op] += e["dur"]
            nodes[op].add(e["name"])
    return ms, [(op, d / calls / 1e3, len(nodes[op])) for op, d in dur.most_common()]


def alone_vs_interleaved(paths: list[str], threads: int, calls: int) -> tuple[list[float], list[float]]:
    """Median ms per call of each model timed alone, then interleaved call by call."""
    sessions = [session(p, threads) for p in paths]
    feeds = [feed(s) for s in sessions]
    for s, x in zip(sessions, feeds):
        for _ in range(20):
            s.run(None, x)

    def timed(s, x):
        t = time.perf_counter()
        s.run(None, x)
        return (time.perf_counter() - t) * 1e3

    alone = [float(np.median([timed(s, x) for _ in range(calls)])) for s, x in zip(sessions, feeds)]
    inter: list[list[float]] = [[] for _ in sessions]
    for _ in range(calls):
        for k, (s, x) in enumerate(zip(sessions, feeds)):
            inter[k].append(timed(s, x))
    return alone, [float(np.median(v)) for v in inter]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("models", nargs="+", help="ONNX files")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--calls", type=int, default=300)
    ap.add_argument("--top", type=int, default=8, help="operator types listed per model")
    args = ap.parse_args()
    for p in args.models:
        ms, ops = op_profile(p, args.threads, args.calls)
        print(f"{p}: {ms:.3f} ms/call while profiled ({args.threads} threads)")
        for op, d, n in ops[: args.top]:
            print(f"    {op:24s} {d:7.3f} ms  ({n} nodes)")
    if len(args.models) > 1:
        alone, inter = alone_vs_interleaved(args.models, args.threads, args.calls)
        print(f"median ms/call, alone vs interleaved call by call ({args.calls} calls each):")
        for p, a, b in zip(args.models, alone, inter):
            print(f"    {p}: {a:.3f} alone, {b:.3f} interleaved")
        print(f"    ratio first/second: {alone[0] / alone[1]:.2f}x alone, {inter[0] / inter[1]:.2f}x interleaved")


if __name__ == "__main__":
    main()
