"""Whole-loop FPS of the webcam at real camera sizes, configurations alternated in blocks in one run.

    .venv/bin/python benchmarks/measure_webcam.py                      # 640x480, 1280x720, 1920x1080; 1 and 3 faces
    .venv/bin/python benchmarks/measure_webcam.py --sizes 1280x720 --faces 1 --repeats 5 --frames 150

Frames: real faces from ../shared/video pasted small (eyes ``--iod`` = 12 px apart, talking and
drifting) into a procedural background of the camera size (benchmarks/small_faces.py), rendered
once into memory and played in a loop, so ``capture`` costs nothing (a real camera adds its
driver's time). Each block runs ``python -m pkdn_edge.webcam`` in this process on one configuration
for ``--frames`` frames (engines and detector built and warmed up before the timed loop); for every
camera size and face count the configurations follow each other block by block, in reversed order
every other repeat, ``--repeats`` times, so load drifts hit them alike. Reported per configuration:
min / median of the whole-loop FPS (the loop's headline ``fps``: everything per frame), the median
processing FPS, the share of frames whose faces were all super-resolved, stage p50s, and the
median over repeats of the ratio to ``bicubic`` in the same repeat.

Configurations (``--configs``): ``default`` (the default loop: ``--backend auto``, ``--scale auto``, the
default headless view), ``bicubic`` (``--backend bicubic``: the whole frame upscaled, no detector, no face
path: what the user would otherwise run), ``default_output`` (the default loop with ``--view output``: no
zoom panel), ``x4_output`` (``--scale 4 --view output``: one engine), ``default_h264`` (default + writing the
output view to an H.264 file),
``int8`` (``--backend openvino --precision int8``; needs an exported artifact in ./exports).
All with ``--threads 2 --detect-every 5 --max-faces 3 --headless`` and otherwise the loop's defaults. Writes
``webcam.json`` and
``webcam.md`` to ``--out``. Say what else ran on the machine when you quote the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from small_faces import load_face_bank, render_clip  # noqa: E402

from pkdn_edge import webcam  # noqa: E402
from pkdn_edge.sources import FrameSource  # noqa: E402

CONFIGS = {
    "default": ["--backend", "auto"],
    "bicubic": ["--backend", "bicubic"],
    "default_output": ["--backend", "auto", "--view", "output"],
    "x4_output": ["--backend", "auto", "--scale", "4", "--view", "output"],
    "default_h264": ["--backend", "auto", "--output", "{tmp}/out.mp4", "--encoder", "auto"],
    "int8": ["--backend", "openvino", "--precision", "int8"],
}
COMMON = ["--threads", "2", "--detect-every", "5", "--max-faces", "3", "--headless"]  # the default scale and view


class MemorySource(FrameSource):
    """Pre-rendered frames played in a loop (no decode cost), at 30 fps for ``t``."""

    def __init__(self, frames: list[np.ndarray], name: str) -> None:
        super().__init__()
        self.frames, self.name, self._i = frames, name, 0

    def _read(self):
        img = self.frames[self._i % len(self.frames)]
        self._i += 1
        return "ok", img, None


def run_block(frames: list[np.ndarray], name: str, config: str, n: int, tmp: str) -> dict:
    """One block: the loop on ``frames`` with ``config`` for ``n`` frames; its --stats-json."""
    stats = Path(tmp) / "stats.json"
    extra = [a.format(tmp=tmp) for a in CONFIGS[config]]
    if "--output" not in extra:
        extra += ["--output", "none"]
    webcam._open_input = lambda args: MemorySource(frames, name)
    rc = webcam.main(["--frames", str(n), "--stats-json", str(stats)] + COMMON + extra)
    if rc != 0:
        raise SystemExit(f"{config} on {name} failed (exit {rc})")
    return json.loads(stats.read_text())


def _all_faces_sr(s: dict, faces: int) -> float:
    hist = s["faces_per_frame"]["by_engine"]
    return round(hist.get("x4", 0) / max(1, faces * s["frames"]), 3)


def measure(sizes, faces_list, configs, iod, frames, repeats, clip_len) -> list[dict]:
    bank = load_face_bank(clips=8, frames_per_clip=clip_len, step=1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in sizes:
            for faces in faces_list:
                clip, _ = render_clip(bank, size, faces, iod, clip_len, seed=faces)
                name = f"synthetic {size[0]}x{size[1]}, {faces} face(s), eyes {iod:g} px"
                runs: dict[str, list[dict]] = {c: [] for c in configs}
                for r in range(repeats):
                    for c in (configs if r % 2 == 0 else configs[::-1]):
                        s = run_block(clip, name, c, frames, tmp)
                        runs[c].append(s)
                        print(f"{name} | {c} | repeat {r + 1}: {s['fps']} FPS whole loop", file=sys.stderr, flush=True)
                rows.append(_row(size, faces, runs, repeats))
    return rows


def _row(size, faces, runs: dict[str, list[dict]], repeats: int) -> dict:
    row = {"size": f"{size[0]}x{size[1]}", "faces": faces, "configs": {}}
    base = runs.get("bicubic")
    for c, ss in runs.items():
        fps = [s["fps"] for s in ss]
        entry = {"fps_min": min(fps), "fps_median": statistics.median(fps), "fps_all": fps,
                 "processing_fps_median": statistics.median(s["processing_fps"] for s in ss),
                 "faces_sr_share": statistics.median(_all_faces_sr(s, faces) for s in ss),
                 "p50_ms": {k: statistics.median(s["latency_ms"][k]["p50"] for s in ss)
                            for k in ("detect", "sr", "upscale", "paste", "compose", "encode", "loop")},
                 "mean_ms": {k: statistics.median(s["latency_ms"][k]["mean"] for s in ss)
                             for k in ("detect", "sr", "upscale", "paste", "compose", "encode", "loop")},
                 "detector_runs_per_frame": statistics.median(s["tracker"]["detector_runs"] / max(1, s["frames"])
                                                              for s in ss),
                 "canvas_size": ss[0]["canvas_size"], "engine": ss[0]["engines"], "writer": ss[-1].get("writer")}
        if base and c != "bicubic":
            entry["ratio_to_bicubic_median"] = round(statistics.median(
                s["fps"] / b["fps"] for s, b in zip(ss, base) if b["fps"] > 0), 3)
        row["configs"][c] = entry
    return row


def to_markdown(rows: list[dict], meta: dict) -> str:
    lines = [f"Webcam whole-loop FPS ({meta['load']}; {meta['repeats']} alternated blocks of {meta['frames']} frames "
             f"per configuration; faces with eyes {meta['iod']:g} px apart)", "",
             "Stage columns: mean ms per frame (detect runs on some frames only). 'SR'd / true faces' counts SR'd "
             "faces over faces x frames (false detections can push it above 100 %).", "",
             "| camera | faces | config | FPS min | FPS median | x bicubic | processing FPS | SR'd / true faces | "
             "detect | sr | upscale | paste | compose | encode | loop | canvas |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        for c, e in r["configs"].items():
            m = {k: round(v, 2) for k, v in e["mean_ms"].items()}
            lines.append(f"| {r['size']} | {r['faces']} | {c} | {e['fps_min']} | {e['fps_median']} | "
                         f"{e.get('ratio_to_bicubic_median', '')} | {e['processing_fps_median']} | "
                         f"{100 * e['faces_sr_share']:.0f} % | {m['detect']} | {m['sr']} | {m['upscale']} | "
                         f"{m['paste']} | {m['compose']} | {m['encode']} | {m['loop']} | "
                         f"{e['canvas_size'][0]}x{e['canvas_size'][1]} |")
    return "\n".join(lines) + "\n"


def _size(s: str) -> tuple[int, int]:
    w, h = s.lower().split("x")
    return int(w), int(h)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="640x480,1280x720,1920x1080")
    ap.add_argument("--faces", default="1,3")
    ap.add_argument("--configs", default="default,bicubic", help=f"comma list of {', '.join(CONFIGS)}")
    ap.add_argument("--iod", type=float, default=12.0, help="eye distance of the faces (px)")
    ap.add_argument("--frames", type=int, default=120, help="frames per block")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--clip-len", type=int, default=60, help="distinct frames rendered (played in a loop)")
    ap.add_argument("--out", default="reports/webcam_sizes")
    a = ap.parse_args(argv)
    configs = [c for c in a.configs.split(",") if c]
    bad = [c for c in configs if c not in CONFIGS]
    if bad:
        ap.error(f"unknown configs {bad}")
    meta = {"load": f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs at the start",
            "repeats": a.repeats, "frames": a.frames, "iod": a.iod}
    rows = measure([_size(s) for s in a.sizes.split(",")], [int(f) for f in a.faces.split(",")], configs, a.iod,
                   a.frames, a.repeats, a.clip_len)
    meta["load_end"] = f"load average {os.getloadavg()[0]:.2f} at the end"
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "webcam.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    md = to_markdown(rows, meta)
    (out / "webcam.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
