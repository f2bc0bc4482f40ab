"""``pkdn-compress``: structured pruning → distillation fine-tuning → INT8, measured, in one command.

    pkdn-compress --weights runs/edge_x4_student/best.pt --teacher runs/edge_x4_teacher/best.pt \\
        --prune 0.5 --finetune-steps 1500 --int8 ptq --out compressed/x4

Stages (one log line each; run the same command again to resume an interrupted run):

1. **prune** (:mod:`.prune`): remove ``--prune`` of the channels of every channel space (group-norm
   importance, pixel-shuffle groups kept whole) → ``pruned_init.pt``, an ordinary smaller PKDN.
2. **fine-tune** (:class:`~pkdn_edge.train.loop.Trainer`, i.e. ``pkdn-train student
   --set init=pruned_init.pt teacher=...``): L1 + feature + output distillation from the frozen
   teacher; the feature adapters start as channel selections. Checkpoints in ``finetune/``
   (resumes from ``finetune/last.pt``); the best validation model becomes ``pruned.pt``.
3. **INT8** (NNCF), ``--int8``:

   * ``ptq``: post-training quantization on the OpenVINO model (``pkdn-export --target openvino
     --precision int8``), calibrated on aligned training faces, ``--ignore`` groups kept in float;
   * ``acc``: the same with NNCF's accuracy control (``quantize_with_accuracy_control``): ops are
     reverted to float until the PSNR drop on held-out training faces is at most ``--max-drop``;
   * ``qat``: PTQ of the PyTorch model, then quantization-aware training with the same distillation
     loss (:mod:`.qat`, checkpoints in ``qat/``), exported as OpenVINO IR;
   * ``none``: fp32 only.

4. **evaluate**: PSNR/SSIM (CTCNet and DIC protocols) on the evaluation faces for the original
   student, the pruned one before and after fine-tuning, and the INT8 artifact.
5. **latency**: ms/face at batch 1 with ``--threads`` threads (median after warm-up, the models
   timed in alternating blocks of calls, see ``measure_latency``) in ONNX Runtime fp32 (original vs pruned) and OpenVINO fp32/int8.
6. **report**: ``report.md`` + ``report.json``.

Output folder::

    compressed/x4/
      compress.json        what this folder was made from (a re-run must match it)
      pruned_init.pt       pruned, before fine-tuning (metadata: kept channels)
      finetune/            pkdn-train run folder (last.pt, best.pt, log.csv)
      pruned.pt            pruned + fine-tuned fp32 checkpoint (load_model / pkdn-export --weights)
      qat/                 QAT run folder (--int8 qat)
      onnx_fp32/           pkdn-export artifacts of pruned.pt (ONNX Runtime, OpenVINO)
      openvino_fp32/
      openvino_int8/       the INT8 artifact (load_engine("compressed/x4/openvino_int8"))
      tensorrt_int8/       with --tensorrt: TensorRT-ready Q/DQ ONNX of the same INT8 model
      report.md, report.json

Bad input → one ``error:`` line, exit code 2.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from pkdn_edge.errors import CLIParser, PKDNError, run_cli

INT8_MODES = ("ptq", "acc", "qat", "none")
STATE_NAME = "compress.json"
REPORT_KEYS = ("settings", "models", "quality", "latency", "artifacts", "stages")
# TrainConfig keys that pkdn-compress sets itself (dedicated flags instead of --set)
RESERVED_TRAIN_KEYS = {"role", "scale", "init", "teacher", "steps", "lr", "out", "threads"}
# keys of the student's own training config carried into fine-tuning / QAT
INHERITED_TRAIN_KEYS = ("data", "layout", "degradation", "augment", "prior_source", "num_val", "data_limit",
                        "hr_size", "w_pixel", "w_feat", "w_feat_end", "w_out", "batch_size", "lr_min", "betas",
                        "grad_clip", "seed", "device", "cache_dir")
SPEEDUP_TARGET = 1.6  # ONNX Runtime fp32 at 50 % pruning (the compression issue's target)


@dataclass
class CompressConfig:
    """Everything ``pkdn-compress`` does (one field per flag).

    Attributes:
        weights: the student checkpoint to compress.
        out: output folder.
        teacher: teacher checkpoint for distillation (None: plain L1 fine-tuning).
        prune: fraction of channels removed from every channel space, in [0, 1).
        finetune_steps / finetune_lr: distillation fine-tuning of the pruned student (0 steps: none).
        int8: ``ptq``, ``acc`` (accuracy-controlled PTQ), ``qat`` or ``none``.
        qat_steps / qat_lr: quantization-aware training (``int8="qat"``).
        faces: evaluation faces (default ``../shared/faces/eval``; never used to choose anything).
        data: training faces for fine-tuning/QAT (default: the student's training ``data``).
        calib / calib_size / calib_synthetic: INT8 calibration faces (default: ``data``, the
            pkdn-train split when it is ``shared/faces/train``); generated faces for CI only.
        ignore / int8_preset / max_drop: NNCF ignored-scope groups, preset, and the PSNR drop
            (dB) allowed by ``acc`` (and flagged in the report for the other modes).
        tensorrt: also write a TensorRT-ready Q/DQ ONNX artifact of the INT8 model.
        latency_runs: timed rounds per model (0: no latency measurement, no reference exports).
        threads: CPU threads for training, export, evaluation and latency.
        train_overrides: ``KEY=VALUE`` TrainConfig overrides for fine-tuning and QAT.
        progress: progress bars.
    """

    weights: Path
    out: Path
    teacher: Path | None = None
    prune: float = 0.5
    finetune_steps: int = 1500
    finetune_lr: float = 2e-4
    int8: str = "ptq"
    qat_steps: int = 300
    qat_lr: float = 1e-5
    faces: Path | None = None
    data: str | None = None
    calib: Path | None = None
    calib_size: int = 300
    calib_synthetic: bool = False
    ignore: tuple[str, ...] = ("edges",)
    int8_preset: str = "performance"
    max_drop: float = 0.1
    tensorrt: bool = False
    latency_runs: int = 200
    threads: int = 2
    train_overrides: list[str] = field(default_factory=list)
    progress: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {k: (str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v)
                for k, v in asdict(self).items()}


# ------------------------------------------------------------------------------------------------ checks


def _check(cfg: CompressConfig) -> None:
    """Refuse bad settings before any work (one clear PKDNError)."""
    import importlib.util

    from pkdn_edge.errors import MissingDependencyError

    from .quantize import IGNORE_GROUPS, PRESETS

    if not 0.0 <= cfg.prune < 1.0:
        raise PKDNError(f"--prune must be in [0, 1), got {cfg.prune}")
    if cfg.finetune_steps < 0 or cfg.qat_steps < 0 or cfg.latency_runs < 0:
        raise PKDNError("--finetune-steps, --qat-steps and --latency-runs must be >= 0")
    if cfg.int8 not in INT8_MODES:
        raise PKDNError(f"unknown --int8 mode {cfg.int8!r}; choose from {', '.join(INT8_MODES)}")
    if cfg.int8 == "qat" and cfg.qat_steps < 1:
        raise PKDNError("--int8 qat needs --qat-steps >= 1 (use --int8 ptq for no training)")
    if cfg.tensorrt and cfg.int8 not in ("ptq", "qat"):
        raise PKDNError("--tensorrt needs --int8 ptq or qat (TensorRT INT8 uses the PyTorch Q/DQ path)")
    if cfg.threads < 1 or cfg.calib_size < 1:
        raise PKDNError("--threads and --calib-size must be >= 1")
    if cfg.finetune_lr <= 0 or cfg.qat_lr <= 0 or cfg.max_drop < 0:
        raise PKDNError("--finetune-lr and --qat-lr must be > 0, --max-drop >= 0")
    bad = [g for g in cfg.ignore if g not in IGNORE_GROUPS]
    if bad:
        raise PKDNError(f"unknown ignored-scope group(s) {bad}; choose from {', '.join(IGNORE_GROUPS)} or none")
    if cfg.int8_preset not in PRESETS:
        raise PKDNError(f"unknown INT8 preset {cfg.int8_preset!r}; choose from {', '.join(PRESETS)}")
    for item in cfg.train_overrides:
        key = item.split("=", 1)[0].strip()
        if "=" not in item:
            raise PKDNError(f"--set {item!r} must look like key=value")
        if key in RESERVED_TRAIN_KEYS:
            raise PKDNError(f"--set {key}=... is set by pkdn-compress itself; use its own flag "
                            f"(--finetune-steps/--finetune-lr/--qat-steps/--qat-lr/--teacher/--out/--threads)")
    if cfg.int8 != "none":
        for pkg, extra in (("nncf", "export"), ("openvino", "openvino")):
            if importlib.util.find_spec(pkg) is None:
                raise MissingDependencyError(pkg, extra, f"--int8 {cfg.int8}")
    if cfg.calib is not None and not Path(cfg.calib).is_dir():
        raise PKDNError(f"--calib folder {cfg.calib} does not exist")


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
    """Create ``out`` or check that it holds a run of the same weights and pruning ratio."""
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


# ------------------------------------------------------------------------------------------------ stages


def complexity(model: Any) -> dict[str, Any]:
    """Params and MACs (per output face) of a PKDN student, plus its widths."""
    import torch

    from pkdn_edge.models.complexity import count_macs, count_params

    n = 128 // model.cfg.scale
    return {"params": count_params(model), "macs": count_macs(model, torch.rand(1, 3, n, n)),
            "widths": list(model.cfg.widths), "refine_width": model.cfg.refine_width, "mid_ratio": model.cfg.mid_ratio}


def train_config(cfg: CompressConfig, student_meta: dict[str, Any], scale: int, out: Path, steps: int, lr: float,
                 **extra: Any) -> Any:
    """The TrainConfig of a fine-tuning or QAT stage: the student's own training settings
    (:data:`INHERITED_TRAIN_KEYS`), then the stage's values, then ``--set`` overrides."""
    from pkdn_edge.train.config import load_config

    base = {k: v for k, v in (student_meta.get("train") or {}).items() if k in INHERITED_TRAIN_KEYS}
    if cfg.data:
        base["data"] = cfg.data
    log_every = max(1, min(50, steps // 10))
    values = {**base, "role": "student", "scale": scale, "teacher": str(cfg.teacher) if cfg.teacher else "",
              "steps": steps, "lr": lr, "warmup_steps": min(100, max(1, steps // 10)), "out": str(out),
              "threads": cfg.threads, "log_every": log_every, "val_every": log_every * max(1, steps // 5 // log_every),
              "ckpt_every": max(1, min(100, steps)), **extra}
    set_keys = {item.split("=", 1)[0].strip() for item in cfg.train_overrides}
    return load_config(None, cfg.train_overrides, **{k: v for k, v in values.items() if k not in set_keys})


def _calib_folder(cfg: CompressConfig, data: str) -> Path | None:
    """Calibration folder: --calib, else the training data (None = shared/faces/train with pkdn-train's split)."""
    from .data import shared_faces

    if cfg.calib is not None:
        return Path(cfg.calib)
    train = shared_faces("train")
    if train is not None and Path(data).resolve() == train.resolve():
        return None
    return Path(data)


def _super_resolve_engine(engine: Any, hr: Any, scale: int) -> Any:
    import numpy as np

    from pkdn_edge.train.degradations import bicubic_down

    from .verify import to_uint8

    lr = np.stack([bicubic_down(x, scale) for x in hr]).transpose(0, 3, 1, 2).astype(np.float32) / 255.0
    return to_uint8(engine.run_tensor(np.ascontiguousarray(lr)))


def evaluate(models: dict[str, Any], hr: Any, scale: int, threads: int) -> list[dict[str, Any]]:
    """PSNR/SSIM (both protocols) of each ``name → PKDN or engine`` on faces (N,128,128,3) uint8
    RGB (LR = PIL bicubic ↓s), with the bicubic baseline first. Deltas are vs the first model."""
    import numpy as np
    import torch

    from pkdn_edge.train.degradations import bicubic_down, bicubic_up
    from pkdn_edge.train.evaluate import _mean_metrics, super_resolve

    torch.set_num_threads(threads)
    rows = [{"model": "bicubic", **_mean_metrics(np.stack([bicubic_up(bicubic_down(x, scale), scale) for x in hr]), hr)}]
    for name, m in models.items():
        sr = super_resolve(m, hr, scale) if isinstance(m, torch.nn.Module) else _super_resolve_engine(m, hr, scale)
        rows.append({"model": name, **_mean_metrics(sr, hr)})
    ref = rows[1] if len(rows) > 1 else rows[0]
    for r in rows:
        r["delta_psnr_ctcnet"] = r["psnr_ctcnet"] - ref["psnr_ctcnet"]
        r["delta_ssim_ctcnet"] = r["ssim_ctcnet"] - ref["ssim_ctcnet"]
    return rows


LATENCY_BLOCK = 25  # timed calls per engine before the next engine's turn (see measure_latency)


def measure_latency(
    engines: dict[str, Any], runs: int, warmup: int = 20, block: int = LATENCY_BLOCK
) -> dict[str, dict[str, float]]:
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
    times: dict[str, list[float]] = {k: [] for k in engines}
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


# ------------------------------------------------------------------------------------------------ pipeline


def _finished(run: Path, steps: int) -> dict[str, Any] | None:
    """The summary of a training run folder that already reached ``steps`` (None otherwise)."""
    f = run / "summary.json"
    if not (f.is_file() and (run / "best.pt").is_file()):
        return None
    summary = json.loads(f.read_text())
    return summary if summary.get("done") and summary.get("steps") == steps else None


def _sha256(path: Path) -> str:
    from pkdn_edge.manifest import sha256_file

    return sha256_file(path)


def run_compress(cfg: CompressConfig, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run every stage (see the module docstring); returns the report dict (also written as
    ``report.json``/``report.md`` in ``cfg.out``)."""
    import importlib.util

    import torch

    from pkdn_edge.models.checkpoint import export_weights, load_model

    from .context import CalibOptions, QuantizedModel
    from .exporter import run_export
    from .prune import apply_pruning, plan_pruning
    from .quantize import Int8Settings

    _check(cfg)
    t_start = time.time()
    out = Path(cfg.out)
    faces_dir = _eval_faces(cfg.faces)
    weights = Path(cfg.weights)
    student, student_meta = _load_student(weights)
    scale = student.cfg.scale
    _check_teacher(cfg.teacher, scale)
    data = cfg.data or (student_meta.get("train") or {}).get("data") or "../shared/faces/train"
    if (cfg.finetune_steps > 0 or cfg.int8 == "qat") and not Path(data).is_dir():
        raise PKDNError(f"training faces {data} not found (fine-tuning/QAT need them); pass --data DIR")
    _prepare_out(out, {"weights": weights.name, "weights_sha256": _sha256(weights), "prune": cfg.prune})
    torch.set_num_threads(cfg.threads)
    stages: dict[str, Any] = {}

    # 1. prune --------------------------------------------------------------------------------------
    plan = plan_pruning(student, cfg.prune)
    slim = apply_pruning(student, plan)
    pruning_meta = {**plan.to_meta(), "source": weights.name, "source_sha256": _sha256(weights)}
    init_path = out / "pruned_init.pt"
    export_weights(slim, init_path, meta={"pruning": pruning_meta})
    c0, c1 = complexity(student), complexity(slim)
    log(f"[1/6] pruned {cfg.prune:.0%} of the channels: {c0['params'] / 1e6:.3f} M → {c1['params'] / 1e6:.3f} M params, "
        f"{c0['macs'] / 1e9:.3f} → {c1['macs'] / 1e9:.3f} GMACs/face (widths {c0['widths']} → {c1['widths']})")

    # 2. fine-tune ----------------------------------------------------------------------------------
    final = out / "pruned.pt"
    if cfg.finetune_steps > 0:
        from pkdn_edge.train.loop import Trainer

        tcfg = train_config(cfg, student_meta, scale, out / "finetune", cfg.finetune_steps, cfg.finetune_lr,
                            init=str(init_path), feat_decay_steps=max(1, int(0.75 * cfg.finetune_steps)))
        log(f"[2/6] fine-tuning the pruned student for {tcfg.steps} steps on {tcfg.data} "
            f"({'distilled from ' + tcfg.teacher if tcfg.teacher else 'L1 only: no --teacher'}; resumes from "
            f"{out / 'finetune' / 'last.pt'})")
        summary = _finished(out / "finetune", tcfg.steps) or Trainer(tcfg).run(progress=cfg.progress)
        if not summary["done"]:
            raise PKDNError(f"fine-tuning stopped at step {summary['step']} of {summary['steps']}; run again to resume")
        tuned, tmeta = load_model(out / "finetune" / "best.pt")
        export_weights(tuned, final, meta={**tmeta, "pruning": pruning_meta,
                                           "finetune": {"steps": tcfg.steps, "lr": tcfg.lr, "teacher": tcfg.teacher}})
        stages["finetune"] = {**summary, "config": {k: tcfg.to_dict()[k] for k in ("data", "teacher", "steps", "lr",
                                                                                  "batch_size", "w_feat", "w_feat_end",
                                                                                  "w_out")}}
    else:
        log("[2/6] no fine-tuning (--finetune-steps 0)")
        tuned = slim
        export_weights(slim, final, meta={"pruning": pruning_meta})
    tuned.eval()

    # 3. INT8 ---------------------------------------------------------------------------------------
    settings = Int8Settings(preset=cfg.int8_preset, ignore=tuple(cfg.ignore), subset_size=cfg.calib_size)
    calib = CalibOptions(folder=_calib_folder(cfg, data), size=cfg.calib_size, synthetic=cfg.calib_synthetic,
                         settings=settings, accuracy_control=cfg.int8 == "acc", max_drop=cfg.max_drop)
    int8_model = None
    quiet = lambda s: None  # noqa: E731
    artifacts: dict[str, str] = {"pruned_init": init_path.name, "pruned": final.name}
    if cfg.int8 == "qat":
        from .data import calibration_faces, to_lr
        from .qat import run_qat

        fs = calibration_faces(calib.folder, calib.size, calib.select_size, synthetic=calib.synthetic)
        qcfg = train_config(cfg, student_meta, scale, out / "qat", cfg.qat_steps, cfg.qat_lr,
                            warmup_steps=min(20, max(1, cfg.qat_steps // 10)))
        qcfg.w_feat = qcfg.w_feat_end  # the student is already distilled: the final feature weight throughout
        adapters = None
        if (out / "finetune" / "last.pt").is_file():
            from pkdn_edge.models.checkpoint import read_checkpoint

            adapters = read_checkpoint(out / "finetune" / "last.pt").get("adapters") or None
        log(f"[3/6] INT8 QAT: NNCF PTQ ({settings.label()}, {len(fs.calib)} faces) then {qcfg.steps} QAT steps "
            f"at lr {qcfg.lr:g} (resumes from {out / 'qat' / 'last.pt'})")
        q, qsum = run_qat(tuned, qcfg, to_lr(fs.calib, scale), settings, adapters, progress=cfg.progress)
        stages["qat"] = qsum
        int8_model = QuantizedModel(q, {"method": "qat", **settings.to_dict(), "calibration": fs.source, **qsum})
    elif cfg.int8 in ("ptq", "acc"):
        log(f"[3/6] INT8 {'accuracy-controlled ' if cfg.int8 == 'acc' else ''}PTQ on OpenVINO ({settings.label()})")
    else:
        log("[3/6] no INT8 (--int8 none)")
    if cfg.int8 != "none":
        r = run_export("openvino", "int8", final, out=out / "openvino_int8", batch=1, calib=calib, threads=cfg.threads,
                       verify=False, benchmark=False, log=log, int8_model=int8_model)
        artifacts["openvino_int8"] = r.out.name
        from pkdn_edge.manifest import read_manifest

        extras = read_manifest(r.out).extras
        stages["int8"] = {"mode": cfg.int8, "calibration": extras.get("calibration"), **extras.get("quantization", {})}
        if cfg.tensorrt:
            r = run_export("tensorrt", "int8", final, out=out / "tensorrt_int8", batch=1, calib=calib,
                           threads=cfg.threads, verify=False, benchmark=False, log=log, int8_model=int8_model)
            artifacts["tensorrt_int8"] = r.out.name

    # fp32 artifacts of the pruned model (shipped) -------------------------------------------------------
    has_ov = importlib.util.find_spec("openvino") is not None
    fp32_targets = ["onnx"] + (["openvino"] if has_ov else [])
    for target in fp32_targets:
        r = run_export(target, "fp32", final, out=out / f"{target}_fp32", batch=1, threads=cfg.threads,
                       verify_faces=faces_dir, benchmark=False, log=quiet)
        artifacts[f"{target}_fp32"] = r.out.name

    # 4. evaluate -------------------------------------------------------------------------------------
    from pkdn_edge.engines import load_engine
    from pkdn_edge.train.data import FaceData

    hr = FaceData.load(faces_dir, recursive=False).hr
    log(f"[4/6] evaluating on {len(hr)} faces from {faces_dir}")
    models: dict[str, Any] = {"original (fp32)": student, "pruned, before fine-tuning (fp32)": slim}
    if cfg.finetune_steps > 0:
        models["pruned + fine-tuned (fp32)"] = tuned
    if cfg.int8 != "none":
        models[f"pruned + INT8 {cfg.int8} (OpenVINO)"] = load_engine(out / "openvino_int8", threads=cfg.threads)
    rows = evaluate(models, hr, scale, cfg.threads)

    # 5. latency --------------------------------------------------------------------------------------
    latency: dict[str, Any] = {"batch": 1, "threads": cfg.threads, "runs": cfg.latency_runs, "block": LATENCY_BLOCK, "rows": []}
    if cfg.latency_runs > 0:
        log(f"[5/6] latency: batch 1, {cfg.threads} threads, {cfg.latency_runs} calls per model in alternating blocks")
        ref_dir = out / ".reference"
        shutil.rmtree(ref_dir, ignore_errors=True)
        try:
            engines: dict[tuple[str, str, str], Any] = {}
            for target in fp32_targets:
                backend = "onnxruntime" if target == "onnx" else "openvino"
                r = run_export(target, "fp32", weights, out=ref_dir / target, batch=1, threads=cfg.threads,
                               verify=False, benchmark=False, log=quiet)
                engines[("original", backend, "fp32")] = load_engine(r.out, threads=cfg.threads)
                engines[("pruned", backend, "fp32")] = load_engine(out / f"{target}_fp32", threads=cfg.threads)
            if cfg.int8 != "none":
                engines[(f"pruned + INT8 {cfg.int8}", "openvino", "int8")] = models[f"pruned + INT8 {cfg.int8} (OpenVINO)"]
            ms = measure_latency(engines, cfg.latency_runs)
        finally:
            shutil.rmtree(ref_dir, ignore_errors=True)
        for (name, backend, precision), v in ms.items():
            latency["rows"].append({"model": name, "backend": backend, "precision": precision, **v})
        for backend in ("onnxruntime", "openvino"):
            a, b = ms.get(("original", backend, "fp32")), ms.get(("pruned", backend, "fp32"))
            if a and b:
                latency[f"speedup_{backend}_fp32"] = a["ms_median"] / b["ms_median"]
    else:
        log("[5/6] no latency measurement (--latency-runs 0)")

    # 6. report ---------------------------------------------------------------------------------------
    report = {
        "settings": cfg.to_dict(),
        "source": {"weights": str(weights), "sha256": _sha256(weights), "teacher": str(cfg.teacher or ""),
                   "scale": scale, "eval_faces": str(faces_dir), "num_eval_faces": int(len(hr))},
        "models": {"original": c0, "pruned": c1},
        "quality": {"protocols": {"ctcnet": "Y, no crop", "dic": "Y, 8-px crop"}, "rows": rows},
        "latency": latency,
        "artifacts": artifacts,
        "stages": stages,
        "notes": _notes(cfg, rows, latency),
        "seconds": round(time.time() - t_start, 1),
    }
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str))
    (out / "report.md").write_text(report_markdown(report))
    log(f"[6/6] wrote {out / 'report.md'} and {out / 'report.json'}")
    return report


def _notes(cfg: CompressConfig, rows: list[dict[str, Any]], latency: dict[str, Any]) -> list[str]:
    notes = []
    by = {r["model"]: r for r in rows}
    q = next((r for r in rows if "INT8" in r["model"]), None)
    fp = by.get("pruned + fine-tuned (fp32)") or by.get("pruned, before fine-tuning (fp32)")
    if q and fp:
        drop = fp["psnr_ctcnet"] - q["psnr_ctcnet"]
        if drop > cfg.max_drop:
            hint = "try --int8 qat or --int8 acc" if cfg.int8 == "ptq" else "try more --qat-steps or --ignore edges,shuffle"
            notes.append(f"INT8 loses {drop:.3f} dB against the fp32 pruned model (> {cfg.max_drop} dB): {hint}")
    s = latency.get("speedup_onnxruntime_fp32")
    if s is not None and abs(cfg.prune - 0.5) < 1e-9:
        ok = "met" if s >= SPEEDUP_TARGET else "NOT met"
        notes.append(f"ONNX Runtime fp32 speed-up at 50 % pruning: {s:.2f}x (target >= {SPEEDUP_TARGET}x: {ok})")
    if not cfg.teacher and cfg.finetune_steps > 0:
        notes.append("fine-tuned without a teacher (L1 only): pass --teacher for distillation")
    return notes


def report_markdown(r: dict[str, Any]) -> str:
    """``report.md`` from the report dict."""
    s, m = r["settings"], r["models"]
    lines = [f"# pkdn-compress: {Path(r['source']['weights']).name} (x{r['source']['scale']})", "",
             f"Pruning {s['prune']:.0%} of the channels, fine-tuning {s['finetune_steps']} steps "
             f"({'teacher ' + s['teacher'] if s['teacher'] else 'no teacher'}), INT8: {s['int8']}.", "",
             "## Size", "", "| model | params (M) | GMACs / face | widths |", "|---|---|---|---|"]
    for name, c in m.items():
        lines.append(f"| {name} | {c['params'] / 1e6:.3f} | {c['macs'] / 1e9:.3f} | {c['widths']} |")
    lines += ["", f"## Quality ({r['source']['num_eval_faces']} faces from `{r['source']['eval_faces']}`, "
                  "LR = PIL bicubic ↓s, Y channel)", "",
              "| model | PSNR (CTCNet) | SSIM (CTCNet) | PSNR (DIC, crop 8) | SSIM (DIC) | Δ PSNR vs original |",
              "|---|---|---|---|---|---|"]
    for row in r["quality"]["rows"]:
        lines.append(f"| {row['model']} | {row['psnr_ctcnet']:.3f} | {row['ssim_ctcnet']:.4f} | {row['psnr_dic']:.3f} | "
                     f"{row['ssim_dic']:.4f} | {row['delta_psnr_ctcnet']:+.3f} dB |")
    lat = r["latency"]
    if lat["rows"]:
        lines += ["", f"## Latency (batch 1, {lat['threads']} threads, median of {lat['runs']} calls per model "
                      f"after warm-up, in alternating blocks of {lat.get('block', LATENCY_BLOCK)})", "", "| model | backend | precision | ms/face (median) | p90 |", "|---|---|---|---|---|"]
        for row in lat["rows"]:
            lines.append(f"| {row['model']} | {row['backend']} | {row['precision']} | {row['ms_median']:.3f} | "
                         f"{row['ms_p90']:.3f} |")
        for k in ("speedup_onnxruntime_fp32", "speedup_openvino_fp32"):
            if k in lat:
                lines.append(f"\n{k.replace('_', ' ')} (original / pruned): **{lat[k]:.2f}x**")
    if r["notes"]:
        lines += ["", "## Notes", ""] + [f"* {n}" for n in r["notes"]]
    lines += ["", "## Files", ""] + [f"* `{v}` ({k})" for k, v in r["artifacts"].items()]
    lines += ["", "Use: `load_engine(\"<out>/openvino_int8\")`, or export the pruned checkpoint to any target with "
                  "`pkdn-export --target <target> --weights <out>/pruned.pt`.", ""]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ CLI


def build_parser() -> argparse.ArgumentParser:
    from .quantize import IGNORE_GROUPS, PRESETS

    p = CLIParser(prog="pkdn-compress", formatter_class=argparse.RawDescriptionHelpFormatter,
                description="Compress a PKDN student: structured pruning, distillation fine-tuning, NNCF INT8; "
                            "writes checkpoints, artifacts and report.md/report.json.",
                epilog="example:\n  pkdn-compress --weights runs/edge_x4_student/best.pt --teacher "
                       "runs/edge_x4_teacher/best.pt --prune 0.5 --finetune-steps 1500 --int8 ptq --out compressed/x4")
    p.add_argument("--weights", type=Path, required=True, help="student checkpoint to compress")
    p.add_argument("--teacher", type=Path, default=None, help="teacher checkpoint for distillation (same scale)")
    p.add_argument("--out", type=Path, required=True, help="output folder (re-run the same command to resume)")
    p.add_argument("--prune", type=float, default=0.5, help="fraction of channels removed, in [0, 1) (default 0.5)")
    p.add_argument("--finetune-steps", type=int, default=1500, help="distillation fine-tuning steps (0: none)")
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
    p.add_argument("--latency-runs", type=int, default=200, help="timed rounds per model (0: skip latency)")
    p.add_argument("--threads", type=int, default=2, help="CPU threads (default 2)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="TrainConfig overrides for fine-tuning and QAT, e.g. batch_size=8 cache_dir=.cache/pkdn")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``pkdn-compress``."""

    def body() -> int:
        from pkdn_edge.train.cli import _sigterm_as_interrupt

        from .quantize import parse_ignore

        args = build_parser().parse_args(argv)
        cfg = CompressConfig(weights=args.weights, out=args.out, teacher=args.teacher, prune=args.prune,
                             finetune_steps=args.finetune_steps, finetune_lr=args.finetune_lr, int8=args.int8,
                             qat_steps=args.qat_steps, qat_lr=args.qat_lr, faces=args.faces, data=args.data,
                             calib=args.calib, calib_size=args.calib_size, calib_synthetic=args.calib_synthetic,
                             ignore=parse_ignore(args.ignore), int8_preset=args.int8_preset, max_drop=args.max_drop,
                             tensorrt=args.tensorrt, latency_runs=args.latency_runs, threads=args.threads,
                             train_overrides=list(args.set), progress=not args.no_progress)
        _sigterm_as_interrupt()
        report = run_compress(cfg, log=lambda s: print(s, file=sys.stderr))
        print((Path(cfg.out) / "report.md").read_text())
        return 0 if report else 1

    return run_cli(body)


if __name__ == "__main__":
    sys.exit(main())
