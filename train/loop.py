"""The training loop shared by teacher and student runs.

* Teacher: L1(SR_t, HR) with the K-channel parsing prior as a second input.
* Student: ``w_pixel·L1(SR_s, HR) + w_feat(step)·mean_k L1(F_s^k, F_t^k) + w_out·L1(SR_s, SR_t)``
  against a frozen teacher; with no ``teacher`` it is the no-distillation ablation.
* ``pixel_loss: mse`` replaces the pixel term's L1 by the mean squared error (for either role).
* ``ema_decay > 0`` keeps an exponential moving average of the weights (:class:`WeightEMA`); validation
  and ``best.pt`` then use the average, the optimiser keeps training the raw weights.

Checkpoints (``last.pt`` every ``ckpt_every`` steps, ``best.pt`` on the best validation PSNR) are
written atomically and hold everything needed to resume bit-exactly: the batch of step ``k`` is a
pure function of ``(seed, k)`` and the learning rate a pure function of ``k``.
"""

from __future__ import annotations

import csv
import io
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from pkdn_edge.atomic import atomic_write_bytes
from pkdn_edge.errors import PKDNError
from pkdn_edge.metrics import psnr
from pkdn_edge.models import PKDN, PKDNConfig, create_model, from_plain
from pkdn_edge.models.checkpoint import export_weights, load_model, read_checkpoint, save_atomic

from .camera import protocol_lr
from .config import TrainConfig
from .data import BatchSampler, FaceData, face_sharpness, split_indices, to_tensor, to_uint8
from .degradations import bicubic_down
from .losses import FeatureAdapters, feat_weight, feature_distillation
from .precision import choose_precision
from .student_init import student_from_teacher

LOG_FIELDS = ["step", "loss", "l1", "feat", "out", "lr", "data_s", "val_psnr", "val_bicubic", "val_camera", "elapsed_s"]


def train_val_split(data: FaceData, cfg: TrainConfig) -> tuple[np.ndarray, np.ndarray]:
    """(train_idx, val_idx) of ``data`` for a config: the seeded split of ``num_val`` faces, then
    the ``min_sharpness`` filter on both parts (so a seed's held-out faces stay held out whatever
    the filter)."""
    tr, va = split_indices(len(data), cfg.num_val, cfg.seed)
    if cfg.min_sharpness > 0:
        keep = face_sharpness(data.hr) >= cfg.min_sharpness
        tr, va = tr[keep[tr]], va[keep[va]]
        if len(tr) == 0 or len(va) == 0:
            raise PKDNError(
                f"min_sharpness={cfg.min_sharpness} dB leaves {len(tr)} training / {len(va)} validation faces"
            )
    return tr, va


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise PKDNError("device=cuda but CUDA is not available; use device=auto or cpu")
    return torch.device(name)


def learning_rate(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up then cosine decay from ``cfg.lr`` to ``cfg.lr_min`` at ``cfg.steps``."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    t = (step - cfg.warmup_steps) / max(cfg.steps - cfg.warmup_steps, 1)
    return cfg.lr_min + 0.5 * (cfg.lr - cfg.lr_min) * (1 + math.cos(math.pi * min(t, 1.0)))


def load_priors(data: FaceData, cfg: TrainConfig) -> np.ndarray:
    """(N,K,H,W) uint8 soft parsing maps for ``data``: from labels or from the landmark model."""
    from . import priors as P

    if cfg.prior_source == "labels":
        if data.labels is None:
            raise PKDNError("prior_source=labels needs a labelled layout (layout=celebamask)")
        return np.stack([(P.celebamask_to_regions(lab) * 255).astype(np.uint8) for lab in data.labels])
    if cfg.prior_source == "landmarks":
        return P.compute_priors(np.ascontiguousarray(data.hr[..., ::-1]), cfg.cache_dir, progress=sys.stderr.isatty())
    raise PKDNError(f"unknown prior_source {cfg.prior_source!r}; choose 'landmarks' or 'labels'")


@torch.no_grad()
def validate(
    model: PKDN, hr: np.ndarray, scale: int, device: torch.device, priors: np.ndarray | None = None, batch: int = 64,
    lr_faces: np.ndarray | None = None,
) -> float:
    """Mean Y-PSNR (no crop) of ``model`` on faces (N,H,W,3) from their LR ``lr_faces`` (N,h,w,3);
    by default the CTCNet protocol's (PIL bicubic ↓s)."""
    was_training = model.training
    model.eval()
    if lr_faces is None:
        lr_faces = np.stack([bicubic_down(x, scale) for x in hr])
    scores = []
    for i in range(0, len(hr), batch):
        h = hr[i : i + batch]
        lr = to_tensor(lr_faces[i : i + batch]).to(device)
        p = None if priors is None else torch.from_numpy(priors[i : i + batch]).float().div(255).to(device)
        sr = to_uint8(model(lr, p))
        scores += [psnr(s, r) for s, r in zip(sr, h)]
    model.train(was_training)
    return float(np.mean(scores))


class WeightEMA:
    """Exponential moving average of a model's floating-point parameters and buffers.

    After each optimiser step ``update()`` moves every averaged tensor ``e`` towards the live one
    ``p``: ``e ← decay·e + (1 − decay)·p``. The average lives in its own copy of the model
    (``self.model``), so it can be validated and saved like any other :class:`PKDN`.
    """

    def __init__(self, model: PKDN, decay: float) -> None:
        import copy

        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        # (average, live) tensor pairs, taken once: the optimiser and load_state_dict update the
        # live tensors in place, so the pairs stay valid for the whole run
        live = model.state_dict(keep_vars=True)
        pairs = [(e, live[k].detach()) for k, e in self.model.state_dict().items()]
        self._float = [(e, p) for e, p in pairs if e.is_floating_point()]
        self._other = [(e, p) for e, p in pairs if not e.is_floating_point()]

    @torch.no_grad()
    def update(self) -> None:
        for e, p in self._float:
            e.lerp_(p, 1.0 - self.decay)
        for e, p in self._other:
            e.copy_(p)


class Trainer:
    """One run: builds data, model, optimiser; resumes from ``<out>/last.pt`` when it exists.

    ``__init__`` runs the set-up stages in order: :meth:`_set_up_run` (threads, device, precision,
    ``out``), :meth:`_build_data`, :meth:`_build_teacher`, :meth:`_build_priors`, :meth:`_build_sampler`,
    :meth:`_build_validation`, then, after seeding torch, :meth:`_build_model`, :meth:`_set_memory_format`,
    :meth:`_build_optimizer` (adapters, Adam, EMA) and :meth:`_resume`.

    ``model`` (optional) is trained instead of the one ``cfg`` describes (``init``/``preset``),
    e.g. an NNCF fake-quantized student for quantization-aware training
    (:mod:`pkdn_edge.export.int8.qat`, which also overrides :meth:`student_forward` and
    :meth:`save_best`). When ``cfg.init`` is a pruned checkpoint (its metadata has ``pruning``), the
    distillation adapters start as channel selections (:meth:`FeatureAdapters.init_selection`).
    """

    def __init__(self, cfg: TrainConfig, model: PKDN | None = None) -> None:
        self.cfg = cfg
        self._set_up_run()
        self._build_data()
        self._build_teacher()
        self._build_priors()
        self._build_sampler()
        self._build_validation()
        torch.manual_seed(cfg.seed)  # the model's initial weights (and any random adapter) come after this
        init_meta = self._build_model(model)
        self._set_memory_format()
        self._build_optimizer(init_meta)
        self.step = 0
        self.best = -math.inf
        self._resume()

    # ------------------------------------------------------------------ set-up stages (in this order)
    def _set_up_run(self) -> None:
        """Threads, device, precision (printed once: :func:`~pkdn_edge.train.precision.choose_precision`), ``out``."""
        torch.set_num_threads(self.cfg.threads)
        self.device = resolve_device(self.cfg.device)
        self.precision, why = choose_precision(self.cfg.precision, self.device.type)
        print(f"precision: {self.precision} ({why})", flush=True)
        self.out = Path(self.cfg.out)
        self.out.mkdir(parents=True, exist_ok=True)

    def _build_data(self) -> None:
        """The faces of ``cfg.data`` split into ``train_data`` and ``val_data`` (:func:`train_val_split`)."""
        cfg = self.cfg
        data = FaceData.load(cfg.data, cfg.layout, cfg.hr_size, cfg.cache_dir, limit=cfg.data_limit or None)
        tr, va = train_val_split(data, cfg)
        self.train_data, self.val_data = data.subset(tr), data.subset(va)

    def _build_teacher(self) -> None:
        """``self.teacher``: the frozen distillation source of a student with ``cfg.teacher``, else None.
        A teacher (LR + prior), or a student (LR only), e.g. the unpruned student a pruned one is
        fine-tuned from (pkdn-compress)."""
        cfg = self.cfg
        self.teacher: PKDN | None = None
        if cfg.role != "student" or not cfg.teacher:
            return
        self.teacher, _ = load_model(cfg.teacher)
        if self.teacher.cfg.scale != cfg.scale:
            raise PKDNError(
                f"{cfg.teacher} is a ×{self.teacher.cfg.scale} {self.teacher.cfg.role}; need a ×{cfg.scale} teacher"
            )
        self.teacher.to(self.device).eval().requires_grad_(False)

    def _build_priors(self) -> None:
        """Parsing priors of the training faces (for a teacher run, or a teacher to distil from) and of the
        validation faces (teacher runs only); None where not needed."""
        cfg = self.cfg
        needs_priors = cfg.role == "teacher" or (self.teacher is not None and self.teacher.cfg.role == "teacher")
        self.priors = load_priors(self.train_data, cfg) if needs_priors else None
        self.val_priors = load_priors(self.val_data, cfg) if cfg.role == "teacher" else None

    def _build_sampler(self) -> None:
        """The seeded :class:`~pkdn_edge.train.data.BatchSampler` of the training faces."""
        cfg = self.cfg
        self.sampler = BatchSampler(
            self.train_data.hr, cfg.scale, cfg.degradation, self.priors, augment=cfg.augment, seed=cfg.seed,
            camera=cfg.camera, clean_lr=self.teacher is not None and cfg.teacher_lr == "clean",
        )

    def _build_validation(self) -> None:
        """Validation LR per protocol (``self.val_lr``, keys = log.csv's ``val_<protocol>`` columns): the
        paper protocol's (``bicubic``) always; the frozen camera protocol's when trained or selected on it."""
        cfg = self.cfg
        protocols = ["bicubic"] + (["camera"] if cfg.degradation == "camera" or cfg.select_on != "bicubic" else [])
        self.val_lr = {p: protocol_lr(self.val_data.hr, cfg.scale, p) for p in protocols}

    def _build_model(self, model: PKDN | None) -> dict:
        """``self.model``: the ``model`` given, the ``cfg.init`` checkpoint (a teacher there starts a student:
        :meth:`_student_from_teacher`) or a new network of ``cfg.preset``/``cfg.model``; returns the init
        checkpoint's metadata (its ``pruning`` record sets up the adapters)."""
        cfg = self.cfg
        init_meta: dict = {}
        if model is not None:
            if model.cfg.scale != cfg.scale or model.cfg.role != cfg.role:
                raise PKDNError(
                    f"the given model is a ×{model.cfg.scale} {model.cfg.role}, not a ×{cfg.scale} {cfg.role}"
                )
            self.model = model.to(self.device).train()
        elif cfg.init:
            self.model, init_meta = load_model(cfg.init)
            if cfg.role == "student" and self.model.cfg.role == "teacher" and self.model.cfg.scale == cfg.scale:
                self.model = self._student_from_teacher(self.model)
                init_meta = {}
            if self.model.cfg.scale != cfg.scale or self.model.cfg.role != cfg.role:
                raise PKDNError(f"init checkpoint {cfg.init} is a ×{self.model.cfg.scale} {self.model.cfg.role}")
            if cfg.model.get("block") == "rep" and self.model.cfg.block == "plain":
                self.model = from_plain(self.model)  # a rep fine-tune of a plain checkpoint: same output at step 0
            self.model.to(self.device).train()
        else:
            overrides = {k: tuple(v) if isinstance(v, list) else v for k, v in cfg.model.items()}
            self.model = create_model(cfg.preset, cfg.scale, cfg.role, **overrides).to(self.device)
        return init_meta

    def _set_memory_format(self) -> None:
        """Channels-last (``cfg.channels_last``) or contiguous layout for the model, the teacher and the batches."""
        self.memory_format = torch.channels_last if self.cfg.channels_last else torch.contiguous_format
        self.model.to(memory_format=self.memory_format)
        if self.teacher is not None:
            self.teacher.to(memory_format=self.memory_format)

    def _build_optimizer(self, init_meta: dict) -> None:
        """Feature adapters (with a teacher; channel selections for a pruned ``init``), Adam over the model and
        adapters, and the weight average (``cfg.ema_decay``)."""
        cfg = self.cfg
        self.adapters = None
        params = list(self.model.parameters())
        if self.teacher is not None:
            self.adapters = FeatureAdapters(
                self.model.feature_channels, self.teacher.feature_channels, cfg.feat_adapter
            ).to(self.device)
            index = init_meta.get("pruning", {}).get("feature_index")
            if index and init_meta["pruning"].get("feature_channels_before") == self.teacher.feature_channels:
                self.adapters.init_selection(index)
            params += list(self.adapters.parameters())
        self.opt = torch.optim.Adam(params, lr=cfg.lr, betas=cfg.betas)
        self.ema = WeightEMA(self.model, cfg.ema_decay) if cfg.ema_decay > 0 else None

    def _student_from_teacher(self, teacher: PKDN) -> PKDN:
        """``cfg.init`` is a teacher: the student starts as that teacher with its mean training prior
        folded in (:func:`~pkdn_edge.train.student_init.student_from_teacher`), over 256 seeded faces."""
        priors = self.priors if self.priors is not None else load_priors(self.train_data, self.cfg)
        pick = np.random.default_rng(self.cfg.seed).choice(len(priors), min(256, len(priors)), replace=False)
        return student_from_teacher(teacher, torch.from_numpy(priors[np.sort(pick)]).float().div(255))

    # ------------------------------------------------------------------ checkpoints
    def _state(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "config": self.model.cfg.to_dict(),
            "train": self.cfg.to_dict(),
            "optimizer": self.opt.state_dict(),
            "adapters": self.adapters.state_dict() if self.adapters is not None else {},
            "ema": self.ema.model.state_dict() if self.ema is not None else {},
            "step": self.step,
            "best": self.best,
            "meta": {"step": self.step, "best_val_psnr": self.best, "precision": self.precision},
        }

    def _resume(self) -> None:
        last = self.out / "last.pt"
        if not last.exists():
            return
        ckpt = read_checkpoint(last)
        if PKDNConfig.from_dict(ckpt["config"]) != self.model.cfg:
            raise PKDNError(f"{last} was trained with a different model config; use a new `out` folder")
        self.model.load_state_dict(ckpt["model"])
        self.opt.load_state_dict(ckpt["optimizer"])
        if self.adapters is not None and ckpt.get("adapters"):
            try:
                self.adapters.load_state_dict(ckpt["adapters"])
            except RuntimeError:
                raise PKDNError(
                    f"{last} holds feature adapters of another kind than feat_adapter={self.cfg.feat_adapter!r}; "
                    "resume with the run's own setting or use a new `out` folder"
                ) from None
        if self.ema is not None:
            if not ckpt.get("ema"):
                raise PKDNError(
                    f"{last} was trained without ema_decay; resume with the run's own setting or use a new `out` folder"
                )
            self.ema.model.load_state_dict(ckpt["ema"])
        self.step, self.best = int(ckpt["step"]), float(ckpt["best"])
        self._trim_log()
        print(f"resumed {last} at step {self.step}")

    def _trim_log(self) -> None:
        log = self.out / "log.csv"
        if not log.exists():
            return
        with log.open(newline="") as fh:
            rows = [r for r in csv.DictReader(fh) if int(r["step"]) <= self.step]
        buf = io.StringIO()
        w = csv.DictWriter(buf, LOG_FIELDS)
        w.writeheader()
        w.writerows(rows)
        atomic_write_bytes(log, buf.getvalue().encode())  # a kill mid-rewrite never loses the log

    def _log(self, row: dict) -> None:
        log = self.out / "log.csv"
        new = not log.exists()
        with log.open("a", newline="") as fh:
            w = csv.DictWriter(fh, LOG_FIELDS)
            if new:
                w.writeheader()
            w.writerow({k: row.get(k, "") for k in LOG_FIELDS})

    # ------------------------------------------------------------------ training
    def train_step(self, step: int) -> dict[str, float]:
        cfg = self.cfg
        lr_now = learning_rate(step, cfg)
        for g in self.opt.param_groups:
            g["lr"] = lr_now
        t_data = time.perf_counter()
        b = {
            k: v.to(self.device, memory_format=self.memory_format)
            for k, v in self.sampler.batch(step, cfg.batch_size).items()
        }
        t_data = time.perf_counter() - t_data  # the loader's share of the step (logged as data_s)
        prior = b.get("prior") if cfg.role == "teacher" else None
        with self._autocast():
            sr, feats = self.student_forward(b["lr"], prior)
        sr, feats = sr.float(), [f.float() for f in feats]
        l1 = F.l1_loss(sr, b["hr"])
        pixel = F.mse_loss(sr, b["hr"]) if cfg.pixel_loss == "mse" else l1
        loss = cfg.w_pixel * pixel
        stats = {"l1": l1.item(), "lr": lr_now, "data_s": t_data}
        if self.teacher is not None:
            with torch.no_grad(), self._autocast():
                # no prior: a student source
                sr_t, feats_t = self.teacher.forward_features(b.get("lr_clean", b["lr"]), b.get("prior"))
            sr_t, feats_t = sr_t.float(), [f.float() for f in feats_t]
            fd = feature_distillation(self.adapters(feats), feats_t)
            od = F.l1_loss(sr, sr_t)
            loss = loss + feat_weight(step, cfg.w_feat, cfg.w_feat_end, cfg.feat_decay_steps) * fd + cfg.w_out * od
            stats.update(feat=fd.item(), out=od.item())
        if not torch.isfinite(loss):
            raise PKDNError(f"loss became {loss.item()} at step {step}; lower lr or check the data")
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        self.opt.step()
        if self.ema is not None:
            self.ema.update()
        stats["loss"] = loss.item()
        return stats

    def _autocast(self) -> torch.autocast:
        """bfloat16 autocast for forward passes when the chosen precision is bf16 (a no-op for fp32;
        ``precision: auto`` is resolved once in ``__init__`` by :func:`~pkdn_edge.train.precision.choose_precision`)."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16")

    def run(self, stop_at: int | None = None, max_minutes: float | None = None, progress: bool = True) -> dict:
        """Train until ``cfg.steps`` (or ``stop_at`` / ``max_minutes``, checkpointing before leaving)."""
        cfg = self.cfg
        end = min(cfg.steps, stop_at) if stop_at else cfg.steps
        t0 = time.time()
        deadline = t0 + 60 * max_minutes if max_minutes else math.inf
        bar = tqdm(total=end, initial=self.step, disable=not progress, desc=f"{cfg.role} ×{cfg.scale}",
                   dynamic_ncols=True)
        acc: dict[str, list[float]] = {}
        self.model.train()
        try:
            while self.step < end:
                stats = self.train_step(self.step)
                self.step += 1
                bar.update(1)
                for k, v in stats.items():
                    acc.setdefault(k, []).append(v)
                if self.step % cfg.log_every == 0 or self.step == end:
                    row = {k: f"{np.mean(v):.5g}" for k, v in acc.items()}
                    row.update(step=self.step, elapsed_s=f"{time.time() - t0:.1f}")
                    bar.set_postfix(loss=row["loss"])
                    acc.clear()
                    if self.step % cfg.val_every == 0 or self.step == cfg.steps:
                        row["val_psnr"] = f"{self.validate():.3f}"
                        row.update({f"val_{p}": f"{v:.3f}" for p, v in self.val_scores.items()})
                        per = ", ".join(f"{p} {v:.3f}" for p, v in self.val_scores.items())
                        bar.write(f"step {self.step}: val PSNR {row['val_psnr']} dB ({per}; best {self.best:.3f})")
                    self._log(row)
                if self.step % cfg.ckpt_every == 0:
                    save_atomic(self._state(), self.out / "last.pt")
                if time.time() > deadline:
                    bar.write(f"time box of {max_minutes} min reached at step {self.step}")
                    break
        finally:
            bar.close()
            save_atomic(self._state(), self.out / "last.pt")
        summary = {"step": self.step, "steps": cfg.steps, "best_val_psnr": self.best, "done": self.step >= cfg.steps}
        atomic_write_bytes(self.out / "summary.json", json.dumps(summary, indent=2).encode())
        return summary

    def student_forward(self, lr: torch.Tensor, prior: torch.Tensor | None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The trained model's ``(sr, distilled features)`` for a batch (see :meth:`PKDN.forward_features`)."""
        return self.model.forward_features(lr, prior)

    @property
    def eval_model(self) -> PKDN:
        """The weights that are validated and saved: the moving average when ``ema_decay > 0``."""
        return self.ema.model if self.ema is not None else self.model

    def validate(self) -> float:
        """Validation PSNR per protocol (kept in ``self.val_scores``); returns the ``select_on`` score."""
        self.val_scores = {
            p: validate(self.eval_model, self.val_data.hr, self.cfg.scale, self.device, self.val_priors, lr_faces=lr)
            for p, lr in self.val_lr.items()
        }
        sel = self.cfg.select_on
        score = float(np.mean(list(self.val_scores.values()))) if sel == "mean" else self.val_scores[sel]
        if score > self.best:
            self.best = score
            self.save_best(score)
        return score

    def save_best(self, score: float) -> None:
        """Write ``<out>/best.pt`` (inference weights) for a new best validation PSNR."""
        meta = {"step": self.step, "val_psnr": score, "val": getattr(self, "val_scores", {}),
                "train": self.cfg.to_dict(), "precision": self.precision}
        export_weights(self.eval_model, self.out / "best.pt", meta=meta)
