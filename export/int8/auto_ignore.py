"""``--ignore auto``: the one search for the ignored scopes (and preset) of an INT8 export.

:func:`search_ignored` quantizes with every candidate of :func:`default_candidates` (growing
ignored scopes, both presets), scores each on held-out training faces (never the eval set) against
the fp32 PyTorch model, and keeps the one with the fewest float groups within ``max_drop`` dB
(:func:`pick_best`). How a candidate is quantized and run is the caller's (:mod:`.strategy`): NNCF
on the OpenVINO model scored by OpenVINO, or NNCF on PyTorch → Q/DQ ONNX scored by ONNX Runtime.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable

import numpy as np

from ..context import ExportContext
from ..data import to_lr
from ..settings import PRESETS, Int8Settings
from ..verify import mean_psnr, torch_outputs


@dataclass
class Candidate:
    """One tried setting: mean Y-PSNR on the held-out faces and its delta against fp32 PyTorch."""

    settings: Int8Settings
    psnr: float
    delta: float


def default_candidates(base: Int8Settings) -> list[Int8Settings]:
    """The settings tried by ``--ignore auto``: growing ignored scopes, both presets."""
    out = []
    for ignore in ((), ("edges",), ("edges", "shuffle"), ("upsampler",), ("edges", "shuffle", "gates")):
        for preset in PRESETS:
            out.append(replace(base, ignore=ignore, preset=preset))
    return out


def pick_best(cands: list[Candidate], max_drop: float) -> Candidate:
    """The candidate with the fewest float convs whose PSNR drop is within ``max_drop`` dB, else the
    most accurate one (ties: fewer ignored groups, then performance preset)."""
    ok = [c for c in cands if c.delta >= -max_drop]
    if ok:
        return min(ok, key=lambda c: (len(c.settings.ignore), -c.delta))
    return max(cands, key=lambda c: c.delta)


def search_ignored(ctx: ExportContext, base: Int8Settings, select_hr: np.ndarray,
                   quantize: Callable[[Int8Settings], Any],
                   outputs: Callable[[Any, np.ndarray], np.ndarray]) -> tuple[Int8Settings, Any, dict[str, Any]]:
    """Try every :func:`default_candidates` of ``base``: ``quantize(settings)`` makes the INT8 model,
    ``outputs(model, lr)`` runs it on the held-out faces ``select_hr`` (M,H,W,3) uint8 (as LR,
    (M,3,h,w) float32). Returns (the best settings, the model made with them, the manifest's
    ``selection`` facts: faces, the best delta, every candidate's delta)."""
    sel_lr = to_lr(select_hr, ctx.scale)
    ref = mean_psnr(torch_outputs(ctx.model, sel_lr), select_hr)
    cands, models = [], {}
    for s in default_candidates(base):
        q = quantize(s)
        d = mean_psnr(outputs(q, sel_lr), select_hr) - ref
        ctx.log(f"int8 auto: {s.label():40s} PSNR delta {d:+.3f} dB on {len(select_hr)} held-out faces")
        cands.append(Candidate(s, ref + d, d))
        models[s] = q
    best = pick_best(cands, ctx.calib.max_drop)
    selection = {"faces": len(select_hr), "delta_db": round(best.delta, 4),
                 "tried": {c.settings.label(): round(c.delta, 4) for c in cands}}
    return best.settings, models[best.settings], selection
