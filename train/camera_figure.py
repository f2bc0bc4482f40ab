"""A figure of camera-degradation examples: per face, rows ×4 and ×8 of ``HR | clean LR | draws``.

    python -m pkdn_edge.train.camera_figure --faces DIR --out PNG [--preset v1|wide] [--draws 5]

(The command was ``python -m pkdn_edge.train.camera`` before the figure moved out of ``camera.py``.)
"""

from __future__ import annotations

import cv2
import numpy as np

from pkdn_edge.errors import PKDNError

from .camera import CAMERA_PRESETS, CameraDegradation
from .degradations import bicubic_down


def example_figure(hr: np.ndarray, draws: int = 5, seed: int = 0, preset: str = "v1") -> np.ndarray:
    """One RGB figure per HR face (128×128): row ×4 and row ×8, each ``HR | clean LR | draws`` of the
    training degradation ``preset`` (without clean pairs), LR shown with nearest-neighbour ↑s."""
    deg = CameraDegradation.from_dict({"preset": preset, "p_clean": 0.0})
    rows = []
    for face_i, face in enumerate(hr):
        for s in (4, 8):
            rng = np.random.default_rng([seed, face_i, s])
            tiles = [face, bicubic_down(face, s)] + [deg(face, s, rng) for _ in range(draws)]
            up = [t if t.shape[0] == face.shape[0]
                  else cv2.resize(t, face.shape[1::-1], interpolation=cv2.INTER_NEAREST) for t in tiles]
            rows.append(np.concatenate([np.pad(t, ((2, 2), (2, 2), (0, 0)), constant_values=255) for t in up], axis=1))
    return np.concatenate(rows, axis=0)


def main(argv: list[str] | None = None) -> int:
    from pkdn_edge.errors import CLIParser, run_cli

    p = CLIParser(prog="python -m pkdn_edge.train.camera_figure",
                  description="Write a figure of camera-degradation examples (HR | clean LR | draws, ×4 and ×8).")
    p.add_argument("--faces", required=True, help="folder of aligned 128×128 faces (e.g. pkdn-prepare output)")
    p.add_argument("--out", required=True, help="PNG to write")
    p.add_argument("--max-faces", type=int, default=2)
    p.add_argument("--draws", type=int, default=5)
    p.add_argument("--preset", choices=sorted(CAMERA_PRESETS), default="v1",
                   help="camera model: v1 (the defaults the shipped students were trained on) or wide")

    def body() -> int:
        from pathlib import Path

        args = p.parse_args(argv)  # inside run_cli: a usage error is one line
        files = sorted(f for f in Path(args.faces).glob("*") if f.suffix.lower() in (".png", ".jpg", ".jpeg"))
        faces = [cv2.imread(str(f)) for f in files[: args.max_faces]]
        if not faces or any(f is None or f.shape[:2] != (128, 128) for f in faces):
            raise PKDNError(f"{args.faces}: expected readable aligned 128×128 faces (pkdn-prepare output)")
        hr = np.stack([f[..., ::-1] for f in faces])
        fig = example_figure(hr, args.draws, preset=args.preset)
        if not cv2.imwrite(args.out, fig[..., ::-1]):
            raise PKDNError(f"could not write {args.out}")
        print(f"wrote {args.out}: per face, rows ×4 and ×8: HR | PIL-bicubic LR | {args.draws} camera draws "
              f"({args.preset})")
        return 0

    return run_cli(body)


if __name__ == "__main__":
    raise SystemExit(main())
