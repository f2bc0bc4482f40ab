"""Quantization-aware training (QAT) of a PKDN student with NNCF, distilled from the frozen teacher.

NNCF 3.x's ``nncf.quantize`` on a PyTorch model returns the *same* model with fake-quantize hooks
(learnable scales, straight-through rounding), so training that model is QAT. Here:

1. **start**: PTQ exactly as the export does (:func:`.ptq.quantize_torch`: same calibration
   faces, preset and ignored scopes);
2. **train**: :class:`QATTrainer` is the ordinary :class:`~pkdn_edge.train.loop.Trainer` (seeded
   batches, ``w_pixel·L1 + w_feat·feature distillation + w_out·output distillation`` against the
   frozen teacher, cosine learning rate, ``last.pt`` checkpoints, bit-exact resume) run on the
   fake-quant model. NNCF's hooks are active only inside the model's own ``forward``, so the
   distilled features are read with forward hooks (:class:`FeatureTap`) instead of
   :meth:`PKDN.forward_features`;
3. **select**: the PTQ model is validated before the first step, so the kept model
   (``best_qat.pt``, the best held-out PSNR) is never worse than PTQ on those faces.

A resumed run rebuilds the PTQ model (deterministic for the same faces) and loads the checkpoint's
state, quantizer scales included. The result exports like any NNCF model
(:class:`~..context.QuantizedModel` → OpenVINO IR or TensorRT Q/DQ ONNX).
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pkdn_edge.models import PKDN
from pkdn_edge.models.checkpoint import read_checkpoint, save_atomic
from pkdn_edge.train.config import TrainConfig
from pkdn_edge.train.loop import Trainer

from ..settings import Int8Settings
from .ptq import quantize_torch

BEST_NAME = "best_qat.pt"


class FeatureTap:
    """Record the distilled features of a PKDN while it runs its own ``forward``.

    Hooks: ``fusions[i]`` (encoder stage ``i``), ``bottleneck``, ``dec_blocks[i]`` and the
    upsampler's shared ReLU (its first call is the refinement feature). :attr:`features` lists them
    in :meth:`PKDN.forward_features` order: encoder 0..n-1, bottleneck, decoder n-2..0, refinement.

    Use as ``with FeatureTap(model) as tap: sr = model(lr)`` then ``tap.features``.
    """

    def __init__(self, model: PKDN) -> None:
        self.model = model
        self._out: dict[str, torch.Tensor] = {}
        self._handles: list[Any] = []

    def __enter__(self) -> "FeatureTap":
        m = self.model
        named = [(f"enc{i}", f) for i, f in enumerate(m.fusions)] + [("bottleneck", m.bottleneck)]
        named += [(f"dec{i}", b) for i, b in enumerate(m.dec_blocks)] + [("refine", m.upsampler.act)]
        self._out.clear()
        self._handles = [mod.register_forward_hook(partial(self._record, name)) for name, mod in named]
        return self

    def _record(self, name: str, _module: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
        self._out.setdefault(name, output)  # first call only (the upsampler's ReLU runs once per step)

    def __exit__(self, *exc: Any) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    @property
    def features(self) -> list[torch.Tensor]:
        n = len(self.model.cfg.widths)
        order = [f"enc{i}" for i in range(n)] + ["bottleneck"] + [f"dec{i}" for i in range(n - 2, -1, -1)] + ["refine"]
        return [self._out[k] for k in order]


class QATTrainer(Trainer):
    """:class:`Trainer` for an NNCF fake-quant student: features through :class:`FeatureTap`, the
    best model written as ``best_qat.pt`` (the full NNCF state: weights and quantizer scales)."""

    def student_forward(self, lr: torch.Tensor, prior: torch.Tensor | None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        with FeatureTap(self.model) as tap:
            sr = self.model(lr)
        return sr, tap.features

    def save_best(self, score: float) -> None:
        save_atomic({"model": self.model.state_dict(), "config": self.model.cfg.to_dict(),
                     "meta": {"step": self.step, "val_psnr": score, "train": self.cfg.to_dict()}}, self.out / BEST_NAME)


def _summary(out: Path) -> dict[str, Any]:
    f = out / "summary.json"
    return json.loads(f.read_text()) if f.is_file() else {}


def run_qat(model: PKDN, cfg: TrainConfig, calib_lr: np.ndarray, settings: Int8Settings,
            adapters: dict[str, torch.Tensor] | None = None, progress: bool = True) -> tuple[nn.Module, dict[str, Any]]:
    """PTQ of ``model`` on ``calib_lr`` (N,3,h,w) float32, then QAT for ``cfg.steps`` steps in ``cfg.out``.

    Args:
        model: the fp32 student (not modified).
        cfg: training settings (``role=student``, ``teacher`` for distillation, small ``lr``).
        calib_lr: calibration LR faces for the PTQ start.
        settings: NNCF preset / ignored scopes.
        adapters: state of the distillation adapters to start from (e.g. those of the fine-tuning
            run, fitted to this student); random 1×1 adapters otherwise.
    Returns:
        (the best fake-quant model in eval mode, summary with ``ptq_val_psnr``, ``best_val_psnr``,
        ``best_step``, ``steps``).
    """
    out = Path(cfg.out)
    q = quantize_torch(model, calib_lr, settings)
    info_file = out / "ptq.json"
    done = _summary(out).get("done") and _summary(out).get("steps") == cfg.steps and (out / BEST_NAME).is_file()
    if not done:
        trainer = QATTrainer(cfg, model=q)
        if trainer.step == 0:
            if adapters and trainer.adapters is not None:
                trainer.adapters.load_state_dict(adapters)
            ptq = trainer.validate()  # the PTQ model is the first candidate (step 0)
            info_file.write_text(json.dumps({"ptq_val_psnr": ptq}))
        trainer.run(progress=progress)
    best = read_checkpoint(out / BEST_NAME)
    q.to("cpu").load_state_dict(best["model"])  # export and evaluation run on the CPU
    q.eval()
    meta = best.get("meta", {})
    ptq = json.loads(info_file.read_text()).get("ptq_val_psnr") if info_file.is_file() else None
    return q, {"steps": cfg.steps, "lr": cfg.lr, "ptq_val_psnr": ptq, "best_val_psnr": meta.get("val_psnr"),
               "best_step": meta.get("step")}
