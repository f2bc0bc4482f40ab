"""Video face super-resolution: :class:`FacePipeline` turns one camera frame into the output canvas.

Per frame (:meth:`FacePipeline.process`), in named stages, each timed (ms) under its name in
:attr:`FrameResult.timings` (:data:`STAGES`, plus their sum ``total``):

* ``detect`` (:meth:`~FacePipeline.detect_faces`): the detector, every ``detect_every`` frames;
* ``track`` (:meth:`~FacePipeline.track_faces`): association, optical flow and landmark smoothing in
  between (:mod:`pkdn_edge.face.tracking`);
* ``align`` (:meth:`~FacePipeline.align_faces`): each face goes to the engine the decision rule
  (:meth:`~FacePipeline.choose_scale`) picks, or to none, and is cut out of the frame: by default an
  integer-pixel window at the frame's own resolution, no resampling (``align="native"``);
* ``sr`` (:meth:`~FacePipeline.super_resolve`): all faces of an engine in one batch;
* ``upscale`` (:meth:`~FacePipeline.upscale`): the whole frame resized to the canvas (what a user sees
  without pkdn-edge);
* ``paste`` (:meth:`~FacePipeline.paste_faces`): each SR face blended back with a feathered mask.

``plain=True`` runs only ``upscale`` (``--backend bicubic``: the baseline). Why the thresholds are
what they are: docs/webcam.md (the decision rule). Runs without torch: numpy + cv2 + the engine's backend.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import cv2
import numpy as np

from pkdn_edge.errors import PKDNError
from pkdn_edge.face.align import (
    TEMPLATE_128,
    Pasted,
    blend_face,
    feather_mask,
    footprint,
    inverse_matrix,
    rescale_matrix,
    template,
    umeyama_similarity,
    warp_face,
)
from pkdn_edge.face.tracking import FaceTracker, Track, interocular
from pkdn_edge.stagetimer import StageTimer

__all__ = [
    "FacePipeline",
    "FrameResult",
    "FaceResult",
    "STAGES",
    "SR_IOD",
    "MAX_FACE_Q",
    "MIN_FACE_Q",
    "SMALL_FACE_Q",
    "SMALL_FACE_WEIGHT",
    "ALIGN_MODES",
    "canvas_size",
]

STAGES = ("detect", "track", "align", "sr", "upscale", "paste", "total")

SR_IOD = float(TEMPLATE_128[1, 0] - TEMPLATE_128[0, 0])  # 43 px: eye distance of every SR output (128x128)
#: The decision rule's thresholds, as multiples of an engine template's eye distance (x4: 10.75 px,
#: x8: 5.375 px): a face larger than MAX_FACE_Q x the largest template keeps the plain upscale; a face
#: goes to the engine with the largest template it fills at least MIN_FACE_Q of, else to the smallest
#: template's. The measurements behind them: docs/webcam.md (the decision rule).
MAX_FACE_Q = 1.7
MIN_FACE_Q = 0.5
#: Faces smaller than SMALL_FACE_Q x their engine's template are blended at SMALL_FACE_WEIGHT: the model
#: is least sure there, and the average of two estimates whose errors differ keeps most of the gain.
SMALL_FACE_Q = 0.7
SMALL_FACE_WEIGHT = 0.5
ALIGN_MODES = ("native", "template")


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
    ``max_face_iod``: larger faces (eye distance, input px) keep the plain upscale (default: ``max_face_q``
    x the largest engine template's eye distance; 0 = none). ``align``: ``"native"`` (integer-pixel crop at
    the frame's resolution, default) or ``"template"`` (similarity warp onto the template; diagnostic).
    ``plain``: no face path, the canvas is the frame upscaled (the honest baseline). ``paste``: the kernel of
    the paste warp, ``"cubic"`` (default) or ``"linear"`` (the old paste; a diagnostic).
    ``upscale``: ``"cubic"`` or ``"linear"`` for the full frame. ``tracker_kwargs``: passed to
    :class:`~pkdn_edge.face.tracking.FaceTracker`. ``canvas``: (w, h) the output canvas may not exceed
    (:func:`canvas_size`); None = the frame x the engine scale.
    """

    def __init__(self, engine: Any | Mapping[int, Any], detector: Any = None, detect_every: int = 5,
                 scale: int | str | None = None, smoothing: bool = True, feather: float | None = None,
                 max_faces: int = 8, upscale: str = "cubic", max_face_iod: float | None = None,
                 tracker_kwargs: Mapping[str, Any] | None = None, canvas: tuple[int, int] | None = None,
                 align: str = "native", max_face_q: float = MAX_FACE_Q, plain: bool = False,
                 paste: str = "cubic") -> None:
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
        # the template at the scale the model was trained on (128 / s px crops), centred in the engine's input
        # window (larger windows give the model the whole face and its surroundings at the same face scale)
        self._tpl = {s: template(128 // s) + (n - 128 // s) / 2.0 for s, n in self.lr_sizes.items()}
        self.lr_iod = {s: float(np.hypot(*(t[1] - t[0]))) for s, t in self._tpl.items()}
        self.detector = detector
        self.max_faces = int(max_faces)
        if align not in ALIGN_MODES:
            raise PKDNError(f"align must be one of {ALIGN_MODES}, got {align!r}")
        self.align = align
        # the faces are also shown at their native size (the zoom view): then SR runs even where the canvas
        # is not larger than the frame (nothing is pasted there; the view shows the SR faces beside it)
        self.zoom = False
        self.paste_interp = {"cubic": cv2.INTER_CUBIC, "linear": cv2.INTER_LINEAR}[paste]
        self.plain = bool(plain)
        largest = max(self.lr_iod.values())
        self.max_face_iod = float(max_face_q) * largest if max_face_iod is None else float(max_face_iod)
        self.upscale_interp = {"cubic": cv2.INTER_CUBIC, "linear": cv2.INTER_LINEAR}[upscale]
        tk = dict(tracker_kwargs or {})
        tk.setdefault("max_faces", self.max_faces)
        self.tracker = FaceTracker(detect_every=detect_every, smooth=smoothing, **tk)
        self.feather = feather
        self._small_masks: dict[tuple, np.ndarray] = {}
        self._lr_buf = {s: np.empty((self.max_faces, n, n, 3), np.uint8) for s, n in self.lr_sizes.items()}
        self._canvas: np.ndarray | None = None
        self._frame_hw: tuple[int, int] | None = None
        self.frame_index = 0
        self.large_face_warned = False
        self.max_iod_seen = 0.0

    # -- helpers --------------------------------------------------------------------------------
    def _mask(self, h: int, w: int, small: bool = False) -> np.ndarray:
        """Feathered blend mask of an (h, w) SR face (cached by :func:`~pkdn_edge.face.align.feather_mask`);
        ``small``: the same at ``SMALL_FACE_WEIGHT`` (cached here: no allocation per frame)."""
        f = self.feather if self.feather is not None else 0.05 * min(h, w)
        m = feather_mask((h, w), f)
        if not small:
            return m
        key = (h, w, f)
        if key not in self._small_masks:
            self._small_masks[key] = m * np.float32(SMALL_FACE_WEIGHT)
        return self._small_masks[key]

    def choose_scale(self, iod: float, canvas_scale: float | None = None) -> int:
        """The decision rule: the engine scale for a face of ``iod`` frame px (its LR template eye distance
        closest in log-ratio), or 0 = keep the plain upscale: the face is larger than ``max_face_iod``, or
        the canvas (``canvas_scale`` x the frame) is not larger than the frame."""
        if canvas_scale is not None and canvas_scale <= 1.0 and not self.zoom:
            return 0
        if self.max_face_iod > 0 and iod > self.max_face_iod:
            return 0
        by_template = sorted(self.engines, key=lambda s: -self.lr_iod[s])  # largest template first (x4, x8)
        for s in by_template:
            if iod >= MIN_FACE_Q * self.lr_iod[s]:
                return s
        return by_template[-1]

    def crop_matrix(self, landmarks: np.ndarray, scale: int) -> np.ndarray:
        """2x3 frame px -> LR crop px for a face with ``landmarks`` (5, 2) sent to the x``scale`` engine.
        ``align="template"``: the similarity onto the template. ``align="native"``: a pure integer
        translation whose n x n window is centred where the template puts the crop centre (no resampling)."""
        n = self.lr_sizes[scale]
        M = umeyama_similarity(landmarks, self._tpl[scale])
        if self.align == "template":
            return M
        c = (n - 1) / 2.0
        centre = inverse_matrix(M) @ np.array([c, c, 1.0])
        ix, iy = int(math.floor(centre[0] - c + 0.5)), int(math.floor(centre[1] - c + 0.5))
        return np.array([[1.0, 0.0, -ix], [0.0, 1.0, -iy]])

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
        H, W = frame.shape[:2]
        cw, ch = canvas_size((W, H), self.canvas_scale, self.canvas_limit)
        c = cw / W
        self.canvas_wh = (cw, ch)
        tm = StageTimer(STAGES)
        tracks: list[Track] = []
        detected = False
        if not (self.plain or (c <= 1.0 and not self.zoom)):  # else no face path, or nothing it could add
            with tm.stage("detect"):
                detections = self.detect_faces(frame, detections)
                detected = detections is not None
            with tm.stage("track"):
                tracks = self.track_faces(frame, t, detections)
        with tm.stage("align"):
            faces, per_engine, skipped_large = self.align_faces(frame, tracks, c)
        with tm.stage("sr"):
            self.super_resolve(faces, per_engine)
        with tm.stage("upscale"):
            canvas = self.upscale(frame, (cw, ch))
        with tm.stage("paste"):
            self.paste_faces(canvas, faces, c, keep_base)
        res = FrameResult(canvas, faces, tm.stop("total"), detected, self.frame_index, skipped_large)
        self.frame_index += 1
        return res

    # -- the stages, in order -------------------------------------------------------------------
    def detect_faces(self, frame: np.ndarray, detections: Sequence[Any] | None) -> Sequence[Any] | None:
        """Stage ``detect``: ``detections`` when given, else the detector's faces on the frames it runs
        on (the tracker's cadence), else ``None``. A new frame size (image folders) drops the tracks."""
        if frame.shape[:2] != self._frame_hw:
            if self._frame_hw is not None:
                self.tracker.reset()
            self._frame_hw = frame.shape[:2]
        if detections is None and self.detector is not None and self._want_detection():
            detections = self._detect(frame)
        return detections

    def track_faces(self, frame: np.ndarray, t: float | None, detections: Sequence[Any] | None) -> list[Track]:
        """Stage ``track``: the tracker's faces after this frame (``detections`` or optical flow)."""
        return self.tracker.update(frame, t, detections)

    def align_faces(self, frame: np.ndarray, tracks: Sequence[Track], canvas_scale: float
               ) -> tuple[list[FaceResult], dict[int, list[int]], int]:
        """Stage ``align``: choose each face's engine (or none) and cut its LR crop into that engine's batch buffer.
        Returns the faces, the face indices per engine and how many were too large for any engine."""
        H, W = frame.shape[:2]
        faces: list[FaceResult] = []
        per_engine: dict[int, list[int]] = {s: [] for s in self.engines}
        skipped_large = 0
        for tr in tracks[: self.max_faces]:
            lm = tr.landmarks
            iod = interocular(lm)
            fr = FaceResult(tr.id, lm.copy(), tr.raw.copy(), tr.box.copy(), iod, 0)
            faces.append(fr)
            self.max_iod_seen = max(self.max_iod_seen, iod)
            s = self.choose_scale(iod, canvas_scale)
            if s == 0:
                skipped_large += canvas_scale > 1.0
                continue
            n = self.lr_sizes[s]
            try:
                M = self.crop_matrix(lm, s)
                q = footprint(M, n)
            except PKDNError:  # degenerate / non-finite landmarks: leave this face to the plain upscale
                continue
            if q[:, 0].max() < 0 or q[:, 1].max() < 0 or q[:, 0].min() > W - 1 or q[:, 1].min() > H - 1:
                continue  # the crop lies entirely outside the frame
            slot = len(per_engine[s])
            fr.lr = warp_face(frame, M, n, out=self._lr_buf[s][slot])  # native: an exact (mirrored) copy
            fr.engine_scale, fr.M = s, M
            per_engine[s].append(len(faces) - 1)
        return faces, per_engine, skipped_large

    def super_resolve(self, faces: list[FaceResult], per_engine: Mapping[int, list[int]]) -> None:
        """Stage ``sr``: one batch per engine; each face gets its SR output (``.sr``)."""
        for s, idx in per_engine.items():
            if idx:
                out = self.engines[s].run(self._lr_buf[s][: len(idx)])
                for j, fi in enumerate(idx):
                    faces[fi].sr = out[j]

    def upscale(self, frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        """Stage ``upscale``: the whole frame resized to the canvas ``size`` (w, h) in the reused buffer."""
        shape = (size[1], size[0], 3)
        if self._canvas is None or self._canvas.shape != shape:
            self._canvas = np.empty(shape, np.uint8)
        cv2.resize(frame, size, dst=self._canvas, interpolation=self.upscale_interp)
        return self._canvas

    def paste_faces(self, canvas: np.ndarray, faces: Sequence[FaceResult], canvas_scale: float,
                    keep_base: bool = True) -> None:
        """Stage ``paste``: blend each SR face into the canvas where its crop came from (``.paste``). On a
        canvas no larger than the frame nothing is pasted (the zoom view shows the faces instead)."""
        if canvas_scale <= 1.0:
            return
        for fr in faces:
            if fr.sr is not None:
                A = self.canvas_matrix(fr.M, fr.engine_scale, canvas_scale)
                mask = self._mask(*fr.sr.shape[:2], small=fr.iod < SMALL_FACE_Q * self.lr_iod[fr.engine_scale])
                fr.paste = blend_face(canvas, fr.sr, A, mask=mask, keep_base=keep_base,
                                      interpolation=self.paste_interp)

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
