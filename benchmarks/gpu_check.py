"""Driver of ``benchmarks/gpu_check.sh`` (issue 25): TensorRT engines of the shipped students with
every available builder, checked against ONNX Runtime and timed, on one NVIDIA GPU, in < 10 min.

    python benchmarks/gpu_check.py --out benchmarks/report/gpu_check [--scales 4 8] [--precisions fp16 int8]

Per scale × precision: one ``pkdn-export --target tensorrt`` artifact (batch 1, the shipped INT8
settings, ``--builder auto``), copied once per builder (torch-tensorrt, tensorrt, trtexec: those
installed) and rebuilt by it. Each engine, through our ``tensorrt`` backend, is compared with ONNX
Runtime (CPU) running the artifact's ONNX on the evaluation faces (max abs diff, PSNR delta;
``verify.compare_outputs``) and timed at batch 1 (p50/p99 of 300 calls after 30 warm-up calls,
host→device→host included, CUDA scheduled with spin-wait like ``trtexec --useSpinWait``; plus
``trtexec --loadEngine --useSpinWait`` when trtexec exists, which also proves trtexec loads it).
Then ``pkdn-bench``'s GPU section and the webcam loop with ``--backend tensorrt`` on a clip.
Writes ``<out>/gpu_check.md`` (+ ``gpu_check.json``). Every step has a time budget; a step that
would pass the deadline is skipped with a line in the report saying so.

``--allow-no-gpu``: smoke test of this script on a CPU machine (exports + ONNX Runtime only; the
report says that nothing was measured on a GPU).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BUILDERS = ("torch-tensorrt", "tensorrt", "trtexec")


class Budget:
    """Seconds left before the deadline; ``allows(s)``: is there room for a step of ``s`` seconds?"""

    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()

    def allows(self, s: float) -> bool:
        return self.left() > s


def log(msg: str) -> None:
    print(f"[gpu_check {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _version(mod: str) -> str | None:
    try:
        import importlib.metadata as md

        return md.version(mod)
    except Exception:
        return None


def machine() -> dict[str, Any]:
    """GPU, driver, compute capability, TensorRT/torch-tensorrt/torch versions, trtexec."""
    from pkdn_edge.engines.trt_common import compute_capability
    from pkdn_edge.export.targets.tensorrt_builders import trtexec_path, trtexec_version, why_unavailable

    info: dict[str, Any] = {"compute_capability": compute_capability()}
    try:
        q = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                           capture_output=True, text=True, timeout=30)
        info["gpu"] = q.stdout.strip().splitlines()[0] if q.returncode == 0 and q.stdout.strip() else None
    except (OSError, subprocess.TimeoutExpired):
        info["gpu"] = None
    for m in ("tensorrt", "torch-tensorrt", "torch", "onnxruntime", "cuda-python", "nncf"):
        info[m] = _version(m)
    exe = trtexec_path()
    v = trtexec_version(exe) if exe else None
    info["trtexec"] = f"{exe} (TensorRT {v[0]}.{v[1]})" if v else exe
    info["builders"] = {b: why_unavailable(b) or "available" for b in BUILDERS}
    return info


def spin_wait() -> str:
    """CUDA spin-wait scheduling for this process (what ``trtexec --useSpinWait`` does for its syncs)."""
    try:
        try:
            from cuda.bindings import runtime as cudart
        except ImportError:
            from cuda import cudart  # type: ignore[no-redef]
        err = cudart.cudaSetDeviceFlags(cudart.cudaDeviceScheduleSpin)
        err = err[0] if isinstance(err, tuple) else err
        return "cudaDeviceScheduleSpin" if int(err) == 0 else f"not set ({err})"
    except Exception as exc:  # no cuda-python: torch's CUDA memory helper, default scheduling
        return f"not set ({type(exc).__name__}: default CUDA scheduling)"


def export_base(scale: int, precision: str, art: Path, faces: Path | None, calib: dict[str, Any],
                builder: str) -> tuple[Path, float, list[str]]:
    """``pkdn-export --target tensorrt`` of the shipped student (batch 1: what pkdn-bench reuses)."""
    from pkdn_edge.export.exporter import run_export
    from pkdn_edge.export.settings import CalibOptions, ExportRequest

    t = time.perf_counter()
    rep = run_export(ExportRequest("tensorrt", precision, None, scale=scale, out=art / f"tensorrt_{precision}_x{scale}",
                                   batch=1, calib=CalibOptions(**calib), threads=os.cpu_count() or 2,
                                   verify_faces=faces, verify_synthetic=faces is None, benchmark=False,
                                   builder=builder, log=lambda s: log("  " + s)))
    return rep.out, time.perf_counter() - t, rep.notes


def references(folder: Path, hr: np.ndarray) -> dict[str, np.ndarray]:
    """ONNX Runtime (CPU) outputs of every ONNX in the artifact on the faces' LR inputs."""
    from pkdn_edge.engines import load_engine
    from pkdn_edge.export.data import to_lr
    from pkdn_edge.manifest import read_manifest

    m = read_manifest(folder)
    lr = to_lr(hr, m.scale)
    out = {}
    for name in sorted(set(m.extras.get("trt_onnx", {}).values()) | {m.model_file}):
        e = load_engine(folder, backend="onnxruntime", threads=os.cpu_count() or 2, model_file=name)
        out[name] = e.run_tensor(lr)
        e.close()
    return out


def time_engine(engine: Any, runs: int = 300, warmup: int = 30) -> dict[str, float]:
    """p50/p99/mean ms of batch-1 ``run_tensor`` calls (host→device→host included)."""
    x = np.random.default_rng(0).random((1, 3, *engine.lr_size), dtype=np.float32)
    for _ in range(warmup):
        engine.run_tensor(x)
    ts = np.empty(runs)
    for i in range(runs):
        t = time.perf_counter()
        engine.run_tensor(x)
        ts[i] = time.perf_counter() - t
    ms = ts * 1e3
    return {"p50": float(np.percentile(ms, 50)), "p99": float(np.percentile(ms, 99)), "mean": float(ms.mean())}


def trtexec_timing(folder: Path, engine_file: str) -> dict[str, Any]:
    """``trtexec --loadEngine --useSpinWait``: median / p99 of its latency and GPU compute time."""
    from pkdn_edge.export.targets.tensorrt_builders import trtexec_path

    exe = trtexec_path()
    if not exe:
        return {"skipped": "no trtexec"}
    argv = [exe, f"--loadEngine={engine_file}", "--useSpinWait", "--iterations=500", "--warmUp=500", "--duration=0",
            "--percentile=50,99"]
    try:
        r = subprocess.run(argv, cwd=folder, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        return {"error": "trtexec timed out"}
    if r.returncode != 0:
        return {"error": " | ".join((r.stderr or r.stdout).strip().splitlines()[-2:])}
    out: dict[str, Any] = {}
    for key, label in (("latency", "Latency"), ("gpu", "GPU Compute Time")):
        m = re.search(rf"{label}: .*?median = ([\d.]+) ms.*?percentile\(99%\) = ([\d.]+) ms", r.stdout)
        if m:
            out[key] = {"p50": float(m.group(1)), "p99": float(m.group(2))}
    return out


def check_builder(base: Path, builder: str, variants: Path, model: Any, hr: np.ndarray, refs: dict[str, np.ndarray],
                  faces: str) -> dict[str, Any]:
    """Rebuild ``base``'s engine with ``builder`` in a copy; parity vs ONNX Runtime; timings."""
    from pkdn_edge.engines import load_engine
    from pkdn_edge.engines.tensorrt import onnx_for_generation, trt_major
    from pkdn_edge.export.data import to_lr
    from pkdn_edge.export.targets.tensorrt_builders import build_and_register
    from pkdn_edge.export.verify import compare_outputs
    from pkdn_edge.manifest import read_manifest

    folder = variants / builder / base.name
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(base, folder)
    t = time.perf_counter()
    build_and_register(builder, folder, model, lambda s: log("  " + s))
    row: dict[str, Any] = {"build_s": round(time.perf_counter() - t, 1)}
    m = read_manifest(folder)
    row.update(engine=m.engine_file, engine_mb=round(m.path(m.engine_file).stat().st_size / 1e6, 2),
               engine_facts=m.extras.get("engine", {}))
    e = load_engine(folder, backend="tensorrt")
    out = e.run_tensor(to_lr(hr, m.scale))
    import tensorrt

    ref_name = "model.onnx" if builder == "torch-tensorrt" else onnx_for_generation(m, trt_major(tensorrt))
    par = compare_outputs(refs[ref_name], out, hr, m.precision, f"tensorrt ({builder})", faces)
    row.update(reference=f"onnxruntime CPU on {ref_name}", max_abs_diff=par.max_abs_diff, psnr_delta_db=par.psnr_delta,
               psnr_db=par.psnr_artifact, ours=time_engine(e))
    e.close()
    row["trtexec"] = trtexec_timing(folder, m.engine_file)
    return row


def run_bench(out: Path, art: Path, calib: dict[str, Any], budget: Budget) -> dict[str, Any]:
    """``pkdn-bench``'s GPU section (PyTorch CUDA, ONNX Runtime CUDA EP, TensorRT fp16/int8), reusing
    the artifacts in ``art``."""
    if not budget.allows(150):
        return {"skipped": f"{budget.left():.0f} s left of the budget"}
    argv = [sys.executable, "-m", "pkdn_edge.export.bench", "--out", str(out / "bench"), "--artifacts", str(art),
            "--configs", "*cuda*", "*tensorrt*", "--num-faces", "50", "--threads", str(min(4, os.cpu_count() or 2))]
    if calib.get("synthetic"):
        argv += ["--calib-synthetic", "--calib-size", str(calib["size"])]
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=max(60, budget.left() - 90))
    except subprocess.TimeoutExpired:
        return {"error": "pkdn-bench ran out of the time budget"}
    res: dict[str, Any] = {"command": " ".join(argv[2:]), "exit": r.returncode}
    if r.returncode != 0:
        res["error"] = " | ".join((r.stderr or r.stdout).strip().splitlines()[-3:])
    elif (out / "bench" / "report.md").is_file():
        res["report"] = "bench/report.md"
    return res


def run_webcam(out: Path, art: Path, clip: str, budget: Budget) -> dict[str, Any]:
    """The webcam loop with ``--backend tensorrt`` on ``clip`` (300 frames, headless)."""
    if not budget.allows(60):
        return {"skipped": f"{budget.left():.0f} s left of the budget"}
    stats = out / "webcam_tensorrt.json"
    argv = [sys.executable, "-m", "pkdn_edge.webcam", "--source", clip, "--backend", "tensorrt", "--headless",
            "--frames", "300", "--stats-json", str(stats)]
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=max(30, budget.left() - 30),
                           env={**os.environ, "PKDN_EXPORTS": str(art)})
    except subprocess.TimeoutExpired:
        return {"error": "the webcam loop ran out of the time budget"}
    res: dict[str, Any] = {"command": " ".join(argv[2:]), "exit": r.returncode}
    if r.returncode != 0:
        res["error"] = " | ".join((r.stderr or r.stdout).strip().splitlines()[-3:])
        return res
    try:
        s = json.loads(stats.read_text())
        res.update({k: s.get(k) for k in ("frames", "fps", "processing_fps", "pipeline_fps") if k in s})
    except (OSError, ValueError):
        res["note"] = "no stats JSON"
    return res


def _fmt(v: Any, nd: int = 3) -> str:
    if isinstance(v, float):
        return f"{v:.{nd}g}" if abs(v) < 1e-2 else f"{v:.{nd}f}"
    return "-" if v is None else str(v)


def report_md(res: dict[str, Any]) -> str:
    """The Markdown report of one run."""
    gpu = res["gpu_measured"]
    lines = ["# GPU check (benchmarks/gpu_check.sh)", "",
             (f"Measured on {res['machine'].get('gpu')} on {res['date']} in {res['seconds']:.0f} s." if gpu else
              "**Nothing here was measured on a GPU**: this is the CPU smoke run of the script (`--allow-no-gpu`)."),
             "", "## Machine", ""]
    lines += [f"- {k}: {_fmt(v)}" for k, v in res["machine"].items()] + [f"- CUDA scheduling: {res['spin']}", ""]
    lines += ["## Engines vs ONNX Runtime (CPU) on the evaluation faces", "",
              f"Faces: {res['faces']}. Latency: batch 1; ours = our `tensorrt` backend's `run_tensor` "
              f"(host→device→host "
              "included), p50/p99 of 300 calls; trtexec = `--loadEngine --useSpinWait` (latency / GPU compute).", "",
              "| scale | precision | builder | engine | build s | max abs diff | PSNR Δ vs ORT (dB) "
              "| ours p50/p99 ms | "
              "trtexec p50/p99 ms | GPU compute p50/p99 ms |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in res["engines"]:
        if "error" in r or "skipped" in r:
            lines.append(f"| ×{r['scale']} | {r['precision']} | {r['builder']} | {r.get('error') or r.get('skipped')} "
                         "| | | | | | |")
            continue
        te, ours = r.get("trtexec", {}), r["ours"]
        tl = te.get("latency") or {}
        tg = te.get("gpu") or {}
        lines.append(f"| ×{r['scale']} | {r['precision']} | {r['builder']} | {r['engine']} ({r['engine_mb']} MB) | "
                     f"{r['build_s']} | {_fmt(r['max_abs_diff'])} | {r['psnr_delta_db']:+.3f} | "
                     f"{ours['p50']:.3f} / {ours['p99']:.3f} | "
                     f"{_fmt(tl.get('p50'))} / {_fmt(tl.get('p99'))} | {_fmt(tg.get('p50'))} / {_fmt(tg.get('p99'))}"
                     + (f" ({te['error']})" if te.get("error") else "") + " |")
    lines += ["", "## Exports", ""] + [f"- {e}" for e in res["exports"]]
    lines += ["", "## pkdn-bench GPU section", "", f"- {json.dumps(res['bench'])}",
              "", "## Webcam loop, --backend tensorrt", "", f"- {json.dumps(res['webcam'])}", ""]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "report" / "gpu_check")
    p.add_argument("--scales", type=int, nargs="+", default=[4, 8])
    p.add_argument("--precisions", nargs="+", default=["fp16", "int8"])
    p.add_argument("--clip", default="demo", help="webcam source for the loop (default: the built-in demo clip)")
    p.add_argument("--budget-s", type=float, default=540, help="stop starting steps after this many seconds")
    p.add_argument("--allow-no-gpu", action="store_true", help="CPU smoke test of this script (nothing measured)")
    p.add_argument("--no-bench", action="store_true")
    p.add_argument("--no-webcam", action="store_true")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    t0, budget = time.perf_counter(), Budget(args.budget_s)
    from pkdn_edge.export.data import shared_faces, verification_faces
    from pkdn_edge.export.targets.tensorrt_builders import why_unavailable
    from pkdn_edge.models.checkpoint import load_model
    from pkdn_edge.pretrained import pretrained_path

    gpu = why_unavailable("tensorrt") is None
    if not gpu and not args.allow_no_gpu:
        print("gpu_check: no CUDA GPU with TensorRT here: nothing was measured (see benchmarks/gpu_check.sh)")
        return 0
    out, art = args.out, args.out / "art"
    out.mkdir(parents=True, exist_ok=True)
    res: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "gpu_measured": gpu,
                           "machine": machine(), "spin": spin_wait() if gpu else "no GPU", "engines": [], "exports": []}
    faces_dir = shared_faces("eval")
    hr, faces = verification_faces(folder=faces_dir, synthetic=faces_dir is None)
    res["faces"] = faces
    calib = {"synthetic": True, "size": 64} if shared_faces("train") is None else {}
    builders = [b for b in BUILDERS if res["machine"]["builders"][b] == "available"]
    for scale in args.scales:
        model, _ = load_model(pretrained_path(scale))
        for prec in args.precisions:
            if not budget.allows(90 if prec == "fp16" else 200):
                res["exports"].append(f"x{scale} {prec}: skipped, {budget.left():.0f} s left")
                continue
            try:
                base, secs, notes = export_base(scale, prec, art, faces_dir, calib, "auto" if gpu else "none")
            except Exception as exc:  # e.g. the engine missed the parity tolerance: say so, go on
                res["exports"].append(f"x{scale} {prec}: FAILED: {type(exc).__name__}: {exc}")
                continue
            res["exports"].append(f"x{scale} {prec}: {base} in {secs:.0f} s" + "".join(f"; {n}" for n in notes[:2]))
            refs = references(base, hr)
            for b in builders:
                row: dict[str, Any] = {"scale": scale, "precision": prec, "builder": b}
                if not budget.allows(60):
                    row["skipped"] = f"{budget.left():.0f} s left"
                else:
                    try:
                        row.update(check_builder(base, b, out / "builders", model, hr, refs, faces))
                    except Exception as exc:  # one builder failing must not stop the check
                        row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
                res["engines"].append(row)
                log(f"x{scale} {prec} {b}: {json.dumps(row, default=str)[:400]}")
    res["bench"] = ({"skipped": "--no-bench or no GPU"} if args.no_bench or not gpu
                    else run_bench(out, art, calib, budget))
    res["webcam"] = {"skipped": "--no-webcam or no GPU"} if args.no_webcam or not gpu else \
        run_webcam(out, art, args.clip, budget)
    res["seconds"] = time.perf_counter() - t0
    (out / "gpu_check.json").write_text(json.dumps(res, indent=2, default=str))
    (out / "gpu_check.md").write_text(report_md(res))
    log(f"report: {out / 'gpu_check.md'} ({res['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
