"""Faces for INT8 calibration and export verification.

* **Calibration / selection**: aligned faces from ``../shared/faces/train`` (or ``--calib DIR``).
  The default split mirrors ``pkdn-train``: the 256 faces ``split_indices(n, 256, seed=0)`` holds
  out for validation are the *selection* set (never used for training or calibration); calibration
  faces are drawn from the rest. ``shared/faces/eval`` is refused for calibration.
* **Verification**: ``../shared/faces/eval`` when present (evaluation only), else generated faces.
* **Generated faces** (:func:`synthetic_faces`): drawn with OpenCV (skin ellipse, hair, eyes,
  brows, nose, mouth, lighting gradient, noise, JPEG-like blur), deterministic per seed; for CI
  and machines without ``shared/``. They exercise the full value range of real faces but are
  not a substitute for real calibration data.

HR faces are (N,128,128,3) uint8 RGB; LR inputs are PIL bicubic ↓s (the training protocol),
returned as (N,3,h,w) float32 in [0,1].
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from pkdn_edge.errors import PKDNError

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
TRAIN_NUM_VAL = 256  # pkdn-train's default num_val: the held-out selection faces
HR_SIZE = 128


def shared_root() -> Path | None:
    """``shared/`` for this checkout: $PKDN_SHARED when set (only it: set it to a missing path to
    simulate a machine without shared/), else ``<project>/../shared``, else ``./../shared``."""
    env = os.environ.get("PKDN_SHARED")
    if env is not None:
        cands = [Path(env)]
    else:
        cands = [Path(__file__).resolve().parent.parent.parent / "shared", Path.cwd().parent / "shared"]
    for c in cands:
        if (c / "faces").is_dir():
            return c
    return None


def shared_faces(kind: str) -> Path | None:
    """``shared/faces/<kind>`` (``train`` or ``eval``) or None when absent."""
    root = shared_root()
    p = root / "faces" / kind if root else None
    return p if p is not None and p.is_dir() else None


def _is_eval_dir(p: Path) -> bool:
    ev = shared_faces("eval")
    if ev is None:
        return p.name == "eval" and p.parent.name == "faces"
    p, ev = p.resolve(), ev.resolve()
    return p == ev or ev in p.parents


def list_faces(root: Path) -> list[Path]:
    """Image files directly under ``root`` and its sub-folders, sorted (``parsing/`` maps excluded)."""
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTS and p.is_file()
                  and "parsing" not in p.relative_to(root).parts[:-1])


def read_faces(files: list[Path], size: int = HR_SIZE) -> np.ndarray:
    """Read aligned face crops as (N,size,size,3) uint8 RGB (INTER_AREA/INTER_CUBIC resize).

    Calibration and verification faces must be square aligned crops (``pkdn-prepare`` output or
    ``shared/faces``): a non-square image (a photo, a frame) is refused with one :class:`PKDNError`
    line instead of being squeezed into a misaligned "face"; square faces of another size are
    resized, with one warning line; unreadable files are skipped, with one warning line."""
    import sys

    out, odd, unreadable, resized = [], [], [], 0
    for f in files:
        img = cv2.imread(str(f), cv2.IMREAD_COLOR)
        if img is None:
            unreadable.append(f.name)
            continue
        h, w = img.shape[:2]
        if h != w:
            odd.append(f"{f.name} ({w}x{h})")
            continue
        if h != size:
            resized += 1
            img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA if h > size else cv2.INTER_CUBIC)
        out.append(img[..., ::-1])
    folder = files[0].parent if files else Path(".")
    if odd:
        raise PKDNError(f"{len(odd)} of {len(files)} images in {folder} are not square aligned face crops (e.g. "
                        f"{', '.join(odd[:3])}): INT8 calibration and verification need aligned {size}x{size} faces; "
                        f"make them with `pkdn-prepare INPUT OUT_DIR`")
    if not out:
        raise PKDNError(f"none of {len(files)} images could be read")
    if unreadable:
        print(f"warning: skipped {len(unreadable)} unreadable image(s) in {folder} (e.g. {unreadable[0]})",
              file=sys.stderr)
    if resized:
        print(f"warning: {resized} of {len(out)} faces in {folder} are not {size}x{size}; they were resized",
              file=sys.stderr)
    return np.ascontiguousarray(np.stack(out))


def synthetic_faces(n: int, seed: int = 0, size: int = HR_SIZE) -> np.ndarray:
    """(n,size,size,3) uint8 RGB face-like images, aligned roughly like the shared template."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, size, size, 3), np.uint8)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    k = size / 128.0
    for i in range(n):
        bg = rng.uniform(20, 235, 3)
        grad = rng.uniform(-60, 60, 3)
        img = bg[None, None] + grad[None, None] * (xx[..., None] - 0.5) * 2
        r = rng.uniform(90, 245)
        skin = np.array([r, r * rng.uniform(0.68, 0.85), r * rng.uniform(0.52, 0.75)])
        hair = rng.uniform(10, 110) * np.array([1.0, rng.uniform(0.7, 0.95), rng.uniform(0.5, 0.9)])
        img = np.ascontiguousarray(np.clip(img, 0, 255).astype(np.float32))
        cx, cy = 64 * k + rng.normal(0, 2), 72 * k + rng.normal(0, 2)
        cv2.ellipse(img, (int(cx), int(cy - 18 * k)), (int(48 * k), int(44 * k)), 0, 180, 360, hair.tolist(), -1)
        cv2.ellipse(img, (int(cx), int(cy)), (int(rng.uniform(36, 44) * k), int(rng.uniform(48, 56) * k)), 0, 0, 360,
                    skin.tolist(), -1)
        for ex in (42.5, 85.5):
            e = (int((ex + rng.normal(0, 1)) * k), int(49.5 * k))
            cv2.ellipse(img, e, (int(7 * k), int(3.5 * k)), 0, 0, 360, (240, 240, 240), -1)
            cv2.circle(img, e, int(3 * k), (rng.uniform(20, 90),) * 3, -1)
            cv2.line(img, (e[0] - int(9 * k), e[1] - int(9 * k)), (e[0] + int(9 * k), e[1] - int(10 * k)),
                     (hair * 0.8).tolist(), max(1, int(2 * k)))
        cv2.line(img, (int(64 * k), int(55 * k)), (int(62 * k), int(75 * k)), (skin * 0.75).tolist(),
                 max(1, int(2 * k)))
        lips = (skin * np.array([0.9, 0.5, 0.5])).tolist()
        cv2.ellipse(img, (int(64 * k), int(92 * k)), (int(18 * k), int(5 * k)), 0, 0, 360, lips, -1)
        light = 1.0 + rng.uniform(-0.25, 0.25) * (xx - 0.5) * 2 + rng.uniform(-0.15, 0.15) * (yy - 0.5) * 2
        img = img * light[..., None]
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.6, 1.4))
        img += rng.normal(0, rng.uniform(1, 5), img.shape).astype(np.float32)
        tex = cv2.resize(rng.normal(0, 6, (size // 8, size // 8, 1)).astype(np.float32), (size, size),
                         interpolation=cv2.INTER_CUBIC)
        img += tex[..., None] if tex.ndim == 2 else tex
        out[i] = np.clip(img + 0.5, 0, 255).astype(np.uint8)
    return out


def to_lr(hr: np.ndarray, scale: int) -> np.ndarray:
    """(N,H,W,3) uint8 RGB → (N,3,H/s,W/s) float32 in [0,1], PIL antialiased bicubic ↓s."""
    n, h, w = hr.shape[:3]
    lr = np.stack([np.asarray(Image.fromarray(f).resize((w // scale, h // scale), Image.BICUBIC)) for f in hr])
    return np.ascontiguousarray(lr.transpose(0, 3, 1, 2).astype(np.float32) / 255.0)


@dataclass
class FaceSets:
    """Calibration and selection faces (HR uint8 RGB) and where they came from."""

    calib: np.ndarray
    select: np.ndarray
    source: str


def calibration_faces(calib_dir: str | Path | None, calib_size: int, select_size: int = 64,
                      synthetic: bool = False, seed: int = 0) -> FaceSets:
    """Faces for INT8 calibration (``calib_size``) and held-out faces for choosing settings.

    ``calib_dir`` None → ``shared/faces/train`` with pkdn-train's validation split as the selection
    set; a user folder → a seeded shuffle, the first ``select_size`` for selection (when the
    folder has enough faces), the next ``calib_size`` for calibration. ``synthetic`` → generated
    faces (CI). ``shared/faces/eval`` is refused: it is for evaluation only.
    """
    if synthetic:
        return FaceSets(synthetic_faces(calib_size, seed=seed + 1), synthetic_faces(select_size, seed=seed + 2),
                        f"generated ({calib_size} synthetic faces)")
    root = Path(calib_dir) if calib_dir else shared_faces("train")
    if root is None:
        raise PKDNError("no calibration faces: ../shared/faces/train is absent; pass --calib DIR (aligned 128x128 "
                        "faces) or --calib-synthetic for generated faces (CI only: lower INT8 accuracy)")
    if not root.is_dir():
        raise PKDNError(f"calibration folder {root} does not exist")
    if _is_eval_dir(root):
        raise PKDNError(f"{root} is the evaluation set: never calibrate on it; use shared/faces/train or your own "
                        f"faces")
    files = list_faces(root)
    if len(files) < 8:
        raise PKDNError(f"calibration folder {root} has {len(files)} images; INT8 calibration needs at least 8 "
                        f"(300 recommended)")
    if calib_dir is None and len(files) > TRAIN_NUM_VAL + calib_size:
        perm = np.random.default_rng(0).permutation(len(files))  # same as pkdn-train's split_indices(n, 256, 0)
        val, train = np.sort(perm[:TRAIN_NUM_VAL]), np.sort(perm[TRAIN_NUM_VAL:])
        pick = np.random.default_rng(seed + 1).choice(train, size=calib_size, replace=False)
        sel = val[:select_size] if select_size <= len(val) else val
        return FaceSets(read_faces([files[i] for i in np.sort(pick)]), read_faces([files[i] for i in sel]),
                        f"{root} ({calib_size} of the training split; selection: pkdn-train's held-out split)")
    perm = np.random.default_rng(seed).permutation(len(files))
    n_sel = select_size if len(files) >= select_size + 8 else 0
    sel, rest = perm[:n_sel], perm[n_sel:]
    pick = rest[:calib_size]
    select = read_faces([files[i] for i in sel]) if n_sel else synthetic_faces(select_size, seed=seed + 2)
    return FaceSets(read_faces([files[i] for i in np.sort(pick)]), select,
                    f"{root} ({len(pick)} faces{'' if n_sel else '; selection on generated faces'})")


def verification_faces(n: int | None = None, synthetic: bool = False,
                       folder: str | Path | None = None) -> tuple[np.ndarray, str]:
    """Faces for the parity check: ``folder`` or ``shared/faces/eval`` (evaluation only) or generated."""
    root = Path(folder) if folder else (None if synthetic else shared_faces("eval"))
    if root is not None:
        files = list_faces(root)
        if files:
            files = files[:n] if n else files
            return read_faces(files), f"{root} ({len(files)} faces)"
    k = n or 32
    return synthetic_faces(k, seed=1234), f"generated ({k} synthetic faces)"
