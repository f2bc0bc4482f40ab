"""Face detector recall by face size on synthetic 720p/1080p camera frames, and its cost per frame.

    .venv/bin/python benchmarks/small_face_recall.py [--frames 40] [--out reports/webcam_sizes]

Frames: real faces from ../shared/video pasted small (eyes 6-24 px apart) into a procedural
background of the camera size, with ground-truth landmarks (benchmarks/small_faces.py), 3 faces a
frame. A face counts as found when a detection's eye midpoint is within half an eye distance of the
truth; ``nme`` is the mean landmark error of found faces in eye distances.

Detectors:
* ``plain640``: RetinaFace on the frame shrunk to 640 px (the webcam loop before issue 20);
* ``native``: RetinaFace on the full frame (one big, slow call);
* ``scan``: :class:`pkdn_edge.face.scan.ScanDetector` (min_iod 8): a **full** scan (every slot) per
  frame for recall; ``scan ms/call`` is what the loop pays per detector run (one slot plus one small
  region per tracked face, the 3 true faces given as tracks).

Timings are wall ms per frame with 2 threads; on a loaded machine they are inflated: run it idle.
Writes ``recall.json`` and ``recall.md`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from small_faces import background, load_face_bank, paste, positions  # noqa: E402

from pkdn_edge.face.detector import load_detector  # noqa: E402
from pkdn_edge.face.scan import ScanDetector  # noqa: E402

IODS = (6, 8, 10, 12, 16, 24)
SIZES = ((1280, 720), (1920, 1080))


def _frames(bank, size, iod, n, seed):
    rng = np.random.default_rng(seed)
    bg = background(size, seed)
    out = []
    for i in range(n):
        f = bg.copy()
        lms = []
        for k, c in enumerate(positions(size, 3, rng)):
            seq = bank[(i + k) % len(bank)]
            lms.append(paste(f, seq[(i * 3 + k) % len(seq)], iod, c))
        out.append((f, lms))
    return out


def _score(faces, truth, iod):
    found, errs = 0, []
    for lm in truth:
        c = lm[:2].mean(0)
        near = [f for f in faces if np.hypot(*(f.landmarks[:2].mean(0) - c)) < 0.5 * iod]
        if near:
            found += 1
            best = min(near, key=lambda f: np.hypot(*(f.landmarks[:2].mean(0) - c)))
            errs.append(float(np.sqrt(((best.landmarks - lm) ** 2).sum(-1)).mean()) / iod)
    return found, errs


def _timed(fn, frames):
    t = time.perf_counter()
    res = [fn(f) for f, _ in frames]
    return res, (time.perf_counter() - t) * 1e3 / len(frames)


def measure(frames_per_cell: int, threads: int) -> list[dict]:
    bank = load_face_bank(clips=8, frames_per_clip=30, step=3)
    plain = load_detector(threads=threads, max_side=640)
    native = load_detector(threads=threads, max_side=0)
    scan = ScanDetector(load_detector(threads=threads, max_side=0), min_iod=8.0)
    for d in (plain, native, scan):
        d.warmup((640, 480))
    rows = []
    for size in SIZES:
        for iod in IODS:
            frames = _frames(bank, size, iod, frames_per_cell, seed=iod)
            n = 3 * len(frames)
            row = {"size": f"{size[0]}x{size[1]}", "iod": iod, "faces": n}
            for name, fn in (("plain640", plain.detect), ("native", native.detect), ("scan", scan.detect)):
                res, ms = _timed(fn, frames)
                found, errs = 0, []
                for faces, (_, truth) in zip(res, frames):
                    a, b = _score(faces, truth, iod)
                    found, errs = found + a, errs + b
                row[name] = {"recall": round(found / n, 3), "nme": round(float(np.mean(errs)), 3) if errs else None,
                             "ms_per_frame": round(ms, 1)}
            tracked = [[(np.r_[lm.min(0) - iod, lm.max(0) + iod], iod) for lm in truth] for _, truth in frames]
            t = time.perf_counter()
            for (f, _), tr in zip(frames, tracked):
                scan.detect_tracked(f, tr)
            row["scan"]["ms_per_call"] = round((time.perf_counter() - t) * 1e3 / len(frames), 1)
            row["scan"]["slots"] = len(scan.plan(*size))
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def to_markdown(rows: list[dict], load: str) -> str:
    lines = [f"Detector recall by face size (3 real faces per synthetic frame; {load})", "",
             "| frame | eyes px | plain640 recall | native recall | scan recall | scan nme | plain640 ms | native ms | "
             "scan full ms | scan ms/call (loop) | slots |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        p, n, s = r["plain640"], r["native"], r["scan"]
        lines.append(f"| {r['size']} | {r['iod']} | {p['recall']:.2f} | {n['recall']:.2f} | {s['recall']:.2f} | "
                     f"{s['nme']} | {p['ms_per_frame']} | {n['ms_per_frame']} | {s['ms_per_frame']} | "
                     f"{s['ms_per_call']} | {s['slots']} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=40, help="frames per (size, eye distance) cell")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="reports/webcam_sizes")
    a = ap.parse_args(argv)
    load = f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs at the start"
    rows = measure(a.frames, a.threads)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "recall.json").write_text(json.dumps({"load": load, "rows": rows}, indent=2) + "\n")
    (out / "recall.md").write_text(to_markdown(rows, load))
    print(to_markdown(rows, load))
    return 0


if __name__ == "__main__":
    sys.exit(main())
