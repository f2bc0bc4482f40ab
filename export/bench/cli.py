"""``pkdn-bench``: latency + quality report of PKDN students side by side with peers.

    pkdn-bench                                  # shipped x4/x8 students, shared/ faces and peers
    pkdn-bench --weights4 runs/a/best.pt --weights8 runs/b/best.pt --out benchmarks/report
    pkdn-bench --configs 'pkdn-x4-*' 'bicubic-*' --runs 50    # a subset (glob patterns on ids)
    pkdn-bench --list                           # print the configuration ids and exit

Builds the artifacts it needs (:mod:`pkdn_edge.export`, into ``--artifacts``, reused while the weights
are unchanged), measures every configuration (by default each in its own process) and writes
``report.md``, ``report.json``, ``latency.png`` and ``pareto.png`` into ``--out``. See
``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import shlex
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from pkdn_edge.errors import CLIParser, PKDNError, run_cli

DEFAULT_OUT = Path("benchmarks/report")
DEFAULT_ARTIFACTS = Path("exports/bench")
INDEX_NAME = "index.json"
SCHEMA = 1


def build_parser() -> argparse.ArgumentParser:
    p = CLIParser(prog="pkdn-bench", formatter_class=argparse.RawDescriptionHelpFormatter,
                description="Latency and quality benchmark of PKDN students, their exported forms and peers.",
                epilog="configuration ids: pkdn-x{4,8}-{torch-fp32,onnxruntime-fp32,openvino-fp32,openvino-int8}, "
                       "fsrcnn-x4, espcn-x4, lapsrn-x4, lapsrn-x8, bicubic-x{4,8}, variants "
                       "<name>-x<s>-<backend>-<precision>, GPU: pkdn-x<s>-torch-{fp32,fp16}-cuda, "
                       "pkdn-x<s>-tensorrt-{fp16,int8}")
    w = p.add_argument_group("models")
    w.add_argument("--weights4", type=Path, default=None,
                   help="x4 student checkpoint (default: shipped pkdn_edge/weights/pkdn_edge_x4.pt)")
    w.add_argument("--weights8", type=Path, default=None,
                   help="x8 student checkpoint (default: shipped pkdn_edge/weights/pkdn_edge_x8.pt)")
    w.add_argument("--scales", type=int, nargs="+", choices=(4, 8), default=[4, 8],
                   help="scales to measure (default 4 8)")
    w.add_argument("--variants", type=Path, nargs="*", default=[],
                   help="pruned/compressed variants: artifact folders, folders of artifacts, or .pt checkpoints")
    w.add_argument("--peers", type=Path, default=None,
                   help="folder with the OpenCV dnn_superres .pb models (default ../shared/peers/opencv_dnn_superres)")
    w.add_argument("--no-peers", action="store_true", help="leave the OpenCV dnn_superres peers out")
    w.add_argument("--configs", nargs="+", default=None, metavar="PATTERN",
                   help="only configurations whose id matches one of these glob patterns")
    w.add_argument("--list", action="store_true", help="print the configuration ids and exit")
    a = p.add_argument_group("artifacts")
    a.add_argument("--artifacts", type=Path, default=DEFAULT_ARTIFACTS,
                   help=f"where exported artifacts are built and reused (default {DEFAULT_ARTIFACTS})")
    a.add_argument("--rebuild", action="store_true", help="export every artifact again")
    a.add_argument("--calib", type=Path, default=None, help="INT8 calibration faces (default ../shared/faces/train)")
    a.add_argument("--calib-size", type=int, default=300, help="INT8 calibration faces (default 300)")
    a.add_argument("--calib-synthetic", action="store_true", help="calibrate INT8 on generated faces (tests only)")
    m = p.add_argument_group("measurement")
    m.add_argument("--faces", type=Path, default=None,
                   help="aligned 128x128 HR evaluation faces (default ../shared/faces/eval)")
    m.add_argument("--num-faces", type=int, default=None, help="use only the first N faces (default all)")
    m.add_argument("--threads", type=int, default=2, help="threads per runtime (default 2)")
    m.add_argument("--warmup", type=int, default=20, help="untimed calls before timing (default 20)")
    m.add_argument("--runs", type=int, default=200, help="timed calls per configuration (default 200)")
    m.add_argument("--no-isolate", action="store_true",
                   help="measure in this process (faster; cold start and memory are less clean)")
    m.add_argument("--stage-runs", type=int, default=100, help="timed runs per pipeline stage (default 100)")
    m.add_argument("--no-stages", action="store_true", help="skip the pipeline-stage timings")
    m.add_argument("--no-gpu", action="store_true", help="skip the GPU section even when CUDA is available")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"report folder (default {DEFAULT_OUT})")
    return p


def _weights(scale: int, given: Path | None) -> Path:
    from pkdn_edge.models.checkpoint import read_checkpoint

    if given is None:
        from pkdn_edge.pretrained import pretrained_path

        try:
            given = pretrained_path(scale)
        except PKDNError:
            raise PKDNError(f"the shipped x{scale} student (pkdn_edge/weights/pkdn_edge_x{scale}.pt) does not exist; "
                            f"pass --weights{scale} PATH (a pkdn-train student checkpoint) or leave x{scale} out "
                            f"with --scales") from None
    cfg = read_checkpoint(given)["config"]
    if int(cfg.get("scale", 0)) != scale:
        raise PKDNError(f"--weights{scale} {given} is a x{cfg.get('scale')} checkpoint")
    if cfg.get("role", "student") != "student":
        raise PKDNError(f"--weights{scale} {given} is a {cfg.get('role')}: benchmark a student (no prior at run time)")
    return Path(given)


def _summary_line(r: dict[str, Any]) -> str:
    if not r.get("ok"):
        return f"{r['id']}: FAILED: {r.get('error')}"
    q = r.get("quality") or {}
    lat = r["latency_ms"]
    psnr = f"  PSNR {q['psnr_ctcnet']:.2f} dB" if q else ""
    return (f"{r['id']}: p50 {lat['p50']:.3f} ms  p99 {lat['p99']:.3f} ms  cold {r['cold_start_ms']:.0f} ms  "
            f"RSS +{r['memory']['peak_delta_mb']:.0f} MB{psnr}")


def run_bench(args: argparse.Namespace, argv: list[str], log: Any = None) -> dict[str, Any]:
    """Everything ``pkdn-bench`` does; returns the report dict (also written to ``args.out``)."""
    from .system import load_average

    log = log or (lambda s: print(s, file=sys.stderr, flush=True))
    load_start = load_average()  # before any work of ours: the machine's own load
    _check_counts(args)
    scales = tuple(sorted(set(args.scales)))
    weights, missing = _all_weights(args, scales)
    gpu, configs, notes = _configurations(args, scales, weights)
    if args.list:
        for c in configs:
            print(f"{c.id:36s} {c.label}")
        return {}
    _check_selection(configs, missing, args)
    faces_dir, hr, lr = _faces(args, scales, len(configs), log)
    notes += _artifacts(configs, args, faces_dir, log)
    machine, results, stages = _measure(configs, lr, hr, args, load_start, log)
    rep = _report(args, argv, machine, gpu, faces_dir, hr, weights, missing, results, stages, notes)
    _write(rep, args.out, log)
    return rep


def _check_counts(args: argparse.Namespace) -> None:
    if args.threads < 1 or args.runs < 1 or args.warmup < 0 or args.stage_runs < 1:
        raise PKDNError("--threads, --runs and --stage-runs must be >= 1 and --warmup >= 0")


def _all_weights(args: argparse.Namespace, scales: tuple[int, ...]) -> tuple[dict[int, Path], dict[int, str]]:
    """The checkpoint per scale; a missing one is fatal only if an x{s} configuration of ours is selected."""
    weights, missing = {}, {}
    for s in scales:
        try:
            weights[s] = _weights(s, getattr(args, f"weights{s}"))
        except PKDNError as exc:
            weights[s], missing[s] = Path(f"<missing x{s} weights>"), str(exc)
    return weights, missing


def _configurations(args: argparse.Namespace, scales: tuple[int, ...],
                    weights: dict[int, Path]) -> tuple[dict[str, Any], list[Any], list[str]]:
    """(GPU facts, the selected configurations: ours, variants, peers, bicubic, GPU; notes)."""
    from .configs import (
        BenchConfig,
        bicubic_configs,
        our_cpu_configs,
        our_gpu_configs,
        peer_configs,
        select,
        variant_configs,
    )
    from .peers import default_peer_dir
    from .system import gpu_info

    gpu = {"cuda": False, "reason": "--no-gpu", "tensorrt": False} if args.no_gpu else gpu_info()
    notes: list[str] = []
    peer_dir = None if args.no_peers else (args.peers or default_peer_dir())
    if args.no_peers:
        peers: list[BenchConfig] = []
        notes.append("peers left out (--no-peers)")
    else:
        if args.peers is not None and not args.peers.is_dir():
            raise PKDNError(f"--peers {args.peers} is not a folder")
        peers, peer_notes = peer_configs(peer_dir, scales)
        notes += peer_notes
    variants, var_notes = variant_configs(args.variants, gpu=bool(gpu.get("cuda")))
    notes += var_notes
    configs = (our_cpu_configs(weights) + [v for v in variants if v.scale in scales] + peers + bicubic_configs(scales)
               + our_gpu_configs(weights, gpu))
    return gpu, select(configs, args.configs), notes


def _check_selection(configs: list[Any], missing: dict[int, str], args: argparse.Namespace) -> None:
    for c in configs:
        if c.weights is not None and c.scale in missing:
            raise PKDNError(missing[c.scale])
    if not configs:
        raise PKDNError(f"no configuration matches --configs {' '.join(args.configs or [])} (see pkdn-bench --list)")


def _faces(args: argparse.Namespace, scales: tuple[int, ...], n_configs: int,
           log: Any) -> tuple[Path, np.ndarray, dict[int, np.ndarray]]:
    """(folder, HR faces (N,128,128,3) uint8, LR per scale (N,3,h,w) float32) of the evaluation."""
    from .quality import default_faces_dir, load_faces, make_lr

    faces_dir = args.faces or default_faces_dir()
    if faces_dir is None:
        raise PKDNError("no evaluation faces: ../shared/faces/eval is absent; pass --faces DIR (aligned 128x128 faces)")
    hr, _ = load_faces(faces_dir, args.num_faces)
    lr = {s: make_lr(hr, s) for s in scales}
    log(f"{len(hr)} evaluation faces from {faces_dir}; {n_configs} configurations")
    return faces_dir, hr, lr


def _artifacts(configs: list[Any], args: argparse.Namespace, faces_dir: Path, log: Any) -> list[str]:
    """Export (or reuse) every artifact the configurations time, then ``<artifacts>/index.json``."""
    from ..settings import CalibOptions
    from .configs import build_artifacts

    # pkdn-export's defaults (NNCF performance preset, ignore=edges, subset 300): the shipped INT8 form
    calib = CalibOptions(folder=args.calib, size=args.calib_size, synthetic=args.calib_synthetic)
    notes = build_artifacts(configs, args.artifacts, threads=args.threads, calib=calib, verify_faces=faces_dir,
                            rebuild=args.rebuild, log=log)
    _write_index(args.artifacts, configs, faces_dir, args.threads)
    return notes


def _measure(configs: list[Any], lr: dict[int, np.ndarray], hr: np.ndarray, args: argparse.Namespace,
             load_start: Any, log: Any) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any] | None]:
    """(machine facts with the load and CPU contention seen, one result per configuration, pipeline stages)."""
    from .system import CpuContention, machine_info

    machine = machine_info(args.threads)
    machine["load_average"] = load_start
    contention = CpuContention().start()
    results = _measure_all(configs, lr, hr, args, log)
    stages = None
    if not args.no_stages:
        log("pipeline stages ...")
        stages = _stages(results, args)
    machine["contention"] = contention.stop()
    return machine, results, stages


def _report(args: argparse.Namespace, argv: list[str], machine: dict[str, Any], gpu: dict[str, Any], faces_dir: Path,
            hr: np.ndarray, weights: dict[int, Path], missing: dict[int, str], results: list[dict[str, Any]],
            stages: dict[str, Any] | None, notes: list[str]) -> dict[str, Any]:
    """The report dict (``report.json``)."""
    from .report import compute_targets
    from .system import load_average

    mem = next((r["memory"]["method"] for r in results if r.get("ok")), "")
    return {
        "schema": SCHEMA,
        "created": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": "pkdn-bench" + ("" if not argv else " " + shlex.join(argv)),
        "machine": machine,
        "load_average_end": load_average(),
        "settings": {"threads": args.threads, "warmup": args.warmup, "runs": args.runs, "batch": 1,
                     "isolate": not args.no_isolate, "memory_method": mem, "stage_runs": args.stage_runs,
                     "latency_statistic": "p50 (median) unless stated", "psnr_protocol": "ctcnet (Y, no crop)"},
        "faces": {"folder": str(faces_dir), "count": int(len(hr)),
                  "lr": "PIL antialiased bicubic downscale (pkdn_edge.train.degradations.bicubic_down)"},
        "weights": {str(s): str(w) for s, w in weights.items() if s not in missing},
        "artifacts": str(args.artifacts),
        "gpu": gpu,
        "targets": compute_targets(results),
        "results": results,
        "stages": stages,
        "notes": notes,
    }


def _write(rep: dict[str, Any], out: Path, log: Any) -> None:
    from .report import write_report

    files = write_report(rep, out)
    for t in rep["targets"]:
        log(f"target {t['name']}: {t['status'].upper()}" + (f" ({t['reason']})" if t.get("reason") else ""))
    log("wrote " + ", ".join(str(f) for f in files))


def _measure_all(configs: list[Any], lr: dict[int, np.ndarray], hr: np.ndarray, args: argparse.Namespace,
                 log: Any) -> list[dict[str, Any]]:
    """One result record per configuration, each in its own process unless ``--no-isolate``;
    ``lr[s]`` (N,3,h,w) float32 and ``hr`` (N,128,128,3) uint8 are the evaluation faces."""
    from .worker import measure, measure_isolated

    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="pkdn-bench-") as tmp:
        npz = Path(tmp) / "faces.npz"
        np.savez(npz, hr=hr, **{f"lr{s}": v for s, v in lr.items()})
        for i, c in enumerate(configs, 1):
            log(f"[{i}/{len(configs)}] {c.id} ...")
            spec = c.to_dict()
            if args.no_isolate:
                try:
                    rec = measure(spec, lr[c.scale], hr, args.threads, args.warmup, args.runs)
                    rec["isolated"] = False
                except Exception as exc:  # noqa: BLE001 - reported, the other configurations go on
                    rec = {**spec, "ok": False, "error": f"{type(exc).__name__}: {exc}"}
            else:
                rec = measure_isolated(spec, npz, args.threads, args.warmup, args.runs)
            results.append(rec)
            log("    " + _summary_line(rec))
    return results


def _write_index(root: Path, configs: list[Any], faces_dir: Path, threads: int) -> None:
    """``<artifacts>/index.json``: the configurations, for the pytest-benchmark suite in benchmarks/."""
    root.mkdir(parents=True, exist_ok=True)
    data = {"faces": str(Path(faces_dir).resolve()), "threads": threads,
            "configs": [dict(c.to_dict(), path=str(Path(c.path).resolve()) if c.path else None) for c in configs]}
    (root / INDEX_NAME).write_text(json.dumps(data, indent=1) + "\n")


def _stages(results: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    """Pipeline stages with the fastest-to-deploy engine of each scale (OpenVINO INT8 first)."""
    from pkdn_edge.engines import load_engine

    from .configs import deploy_choice
    from .stages import measure_stages

    ok = {r["id"]: r for r in results if r.get("ok") and r.get("device", "cpu") == "cpu"}
    engines = {}
    for s in sorted(set(args.scales)):
        r = deploy_choice(ok, s)
        if r is not None:
            engines[s] = load_engine(r["path"], backend=r["backend"], threads=args.threads)
    if not engines:
        return {"error": "none of our CPU configurations was measured"}
    try:
        return measure_stages(engines, args.threads, warmup=min(10, args.warmup), runs=args.stage_runs)
    except Exception as exc:  # noqa: BLE001 - reported in the report
        return {"error": f"{type(exc).__name__}: {exc}"}


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``pkdn-bench``."""
    argv = sys.argv[1:] if argv is None else list(argv)

    def body() -> int:
        args = build_parser().parse_args(argv)
        run_bench(args, argv)
        return 0

    return run_cli(body)


if __name__ == "__main__":
    sys.exit(main())
