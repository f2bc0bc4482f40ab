"""Face-region quality of the webcam loop on simulated low-resolution camera video, with ground truth.

For each clip of ``../shared/video`` (or ``--clips``):

1. **Simulate a low-resolution camera** from the original frames (cropped to a multiple of 2·s):
   optics blur (σ in LR pixels, one per clip), area resampling ÷s, shot + read sensor noise (new
   noise every frame, strength one per clip), then the whole LR sequence through H.264 (libx264,
   PyAV, one CRF per clip, real P-frames). Every setting is drawn from ``--seed``.
2. **Run the loop** (``python -m pkdn_edge.webcam --view output --canvas full``) on those LR frames,
   once per backend (the default model, and ``--backend bicubic``), writing PNG frames.
3. **Measure** Y-PSNR of the loop output against the original frame inside each face box that the
   detector finds in the *original* frame (faces with eyes >= ``--min-iod`` px apart there).

Writes ``video_quality.json`` / ``.md`` and ``frames_x{s}.png`` (bicubic | model | original face
crops of a few frames) under ``--out``. It is a benchmark script, not a test; figures made from
``../shared`` clips stay local (never commit them: shared data may not be redistributed).

    python benchmarks/video_quality.py --frames 48 --scales 4 8 --out reports/video_quality
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
        x = x + rng.standard_normal(x.shape).astype(np.float32) * np.sqrt(cam["shot_gain"] * np.clip(x, 0, 255) + cam["read_sigma"] ** 2)
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


def run_loop(lr_dir: Path, out_dir: Path, s: int, backend: str | None, threads: int) -> dict:
    """The webcam loop on a folder of LR frames → PNG output frames in ``out_dir``; its stats."""
    stats = out_dir.with_suffix(".json")
    cmd = [sys.executable, "-m", "pkdn_edge.webcam", "--source", str(lr_dir), "--scale", str(s), "--view", "output",
           "--canvas", "full", "--output", str(out_dir), "--headless", "--no-overlay", "--stats-json", str(stats),
           "--threads", str(threads)]
    if backend:
        cmd += ["--backend", backend]
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


def evaluate_clip(clip: Path, s: int, backends: dict[str, str | None], args, rng, detector, work: Path) -> dict:
    frames = read_clip(clip, args.frames, 2 * s)
    if len(frames) < 2:
        return {}
    lr, cam = simulate_camera(frames, s, rng)
    lr_dir = work / f"{clip.stem}_x{s}_lr"
    lr_dir.mkdir()
    for i, f in enumerate(lr):
        cv2.imwrite(str(lr_dir / f"{i:06d}.png"), f)
    outs, loop_stats = {}, {}
    for name, backend in backends.items():
        out_dir = work / f"{clip.stem}_x{s}_{name}"
        loop_stats[name] = run_loop(lr_dir, out_dir, s, backend, args.threads)
        outs[name] = sorted(out_dir.glob("*.png"))
    n = min(len(frames), *(len(v) for v in outs.values()))
    scores: dict[str, list[float]] = {k: [] for k in backends}
    iods: list[float] = []
    crops = []
    for i in range(n):
        boxes = face_boxes(detector, frames[i], args.min_iod)
        if not boxes:
            continue
        imgs = {k: cv2.imread(str(outs[k][i])) for k in backends}
        for k, img in imgs.items():
            if img is None or img.shape != frames[i].shape:
                raise RuntimeError(f"{outs[k][i]}: output frame {None if img is None else img.shape} is not {frames[i].shape}")
        for (x1, y1, x2, y2), iod in boxes:
            iods.append(iod / s)
            ref = frames[i][y1:y2, x1:x2][..., ::-1]
            for k, img in imgs.items():
                scores[k].append(psnr(img[y1:y2, x1:x2][..., ::-1], ref))
            if len(crops) < args.figure_faces and i % max(1, n // args.figure_faces) == 0:
                crops.append([cv2.resize(imgs[k][y1:y2, x1:x2], (128, 128), interpolation=cv2.INTER_AREA) for k in backends]
                             + [cv2.resize(frames[i][y1:y2, x1:x2], (128, 128), interpolation=cv2.INTER_AREA)])
    if not scores["bicubic"]:
        return {}
    row = {"clip": clip.name, "scale": s, "frames": n, "faces": len(scores["bicubic"]), "camera": cam,
           "lr_iod_median": float(np.median(iods)),
           "frame_size": list(frames[0].shape[1::-1]), "lr_size": list(lr[0].shape[1::-1]),
           **{f"psnr_{k}": float(np.mean(v)) for k, v in scores.items()},
           "loop_fps": {k: v.get("fps") for k, v in loop_stats.items()}}
    row["gain_db"] = row["psnr_model"] - row["psnr_bicubic"]
    row["_crops"] = crops
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clips", nargs="*", default=None, help="video files (default: every ../shared/video/*.mp4)")
    p.add_argument("--max-clips", type=int, default=8)
    p.add_argument("--frames", type=int, default=48, help="frames per clip")
    p.add_argument("--scales", type=int, nargs="+", default=[4, 8])
    p.add_argument("--backend", default=None, help="backend of the model run (default: the loop's auto choice)")
    p.add_argument("--min-iod", type=float, default=20.0, help="faces with eyes at least this far apart in the original")
    p.add_argument("--max-face-iod", type=float, default=43.0,
                   help="the loop's --max-face-iod: clips whose LR faces have eyes further apart keep bicubic by design; "
                        "the summary also gives the mean over the other clips")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--figure-faces", type=int, default=4, help="face crops per scale in the figure")
    p.add_argument("--out", default="reports/video_quality")
    args = p.parse_args(argv)
    clips = [Path(c) for c in args.clips] if args.clips else sorted(SHARED_VIDEO.glob("*.mp4"))[: args.max_clips]
    if not clips:
        print(f"error: no clips (looked in {SHARED_VIDEO}); pass --clips", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    detector = load_detector(threads=args.threads, max_side=None)
    backends = {"bicubic": "bicubic", "model": args.backend}
    rows, t0 = [], time.time()
    with tempfile.TemporaryDirectory() as tmp:
        for s in args.scales:
            rng = np.random.default_rng([args.seed, s])
            crops = []
            for clip in clips:
                row = evaluate_clip(clip, s, backends, args, rng, detector, Path(tmp))
                if row:
                    crops += row.pop("_crops")
                    rows.append(row)
                    print(f"x{s} {clip.name}: {row['faces']} faces, bicubic {row['psnr_bicubic']:.2f} dB, "
                          f"model {row['psnr_model']:.2f} dB ({row['gain_db']:+.2f})", flush=True)
            if crops:
                grid = np.concatenate([np.concatenate(c, axis=1) for c in crops[: args.figure_faces]], axis=0)
                cv2.imwrite(str(out / f"frames_x{s}.png"), grid)
    summary = {}
    for s in args.scales:
        r = [x for x in rows if x["scale"] == s]
        if r:
            summary[f"x{s}"] = {"clips": len(r), "faces": sum(x["faces"] for x in r),
                                "mean_gain_db": float(np.mean([x["gain_db"] for x in r])),
                                "mean_psnr_bicubic": float(np.mean([x["psnr_bicubic"] for x in r])),
                                "mean_psnr_model": float(np.mean([x["psnr_model"] for x in r]))}
            # the loop keeps bicubic for faces larger than its SR output (--max-face-iod, 43 px in the LR frame)
            sr = [x for x in r if x["lr_iod_median"] <= args.max_face_iod]
            if sr:
                summary[f"x{s}"].update(sr_range_clips=len(sr), sr_range_mean_gain_db=float(np.mean([x["gain_db"] for x in sr])))
    report = {"command": " ".join([Path(sys.argv[0]).name] + (argv if argv is not None else sys.argv[1:])),
              "wall_s": round(time.time() - t0, 1), "summary": summary, "rows": rows}
    (out / "video_quality.json").write_text(json.dumps(report, indent=2))
    lines = ["| scale | clip | frame → LR | LR eyes (px) | faces | bicubic (dB) | model (dB) | gain |",
             "|---|---|---|---|---|---|---|---|"]
    for x in rows:
        lines.append(f"| ×{x['scale']} | {x['clip']} | {x['frame_size'][0]}×{x['frame_size'][1]} → {x['lr_size'][0]}×"
                     f"{x['lr_size'][1]} | {x['lr_iod_median']:.1f} | {x['faces']} | {x['psnr_bicubic']:.2f} | "
                     f"{x['psnr_model']:.2f} | {x['gain_db']:+.2f} |")
    for k, v in summary.items():
        lines.append(f"| **{k}** | mean of {v['clips']} clips | | | {v['faces']} | {v['mean_psnr_bicubic']:.2f} | "
                     f"{v['mean_psnr_model']:.2f} | **{v['mean_gain_db']:+.2f}** |")
        if "sr_range_clips" in v:
            lines.append(f"| **{k}** | mean of the {v['sr_range_clips']} clips with LR eyes ≤ {args.max_face_iod:g} px | | | | | | "
                         f"**{v['sr_range_mean_gain_db']:+.2f}** |")
    (out / "video_quality.md").write_text("Face-region Y-PSNR of the loop output vs the original frames "
                                          "(figure columns: bicubic | model | original).\n\n" + "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PKDN_QUIET", "1")
    sys.exit(main())
