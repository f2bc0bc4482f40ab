"""``pkdn-compress`` settings: :class:`CompressConfig` (one field per flag) and its checks.

Imports nothing heavy: the stages (:mod:`.run`, :mod:`.finetune`,
:mod:`.report`, :mod:`.sweep`) and the CLI (:mod:`.cli`) all read this one dataclass.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pkdn_edge.errors import PKDNError

INT8_MODES = ("ptq", "acc", "qat", "none")
IMPORTANCE = ("taylor", "norm")
DISTILL = ("auto", "source", "teacher", "none")
# TrainConfig keys that pkdn-compress sets itself (dedicated flags instead of --set)
RESERVED_TRAIN_KEYS = {"role", "scale", "init", "teacher", "steps", "lr", "out", "threads"}


@dataclass
class CompressConfig:
    """Everything ``pkdn-compress`` does (one field per flag).

    Attributes:
        weights: the student checkpoint to compress.
        out: output folder.
        teacher: teacher checkpoint (distillation source with ``distill_from`` teacher/auto).
        prune: uniform pruning: fraction of channels removed from every channel space, in [0, 1)
            (used when ``target_macs`` is None).
        target_macs: per-layer pruning (:mod:`.prune_search`): the slim model has at most this
            fraction of the source's MACs, in (0, 1].
        target_speedup: with ``target_macs``: also an estimated OpenVINO INT8 speed-up of at least
            this (:func:`.prune_search.latency_proxy`; None: MACs only).
        prune_steps: prune in this many steps, each followed by a share of the fine-tuning.
        importance: ``taylor`` (measured on training batches, :mod:`.importance`) or ``norm``
            (weight group norms; uniform ``prune`` only).
        importance_batches: training batches (of the fine-tuning batch size) for ``taylor``.
        multiple: channel grid of the per-layer search (16: the AVX-512 block of ORT/OpenVINO).
        distill_from: ``source`` (the unpruned student itself), ``teacher`` (``--teacher``),
            ``auto`` (the teacher when given, else the source) or ``none`` (L1 only).
        train_config: YAML of the source's training settings, read when its checkpoint has none.
        finetune_steps / finetune_lr: distillation fine-tuning, all steps together (0: none).
        int8: ``ptq``, ``acc`` (accuracy-controlled PTQ), ``qat`` or ``none``.
        qat_steps / qat_lr: quantization-aware training (``int8="qat"``).
        faces: evaluation faces (default ``../shared/faces/eval``; never used to choose anything).
        data: training faces for fine-tuning/QAT (default: the student's training ``data``).
        calib / calib_size / calib_synthetic: INT8 calibration faces.
        ignore / int8_preset / max_drop: NNCF ignored-scope groups, preset, and the PSNR drop
            (dB) allowed by ``acc`` (and flagged in the report for the other modes).
        tensorrt: also write a TensorRT-ready Q/DQ ONNX artifact of the INT8 model.
        latency_runs: timed calls per model (0: no latency measurement, no reference exports).
        threads: CPU threads for training, export, evaluation and latency.
        sweep: MAC fractions of a ratio sweep (:mod:`.sweep`); empty: one compression.
        train_overrides: ``KEY=VALUE`` TrainConfig overrides for fine-tuning and QAT.
        progress: progress bars.
        importance_cache: where the source's importance is kept (default ``<out>/importance.pt``;
            a sweep shares one).
    """

    weights: Path
    out: Path
    teacher: Path | None = None
    prune: float = 0.5
    target_macs: float | None = None
    target_speedup: float | None = None
    prune_steps: int = 1
    importance: str = "taylor"
    importance_batches: int = 64
    multiple: int = 16
    distill_from: str = "auto"
    train_config: Path | None = None
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
    sweep: tuple[float, ...] = ()
    train_overrides: list[str] = field(default_factory=list)
    progress: bool = True
    importance_cache: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: (str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v)
                for k, v in asdict(self).items()}

    def state(self) -> dict[str, Any]:
        """What a resumed run must share with the run that wrote ``--out`` (besides the weights)."""
        keys = ("prune",) if self.target_macs is None else ("target_macs", "target_speedup", "multiple")
        keys += ("prune_steps", "importance", "distill_from")
        return {k: getattr(self, k) for k in keys}

    def distill_mode(self) -> str:
        """``source``, ``teacher`` or ``none`` (``auto`` resolved)."""
        if self.distill_from == "auto":
            return "teacher" if self.teacher else "source"
        return self.distill_from

    def label(self) -> str:
        """How the model is pruned, in words."""
        how = (f"{self.prune:.0%} of every channel space" if self.target_macs is None
               else f"to <= {self.target_macs:.0%} of the MACs (per-layer search, {self.multiple}-channel grid"
                    + (f", estimated speed-up >= {self.target_speedup:g}x)" if self.target_speedup else ")"))
        return f"{how}, {self.importance} importance, {self.prune_steps} step(s)"


def check(cfg: CompressConfig) -> None:
    """Refuse bad settings before any work (one clear PKDNError)."""
    _check_finite(cfg)
    if not 0.0 <= cfg.prune < 1.0:
        raise PKDNError(f"--prune must be in [0, 1), got {cfg.prune}")
    for t in ((cfg.target_macs,) if cfg.target_macs is not None else ()) + tuple(cfg.sweep):
        if not 0.0 < t <= 1.0:
            raise PKDNError(f"--target-macs / --sweep fractions must be in (0, 1], got {t}")
    if cfg.target_speedup is not None and cfg.target_speedup < 1.0:
        raise PKDNError(f"--target-speedup must be >= 1, got {cfg.target_speedup}")
    if cfg.finetune_steps < 0 or cfg.qat_steps < 0 or cfg.latency_runs < 0:
        raise PKDNError("--finetune-steps, --qat-steps and --latency-runs must be >= 0")
    if cfg.prune_steps < 1 or cfg.importance_batches < 1 or cfg.multiple < 1:
        raise PKDNError("--prune-steps, --importance-batches and --multiple must be >= 1")
    if cfg.importance not in IMPORTANCE:
        raise PKDNError(f"unknown --importance {cfg.importance!r}; choose from {', '.join(IMPORTANCE)}")
    if (cfg.target_macs is not None or cfg.sweep) and cfg.importance != "taylor":
        raise PKDNError("--target-macs/--sweep compare layers by their measured importance: use --importance taylor")
    if cfg.distill_from not in DISTILL:
        raise PKDNError(f"unknown --distill-from {cfg.distill_from!r}; choose from {', '.join(DISTILL)}")
    if cfg.distill_from == "teacher" and not cfg.teacher:
        raise PKDNError("--distill-from teacher needs --teacher")
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
    _check_int8(cfg)
    _check_overrides(cfg.train_overrides)
    if cfg.calib is not None and not Path(cfg.calib).is_dir():
        raise PKDNError(f"--calib folder {cfg.calib} does not exist")
    if cfg.train_config is not None and not Path(cfg.train_config).is_file():
        raise PKDNError(f"--train-config {cfg.train_config} does not exist")


def _check_int8(cfg: CompressConfig) -> None:
    import importlib.util

    from pkdn_edge.errors import MissingDependencyError

    from ..settings import IGNORE_GROUPS, PRESETS

    bad = [g for g in cfg.ignore if g not in IGNORE_GROUPS]
    if bad:
        raise PKDNError(f"unknown ignored-scope group(s) {bad}; choose from {', '.join(IGNORE_GROUPS)} or none")
    if cfg.int8_preset not in PRESETS:
        raise PKDNError(f"unknown INT8 preset {cfg.int8_preset!r}; choose from {', '.join(PRESETS)}")
    if cfg.int8 != "none" or cfg.sweep:
        for pkg, extra in (("nncf", "export"), ("openvino", "openvino")):
            if importlib.util.find_spec(pkg) is None:
                raise MissingDependencyError(pkg, extra, f"--int8 {cfg.int8}")


def _check_overrides(items: list[str]) -> None:
    """``--set`` items through the training settings' own validator (key, type, range, finite), before any work."""
    from pkdn_edge.train.config import check_setting, parse_override

    for item in items:
        if "=" not in item:
            raise PKDNError(f"--set {item!r} must look like key=value")
        key, value = parse_override(item)
        if key in RESERVED_TRAIN_KEYS:
            raise PKDNError(f"--set {key}=... is set by pkdn-compress itself; use its own flag "
                            f"(--finetune-steps/--finetune-lr/--qat-steps/--qat-lr/--teacher/--out/--threads)")
        check_setting(key, value)


def _check_finite(cfg: CompressConfig) -> None:
    """Every number of the settings finite (argparse's float() takes "inf" and "nan")."""
    import math

    for name, v in asdict(cfg).items():
        for x in (v if isinstance(v, (tuple, list)) else (v,)):
            if isinstance(x, float) and not math.isfinite(x):
                raise PKDNError(f"--{name.replace('_', '-')} must be a finite number, got {x}")
