"""Measure one configuration: import, cold start, warm latency, peak memory, quality.

:func:`measure` does it in this process; :func:`measure_isolated` runs ``python -m
pkdn_edge.export.bench.worker SPEC RESULT`` in a fresh process (the default of ``pkdn-bench``), so every
configuration starts cold (its backend library not yet imported or initialised, nothing else's
memory in the heap) and the peak-RSS figure is its own.

Order of one measurement (times with ``time.perf_counter``):

1. **import**: import the backend's package (``openvino``, ``onnxruntime``, ``torch``, …; numpy,
   OpenCV and ``pkdn_edge.engines`` are imported before);
2. **cold start** = **load** (open the artifact: read + compile / create the session, or read the
   checkpoint and build the model) + **first inference** (one face);
3. ``warmup`` untimed inferences, then ``runs`` timed ones (:func:`.timing.time_calls`), each on
   one aligned LR face (cycling through the evaluation faces), uint8 BGR in → uint8 BGR out,
   pre/post-processing included, batch 1; GPU work is synchronized inside the timed region;
4. peak RSS growth from before the load to the end of the timed runs (:class:`.timing.PeakRSS`);
5. quality on every evaluation face (:func:`.quality.evaluate`).
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .timing import PeakRSS, latency_stats, time_calls

BACKEND_PACKAGES = {"torch": "torch", "onnxruntime": "onnxruntime", "openvino": "openvino", "tensorrt": "tensorrt",
                    "opencv-dnn": "cv2", "pil": "PIL.Image"}


def open_runner(cfg: dict[str, Any], threads: int) -> tuple[Any, dict[str, Any]]:
    """The runner object (``.run(face)``) of a configuration and facts about it."""
    import cv2

    cv2.setNumThreads(max(1, threads))  # OpenCV pre/post-processing and the dnn peers
    rt = cfg["runtime"]
    if rt == "bicubic":
        from .peers import PILBicubic

        return PILBicubic(cfg["scale"]), {}
    if rt == "opencv":
        from .peers import OpenCVSuperRes

        return OpenCVSuperRes(cfg["path"], cfg["scale"], name=cfg["label"], threads=threads), {}
    if rt == "engine":
        from pkdn_edge.engines import load_engine

        opts = dict(cfg.get("options") or {})
        precision = opts.pop("precision", None)
        engine = load_engine(cfg["path"], backend=cfg["backend"], threads=threads, precision=precision, **opts)
        info = {"engine": repr(engine)}
        hint = getattr(engine, "inference_precision", None)
        if hint:
            info["inference_precision_hint"] = hint
        return engine, info
    raise ValueError(f"unknown runtime {rt!r}")


def device_sync(cfg: dict[str, Any]) -> Callable[[], None] | None:
    """``torch.cuda.synchronize`` for a CUDA configuration (None otherwise)."""
    if cfg.get("device") != "cuda" or "torch" not in sys.modules:
        return None
    torch = sys.modules["torch"]
    return torch.cuda.synchronize if torch.cuda.is_available() else None


def measure(cfg: dict[str, Any], lr_rgb: np.ndarray, hr_rgb: np.ndarray | None, threads: int = 2, warmup: int = 20,
            runs: int = 200, quality: bool = True) -> dict[str, Any]:
    """Measure one configuration (a :meth:`BenchConfig.to_dict`) on protocol LR faces ``lr_rgb``
    (N,h,w,3) uint8 RGB (and their HR faces for quality). Returns the result record."""
    faces = [np.ascontiguousarray(x[..., ::-1]) for x in lr_rgb]  # engines take BGR
    import cv2  # noqa: F401 - runtime core, imported before the backend is timed

    import pkdn_edge.engines  # noqa: F401
    from pkdn_edge.telemetry import disable as telemetry_off

    from . import peers  # noqa: F401

    telemetry_off()  # before `import openvino`, which otherwise reports usage over the network
    clock = time.perf_counter
    t = clock()
    importlib.import_module(BACKEND_PACKAGES.get(cfg["backend"], "cv2"))
    import_ms = (clock() - t) * 1e3
    mem = PeakRSS().start()
    t0 = clock()
    runner, info = open_runner(cfg, threads)
    t1 = clock()
    sync = device_sync(cfg)
    runner.run(faces[0])
    if sync is not None:
        sync()
    t2 = clock()
    samples = time_calls(runner.run, faces, warmup, runs, sync)
    memory = mem.stop()
    q = None
    if quality and hr_rgb is not None:
        from .quality import evaluate

        q = evaluate(runner.run, np.stack(faces), hr_rgb)
    close = getattr(runner, "close", None)
    if close is not None:
        close()
    return {**cfg, "ok": True, "threads": threads, "warmup": warmup, "import_ms": import_ms,
            "load_ms": (t1 - t0) * 1e3, "first_ms": (t2 - t1) * 1e3, "cold_start_ms": (t2 - t0) * 1e3,
            "latency_ms": latency_stats(samples), "samples_ms": [round(float(v), 4) for v in samples],
            "memory": memory, "quality": q, "info": info}


def failure(cfg: dict[str, Any], message: str) -> dict[str, Any]:
    return {**cfg, "ok": False, "error": message}


def measure_isolated(cfg: dict[str, Any], faces_npz: Path, threads: int, warmup: int, runs: int,
                     quality: bool = True, timeout: float = 900.0) -> dict[str, Any]:
    """:func:`measure` in a fresh ``python -m pkdn_edge.export.bench.worker`` process; faces come from
    ``faces_npz`` (arrays ``hr`` and ``lr<scale>``). A crash or timeout gives a failure record."""
    with tempfile.TemporaryDirectory(prefix="pkdn-bench-") as tmp:
        spec, result = Path(tmp) / "spec.json", Path(tmp) / "result.json"
        spec.write_text(json.dumps({"config": cfg, "faces": str(faces_npz), "threads": threads, "warmup": warmup,
                                    "runs": runs, "quality": quality}))
        try:
            proc = subprocess.run([sys.executable, "-m", "pkdn_edge.export.bench.worker", str(spec), str(result)],
                                  capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return failure(cfg, f"timed out after {timeout:.0f} s")
        if result.is_file():
            return json.loads(result.read_text())
        tail = (proc.stderr or proc.stdout or "").strip().splitlines()[-3:]
        return failure(cfg, f"worker exited with code {proc.returncode}: {' | '.join(tail)}")


def main(argv: list[str] | None = None) -> int:
    """``python -m pkdn_edge.export.bench.worker SPEC.json RESULT.json`` (used by :func:`measure_isolated`)."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m pkdn_edge.export.bench.worker SPEC.json RESULT.json", file=sys.stderr)
        return 2
    spec = json.loads(Path(args[0]).read_text())
    cfg = spec["config"]
    try:
        with np.load(spec["faces"]) as z:
            lr = z[f"lr{cfg['scale']}"]
            hr = z["hr"] if spec.get("quality", True) else None
        rec = measure(cfg, lr, hr, spec["threads"], spec["warmup"], spec["runs"], spec.get("quality", True))
        rec["isolated"] = True
    except Exception as exc:  # noqa: BLE001 - reported in the benchmark, not raised
        rec = failure(cfg, f"{type(exc).__name__}: {exc}")
        traceback.print_exc()
    tmp = Path(args[1]).with_suffix(".tmp")
    tmp.write_text(json.dumps(rec))
    os.replace(tmp, args[1])
    return 0 if rec.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
