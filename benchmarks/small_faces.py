"""Synthetic camera frames with small real faces and ground truth, for the webcam benchmarks.

Faces come from the talking-head clips in ``../shared/video``: the largest face of each clip frame is
found at full resolution (where it is large and easy), a square region of 7 eye distances around it
is cut out, and :func:`render` pastes such regions, shrunk so the eyes are ``iod`` px apart, with a
feathered head-shaped mask, into a procedural background of the camera size (no other face in it).
The ground truth landmarks are the full-resolution detections mapped through the same shrink.

Nothing here is copied into the repository: the clips are read at run time. Without ``../shared``
:func:`load_face_bank` falls back to the package's public-domain demo face.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

SHARED_VIDEO = Path(__file__).resolve().parents[1].parent / "shared" / "video"


@dataclass
class FaceCrop:
    image: np.ndarray      # BGR region around the face
    landmarks: np.ndarray  # (5, 2) in the region's px
    clip: str

    @property
    def iod(self) -> float:
        return float(np.hypot(*(self.landmarks[1] - self.landmarks[0])))


def _crop_face(frame: np.ndarray, lm: np.ndarray, clip: str) -> FaceCrop | None:
    iod = float(np.hypot(*(lm[1] - lm[0])))
    c = lm.mean(0)
    half = 3.5 * iod
    x0, y0 = int(round(c[0] - half)), int(round(c[1] - half))
    side = int(round(2 * half))
    pad = cv2.copyMakeBorder(frame, side, side, side, side, cv2.BORDER_REFLECT_101)
    img = pad[y0 + side:y0 + 2 * side, x0 + side:x0 + 2 * side].copy()
    if img.shape[:2] != (side, side):
        return None
    return FaceCrop(img, (lm - (x0, y0)).astype(np.float32), clip)


def load_face_bank(clips: int = 8, frames_per_clip: int = 60, step: int = 2, video_dir: Path = SHARED_VIDEO,
                   detector=None) -> list[list[FaceCrop]]:
    """One list of face crops (consecutive frames, every ``step``-th) per clip."""
    from pkdn_edge.face.detector import load_detector

    det = detector or load_detector(threads=2, max_side=0)
    bank: list[list[FaceCrop]] = []
    files = sorted(video_dir.glob("*.mp4"))[:clips] if video_dir.is_dir() else []
    for f in files:
        cap = cv2.VideoCapture(str(f))
        seq: list[FaceCrop] = []
        i = 0
        while len(seq) < frames_per_clip:
            ok, img = cap.read()
            if not ok:
                break
            i += 1
            if (i - 1) % step:
                continue
            k = 640 / max(img.shape[:2]) if max(img.shape[:2]) > 640 else 1.0  # detection on <= 640 px (large faces)
            small = cv2.resize(img, None, fx=k, fy=k, interpolation=cv2.INTER_AREA) if k < 1 else img
            faces = det.detect(small)
            if not faces:
                continue
            best = max(faces, key=lambda x: x.interocular)
            lm = (best.landmarks + 0.5) / k - 0.5
            crop = _crop_face(img, lm, f.name)
            if crop is not None and crop.iod >= 30:
                seq.append(crop)
        cap.release()
        if seq:
            bank.append(seq)
    if not bank:  # no ../shared: the public-domain demo face
        from pkdn_edge.sources import load_demo_face

        demo = load_demo_face()
        bank.append([c for c in [_crop_face(demo.image, demo.landmarks, "demo")] if c is not None])
    return bank


def background(size: tuple[int, int], seed: int = 0) -> np.ndarray:
    """A soft procedural room of ``size`` (w, h): colour blobs, shelves, a little texture; no faces."""
    w, h = size
    rng = np.random.default_rng(seed)
    low = rng.uniform(70, 190, (6, 8, 1)) + rng.uniform(-25, 25, (6, 8, 3))
    bg = cv2.resize(low.astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    mid = rng.normal(0, 10, (max(2, h // 16), max(2, w // 16), 1)).astype(np.float32)
    bg += cv2.resize(mid, (w, h), interpolation=cv2.INTER_CUBIC)[..., None]
    for _ in range(30):
        x, y = int(rng.uniform(0, w)), int(rng.uniform(0, h))
        cw, ch = int(rng.uniform(0.02, 0.12) * w), int(rng.uniform(0.02, 0.1) * h)
        col = tuple(float(v) for v in rng.uniform(40, 200) + rng.uniform(-30, 30, 3))
        cv2.rectangle(bg, (x, y), (x + cw, y + ch), col, -1)
    return np.clip(cv2.GaussianBlur(bg, (0, 0), 2.0), 0, 255).astype(np.uint8)


def paste(frame: np.ndarray, crop: FaceCrop, iod: float, center: tuple[float, float]) -> np.ndarray:
    """Paste ``crop`` shrunk to eyes ``iod`` px apart with its eye-mouth centre at ``center``; returns
    the (5, 2) landmarks in frame px. Area averaging, like a lower-resolution sensor."""
    s = iod / crop.iod
    side = crop.image.shape[0]
    n = max(4, int(round(side * s)))
    s = n / side
    small = cv2.resize(crop.image, (n, n), interpolation=cv2.INTER_AREA)
    lm = (crop.landmarks + 0.5) * s - 0.5
    c = lm.mean(0)
    mask = np.zeros((n, n), np.float32)
    center = (int(round(c[0])), int(round(c[1] - 0.2 * iod)))
    cv2.ellipse(mask, center, (max(1, int(1.9 * iod)), max(1, int(2.6 * iod))),
                0, 0, 360, 1.0, -1)
    k = max(3, int(0.5 * iod) | 1)
    mask = cv2.GaussianBlur(mask, (k, k), 0)[..., None]
    x0, y0 = int(round(center[0] - c[0])), int(round(center[1] - c[1]))
    H, W = frame.shape[:2]
    fx0, fy0, fx1, fy1 = max(0, x0), max(0, y0), min(W, x0 + n), min(H, y0 + n)
    if fx1 > fx0 and fy1 > fy0:
        sub = frame[fy0:fy1, fx0:fx1].astype(np.float32)
        m = mask[fy0 - y0:fy1 - y0, fx0 - x0:fx1 - x0]
        src = small[fy0 - y0:fy1 - y0, fx0 - x0:fx1 - x0].astype(np.float32)
        frame[fy0:fy1, fx0:fx1] = np.clip(m * src + (1 - m) * sub, 0, 255).astype(np.uint8)
    return (lm + (x0, y0)).astype(np.float32)


def positions(size: tuple[int, int], n: int, rng: np.random.Generator) -> list[tuple[float, float]]:
    """``n`` face centres spread over the frame (one per column band, random height, off the borders)."""
    w, h = size
    return [((k + rng.uniform(0.3, 0.7)) * w / n, rng.uniform(0.25, 0.75) * h) for k in range(n)]


def render_clip(bank: list[list[FaceCrop]], size: tuple[int, int], faces: int, iod: float, frames: int,
                seed: int = 0) -> tuple[list[np.ndarray], list[list[np.ndarray]]]:
    """A moving clip: ``faces`` talking heads (each from its own clip, playing) drifting slowly over the
    background. Returns the frames and the true landmarks per frame."""
    rng = np.random.default_rng(seed)
    bg = background(size, seed)
    centres = positions(size, faces, rng)
    phase = rng.uniform(0, 2 * math.pi, (faces, 2))
    out, truth = [], []
    for t in range(frames):
        f = bg.copy()
        lms = []
        for k in range(faces):
            seq = bank[k % len(bank)]
            crop = seq[t % len(seq)]
            dx = 2.0 * iod * math.sin(2 * math.pi * t / 90 + phase[k, 0])
            dy = 1.0 * iod * math.sin(2 * math.pi * t / 70 + phase[k, 1])
            lms.append(paste(f, crop, iod, (centres[k][0] + dx, centres[k][1] + dy)))
        out.append(f)
        truth.append(lms)
    return out, truth
