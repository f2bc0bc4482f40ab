"""Per-region IoU of the landmark parsing prior against the labelled eval faces.

    python -m pkdn_edge.train.eval_priors [--faces DIR] [--out FILE.md]

``DIR`` is ``../shared/faces`` (default) or its ``eval/`` folder. Each label map
``eval/parsing/<name>.png`` (CelebAMask-HQ 19 classes, warped like the crops) is mapped with
:func:`~pkdn_edge.train.priors.celebamask_to_regions` and compared with the argmax of the landmark
prior of ``eval/<name>.png``. A baseline is reported next to it: the same polygons drawn from the
*mean* 68-point shape of training crops (``DIR/train``; no per-face information at all). Nothing
is fitted on eval: this only measures.
"""

from __future__ import annotations

import random
import sys
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from pkdn_edge.errors import CLIParser, PKDNError, run_cli

from .priors import (
    FACIAL_REGIONS,
    HAIR_OR_OTHER,
    REGIONS,
    LandmarkPrior,
    celebamask_to_labels,
    rasterize_regions,
    soften,
)

DEFAULT_FACES = Path(__file__).resolve().parents[1].parent / "shared" / "faces"
SUBSETS = ("camhq_maskgan", "camhq_parsing")
SUBSET_NOTES = {
    "camhq_maskgan": "likely ground-truth annotations (MaskGAN demo inputs)",
    "camhq_parsing": "pseudo-labels: predictions of the CelebAMask-HQ parsing network",
}


@dataclass
class Face:
    """One labelled eval face: name, (H,W,3) BGR uint8 crop, (H,W) uint8 region map."""

    name: str
    img: np.ndarray
    target: np.ndarray


@dataclass
class Scores:
    """Per-face IoU per region (NaN where the region is in neither map)."""

    names: list[str] = field(default_factory=list)
    iou: list[np.ndarray] = field(default_factory=list)  # each (K,)

    def add(self, name: str, pred: np.ndarray, target: np.ndarray) -> None:
        self.names.append(name)
        self.iou.append(region_iou(pred, target))

    def region_means(self, prefix: str = "") -> np.ndarray:
        """(K,) mean IoU over the faces (whose name starts with ``prefix``) having the region."""
        rows = [r for n, r in zip(self.names, self.iou) if n.startswith(prefix)]
        if not rows:
            return np.full(len(REGIONS), np.nan)
        a = np.stack(rows)
        out = np.full(a.shape[1], np.nan)
        has = ~np.isnan(a).all(0)
        out[has] = np.nanmean(a[:, has], 0)
        return out

    def miou(self, prefix: str = "") -> float:
        """Mean over the facial regions (skin … lower lip) of :meth:`region_means`."""
        return float(np.nanmean(self.region_means(prefix)[list(FACIAL_REGIONS)]))


def region_iou(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """IoU per region of two (H,W) region maps → (K,) float, NaN where absent from both."""
    out = np.full(len(REGIONS), np.nan)
    for c in range(len(REGIONS)):
        p, t = pred == c, target == c
        union = np.count_nonzero(p | t)
        if union:
            out[c] = np.count_nonzero(p & t) / union
    return out


def eval_dir(faces: Path) -> Path:
    """``faces`` (the shared faces root or its ``eval/``) → the eval folder with ``parsing/``."""
    for cand in (faces / "eval", faces):
        if (cand / "parsing").is_dir():
            return cand
    raise PKDNError(f"no labelled faces: {faces}/eval/parsing not found (pass --faces ../shared/faces)")


def load_faces(eval_root: Path) -> list[Face]:
    """The labelled eval faces, sorted by name."""
    faces = []
    for lab_path in sorted((eval_root / "parsing").glob("*.png")):
        img = cv2.imread(str(eval_root / lab_path.name), cv2.IMREAD_COLOR)
        lab = cv2.imread(str(lab_path), cv2.IMREAD_UNCHANGED)
        if img is None or lab is None or lab.ndim != 2 or lab.shape != img.shape[:2]:
            raise PKDNError(f"unreadable or mismatched eval face/labels: {lab_path.name}")
        faces.append(Face(lab_path.stem, img, celebamask_to_labels(lab)))
    if not faces:
        raise PKDNError(f"no label maps under {eval_root / 'parsing'}")
    return faces


def mean_shape(train_root: Path, model: LandmarkPrior, n: int = 200, seed: int = 0) -> np.ndarray | None:
    """Mean 68-point shape (68,2) of ``n`` random aligned training crops (None without any)."""
    files = sorted(p for p in train_root.glob("*") if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
    if not files:
        return None
    files = random.Random(seed).sample(files, min(n, len(files)))
    shapes = [model.landmarks68(img) for img in (cv2.imread(str(f)) for f in files) if img is not None]
    return np.mean(shapes, 0) if shapes else None


def evaluate(faces: list[Face], model: LandmarkPrior, template: np.ndarray | None) -> dict[str, Scores]:
    """IoU of the landmark prior (argmax of the soft map) and of the mean-shape baseline."""
    res = {"landmarks": Scores()}
    if template is not None:
        res["mean shape"] = Scores()
    for f in faces:
        res["landmarks"].add(f.name, model.prior(f.img).argmax(0), f.target)
        if template is not None:
            res["mean shape"].add(f.name, soften(rasterize_regions(template, f.img.shape[:2])).argmax(0), f.target)
    return res


def _fmt(v: float) -> str:
    return "–" if np.isnan(v) else f"{v:.3f}"


def report(res: dict[str, Scores], faces: list[Face], command: str) -> str:
    """Markdown report: per-region table, mIoUs (all / per subset), notes."""
    methods = list(res)
    lines = [
        "# Landmark parsing prior: IoU against labelled eval faces",
        "",
        f"Command (repository root, project venv): `{command}`",
        "",
        f"{len(faces)} CelebAMask-HQ faces of `eval/parsing/` (aligned 128², labels mapped with "
        "`celebamask_to_regions`); prediction = argmax of the soft prior. Per region: mean IoU over the "
        "faces where the region is in either map (n faces: that count, for the landmark prior).",
        "",
        "| region | " + " | ".join(methods) + " | n faces |",
        "|---|" + "---|" * len(methods) + "---|",
    ]
    means = {m: s.region_means() for m, s in res.items()}
    first = res[methods[0]]
    for c, name in enumerate(REGIONS):
        n = sum(not np.isnan(r[c]) for r in first.iou)
        tag = "" if c in FACIAL_REGIONS else " (not in mIoU)"
        lines.append(f"| {c} {name}{tag} | " + " | ".join(_fmt(means[m][c]) for m in methods) + f" | {n} |")
    lines += ["", "| mIoU over facial regions 1–9 | " + " | ".join(methods) + " | faces |",
              "|---|" + "---|" * len(methods) + "---|"]
    for prefix, label in (("", "all"), *((p, f"`{p}_*`") for p in SUBSETS)):
        k = sum(f.name.startswith(prefix) for f in faces)
        if k:
            lines.append(f"| {label} | " + " | ".join(_fmt(s.miou(prefix)) for s in res.values()) + f" | {k} |")
    lines += [
        "",
        "Notes:",
        "",
        *(f"* `{p}_*`: {note}." for p, note in SUBSET_NOTES.items()),
        "* `mean shape` = the same polygons drawn from the mean dlib shape of 200 random training crops "
        "(seed 0): a prior without any per-face information, the baseline the landmark model must beat.",
        f"* background and {REGIONS[HAIR_OR_OTHER]} are reported but excluded from the facial mIoU: landmarks "
        "cannot tell hair from background, so those two are only rough geometric guesses.",
        "* Ears, neck, hair, hat, clothes and jewellery are `hair_or_other`, eyeglasses are `skin` "
        "(see `CELEBAMASK_TO_REGION`). Thin regions (brows, eyes) are blocky in the 128² nearest-neighbour labels.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """CLI entry point (see the module docstring)."""
    p = CLIParser(prog="python -m pkdn_edge.train.eval_priors", description=__doc__.split("\n")[0])
    p.add_argument("--faces", type=Path, default=DEFAULT_FACES, help=f"shared faces folder (default {DEFAULT_FACES})")
    p.add_argument("--out", type=Path, help="also write the Markdown report here")
    p.add_argument("--no-baseline", action="store_true", help="skip the mean-shape baseline")

    def body() -> None:
        args = p.parse_args(argv)  # inside run_cli: a usage error is one line, exit 2
        root = eval_dir(args.faces)
        faces = load_faces(root)
        model = LandmarkPrior()
        template = None if args.no_baseline else mean_shape(root.parent / "train", model)
        command = "python -m pkdn_edge.train.eval_priors" + "".join(
            f" {a}" for a in (argv if argv is not None else sys.argv[1:])
        )
        text = report(evaluate(faces, model, template), faces, command)
        print(text, end="")
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(text)

    return run_cli(body)


if __name__ == "__main__":
    sys.exit(main())
