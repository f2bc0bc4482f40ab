"""Face-region quality of the webcam loop on simulated low-resolution camera video, with ground truth,
against what a user sees without pkdn-edge: **the whole LR frame upscaled bicubically to the same canvas**.

For each clip of ``../shared/video`` (or ``--clips``) and each ``--scales`` factor s:

1. **Simulate a low-resolution camera** from the original frames (cropped to a multiple of 48 px):
   ``clean``: area resampling ÷s, then MPEG-4 part 2 (OpenCV's mp4v writer, as a simple camera
   pipeline would); ``camera``: optics blur (σ in LR px, one per clip), area ÷s, shot + read sensor
   noise (new noise every frame), the whole LR sequence through H.264 (libx264, PyAV, one CRF per
   clip). Every setting is drawn from ``--seed``.
2. **Run the default loop** (``python -m pkdn_edge.webcam --view output``; default canvas, scale and
   model unless ``--loop-args`` says otherwise) on those LR frames, writing PNG frames.
3. **Measure** Y-PSNR inside each face box that the detector finds in the *original* frame (eyes at
   least ``--min-iod`` px apart there) of (a) the loop output and (b) the LR frame resized to the same
   canvas with ``cv2.INTER_CUBIC`` (exactly ``--backend bicubic``), both against the original. Where the
   canvas is larger than the original the two images are area-shrunk to it; else the original is
   area-shrunk to the canvas.

Writes ``video_quality.json`` / ``.md`` and ``frames_*.png`` (plain upscale | loop | original face
crops) under ``--out``. A benchmark script, not a test; figures made from ``../shared`` clips stay
local (shared data may not be redistributed).

    python benchmarks/video_quality.py --max-clips 17 --frames 24 --scales 2 4 8 12 --out /tmp/vq
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

from pkdn_edge.face.detector import load_detector
from pkdn_edge.metrics import psnr

ROOT = Path(__file__).resolve().parent.parent
SHARED_VIDEO = ROOT.parent / "shared" / "video"


def read_clip(path: Path, frames: int, mult: int) -> list[np.ndarray]:
    """The first ``frames`` BGR frames of a clip, cropped (centre) to multiples of ``mult``."""
    cap = cv2.VideoCapture(str(path))
    out = []
    while len(out) < frames:
        ok, f = cap.read()
        if not ok:
            break
        h, w = f.shape[:2]
        ch, cw = h - h % mult, w - w % mult
        y0, x0 = (h - ch) // 2, (w - cw) // 2
        out.append(np.ascontiguousarray(f[y0 : y0 + ch, x0 : x0 + cw]))
    cap.release()
    return out


def simulate_camera(frames: list[np.ndarray], s: int, rng: np.random.Generator) -> tuple[list[np.ndarray], dict]:
    """BGR frames → degraded LR BGR frames (÷s) and the drawn settings."""
    import av

    cam = {"blur_sigma_lr": float(rng.uniform(0.3, 0.8)), "shot_gain": float(rng.uniform(0.02, 0.15)),
           "read_sigma": float(rng.uniform(1.0, 3.0)), "h264_crf": int(rng.integers(23, 31))}
    h, w = frames[0].shape[:2]
    size = (w // s, h // s)
    lr = []
    for f in frames:
        x = cv2.GaussianBlur(f.astype(np.float32), (0, 0), cam["blur_sigma_lr"] * s)
        x = cv2.resize(x, size, interpolation=cv2.INTER_AREA)
        sigma = np.sqrt(cam["shot_gain"] * np.clip(x, 0, 255) + cam["read_sigma"] ** 2)
        x = x + rng.standard_normal(x.shape).astype(np.float32) * sigma
        lr.append(np.clip(x + 0.5, 0, 255).astype(np.uint8))
    enc = av.CodecContext.create("libx264", "w")
    enc.width, enc.height, enc.pix_fmt = size[0], size[1], "yuv420p"
    enc.time_base, enc.thread_count = Fraction(1, 30), 1
    enc.options = {"crf": str(cam["h264_crf"]), "preset": "veryfast"}
    packets = []
    for i, f in enumerate(lr):
        vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(f[..., ::-1]), format="rgb24")
        vf.pts = i
        packets += enc.encode(vf)
    packets += enc.encode(None)
    dec = av.CodecContext.create("h264", "r")
    out = [fr.to_ndarray(format="rgb24")[..., ::-1] for p in packets for fr in dec.decode(p)]
    out += [fr.to_ndarray(format="rgb24")[..., ::-1] for fr in dec.decode(None)]
    if len(out) != len(lr):
        raise RuntimeError(f"H.264 round trip returned {len(out)} of {len(lr)} frames")
    return [np.ascontiguousarray(f) for f in out], cam


def simulate_clean(frames: list[np.ndarray], s: int, work: Path) -> tuple[list[np.ndarray], dict]:
    """BGR frames → area ÷s → an mp4v (MPEG-4 part 2) file through OpenCV's writer → decoded frames."""
    h, w = frames[0].shape[:2]
    size = (w // s, h // s)
    path = work / f"clean_{s}.mp4"
    wr = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30.0, size)
    for f in frames:
        wr.write(cv2.resize(f, size, interpolation=cv2.INTER_AREA))
    wr.release()
    cap = cv2.VideoCapture(str(path))
    out = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        out.append(f)
    cap.release()
    path.unlink()
    if len(out) != len(frames):
        raise RuntimeError(f"mp4v round trip returned {len(out)} of {len(frames)} frames")
    return out, {"codec": "mp4v (OpenCV default quality)"}


def run_loop(lr_dir: Path, out_dir: Path, loop_args: list[str], threads: int) -> dict:
    """The webcam loop on a folder of LR frames → PNG output frames in ``out_dir``; its stats."""
    stats = out_dir.with_suffix(".json")
    cmd = [sys.executable, "-m", "pkdn_edge.webcam", "--source", str(lr_dir), "--view", "output",
           "--output", str(out_dir), "--headless", "--no-overlay", "--stats-json", str(stats),
           "--threads", str(threads), *loop_args]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{r.stderr[-2000:]}")
    return json.loads(stats.read_text())


def face_boxes(detector, frame: np.ndarray, min_iod: float) -> list[tuple[tuple[int, int, int, int], float]]:
    """Integer face boxes (x1, y1, x2, y2) in ``frame`` with eyes at least ``min_iod`` px apart, and
    their eye distances."""
    h, w = frame.shape[:2]
    out = []
    for f in detector.detect(frame):
        if f.interocular < min_iod:
            continue
        x1, y1, x2, y2 = (int(round(v)) for v in f.box)
        x1, y1, x2, y2 = max(x1, 0), max(y1, 0), min(x2, w), min(y2, h)
        if x2 - x1 >= 16 and y2 - y1 >= 16:
            out.append(((x1, y1, x2, y2), f.interocular))
    return out


def compare_size(canvas_hw: tuple[int, int], hr_hw: tuple[int, int]) -> tuple[int, int]:
    """(h, w) at which the loop output, the plain upscale and the original are compared: the smaller of
    the canvas and the original (both have the frame's aspect ratio)."""
    return canvas_hw if canvas_hw[0] * canvas_hw[1] <= hr_hw[0] * hr_hw[1] else hr_hw


def _to(img: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    return img if img.shape[:2] == tuple(hw) else cv2.resize(img, (hw[1], hw[0]), interpolation=cv2.INTER_AREA)


def evaluate_clip(clip: Path, frames: list[np.ndarray], boxes: list, s: int, condition: str, args, rng,
                  work: Path) -> dict:
    """One clip at ÷``s`` under ``condition`` (clean | camera): the loop and the plain upscale, scored."""
    if condition == "camera":
        lr, cam = simulate_camera(frames, s, rng)
    elif condition == "lossless":
        size = (frames[0].shape[1] // s, frames[0].shape[0] // s)
        lr, cam = [cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in frames], {"codec": "none"}
    else:
        lr, cam = simulate_clean(frames, s, work)
    tag = f"{clip.stem}_d{s}_{condition}"
    lr_dir = work / f"{tag}_lr"
    lr_dir.mkdir()
    for i, f in enumerate(lr):
        cv2.imwrite(str(lr_dir / f"{i:06d}.png"), f)
    out_dir = work / f"{tag}_loop"
    stats = run_loop(lr_dir, out_dir, args.loop_args, args.threads)
    outs = sorted(out_dir.glob("*.png"))
    n = min(len(frames), len(outs))
    hr_hw = frames[0].shape[:2]
    sc = {"plain": [], "loop": []}
    iods, crops = [], []
    for i in range(n):
        if not boxes[i]:
            continue
        out = cv2.imread(str(outs[i]))
        chw = out.shape[:2]
        plain = cv2.resize(lr[i], (chw[1], chw[0]), interpolation=cv2.INTER_CUBIC)  # = --backend bicubic
        hw = compare_size(chw, hr_hw)
        ref, o, pl = _to(frames[i], hw), _to(out, hw), _to(plain, hw)
        ky, kx = hw[0] / hr_hw[0], hw[1] / hr_hw[1]
        for (x1, y1, x2, y2), iod in boxes[i]:
            X1, Y1, X2, Y2 = int(round(x1 * kx)), int(round(y1 * ky)), int(round(x2 * kx)), int(round(y2 * ky))
            if X2 - X1 < 8 or Y2 - Y1 < 8:
                continue
            iods.append(iod / s)
            r = ref[Y1:Y2, X1:X2][..., ::-1]
            sc["plain"].append(psnr(pl[Y1:Y2, X1:X2][..., ::-1], r))
            sc["loop"].append(psnr(o[Y1:Y2, X1:X2][..., ::-1], r))
            if len(crops) < args.figure_faces and i % max(1, n // args.figure_faces) == 0:
                crops.append([cv2.resize(x[Y1:Y2, X1:X2], (128, 128), interpolation=cv2.INTER_AREA)
                              for x in (pl, o, ref)])
    if not sc["plain"]:
        return {}
    row = {"clip": clip.name, "scale": s, "condition": condition, "frames": n, "faces": len(sc["plain"]),
           "degradation": cam, "lr_iod_median": float(np.median(iods)), "frame_size": list(frames[0].shape[1::-1]),
           "lr_size": list(lr[0].shape[1::-1]), "canvas_size": stats.get("canvas_size"),
           "psnr_plain": float(np.mean(sc["plain"])), "psnr_loop": float(np.mean(sc["loop"])),
           "faces_by_engine": (stats.get("faces_per_frame") or {}).get("by_engine"), "loop_fps": stats.get("fps")}
    row["gain_db"] = row["psnr_loop"] - row["psnr_plain"]
    row["_crops"] = crops
    return row


FIT_IOD = (3.8, 15.2)  # LR eye distances where faces fit the x8 / x4 templates (5.4 / 10.75 px, within 1.4x)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clips", nargs="*", default=None, help="video files (default: every ../shared/video/*.mp4)")
    p.add_argument("--max-clips", type=int, default=17)
    p.add_argument("--frames", type=int, default=24, help="frames per clip")
    p.add_argument("--scales", type=int, nargs="+", default=[2, 4, 8, 12], help="camera downscale factors")
    p.add_argument("--conditions", nargs="+", choices=("clean", "camera", "lossless"),
                   default=["clean", "camera"], help="lossless = area ÷s only (a diagnostic)")
    p.add_argument("--loop-args", default="", help="extra webcam arguments (default: none, the default loop)")
    p.add_argument("--min-iod", type=float, default=20.0,
                   help="faces with eyes at least this far apart in the original")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--figure-faces", type=int, default=3, help="face crops per scale and condition in the figure")
    p.add_argument("--out", default="reports/video_quality")
    args = p.parse_args(argv)
    args.loop_args = args.loop_args.split()
    clips = [Path(c) for c in args.clips] if args.clips else sorted(SHARED_VIDEO.glob("*.mp4"))[: args.max_clips]
    if not clips:
        print(f"error: no clips (looked in {SHARED_VIDEO}); pass --clips", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    detector = load_detector(threads=args.threads, max_side=None)
    rows, t0 = [], time.time()
    figure: dict[str, list] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for clip in clips:
            frames = read_clip(clip, args.frames, 48)
            if len(frames) < 2:
                continue
            boxes = [face_boxes(detector, f, args.min_iod) for f in frames]
            for s in args.scales:
                for cond in args.conditions:
                    rng = np.random.default_rng([args.seed, s, sum(map(ord, clip.stem))])
                    row = evaluate_clip(clip, frames, boxes, s, cond, args, rng, Path(tmp))
                    if not row:
                        continue
                    figure.setdefault(f"d{s}_{cond}", []).extend(row.pop("_crops"))
                    rows.append(row)
                    print(f"÷{s} {cond:6s} {clip.name}: {row['faces']} faces, LR eyes {row['lr_iod_median']:.1f} px, "
                          f"plain {row['psnr_plain']:.2f} dB, loop {row['psnr_loop']:.2f} dB ({row['gain_db']:+.2f})",
                          flush=True)
    for key, crops in figure.items():
        if crops:
            grid = np.concatenate([np.concatenate(c, axis=1) for c in crops[: args.figure_faces]], axis=0)
            cv2.imwrite(str(out / f"frames_{key}.png"), grid)
    summary = {}
    for s in args.scales:
        for cond in args.conditions:
            r = [x for x in rows if x["scale"] == s and x["condition"] == cond]
            if r:
                summary[f"d{s}_{cond}"] = {"clips": len(r), "mean_gain_db": float(np.mean([x["gain_db"] for x in r])),
                                           "min_gain_db": float(min(x["gain_db"] for x in r)),
                                           "worst_clip": min(r, key=lambda x: x["gain_db"])["clip"]}
    for cond in args.conditions:
        fit = [x for x in rows if x["condition"] == cond and FIT_IOD[0] <= x["lr_iod_median"] <= FIT_IOD[1]]
        if fit:
            summary[f"fit_{cond}"] = {"pairs": len(fit), "mean_gain_db": float(np.mean([x["gain_db"] for x in fit]))}
    worst = min(rows, key=lambda x: x["gain_db"]) if rows else None
    report = {"command": " ".join([Path(sys.argv[0]).name] + (argv if argv is not None else sys.argv[1:])),
              "wall_s": round(time.time() - t0, 1), "fit_lr_iod": FIT_IOD, "summary": summary,
              "worst_pair": None if worst is None else {k: worst[k] for k in ("clip", "scale", "condition", "gain_db")},
              "rows": rows}
    (out / "video_quality.json").write_text(json.dumps(report, indent=2))
    lines = ["| clip | ÷ | condition | LR eyes (px) | faces | plain upscale (dB) | loop (dB) | gain |",
             "|---|---|---|---|---|---|---|---|"]
    for x in rows:
        lines.append(f"| {x['clip']} | {x['scale']} | {x['condition']} | {x['lr_iod_median']:.1f} | {x['faces']} | "
                     f"{x['psnr_plain']:.2f} | {x['psnr_loop']:.2f} | {x['gain_db']:+.2f} |")
    lines += ["", "| ÷ and condition | clips | mean gain | worst clip |", "|---|---|---|---|"]
    for k, v in summary.items():
        if "clips" in v:
            lines.append(f"| {k} | {v['clips']} | {v['mean_gain_db']:+.2f} | "
                         f"{v['min_gain_db']:+.2f} ({v['worst_clip']}) |")
        else:
            lines.append(f"| {k}: LR eyes {FIT_IOD[0]:g}–{FIT_IOD[1]:g} px | {v['pairs']} pairs | "
                         f"{v['mean_gain_db']:+.2f} | |")
    (out / "video_quality.md").write_text("Face-region Y-PSNR of the default loop and of the plain bicubic upscale of "
                                          "the whole frame (same canvas) vs the original frames; figure columns: plain "
                                          "upscale | loop | original.\n\n" + "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PKDN_QUIET", "1")
    sys.exit(main())
