"""Aligned face datasets and seeded batch sampling for PKDN training.

Layouts (``FaceData.load(root, layout=...)``):

* ``aligned`` (default): any folder tree of square aligned face crops, e.g. ``../shared/faces/train``,
  ``pkdn-prepare`` output, FFHQ or CelebA-HQ image folders; resized (INTER_AREA) to ``hr_size``
  (with one warning line). Non-square images are refused (:func:`check_aligned_sizes`): they are
  photos or frames, not aligned faces, and would train or evaluate on misaligned crops.
* ``celeba``: CelebA ``img_align_celeba`` (178×218): the 178×178 crop starting at row 20 (the
  literature's 128×128 protocol), resized to ``hr_size``.
* ``celebamask``: CelebAMask-HQ (``CelebA-HQ-img/`` + ``CelebAMask-HQ-mask-anno/``): images plus
  19-class labels merged from the per-part masks, so the teacher's priors come from the labels.

Images are decoded once and cached as one ``.npy`` (uint8 RGB, N×H×W×3) under ``cache_dir``.
"""

from __future__ import annotations

import csv
import hashlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from pkdn_edge.errors import PKDNError

from .camera import CameraDegradation
from .degradations import DEGRADATIONS, BlurNoiseJPEGDegradation, bicubic_down, degradation_name

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
LAYOUTS = ("aligned", "celeba", "celebamask")
CELEBAMASK_PARTS = (
    "skin", "nose", "eye_g", "l_eye", "r_eye", "l_brow", "r_brow", "l_ear", "r_ear",
    "mouth", "u_lip", "l_lip", "hair", "hat", "ear_r", "neck_l", "neck", "cloth",
)  # label = index + 1; 0 is background
# channels swapped by a horizontal flip (image-left ↔ image-right regions of the K=11 prior)
FLIP_PAIRS = ((2, 3), (4, 5))


def list_images(root: Path, recursive: bool = True) -> list[Path]:
    """Image files under ``root`` (sorted); ``recursive=False`` ignores sub-folders (e.g. ``parsing/``)."""
    it = root.rglob("*") if recursive else root.glob("*")
    return sorted(p for p in it if p.suffix.lower() in IMAGE_EXTS and p.is_file())


def _to_square(img: np.ndarray, size: int, layout: str) -> np.ndarray:
    h, w = img.shape[:2]
    if layout == "celeba" and (h, w) == (218, 178):
        img = img[20:198]
    else:
        s = min(h, w)
        y0, x0 = (h - s) // 2, (w - s) // 2
        img = img[y0 : y0 + s, x0 : x0 + s]
    if img.shape[0] != size:
        interp = cv2.INTER_AREA if img.shape[0] > size else cv2.INTER_CUBIC
        img = cv2.resize(img, (size, size), interpolation=interp)
    return img


def _read_rgb(path: Path) -> np.ndarray | None:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    return None if img is None else img[..., ::-1]


def _celebamask_label(anno_root: Path, idx: int, size: int) -> np.ndarray:
    """Merge CelebAMask-HQ part masks ``<folder>/<idx:05d>_<part>.png`` into one (size,size) map."""
    label = np.zeros((512, 512), np.uint8)
    folder = anno_root / str(idx // 2000)
    for cls, part in enumerate(CELEBAMASK_PARTS, start=1):
        f = folder / f"{idx:05d}_{part}.png"
        if f.exists():
            m = cv2.imread(str(f), cv2.IMREAD_GRAYSCALE)
            if m is not None:
                label[m > 127] = cls
    return cv2.resize(label, (size, size), interpolation=cv2.INTER_NEAREST)


def check_aligned_sizes(files: list[Path], root: Path, hr_size: int = 128) -> None:
    """Aligned face crops are square: refuse a folder with non-square images (photos, frames, CelebA's
    178×218 without ``layout: celeba``) instead of centre-cropping them into misaligned faces, and
    say it once when square images will be resized to ``hr_size``. Sizes come from the file
    headers (no decoding)."""
    from pkdn_edge.imageio import image_size_from_header

    odd, resized = [], {}
    for f in files:
        try:
            with open(f, "rb") as fh:
                size = image_size_from_header(fh.read(1 << 16))
        except OSError:
            continue  # unreadable: reported when decoding
        if size is None:
            continue
        w, h = size
        if w != h:
            odd.append(f"{f.relative_to(root).as_posix()} ({w}x{h})")
        elif w != hr_size:
            resized[w] = resized.get(w, 0) + 1
    if odd:
        raise PKDNError(f"{len(odd)} of {len(files)} images under {root} are not square aligned face crops "
                        f"(e.g. {', '.join(odd[:3])}): align them first with `pkdn-prepare INPUT OUT_DIR`"
                        f" (or use layout: celeba for CelebA's 178x218 crops)")
    if resized:
        what = ", ".join(f"{n} at {s}x{s}" for s, n in sorted(resized.items()))
        print(f"warning: {sum(resized.values())} of {len(files)} faces under {root} are not {hr_size}x{hr_size} "
              f"({what}); they are resized to {hr_size}x{hr_size}", file=sys.stderr)


@dataclass
class FaceData:
    """HR faces (N,H,W,3) uint8 RGB, their file names, and optional 19-class labels (N,H,W)."""

    hr: np.ndarray
    names: list[str]
    labels: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.names)

    def subset(self, idx: np.ndarray) -> "FaceData":
        return FaceData(self.hr[idx], [self.names[i] for i in idx], None if self.labels is None else self.labels[idx])

    @classmethod
    def load(
        cls, root: str | Path, layout: str = "aligned", hr_size: int = 128, cache_dir: str | Path | None = None,
        limit: int | None = None, recursive: bool = True,
    ) -> "FaceData":
        root = Path(root)
        if layout not in LAYOUTS:
            raise PKDNError(f"unknown data layout {layout!r}; choose from {LAYOUTS}")
        img_root = root / "CelebA-HQ-img" if layout == "celebamask" else root
        if not img_root.is_dir():
            raise PKDNError(f"face folder not found: {img_root}")
        files = list_images(img_root, recursive)
        if limit:
            files = files[:limit]
        if not files:
            raise PKDNError(f"no images ({', '.join(sorted(IMAGE_EXTS))}) under {img_root}")
        key = hashlib.sha1(
            f"{img_root.resolve()}|{layout}|{hr_size}|{recursive}|{len(files)}|{files[0].name}|{files[-1].name}".encode()
        ).hexdigest()[:16]
        cache = Path(cache_dir) / f"faces_{key}.npz" if cache_dir else None
        if cache is not None and cache.exists():
            try:
                with np.load(cache) as z:
                    labels = z["labels"] if "labels" in z.files else None
                    return cls(z["hr"], list(z["names"]), labels)
            except (OSError, ValueError, KeyError):
                pass  # corrupt cache: rebuild it
        hr, names, labels = [], [], []
        skipped = 0
        if layout == "aligned":
            check_aligned_sizes(files, img_root, hr_size)
        for f in files:
            img = _read_rgb(f)
            if img is None:
                skipped += 1
                continue
            hr.append(_to_square(img, hr_size, layout))
            names.append(f.relative_to(img_root).as_posix())
            if layout == "celebamask":
                labels.append(_celebamask_label(root / "CelebAMask-HQ-mask-anno", int(f.stem), hr_size))
        if not hr:
            raise PKDNError(f"none of the {len(files)} images under {img_root} could be read")
        if skipped:
            print(f"warning: skipped {skipped} unreadable images under {img_root}", file=sys.stderr)
        data = cls(np.stack(hr), names, np.stack(labels) if labels else None)
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_name(f"{cache.stem}.{os.getpid()}.tmp.npz")  # concurrent runs: one temp file each
            arrays = {"hr": data.hr, "names": np.array(names)}
            if data.labels is not None:
                arrays["labels"] = data.labels
            np.savez(tmp, **arrays)
            os.replace(tmp, cache)
        return data


def face_sharpness(hr: np.ndarray) -> np.ndarray:
    """High-frequency content of aligned 128-px faces (N,H,W,3) uint8 → (N,) dB.

    ``10·log10`` of the mean squared difference between the grey face and its ×2 down (area) / up
    (bicubic) copy over the face box (rows 32–112, cols 24–104 of a 128 crop, scaled to ``H``).
    Strongly downsampled sources (CelebA-HQ, FFHQ) score ~14–18 dB; soft web photos and
    upsampled crops score 5–10 dB.
    """
    n, h, w = hr.shape[:3]
    r0, r1, c0, c1 = (round(v * h / 128) for v in (32, 112, 24, 104))
    out = np.empty(n, np.float64)
    for i in range(n):
        g = cv2.cvtColor(hr[i], cv2.COLOR_RGB2GRAY).astype(np.float32)
        half = cv2.resize(g, (w // 2, h // 2), interpolation=cv2.INTER_AREA)
        lo = cv2.resize(half, (w, h), interpolation=cv2.INTER_CUBIC)
        mse = float(np.mean((g[r0:r1, c0:c1] - lo[r0:r1, c0:c1]) ** 2))
        out[i] = 10 * np.log10(max(mse, 1e-10))
    return out


def split_indices(n: int, num_val: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded train/validation split of ``range(n)``: (train_idx, val_idx), both sorted."""
    if not 0 <= num_val < n:
        raise PKDNError(f"num_val={num_val} must be in [0, {n})")
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[num_val:]), np.sort(perm[:num_val])


class BatchSampler:
    """Seeded random batches of (LR, HR[, prior]) tensors; batch ``step`` is a pure function of
    ``(seed, step)``, so resuming a run reproduces exactly the batches it would have seen.

    Args:
        hr: (N,H,W,3) uint8 RGB faces.
        scale: SR factor.
        degradation: one of :data:`~pkdn_edge.train.degradations.DEGRADATIONS` (or an alias):
            ``"bicubic"`` (paper protocol, LR precomputed), ``"camera"``
            (:class:`~pkdn_edge.train.camera.CameraDegradation`, settings in ``camera``) or
            ``"blur_noise_jpeg"`` (:class:`~pkdn_edge.train.degradations.BlurNoiseJPEGDegradation`,
            formerly ``"webcam"``).
        priors: optional (N,K,H,W) uint8 soft parsing maps (0..255) for the teacher.
        flip: random horizontal flips (prior channels of left/right regions are swapped too).
        augment: photometric jitter (brightness, contrast, saturation) on every face and, for half
            of them, a small similarity jitter (±4°, ±5 % scale, ±2 px; priors warped alike), with
            the LR made on the fly from the jittered HR.
    """

    def __init__(
        self, hr: np.ndarray, scale: int, degradation: str = "bicubic", priors: np.ndarray | None = None,
        flip: bool = True, augment: bool = True, seed: int = 0, camera: dict | None = None,
        clean_lr: bool = False,
    ) -> None:
        degradation = degradation_name(degradation)
        if degradation not in DEGRADATIONS:
            raise PKDNError(f"unknown degradation {degradation!r}; choose from {list(DEGRADATIONS)}")
        self.hr, self.scale, self.degradation = hr, scale, degradation
        self.priors, self.flip, self.augment, self.seed = priors, flip, augment, seed
        self.clean_lr = clean_lr and degradation != "bicubic"  # also the paper-protocol LR (batch["lr_clean"])
        precompute = degradation == "bicubic" and not augment
        self.lr = np.stack([bicubic_down(x, scale) for x in hr]) if precompute else None
        self.degrade = None
        if degradation == "blur_noise_jpeg":
            self.degrade = BlurNoiseJPEGDegradation()
        elif degradation == "camera":
            self.degrade = CameraDegradation.from_dict(camera)

    def __len__(self) -> int:
        return len(self.hr)

    def batch(self, step: int, batch_size: int) -> dict[str, torch.Tensor]:
        """→ ``{"lr": (B,3,h,w), "hr": (B,3,H,W)[, "prior": (B,K,H,W)][, "lr_clean": (B,3,h,w)]}``
        float32 in [0, 1]; ``lr_clean`` (with ``clean_lr``) is the PIL-bicubic LR of the same HR faces
        and draws nothing from the generator, so the degraded batches are the same with or without it."""
        rng = np.random.default_rng([self.seed, step])
        idx = rng.integers(0, len(self.hr), batch_size)
        flips = rng.random(batch_size) < 0.5 if self.flip else np.zeros(batch_size, bool)
        hr = self.hr[idx]
        pri = None if self.priors is None else self.priors[idx]
        if self.augment:
            hr, pri = _augment(hr, pri, rng)
        if self.lr is not None:
            lr = self.lr[idx]
        elif self.degradation == "bicubic":
            lr = np.stack([bicubic_down(x, self.scale) for x in hr])
        else:
            lr = np.stack([self.degrade(x, self.scale, rng) for x in hr])
        hr = np.where(flips[:, None, None, None], hr[:, :, ::-1], hr)
        lr = np.where(flips[:, None, None, None], lr[:, :, ::-1], lr)
        out = {"lr": to_tensor(lr), "hr": to_tensor(hr)}
        if self.clean_lr:  # hr is already flipped here
            out["lr_clean"] = to_tensor(np.stack([bicubic_down(np.ascontiguousarray(x), self.scale) for x in hr]))
        if pri is not None:
            p = pri.copy()
            for a, b in FLIP_PAIRS:
                p[flips, a], p[flips, b] = pri[flips, b], pri[flips, a]
            p = np.where(flips[:, None, None, None], p[..., ::-1], p)
            out["prior"] = torch.from_numpy(np.ascontiguousarray(p)).float().div_(255.0)
        return out


def _augment(
    hr: np.ndarray, priors: np.ndarray | None, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray | None]:
    """Photometric + (half the time) similarity jitter of HR faces (N,H,W,3) and their priors (N,K,H,W)."""
    n, h, w = hr.shape[:3]
    out = np.empty_like(hr)
    pout = None if priors is None else np.empty_like(priors)
    for i in range(n):
        x = hr[i]
        p = None if priors is None else priors[i]
        if rng.random() < 0.5:
            m = cv2.getRotationMatrix2D((w / 2 - 0.5, h / 2 - 0.5), rng.uniform(-4, 4), rng.uniform(0.95, 1.05))
            m[:, 2] += rng.uniform(-2, 2, 2)
            x = cv2.warpAffine(x, m, (w, h), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT_101)
            if p is not None:
                p = np.stack([cv2.warpAffine(c, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
                              for c in p])
        f = x.astype(np.float32)
        gray = f.mean(axis=2, keepdims=True)
        f = gray + (f - gray) * rng.uniform(0.85, 1.15)  # saturation
        f = (f - f.mean()) * rng.uniform(0.9, 1.1) + f.mean() * rng.uniform(0.9, 1.1)  # contrast, brightness
        out[i] = np.clip(f + 0.5, 0, 255).astype(np.uint8)
        if pout is not None:
            pout[i] = p
    return out, pout


def to_tensor(x: np.ndarray) -> torch.Tensor:
    """(N,H,W,3) uint8 → (N,3,H,W) float32 in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))).float().div_(255.0)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """(N,3,H,W) float in [0, 1] → (N,H,W,3) uint8 (clamped, rounded)."""
    return x.detach().clamp(0, 1).mul(255).round().byte().permute(0, 2, 3, 1).cpu().numpy()


def read_manifest_sources(root: Path) -> dict[str, str]:
    """``file → source`` from a ``MANIFEST.csv`` beside the images, when there is one."""
    m = root / "MANIFEST.csv"
    if not m.exists():
        return {}
    with m.open(newline="") as fh:
        return {row["file"]: row.get("source", "") for row in csv.DictReader(fh)}
