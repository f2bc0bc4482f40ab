"""Causal face tracking for video: track association, optical-flow tracking between detector runs,
landmark smoothing and track expiry.

Why: a face detector's 5 landmarks jitter by a pixel or two from frame to frame. On a face whose
inter-ocular distance (IOD) is 10 px, that is 10-20 % of the face, and the aligned crop, the
super-resolved face and its paste-back all shake with it (flicker). Running the detector on every
frame also costs more than the super-resolution itself on a small CPU. So:

* the detector runs every ``detect_every`` frames; in between, each track is moved by the similarity
  transform fitted (RANSAC) to pyramidal Lucas-Kanade flow of a few corners inside the face, with a
  forward-backward check; when flow fails the landmarks are kept and a detection is asked for on the
  next frame;
* detections are associated with tracks by IoU of the boxes (greedy), with a centroid fallback
  (eye-midpoint distance < ``centroid_frac`` x IOD) for tiny fast faces whose boxes no longer overlap;
* each track's landmarks go through a :class:`OneEuroFilter` (Casiez et al., CHI 2012) whose speed
  term is measured in IODs per second, so one set of parameters fits faces of any size; one cutoff
  is shared by all 5 points, so the filtered shape stays a blend of two real shapes (no distortion);
* the filter is reset when a measurement lands further than ``reset_frac`` x IOD from the filtered
  estimate (a new person, a detector swap between two faces, a cut): smoothing never drags a face
  across the frame;
* a track that is not re-detected for more than ``max_misses`` detector runs, whose flow fails twice
  in a row, or that leaves the frame, expires.

Everything is causal (uses only past and current frames) and runs without torch (numpy + cv2).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import cv2
import numpy as np

__all__ = [
    "OneEuroFilter",
    "LandmarkSmoother",
    "Track",
    "FaceTracker",
    "interocular",
    "box_iou",
]


def interocular(landmarks: np.ndarray) -> float:
    """Eye-to-eye distance of a (5, 2) landmark array (points 0 and 1), at least 1 px."""
    d = landmarks[1] - landmarks[0]
    return max(1.0, float(math.hypot(float(d[0]), float(d[1]))))


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix between boxes ``a`` (N, 4) and ``b`` (M, 4), both x1, y1, x2, y2."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0)


def _alpha(cutoff: float, dt: float) -> float:
    tau = 1.0 / (2.0 * math.pi * cutoff)
    return 1.0 / (1.0 + tau / dt)


class OneEuroFilter:
    """One-Euro filter on an (N, 2) point array: a low-pass whose cutoff grows with speed.

    ``cutoff = min_cutoff + beta * speed / norm`` (Hz). ``speed`` is the filtered speed of the
    points' centroid (units per second; averaging the points keeps measurement noise from opening
    the filter) and ``norm`` the size unit (the IOD for landmarks), so ``beta`` is per IOD/s. At rest
    the output is strongly smoothed (``min_cutoff``); when the points move, the cutoff rises and the
    lag stays small. One cutoff for the whole array keeps a point set rigid.
    """

    def __init__(self, min_cutoff: float = 1.0, beta: float = 2.0, d_cutoff: float = 1.0,
                 default_dt: float = 1.0 / 30.0) -> None:
        if min_cutoff <= 0 or d_cutoff <= 0 or beta < 0:
            raise ValueError("OneEuroFilter needs min_cutoff > 0, d_cutoff > 0, beta >= 0")
        self.min_cutoff = float(min_cutoff)
        self.beta = float(beta)
        self.d_cutoff = float(d_cutoff)
        self.default_dt = float(default_dt)
        self.x: np.ndarray | None = None
        self.dx: np.ndarray | None = None
        self.t: float | None = None

    def reset(self, x: np.ndarray | None = None, t: float | None = None) -> None:
        """Forget the past; start from ``x`` (if given) with zero speed."""
        self.x = None if x is None else np.array(x, np.float64)
        self.dx = None if x is None else np.zeros(2, np.float64)
        self.t = t

    def transform(self, M: np.ndarray) -> None:
        """Move the state by the 2x3 similarity ``M`` (motion measured elsewhere, e.g. optical flow):
        the filter then only smooths what the motion model does not explain."""
        if self.x is not None:
            self.x = self.x @ M[:, :2].T + M[:, 2]
            self.dx = M[:, :2] @ self.dx

    def __call__(self, x: np.ndarray, t: float | None = None, norm: float = 1.0,
                 min_cutoff: float | None = None) -> np.ndarray:
        x = np.asarray(x, np.float64).reshape(-1, 2)
        if self.x is None:
            self.reset(x, t)
            return self.x.copy()
        dt = self.default_dt if (t is None or self.t is None) else t - self.t
        if not (dt > 1e-6) or dt > 1.0:  # duplicate/out-of-order stamps, or a long stall
            dt = self.default_dt
        self.t = t
        v = (x.mean(0) - self.x.mean(0)) / dt
        a_d = _alpha(self.d_cutoff, dt)
        self.dx = a_d * v + (1.0 - a_d) * self.dx
        speed = float(math.hypot(self.dx[0], self.dx[1]))
        mc = self.min_cutoff if min_cutoff is None else float(min_cutoff)
        cutoff = mc + self.beta * speed / max(norm, 1e-9)
        a = _alpha(cutoff, dt)
        self.x = a * x + (1.0 - a) * self.x
        return self.x.copy()


class LandmarkSmoother:
    """Causal smoothing of one face's (5, 2) landmarks: a :class:`OneEuroFilter` normalised by the
    IOD, made motion-compensated by optical flow, with jump reset.

    * :meth:`predict` moves the filter state with the face's frame-to-frame similarity from optical
      flow. Flow is precise for relative motion and the detector for absolute position, so after a
      prediction the filter only averages detector noise (cutoff ``flow_min_cutoff``, lower than
      ``min_cutoff``) and the face motion adds no lag;
    * without flow (flow off or lost) it is a plain One-Euro filter (``min_cutoff``, ``beta``);
    * a measurement further than ``reset_frac`` x IOD (largest point distance) from the estimate
      resets the filter to it (another face, a cut, flow drift);
    * ``enabled=False`` passes measurements through unchanged (``--no-smooth``).
    """

    def __init__(self, min_cutoff: float = 1.0, beta: float = 1.0, d_cutoff: float = 1.0,
                 reset_frac: float = 0.5, flow_min_cutoff: float = 0.3, enabled: bool = True) -> None:
        self.filter = OneEuroFilter(min_cutoff, beta, d_cutoff)
        self.flow_min_cutoff = float(flow_min_cutoff)
        self.reset_frac = float(reset_frac)
        self.enabled = bool(enabled)
        self.resets = 0
        self._predicted = False

    @property
    def state(self) -> np.ndarray | None:
        return None if self.filter.x is None else self.filter.x.astype(np.float32)

    def reset(self) -> None:
        self.filter.reset()
        self._predicted = False

    def predict(self, M: np.ndarray) -> None:
        """Apply the face's measured motion (2x3 similarity) to the state."""
        self.filter.transform(M)
        self._predicted = True

    def __call__(self, landmarks: np.ndarray, t: float | None = None) -> np.ndarray:
        """Measurement update; returns the smoothed landmarks (float32 (5, 2))."""
        lm = np.asarray(landmarks, np.float64).reshape(5, 2)
        if not self.enabled:
            return lm.astype(np.float32)
        prev = self.filter.x
        iod = interocular(lm)
        predicted, self._predicted = self._predicted, False
        if prev is not None:
            jump = float(np.sqrt(((lm - prev) ** 2).sum(-1)).max())
            if jump > self.reset_frac * iod:
                self.filter.reset(lm, t)
                self.resets += 1
                return lm.astype(np.float32)
        mc = self.flow_min_cutoff if predicted else None
        return self.filter(lm, t, norm=iod, min_cutoff=mc).astype(np.float32)


@dataclass
class Track:
    """One tracked face. ``landmarks`` are smoothed (what to align with), ``raw`` the last
    measurement (detector output, or the previous one moved by optical flow)."""

    id: int
    landmarks: np.ndarray
    raw: np.ndarray
    box: np.ndarray
    score: float
    smoother: LandmarkSmoother
    hits: int = 1
    misses: int = 0
    age: int = 0
    since_detection: int = 0
    flow_failures: int = 0
    points: np.ndarray | None = field(default=None, repr=False)  # flow features, flow-image px

    @property
    def iod(self) -> float:
        return interocular(self.landmarks)


def _face_fields(det: Any) -> tuple[np.ndarray, float, np.ndarray]:
    """(box x1 y1 x2 y2, score, landmarks) of a detector result (attributes ``box``/``score``/
    ``landmarks``). A box given as x, y, w, h is recognised (the landmarks must lie inside it)."""
    lm = np.asarray(det.landmarks, np.float32).reshape(5, 2)
    box = getattr(det, "box", None)
    if box is None:
        return _box_from_landmarks(lm), float(getattr(det, "score", 1.0)), lm
    b = np.asarray(box, np.float32).reshape(4).copy()
    c = lm.mean(0)
    inside_xyxy = b[0] <= c[0] <= b[2] and b[1] <= c[1] <= b[3]
    inside_xywh = b[0] <= c[0] <= b[0] + b[2] and b[1] <= c[1] <= b[1] + b[3]
    if not inside_xyxy and inside_xywh:
        b[2:] += b[:2]
    return b, float(getattr(det, "score", 1.0)), lm


def _box_from_landmarks(lm: np.ndarray) -> np.ndarray:
    """A face box around 5 landmarks (used only when a detector gives no box)."""
    iod = interocular(lm)
    c = lm.mean(0)
    return np.array([c[0] - 1.1 * iod, c[1] - 1.3 * iod, c[0] + 1.1 * iod, c[1] + 1.2 * iod], np.float32)


def _apply_similarity(M: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return (pts @ M[:, :2].T + M[:, 2]).astype(np.float32)


class FaceTracker:
    """Detections in, smoothed face tracks out, one frame at a time (causal).

    Use::

        tracker = FaceTracker(detect_every=5)
        for t, frame in frames:
            dets = detector.detect(frame) if tracker.should_detect() else None
            tracks = tracker.update(frame, t, dets)

    ``update`` must be called for every frame (with ``detections=None`` on frames without a detector
    run). Parameters: ``smooth`` (One-Euro on/off), ``min_cutoff``/``beta``/``d_cutoff``/``reset_frac``
    (see :class:`LandmarkSmoother`), ``max_faces`` (largest faces kept), ``iou_threshold``,
    ``centroid_frac``, ``max_misses`` (detector runs a track may go unmatched), ``flow`` (LK tracking
    between detections; off = keep the last landmarks), ``flow_max_width`` (flow runs on a gray copy
    at most this wide).
    """

    def __init__(self, detect_every: int = 5, smooth: bool = True, *, min_cutoff: float = 1.0,
                 beta: float = 1.0, d_cutoff: float = 1.0, reset_frac: float = 0.5, flow_min_cutoff: float = 0.3,
                 max_faces: int = 8,
                 iou_threshold: float = 0.3, centroid_frac: float = 0.5, max_misses: int = 1,
                 flow: bool = True, flow_max_width: int = 640, min_points: int = 6) -> None:
        if detect_every < 1:
            raise ValueError("detect_every must be >= 1")
        self.detect_every = int(detect_every)
        self.smooth = bool(smooth)
        self.smoother_args = dict(min_cutoff=min_cutoff, beta=beta, d_cutoff=d_cutoff, reset_frac=reset_frac,
                                  flow_min_cutoff=flow_min_cutoff)
        self.max_faces = max(1, int(max_faces))
        self.iou_threshold = float(iou_threshold)
        self.centroid_frac = float(centroid_frac)
        self.max_misses = int(max_misses)
        self.flow = bool(flow)
        self.flow_max_width = int(flow_max_width)
        self.min_points = int(min_points)
        self.tracks: list[Track] = []
        self.frame_index = 0  # index of the next frame given to update()
        self._next_id = 0
        self._prev_gray: np.ndarray | None = None
        self._gray: np.ndarray | None = None
        self._small: np.ndarray | None = None
        self._flow_scale = 1.0
        self._force_detect = True
        self.stats = {"detector_runs": 0, "tracks_started": 0, "tracks_expired": 0, "flow_failures": 0,
                      "smoother_resets": 0}

    # -- public ---------------------------------------------------------------------------------
    def should_detect(self) -> bool:
        """Whether the detector should run on the next frame (every N frames, or when flow failed)."""
        return self._force_detect or self.frame_index % self.detect_every == 0

    def reset(self) -> None:
        """Drop all tracks (e.g. after a source reconnect)."""
        self.tracks.clear()
        self._prev_gray = None
        self._force_detect = True

    def update(self, frame: np.ndarray, t: float | None = None,
               detections: Sequence[Any] | None = None) -> list[Track]:
        """Advance all tracks to ``frame`` (BGR uint8) at time ``t`` (seconds); returns live tracks."""
        h, w = frame.shape[:2]
        self._force_detect = False
        for tr in self.tracks:
            tr.since_detection += 1
        gray = self._flow_image(frame) if (self.flow and (self.tracks or detections)) else None
        # 1. move every track by optical flow (also on detection frames: better association)
        if gray is not None and self._prev_gray is not None and self._prev_gray.shape == gray.shape and self.tracks:
            self._propagate(self._prev_gray, gray)
        # 2. associate detections
        if detections is not None:
            self.stats["detector_runs"] += 1
            self._associate([_face_fields(d) for d in detections], t)
        # 3. smooth, age, expire
        alive: list[Track] = []
        for tr in self.tracks:
            tr.age += 1
            if tr.since_detection > 0:  # no detection this frame: the flow-moved estimate
                st = tr.smoother.state
                tr.landmarks = st if (self.smooth and st is not None) else tr.raw.copy()
            if self._outside(tr.box, w, h) or tr.misses > self.max_misses or tr.flow_failures >= 2:
                self.stats["tracks_expired"] += 1
                continue
            alive.append(tr)
        self.tracks = self._suppress_duplicates(alive)
        if any(tr.flow_failures for tr in self.tracks):
            self._force_detect = True
        # 4. new flow features where needed
        if gray is not None:
            for tr in self.tracks:
                if tr.points is None or len(tr.points) < self.min_points or tr.since_detection == 0:
                    tr.points = self._seed_points(gray, tr.box)
            self._prev_gray, self._gray = gray, self._prev_gray  # swap buffers (no per-frame allocation)
        else:
            self._prev_gray = None
        self.stats["smoother_resets"] = sum(tr.smoother.resets for tr in self.tracks)
        self.frame_index += 1
        return list(self.tracks)

    # -- internals ------------------------------------------------------------------------------
    def _new_smoother(self) -> LandmarkSmoother:
        return LandmarkSmoother(**self.smoother_args, enabled=self.smooth)

    def _flow_image(self, frame: np.ndarray) -> np.ndarray:
        h, w = frame.shape[:2]
        if frame.ndim == 3:
            self._small = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY, dst=self._small
                                       if self._small is not None and self._small.shape == (h, w) else None)
        else:
            self._small = frame
        if w <= self.flow_max_width:
            self._flow_scale = 1.0
            src = self._small
            out = self._gray if self._gray is not None and self._gray.shape == src.shape else None
            if out is None:
                return src.copy()
            np.copyto(out, src)
            return out
        k = self.flow_max_width / w
        self._flow_scale = k
        size = (self.flow_max_width, max(1, round(h * k)))
        out = self._gray if self._gray is not None and self._gray.shape == (size[1], size[0]) else None
        return cv2.resize(self._small, size, dst=out, interpolation=cv2.INTER_AREA)

    def _seed_points(self, gray: np.ndarray, box: np.ndarray) -> np.ndarray | None:
        k = self._flow_scale
        x1, y1, x2, y2 = (box * k).tolist()
        gh, gw = gray.shape
        x1, y1 = max(0, int(math.floor(x1))), max(0, int(math.floor(y1)))
        x2, y2 = min(gw, int(math.ceil(x2))), min(gh, int(math.ceil(y2)))
        if x2 - x1 < 4 or y2 - y1 < 4:
            return None
        roi = gray[y1:y2, x1:x2]
        side = min(x2 - x1, y2 - y1)
        pts = cv2.goodFeaturesToTrack(roi, maxCorners=40, qualityLevel=0.01,
                                      minDistance=max(1.0, side / 10.0), blockSize=3)
        if pts is None or len(pts) < self.min_points:  # flat or tiny face: a grid still tracks
            gx, gy = np.meshgrid(np.linspace(0.2, 0.8, 4) * (x2 - x1), np.linspace(0.2, 0.8, 4) * (y2 - y1))
            grid = np.stack([gx.ravel(), gy.ravel()], 1).astype(np.float32)
            pts = grid if pts is None else np.concatenate([pts.reshape(-1, 2), grid])
        return (pts.reshape(-1, 2) + np.array([x1, y1], np.float32)).astype(np.float32)

    def _propagate(self, prev: np.ndarray, cur: np.ndarray) -> None:
        k = self._flow_scale
        spans, chunks = [], []
        for tr in self.tracks:
            n = 0 if tr.points is None else len(tr.points)
            spans.append(n)
            if n:
                chunks.append(tr.points)
        if not chunks:
            return
        p0 = np.concatenate(chunks).reshape(-1, 1, 2)
        lk = dict(winSize=(15, 15), maxLevel=2,
                  criteria=(cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 20, 0.03))
        p1, st1, _ = cv2.calcOpticalFlowPyrLK(prev, cur, p0, None, **lk)
        p0b, st2, _ = cv2.calcOpticalFlowPyrLK(cur, prev, p1, None, **lk)
        fb = np.sqrt(((p0 - p0b) ** 2).sum(-1)).ravel()
        ok = (st1.ravel() == 1) & (st2.ravel() == 1) & (fb < 0.7)
        p0, p1 = p0.reshape(-1, 2), p1.reshape(-1, 2)
        start = 0
        for tr, n in zip(self.tracks, spans):
            sl = slice(start, start + n)
            start += n
            good = ok[sl]
            a, b = p0[sl][good], p1[sl][good]
            M = None
            if len(a) >= 3:
                M, inl = cv2.estimateAffinePartial2D(a, b, method=cv2.RANSAC, ransacReprojThreshold=1.0,
                                                     maxIters=200, confidence=0.99)
                if M is not None:
                    s = math.hypot(M[0, 0], M[1, 0])
                    if not (0.7 < s < 1.4) or int(inl.sum()) < 3:
                        M = None
                    else:
                        b = b[inl.ravel() == 1]
            if M is None:
                tr.flow_failures += 1
                self.stats["flow_failures"] += 1
                tr.points = None
                continue
            tr.flow_failures = 0
            if k != 1.0:  # flow image -> frame coordinates (x_small = k x + (k - 1) / 2)
                c = (k - 1.0) / 2.0
                M = M.copy()
                M[:, 2] = (M[:, :2] @ np.array([c, c]) + M[:, 2] - c) / k
            tr.raw = _apply_similarity(M, tr.raw)
            tr.smoother.predict(M)
            corners = np.array([[tr.box[0], tr.box[1]], [tr.box[2], tr.box[1]],
                                [tr.box[2], tr.box[3]], [tr.box[0], tr.box[3]]], np.float32)
            c = _apply_similarity(M, corners)
            tr.box = np.array([c[:, 0].min(), c[:, 1].min(), c[:, 0].max(), c[:, 1].max()], np.float32)
            tr.points = b.astype(np.float32)

    def _associate(self, dets: list[tuple[np.ndarray, float, np.ndarray]], t: float | None) -> None:
        matched_t: set[int] = set()
        matched_d: set[int] = set()
        if self.tracks and dets:
            iou = box_iou(np.stack([tr.box for tr in self.tracks]), np.stack([d[0] for d in dets]))
            order = np.dstack(np.unravel_index(np.argsort(-iou, axis=None), iou.shape))[0]
            for i, j in order:
                if iou[i, j] < self.iou_threshold:
                    break
                if i in matched_t or j in matched_d:
                    continue
                matched_t.add(int(i))
                matched_d.add(int(j))
                self._refresh(self.tracks[i], dets[j], t)
            # centroid fallback for the rest (tiny faces moving fast)
            for i, tr in enumerate(self.tracks):
                if i in matched_t:
                    continue
                c_t = tr.raw[:2].mean(0)
                best, best_d = -1, self.centroid_frac * interocular(tr.raw)
                for j, d in enumerate(dets):
                    if j in matched_d:
                        continue
                    dist = float(np.hypot(*(d[2][:2].mean(0) - c_t)))
                    if dist < best_d:
                        best, best_d = j, dist
                if best >= 0:
                    matched_t.add(i)
                    matched_d.add(best)
                    self._refresh(tr, dets[best], t)
        for i, tr in enumerate(self.tracks):
            if i not in matched_t:
                tr.misses += 1
        # new tracks: biggest faces first, up to max_faces
        new = sorted((j for j in range(len(dets)) if j not in matched_d),
                     key=lambda j: -interocular(dets[j][2]))
        for j in new:
            if len(self.tracks) >= self.max_faces:
                break
            box, score, lm = dets[j]
            sm = self._new_smoother()
            tr = Track(id=self._next_id, landmarks=sm(lm, t), raw=lm.copy(), box=box.copy(), score=score,
                       smoother=sm)
            self._next_id += 1
            self.stats["tracks_started"] += 1
            self.tracks.append(tr)

    def _refresh(self, tr: Track, det: tuple[np.ndarray, float, np.ndarray], t: float | None) -> None:
        box, score, lm = det
        tr.box, tr.score, tr.raw = box.copy(), score, lm.copy()
        tr.landmarks = tr.smoother(lm, t)
        tr.hits += 1
        tr.misses = 0
        tr.since_detection = 0
        tr.flow_failures = 0

    @staticmethod
    def _outside(box: np.ndarray, w: int, h: int) -> bool:
        """True when less than a quarter of the box is inside the frame."""
        bw, bh = max(1e-3, box[2] - box[0]), max(1e-3, box[3] - box[1])
        iw = max(0.0, min(box[2], w) - max(box[0], 0))
        ih = max(0.0, min(box[3], h) - max(box[1], 0))
        return iw * ih < 0.25 * bw * bh

    def _suppress_duplicates(self, tracks: list[Track]) -> list[Track]:
        if len(tracks) < 2:
            return tracks
        iou = box_iou(np.stack([t.box for t in tracks]), np.stack([t.box for t in tracks]))
        keep = [True] * len(tracks)
        for i in range(len(tracks)):
            for j in range(i + 1, len(tracks)):
                if keep[i] and keep[j] and iou[i, j] > 0.6:
                    drop = j if tracks[i].hits >= tracks[j].hits else i
                    keep[drop] = False
                    self.stats["tracks_expired"] += 1
        return [t for t, k in zip(tracks, keep) if k]
