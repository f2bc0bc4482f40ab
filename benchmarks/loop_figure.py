"""Figure: what the user sees without pkdn-edge (the frame upscaled plainly) | the default loop | the
original, on the public-domain demo face (so the figure may be committed).

The demo photo (eyes 44 px apart) is the original; a low-resolution camera frame is made from it at each
``--downscales`` factor (``clean``: area; ``camera``: blur, area, noise, JPEG, as
``benchmarks/loop_fidelity.py``), the default loop (the project's detector, ``--scale auto`` engines,
the default model selection) runs on a short still sequence of it, and the face region of the last
frame is cropped from the plain bicubic upscale, the loop output (same canvas) and the original brought
to that canvas. Each tile is labelled with its face-region Y-PSNR.

    python benchmarks/loop_figure.py --out docs/figures/loop_vs_plain.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from loop_fidelity import degrade, ypsnr  # noqa: E402

from pkdn_edge.engines.select import build_engine  # noqa: E402
from pkdn_edge.pipeline import FacePipeline  # noqa: E402
from pkdn_edge.sources.demo import load_demo_face  # noqa: E402
from pkdn_edge.webcam import _small_faces, build_detector  # noqa: E402

TILE = 192


def _label(img: np.ndarray, text: str) -> None:
    cv2.putText(img, text, (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(img, text, (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)


def row(hr: np.ndarray, lm_hr: np.ndarray, k: int, condition: str, pipe: FacePipeline) -> tuple[np.ndarray, dict]:
    """One figure row (plain | loop | original) for the camera ÷``k`` under ``condition``."""
    h, w = hr.shape[:2]
    hr = hr[: h - h % k, : w - w % k]
    lr = degrade(hr, k, condition, np.random.default_rng(k))
    pipe.reset()
    for i in range(6):  # a few frames: detection, then tracking, as in the loop
        res = pipe.process(lr, i / 30)
    out = res.canvas
    plain = cv2.resize(lr, (out.shape[1], out.shape[0]), interpolation=cv2.INTER_CUBIC)
    ref = cv2.resize(hr, (out.shape[1], out.shape[0]), interpolation=cv2.INTER_AREA)
    c = out.shape[1] / hr.shape[1]
    iod = float(np.hypot(*(lm_hr[1] - lm_hr[0]))) * c
    cx, cy = lm_hr[:, 0].mean() * c, lm_hr[:, 1].mean() * c
    x1, y1 = int(round(cx - 1.2 * iod)), int(round(cy - 1.5 * iod))
    x2, y2 = int(round(cx + 1.2 * iod)), int(round(cy + 1.3 * iod))
    tiles, scores = [], {}
    for name, img in (("plain upscale", plain), ("pkdn-edge loop", out), ("original", ref)):
        crop = img[y1:y2, x1:x2]
        scores[name] = ypsnr(crop, ref[y1:y2, x1:x2]) if name != "original" else None
        t = cv2.resize(crop, (TILE, TILE), interpolation=cv2.INTER_NEAREST if crop.shape[0] < TILE else cv2.INTER_AREA)
        _label(t, name if scores[name] is None else f"{name} {scores[name]:.1f} dB")
        tiles.append(t)
    faces = [f"x{f.engine_scale}" if f.engine_scale else "plain" for f in res.faces]
    head = np.zeros((22, TILE * 3, 3), np.uint8)
    _label(head, f"camera 1/{k} ({condition}), eyes {iod / c / k:.1f} px in the frame, "
                 f"faces: {', '.join(faces) or '-'}")
    return np.concatenate([head, np.concatenate(tiles, axis=1)], axis=0), scores


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--downscales", type=int, nargs="+", default=[4, 6, 8])
    p.add_argument("--conditions", nargs="+", default=["clean", "camera"], choices=("clean", "camera"))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="docs/figures/loop_vs_plain.png")
    args = p.parse_args(argv)
    demo = load_demo_face()
    def log(m):
        print(m, file=sys.stderr)

    engines = {s: build_engine("auto", s, threads=args.threads, log=log) for s in (4, 8)}
    pipe = FacePipeline(engines, _small_faces(build_detector(args.threads), 5.0), detect_every=1)
    rows = []
    for k in args.downscales:
        for cond in args.conditions:
            r, scores = row(demo.image, demo.landmarks, k, cond, pipe)
            rows.append(r)
            print(f"÷{k} {cond}: " + ", ".join(f"{n} {v:.2f} dB" for n, v in scores.items() if v is not None))
    fig = np.concatenate(rows, axis=0)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(args.out, fig):
        print(f"error: could not write {args.out}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
