"""Facial parsing priors for the PKDN teacher (training only).

The teacher sees a K = 11 channel *soft parsing map* at HR size next to its LR input. It comes
either from dataset labels (:func:`celebamask_to_regions`) or from dlib's 68-point landmark model
turned into region polygons (:class:`LandmarkPrior`). :class:`PriorCache` and
:func:`compute_priors` cache the landmark priors on disk so a training set is processed once.

Regions (channel order, :data:`REGIONS`)::

    0 background   1 skin      2 l_brow    3 r_brow        4 l_eye      5 r_eye
    6 nose         7 upper_lip 8 inner_mouth 9 lower_lip  10 hair_or_other

**Sides are image sides**: ``l_`` = image-left (the subject's right), ``r_`` = image-right. A
horizontal flip therefore swaps channels 2↔3 and 4↔5 (``pkdn_edge.train.data.FLIP_PAIRS``).
CelebAMask-HQ names its parts from the subject's view: its ``l_eye`` (4) / ``l_brow`` (6) / ``l_ear``
(8) lie on the image-*right* (checked on the eval parsing maps: dataset ``l_eye`` pixels have a mean
x of ≈ 85 on 128-px aligned crops, ``r_eye`` ≈ 43), so they map to our ``r_`` channels.

Only numpy and OpenCV are used here; dlib (package ``dlib-bin``) and the model file of
``face_recognition_models`` are loaded lazily, on first use, and are part of the ``train`` extra.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import math
import multiprocessing as mp
import os
import re
import uuid
import zipfile
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator, Sequence

import cv2
import numpy as np

from pkdn_edge.errors import MissingDependencyError, PKDNError

log = logging.getLogger(__name__)

REGIONS: tuple[str, ...] = (
    "background", "skin", "l_brow", "r_brow", "l_eye", "r_eye",
    "nose", "upper_lip", "inner_mouth", "lower_lip", "hair_or_other",
)
K = 11
BACKGROUND, SKIN, L_BROW, R_BROW, L_EYE, R_EYE, NOSE, UPPER_LIP, INNER_MOUTH, LOWER_LIP, HAIR_OR_OTHER = range(K)
#: the regions that make up the face itself (mIoU in ``eval_priors`` is taken over these)
FACIAL_REGIONS: tuple[int, ...] = tuple(range(SKIN, HAIR_OR_OTHER))
#: bump when the rasterisation code changes (its constants are hashed into the cache key anyway)
PRIOR_VERSION = 1

# ---------------------------------------------------------------------------------------------
# CelebAMask-HQ labels → regions
# ---------------------------------------------------------------------------------------------

CELEBAMASK_CLASSES: tuple[str, ...] = (
    "background", "skin", "nose", "eye_g", "l_eye", "r_eye", "l_brow", "r_brow", "l_ear", "r_ear",
    "mouth", "u_lip", "l_lip", "hair", "hat", "ear_r", "neck_l", "neck", "cloth",
)
#: CelebAMask-HQ class index → region index. Decisions:
#: * eyeglasses (``eye_g``) → skin: the frames lie on skin, and the eyes seen through the lenses
#:   keep their own eye labels in the dataset; a landmark model cannot see glasses either.
#: * dataset ``l_*`` (subject's left = image-right) → our ``r_*`` channels and vice versa.
#: * ``mouth`` (the opening between the lips) → inner_mouth.
#: * ears, earrings, hair, hat, neck, necklace, clothes → hair_or_other: the person but not the
#:   face. Ears and neck are skin-coloured, but a landmark model does not outline them, and the
#:   face-SR prior mainly needs the face/not-face split plus the facial parts.
CELEBAMASK_TO_REGION = np.array(
    [
        BACKGROUND, SKIN, NOSE, SKIN, R_EYE, L_EYE, R_BROW, L_BROW, HAIR_OR_OTHER, HAIR_OR_OTHER,
        INNER_MOUTH, UPPER_LIP, LOWER_LIP, HAIR_OR_OTHER, HAIR_OR_OTHER, HAIR_OR_OTHER, HAIR_OR_OTHER,
        HAIR_OR_OTHER, HAIR_OR_OTHER,
    ],
    np.uint8,
)


def celebamask_to_labels(label_map: np.ndarray) -> np.ndarray:
    """CelebAMask-HQ class map (H,W) ints 0..18 → region index map (H,W) uint8 0..K-1."""
    label_map = np.asarray(label_map)
    if label_map.ndim != 2:
        raise ValueError(f"expected an (H, W) label map, got shape {label_map.shape}")
    if label_map.size and (label_map.min() < 0 or label_map.max() >= len(CELEBAMASK_CLASSES)):
        raise ValueError(f"CelebAMask-HQ labels must be in 0..{len(CELEBAMASK_CLASSES) - 1}")
    return CELEBAMASK_TO_REGION[label_map.astype(np.intp)]


def labels_to_onehot(labels: np.ndarray) -> np.ndarray:
    """Region index map (H,W) ints 0..K-1 → one-hot (K,H,W) float32 (exactly one 1 per pixel)."""
    return (np.asarray(labels)[None] == np.arange(K, dtype=np.uint8)[:, None, None]).astype(np.float32)


def celebamask_to_regions(label_map: np.ndarray) -> np.ndarray:
    """CelebAMask-HQ 19-class map (H,W) uint8 → one-hot region map (K,H,W) float32 in {0, 1}."""
    return labels_to_onehot(celebamask_to_labels(label_map))


# ---------------------------------------------------------------------------------------------
# Soft maps
# ---------------------------------------------------------------------------------------------


def default_sigma(size: int) -> float:
    """Gaussian blur σ (px) of the soft maps for an image of side ``size``: 1 px at 128."""
    return size / 128.0


def soften(labels: np.ndarray, sigma: float | None = None) -> np.ndarray:
    """Region index map (H,W) → soft parsing map (K,H,W) float32 in [0, 1], summing to 1 per pixel.

    Each one-hot channel is blurred with a Gaussian of ``sigma`` px (default :func:`default_sigma`),
    then the channels are renormalised per pixel.
    """
    onehot = labels_to_onehot(labels)
    sigma = default_sigma(min(labels.shape)) if sigma is None else sigma
    if sigma > 0:
        for c in range(K):
            if onehot[c].any():
                cv2.GaussianBlur(onehot[c], (0, 0), sigma, dst=onehot[c], borderType=cv2.BORDER_REPLICATE)
    np.clip(onehot, 0.0, None, out=onehot)
    onehot /= np.maximum(onehot.sum(0, keepdims=True), 1e-12)
    return onehot


def quantize(soft: np.ndarray) -> np.ndarray:
    """Soft map float in [0, 1] → uint8 0..255 (round to nearest)."""
    return np.clip(np.rint(soft * 255.0), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------------
# 68 landmarks → region polygons
# ---------------------------------------------------------------------------------------------

# iBUG 300-W 68-point indices, in image terms (point 0 and the 17–21 brow are on the image-left)
JAW = np.arange(0, 17)
BROW_L, BROW_R = np.arange(17, 22), np.arange(22, 27)
NOSE_BRIDGE, NOSE_BASE = np.arange(27, 31), np.arange(31, 36)
EYE_L, EYE_R = np.arange(36, 42), np.arange(42, 48)
LIP_OUTER_UPPER = np.arange(48, 55)          # 48 image-left corner … 54 image-right corner, over the top
LIP_OUTER_LOWER = np.array([54, 55, 56, 57, 58, 59, 48])
LIP_INNER_UPPER = np.arange(60, 65)          # 60 … 64 inner corners, over the top
LIP_INNER_LOWER = np.array([64, 65, 66, 67, 60])

# Geometry of the rules, as fractions of the inter-ocular distance (IOD, eye centre to eye centre)
# or of the face height (brow midpoint to chin). Chosen from facial proportions and by eye on
# overlays of ../shared/faces/train crops, never tuned on eval.
BROW_THICKNESS_IOD = 0.12      # brow band height below the brow points (they trace the upper edge)
BROW_TAPER = np.array([0.5, 0.9, 1.0, 1.0, 0.8])  # thickness profile, outer tail … inner head (image-left brow)
NOSE_TOP_HALF_WIDTH_IOD = 0.08  # half width of the nose polygon at the bridge top (point 27)
NOSTRIL_FLARE = 0.35            # alae: points 31/35 pushed out by this fraction of their distance to 33
FOREHEAD_RAISE = 0.4            # brows raised by this fraction of the face height to close the face hull
HEAD_SCALE = 1.25               # hair_or_other: the face hull scaled by this about its centre …
NECK_LENGTH = 0.6               # … plus a neck band under jaw points 4–12, this fraction of face height long


def _frame(pts: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Face frame from 68 points: (right unit vector, down unit vector, IOD px, face height px)."""
    eye_l, eye_r = pts[EYE_L].mean(0), pts[EYE_R].mean(0)
    d = eye_r - eye_l
    iod = float(np.hypot(*d))
    right = d / iod if iod > 1e-6 else np.array([1.0, 0.0])
    down = np.array([-right[1], right[0]])
    brow_mid = pts[np.r_[BROW_L, BROW_R]].mean(0)
    height = float(max((pts[8] - brow_mid) @ down, 1e-6))
    return right, down, max(iod, 1e-6), height


def _brow_band(brow: np.ndarray, down: np.ndarray, thickness: float, taper: np.ndarray) -> np.ndarray:
    """(5,2) brow points (upper edge) → closed band polygon (10,2) extending ``down``."""
    lower = brow + thickness * taper[:, None] * down
    return np.concatenate([brow, lower[::-1]])


def _nose_polygon(pts: np.ndarray, right: np.ndarray, iod: float) -> np.ndarray:
    """Nose = hull of the bridge top (widened), the nostril base and flared alae; (M,2)."""
    top = pts[27]
    half = NOSE_TOP_HALF_WIDTH_IOD * iod * right
    base = pts[NOSE_BASE].copy()
    tip = pts[33]
    base[0] = base[0] + NOSTRIL_FLARE * (base[0] - tip)
    base[4] = base[4] + NOSTRIL_FLARE * (base[4] - tip)
    return _hull(np.vstack([top - half, top + half, pts[NOSE_BRIDGE[1:]], base]))


def _hull(p: np.ndarray) -> np.ndarray:
    return cv2.convexHull(np.asarray(p, np.float32)).reshape(-1, 2)


def _face_hull(pts: np.ndarray, down: np.ndarray, height: float) -> np.ndarray:
    """Face outline: hull of the jaw and of the brows raised toward the hairline; (M,2)."""
    raised = pts[np.r_[BROW_L, BROW_R]] - FOREHEAD_RAISE * height * down
    return _hull(np.vstack([pts[JAW], raised]))


def _fill(canvas: np.ndarray, poly: np.ndarray, value: int) -> None:
    """Fill polygon (M,2) float px (pixel centres at integers) with sub-pixel precision."""
    shift = 4
    cv2.fillPoly(canvas, [np.rint(np.asarray(poly) * (1 << shift)).astype(np.int32)], int(value), cv2.LINE_8, shift)


def rasterize_regions(pts: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """68 landmarks (68,2) float (x, y) px → hard region index map (H,W) uint8 0..K-1.

    Rules, painted in this order (later regions overwrite earlier ones):

    1. background everywhere;
    2. hair_or_other: the face hull scaled ×``HEAD_SCALE`` about its centre (hair, ears) plus a neck
       band under jaw points 4–12, ``NECK_LENGTH`` × face height long;
    3. skin: the face hull = jaw 0–16 + both brows raised by ``FOREHEAD_RAISE`` × face height;
    4. nose: hull of point 27 widened to ±``NOSE_TOP_HALF_WIDTH_IOD`` IOD, bridge 28–30, base
       31–35 with the outer nostrils flared by ``NOSTRIL_FLARE``;
    5. brows: bands of ``BROW_THICKNESS_IOD`` IOD under the points 17–21 / 22–26 (tapered);
    6. eyes: polygons 36–41 (image-left) and 42–47 (image-right);
    7. upper lip: outer 48–54 + inner 64…60; lower lip: outer 54–59,48 + inner 60,67…64;
    8. inner mouth: 60–67 (empty when the mouth is closed).

    The face's own axes (from the eye line) are used, so tilted faces work too.
    """
    pts = np.asarray(pts, np.float64)
    if pts.shape != (68, 2):
        raise ValueError(f"expected (68, 2) landmarks, got {pts.shape}")
    h, w = shape
    out = np.zeros((h, w), np.uint8)
    right, down, iod, height = _frame(pts)
    face = _face_hull(pts, down, height)
    centre = face.mean(0)
    neck_top = pts[JAW[4:13]]
    _fill(out, centre + HEAD_SCALE * (face - centre), HAIR_OR_OTHER)
    _fill(out, np.vstack([neck_top, (neck_top + NECK_LENGTH * height * down)[::-1]]), HAIR_OR_OTHER)
    _fill(out, face, SKIN)
    _fill(out, _nose_polygon(pts, right, iod), NOSE)
    thick = BROW_THICKNESS_IOD * iod
    _fill(out, _brow_band(pts[BROW_L], down, thick, BROW_TAPER), L_BROW)
    _fill(out, _brow_band(pts[BROW_R], down, thick, BROW_TAPER[::-1]), R_BROW)
    _fill(out, pts[EYE_L], L_EYE)
    _fill(out, pts[EYE_R], R_EYE)
    _fill(out, np.vstack([pts[LIP_OUTER_UPPER], pts[LIP_INNER_UPPER][::-1]]), UPPER_LIP)
    _fill(out, np.vstack([pts[LIP_OUTER_LOWER], pts[LIP_INNER_LOWER][::-1]]), LOWER_LIP)
    _fill(out, pts[60:68], INNER_MOUTH)
    return out


def prior_from_landmarks(pts: np.ndarray, shape: tuple[int, int], sigma: float | None = None) -> np.ndarray:
    """68 landmarks (68,2) px → soft parsing map (K,H,W) float32, sums to 1 per pixel."""
    return soften(rasterize_regions(pts, shape), sigma)


# ---------------------------------------------------------------------------------------------
# dlib landmark model
# ---------------------------------------------------------------------------------------------

#: Fallback face box for aligned crops (template of ../shared/faces/README.md), as fractions of
#: the crop side: (left, top, right, bottom) with dlib's inclusive right/bottom, on the upsampled
#: image. Measured with :func:`calibrate_fixed_box` = median of dlib's HOG boxes on 1 000
#: ../shared/faces/train crops (``random.seed(0); random.sample(sorted(files), 1000)``, 2×
#: upsampled). Never measured on eval. On 128² training crops HOG finds the face on 98.7 %, and
#: most of its boxes *are* this box (HOG scales are discrete): ``detect=False`` moves the landmarks
#: by 0.29 px on average (median 0) and changes 1.3 % of the region pixels.
FIXED_BOX = (0.1367, 0.2109, 0.8359, 0.9141)
_MIN_BOX_IOU = 0.3  # a HOG box overlapping FIXED_BOX less than this is some other face: ignore it
_MODEL_FILE = "shape_predictor_68_face_landmarks.dat"


def shape_predictor_path() -> Path:
    """Path of dlib's 68-point model inside ``face_recognition_models`` (the package is not imported:
    its ``__init__`` needs ``pkg_resources``)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError("face_recognition_models", extra="train", purpose="landmark parsing priors")
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / _MODEL_FILE
    if not path.is_file():
        raise MissingDependencyError("face_recognition_models", extra="train",
                                     purpose=f"landmark priors ({path} missing)")
    return path


def import_dlib() -> Any:
    """``import dlib`` or raise :class:`MissingDependencyError` naming the ``train`` extra."""
    try:
        import dlib  # noqa: PLC0415 (optional dependency, loaded lazily)
    except ImportError as exc:
        raise MissingDependencyError("dlib-bin", extra="train", purpose="landmark parsing priors") from exc
    return dlib


@lru_cache(maxsize=1)
def _rules_hash() -> str:
    """Short hash of the geometric constants, so editing one of them invalidates cached priors."""
    rules = (FIXED_BOX, _MIN_BOX_IOU, BROW_THICKNESS_IOD, BROW_TAPER.tolist(), NOSE_TOP_HALF_WIDTH_IOD,
             NOSTRIL_FLARE, FOREHEAD_RAISE, HEAD_SCALE, NECK_LENGTH, CELEBAMASK_TO_REGION.tolist())
    return hashlib.blake2b(repr(rules).encode(), digest_size=3).hexdigest()


def _box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


class LandmarkPrior:
    """Soft parsing priors from dlib's 68-point shape predictor, for aligned face crops.

    The crop is upsampled (bicubic) so its short side is ≥ ``min_side`` px (2× for 128² crops),
    dlib's HOG frontal detector looks for the face, and when it finds none (or only a box far from
    the template's face) the fixed :data:`FIXED_BOX` is used. The shape predictor runs on the
    upsampled image; landmarks are mapped back to crop pixels.

    Args:
        detect: run the HOG detector (False: always use the fixed template box; ~3.5× faster and,
            on aligned crops, nearly the same landmarks: see :data:`FIXED_BOX`).
        min_side: upsample until the short side is at least this many px.
        sigma: blur of the soft maps in px (default 1 px per 128 px of image side).
    """

    method = "dlib68"

    def __init__(self, detect: bool = True, min_side: int = 256, sigma: float | None = None) -> None:
        self.detect, self.min_side, self.sigma = detect, int(min_side), sigma
        self._predictor: Any = None
        self._detector: Any = None
        self._rectangle: Any = None

    @property
    def fingerprint(self) -> str:
        """Identifies everything that changes the output (part of the cache key)."""
        return f"{self.method}-v{PRIOR_VERSION}-{_rules_hash()}-det{int(self.detect)}-min{self.min_side}"

    def _load(self) -> None:
        if self._predictor is None:
            dlib = import_dlib()
            self._predictor = dlib.shape_predictor(str(shape_predictor_path()))
            self._detector = dlib.get_frontal_face_detector()
            self._rectangle = dlib.rectangle

    def upsample_factor(self, shape: tuple[int, ...]) -> int:
        """Integer upsampling factor for an image of ``shape``: short side → ≥ ``min_side``."""
        return max(1, math.ceil(self.min_side / max(min(shape[:2]), 1)))

    def face_box(self, rgb_up: np.ndarray) -> tuple[tuple[int, int, int, int], bool]:
        """Face box (left, top, right, bottom) on the upsampled RGB image and whether HOG found it."""
        h, w = rgb_up.shape[:2]
        fx = FIXED_BOX
        fixed = (round(fx[0] * w), round(fx[1] * h), round(fx[2] * w), round(fx[3] * h))
        if self.detect:
            self._load()
            best, best_iou = None, _MIN_BOX_IOU
            for r in self._detector(rgb_up, 0):
                box = (r.left(), r.top(), r.right(), r.bottom())
                iou = _box_iou(box, fixed)
                if iou >= best_iou:
                    best, best_iou = box, iou
            if best is not None:
                return best, True
        return fixed, False

    def landmarks68(self, img: np.ndarray) -> np.ndarray:
        """68 landmarks of an aligned face crop.

        Args:
            img: (H,W,3) BGR uint8 (or (H,W) gray) aligned face crop.
        Returns:
            (68,2) float32 (x, y) in crop pixels, pixel centres at integer coordinates.
        """
        return self._landmarks(img)[0]

    def _landmarks(self, img: np.ndarray) -> tuple[np.ndarray, bool]:
        """(68,2) float32 crop-pixel landmarks and whether the HOG detector placed the box."""
        img = _check_image(img)
        self._load()
        rgb = img[..., ::-1] if img.ndim == 3 else img
        up = self.upsample_factor(img.shape)
        if up > 1:
            rgb = cv2.resize(rgb, None, fx=up, fy=up, interpolation=cv2.INTER_CUBIC)
        rgb = np.ascontiguousarray(rgb)
        box, detected = self.face_box(rgb)
        shape = self._predictor(rgb, self._rectangle(*[int(v) for v in box]))
        pts = np.array([(p.x, p.y) for p in shape.parts()], np.float32)
        return (pts + 0.5) / up - 0.5, detected  # cv2.resize maps x → (x + 0.5)·up − 0.5

    def labels(self, img: np.ndarray) -> np.ndarray:
        """Aligned crop (H,W,3) BGR uint8 → hard region index map (H,W) uint8 0..K-1."""
        return rasterize_regions(self.landmarks68(img), img.shape[:2])

    def prior(self, img: np.ndarray) -> np.ndarray:
        """Aligned crop (H,W,3) BGR uint8 → soft parsing map (K,H,W) float32, sums to 1 per pixel."""
        return soften(self.labels(img), self.sigma)

    __call__ = prior


def _check_image(img: np.ndarray) -> np.ndarray:
    img = np.asarray(img)
    if img.dtype != np.uint8 or not (img.ndim == 2 or (img.ndim == 3 and img.shape[2] == 3)):
        raise ValueError(f"expected an (H, W, 3) BGR or (H, W) uint8 image, got {img.dtype} {img.shape}")
    return img


def calibrate_fixed_box(images: Sequence[np.ndarray] | np.ndarray, min_side: int = 256) -> tuple[float, ...]:
    """Median HOG face box on aligned crops (N,H,W,3) BGR → (l, t, r, b) fractions of the side.

    How :data:`FIXED_BOX` was measured (on training crops only). Crops without a detection are
    skipped; when several faces are found the largest counts.
    """
    model = LandmarkPrior(detect=True, min_side=min_side)
    model._load()
    boxes = []
    for img in images:
        up = model.upsample_factor(img.shape)
        rgb = np.ascontiguousarray(cv2.resize(img[..., ::-1], None, fx=up, fy=up, interpolation=cv2.INTER_CUBIC))
        dets = list(model._detector(rgb, 0))
        if dets:
            r = max(dets, key=lambda d: d.area())
            h, w = rgb.shape[:2]
            boxes.append((r.left() / w, r.top() / h, r.right() / w, r.bottom() / h))
    if not boxes:
        raise PKDNError("the HOG detector found no face on any calibration crop")
    return tuple(float(v) for v in np.round(np.median(np.array(boxes), 0), 4))


@lru_cache(maxsize=4)
def _shared_model(detect: bool, min_side: int) -> LandmarkPrior:
    return LandmarkPrior(detect=detect, min_side=min_side)


# ---------------------------------------------------------------------------------------------
# Disk cache
# ---------------------------------------------------------------------------------------------


def _digest(img: np.ndarray, fingerprint: str) -> str:
    img = np.ascontiguousarray(img)
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{fingerprint}|{img.dtype.str}|{img.shape}|".encode())
    h.update(memoryview(img).cast("B"))
    return h.hexdigest()


class PriorCache:
    """Landmark priors cached on disk, one small ``.npz`` per face.

    An entry is addressed by ``key`` (a readable name: a file name, a dataset index…) *and* a
    content hash of the image bytes + the model fingerprint (method, :data:`PRIOR_VERSION`,
    settings), so changed pixels or rules never return a stale map. Entries live in
    ``<cache_dir>/<fingerprint>/<hash[:2]>/<key>.<hash>.npz`` and hold the hard region map (H,W)
    uint8 + the 68 landmarks (the soft map is re-derived from the hard map, exactly, on load:
    ~1 kB per 128² face instead of ~180 kB of uint8 soft maps). Writes are atomic (temporary
    file + ``os.replace``), so concurrent writers are safe; an unreadable or inconsistent entry
    is recomputed and rewritten.

    Args:
        cache_dir: folder (created on demand); ``None`` disables caching.
        model: the landmark model (default: ``LandmarkPrior()``).
    """

    def __init__(self, cache_dir: str | Path | None, model: LandmarkPrior | None = None) -> None:
        self.root = None if cache_dir is None else Path(cache_dir)
        self.model = model if model is not None else LandmarkPrior()
        self.hits = self.misses = 0

    def path(self, key: str, img: np.ndarray) -> Path | None:
        """Where the entry of (``key``, ``img``) lives (``None`` without a cache folder)."""
        if self.root is None:
            return None
        digest = _digest(img, self.model.fingerprint)
        safe = re.sub(r"[^A-Za-z0-9._-]+", "_", key)[:80].strip(".")
        name = f"{safe}.{digest}.npz" if safe else f"{digest}.npz"
        return self.root / self.model.fingerprint / digest[:2] / name

    def labels(self, key: str, img: np.ndarray) -> np.ndarray:
        """Hard region map (H,W) uint8 of ``img`` (H,W,3) BGR uint8, from the cache or computed."""
        img = _check_image(img)
        path = self.path(key, img)
        if path is not None and path.exists():
            labels = self._read(path, img.shape[:2])
            if labels is not None:
                self.hits += 1
                return labels
        self.misses += 1
        pts, detected = self.model._landmarks(img)
        labels = rasterize_regions(pts, img.shape[:2])
        if path is not None:
            _atomic_savez(path, labels=labels, landmarks=pts, detected=np.array(detected))
        return labels

    def get(self, key: str, img: np.ndarray) -> np.ndarray:
        """Soft parsing map (K,H,W) float32 (sums to 1 per pixel) of ``img`` (H,W,3) BGR uint8."""
        return soften(self.labels(key, img), self.model.sigma)

    @staticmethod
    def _read(path: Path, shape: tuple[int, int]) -> np.ndarray | None:
        try:
            with np.load(path, allow_pickle=False) as z:
                labels = z["labels"]
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            log.warning("corrupt prior cache entry %s (%s): recomputing", path, exc)
            return None
        if labels.shape != tuple(shape) or labels.dtype != np.uint8 or (labels.size and labels.max() >= K):
            log.warning("inconsistent prior cache entry %s: recomputing", path)
            return None
        return labels


def _atomic_savez(path: Path, **arrays: np.ndarray) -> None:
    """``np.savez_compressed`` to ``path`` via a temporary file + ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


# ---------------------------------------------------------------------------------------------
# Batch precomputation
# ---------------------------------------------------------------------------------------------

_WORKER_CACHE: PriorCache | None = None


def _worker_init(cache_dir: str | None, detect: bool, min_side: int) -> None:
    global _WORKER_CACHE
    _WORKER_CACHE = PriorCache(cache_dir, LandmarkPrior(detect=detect, min_side=min_side))


def _worker_labels(img: np.ndarray) -> np.ndarray:
    assert _WORKER_CACHE is not None
    return _WORKER_CACHE.labels("", img)


def _label_stream(
    images: np.ndarray, cache_dir: str | Path | None, detect: bool, min_side: int, workers: int
) -> Iterator[np.ndarray]:
    """Hard region maps of ``images`` in order, from ``workers`` processes (1: in this process)."""
    cdir = None if cache_dir is None else str(cache_dir)
    if workers <= 1:
        cache = PriorCache(cdir, _shared_model(detect, min_side))
        for img in images:
            yield cache.labels("", img)
        return
    # spawn: no fork of a parent that may hold torch/OpenMP threads
    with mp.get_context("spawn").Pool(workers, _worker_init, (cdir, detect, min_side)) as pool:
        yield from pool.imap(_worker_labels, images, chunksize=16)


def compute_priors(
    images: np.ndarray,
    cache_dir: str | Path | None,
    *,
    detect: bool = True,
    min_side: int = 256,
    sigma: float | None = None,
    workers: int = 1,
    progress: bool = True,
) -> np.ndarray:
    """Landmark priors for a whole set of aligned faces, cached per face under ``cache_dir``.

    Args:
        images: (N,H,W,3) uint8 BGR aligned crops.
        cache_dir: :class:`PriorCache` folder, or ``None`` for no cache.
        detect, min_side: :class:`LandmarkPrior` settings.
        sigma: soft-map blur in px (default 1 px per 128 px).
        workers: processes. dlib holds the GIL, so >1 uses a ``spawn`` process pool: as with any
            spawn pool, a calling *script* must guard its entry point with
            ``if __name__ == "__main__":`` (``python -m …`` and console scripts are fine).
        progress: show a tqdm bar (when tqdm is installed).
    Returns:
        (N,K,H,W) uint8 soft maps quantised to 0..255 (each pixel's channels sum to ≈ 255).
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"expected (N, H, W, 3) uint8 BGR images, got {images.dtype} {images.shape}")
    n, h, w = images.shape[:3]
    workers = max(1, min(int(workers), n)) if n else 1
    out = np.empty((n, K, h, w), np.uint8)
    stream = _label_stream(images, cache_dir, detect, min_side, workers)
    if progress:
        try:
            from tqdm import tqdm  # noqa: PLC0415

            stream = tqdm(stream, total=n, desc="parsing priors", unit="face", leave=False)
        except ImportError:
            pass
    for i, labels in enumerate(stream):
        out[i] = quantize(soften(labels, sigma))
    return out
