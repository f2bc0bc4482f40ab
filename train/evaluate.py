"""``pkdn-train eval``: PSNR/SSIM of checkpoints against bicubic on aligned HR faces + grid images.

LR protocols, each with its own bicubic baseline (PIL bicubic ↑s of the *same* LR):

* ``paper`` (alias ``bicubic``, its former name) — the paper's (``../shared/design/PKDN.md`` §4): LR = PIL
  bicubic ↓s (antialiased). A row's protocol is the name asked for (``bicubic`` rows for ``--protocol bicubic``).
* ``camera`` — the frozen camera protocol (:func:`pkdn_edge.train.camera.camera_protocol_lr`,
  version ``CAMERA_PROTOCOL_VERSION``): each face degraded once by the camera model with its own seed.
* the frozen per-family protocols of the robustness matrix (``clean``, ``blur``, ``aliasing``,
  ``noise``, ``isp``, ``jpeg``, ``video``, ``mixed``: :func:`pkdn_edge.train.camera.family_protocol_lr`);
  with more than two protocols eval.md ends with a model × protocol table of gains.

Precision: fp32 (OpenVINO ``INFERENCE_PRECISION_HINT`` f32) unless bf16 is requested and native
(:func:`eval_precision`).

Metrics on the Y channel; both the CTCNet (no crop) and DIC (8-px crop) columns.
Teachers are evaluated with landmark priors computed from the HR face (their upper reference).
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import torch

from pkdn_edge.errors import PKDNError
from pkdn_edge.metrics import evaluate_pair
from pkdn_edge.models.checkpoint import load_model

from .camera import (
    CAMERA_PROTOCOL_VERSION,
    DEFAULT_PROTOCOLS,
    FAMILY_PROTOCOL_VERSION,
    PROTOCOL_ALIASES,
    PROTOCOLS,
    protocol_lr,
)
from .data import FaceData, to_tensor, to_uint8
from .degradations import bicubic_down, bicubic_up

METRIC_KEYS = ("psnr_ctcnet", "ssim_ctcnet", "psnr_dic", "ssim_dic")


def mean_metrics(outs: np.ndarray, hr: np.ndarray) -> dict[str, float]:
    """Mean PSNR/SSIM (:data:`METRIC_KEYS`) of outputs (N,H,W,3) uint8 against HR faces (N,H,W,3)."""
    per = [evaluate_pair(o, h) for o, h in zip(outs, hr)]
    return {k: float(np.mean([m[k] for m in per])) for k in METRIC_KEYS}


_mean_metrics = mean_metrics  # the former private name


def eval_precision(requested: str, flags: set[str] | None = None) -> dict[str, str]:
    """Precision of evaluation: ``{"torch": fp32|bf16, "openvino": f32|bf16, "why": ...}``.

    fp32 (OpenVINO ``INFERENCE_PRECISION_HINT`` f32) unless bf16 is requested (``bf16`` or
    ``auto``) *and* native: AVX512-BF16/AMX in the CPU flags for PyTorch checkpoints, ``BF16`` in
    the OpenVINO CPU plugin's capabilities for OpenVINO artifacts (INT8 artifacts keep their own).
    """
    from .precision import native_bf16, openvino_precision

    if requested not in ("fp32", "bf16", "auto"):
        raise PKDNError(f"precision must be 'fp32', 'bf16' or 'auto', got {requested!r}")
    if requested == "fp32":
        return {"torch": "fp32", "openvino": "f32", "why": "fp32 requested"}
    native, which = native_bf16(flags)
    ov, ov_why = openvino_precision(requested) if native else ("f32", f"{requested} requested, but {which}")
    return {"torch": "bf16" if native else "fp32", "openvino": ov,
            "why": f"torch: {requested} requested, {which}; openvino: {ov_why}"}


@torch.no_grad()
def super_resolve(
    model, hr: np.ndarray, scale: int, priors: np.ndarray | None = None, batch: int = 32, tta: str = "none",
    lr_faces: np.ndarray | None = None, bf16: bool = False,
) -> np.ndarray:
    """Run ``model`` on LR faces → SR (N,H,W,3) uint8: ``lr_faces`` (N,h,w,3) when given, else the
    paper protocol's LR (PIL bicubic ↓s) of the HR faces ``hr`` (N,H,W,3) uint8 RGB.

    ``tta="flip"``: the mean of the outputs for each face and its left-right mirror (mirrored
    back), as :class:`pkdn_edge.engines.Engine` does with ``tta="flip"``. ``bf16``: PyTorch models
    run under bfloat16 autocast (see :func:`eval_precision`).
    """
    if tta not in ("none", "flip"):
        raise PKDNError(f"unknown tta {tta!r}; choose 'none' or 'flip'")
    if tta != "none" and priors is not None:
        raise PKDNError("tta is for students: a teacher's parsing prior has left/right regions a mirror would swap")
    if lr_faces is None:
        lr_faces = np.stack([bicubic_down(x, scale) for x in hr])
    outs = []
    for i in range(0, len(hr), batch):
        lr = to_tensor(lr_faces[i : i + batch])
        p = None if priors is None else torch.from_numpy(priors[i : i + batch]).float().div(255)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16 and not isinstance(model, ArtifactModel)):
            sr = model(lr, p).float()
            if tta == "flip":
                sr = 0.5 * (sr + model(lr.flip(-1), None).float().flip(-1))
        if not torch.isfinite(sr).all():
            raise PKDNError("the model produced NaN/Inf outputs: the checkpoint is broken")
        outs.append(to_uint8(sr))
    return np.concatenate(outs)


def matrix_table(rows: list[dict], protocols: tuple[str, ...]) -> list[str]:
    """Markdown rows: one line per (scale, model), one column per protocol, cells = gain over bicubic
    (the robustness matrix); the bicubic line gives the baseline PSNR instead."""
    lines = ["| scale | model | " + " | ".join(protocols) + " |", "|---|---|" + "---|" * len(protocols)]
    keys = list(dict.fromkeys((r["scale"], r["model"]) for r in rows))
    cell = {(r["scale"], r["model"], r["protocol"]): r for r in rows}
    for s, m in keys:
        vals = []
        for p in protocols:
            r = cell.get((s, m, p))
            vals.append("–" if r is None else f"{r['psnr_ctcnet']:.2f} dB" if m == "bicubic"
                        else f"{r['gain_db']:+.2f}")
        lines.append(f"| ×{s} | {m} | " + " | ".join(vals) + " |")
    return lines


def _label(img: np.ndarray, text: str) -> np.ndarray:
    bar = np.full((18, img.shape[1], 3), 255, np.uint8)
    width = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.4, 1)[0][0]
    scale = 0.4 * min(1.0, (img.shape[1] - 6) / max(width, 1))  # shrink long names to fit the column
    cv2.putText(bar, text, (3, 13), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([bar, img], axis=0)


def make_grid(columns: dict[str, np.ndarray], n: int) -> np.ndarray:
    """Columns of faces (name → (N,H,W,3) RGB) → one labelled RGB grid image with ``n`` rows."""
    cols = []
    for name, faces in columns.items():
        col = np.concatenate(list(faces[:n]), axis=0)
        cols.append(_label(col, name))
    return np.concatenate([np.pad(c, ((0, 0), (0, 2), (0, 0)), constant_values=255) for c in cols], axis=1)


class ArtifactModel:
    """An exported artifact folder (pkdn-export output: ONNX, OpenVINO, ...) run through its runtime
    engine, called like a student: ``(B,3,h,w)`` float tensor → ``(B,3,sh,sw)`` float tensor.
    Lets ``pkdn-train eval`` score exactly what a device runs (e.g. an INT8 export)."""

    def __init__(self, path: str | Path, threads: int = 2, ov_hint: str = "f32") -> None:
        from types import SimpleNamespace

        from pkdn_edge.engines import load_engine

        self.engine = load_engine(path, threads=threads)
        if ov_hint == "bf16" and self.engine.backend == "openvino" and self.engine.precision != "int8":
            # OpenVINO opens with INFERENCE_PRECISION_HINT f32 (parity with PyTorch); bf16 only on request
            self.engine = load_engine(path, threads=threads, precision="bf16")
        self.cfg = SimpleNamespace(scale=self.engine.scale, role="student")

    def __call__(self, lr: torch.Tensor, prior: torch.Tensor | None = None) -> torch.Tensor:
        # RGB in [0, 1] both ways, through the manifest's normalization exactly as the webcam loop
        # applies it (Engine.run_unit): eval scores what the loop shows
        (h, w), (wh, ww) = lr.shape[2:], self.engine.lr_size
        if (h, w) == (wh, ww):
            return torch.from_numpy(np.ascontiguousarray(self.engine.run_unit(lr.float().numpy())))
        if wh < h or ww < w or (wh - h) // 2 >= h or (ww - w) // 2 >= w:
            raise PKDNError(f"{self.engine.name} takes {wh}x{ww} inputs; cannot score {h}x{w} faces with it")
        # an artifact served on a window larger than the face (pkdn-export --window): the face mirrored
        # out to the window, as the export's calibration and verification do; scored on the face's part
        t, left, s = (wh - h) // 2, (ww - w) // 2, self.engine.scale
        x = torch.nn.functional.pad(lr.float(), (left, ww - w - left, t, wh - h - t), mode="reflect")
        out = torch.from_numpy(np.ascontiguousarray(self.engine.run_unit(x.numpy())))
        return out[:, :, t * s : (t + h) * s, left * s : (left + w) * s]


def validation_faces(config: str, overrides: list[str] | None = None) -> np.ndarray:
    """The held-out validation faces (N,H,W,3) of a training config: its data, seed, ``num_val``
    and ``min_sharpness``, exactly as :class:`~pkdn_edge.train.loop.Trainer` splits them."""
    from .config import load_config
    from .loop import train_val_split

    cfg = load_config(config, overrides)
    data = FaceData.load(cfg.data, cfg.layout, cfg.hr_size, cfg.cache_dir, limit=cfg.data_limit or None)
    return data.hr[train_val_split(data, cfg)[1]]


def eval_protocols(protocols: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """The protocols to run, as named, one per protocol (``paper`` and its alias ``bicubic`` together run
    once, under the first name given); an unknown name is a :class:`PKDNError`."""
    unknown = [p for p in protocols if PROTOCOL_ALIASES.get(p, p) not in PROTOCOLS]
    if unknown or not protocols:
        raise PKDNError(f"unknown protocol(s) {unknown}; choose from {list(PROTOCOLS)} (bicubic = paper)")
    first: dict[str, str] = {}
    for p in protocols:
        first.setdefault(PROTOCOL_ALIASES.get(p, p), p)
    return tuple(first.values())


def load_faces(faces: str, val_of: str | None, overrides: list[str] | None) -> tuple[np.ndarray, str]:
    """(HR faces (N,H,W,3), their description): the ``faces`` folder, or the held-out validation split of
    the training config ``val_of`` (with ``overrides``)."""
    if not val_of:
        return FaceData.load(faces, recursive=False).hr, faces  # eval/parsing/ holds label maps, not faces
    extra = f" {' '.join(overrides)}" if overrides else ""
    return validation_faces(val_of, overrides), f"validation split of {val_of}{extra}"


def load_models(weights: list[str], scale: int | None, threads: int, ov_hint: str) -> list[tuple[str, object]]:
    """``(path, model)`` per checkpoint or exported artifact folder; each must have ``scale`` when given."""
    models = []
    for w in weights:
        model = ArtifactModel(w, threads, ov_hint) if Path(w).is_dir() else load_model(w)[0]
        if scale is not None and model.cfg.scale != scale:
            raise PKDNError(f"{w} is a ×{model.cfg.scale} model, not ×{scale}")
        models.append((w, model))
    return models


def model_name(w: str, model) -> str:
    """A row's model name: ``role (run folder or file stem)``, or ``role (folder: engine)`` for an artifact."""
    tag = Path(w).parent.name if Path(w).stem in ("best", "last") else Path(w).stem
    if isinstance(model, ArtifactModel):
        tag = f"{Path(w).name}: {model.engine.name}"
    return f"{model.cfg.role} ({tag})"


class TeacherPriors:
    """The landmark priors of the HR faces, computed once, on the first teacher that needs them."""

    def __init__(self, hr: np.ndarray) -> None:
        self.hr, self.priors = hr, None

    def __call__(self) -> np.ndarray:
        if self.priors is None:
            from .priors import compute_priors

            self.priors = compute_priors(np.ascontiguousarray(self.hr[..., ::-1]), cache_dir=None)
        return self.priors


def score_protocol(
    hr: np.ndarray, scale: int, protocol: str, models: list[tuple[str, object]], teacher_priors: TeacherPriors,
    tta: str = "none", bf16: bool = False,
) -> tuple[list[dict], dict[str, np.ndarray]]:
    """One protocol at one scale: (rows: the bicubic baseline, then each model and its ``tta`` variant;
    grid columns: LR, bicubic, each model)."""
    lr = protocol_lr(hr, scale, protocol)
    bic = np.stack([bicubic_up(x, scale) for x in lr])
    base = mean_metrics(bic, hr)
    rows = [{"scale": scale, "protocol": protocol, "model": "bicubic", "weights": "", **base, "gain_db": 0.0}]
    grid = {f"LR x{scale}": np.stack([cv2.resize(x, hr.shape[1:3][::-1], interpolation=cv2.INTER_NEAREST) for x in lr]),
            "bicubic": bic}
    for w, model in models:
        priors = teacher_priors() if model.cfg.role == "teacher" else None
        name = model_name(w, model)
        flip = tta != "none" and model.cfg.role == "student"
        variants = [("none", name)] + ([(tta, f"{name} +{tta}")] if flip else [])
        for t, label in variants:
            sr = super_resolve(model, hr, scale, priors, tta=t, lr_faces=lr, bf16=bf16)
            m = mean_metrics(sr, hr)
            rows.append({"scale": scale, "protocol": protocol, "model": label, "weights": w, **m,
                         "gain_db": m["psnr_ctcnet"] - base["psnr_ctcnet"]})
            if t == "none":
                grid[name] = sr
    return rows, grid


def write_grid(out_dir: Path, scale: int, protocol: str, grid: dict[str, np.ndarray], hr: np.ndarray, n: int) -> None:
    """``grid_x{s}.png`` (paper protocol) or ``grid_x{s}_{protocol}.png``: the grid columns, then HR."""
    suffix = "" if PROTOCOL_ALIASES.get(protocol, protocol) == "paper" else f"_{protocol}"
    grid_path = out_dir / f"grid_x{scale}{suffix}.png"
    if not cv2.imwrite(str(grid_path), make_grid({**grid, "HR": hr}, n)[..., ::-1]):
        raise PKDNError(f"could not write {grid_path}")


def report_lines(faces: str, num_faces: int, protocols: tuple[str, ...], prec: dict, rows: list[dict]) -> list[str]:
    """eval.md: what was evaluated, one table row per result, and the model × protocol table (> 2 protocols)."""
    canonical = {PROTOCOL_ALIASES.get(p, p) for p in protocols}
    paper = ("`bicubic` = LR by PIL bicubic ↓s (paper)" if "bicubic" in protocols
             else "`paper` = the paper protocol, LR by PIL bicubic ↓s")
    lines = [
        f"Evaluated on {num_faces} faces from `{faces}` (Y channel). Protocols: {paper}; "
        f"`camera` = the frozen camera protocol v{CAMERA_PROTOCOL_VERSION} (train/camera.py)"
        + (f"; the others the frozen per-family protocols v{FAMILY_PROTOCOL_VERSION} (docs/camera.md)"
           if canonical - {"paper", "camera"} else "")
        + ". Gains are over PIL bicubic ↑s of the same LR. "
        f"Precision: torch {prec['torch']}, OpenVINO {prec['openvino']}.",
        "",
        "| scale | protocol | model | PSNR (CTCNet) | SSIM (CTCNet) | PSNR (DIC, crop 8) | SSIM (DIC) "
        "| gain vs bicubic |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| ×{r['scale']} | {r['protocol']} | {r['model']} | {r['psnr_ctcnet']:.2f} | {r['ssim_ctcnet']:.4f} | "
            f"{r['psnr_dic']:.2f} | {r['ssim_dic']:.4f} | {r['gain_db']:+.2f} dB |"
        )
    if len(protocols) > 2:
        lines += ["", "Gain over bicubic of the same LR (PSNR CTCNet, dB), per protocol:", ""]
        lines += matrix_table(rows, protocols)
    return lines


def write_reports(
    out_dir: Path, faces: str, num_faces: int, protocols: tuple[str, ...], prec: dict, rows: list[dict]
) -> dict:
    """Write ``eval.json`` and ``eval.md`` (and print the table); returns the report."""
    report = {"faces": str(faces), "num_faces": num_faces, "protocols": list(protocols), "precision": prec,
              "camera_protocol_version": CAMERA_PROTOCOL_VERSION, "family_protocol_version": FAMILY_PROTOCOL_VERSION,
              "metrics": {"ctcnet": "Y, no crop", "dic": "Y, 8-px crop"}, "rows": rows}
    (out_dir / "eval.json").write_text(json.dumps(report, indent=2))
    lines = report_lines(faces, num_faces, protocols, prec, rows)
    (out_dir / "eval.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"wrote {out_dir / 'eval.md'}, {out_dir / 'eval.json'} and grid images in {out_dir}")
    return report


def run_eval(
    weights: list[str], faces: str, out: str, scale: int | None = None, grid_faces: int = 6, threads: int = 2,
    val_of: str | None = None, overrides: list[str] | None = None, tta: str = "none",
    protocols: tuple[str, ...] = DEFAULT_PROTOCOLS, precision: str = "fp32",
) -> dict:
    """Evaluate checkpoints; write ``eval.json``, ``eval.md`` and ``grid_x{s}[_{protocol}].png`` under ``out``.

    ``protocols``: the LR protocols to run (``paper``, ``camera`` by default; or any of
    :data:`~pkdn_edge.train.camera.PROTOCOLS`, or the alias ``bicubic`` of ``paper``), each with
    its own bicubic row. ``val_of`` (a training config, with ``overrides``) evaluates on that
    config's held-out validation faces instead of the ``faces`` folder: the set to compare and
    select models on. ``tta="flip"`` adds a row per model with mirror self-ensembling.
    ``precision``: ``fp32`` (default), or ``bf16``/``auto``: bf16 where it is native (:func:`eval_precision`).
    """
    protocols = eval_protocols(protocols)
    torch.set_num_threads(threads)
    prec = eval_precision(precision)
    print(f"precision: torch {prec['torch']}, openvino {prec['openvino']} ({prec['why']})", flush=True)
    hr, faces = load_faces(faces, val_of, overrides)
    models = load_models(weights, scale, threads, prec["openvino"])
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    teacher_priors = TeacherPriors(hr)
    rows: list[dict] = []
    for s in sorted({m.cfg.scale for _, m in models}):
        for protocol in protocols:
            block, grid = score_protocol(hr, s, protocol, [(w, m) for w, m in models if m.cfg.scale == s],
                                         teacher_priors, tta, bf16=prec["torch"] == "bf16")
            rows += block
            write_grid(out_dir, s, protocol, grid, hr, grid_faces)
    return write_reports(out_dir, faces, len(hr), protocols, prec, rows)
