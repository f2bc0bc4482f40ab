"""Training configuration: one dataclass, one YAML file per run, one obvious place per setting.

``load_config("train/configs/edge_x8_student.yaml", overrides=["steps=100"])`` reads the YAML,
applies ``key=value`` overrides (YAML-typed), and validates every key against the dataclass.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import yaml

from pkdn_edge.errors import PKDNError

from .degradations import DEGRADATION_ALIASES, DEGRADATIONS


@dataclass
class TrainConfig:
    # what to train
    role: str = "student"            # "teacher" (LR + parsing prior) or "student" (LR only)
    preset: str = "edge"             # model preset: "edge" or "paper"
    scale: int = 4                   # 4 (32→128) or 8 (16→128)
    model: dict = field(default_factory=dict)  # PKDNConfig field overrides, e.g. {widths: [32, 48], depth: 1}
    init: str = ""                   # start from this checkpoint (its architecture wins over preset/model),
                                     # e.g. a pruned student to fine-tune; a teacher here starts a student
                                     # from the teacher's weights (pkdn_edge.train.warmstart)
    # data
    data: str = "../shared/faces/train"
    layout: str = "aligned"          # "aligned", "celeba" or "celebamask" (see pkdn_edge.train.data)
    degradation: str = "bicubic"     # "bicubic" (paper protocol; alias "paper"), "camera" (train/camera.py: blur,
                                     # resampler, sensor noise, JPEG/H.264/MPEG-4, second order, clean pairs) or
                                     # "blur_noise_jpeg" (the older fixed chain; alias "webcam"); DEGRADATIONS
    camera: dict = field(default_factory=dict)  # CameraDegradation overrides (degradation: camera),
                                     # e.g. {p_clean: 0.3, read_sigma: [0.5, 3]}
    select_on: str = "bicubic"       # validation score that picks best.pt: "bicubic" (paper protocol; alias
                                     # "paper"; logged as val_bicubic), "camera"
                                     # (the frozen camera protocol on the validation faces) or "mean" of both
    augment: bool = True             # photometric + small similarity jitter (see BatchSampler)
    prior_source: str = "landmarks"  # teacher priors: "landmarks" (dlib 68 points) or "labels" (celebamask)
    min_sharpness: float = 0.0       # keep only faces at least this sharp (face_sharpness, dB; 0 = all),
                                     # after the seeded split (13 dB did not help at ×8 here: docs/training.md,
                                     # "What moved the paper-protocol quality")
    num_val: int = 256               # faces held out of `data` for validation / model selection
    data_limit: int = 0              # use only the first N images (0 = all); for smoke tests
    hr_size: int = 128
    # distillation (student only)
    teacher: str = ""                # teacher checkpoint; empty = no distillation (the ablation). A student
                                     # checkpoint of the same scale works too (distilled without a prior), e.g.
                                     # the unpruned student when fine-tuning its pruned copy (pkdn-compress)
    teacher_lr: str = "same"         # the teacher's LR input: "same" as the student's, or "clean" (the PIL-bicubic
                                     # LR of the same HR face: privileged input when the student's LR is degraded)
    w_pixel: float = 1.0             # pixel loss D(SR_s, HR), D = pixel_loss
    pixel_loss: str = "l1"           # "l1", or "mse" (the quantity PSNR measures; for a final fine-tune)
    w_feat: float = 1.0              # per-stage feature distillation, start weight
    w_feat_end: float = 0.1          # ... decays linearly to this
    feat_decay_steps: int = 10000    # ... over this many steps
    feat_adapter: str = "identity"   # student→teacher feature map: "identity" (copy the teacher's features where
                                     # widths match) or "conv" (learnable 1×1, identity-initialised)
    w_out: float = 0.5               # output distillation L1(SR_s, SR_t)
    # optimisation
    steps: int = 20000
    batch_size: int = 16
    lr: float = 4e-4                 # Adam, cosine decay to lr_min after a linear warm-up
    lr_min: float = 1e-6
    warmup_steps: int = 200
    betas: tuple[float, float] = (0.9, 0.99)
    grad_clip: float = 1.0
    ema_decay: float = 0.0           # exponential moving average of the weights (0 = off; e.g. 0.999): when on,
                                     # validation, best.pt and the shipped weights are the averaged copy
    # bookkeeping
    seed: int = 0
    threads: int = 2                 # torch CPU threads
    device: str = "auto"             # "auto" (CUDA when present), "cpu" or "cuda"
    precision: str = "auto"          # "auto" (bf16 only where the CPU has native bf16, AVX512-BF16 or AMX, and a
                                     # short probe measures it faster; fp32 otherwise; train/precision.py),
                                     # "fp32", or "bf16": forward passes under bfloat16 autocast (weights,
                                     # optimiser and losses stay fp32); faster on CPUs with AVX512-BF16/AMX,
                                     # several times slower where bf16 is emulated (timings: docs/training.md)
    channels_last: bool = True       # NHWC memory layout for model and batches (faster training steps on CPU,
                                     # docs/training.md; numerically the same network)
    out: str = "runs/default"
    cache_dir: str = ".cache/pkdn"
    log_every: int = 50
    val_every: int = 1000
    ckpt_every: int = 500

    def __post_init__(self) -> None:
        for f in fields(self):  # types, ranges, finite numbers: the same check as --set and YAML values
            setattr(self, f.name, check_setting(f.name, getattr(self, f.name)))
        if self.hr_size % (2 * self.scale):
            raise PKDNError(f"hr_size must be a multiple of 2 x scale ({2 * self.scale}), got {self.hr_size}")
        if self.role not in ("teacher", "student"):
            raise PKDNError(f"role must be 'teacher' or 'student', got {self.role!r}")
        if self.scale not in (4, 8):
            raise PKDNError(f"scale must be 4 or 8, got {self.scale}")
        if self.steps < 1 or self.batch_size < 1:
            raise PKDNError("steps and batch_size must be positive")
        if self.pixel_loss not in ("l1", "mse"):
            raise PKDNError(f"pixel_loss must be 'l1' or 'mse', got {self.pixel_loss!r}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise PKDNError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise PKDNError(f"precision must be 'auto', 'fp32' or 'bf16', got {self.precision!r}")
        if self.teacher_lr not in ("same", "clean"):
            raise PKDNError(f"teacher_lr must be 'same' or 'clean', got {self.teacher_lr!r}")
        if not isinstance(self.camera, dict):
            raise PKDNError(f"camera must be a mapping of CameraDegradation settings, got {self.camera!r}")
        if self.camera:
            from .camera import CameraDegradation

            CameraDegradation.from_dict(self.camera)  # unknown keys and bad ranges fail here, not after loading
        self.betas = tuple(self.betas)
        self._check_schedule()
        self._check_model()

    def _check_schedule(self) -> None:
        """Step counts and the learning rate: caught here, not as a ZeroDivisionError or an Adam error later."""
        for key in ("log_every", "val_every", "ckpt_every"):
            if getattr(self, key) < 1:
                raise PKDNError(f"{key} must be >= 1 (a number of steps), got {getattr(self, key)}")
        if self.warmup_steps < 0:
            raise PKDNError(f"warmup_steps must be >= 0, got {self.warmup_steps}")
        if not self.lr > 0:
            raise PKDNError(f"lr must be > 0, got {self.lr}")
        if not 0 <= self.lr_min <= self.lr:
            raise PKDNError(f"lr_min must be in [0, lr={self.lr}], got {self.lr_min}")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise PKDNError(f"betas must be two numbers in [0, 1), got {list(self.betas)}")

    def _check_model(self) -> None:
        """``preset`` and the nested ``model:`` overrides must build a network (a misspelled key, a bad width)."""
        from pkdn_edge.models import PRESETS
        from pkdn_edge.models.pkdn import PKDNConfig, model_config

        if self.preset not in PRESETS:
            raise PKDNError(f"preset must be one of {sorted(PRESETS)}, got {self.preset!r}")
        if not isinstance(self.model, dict):
            raise PKDNError(f"model must be a mapping of architecture settings, got {self.model!r}")
        settable = sorted({f.name for f in fields(PKDNConfig)} - {"scale", "prior_channels"})
        unknown = sorted(set(self.model) - set(settable))
        if unknown:
            raise PKDNError(f"unknown model: keys {unknown}; valid keys: {settable} "
                            "(scale and role are top-level settings)")
        overrides = {k: tuple(v) if isinstance(v, list) else v for k, v in self.model.items()}
        try:
            model_config(self.preset, self.scale, self.role, **overrides)
        except (TypeError, ValueError) as exc:
            raise PKDNError(f"model: settings {self.model} do not make a network: {exc}") from None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["betas"] = list(self.betas)
        return d


def _parse_override(item: str) -> tuple[str, object]:
    """``key=value`` → (key, YAML value); an empty key or a value YAML cannot read is a PKDNError."""
    if "=" not in item:
        raise PKDNError(f"override {item!r} must look like key=value")
    key, value = item.split("=", 1)
    key = key.strip()
    if not key:
        raise PKDNError(f"override {item!r} has an empty key; write key=value (e.g. steps=1000)")
    try:
        return key, yaml.safe_load(value)
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise PKDNError(f"override {item!r}: the value of {key} is not valid YAML ({problem})") from None


parse_override = _parse_override


# ---------------------------------------------------------------------- the one settings validator
# Ranges of numeric settings: (low, high, high inclusive); None = unbounded. Numbers must be finite.
RANGES: dict[str, tuple[float | None, float | None, bool]] = {
    "steps": (1, None, True), "batch_size": (1, None, True), "threads": (1, None, True),
    "num_val": (1, None, True), "data_limit": (0, None, True), "hr_size": (16, 4096, True),
    "seed": (0, None, True), "log_every": (1, None, True), "val_every": (1, None, True),
    "ckpt_every": (1, None, True), "warmup_steps": (0, None, True), "feat_decay_steps": (0, None, True),
    "lr": (0, None, True), "lr_min": (0, None, True), "grad_clip": (0, None, True), "min_sharpness": (0, None, True),
    "w_pixel": (0, None, True), "w_feat": (0, None, True), "w_feat_end": (0, None, True), "w_out": (0, None, True),
    "ema_decay": (0, 1, False),
}
STRICTLY_POSITIVE = {"lr"}
CHOICES: dict[str, tuple[str, ...]] = {
    "role": ("teacher", "student"), "layout": ("aligned", "celeba", "celebamask"),
    "degradation": DEGRADATIONS, "select_on": ("bicubic", "camera", "mean"),
    "prior_source": ("landmarks", "labels"), "teacher_lr": ("same", "clean"), "pixel_loss": ("l1", "mse"),
    "feat_adapter": ("identity", "conv"), "device": ("auto", "cpu", "cuda"), "precision": ("auto", "fp32", "bf16"),
}
#: Other names a choice is accepted under, replaced by the canonical value (so checkpoints and log.csv
#: columns keep the canonical names): ``paper`` is the paper protocol's name in ``pkdn-train eval``.
ALIASES: dict[str, dict[str, str]] = {"degradation": DEGRADATION_ALIASES, "select_on": {"paper": "bicubic"}}


def check_setting(key: str, value: object) -> object:
    """The one validator of a training setting (YAML, ``--set``, pkdn-compress ``--set``, or a
    :class:`TrainConfig` built in code): the value in the setting's type, within its range, finite;
    anything else is a one-line :class:`PKDNError` naming the key."""
    known = {f.name: f for f in fields(TrainConfig)}
    if key not in known:
        raise PKDNError(f"unknown config key {key!r}; valid keys: {sorted(known)}")
    default = getattr(TrainConfig, key, None)
    if default is None:  # a field with a default_factory (model, camera: mappings)
        default = known[key].default_factory()
    value = _coerce(key, value, default)
    if key in RANGES and value is not None:
        lo, hi, hi_inclusive = RANGES[key]
        low_ok = lo is None or (value > lo if key in STRICTLY_POSITIVE else value >= lo)
        high_ok = hi is None or (value <= hi if hi_inclusive else value < hi)
        if not (low_ok and high_ok):
            want = (f"> {lo}" if key in STRICTLY_POSITIVE else f">= {lo}") if hi is None else \
                f"in [{lo}, {hi}{']' if hi_inclusive else ')'}"
            raise PKDNError(f"{key} must be {want}, got {value!r}")
    if key in ALIASES and isinstance(value, str):
        value = ALIASES[key].get(value, value)
    if key in CHOICES and value not in CHOICES[key]:
        raise PKDNError(f"{key} must be one of {list(CHOICES[key])}, got {value!r}")
    if key == "betas" and not all(0.0 <= b < 1.0 for b in value):
        raise PKDNError(f"betas must be two numbers in [0, 1), got {list(value)}")
    return value


def load_config(path: str | Path | None = None, overrides: list[str] | None = None, **fixed) -> TrainConfig:
    """Read a YAML config (optional), apply ``key=value`` overrides and ``fixed`` keyword values."""
    values: dict = {}
    if path:
        p = Path(path)
        if not p.exists():
            raise PKDNError(f"config file not found: {p}")
        try:
            values = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as exc:
            raise PKDNError(f"config {p} is not valid YAML: {exc}") from None
        if not isinstance(values, dict):
            raise PKDNError(f"config {p} must be a mapping of settings")
    for item in overrides or []:
        k, v = _parse_override(item)
        values[k] = v
    values.update(fixed)
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise PKDNError(f"unknown config keys {unknown}; valid keys: {sorted(known)}")
    for k, v in values.items():
        values[k] = check_setting(k, v)
    return TrainConfig(**values)


def _finite(key: str, value: object, kind: str = "number") -> float:
    """``value`` as a finite float (YAML reads ``2e-4`` as a string); bools are not numbers."""
    try:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise TypeError
        x = float(value)
    except (TypeError, ValueError, OverflowError):
        raise PKDNError(f"config key {key!r} must be a {kind}, got {value!r}") from None
    if not math.isfinite(x):
        raise PKDNError(f"config key {key!r} must be a finite {kind}, got {value!r}")
    return x


def _coerce(key: str, value: object, default: object) -> object:
    """Give ``value`` the type of the setting's default, or say why it cannot have it."""
    kind = type(default)
    if value is None and kind in (str, dict):
        return kind()  # `--set teacher=` / `camera:` with no value: the setting is off / empty
    if kind is bool:
        if not isinstance(value, bool):
            raise PKDNError(f"config key {key!r} must be true or false, got {value!r}")
        return value
    if kind is float:
        return _finite(key, value, "float")
    if kind is int:
        x = _finite(key, value, "int")
        if x != int(x):
            raise PKDNError(f"config key {key!r} must be a int (a whole number), got {value!r}")
        return int(x)
    if kind is str:
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise PKDNError(f"config key {key!r} must be a string, got {value!r}")
        return str(value)
    if kind is tuple:  # betas: two numbers
        if not isinstance(value, (list, tuple)) or len(value) != len(default):
            raise PKDNError(f"config key {key!r} must be a list of {len(default)} numbers, got {value!r}")
        return tuple(_finite(key, v) for v in value)
    if kind is dict:
        if not isinstance(value, dict):
            raise PKDNError(f"config key {key!r} must be a mapping, got {value!r}")
        return value
    return value
