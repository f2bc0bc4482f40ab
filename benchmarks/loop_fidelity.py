"""Loop fidelity: how much of the model's face-level gain the webcam loop delivers to the screen.

Every eval face (``../shared/faces/eval``, 128x128 aligned HR, or ``--faces``) is rendered into an HR
frame at a known position with a sub-pixel offset (an integer HR shift that is a fraction of an LR
pixel), the frame is taken down to a low-resolution camera frame (``clean``: area ÷s; ``camera``: optics
blur, area ÷s, shot + read noise, JPEG, every setting drawn from the seed), and the frame goes through
:class:`pkdn_edge.pipeline.FacePipeline` with the face's true landmarks. Each row is one change to the
loop, cumulative from the issue-28 loop to today's default, and reports the face-region Y-PSNR gain
over the **whole LR frame upscaled bicubically** (what the user would otherwise see):

* ``face level``: the model on the protocol LR (area ÷s of the aligned HR face) vs bicubic of that LR,
  measured in the same face region: what the model can give;
* ``template crop, 32 window, bilinear paste``: the loop before issue 28 (similarity warp onto the
  template, bilinear paste warp);
* ``native crop``: the face cut out at the frame's own pixels (integer window, no resampling);
* ``bicubic paste``: the paste warp's kernel;
* ``1.25x window``: a 1.25x input window (40x40 at x4: the default loop; x8 is served on its 16x16 crop);
* ``+ landmark jitter``: detector-like noise on the landmarks (``--jitter`` x the eye distance);
* ``canvas 1/2``: a display-limited canvas at half the engine scale (compared at that size).

The model is the shipped student's checkpoint on the ``torch`` backend (any window: ``window=``), so
this needs the ``train`` extra. The rendering (:func:`render_scene`) is deterministic (a test pins it).

    python benchmarks/loop_fidelity.py --scales 4 8 --out reports/loop_fidelity
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from pkdn_edge.face.align import TEMPLATE_128
from pkdn_edge.face.detector import Face
from pkdn_edge.pipeline import FacePipeline

ROOT = Path(__file__).resolve().parent.parent
SHARED_EVAL = ROOT.parent / "shared" / "faces" / "eval"
PAD = 64  # HR px of background around the face (mirrored face)
REGION = (21, 24, 107, 111)  # face region (x1, y1, x2, y2) in the 128x128 aligned face: brows to chin


@dataclass
class Scene:
    """One rendered face: the HR frame, the LR camera frame, the true LR landmarks, the HR face region."""

    hr: np.ndarray
    lr: np.ndarray
    landmarks: np.ndarray  # (5, 2) LR frame px
    region: tuple[int, int, int, int]  # HR frame px
    protocol_lr: np.ndarray  # area ÷s of the aligned HR face (the face-level protocol)


def degrade(hr: np.ndarray, s: int, condition: str, rng: np.random.Generator) -> np.ndarray:
    """HR BGR uint8 frame -> LR camera frame (÷s). ``clean``: area. ``camera``: blur (σ 0.3-0.8 LR px),
    area, shot + read noise, JPEG q 60-90."""
    size = (hr.shape[1] // s, hr.shape[0] // s)
    if condition == "clean":
        return cv2.resize(hr, size, interpolation=cv2.INTER_AREA)
    x = cv2.GaussianBlur(hr.astype(np.float32), (0, 0), float(rng.uniform(0.3, 0.8)) * s)
    x = cv2.resize(x, size, interpolation=cv2.INTER_AREA)
    gain, read = float(rng.uniform(0.02, 0.12)), float(rng.uniform(1.0, 3.0))
    x = x + rng.standard_normal(x.shape).astype(np.float32) * np.sqrt(gain * np.clip(x, 0, 255) + read ** 2)
    x = np.clip(x + 0.5, 0, 255).astype(np.uint8)
    ok, buf = cv2.imencode(".jpg", x, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(60, 91))])
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)


def render_scene(face: np.ndarray, s: int, condition: str, seed: int) -> Scene:
    """Render a 128x128 aligned HR ``face`` into a (128 + 2 PAD)^2 HR frame shifted by a seeded sub-LR-pixel
    offset, and take it down to the LR camera frame. Deterministic in (face, s, condition, seed)."""
    rng = np.random.default_rng(seed)
    dx, dy = (int(v) for v in rng.integers(0, s, 2))  # HR px: an LR sub-pixel phase of dx/s, dy/s
    big = cv2.copyMakeBorder(face, PAD + s, PAD + s, PAD + s, PAD + s, cv2.BORDER_REFLECT_101)
    side = 128 + 2 * PAD
    hr = np.ascontiguousarray(big[s - dy : s - dy + side, s - dx : s - dx + side])
    ox, oy = PAD + dx, PAD + dy  # the face's top-left corner in the HR frame
    lr = degrade(hr, s, condition, rng)
    lm = (TEMPLATE_128 + [ox, oy] + 0.5) / s - 0.5
    x1, y1, x2, y2 = REGION
    prot = degrade(face, s, condition, np.random.default_rng(seed))  # same draws, on the aligned face
    return Scene(hr, lr, lm, (ox + x1, oy + y1, ox + x2, oy + y2), prot)


def ypsnr(a: np.ndarray, b: np.ndarray) -> float:
    ya = cv2.cvtColor(a, cv2.COLOR_BGR2YCrCb)[..., 0].astype(np.float64)
    yb = cv2.cvtColor(b, cv2.COLOR_BGR2YCrCb)[..., 0].astype(np.float64)
    return float(10 * np.log10(255.0 ** 2 / max(np.mean((ya - yb) ** 2), 1e-10)))


STEPS = [  # (name, pipeline settings, window factor, jitter, canvas fraction)
    ("template crop, 32 window, bilinear paste (before)", dict(align="template", paste="linear"), 1.0, False, 1.0),
    ("native crop", dict(align="native", paste="linear"), 1.0, False, 1.0),
    ("+ bicubic paste", dict(align="native", paste="cubic"), 1.0, False, 1.0),
    ("+ 1.25x window (x4 default)", dict(align="native", paste="cubic"), 1.25, False, 1.0),
    ("+ landmark jitter", dict(align="native", paste="cubic"), "serve", True, 1.0),
    ("+ canvas at half the scale", dict(align="native", paste="cubic"), "serve", True, 0.5),
]


def run_loop(scene: Scene, engine, settings: dict, jitter: float, canvas_frac: float, rng) -> tuple[float, float]:
    """(loop PSNR, plain-upscale PSNR) in the face region, compared at the canvas size."""
    s = engine.scale
    h, w = scene.lr.shape[:2]
    cw, ch = int(round(w * s * canvas_frac)), int(round(h * s * canvas_frac))
    lm = scene.landmarks + (rng.normal(0, jitter * 43.0 / s, (5, 2)) if jitter else 0)  # σ: jitter x the eye distance
    p = FacePipeline(engine, None, smoothing=False, canvas=(cw, ch) if canvas_frac < 1 else None,
                     max_face_iod=0, **settings)
    box = np.array([*lm.min(0) - 4, *lm.max(0) + 4], np.float32)
    out = p.process(scene.lr, 0.0, detections=[Face(box, 0.99, lm.astype(np.float32))]).canvas
    plain = cv2.resize(scene.lr, (out.shape[1], out.shape[0]), interpolation=cv2.INTER_CUBIC)
    ref = scene.hr if out.shape[:2] == scene.hr.shape[:2] else \
        cv2.resize(scene.hr, (out.shape[1], out.shape[0]), interpolation=cv2.INTER_AREA)
    k = out.shape[1] / scene.hr.shape[1]
    x1, y1, x2, y2 = (int(round(v * k)) for v in scene.region)
    return ypsnr(out[y1:y2, x1:x2], ref[y1:y2, x1:x2]), ypsnr(plain[y1:y2, x1:x2], ref[y1:y2, x1:x2])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--faces", default=str(SHARED_EVAL), help="folder of 128x128 aligned HR faces")
    p.add_argument("--scales", type=int, nargs="+", default=[4, 8])
    p.add_argument("--conditions", nargs="+", default=["clean", "camera"], choices=("clean", "camera"))
    p.add_argument("--jitter", type=float, default=0.03, help="landmark noise, x the eye distance")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="reports/loop_fidelity")
    args = p.parse_args(argv)
    from pkdn_edge.engines import load_engine
    from pkdn_edge.pretrained import pretrained_path, serve_window

    files = sorted(Path(args.faces).glob("*.png"))
    if not files:
        print(f"error: no faces in {args.faces}", file=sys.stderr)
        return 2
    faces = [cv2.imread(str(f)) for f in files]
    t0 = time.time()
    rows = []
    for s in args.scales:
        ckpt = pretrained_path(s)
        engines = {f: load_engine(ckpt, backend="torch", threads=1, window=int(round(128 // s * f)))
                   for f in (1.0, 1.25)}
        engines["serve"] = load_engine(ckpt, backend="torch", threads=1, window=serve_window(s))  # the default loop's
        for cond in args.conditions:
            res: dict[str, list[float]] = {"face level": []}
            plain_all: dict[str, list[float]] = {}
            for i, face in enumerate(faces):
                sc = render_scene(face, s, cond, args.seed * 100003 + i)
                sr = engines[1.0].run(sc.protocol_lr[None])[0]
                bic = cv2.resize(sc.protocol_lr, (128, 128), interpolation=cv2.INTER_CUBIC)
                x1, y1, x2, y2 = REGION
                res["face level"].append(ypsnr(sr[y1:y2, x1:x2], face[y1:y2, x1:x2])
                                         - ypsnr(bic[y1:y2, x1:x2], face[y1:y2, x1:x2]))
                for name, settings, wf, jit, cf in STEPS:
                    rng = np.random.default_rng([args.seed, i, s])
                    lp, pp = run_loop(sc, engines[wf], settings, args.jitter if jit else 0.0, cf, rng)
                    res.setdefault(name, []).append(lp - pp)
                    plain_all.setdefault(name, []).append(pp)
            ref = float(np.mean(res["face level"]))
            for name, v in res.items():
                g = float(np.mean(v))
                rows.append({"scale": s, "condition": cond, "step": name, "gain_db": g,
                             "kept": g / ref if ref else None, "faces": len(v)})
                print(f"x{s} {cond:6s} {name:50s} {g:+.2f} dB ({100 * g / ref:.0f} % of face level)", flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cmd = " ".join([Path(sys.argv[0]).name] + (argv if argv is not None else sys.argv[1:]))
    (out / "loop_fidelity.json").write_text(json.dumps({"command": cmd, "wall_s": round(time.time() - t0, 1),
                                                          "rows": rows}, indent=2) + "\n")
    lines = ["| scale | condition | step | gain over the plain frame upscale | of the face-level gain |",
             "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| ×{r['scale']} | {r['condition']} | {r['step']} | {r['gain_db']:+.2f} dB | "
                     f"{100 * r['kept']:.0f} % |")
    (out / "loop_fidelity.md").write_text(f"`{cmd}` ({len(faces)} faces, {time.strftime('%Y-%m-%d')})\n\n"
                                          + "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
