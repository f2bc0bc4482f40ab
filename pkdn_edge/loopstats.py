"""Statistics of the webcam loop: per-stage latency rings, temporal stability, landmark error, and
the run summary (the ``--stats-json`` document and the table printed at the end).

Every structure is bounded (preallocated rings, per-track state of the previous frame only).
Runs without torch: numpy + cv2.
"""

from __future__ import annotations

import cv2
import numpy as np

from pkdn_edge.pipeline import STAGES, FrameResult
from pkdn_edge.sources import DemoSource, Downscale, FrameSource

LOOP_STAGES = ("capture",) + STAGES + ("e2e", "compose", "display", "encode", "stats", "loop")


class LatencyRecorder:
    """Per-stage latencies in preallocated rings (no per-frame allocation, bounded memory).

    ``capacity`` samples per stage are kept (default 2**16: 36 min at 30 fps); percentiles are over
    the kept window, counts and sums over the whole run."""

    def __init__(self, stages: tuple[str, ...] = LOOP_STAGES, capacity: int = 1 << 16) -> None:
        self.stages = stages
        self.capacity = capacity
        self.buf = np.zeros((len(stages), capacity), np.float32)
        self.index = {s: i for i, s in enumerate(stages)}
        self.n = 0
        self.sums = np.zeros(len(stages), np.float64)

    def add(self, timings: dict[str, float]) -> None:
        j = self.n % self.capacity
        for s, v in timings.items():
            i = self.index.get(s)
            if i is not None:
                self.buf[i, j] = v
                self.sums[i] += v
        self.n += 1

    def summary(self) -> dict[str, dict[str, float]]:
        k = min(self.n, self.capacity)
        out = {}
        for s, i in self.index.items():
            if k == 0:
                out[s] = {"p50": 0.0, "p90": 0.0, "p99": 0.0, "mean": 0.0}
                continue
            v = self.buf[i, :k]
            p50, p90, p99 = np.percentile(v, [50, 90, 99])
            out[s] = {"p50": round(float(p50), 3), "p90": round(float(p90), 3), "p99": round(float(p99), 3),
                      "mean": round(float(self.sums[i] / self.n), 3)}
        return out

    def total_s(self, stage: str) -> float:
        return float(self.sums[self.index[stage]]) / 1e3


class StabilityMeter:
    """Mean absolute frame-to-frame change (gray levels) inside face regions, for the output and
    for the bicubic canvas at the same places (see the module docstring)."""

    def __init__(self) -> None:
        self.prev: dict[int, tuple] = {}
        self.sum_out = 0.0
        self.sum_base = 0.0
        self.sum_flicker = 0.0
        self.count = 0
        self.pairs = 0

    def update(self, res: FrameResult) -> None:
        cur: dict[int, tuple] = {}
        for fr in res.faces:
            p = fr.paste
            if p is None or p.base.size == 0:
                continue
            x1, y1, x2, y2 = p.box
            g_out = cv2.cvtColor(res.canvas[y1:y2, x1:x2], cv2.COLOR_BGR2GRAY)
            g_base = cv2.cvtColor(p.base, cv2.COLOR_BGR2GRAY)
            m = p.alpha > 0.5
            cur[fr.track_id] = (p.box, g_out, g_base, m)
            prev = self.prev.get(fr.track_id)
            if prev is None:
                continue
            (px1, py1, px2, py2), pg_out, pg_base, pm = prev
            ix1, iy1, ix2, iy2 = max(x1, px1), max(y1, py1), min(x2, px2), min(y2, py2)
            if ix2 <= ix1 or iy2 <= iy1:
                continue
            a = (slice(iy1 - y1, iy2 - y1), slice(ix1 - x1, ix2 - x1))
            b = (slice(iy1 - py1, iy2 - py1), slice(ix1 - px1, ix2 - px1))
            mm = m[a] & pm[b]
            n = int(mm.sum())
            if n == 0:
                continue
            d_out = g_out[a].astype(np.int16) - pg_out[b]
            d_base = g_base[a].astype(np.int16) - pg_base[b]
            self.sum_out += float(np.abs(d_out)[mm].sum(dtype=np.float64))
            self.sum_base += float(np.abs(d_base)[mm].sum(dtype=np.float64))
            self.sum_flicker += float(np.abs(d_out - d_base)[mm].sum(dtype=np.float64))
            self.count += n
            self.pairs += 1
        self.prev = cur

    def summary(self) -> dict[str, float]:
        c = max(1, self.count)
        return {"output": round(self.sum_out / c, 4), "bicubic": round(self.sum_base / c, 4),
                "flicker": round(self.sum_flicker / c, 4), "pairs": self.pairs}


class LandmarkError:
    """Normalised mean error (point error / true IOD) of the landmarks used for alignment, on the
    demo source, where the truth is known."""

    def __init__(self) -> None:
        self.sum = 0.0
        self.n = 0

    def update(self, res: FrameResult, truth: list[np.ndarray]) -> None:
        for fr in res.faces:
            c = fr.landmarks[:2].mean(0)
            best = min(truth, key=lambda t: float(np.hypot(*(t[:2].mean(0) - c))))
            iod = float(np.hypot(*(best[1] - best[0])))
            err = float(np.sqrt(((fr.landmarks - best) ** 2).sum(-1)).mean()) / max(iod, 1e-6)
            if err < 1.0:  # a matched face (not a false detection)
                self.sum += err
                self.n += 1

    def summary(self) -> float | None:
        return round(self.sum / self.n, 5) if self.n else None


def truth_landmarks(source: FrameSource, index: int) -> list[np.ndarray] | None:
    """True landmarks of a demo frame (also through --downscale), else None."""
    src, k = source, 1.0
    if isinstance(src, Downscale):
        k, src = src.factor, src.source
    if not isinstance(src, DemoSource):
        return None
    lms = src.landmarks_at(index)
    if k != 1.0:
        lms = [(lm + 0.5) / k - 0.5 for lm in lms]
    return lms


class LoopStats:
    """Everything the loop counts per frame: latencies, faces, stability, landmark error."""

    def __init__(self) -> None:
        self.rec = LatencyRecorder()
        self.stab = StabilityMeter()
        self.lmerr = LandmarkError()
        self.faces_hist: dict[int, int] = {}
        self.by_engine: dict[int, int] = {}  # face-frames per engine scale (0 = left bicubic)
        self.frames = 0
        self.skipped_large = 0

    def count_faces(self, res: FrameResult) -> None:
        """Face histogram and per-engine counts of one frame."""
        n = len(res.faces)
        self.faces_hist[n] = self.faces_hist.get(n, 0) + 1
        for f in res.faces:
            self.by_engine[f.engine_scale] = self.by_engine.get(f.engine_scale, 0) + 1

    def measure(self, res: FrameResult, truth: list[np.ndarray] | None) -> None:
        """Temporal stability and (on the demo) landmark error of one frame."""
        self.stab.update(res)
        if truth:
            self.lmerr.update(res, truth)

    def finish_frame(self, res: FrameResult, timings: dict[str, float]) -> None:
        """Record the frame's stage latencies once all of them are known."""
        self.rec.add(timings)
        self.frames += 1
        self.skipped_large += res.skipped_large

    def faces_summary(self) -> dict:
        hist, frames = self.faces_hist, self.frames
        return {
            "mean": round(sum(k * v for k, v in hist.items()) / frames, 3) if frames else 0.0,
            "max": max(hist, default=0),
            "frames_with_faces": sum(v for k, v in hist.items() if k > 0),
            "histogram": {str(k): v for k, v in sorted(hist.items())},
            "by_engine": {(f"x{k}" if k else "bicubic"): v for k, v in sorted(self.by_engine.items())},
        }

    def rates(self, wall: float) -> dict[str, float]:
        """FPS figures over the run (see the webcam module docstring)."""
        frames = self.frames
        e2e_s, total_s = self.rec.total_s("e2e"), self.rec.total_s("total")
        loop_fps = round(frames / wall, 2) if wall > 0 else 0.0
        return {
            "fps": loop_fps,  # the headline: everything per frame, writing included
            "loop_fps": loop_fps,
            "processing_fps": round(frames / e2e_s, 2) if e2e_s > 0 else 0.0,
            "pipeline_fps": round(frames / total_s, 2) if total_s > 0 else 0.0,
        }

    def stability_summary(self) -> dict:
        st = self.stab.summary()
        return {"temporal_stability": st["output"], "temporal_stability_bicubic": st["bicubic"],
                "temporal_flicker": st["flicker"], "temporal_stability_pairs": self.stab.pairs,
                "landmark_nme": self.lmerr.summary()}


def print_summary(s: dict, log) -> None:
    """The end-of-run lines and stage table (stderr)."""
    log(f"{s['frames']} frames ({s['end_reason']}); {s['fps']} FPS whole loop (everything per frame, writing "
        f"included; processing alone {s['processing_fps']}, pipeline without capture {s['pipeline_fps']}); "
        f"faces/frame {s['faces_per_frame']['mean']}; corrupt frames skipped {s['frames_skipped_corrupt']}")
    w = s.get("writer")
    if w:
        log(f"writer: {w['encoder']}{' on its own thread' if w['threaded'] else ''}, {w['encode_ms']} ms/frame "
            f"encoding, {w['wait_ms']} ms/frame handing over in the loop")
    log(f"{'stage':>8} {'p50':>8} {'p90':>8} {'p99':>8}  ms")
    for k, v in s["latency_ms"].items():
        log(f"{k:>8} {v['p50']:8.2f} {v['p90']:8.2f} {v['p99']:8.2f}")
    log(f"temporal stability (mean |frame-to-frame change| in faces, gray levels): output "
        f"{s['temporal_stability']}, bicubic {s['temporal_stability_bicubic']}; "
        f"flicker (change not in the bicubic input) {s['temporal_flicker']}")
    if s.get("landmark_nme") is not None:
        log(f"landmark error vs the demo's truth: {100 * s['landmark_nme']:.2f} % of the eye distance")
