"""A grid of real low-quality faces (no ground truth) through several students, for checking by eye.

The faces (``../shared/faces/lq_real``: old photos and degraded web faces) are aligned to the
project's 128×128 template with ``pkdn-prepare``; the model input is that crop shrunk ÷s with
``INTER_AREA`` (a small face of a real low-quality photo: its own blur, noise and JPEG blocks stay).
Columns: LR (nearest ↑s) | bicubic ↑s | one column per checkpoint. Look for amplified blocks or
noise ("cracked" skin, hair, eyes). The grid stays local (shared data may not be redistributed).

    python benchmarks/lq_real_grid.py --weights pkdn_edge/weights/pkdn_edge_x4_paper.pt \
        pkdn_edge/weights/pkdn_edge_x4.pt --scale 4 --out reports/lq_real
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
import torch

from pkdn_edge.models.checkpoint import load_model
from pkdn_edge.train.data import FaceData, to_tensor, to_uint8
from pkdn_edge.train.degradations import bicubic_up
from pkdn_edge.train.evaluate import make_grid

SHARED_LQ = Path(__file__).resolve().parent.parent.parent / "shared" / "faces" / "lq_real"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--faces", default=str(SHARED_LQ), help="folder of real low-quality face photos")
    p.add_argument("--weights", nargs="+", required=True, help="student checkpoints of one scale")
    p.add_argument("--scale", type=int, default=4)
    p.add_argument("--rows", type=int, default=12, help="faces per grid image")
    p.add_argument("--out", default="reports/lq_real")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        r = subprocess.run([sys.executable, "-m", "pkdn_edge.face.prepare", args.faces, tmp],
                           capture_output=True, text=True)
        if r.returncode not in (0, 1):
            print(f"error: pkdn-prepare failed: {r.stderr.strip()[-500:]}", file=sys.stderr)
            return 2
        hr = FaceData.load(tmp, recursive=False).hr
    s = args.scale
    lr = np.stack([cv2.resize(x, (x.shape[1] // s, x.shape[0] // s), interpolation=cv2.INTER_AREA) for x in hr])
    cols = {f"LR x{s}": np.stack([cv2.resize(x, hr.shape[2:0:-1], interpolation=cv2.INTER_NEAREST) for x in lr]),
            "bicubic": np.stack([bicubic_up(x, s) for x in lr])}
    for w in args.weights:
        model, _ = load_model(w)
        if model.cfg.scale != s:
            print(f"error: {w} is a x{model.cfg.scale} model, not x{s}", file=sys.stderr)
            return 2
        with torch.no_grad():
            cols[Path(w).stem] = np.concatenate([to_uint8(model(to_tensor(lr[i : i + 32])))
                                                 for i in range(0, len(lr), 32)])
    for k in range(0, len(hr), args.rows):
        path = out / f"lq_real_x{s}_{k // args.rows}.png"
        cv2.imwrite(str(path), make_grid({c: v[k : k + args.rows] for c, v in cols.items()}, args.rows)[..., ::-1])
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
