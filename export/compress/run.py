"""What ``pkdn-compress`` runs (:func:`run_compress`): structured pruning → distillation fine-tuning →
INT8, measured. The command line is :mod:`.cli`.

Stages (one log line each; run the same command again to resume an interrupted run):

1. **prune** (:mod:`.finetune`, :mod:`.prune_search`, :mod:`.prune`): ``--target-macs F``
   searches the per-layer widths with at most ``F`` of the source's MACs that drop the least
   important channels (Taylor importance on training batches, :mod:`.importance`), on a
   ``--multiple``-channel grid; ``--prune R`` removes ``R`` of every channel space. Pixel-shuffle
   groups stay whole. ``--prune-steps N`` prunes in ``N`` steps with fine-tuning in between.
2. **fine-tune**: ``pkdn-train student --set init=pruned_init.pt teacher=<source>``: the source
   student's own training settings (degradation and camera settings included), L1 + feature +
   output distillation from the **unpruned student** (``--distill-from source``, the default
   without ``--teacher``) or a teacher; the feature adapters start as channel selections.
3. **INT8** (NNCF), ``--int8``: ``ptq`` (OpenVINO PTQ), ``acc`` (with accuracy control), ``qat``
   (PTQ + quantization-aware training with the same distillation, :mod:`..int8.qat`) or ``none``.
4. **evaluate** (:mod:`.report`): PSNR/SSIM under the paper (bicubic) and the camera
   protocol, for the original, the pruned model before and after fine-tuning and the INT8 artifact.
5. **latency**: ms/face at batch 1, ``--threads`` threads, the models timed in alternating blocks
   (:func:`.report.measure_latency`): ONNX Runtime fp32 and OpenVINO fp32/int8.
6. **report**: ``report.md`` + ``report.json``.

``--sweep 0.9 0.8 0.72 …`` runs the whole recipe once per MAC fraction and writes one table
(:mod:`.sweep`). Output folder::

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

import json
import shutil
import time
from pathlib import Path
from typing import Any, Callable

from pkdn_edge.engines.base import module_available
from pkdn_edge.errors import PKDNError

from .config import CompressConfig, check
from .finetune import Run, source_train_settings, train_config
from .report import LATENCY_BLOCK, evaluate, measure_latency, notes, report_markdown, speedups

STATE_NAME = "compress.json"
REPORT_KEYS = ("settings", "models", "quality", "latency", "artifacts", "stages")


# ------------------------------------------------------------------------------------------------ inputs


def _eval_faces(folder: Path | None) -> Path:
    from ..data import shared_faces

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
    from ..exporter import run_export
    from ..settings import ExportRequest

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
    needs_data = (cfg.finetune_steps > 0 or cfg.int8 == "qat" or cfg.target_macs is not None
                  or cfg.importance == "taylor")
    if needs_data and not Path(data).is_dir():
        raise PKDNError(f"training faces {data} not found (fine-tuning, QAT and Taylor importance need them); "
                        f"pass --data DIR")
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

    from ..context import QuantizedModel

    cfg = run.cfg
    if cfg.int8 == "none":
        run.log("[3/6] no INT8 (--int8 none)")
        return None
    calib = calib_options(cfg, run.train_base["data"])
    settings = calib.settings
    int8_model = None
    if cfg.int8 == "qat":
        from pkdn_edge.models.checkpoint import read_checkpoint

        from ..data import calibration_faces, to_lr
        from ..int8.qat import run_qat

        fs = calibration_faces(calib.folder, calib.size, calib.select_size, synthetic=calib.synthetic)
        qcfg = train_config(run, run.out / "qat", cfg.qat_steps, cfg.qat_lr,
                            warmup_steps=min(20, max(1, cfg.qat_steps // 10)))
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
    from ..data import shared_faces
    from ..settings import CalibOptions, Int8Settings

    folder = Path(cfg.calib) if cfg.calib is not None else Path(data)
    train = shared_faces("train")
    if cfg.calib is None and train is not None and folder.resolve() == train.resolve():
        folder = None
    settings = Int8Settings(preset=cfg.int8_preset, ignore=tuple(cfg.ignore), subset_size=cfg.calib_size)
    return CalibOptions(folder=folder, size=cfg.calib_size, synthetic=cfg.calib_synthetic, settings=settings,
                        accuracy_control=cfg.int8 == "acc", max_drop=cfg.max_drop)


def fp32_targets() -> list[str]:
    return ["onnx"] + (["openvino"] if module_available("openvino") else [])


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
    ``report.json``/``report.md`` in ``cfg.out``). With ``cfg.sweep``: :func:`.sweep.run_sweep`."""
    import torch

    if cfg.sweep:
        from .sweep import run_sweep

        return run_sweep(cfg, log, run_one=run_compress, export=export, calib=calib_options)
    t_start = time.time()
    run, faces_dir = _start(cfg, log)
    torch.set_num_threads(cfg.threads)
    from .finetune import prune_and_finetune

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
