"""``pkdn-compress``: structured pruning → distillation fine-tuning → INT8, measured, in one command.

    pkdn-compress --weights runs/camera_x4_student/best.pt --target-macs 0.72 \\
        --finetune-steps 3000 --int8 ptq --out compressed/x4

Stages (one log line each; run the same command again to resume an interrupted run):

1. **prune** (:mod:`.compress_prune`, :mod:`.prune_search`, :mod:`.prune`): ``--target-macs F``
   searches the per-layer widths with at most ``F`` of the source's MACs that drop the least
   important channels (Taylor importance on training batches, :mod:`.importance`), on a
   ``--multiple``-channel grid; ``--prune R`` removes ``R`` of every channel space. Pixel-shuffle
   groups stay whole. ``--prune-steps N`` prunes in ``N`` steps with fine-tuning in between.
2. **fine-tune**: ``pkdn-train student --set init=pruned_init.pt teacher=<source>``: the source
   student's own training settings (degradation and camera settings included), L1 + feature +
   output distillation from the **unpruned student** (``--distill-from source``, the default
   without ``--teacher``) or a teacher; the feature adapters start as channel selections.
3. **INT8** (NNCF), ``--int8``: ``ptq`` (OpenVINO PTQ), ``acc`` (with accuracy control), ``qat``
   (PTQ + quantization-aware training with the same distillation, :mod:`.qat`) or ``none``.
4. **evaluate** (:mod:`.compress_report`): PSNR/SSIM under the paper (bicubic) and the camera
   protocol, for the original, the pruned model before and after fine-tuning and the INT8 artifact.
5. **latency**: ms/face at batch 1, ``--threads`` threads, the models timed in alternating blocks
   (:func:`.compress_report.measure_latency`): ONNX Runtime fp32 and OpenVINO fp32/int8.
6. **report**: ``report.md`` + ``report.json``.

``--sweep 0.9 0.8 0.72 …`` runs the whole recipe once per MAC fraction and writes one table
(:mod:`.compress_sweep`). Output folder::

    compressed/x4/
      compress.json        what this folder was made from (a re-run must match it)
      source.pt            the unpruned student (the distillation source)
      importance.pt        channel importance of the source (Taylor)
      step1/ …             earlier pruning steps (--prune-steps > 1): pruned_init.pt + run
      pruned_init.pt       pruned, before fine-tuning (metadata: kept channels)
      finetune/            pkdn-train run folder (last.pt, best.pt, log.csv)
      pruned.pt            pruned + fine-tuned fp32 checkpoint (load_model / pkdn-export --weights)
      qat/                 QAT run folder (--int8 qat)
      onnx_fp32/ openvino_fp32/ openvino_int8/ [tensorrt_int8/]   pkdn-export artifacts
      report.md, report.json

Bad input → one ``error:`` line, exit code 2.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable

from pkdn_edge.errors import CLIParser, PKDNError, run_cli, sigterm_as_interrupt

from .compress_config import INT8_MODES, RESERVED_TRAIN_KEYS, CompressConfig, check  # noqa: F401 (API)
from .compress_prune import INHERITED_TRAIN_KEYS, Run, source_train_settings, train_config  # noqa: F401 (API)
from .compress_report import (LATENCY_BLOCK, SPEEDUP_TARGET, evaluate, measure_latency,  # noqa: F401 (API)
                              notes, report_markdown, speedups)

STATE_NAME = "compress.json"
REPORT_KEYS = ("settings", "models", "quality", "latency", "artifacts", "stages")


# ------------------------------------------------------------------------------------------------ inputs


def _eval_faces(folder: Path | None) -> Path:
    from .data import shared_faces

    faces = Path(folder) if folder else shared_faces("eval")
    if faces is None:
        raise PKDNError("no evaluation faces: ../shared/faces/eval is absent; pass --faces DIR (aligned 128x128 faces)")
    if not faces.is_dir():
        raise PKDNError(f"--faces folder {faces} does not exist")
    return faces


def _load_student(path: Path) -> tuple[Any, dict[str, Any]]:
    from pkdn_edge.models.checkpoint import load_model

    model, meta = load_model(path)
    if model.cfg.role != "student":
        raise PKDNError(f"{path} is a teacher; pkdn-compress compresses students (pass the teacher as --teacher)")
    return model, meta


def _check_teacher(path: Path | None, scale: int) -> None:
    if path is None:
        return
    from pkdn_edge.models.checkpoint import load_model

    teacher, _ = load_model(path)
    if teacher.cfg.role != "teacher" or teacher.cfg.scale != scale:
        raise PKDNError(f"--teacher {path} is a x{teacher.cfg.scale} {teacher.cfg.role}; need a x{scale} teacher")


def _prepare_out(out: Path, state: dict[str, Any]) -> None:
    """Create ``out`` or check that it holds a run of the same weights and pruning settings."""
    if out.exists() and not out.is_dir():
        raise PKDNError(f"--out {out} exists and is not a folder")
    f = out / STATE_NAME
    if f.is_file():
        old = json.loads(f.read_text())
        diff = [k for k in state if old.get(k) != state[k]]
        if diff:
            raise PKDNError(f"--out {out} holds a compression with other {', '.join(diff)}; choose another --out "
                            f"(or delete it to start over)")
    elif out.is_dir() and any(out.iterdir()):
        raise PKDNError(f"--out {out} is a non-empty folder that is not a pkdn-compress output; choose another --out")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PKDNError(f"cannot create --out {out}: {exc.strerror or exc}") from None
    f.write_text(json.dumps(state, indent=2))


def _sha256(path: Path) -> str:
    from pkdn_edge.manifest import sha256_file

    return sha256_file(path)


def complexity(model: Any) -> dict[str, Any]:
    """Params and MACs (per output face) of a PKDN student, plus its widths."""
    import torch

    from pkdn_edge.models.complexity import count_macs, count_params

    n = 128 // model.cfg.scale
    return {"params": count_params(model), "macs": count_macs(model, torch.rand(1, 3, n, n)),
            "widths": list(model.cfg.widths), "refine_width": model.cfg.refine_width, "mid_ratio": model.cfg.mid_ratio}


def export(target: str, precision: str, weights: Path, out: Path, threads: int, **options: Any) -> Any:
    """One ``pkdn-export`` of ``weights`` (batch 1, no benchmark; quiet unless ``log`` is given)."""
    from .exporter import run_export
    from .settings import ExportRequest

    options = {"verify": False, "log": lambda s: None, **options}
    return run_export(ExportRequest(target, precision, weights, out=out, batch=1, threads=threads, benchmark=False,
                                    window=0,  # scored and timed on the 128/s training crop
                                    **options))


def _start(cfg: CompressConfig, log: Callable[[str], None]) -> tuple[Run, Path]:
    """Check everything, load the source, prepare ``--out`` → (the run, the evaluation faces)."""
    from pkdn_edge.models.checkpoint import export_weights

    check(cfg)
    faces_dir = _eval_faces(cfg.faces)
    weights = Path(cfg.weights)
    student, meta = _load_student(weights)
    _check_teacher(cfg.teacher if cfg.distill_mode() == "teacher" else None, student.cfg.scale)
    base, source = source_train_settings(meta, weights, cfg.train_config)
    if cfg.data:
        base["data"] = cfg.data
    data = base.setdefault("data", "../shared/faces/train")
    needs_data = cfg.finetune_steps > 0 or cfg.int8 == "qat" or cfg.target_macs is not None or cfg.importance == "taylor"
    if needs_data and not Path(data).is_dir():
        raise PKDNError(f"training faces {data} not found (fine-tuning, QAT and Taylor importance need them); pass --data DIR")
    out = Path(cfg.out)
    _prepare_out(out, {"weights": weights.name, "weights_sha256": _sha256(weights), **cfg.state()})
    if not (out / "source.pt").is_file():
        export_weights(student, out / "source.pt", meta={**meta, "train": base, "copied_from": str(weights)})
    log(f"[0/6] {weights} (x{student.cfg.scale}, widths {list(student.cfg.widths)}); training settings from {source} "
        f"({base.get('degradation', 'bicubic')} degradation)")
    return Run(cfg, out, weights, student, base, source, log), faces_dir


# ------------------------------------------------------------------------------------------------ stages


def _save_pruned(run: Run, res: Any) -> Path:
    """``pruned.pt``: the fine-tuned (or just pruned) model with its pruning and fine-tuning facts."""
    from pkdn_edge.models.checkpoint import export_weights

    final = run.out / "pruned.pt"
    meta: dict[str, Any] = {"pruning": {**res.meta, "source_sha256": _sha256(run.weights)}}
    if res.finetune:
        meta["finetune"] = res.finetune["config"]
        meta["train"] = train_config(run, run.out / "finetune", res.finetune["steps"], run.cfg.finetune_lr).to_dict()
        run.stages["finetune"] = res.finetune
    export_weights(res.tuned, final, meta=meta)
    return final


def _int8(run: Run, tuned: Any, final: Path, artifacts: dict[str, str]) -> Any:
    """Stage 3: the INT8 artifact(s) of ``final``; returns the OpenVINO INT8 engine or None."""
    from pkdn_edge.engines import load_engine

    from .context import QuantizedModel

    cfg = run.cfg
    if cfg.int8 == "none":
        run.log("[3/6] no INT8 (--int8 none)")
        return None
    calib = calib_options(cfg, run.train_base["data"])
    settings = calib.settings
    int8_model = None
    if cfg.int8 == "qat":
        from pkdn_edge.models.checkpoint import read_checkpoint

        from .data import calibration_faces, to_lr
        from .qat import run_qat

        fs = calibration_faces(calib.folder, calib.size, calib.select_size, synthetic=calib.synthetic)
        qcfg = train_config(run, run.out / "qat", cfg.qat_steps, cfg.qat_lr, warmup_steps=min(20, max(1, cfg.qat_steps // 10)))
        qcfg.w_feat = qcfg.w_feat_end  # the student is already distilled: the final feature weight throughout
        last = run.out / "finetune" / "last.pt"
        adapters = (read_checkpoint(last).get("adapters") or None) if last.is_file() else None
        run.log(f"[3/6] INT8 QAT: NNCF PTQ ({settings.label()}, {len(fs.calib)} faces) then {qcfg.steps} QAT steps "
                f"at lr {qcfg.lr:g} (resumes from {run.out / 'qat' / 'last.pt'})")
        q, qsum = run_qat(tuned, qcfg, to_lr(fs.calib, run.scale), settings, adapters, progress=cfg.progress)
        run.stages["qat"] = qsum
        int8_model = QuantizedModel(q, {"method": "qat", **settings.to_dict(), "calibration": fs.source, **qsum})
    else:
        run.log(f"[3/6] INT8 {'accuracy-controlled ' if cfg.int8 == 'acc' else ''}PTQ on OpenVINO ({settings.label()})")
    r = export("openvino", "int8", final, run.out / "openvino_int8", cfg.threads, calib=calib, log=run.log,
               int8_model=int8_model)
    artifacts["openvino_int8"] = r.out.name
    from pkdn_edge.manifest import read_manifest

    extras = read_manifest(r.out).extras
    run.stages["int8"] = {"mode": cfg.int8, "calibration": extras.get("calibration"), **extras.get("quantization", {})}
    if cfg.tensorrt:
        r = export("tensorrt", "int8", final, run.out / "tensorrt_int8", cfg.threads, calib=calib, log=run.log,
                   int8_model=int8_model)
        artifacts["tensorrt_int8"] = r.out.name
    return load_engine(run.out / "openvino_int8", threads=cfg.threads)


def calib_options(cfg: CompressConfig, data: str) -> Any:
    """INT8 calibration of ``cfg``: NNCF settings and faces (--calib, else the training data; None
    = shared/faces/train with pkdn-train's split)."""
    from .context import CalibOptions
    from .data import shared_faces
    from .quantize import Int8Settings

    folder = Path(cfg.calib) if cfg.calib is not None else Path(data)
    train = shared_faces("train")
    if cfg.calib is None and train is not None and folder.resolve() == train.resolve():
        folder = None
    settings = Int8Settings(preset=cfg.int8_preset, ignore=tuple(cfg.ignore), subset_size=cfg.calib_size)
    return CalibOptions(folder=folder, size=cfg.calib_size, synthetic=cfg.calib_synthetic, settings=settings,
                        accuracy_control=cfg.int8 == "acc", max_drop=cfg.max_drop)


def fp32_targets() -> list[str]:
    import importlib.util

    return ["onnx"] + (["openvino"] if importlib.util.find_spec("openvino") is not None else [])


def _latency(run: Run, int8_engine: Any) -> dict[str, Any]:
    """Stage 5: original vs pruned in ONNX Runtime / OpenVINO fp32 (+ the INT8 engine), one run."""
    from pkdn_edge.engines import load_engine

    cfg = run.cfg
    latency: dict[str, Any] = {"batch": 1, "threads": cfg.threads, "runs": cfg.latency_runs, "block": LATENCY_BLOCK,
                               "rows": []}
    if cfg.latency_runs == 0:
        run.log("[5/6] no latency measurement (--latency-runs 0)")
        return latency
    run.log(f"[5/6] latency: batch 1, {cfg.threads} threads, {cfg.latency_runs} calls per model in alternating blocks")
    ref_dir = run.out / ".reference"
    shutil.rmtree(ref_dir, ignore_errors=True)
    try:
        engines: dict[tuple[str, str, str], Any] = {}
        for target in fp32_targets():
            backend = "onnxruntime" if target == "onnx" else "openvino"
            r = export(target, "fp32", run.out / "source.pt", ref_dir / target, cfg.threads)
            engines[("original", backend, "fp32")] = load_engine(r.out, threads=cfg.threads)
            engines[("pruned", backend, "fp32")] = load_engine(run.out / f"{target}_fp32", threads=cfg.threads)
        if int8_engine is not None:
            engines[(f"pruned + INT8 {cfg.int8}", "openvino", "int8")] = int8_engine
        ms = measure_latency(engines, cfg.latency_runs)
    finally:
        shutil.rmtree(ref_dir, ignore_errors=True)
    for (name, backend, precision), v in ms.items():
        latency["rows"].append({"model": name, "backend": backend, "precision": precision, **v})
    latency.update(speedups(ms, "original", "pruned"))
    return latency


def run_compress(cfg: CompressConfig, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run every stage (see the module docstring); returns the report dict (also written as
    ``report.json``/``report.md`` in ``cfg.out``). With ``cfg.sweep``: :func:`.compress_sweep.run_sweep`."""
    import torch

    if cfg.sweep:
        from .compress_sweep import run_sweep

        return run_sweep(cfg, log, run_one=run_compress, export=export, calib=calib_options)
    t_start = time.time()
    run, faces_dir = _start(cfg, log)
    torch.set_num_threads(cfg.threads)
    from .compress_prune import prune_and_finetune

    res = prune_and_finetune(run)  # stages 1-2
    final = _save_pruned(run, res)
    c0, c1 = complexity(run.student), complexity(res.tuned)
    log(f"      pruned: {c0['params'] / 1e6:.3f} M -> {c1['params'] / 1e6:.3f} M params, {c0['macs'] / 1e6:.1f} -> "
        f"{c1['macs'] / 1e6:.1f} MMACs/face ({c1['macs'] / c0['macs']:.0%}), widths {c0['widths']} -> {c1['widths']}")
    artifacts = {"source": "source.pt", "pruned_init": "pruned_init.pt", "pruned": final.name}
    int8_engine = _int8(run, res.tuned, final, artifacts)  # stage 3
    for target in fp32_targets():
        artifacts[f"{target}_fp32"] = export(target, "fp32", final, run.out / f"{target}_fp32", cfg.threads,
                                             verify=True, verify_faces=faces_dir).out.name
    from pkdn_edge.train.data import FaceData

    hr = FaceData.load(faces_dir, recursive=False).hr
    log(f"[4/6] evaluating on {len(hr)} faces from {faces_dir} (bicubic and camera protocols)")
    models: dict[str, Any] = {"original (fp32)": run.student, "pruned, before fine-tuning (fp32)": res.init}
    if res.finetune:
        models["pruned + fine-tuned (fp32)"] = res.tuned
    if int8_engine is not None:
        models[f"pruned + INT8 {cfg.int8} (OpenVINO)"] = int8_engine
    rows = evaluate(models, hr, run.scale, cfg.threads)
    latency = _latency(run, int8_engine)
    report = {
        "settings": {**cfg.to_dict(), "distill_source": run.distill_path},
        "source": {"weights": str(run.weights), "sha256": _sha256(run.weights), "teacher": str(cfg.teacher or ""),
                   "scale": run.scale, "eval_faces": str(faces_dir), "num_eval_faces": int(len(hr)),
                   "label": cfg.label(), "train_settings": run.train_source, "data": run.train_base["data"]},
        "models": {"original": c0, "pruned": c1},
        "quality": {"protocols": {"bicubic": "LR = PIL bicubic down", "camera": "frozen camera protocol"},
                    "metrics": {"ctcnet": "Y, no crop", "dic": "Y, 8-px crop"}, "rows": rows},
        "latency": latency, "artifacts": artifacts, "stages": run.stages,
        "notes": notes(cfg, rows, latency), "seconds": round(time.time() - t_start, 1),
    }
    (run.out / "report.json").write_text(json.dumps(report, indent=2, default=str))
    (run.out / "report.md").write_text(report_markdown(report))
    log(f"[6/6] wrote {run.out / 'report.md'} and {run.out / 'report.json'}")
    return report


# ------------------------------------------------------------------------------------------------ CLI


def build_parser() -> argparse.ArgumentParser:
    from .quantize import IGNORE_GROUPS, PRESETS

    p = CLIParser(prog="pkdn-compress", formatter_class=argparse.RawDescriptionHelpFormatter,
                  description="Compress a PKDN student: structured pruning, distillation fine-tuning, NNCF INT8; "
                              "writes checkpoints, artifacts and report.md/report.json.",
                  epilog="examples:\n  pkdn-compress --weights runs/camera_x4_student/best.pt --target-macs 0.72 "
                         "--finetune-steps 3000 --out compressed/x4\n  pkdn-compress --weights "
                         "runs/camera_x4_student/best.pt --sweep 0.9 0.8 0.72 0.6 --finetune-steps 500 "
                         "--out compressed/x4_sweep")
    p.add_argument("--weights", type=Path, required=True, help="student checkpoint to compress")
    p.add_argument("--teacher", type=Path, default=None, help="teacher checkpoint for distillation (same scale)")
    p.add_argument("--out", type=Path, required=True, help="output folder (re-run the same command to resume)")
    p.add_argument("--prune", type=float, default=0.5,
                   help="uniform pruning: fraction of every channel space removed, in [0, 1) (default 0.5)")
    p.add_argument("--target-macs", type=float, default=None,
                   help="per-layer pruning to at most this fraction of the source's MACs (overrides --prune)")
    p.add_argument("--target-speedup", type=float, default=None,
                   help="with --target-macs: also an estimated OpenVINO INT8 speed-up of at least this (e.g. 1.3)")
    p.add_argument("--sweep", type=float, nargs="+", default=(), metavar="F",
                   help="run the recipe for each MAC fraction and write one ratio table (sweep.md)")
    p.add_argument("--prune-steps", type=int, default=1, help="prune in this many steps, fine-tuning between (default 1)")
    p.add_argument("--importance", choices=("taylor", "norm"), default="taylor",
                   help="channel importance: taylor (measured on training batches) or norm (weights only)")
    p.add_argument("--importance-batches", type=int, default=64, help="training batches for taylor (default 64)")
    p.add_argument("--multiple", type=int, default=16, help="channel grid of --target-macs widths (default 16)")
    p.add_argument("--distill-from", choices=("auto", "source", "teacher", "none"), default="auto",
                   help="distillation source: the unpruned student (source), --teacher, or none; auto: the teacher "
                        "when given, else the source")
    p.add_argument("--train-config", type=Path, default=None,
                   help="the source's training YAML, used when its checkpoint records no training settings")
    p.add_argument("--finetune-steps", type=int, default=1500, help="distillation fine-tuning steps, all pruning steps "
                                                                   "together (0: none)")
    p.add_argument("--finetune-lr", type=float, default=2e-4, help="fine-tuning peak learning rate (cosine decay)")
    p.add_argument("--int8", choices=INT8_MODES, default="ptq",
                   help="ptq: NNCF PTQ on OpenVINO; acc: PTQ with accuracy control (--max-drop); qat: PTQ + "
                        "quantization-aware training with distillation; none: fp32 only (default ptq)")
    p.add_argument("--qat-steps", type=int, default=300, help="QAT steps (--int8 qat)")
    p.add_argument("--qat-lr", type=float, default=1e-5, help="QAT peak learning rate")
    p.add_argument("--faces", type=Path, default=None, help="evaluation faces (default ../shared/faces/eval)")
    p.add_argument("--data", default=None, help="training faces (default: the student's training data)")
    p.add_argument("--calib", type=Path, default=None, help="calibration faces (default: --data; never the eval set)")
    p.add_argument("--calib-size", type=int, default=300, help="calibration faces (default 300)")
    p.add_argument("--calib-synthetic", action="store_true", help="calibrate on generated faces (CI only)")
    p.add_argument("--ignore", default="edges",
                   help=f"ignored-scope groups kept in float, comma-separated, or none: "
                        f"{', '.join(IGNORE_GROUPS)} (default edges)")
    p.add_argument("--int8-preset", choices=PRESETS, default="performance", help="NNCF preset")
    p.add_argument("--max-drop", type=float, default=0.1, help="PSNR drop (dB) allowed by --int8 acc (default 0.1)")
    p.add_argument("--tensorrt", action="store_true", help="also write a TensorRT-ready Q/DQ ONNX of the INT8 model")
    p.add_argument("--latency-runs", type=int, default=200, help="timed calls per model (0: skip latency)")
    p.add_argument("--threads", type=int, default=2, help="CPU threads (default 2)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="TrainConfig overrides for fine-tuning and QAT, e.g. batch_size=8 cache_dir=.cache/pkdn")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def config_from_args(args: argparse.Namespace) -> CompressConfig:
    from .quantize import parse_ignore

    return CompressConfig(
        weights=args.weights, out=args.out, teacher=args.teacher, prune=args.prune, target_macs=args.target_macs,
        target_speedup=args.target_speedup,
        prune_steps=args.prune_steps, importance=args.importance, importance_batches=args.importance_batches,
        multiple=args.multiple, distill_from=args.distill_from, train_config=args.train_config,
        finetune_steps=args.finetune_steps, finetune_lr=args.finetune_lr, int8=args.int8, qat_steps=args.qat_steps,
        qat_lr=args.qat_lr, faces=args.faces, data=args.data, calib=args.calib, calib_size=args.calib_size,
        calib_synthetic=args.calib_synthetic, ignore=parse_ignore(args.ignore), int8_preset=args.int8_preset,
        max_drop=args.max_drop, tensorrt=args.tensorrt, latency_runs=args.latency_runs, threads=args.threads,
        sweep=tuple(args.sweep), train_overrides=list(args.set), progress=not args.no_progress)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``pkdn-compress``."""

    def body() -> int:
        cfg = config_from_args(build_parser().parse_args(argv))
        sigterm_as_interrupt()
        report = run_compress(cfg, log=lambda s: print(s, file=sys.stderr))
        print((Path(cfg.out) / ("sweep.md" if cfg.sweep else "report.md")).read_text())
        return 0 if report else 1

    return run_cli(body)


if __name__ == "__main__":
    sys.exit(main())
