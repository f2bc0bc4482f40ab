"""Parity of an exported artifact with the PyTorch model it was made from.

On HR faces (N,128,128,3) uint8 RGB (``shared/faces/eval`` when present: evaluation only, never
used to choose anything; else generated faces), LR inputs are PIL bicubic ↓s. Both the PyTorch
model and the artifact's engine (:func:`pkdn_edge.engines.load_engine`) super-resolve them:

* ``max_abs_diff``: max |artifact − torch| over the raw float outputs (the same
  normalized RGB scale as the input: 1.0 = full range);
* ``psnr_delta``: mean Y-PSNR (CTCNet protocol, vs HR) of the artifact minus that of the model,
  in dB (negative = worse), on outputs clamped and rounded to uint8.

Tolerances (:data:`TOLERANCES`, the project's parity targets; what was met: docs/export.md): fp32
max abs diff ≤ 1e-4 (ONNX Runtime, OpenVINO with an f32 hint); int8 within 0.1 dB of its fp32
source; fp16 within 0.05 dB.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from pkdn_edge.errors import PKDNError
from pkdn_edge.metrics import psnr

from .data import to_lr

TOLERANCES: dict[str, dict[str, float]] = {
    "fp32": {"max_abs_diff": 1e-4, "psnr_drop": 0.01},
    "fp16": {"max_abs_diff": 2e-2, "psnr_drop": 0.05},
    "int8": {"max_abs_diff": float("inf"), "psnr_drop": 0.1},
}


def to_uint8(y: np.ndarray) -> np.ndarray:
    """(N,3,H,W) float RGB in [0,1] (unclamped) → (N,H,W,3) uint8 RGB, clamped and rounded."""
    return (np.clip(y, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8).transpose(0, 2, 3, 1)


def mean_psnr(y: np.ndarray, hr: np.ndarray) -> float:
    """Mean Y-PSNR (dB, no border crop) of float outputs ``y`` (N,3,H,W) vs ``hr`` (N,H,W,3) uint8."""
    out = to_uint8(y)
    return float(np.mean([psnr(o, h) for o, h in zip(out, hr)]))


def torch_outputs(model: torch.nn.Module, lr: np.ndarray, batch: int = 16) -> np.ndarray:
    """(N,3,h,w) float32 → (N,3,s·h,s·w) float32 with a PyTorch model (CPU, no grad)."""
    outs = []
    with torch.inference_mode():
        for i in range(0, len(lr), batch):
            outs.append(model(torch.from_numpy(lr[i : i + batch])).float().numpy())
    return np.concatenate(outs)


@dataclass
class Parity:
    """Verification numbers of one artifact (stored in its manifest)."""

    backend: str
    faces: str
    n: int
    max_abs_diff: float
    mean_abs_diff: float
    psnr_reference: float
    psnr_artifact: float
    psnr_delta: float
    tolerance_max_abs_diff: float
    tolerance_psnr_drop: float
    passed: bool
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k, v in d.items():
            if isinstance(v, float):
                d[k] = float(f"{v:.6g}") if np.isfinite(v) else None
        return d

    def failure(self) -> str:
        """One line saying what exceeded its tolerance."""
        bits = []
        if self.max_abs_diff > self.tolerance_max_abs_diff:
            bits.append(f"max abs diff {self.max_abs_diff:.3g} > {self.tolerance_max_abs_diff:g}")
        if self.psnr_delta < -self.tolerance_psnr_drop:
            bits.append(f"PSNR delta {self.psnr_delta:+.3f} dB < -{self.tolerance_psnr_drop:g} dB")
        return "; ".join(bits)


def compare_outputs(ref: np.ndarray, out: np.ndarray, hr: np.ndarray, precision: str, backend: str,
                    faces: str, note: str = "") -> Parity:
    """Parity numbers of ``out`` vs the reference ``ref`` (both (N,3,H,W) float) on ``hr``."""
    if ref.shape != out.shape:
        raise PKDNError(f"artifact output shape {out.shape} differs from the model's {ref.shape}")
    if not np.all(np.isfinite(out)):
        raise PKDNError("artifact output holds NaN/Inf")
    diff = np.abs(out.astype(np.float64) - ref.astype(np.float64))
    p_ref, p_out = mean_psnr(ref, hr), mean_psnr(out, hr)
    tol = TOLERANCES[precision]
    par = Parity(backend, faces, len(hr), float(diff.max()), float(diff.mean()), p_ref, p_out, p_out - p_ref,
                 tol["max_abs_diff"], tol["psnr_drop"], True, note)
    par.passed = not par.failure()
    return par


def verify_engine(engine: Any, model: torch.nn.Module, hr: np.ndarray, faces: str,
                  ref: np.ndarray | None = None, note: str = "") -> Parity:
    """Run ``engine`` (an :class:`pkdn_edge.engines.Engine`) and ``model`` on ``hr`` faces and compare."""
    from .context import pad_hr

    hr = pad_hr(hr, tuple(engine.lr_size), engine.scale)  # a window larger than the crop: the face mirrored out
    lr = to_lr(hr, engine.scale)
    ref = torch_outputs(model, lr) if ref is None else ref
    out = engine.run_tensor(lr)
    return compare_outputs(ref, out, hr, engine.precision, engine.backend, faces, note)
