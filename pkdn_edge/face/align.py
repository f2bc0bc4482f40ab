"""Face alignment to the project's 5-point template, and pasting faces back (numpy + OpenCV only).

Coordinates are pixels with x to the right, y down and **pixel centres at integers** (pixel ``i``
covers ``[i - 0.5, i + 0.5]``), the convention of ``cv2.warpAffine``. A 2x3 matrix ``M`` maps
source px to destination px: ``[x', y'] = M[:, :2] @ [x, y] + M[:, 2]``.

The template (``shared/faces/README.md``) places the 5 landmarks of a 128x128 crop at

==========================================  ======  ======
point                                       x       y
==========================================  ======  ======
eye, image-left (subject's right eye)       42.5    49.5
eye, image-right (subject's left eye)       85.5    49.5
nose tip                                    64.0    75.0
mouth corner, image-left                    45.5    93.5
mouth corner, image-right                   82.5    93.5
==========================================  ======  ======

:func:`template` rescales it to any crop size with the pixel-centre rule of ``cv2.resize``
(``p' = (p + 0.5) * size / 128 - 0.5``), so a face aligned straight to 32x32 matches the
``INTER_AREA`` shrink of its 128x128 crop. :func:`estimate_similarity` fits rotation + uniform
scale + translation to all 5 points (least squares, like the training/eval crops),
:func:`warp_face` renders the crop antialiased (like the training crops) and :func:`blend_face` /
:func:`paste_back` blend a (super-resolved) crop back into a frame or an upscaled canvas with a
feathered mask, touching only the face's bounding box. The video pipeline
(:mod:`pkdn_edge.pipeline`) uses exactly these functions.

Typical use::

    M = estimate_similarity(face.landmarks, 32)            # frame px -> 32x32 LR crop px
    lr = warp_face(frame, M, 32)                           # uint8 (32, 32, 3)
    sr = engine(lr)                                        # uint8 (128, 128, 3)
    A = rescale_matrix(M, src_scale=4, dst_scale=4)        # x4 canvas px -> 128x128 SR px
    paste_back(canvas_x4, sr, A, feather_px=8)             # in place
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Optional, Sequence, Tuple

import cv2
import numpy as np

from pkdn_edge.errors import PKDNError

__all__ = [
    "TEMPLATE_SIZE",
    "TEMPLATE_128",
    "template",
    "umeyama_similarity",
    "estimate_similarity",
    "inverse_matrix",
    "matrix_scale",
    "rescale_matrix",
    "transform_points",
    "warp_face",
    "align_faces",
    "feather_mask",
    "footprint",
    "Pasted",
    "blend_face",
    "paste_back",
    "paste_faces",
]

#: Side of the crop the template is defined for.
TEMPLATE_SIZE = 128
#: The 5-point template of a 128x128 crop, float64 (5, 2) (x, y), order: image-left eye,
#: image-right eye, nose tip, image-left mouth corner, image-right mouth corner. Read-only.
TEMPLATE_128 = np.array([[42.5, 49.5], [85.5, 49.5], [64.0, 75.0], [45.5, 93.5], [82.5, 93.5]], np.float64)
TEMPLATE_128.setflags(write=False)


def template(size: int = TEMPLATE_SIZE) -> np.ndarray:
    """The template points for a ``size`` x ``size`` crop: float64 (5, 2), pixel-centre convention
    (``(p + 0.5) * size / 128 - 0.5``). ``template(128)`` equals :data:`TEMPLATE_128`; e.g.
    ``template(32)`` is the LR grid of a x4 model, ``template(16)`` of a x8 model."""
    if size <= 0:
        raise ValueError(f"crop size must be positive, got {size}")
    k = float(size) / TEMPLATE_SIZE
    return (TEMPLATE_128 + 0.5) * k - 0.5


# --------------------------------------------------------------------------------------------------
# similarity transforms


def _as_points(pts: np.ndarray, name: str) -> np.ndarray:
    p = np.asarray(pts, np.float64)
    if p.ndim != 2 or p.shape[1] != 2 or p.shape[0] < 2:
        p = p.reshape(-1, 2) if p.size % 2 == 0 and p.size >= 4 else p
    if p.ndim != 2 or p.shape[1] != 2 or p.shape[0] < 2:
        raise ValueError(f"{name}: expected (N >= 2, 2) points, got shape {np.shape(pts)}")
    if not np.all(np.isfinite(p)):
        raise PKDNError(f"{name}: landmarks contain NaN or infinity")
    return p


def umeyama_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Closed-form least-squares similarity (Umeyama 1991, 2D, no reflection) mapping ``src``
    (N, 2) onto ``dst`` (N, 2). Returns a float64 2x3 matrix.

    Raises :class:`~pkdn_edge.errors.PKDNError` when the source points all coincide."""
    s = _as_points(src, "src")
    d = _as_points(dst, "dst")
    if s.shape != d.shape:
        raise ValueError(f"src {s.shape} and dst {d.shape} differ in shape")
    ms, md = s.mean(0), d.mean(0)
    s0, d0 = s - ms, d - md
    var = float((s0 * s0).sum())
    if var < 1e-12:
        raise PKDNError("degenerate landmarks: all points coincide")
    # In 2D the optimal rotation+scale is the complex ratio sum(conj(zs) * zd) / sum(|zs|^2).
    a = float((s0[:, 0] * d0[:, 0] + s0[:, 1] * d0[:, 1]).sum()) / var
    b = float((s0[:, 0] * d0[:, 1] - s0[:, 1] * d0[:, 0]).sum()) / var
    R = np.array([[a, -b], [b, a]])
    t = md - R @ ms
    return np.hstack([R, t[:, None]])


def estimate_similarity(landmarks5: np.ndarray, size: int = TEMPLATE_SIZE,
                        dst: Optional[np.ndarray] = None) -> np.ndarray:
    """Similarity (rotation + uniform scale + translation) mapping the landmarks onto the template.

    ``landmarks5``: (5, 2) source px in template order (image-left eye, image-right eye, nose,
    image-left mouth corner, image-right mouth corner). ``size``: side of the crop (the template is
    :func:`template` (``size``)); ``dst`` overrides the target points. Least squares on all 5 points
    (``cv2.estimateAffinePartial2D`` with every point an inlier, then Levenberg-Marquardt on all of
    them, as used for the project's crops); falls back to the closed form
    :func:`umeyama_similarity` when OpenCV gives no answer. Returns float64 2x3 (source px -> crop px).
    """
    src = _as_points(landmarks5, "landmarks")
    tgt = template(size) if dst is None else _as_points(dst, "dst")
    if src.shape != tgt.shape:
        raise ValueError(f"landmarks {src.shape} and template {tgt.shape} differ in shape")
    if float(((src - src.mean(0)) ** 2).sum()) < 1e-12:
        raise PKDNError("degenerate landmarks: all points coincide")
    M = None
    try:
        # A reprojection threshold far above any residual makes every point an inlier, so the
        # result is the least-squares fit over all 5 points (no outlier rejection).
        M, _ = cv2.estimateAffinePartial2D(src.reshape(-1, 1, 2), tgt.reshape(-1, 1, 2), method=cv2.RANSAC,
                                           ransacReprojThreshold=1e7, maxIters=10, confidence=0.99,
                                           refineIters=20)
    except cv2.error:
        M = None
    if M is None or not np.all(np.isfinite(M)):
        return umeyama_similarity(src, tgt)
    return np.asarray(M, np.float64)


def _h(M: np.ndarray) -> np.ndarray:
    """2x3 -> 3x3 homogeneous."""
    return np.vstack([np.asarray(M, np.float64).reshape(2, 3), [0.0, 0.0, 1.0]])


def inverse_matrix(M: np.ndarray) -> np.ndarray:
    """Inverse of a 2x3 affine/similarity matrix (float64 2x3). Raises PKDNError if singular."""
    M = np.asarray(M, np.float64).reshape(2, 3)
    det = M[0, 0] * M[1, 1] - M[0, 1] * M[1, 0]
    if abs(det) < 1e-18:
        raise PKDNError("the alignment matrix is singular (zero scale)")
    return cv2.invertAffineTransform(M)


def matrix_scale(M: np.ndarray) -> float:
    """Linear scale factor of a 2x3 similarity (``sqrt(|det|)`` of its 2x2 part)."""
    M = np.asarray(M, np.float64)
    return math.sqrt(abs(M[0, 0] * M[1, 1] - M[0, 1] * M[1, 0]))


def _resize_map(kx: float, ky: float) -> np.ndarray:
    """3x3 map of ``cv2.resize`` by factors (kx, ky) in pixel-centre coordinates:
    ``x' = kx * x + (kx - 1) / 2``."""
    return np.array([[kx, 0.0, (kx - 1.0) / 2.0], [0.0, ky, (ky - 1.0) / 2.0], [0.0, 0.0, 1.0]])


def rescale_matrix(M: np.ndarray, src_scale: float = 1.0, dst_scale: float = 1.0) -> np.ndarray:
    """Re-express a 2x3 map (source px -> crop px) for a source image resized by ``src_scale`` and a
    crop resized by ``dst_scale`` (pixel-centre convention). E.g. ``M`` frame -> 32x32 LR,
    ``src_scale=4`` (x4 canvas) and ``dst_scale=4`` (128x128 SR output) gives canvas px -> SR px,
    the matrix :func:`paste_back` takes."""
    out = _resize_map(dst_scale, dst_scale) @ _h(M) @ np.linalg.inv(_resize_map(src_scale, src_scale))
    return out[:2]


def transform_points(M: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Apply a 2x3 matrix to (N, 2) points; returns float64 (N, 2)."""
    p = np.asarray(pts, np.float64).reshape(-1, 2)
    M = np.asarray(M, np.float64)
    return p @ M[:, :2].T + M[:, 2]


def footprint(M: np.ndarray, size: int | Tuple[int, int]) -> np.ndarray:
    """Corners (4, 2) in source px of the ``size`` crop that ``M`` (2x3, source px -> crop px) maps
    onto (pixel-edge corners, pixel-centre convention). ``size``: side, or (width, height)."""
    w, h = (int(size[0]), int(size[1])) if isinstance(size, (tuple, list)) else (int(size), int(size))
    corners = np.array([[-0.5, -0.5], [w - 0.5, -0.5], [w - 0.5, h - 0.5], [-0.5, h - 0.5]])
    return transform_points(inverse_matrix(M), corners)


# --------------------------------------------------------------------------------------------------
# warping


def _reflect_range(lo: float, hi: float, n: int) -> Tuple[int, int]:
    """Integer source rows/cols [a, b) needed to sample [lo, hi] with BORDER_REFLECT_101 in a
    dimension of length ``n`` (mirrored parts included), clipped to [0, n)."""
    last = n - 1
    a, b = lo, hi
    if lo < 0:  # -x mirrors to x
        b = max(b, -lo)
    if hi > last:  # last + d mirrors to last - d
        a = min(a, 2 * last - hi)
    ia = max(0, int(math.floor(a)))
    ib = min(n, int(math.ceil(b)) + 1)
    return ia, ib


def warp_face(frame: np.ndarray, M: np.ndarray, size: int | Tuple[int, int],
              out: Optional[np.ndarray] = None, supersample: int = 2,
              interpolation: int = cv2.INTER_CUBIC) -> np.ndarray:
    """Warp the face that ``M`` (2x3, frame px -> crop px) puts on a ``size`` crop, antialiased.

    ``frame``: uint8 (H, W, 3) BGR (any channel count / dtype OpenCV warps). ``size``: side, or
    (width, height). When the warp minifies (scale < 1, the usual case for HR faces) it is done as
    for the training crops: the frame region is shrunk with ``INTER_AREA`` first whenever a
    ``supersample``-times larger render would still minify, rendered at ``supersample`` x with
    ``interpolation`` (bicubic), then ``INTER_AREA`` down to ``size``. When it magnifies, one
    bicubic warp. Only the face's region of the frame is read (fast on big frames); outside the
    frame is mirrored (``BORDER_REFLECT_101``) exactly as a full-frame warp would. Returns ``out``
    (filled in place) or a new array of shape (h, w, C).
    """
    if isinstance(size, (tuple, list)):
        ow, oh = int(size[0]), int(size[1])
    else:
        ow = oh = int(size)
    if ow <= 0 or oh <= 0:
        raise ValueError(f"crop size must be positive, got {size}")
    if frame.ndim < 2 or frame.shape[0] < 1 or frame.shape[1] < 1:
        raise ValueError(f"empty frame {frame.shape}")
    M = np.asarray(M, np.float64).reshape(2, 3)
    H, W = frame.shape[:2]
    s = matrix_scale(M)
    if s <= 0:
        raise PKDNError("the alignment matrix is singular (zero scale)")
    ss = int(supersample) if s < 1.0 and supersample > 1 else 1
    M2 = (_resize_map(ss, ss) @ _h(M))[:2]  # frame -> render grid
    rw, rh = ow * ss, oh * ss
    s2 = s * ss

    # source region the render samples (+ interpolation support), mirrored parts included
    q = footprint(M2, (rw, rh))
    margin = 2.0 / min(s2, 1.0) + 2.0
    x1, x2 = _reflect_range(q[:, 0].min() - margin, q[:, 0].max() + margin, W)
    y1, y2 = _reflect_range(q[:, 1].min() - margin, q[:, 1].max() + margin, H)
    if x2 - x1 < 1 or y2 - y1 < 1:  # cannot happen after clipping, but keep warpAffine safe
        x1, y1, x2, y2 = 0, 0, W, H
    src = frame[y1:y2, x1:x2]
    A = _h(M2) @ np.array([[1.0, 0.0, x1], [0.0, 1.0, y1], [0.0, 0.0, 1.0]])  # ROI px -> render px
    if s2 < 1.0:
        # still minifying: area-shrink the region first so the interpolating warp does not alias
        bh, bw = src.shape[:2]
        nw, nh = max(1, int(round(bw * s2))), max(1, int(round(bh * s2)))
        if nw < bw or nh < bh:
            src = cv2.resize(src, (nw, nh), interpolation=cv2.INTER_AREA)
            A = A @ np.linalg.inv(_resize_map(nw / bw, nh / bh))
    if ss == 1:
        if out is not None:
            cv2.warpAffine(src, A[:2], (ow, oh), dst=out, flags=interpolation, borderMode=cv2.BORDER_REFLECT_101)
            return out
        return cv2.warpAffine(src, A[:2], (ow, oh), flags=interpolation, borderMode=cv2.BORDER_REFLECT_101)
    big = cv2.warpAffine(src, A[:2], (rw, rh), flags=interpolation, borderMode=cv2.BORDER_REFLECT_101)
    if out is not None:
        cv2.resize(big, (ow, oh), dst=out, interpolation=cv2.INTER_AREA)
        return out
    return cv2.resize(big, (ow, oh), interpolation=cv2.INTER_AREA)


def align_faces(frame: np.ndarray, landmarks: Sequence[np.ndarray], size: int = TEMPLATE_SIZE
                ) -> Tuple[np.ndarray, np.ndarray]:
    """Align several faces of one frame. ``landmarks``: sequence of (5, 2) arrays (frame px).
    Returns (crops uint8 (N, size, size, C), matrices float64 (N, 2, 3) frame px -> crop px)."""
    n = len(landmarks)
    ch = frame.shape[2] if frame.ndim == 3 else None
    shape = (n, size, size) + ((ch,) if ch else ())
    crops = np.empty(shape, frame.dtype)
    mats = np.empty((n, 2, 3), np.float64)
    for i, lm in enumerate(landmarks):
        mats[i] = estimate_similarity(lm, size)
        warp_face(frame, mats[i], size, out=crops[i])
    return crops, mats


# --------------------------------------------------------------------------------------------------
# pasting back


@lru_cache(maxsize=32)
def _feather_mask_cached(h: int, w: int, feather10: int) -> np.ndarray:
    f = feather10 / 10.0
    m = np.zeros((h, w), np.float32)
    if f <= 0:
        m[...] = 1.0
        m.setflags(write=False)
        return m
    r = int(math.ceil(f))  # blur radius
    e = r + 1  # erosion: a zero band one px wider than the blur radius keeps the border at exactly 0
    short = min(h, w)
    if 2 * e >= short:  # tiny crop / huge feather: shrink both, keep a centre
        r = max(0, (short - 3) // 4)
        e = r + 1
    m[e:h - e, e:w - e] = 1.0
    if r > 0:  # truncated Gaussian (radius r, sigma f/2): weight 0 at the border, 0.5 about f px in
        m = cv2.GaussianBlur(m, (2 * r + 1, 2 * r + 1), max(f / 2.0, 0.3), borderType=cv2.BORDER_CONSTANT)
    m.setflags(write=False)
    return m


def feather_mask(size: int | Tuple[int, int], feather_px: float) -> np.ndarray:
    """Blend weights for a face crop: float32 (h, w), 0-1, read-only (cached).

    A blurred erosion of the full crop: the crop eroded by ``ceil(feather_px) + 1`` px, blurred
    with a Gaussian of sigma ``feather_px / 2`` truncated at ``ceil(feather_px)`` px, so the weight
    is exactly 0 on the outermost pixels and rises to 1 about ``2 * feather_px + 1`` px in.
    ``size``: side, or (h, w). ``feather_px`` 0 gives a hard-edged all-ones mask.
    """
    h, w = (int(size), int(size)) if isinstance(size, (int, np.integer)) else (int(size[0]), int(size[1]))
    return _feather_mask_cached(h, w, int(round(max(0.0, float(feather_px)) * 10)))


@dataclass
class Pasted:
    """Where :func:`blend_face` put a face: the canvas box, its blend weights and what was there before.

    ``box``: (x1, y1, x2, y2) canvas px (the region read and written). ``alpha``: float32
    (y2-y1, x2-x1) blend weight of the face per pixel. ``base``: uint8 copy of the canvas box before
    blending (``keep_base=True``), else an empty (0, 0, C) array."""

    box: Tuple[int, int, int, int]
    alpha: np.ndarray
    base: np.ndarray


def blend_face(canvas: np.ndarray, face: np.ndarray, M_canvas: np.ndarray, feather_px: float = 8.0,
               mask: Optional[np.ndarray] = None, keep_base: bool = False,
               interpolation: int = cv2.INTER_CUBIC) -> Optional[Pasted]:
    """Blend ``face`` back into ``canvas`` **in place**, where the alignment put it.

    ``canvas``: uint8 (H, W, 3) frame or upscaled frame. ``face``: uint8 (h, w, 3) crop (e.g. the
    super-resolved 128x128 face). ``M_canvas``: 2x3 similarity **canvas px -> face px** (the
    alignment matrix expressed on this canvas, see :func:`rescale_matrix`); the face is warped with
    its inverse. ``feather_px``: width of the soft edge in **canvas** px (the mask is a blurred
    erosion of the crop, see :func:`feather_mask`); ``mask`` (float32 (h, w), 0-1, face px)
    replaces it. Only the face's bounding box on the canvas is read and written. ``keep_base``
    keeps a copy of the box as it was before (e.g. to show the baseline next to the result).
    Returns a :class:`Pasted`, or None when the face falls outside the canvas.

    Resampling: a face larger than its footprint by more than 1.25x is area-shrunk first (no
    aliasing); one magnified by more than 1.25x is enlarged with a separable bicubic resize; then one
    near-1:1 bicubic warp places it (a bilinear one at a half-pixel offset averages neighbours and
    loses part of the model's gain, docs/results.md; at an integer offset the bicubic warp is an exact copy).
    ``interpolation`` overrides that last warp's kernel (``cv2.INTER_LINEAR``: the old paste, a diagnostic).
    """
    Hc, Wc = canvas.shape[:2]
    h, w = face.shape[:2]
    A = np.asarray(M_canvas, np.float64).reshape(2, 3)  # canvas -> face
    k = matrix_scale(A)  # face px per canvas px
    if k <= 0:
        raise PKDNError("the paste matrix is singular (zero scale)")
    q = footprint(A, (w, h))
    x1, y1 = max(0, int(math.floor(q[:, 0].min()))), max(0, int(math.floor(q[:, 1].min())))
    x2, y2 = min(Wc, int(math.ceil(q[:, 0].max())) + 1), min(Hc, int(math.ceil(q[:, 1].max())) + 1)
    if x2 <= x1 or y2 <= y1:
        return None
    if mask is None:
        mask = feather_mask((h, w), feather_px * k)
    else:
        mask = np.asarray(mask, np.float32)
        if mask.shape[:2] != (h, w):
            raise ValueError(f"mask {mask.shape} does not match the face {face.shape}")
    # ROI px -> face px (warpAffine with WARP_INVERSE_MAP takes the dst -> src map directly)
    Ar = A.copy()
    Ar[:, 2] += A[:, :2] @ np.array([x1, y1], np.float64)
    if k > 1.25 or k < 0.8:
        # resize the face (and its mask) to about its footprint first: area-shrink (no aliasing) or
        # separable bicubic enlarge; the warp that follows is then near 1:1 and bilinear is enough
        nw, nh = max(2, int(round(w / k))), max(2, int(round(h / k)))
        shrink = k > 1.25
        face = cv2.resize(face, (nw, nh), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)
        mask = cv2.resize(mask, (nw, nh), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
        Ar = (_resize_map(nw / w, nh / h) @ _h(Ar))[:2]
    size = (x2 - x1, y2 - y1)
    warped = cv2.warpAffine(face, Ar, size, flags=interpolation | cv2.WARP_INVERSE_MAP,
                            borderMode=cv2.BORDER_REPLICATE)
    alpha = cv2.warpAffine(mask, Ar, size, flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                           borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    roi = canvas[y1:y2, x1:x2]
    base = roi.copy() if keep_base else np.empty((0, 0) + roi.shape[2:], roi.dtype)
    if warped.ndim == 2:
        warped = warped[:, :, None]
    if roi.ndim == 3 and warped.shape[2] != roi.shape[2]:
        raise ValueError(f"face has {warped.shape[2]} channels, canvas {roi.shape[2]}")
    if roi.dtype == np.uint8 and roi.ndim == 3 and roi.shape[2] <= 4:
        roi[...] = cv2.blendLinear(warped.reshape(roi.shape), np.ascontiguousarray(roi), alpha, 1.0 - alpha)
    else:
        a = alpha[:, :, None] if roi.ndim == 3 else alpha
        roi[...] = (warped.reshape(roi.shape) * a + roi * (1.0 - a)).astype(roi.dtype)
    return Pasted((x1, y1, x2, y2), alpha, base)


def paste_back(canvas: np.ndarray, face: np.ndarray, M_canvas: np.ndarray, feather_px: float = 8.0,
               mask: Optional[np.ndarray] = None) -> Optional[Tuple[int, int, int, int]]:
    """:func:`blend_face` returning only the pasted box (x1, y1, x2, y2), or None when the face
    falls outside the canvas."""
    p = blend_face(canvas, face, M_canvas, feather_px, mask)
    return None if p is None else p.box


def paste_faces(canvas: np.ndarray, faces: Sequence[np.ndarray], matrices: Sequence[np.ndarray],
                feather_px: float = 8.0) -> list:
    """:func:`paste_back` for several faces (in order; later faces are blended over earlier ones).
    Returns the list of pasted boxes (None for faces outside the canvas)."""
    if len(faces) != len(matrices):
        raise ValueError(f"{len(faces)} faces but {len(matrices)} matrices")
    return [paste_back(canvas, f, m, feather_px) for f, m in zip(faces, matrices)]
