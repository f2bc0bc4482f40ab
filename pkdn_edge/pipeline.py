"""Video face super-resolution: detect/track -> smooth -> align to the LR template -> SR (one batch)
-> paste back into the upscaled frame.

Per frame (:meth:`FacePipeline.process`):

1. **detect** (every ``detect_every`` frames, or when tracking failed) and **track** (optical flow in
   between, association, One-Euro landmark smoothing with reset on jumps, expiry:
   :mod:`pkdn_edge.face.tracking`);
2. **align**: each face is warped straight from the frame to the engine's LR grid (32x32 for x4,
   16x16 for x8) with the similarity that maps its 5 landmarks onto the project's template
   (:func:`pkdn_edge.face.align.template`, the 128x128 template of ``shared/faces/README.md``
   rescaled to the LR size), fitted in closed form on all 5 points
   (:func:`~pkdn_edge.face.align.umeyama_similarity`: no RANSAC, so smooth landmarks give a smooth
   transform), and rendered antialiased like the training crops by
   :func:`~pkdn_edge.face.align.warp_face` (face region only, mirrored outside the frame);
3. **sr**: all faces of the frame go through the engine in ONE batch (one batch per engine with
   ``scale="auto"``);
4. **upscale**: the whole frame is resized to the canvas (bicubic by default) into a reused buffer.
   The canvas is the frame x the engine scale, or, with ``canvas=(W, H)``, at most that size (a
   display's worth: the webcam's default is 1920x1080, turned for portrait frames), never smaller
   than the frame (:func:`canvas_size`); the canvas scale may then be fractional;
5. **paste**: each SR face is blended back at the canvas's resolution with the inverse similarity
   (expressed on the canvas by :func:`~pkdn_edge.face.align.rescale_matrix`; a 128x128 SR face is
   area-shrunk when the canvas scale is below the engine's) and a feathered mask
   (:func:`~pkdn_edge.face.align.blend_face` / :func:`~pkdn_edge.face.align.feather_mask`), region
   of interest only.

All geometry (template, similarity, warp, mask, paste) is :mod:`pkdn_edge.face.align`'s: the
pipeline adds only the video logic (tracking, batching, per-face engine choice, buffers, timing).

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
from pkdn_edge.face.align import (TEMPLATE_128, Pasted, blend_face, feather_mask, footprint, rescale_matrix, template,
                                  umeyama_similarity, warp_face)
from pkdn_edge.face.tracking import FaceTracker, Track, interocular

__all__ = [
    "FacePipeline",
    "FrameResult",
    "FaceResult",
    "BicubicEngine",
    "STAGES",
    "SR_IOD",
    "canvas_size",
]

STAGES = ("detect", "track", "align", "sr", "upscale", "paste", "total")

SR_IOD = float(TEMPLATE_128[1, 0] - TEMPLATE_128[0, 0])  # 43 px: eye distance of every SR output (128x128)


def canvas_size(frame_wh: tuple[int, int], scale: float, limit: tuple[int, int] | None = None) -> tuple[int, int]:
    """Output canvas (w, h) for a ``frame_wh`` (w, h) frame and an engine ``scale``: the frame x scale,
    or, with ``limit`` (w, h), the largest size that fits in it (turned for portrait frames) with the
    frame's aspect ratio, never smaller than the frame itself."""
    W, H = int(frame_wh[0]), int(frame_wh[1])
    c = float(scale)
    if limit is not None:
        lw, lh = int(limit[0]), int(limit[1])
        if (H > W) != (lh > lw):
            lw, lh = lh, lw
        c = max(1.0, min(c, lw / W, lh / H))
    cw = max(1, int(round(W * c)))
    return cw, max(1, int(round(H * cw / W)))


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
    paste: Pasted | None = None       # where it was pasted (box, weights, canvas before)


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
    ``feather``: soft-edge width of the paste mask in SR-face px (:func:`~pkdn_edge.face.align.feather_mask`:
    0 at the crop border, 1 about ``2 * feather + 1`` px in; default 5 % of the SR face size). ``max_faces``.
    ``max_face_iod``: larger faces (eye distance, input px) keep the bicubic canvas (default 43; 0 = none).
    ``upscale``: ``"cubic"`` or ``"linear"`` for the full frame. ``tracker_kwargs``: passed to
    :class:`~pkdn_edge.face.tracking.FaceTracker`. ``canvas``: (w, h) the output canvas may not exceed
    (:func:`canvas_size`); None = the frame x the engine scale.
    """

    def __init__(self, engine: Any | Mapping[int, Any], detector: Any = None, detect_every: int = 5,
                 scale: int | str | None = None, smoothing: bool = True, feather: float | None = None,
                 max_faces: int = 8, upscale: str = "cubic", max_face_iod: float | None = None,
                 tracker_kwargs: Mapping[str, Any] | None = None, canvas: tuple[int, int] | None = None) -> None:
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
        self.canvas_scale = min(engines)  # the engine scale; the canvas itself: canvas_size(frame, it, canvas)
        self.canvas_limit = None if canvas is None else (int(canvas[0]), int(canvas[1]))
        self.canvas_wh: tuple[int, int] | None = None  # canvas size of the last frame
        self.lr_sizes = {s: _engine_lr(e) for s, e in engines.items()}
        # template IOD of each engine's LR grid (frame px of a face that maps 1:1 onto it)
        self._tpl = {s: template(n) for s, n in self.lr_sizes.items()}
        self.lr_iod = {s: float(np.hypot(*(t[1] - t[0]))) for s, t in self._tpl.items()}
        self.detector = detector
        self.max_faces = int(max_faces)
        self.max_face_iod = SR_IOD if max_face_iod is None else float(max_face_iod)
        self.upscale_interp = {"cubic": cv2.INTER_CUBIC, "linear": cv2.INTER_LINEAR}[upscale]
        tk = dict(tracker_kwargs or {})
        tk.setdefault("max_faces", self.max_faces)
        self.tracker = FaceTracker(detect_every=detect_every, smooth=smoothing, **tk)
        self.feather = feather
        self._lr_buf = {s: np.empty((self.max_faces, n, n, 3), np.uint8) for s, n in self.lr_sizes.items()}
        self._canvas: np.ndarray | None = None
        self._frame_hw: tuple[int, int] | None = None
        self.frame_index = 0
        self.large_face_warned = False
        self.max_iod_seen = 0.0

    # -- helpers --------------------------------------------------------------------------------
    def _mask(self, h: int, w: int) -> np.ndarray:
        """Feathered blend mask of an (h, w) SR face (cached by :func:`~pkdn_edge.face.align.feather_mask`)."""
        f = self.feather if self.feather is not None else 0.05 * min(h, w)
        return feather_mask((h, w), f)

    def choose_scale(self, iod: float) -> int:
        """Engine scale for a face of ``iod`` frame px: closest LR template IOD in log-ratio."""
        if len(self.engines) == 1:
            return next(iter(self.engines))
        return min(self.engines, key=lambda s: abs(math.log(max(iod, 1e-3) / self.lr_iod[s])))

    def _detect(self, frame: np.ndarray) -> list:
        """Run the detector; one that takes the tracked faces (``detect_tracked``, e.g.
        :class:`~pkdn_edge.face.scan.ScanDetector`) gets their last boxes and eye distances."""
        det = self.detector
        if det is None:
            return []
        tracked_fn = getattr(det, "detect_tracked", None)
        if tracked_fn is not None:
            faces = tracked_fn(frame, [(tr.box, interocular(tr.raw)) for tr in self.tracker.tracks])
        else:
            faces = (getattr(det, "detect", None) or det)(frame)
        return list(faces) if faces is not None else []

    def _want_detection(self) -> bool:
        """The tracker's cadence; a detector that scans in slots (``detect_tracked``) also runs on every
        frame while nothing is tracked or while it is still ``scanning`` (a whole scan since the last new
        face has not yet run), so the faces of a scene are found within a scan's worth of frames."""
        if self.tracker.should_detect():
            return True
        if not hasattr(self.detector, "detect_tracked"):
            return False
        return not self.tracker.tracks or bool(getattr(self.detector, "scanning", False))

    def canvas_matrix(self, M_lr: np.ndarray, engine_scale: int, canvas_scale: float | None = None) -> np.ndarray:
        """2x3 canvas px -> SR-face px for a face aligned with ``M_lr`` (frame px -> LR px), on a canvas
        ``canvas_scale`` x the frame (default: the engine scale)."""
        c = self.canvas_scale if canvas_scale is None else canvas_scale
        return rescale_matrix(M_lr, src_scale=c, dst_scale=engine_scale)

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
        if frame.shape[:2] != self._frame_hw:  # a new frame size (image folders): tracks do not carry over
            if self._frame_hw is not None:
                self.tracker.reset()
            self._frame_hw = frame.shape[:2]
        if detections is None and self.detector is not None and self._want_detection():
            detections = self._detect(frame)
        if detections is not None:
            detected = True
        t1 = clock()
        tracks: list[Track] = self.tracker.update(frame, t, detections)
        t2 = clock()
        tm["detect"], tm["track"] = (t1 - t0) * 1e3, (t2 - t1) * 1e3

        # 2. align every face to its engine's LR grid
        H, W = frame.shape[:2]
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
            try:
                M = umeyama_similarity(lm, self._tpl[s])
                q = footprint(M, n)
            except PKDNError:  # degenerate / non-finite landmarks: leave this face bicubic
                continue
            if q[:, 0].max() < 0 or q[:, 1].max() < 0 or q[:, 0].min() > W - 1 or q[:, 1].min() > H - 1:
                continue  # the crop lies entirely outside the frame
            slot = len(per_engine[s])
            lr = warp_face(frame, M, n, out=self._lr_buf[s][slot])
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
        cw, ch = canvas_size((W, H), self.canvas_scale, self.canvas_limit)
        c = cw / W
        self.canvas_wh = (cw, ch)
        shape = (ch, cw, 3)
        if self._canvas is None or self._canvas.shape != shape:
            self._canvas = np.empty(shape, np.uint8)
        cv2.resize(frame, (cw, ch), dst=self._canvas, interpolation=self.upscale_interp)
        canvas = self._canvas
        t5 = clock()
        tm["upscale"] = (t5 - t4) * 1e3

        # 5. paste back
        for fr in faces:
            if fr.sr is None:
                continue
            A = self.canvas_matrix(fr.M, fr.engine_scale, c)
            fr.paste = blend_face(canvas, fr.sr, A, mask=self._mask(*fr.sr.shape[:2]), keep_base=keep_base)
        t6 = clock()
        tm["paste"] = (t6 - t5) * 1e3
        tm["total"] = (t6 - t0) * 1e3
        res = FrameResult(canvas, faces, tm, detected, self.frame_index, skipped_large)
        self.frame_index += 1
        return res

    def warmup(self, frame_size: tuple[int, int] = (640, 480)) -> None:
        """Warm up the engines (first-run graph optimisation, allocations) at every batch size the loop
        can send (1 to ``max_faces``: OpenVINO compiles one model per batch size of a dynamic-batch
        artifact, which must not happen mid-stream), and the detector."""
        for s, e in self.engines.items():
            w = getattr(e, "warmup", None)
            if w is not None:
                w()
            buf = self._lr_buf[s]
            buf[...] = 128
            for b in range(1, self.max_faces + 1):
                e.run(buf[:b])
        if self.detector is not None:
            w = getattr(self.detector, "warmup", None)
            if w is not None:
                w()
            else:
                self._detect(np.zeros((frame_size[1], frame_size[0], 3), np.uint8))

    def reset(self) -> None:
        self.tracker.reset()
