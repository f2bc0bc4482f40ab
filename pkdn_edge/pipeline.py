"""Video face super-resolution: detect/track -> smooth -> align to the LR template -> SR (one batch)
-> paste back into the upscaled frame.

Per frame (:meth:`FacePipeline.process`):

1. **detect** (every ``detect_every`` frames, or when tracking failed) and **track** (optical flow in
   between, association, One-Euro landmark smoothing, expiry: :mod:`pkdn_edge.face.tracking`);
2. **align**: each face is warped straight from the frame to the engine's LR grid (32x32 for x4,
   16x16 for x8) with the similarity that maps its 5 landmarks onto the template of
   ``shared/faces/README.md`` rescaled to the LR size (least squares, all 5 points). The warp only
   touches the face's region and is antialiased the way the training crops were made: shrink with
   ``INTER_AREA`` while the warp would still minify, render at 2x LR with bicubic, ``INTER_AREA`` to LR;
3. **sr**: all faces of the frame go through the engine in ONE batch (one batch per engine with
   ``scale="auto"``);
4. **upscale**: the whole frame is resized by the canvas scale (bicubic by default) into a reused
   buffer;
5. **paste**: each SR face is warped back with the inverse similarity (canvas coordinates) and blended
   with a feathered square mask, region of interest only.

Timing (``time.perf_counter``, ms) per stage: ``detect``, ``track``, ``align``, ``sr``, ``upscale``,
``paste`` and ``total`` (their sum = processing; capture, display and encoding are timed by the
caller).

``scale="auto"`` (two engines, e.g. x4 and x8): the output canvas is always at the **smallest** engine
scale (x4), so the video size never changes. Each face goes to the engine whose LR template best fits
its size in the frame: the one whose template IOD (x4: 10.75 px, x8: 5.375 px) is closest in log-ratio
to the face's IOD, i.e. faces with IOD < 7.6 px use x8 (16x16 -> 128x128, shrunk to the x4 canvas at
paste with area averaging), larger ones x4. A tiny face blown up to the x4 input would be blurry and
out of the model's training distribution; the x8 model sees it at its real resolution.

``max_face_iod`` (default 43 px, the eye distance of the 128x128 template = of every SR output): a
face whose eye distance in the input frame is larger already has at least as much detail as the
model's output, so super-resolving it (downsample to 32x32, SR, magnify) would only blur it; such faces
keep the bicubic canvas (counted in ``FrameResult.skipped_large``). 0 = super-resolve every face.

Runs without torch: numpy + cv2 + whatever the engine needs.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import cv2
import numpy as np

from pkdn_edge.errors import PKDNError
from pkdn_edge.face.tracking import FaceTracker, Track, interocular

__all__ = [
    "FacePipeline",
    "FrameResult",
    "FaceResult",
    "BicubicEngine",
    "TEMPLATE_128",
    "template",
    "fit_similarity",
    "warp_to_lr",
    "paste_face",
    "feather_mask",
    "STAGES",
]

STAGES = ("detect", "track", "align", "sr", "upscale", "paste", "total")

# shared/faces/README.md: 5-point template of the 128x128 aligned crops (pixel centres at integers)
TEMPLATE_128 = np.array([[42.5, 49.5], [85.5, 49.5], [64.0, 75.0], [45.5, 93.5], [82.5, 93.5]], np.float64)


SR_IOD = float(TEMPLATE_128[1, 0] - TEMPLATE_128[0, 0])  # 43 px: eye distance of every SR output (128x128)


def template(size: int) -> np.ndarray:
    """The 5-point template for a ``size`` x ``size`` crop: the 128 template rescaled with the
    pixel-centre convention of ``cv2.resize`` (``x' = (x + 0.5) * size / 128 - 0.5``), so aligning
    directly to 32x32 gives the ``INTER_AREA`` shrink of the 128 crop."""
    k = size / 128.0
    return (TEMPLATE_128 + 0.5) * k - 0.5


def fit_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation; no reflection) mapping
    ``src`` points onto ``dst`` (Umeyama). Closed form: no RANSAC, so smooth landmarks give a
    smooth transform. Returns a 2x3 float64 matrix."""
    src = np.asarray(src, np.float64).reshape(-1, 2)
    dst = np.asarray(dst, np.float64).reshape(-1, 2)
    ms, md = src.mean(0), dst.mean(0)
    s, d = src - ms, dst - md
    var = (s ** 2).sum()
    if var < 1e-12:
        raise PKDNError("degenerate landmarks: all points coincide")
    # complex-number form of the 2D similarity: z_d = a * z_s with a = sum(conj(z_s) z_d) / sum |z_s|^2
    a = (s[:, 0] * d[:, 0] + s[:, 1] * d[:, 1]).sum() / var
    b = (s[:, 0] * d[:, 1] - s[:, 1] * d[:, 0]).sum() / var
    R = np.array([[a, -b], [b, a]])
    t = md - R @ ms
    return np.hstack([R, t[:, None]])


def _h(M: np.ndarray) -> np.ndarray:
    return np.vstack([M, [0.0, 0.0, 1.0]])


def _scale_map(k: float) -> np.ndarray:
    """Pixel-centre map of a resize by ``k``: x' = k x + (k - 1) / 2."""
    return np.array([[k, 0.0, (k - 1) / 2], [0.0, k, (k - 1) / 2]])


def _resize_map(sx: float, sy: float) -> np.ndarray:
    return np.array([[sx, 0.0, (sx - 1) / 2], [0.0, sy, (sy - 1) / 2]])


def _mat_scale(M: np.ndarray) -> float:
    return math.sqrt(abs(M[0, 0] * M[1, 1] - M[0, 1] * M[1, 0]))


def warp_to_lr(frame: np.ndarray, M: np.ndarray, size: int, out: np.ndarray | None = None) -> np.ndarray | None:
    """Warp the face that ``M`` (2x3, frame px -> LR px) maps onto the ``size``-square LR grid.

    Antialiased like the training crops: the frame region is area-shrunk first whenever the 2x render
    would still minify, rendered at 2x with bicubic, then area-averaged to ``size``. Only the face's
    region of the frame is read; outside the frame is mirrored (``BORDER_REFLECT_101``). Returns
    ``out`` (or a new array), or ``None`` when the face lies entirely outside the frame.
    """
    H, W = frame.shape[:2]
    S2 = 2 * size
    M2 = (_h(_scale_map(2.0)) @ _h(M))[:2]  # frame -> 2x LR
    inv = cv2.invertAffineTransform(M2)
    c = np.array([[-0.5, -0.5], [S2 - 0.5, -0.5], [S2 - 0.5, S2 - 0.5], [-0.5, S2 - 0.5]])
    q = c @ inv[:, :2].T + inv[:, 2]
    sc = _mat_scale(M2)
    margin = 3.0 / min(sc, 1.0) + 2
    x1, y1 = int(math.floor(q[:, 0].min() - margin)), int(math.floor(q[:, 1].min() - margin))
    x2, y2 = int(math.ceil(q[:, 0].max() + margin)), int(math.ceil(q[:, 1].max() + margin))
    x1, y1, x2, y2 = max(0, x1), max(0, y1), min(W, x2), min(H, y2)
    if x2 - x1 < 2 or y2 - y1 < 2:
        return None
    src = frame[y1:y2, x1:x2]
    Mr = M2.copy()
    Mr[:, 2] += M2[:, :2] @ np.array([x1, y1], np.float64)  # ROI px -> 2x LR
    if sc < 1.0:  # still minifying: area-shrink the region first (no aliasing)
        bh, bw = src.shape[:2]
        nw, nh = max(2, round(bw * sc)), max(2, round(bh * sc))
        src = cv2.resize(src, (nw, nh), interpolation=cv2.INTER_AREA)
        Mr = (_h(Mr) @ np.linalg.inv(_h(_resize_map(nw / bw, nh / bh))))[:2]
    big = cv2.warpAffine(src, Mr, (S2, S2), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT_101)
    if out is None:
        return cv2.resize(big, (size, size), interpolation=cv2.INTER_AREA)
    cv2.resize(big, (size, size), dst=out, interpolation=cv2.INTER_AREA)
    return out


def feather_mask(size: int | tuple[int, int], feather: float) -> np.ndarray:
    """float32 (h, w) mask: 1 inside, smooth ramp to 0 over ``feather`` px at the borders."""
    h, w = (size, size) if isinstance(size, int) else size
    f = max(1e-6, float(feather))

    def ramp(n: int) -> np.ndarray:
        x = np.arange(n, dtype=np.float64)
        r = np.clip((np.minimum(x + 0.5, n - 0.5 - x)) / f, 0.0, 1.0)
        return r * r * (3 - 2 * r)  # smoothstep

    return np.outer(ramp(h), ramp(w)).astype(np.float32)


@dataclass
class PasteInfo:
    """Where a face was pasted: canvas rectangle, blend weights and the canvas pixels before."""

    rect: tuple[int, int, int, int]  # x1, y1, x2, y2 on the canvas
    alpha: np.ndarray                # float32 (y2-y1, x2-x1)
    base: np.ndarray                 # uint8 canvas patch before pasting (the bicubic baseline)


def paste_face(canvas: np.ndarray, face: np.ndarray, A: np.ndarray, mask: np.ndarray,
               keep_base: bool = True) -> PasteInfo | None:
    """Blend ``face`` into ``canvas`` (in place) where the 2x3 ``A`` (face px -> canvas px) puts it,
    weighted by ``mask`` (float32, face size). Region of interest only; a face that would be shrunk
    is area-averaged first. Returns the pasted rectangle, its weights and the overwritten pixels."""
    Hc, Wc = canvas.shape[:2]
    h, w = face.shape[:2]
    c = np.array([[-0.5, -0.5], [w - 0.5, -0.5], [w - 0.5, h - 0.5], [-0.5, h - 0.5]])
    q = c @ A[:, :2].T + A[:, 2]
    x1, y1 = max(0, int(math.floor(q[:, 0].min())) - 1), max(0, int(math.floor(q[:, 1].min())) - 1)
    x2, y2 = min(Wc, int(math.ceil(q[:, 0].max())) + 2), min(Hc, int(math.ceil(q[:, 1].max())) + 2)
    if x2 - x1 < 1 or y2 - y1 < 1:
        return None
    Ar = A.copy()
    Ar[:, 2] -= (x1, y1)
    sc = _mat_scale(A)
    if sc < 0.8:  # the face gets smaller on the canvas (x8 face on a x4 canvas): area-average first
        nw, nh = max(2, round(w * sc)), max(2, round(h * sc))
        face = cv2.resize(face, (nw, nh), interpolation=cv2.INTER_AREA)
        mask = cv2.resize(mask, (nw, nh), interpolation=cv2.INTER_AREA)
        Ar = (_h(Ar) @ np.linalg.inv(_h(_resize_map(nw / w, nh / h))))[:2]
    interp = cv2.INTER_CUBIC
    if sc > 1.25:  # magnified: separable bicubic resize first (~4x cheaper than a bicubic warp), then a
        nw, nh = round(w * sc), round(h * sc)  # near-unit-scale bilinear warp for the rotation
        face = cv2.resize(face, (nw, nh), interpolation=cv2.INTER_CUBIC)
        mask = cv2.resize(mask, (nw, nh), interpolation=cv2.INTER_LINEAR)
        Ar = (_h(Ar) @ np.linalg.inv(_h(_resize_map(nw / w, nh / h))))[:2]
        interp = cv2.INTER_LINEAR
    size = (x2 - x1, y2 - y1)
    warped = cv2.warpAffine(face, Ar, size, flags=interp, borderMode=cv2.BORDER_REPLICATE)
    alpha = cv2.warpAffine(mask, Ar, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    roi = canvas[y1:y2, x1:x2]
    base = roi.copy() if keep_base else roi
    blended = cv2.blendLinear(warped, np.ascontiguousarray(base), alpha, 1.0 - alpha)
    roi[...] = blended
    return PasteInfo((x1, y1, x2, y2), alpha, base if keep_base else np.empty((0, 0, 3), np.uint8))


class BicubicEngine:
    """The ``bicubic`` "engine": same interface as :func:`pkdn_edge.engines.load_engine`'s engines,
    upscales each aligned LR face with ``cv2.resize(INTER_CUBIC)``. A baseline for comparisons/tests."""

    backend = "bicubic"
    precision = "none"

    def __init__(self, scale: int = 4, lr_size: int | None = None) -> None:
        if scale not in (2, 4, 8):
            raise PKDNError("bicubic engine: scale must be 2, 4 or 8")
        self.scale = int(scale)
        n = int(lr_size or 128 // self.scale)
        self.lr_size = (n, n)
        self.name = f"bicubic x{self.scale}"

    def warmup(self) -> None:
        pass

    def run(self, faces: np.ndarray) -> np.ndarray:
        faces = np.asarray(faces)
        n, h, w = faces.shape[:3]
        out = np.empty((n, h * self.scale, w * self.scale, 3), np.uint8)
        for i in range(n):
            cv2.resize(faces[i], (w * self.scale, h * self.scale), dst=out[i], interpolation=cv2.INTER_CUBIC)
        return out


def _engine_lr(engine: Any) -> int:
    lr = getattr(engine, "lr_size", None)
    if lr is None:
        return 128 // int(engine.scale)
    if isinstance(lr, (tuple, list)):
        if int(lr[0]) != int(lr[1]):
            raise PKDNError(f"engine LR size {lr} is not square")
        return int(lr[0])
    return int(lr)


@dataclass
class FaceResult:
    track_id: int
    landmarks: np.ndarray        # smoothed landmarks used for alignment (frame px)
    raw: np.ndarray              # last measurement (frame px)
    box: np.ndarray              # frame px
    iod: float                   # frame px
    engine_scale: int            # 0 = left bicubic (too large / outside frame)
    M: np.ndarray | None = None        # 2x3 frame px -> LR px
    lr: np.ndarray | None = None       # aligned LR face (view into a reused buffer: copy to keep)
    sr: np.ndarray | None = None       # SR face (engine output)
    paste: PasteInfo | None = None


@dataclass
class FrameResult:
    canvas: np.ndarray                  # output frame (reused buffer: copy to keep it)
    faces: list[FaceResult]
    timings: dict[str, float]           # ms per stage
    detected: bool                      # the detector ran on this frame
    index: int = 0
    skipped_large: int = 0
    extra: dict = field(default_factory=dict)


class FacePipeline:
    """Face SR on video frames (see the module docstring).

    ``engine``: an engine (``.scale``, ``.lr_size``, ``.run``) or a ``{scale: engine}`` mapping for
    ``scale="auto"``. ``detector``: an object with ``.detect(frame) -> [Face(box, score, landmarks)]``
    (or a callable); ``None`` = no detection (only for tests feeding ``detections=`` themselves).
    ``detect_every``: detector period in frames. ``smoothing``: landmark One-Euro on/off.
    ``feather``: paste feather in SR-face px (default 10 % of the SR face size). ``max_faces``.
    ``max_face_iod``: larger faces (eye distance, input px) keep the bicubic canvas (default 43; 0 = none).
    ``upscale``: ``"cubic"`` or ``"linear"`` for the full frame. ``tracker_kwargs``: passed to
    :class:`~pkdn_edge.face.tracking.FaceTracker`.
    """

    def __init__(self, engine: Any | Mapping[int, Any], detector: Any = None, detect_every: int = 5,
                 scale: int | str | None = None, smoothing: bool = True, feather: float | None = None,
                 max_faces: int = 8, upscale: str = "cubic", max_face_iod: float | None = None,
                 tracker_kwargs: Mapping[str, Any] | None = None) -> None:
        if isinstance(engine, Mapping):
            engines = {int(k): v for k, v in engine.items()}
        else:
            engines = {int(engine.scale): engine}
        if not engines:
            raise PKDNError("no SR engine given")
        for s, e in engines.items():
            if int(e.scale) != s:
                raise PKDNError(f"engine registered for x{s} reports scale x{e.scale}")
        if scale not in (None, "auto") and int(scale) not in engines:
            raise PKDNError(f"no engine for x{scale} (have {sorted(engines)})")
        if scale not in (None, "auto"):
            engines = {int(scale): engines[int(scale)]}
        self.engines = engines
        self.auto = len(engines) > 1
        self.canvas_scale = min(engines)
        self.lr_sizes = {s: _engine_lr(e) for s, e in engines.items()}
        # template IOD of each engine's LR grid (frame px of a face that maps 1:1 onto it)
        self.lr_iod = {s: float(np.hypot(*(template(n)[1] - template(n)[0]))) for s, n in self.lr_sizes.items()}
        self.detector = detector
        self.max_faces = int(max_faces)
        self.max_face_iod = SR_IOD if max_face_iod is None else float(max_face_iod)
        self.upscale_interp = {"cubic": cv2.INTER_CUBIC, "linear": cv2.INTER_LINEAR}[upscale]
        tk = dict(tracker_kwargs or {})
        tk.setdefault("max_faces", self.max_faces)
        self.tracker = FaceTracker(detect_every=detect_every, smooth=smoothing, **tk)
        self.feather = feather
        self._masks: dict[tuple[int, int], np.ndarray] = {}
        self._lr_buf = {s: np.empty((self.max_faces, n, n, 3), np.uint8) for s, n in self.lr_sizes.items()}
        self._canvas: np.ndarray | None = None
        self._tpl = {s: template(n) for s, n in self.lr_sizes.items()}
        self.frame_index = 0
        self.large_face_warned = False
        self.max_iod_seen = 0.0

    # -- helpers --------------------------------------------------------------------------------
    def _mask(self, h: int, w: int) -> np.ndarray:
        m = self._masks.get((h, w))
        if m is None:
            f = self.feather if self.feather is not None else 0.1 * min(h, w)
            m = self._masks[(h, w)] = feather_mask((h, w), f)
        return m

    def choose_scale(self, iod: float) -> int:
        """Engine scale for a face of ``iod`` frame px: closest LR template IOD in log-ratio."""
        if len(self.engines) == 1:
            return next(iter(self.engines))
        return min(self.engines, key=lambda s: abs(math.log(max(iod, 1e-3) / self.lr_iod[s])))

    def _detect(self, frame: np.ndarray) -> list:
        det = self.detector
        if det is None:
            return []
        fn = getattr(det, "detect", None) or det
        faces = fn(frame)
        return list(faces) if faces is not None else []

    def canvas_matrix(self, M_lr: np.ndarray, engine_scale: int) -> np.ndarray:
        """2x3 SR-face px -> canvas px for a face aligned with ``M_lr`` (frame -> LR)."""
        c, e = self.canvas_scale, engine_scale
        frame_to_canvas = _h(_scale_map(float(c)))
        lr_to_sr = _h(_scale_map(float(e)))
        frame_to_sr = lr_to_sr @ _h(M_lr)
        return (frame_to_canvas @ np.linalg.inv(frame_to_sr))[:2]

    # -- main -----------------------------------------------------------------------------------
    def process(self, frame: np.ndarray, t: float | None = None, detections: Sequence[Any] | None = None,
                keep_base: bool = True) -> FrameResult:
        """Process one BGR uint8 frame taken at time ``t`` (s). ``detections`` overrides the
        detector on this frame (tests). Returns the output canvas (reused buffer) and per-face info."""
        tm: dict[str, float] = {k: 0.0 for k in STAGES}
        clock = time.perf_counter
        t0 = clock()
        # 1. detect + track
        detected = False
        if detections is None and self.detector is not None and self.tracker.should_detect():
            detections = self._detect(frame)
        if detections is not None:
            detected = True
        t1 = clock()
        tracks: list[Track] = self.tracker.update(frame, t, detections)
        t2 = clock()
        tm["detect"], tm["track"] = (t1 - t0) * 1e3, (t2 - t1) * 1e3

        # 2. align every face to its engine's LR grid
        faces: list[FaceResult] = []
        per_engine: dict[int, list[int]] = {s: [] for s in self.engines}
        skipped_large = 0
        for tr in tracks[: self.max_faces]:
            lm = tr.landmarks
            iod = interocular(lm)
            fr = FaceResult(tr.id, lm.copy(), tr.raw.copy(), tr.box.copy(), iod, 0)
            faces.append(fr)
            s = self.choose_scale(iod)
            self.max_iod_seen = max(self.max_iod_seen, iod)
            if self.max_face_iod > 0 and iod > self.max_face_iod:
                skipped_large += 1
                continue
            n = self.lr_sizes[s]
            M = fit_similarity(lm, self._tpl[s])
            slot = len(per_engine[s])
            lr = warp_to_lr(frame, M, n, out=self._lr_buf[s][slot])
            if lr is None:
                continue
            fr.engine_scale = s
            fr.lr = lr
            fr.M = M
            per_engine[s].append(len(faces) - 1)
        t3 = clock()
        tm["align"] = (t3 - t2) * 1e3

        # 3. SR: one batch per engine
        for s, idx in per_engine.items():
            if not idx:
                continue
            out = self.engines[s].run(self._lr_buf[s][: len(idx)])
            for j, fi in enumerate(idx):
                faces[fi].sr = out[j]
        t4 = clock()
        tm["sr"] = (t4 - t3) * 1e3

        # 4. upscale the frame into the reused canvas
        H, W = frame.shape[:2]
        c = self.canvas_scale
        shape = (H * c, W * c, 3)
        if self._canvas is None or self._canvas.shape != shape:
            self._canvas = np.empty(shape, np.uint8)
        cv2.resize(frame, (W * c, H * c), dst=self._canvas, interpolation=self.upscale_interp)
        canvas = self._canvas
        t5 = clock()
        tm["upscale"] = (t5 - t4) * 1e3

        # 5. paste back
        for fr in faces:
            if fr.sr is None:
                continue
            A = self.canvas_matrix(fr.M, fr.engine_scale)
            fr.paste = paste_face(canvas, fr.sr, A, self._mask(*fr.sr.shape[:2]), keep_base=keep_base)
        t6 = clock()
        tm["paste"] = (t6 - t5) * 1e3
        tm["total"] = (t6 - t0) * 1e3
        res = FrameResult(canvas, faces, tm, detected, self.frame_index, skipped_large)
        self.frame_index += 1
        return res

    def warmup(self, frame_size: tuple[int, int] = (640, 480)) -> None:
        """Warm up the engines (first-run graph optimisation, allocations) and the detector."""
        for e in self.engines.values():
            w = getattr(e, "warmup", None)
            if w is not None:
                w()
        if self.detector is not None:
            w = getattr(self.detector, "warmup", None)
            if w is not None:
                w()
            else:
                self._detect(np.zeros((frame_size[1], frame_size[0], 3), np.uint8))

    def reset(self) -> None:
        self.tracker.reset()
