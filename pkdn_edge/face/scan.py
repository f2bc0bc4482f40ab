"""Finding small faces in large frames at a bounded cost per call: a detection *scan* in slots, and
regions of interest around the faces already tracked.

RetinaFace (MobileNet-0.25, :mod:`pkdn_edge.face.detector`) finds a face reliably when its eyes are
about ``REF_IOD`` = 10 px apart **in the network input** (docs/results.md). Shrinking a 1280x720 frame
to 640 px halves every face, so the faces the x4 model is built for are lost; running the whole frame
at native resolution on every detector call costs several times more.

So :class:`ScanDetector` plans, per frame size, a list of **slots** (:meth:`ScanDetector.plan`):

* a **coarse** slot: the whole frame shrunk to at most ``coarse_side`` px (large faces);
* **tiles**: the frame at the scale ``r = REF_IOD / min_iod`` (faces with eyes ``min_iod`` px
  apart then have ``REF_IOD`` px in the network), cut in ``tile`` x ``tile`` network-px tiles that
  overlap by the size of the largest face the coarse slot can miss (so no such face is cut in two).
  When the whole frame at that scale fits in about one tile, the plan is that single slot.

Each call of :meth:`ScanDetector.detect_tracked` runs at most **one** slot (round robin; with tracked
faces and no new face in the last scan, only every ``scan_every``-th call advances the scan) plus one
small region of interest per tracked face, resized so its eyes are ``roi_iod`` px apart. The cost of
a call is bounded by one tile plus one small crop per face, whatever the frame size; a new face is
found within one scan (while :attr:`ScanDetector.scanning` the pipeline runs the detector on every
frame). :meth:`detect` (the plain detector interface) runs a whole scan.

Of two detections of one face, the one seen larger by the network (a region of interest, or a tile
rather than the coarse slot) is kept: its landmarks are more precise. All coordinates are
frame px (pixel centres at integers). Runs without torch (numpy + cv2 + onnxruntime).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any, Sequence

import cv2
import numpy as np

from pkdn_edge.errors import PKDNError
from pkdn_edge.face.detector import Face, RetinaFaceDetector, load_detector

__all__ = ["ScanDetector", "Slot", "REF_IOD", "load_scan_detector"]

REF_IOD = 10.0  # eye distance (network px) the detector finds reliably


@dataclass(frozen=True)
class Slot:
    """A region ``x0, y0, x1, y1`` (frame px, end exclusive) run through the detector at ``scale``."""

    x0: int
    y0: int
    x1: int
    y1: int
    scale: float
    kind: str  # "coarse", "tile" or "frame"

    @property
    def net_size(self) -> tuple[int, int]:
        """(w, h) of the network input for this slot."""
        return (max(1, int(round((self.x1 - self.x0) * self.scale))),
                max(1, int(round((self.y1 - self.y0) * self.scale))))


def _starts(length: int, tile: int, step: int) -> list[int]:
    """Tile origins covering ``[0, length)`` with tiles of ``tile`` px, ``step`` px apart (last flush)."""
    if length <= tile:
        return [0]
    n = math.ceil((length - tile) / step) + 1
    return [min(i * step, length - tile) for i in range(n)]


class ScanDetector:
    """RetinaFace that finds faces down to ``min_iod`` px between the eyes in frames of any size at a
    bounded cost per call (see the module docstring).

    Args:
        base: the RetinaFace detector to run (a shallow copy with its own resizing turned off,
            ``max_side=0``, sharing the session once created).
        min_iod: the smallest eye distance (frame px) to find; the webcam's default 8 px is the
            smallest face the x4 model's 32x32 input (eyes 10.75 px apart) is meant for.
        tile: tile side in network px. ``coarse_side``: long side of the coarse slot (network px).
        roi_iod: eye distance (network px) a tracked face's region of interest is resized to.
        max_scale: never enlarge the frame more than this for the tiles.
        scan_every: once a whole scan has found no new face, the scan advances on every
            ``scan_every``-th call that has tracked faces (the regions around them run on every call):
            a region costs about a tenth of a tile.
    """

    def __init__(self, base: RetinaFaceDetector, min_iod: float = 8.0, tile: int = 640, coarse_side: int = 640,
                 roi_iod: float = 24.0, max_scale: float = 2.0, scan_every: int = 2) -> None:
        if not min_iod > 0:
            raise PKDNError(f"the smallest face to find must have eyes > 0 px apart, got {min_iod}")
        self.base = copy.copy(base)  # the caller's detector keeps its own settings
        self.base.max_side = 0
        self.min_iod, self.tile, self.coarse_side = float(min_iod), int(tile), int(coarse_side)
        self.roi_iod, self.max_scale = float(roi_iod), float(max_scale)
        self.scan_every = max(1, int(scan_every))
        self._skipped = 0  # calls since the scan last advanced
        self._plan_for: tuple[int, int] | None = None
        self._plan: list[Slot] = []
        self._next = 0
        self._quiet = 0  # slots run in a row that found no face outside the tracked ones
        self.calls = 0

    def __repr__(self) -> str:
        return f"ScanDetector(min_iod={self.min_iod}, tile={self.tile}, base={self.base!r})"

    # -- plan -----------------------------------------------------------------------------------
    def plan(self, w: int, h: int) -> list[Slot]:
        """The slots of one full scan of a ``w`` x ``h`` frame (cached per size)."""
        if self._plan_for == (w, h):
            return self._plan
        r = min(self.max_scale, REF_IOD / self.min_iod)
        T = self.tile
        if max(w, h) * r <= 1.25 * T and min(w, h) * r <= T:  # about one tile: one slot, no coarse pass
            plan = [Slot(0, 0, w, h, r, "frame")]
        else:
            rc = min(1.0, self.coarse_side / max(w, h))
            plan = [Slot(0, 0, w, h, rc, "coarse")]
            # faces the coarse slot may miss have eyes < REF_IOD / rc frame px apart: boxes ~3x that
            overlap = min(T // 2, int(math.ceil(3.0 * REF_IOD / rc * r)))
            tf, step = T / r, (T - overlap) / r  # frame px
            for y in _starts(h, int(math.ceil(tf)), max(1, int(step))):
                for x in _starts(w, int(math.ceil(tf)), max(1, int(step))):
                    plan.append(Slot(x, y, min(w, x + int(math.ceil(tf))), min(h, y + int(math.ceil(tf))), r, "tile"))
        self._plan_for, self._plan, self._next = (w, h), plan, 0
        return plan

    def describe(self, w: int, h: int) -> str:
        """One line for the log: what a scan of a ``w`` x ``h`` frame runs."""
        p = self.plan(w, h)
        tiles = [s for s in p if s.kind == "tile"]
        if not tiles:
            nw, nh = p[0].net_size
            return f"detector: whole frame at {p[0].scale:.2f}x ({nw}x{nh}), faces with eyes >= {self.min_iod:g} px"
        cw, ch = p[0].net_size
        tw, th = tiles[0].net_size
        return (f"detector: scan of {len(p)} slots, one per detector run (coarse {cw}x{ch} + {len(tiles)} tiles "
                f"{tw}x{th} at {tiles[0].scale:.2f}x) + a region around each tracked face; faces with eyes >= "
                f"{self.min_iod:g} px")

    # -- running --------------------------------------------------------------------------------
    def _run(self, frame: np.ndarray, x0: int, y0: int, x1: int, y1: int, scale: float) -> list[Face]:
        """Detect in ``frame[y0:y1, x0:x1]`` resized by ``scale``; faces in frame px."""
        crop = frame[y0:y1, x0:x1]
        ch, cw = crop.shape[:2]
        nw, nh = max(2, int(round(cw * scale))), max(2, int(round(ch * scale)))
        if (nw, nh) != (cw, ch):
            interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
            crop = cv2.resize(crop, (nw, nh), interpolation=interp)
        faces = self.base.detect(np.ascontiguousarray(crop))
        kx, ky = cw / nw, ch / nh
        k = np.array([kx, ky])
        off = np.array([(kx - 1.0) / 2.0 + x0, (ky - 1.0) / 2.0 + y0])
        out = []
        for f in faces:
            g = Face((f.box.reshape(2, 2) * k + off).reshape(4).astype(np.float32), f.score,
                     (f.landmarks * k + off).astype(np.float32))
            g.net_scale = float(scale)  # how large the face was in the network: the larger, the more precise
            out.append(g)
        return out

    def run_slot(self, frame: np.ndarray, slot: Slot) -> list[Face]:
        return self._run(frame, slot.x0, slot.y0, slot.x1, slot.y1, slot.scale)

    def _roi(self, frame: np.ndarray, box: np.ndarray, iod: float) -> list[Face]:
        """The best face in a region of interest around a tracked face's ``box`` (frame px)."""
        H, W = frame.shape[:2]
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        side = max(6.0 * iod, 1.6 * max(box[2] - box[0], box[3] - box[1]), 24.0)
        x0, y0 = max(0, int(cx - side / 2)), max(0, int(cy - side / 2))
        x1, y1 = min(W, int(cx + side / 2) + 1), min(H, int(cy + side / 2) + 1)
        if x1 - x0 < 8 or y1 - y0 < 8:
            return []
        scale = min(4.0, max(0.25, self.roi_iod / max(iod, 1.0)))
        faces = self._run(frame, x0, y0, x1, y1, scale)
        if not faces:
            return []
        c = np.array([cx, cy])
        return [min(faces, key=lambda f: float(np.hypot(*(f.box.reshape(2, 2).mean(0) - c))))]

    def _rois(self, img: np.ndarray, tracked: Sequence[tuple[np.ndarray, float]]) -> list[Face]:
        return [f for box, iod in tracked for f in self._roi(img, np.asarray(box, np.float64), float(iod))]

    def detect_tracked(self, frame: np.ndarray, tracked: Sequence[tuple[np.ndarray, float]] = ()) -> list[Face]:
        """One slot of the scan + a region of interest per tracked face ``(box, iod)``; merged."""
        img = RetinaFaceDetector._to_bgr(frame)
        H, W = img.shape[:2]
        plan = self.plan(W, H)
        self.calls += 1
        if tracked and not self.scanning and plan[0].kind != "frame" and self._skipped + 1 < self.scan_every:
            self._skipped += 1
            return self._rois(img, tracked)  # the tracked faces only, this time
        self._skipped = 0
        slot = plan[self._next % len(plan)]
        self._next = (self._next + 1) % len(plan)
        if slot.kind == "frame":  # the whole frame at full detail every call: no regions, no scanning
            self._quiet = len(plan)
            return self.run_slot(img, slot)
        found = self._rois(img, tracked)
        in_slot = self.run_slot(img, slot)
        new = [f for f in in_slot if not any(_overlaps(f, g) for g in found)]
        self._quiet = 0 if new else self._quiet + 1
        return _merge(found, in_slot)

    @property
    def scanning(self) -> bool:
        """True until one whole scan has run without finding a new face (at the start, and again after
        each new face): the caller should then run the detector on every frame, so all the faces of a
        scene are found within a scan or two, not one slot per ``detect_every`` frames."""
        return self._quiet < len(self._plan)

    def detect(self, frame: np.ndarray) -> list[Face]:
        """A whole scan of ``frame`` (every slot), merged: the plain detector interface."""
        img = RetinaFaceDetector._to_bgr(frame)
        faces: list[Face] = []
        for slot in self.plan(img.shape[1], img.shape[0]):
            faces = _merge(faces, self.run_slot(img, slot))
        return faces

    __call__ = detect

    def warmup(self, size: tuple[int, int] = (640, 480)) -> None:
        self.base.warmup(size)

    @property
    def scan_length(self) -> int:
        return len(self._plan) if self._plan else 1


def _overlaps(a: Face, b: Face) -> bool:
    """Same face: boxes overlap by IoU > 0.3, or eye midpoints closer than half an eye distance."""
    ax1, ay1, ax2, ay2 = (float(v) for v in a.box)
    bx1, by1, bx2, by2 = (float(v) for v in b.box)
    iw, ih = max(0.0, min(ax2, bx2) - max(ax1, bx1)), max(0.0, min(ay2, by2) - max(ay1, by1))
    union = (ax2 - ax1) * (ay2 - ay1) + (bx2 - bx1) * (by2 - by1) - iw * ih
    if union > 0 and iw * ih / union > 0.3:
        return True
    d = float(np.hypot(*(a.landmarks[:2].mean(0) - b.landmarks[:2].mean(0))))
    return d < 0.5 * max(a.interocular, b.interocular, 1.0)


def _merge(first: list[Face], more: list[Face]) -> list[Face]:
    """``first`` plus the faces of ``more`` (best score first); of two detections of one face, the one
    the network saw larger (``net_scale``) stays."""
    out = list(first)
    for f in sorted(more, key=lambda f: -f.score):
        same = next((i for i, g in enumerate(out) if _overlaps(f, g)), None)
        if same is None:
            out.append(f)
        elif getattr(f, "net_scale", 0.0) > getattr(out[same], "net_scale", 0.0):
            out[same] = f
    return out


def load_scan_detector(threads: int = 2, min_iod: float = 8.0, score_threshold: float = 0.8,
                       **kwargs: Any) -> ScanDetector:
    """:class:`ScanDetector` over the project's RetinaFace (:func:`~pkdn_edge.face.detector.load_detector`)."""
    return ScanDetector(load_detector(threads=threads, score_threshold=score_threshold, max_side=0), min_iod=min_iod,
                        **kwargs)
