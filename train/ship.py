"""Ship a trained network: fp16 weights + model card.

    python -m pkdn_edge.train.ship --run runs/edge_x8_student --faces ../shared/faces/eval \
        --command "pkdn-train student --config train/configs/edge_x8_student.yaml"

Students go to ``pkdn_edge/weights/pkdn_edge_x{s}.pt`` (what the runtime loads); teachers go to
``train/teachers/pkdn_teacher_x{s}.pt``, which the student configs distil from, so a fresh clone
trains a student without first re-training its teacher. The card records the data, steps, wall
time and hardware of the run (from its ``log.csv`` and ``summary.json``), the evaluation rows of
the shipped (fp16-rounded) weights, the reproducing commands and the preprocessing contract the
runtime relies on.
"""

from __future__ import annotations

import csv
import json
import os
import platform
import sys
from pathlib import Path

from pkdn_edge.errors import CLIParser, run_cli
from pkdn_edge.models.checkpoint import export_weights, load_model, read_checkpoint
from pkdn_edge.models.complexity import count_macs, count_params
from pkdn_edge.pretrained import WEIGHTS_DIR

from .evaluate import run_eval

TEACHERS_DIR = Path(__file__).resolve().parent / "teachers"

PREPROCESSING = {
    "input": "LR face aligned to the 5-point template of pkdn_edge.face.align, (B,3,128/s,128/s)",
    "layout": "NCHW",
    "color": "RGB",
    "range": [0.0, 1.0],
    "mean": [0.0, 0.0, 0.0],
    "std": [1.0, 1.0, 1.0],
    "output": "(B,3,128,128) RGB, clamp to [0, 1]",
}


def _wall_time(run: Path) -> float:
    log = run / "log.csv"
    if not log.exists():
        return float("nan")
    with log.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    # elapsed_s restarts at 0 in each resumed session: add the last value of every segment
    total, prev = 0.0, 0.0
    for r in rows:
        e = float(r["elapsed_s"] or 0)
        if e < prev:
            total += prev
        prev = e
    return total + prev


def ship(
    run: str, faces: str, commands: list[str], name: str | None = None,
    out_dir: str | Path | None = None, report_dir: str | Path | None = None, note: str = "",
) -> Path:
    """Write ``best.pt`` of ``run`` as fp16 weights + ``.json`` card and evaluate the fp16 weights.

    ``out_dir`` defaults to :data:`~pkdn_edge.pretrained.WEIGHTS_DIR` for a student and
    :data:`TEACHERS_DIR` for a teacher; ``report_dir`` to ``reports/eval_x{s}_shipped`` /
    ``reports/eval_x{s}_teacher``.
    """
    import torch

    run_dir = Path(run)
    best = run_dir / "best.pt"
    model, meta = load_model(best)
    role = model.cfg.role
    train_cfg = meta.get("train") or read_checkpoint(run_dir / "last.pt").get("train", {})
    s = model.cfg.scale
    stem, default_dir, tag = (
        (f"pkdn_edge_x{s}", WEIGHTS_DIR, "shipped") if role == "student"
        else (f"pkdn_teacher_x{s}", TEACHERS_DIR, "teacher")
    )
    name = name or stem
    out_dir = Path(out_dir or default_dir)
    report_dir = report_dir or f"reports/eval_x{s}_{tag}"
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"{name}.pt"
    export_weights(model, out, meta={"name": name, "preset": train_cfg.get("preset", "edge"), "scale": s}, half=True)
    ev = run_eval([str(out)], faces, str(report_dir), scale=s)  # the fp16 weights as shipped
    rows = [r for r in ev["rows"] if r["scale"] == s]
    hr = train_cfg.get("hr_size", 128)
    example = [torch.rand(1, 3, hr // s, hr // s)]
    preprocessing = dict(PREPROCESSING)
    if role == "teacher":
        example.append(torch.rand(1, model.cfg.prior_channels, hr, hr))
        preprocessing["prior"] = (
            f"(B,{model.cfg.prior_channels},{hr},{hr}) soft parsing map of the HR face "
            f"({train_cfg.get('prior_source', 'landmarks')}; pkdn_edge.train.priors); training only"
        )
    card = {
        "name": name,
        "role": role,
        "preset": train_cfg.get("preset", "edge"),
        "scale": s,
        "params": count_params(model),
        "macs_per_face": count_macs(model, *example),
        "weights_dtype": "float16 (loaded as float32)",
        "training": {
            "data": train_cfg.get("data"),
            "degradation": train_cfg.get("degradation"),
            "steps": meta.get("step"),
            "selected_by": f"best validation PSNR ({train_cfg.get('select_on', 'bicubic')} protocol score) on "
                           "num_val faces held out of the training folder",
            "val_psnr": meta.get("val_psnr"),
            "val_psnr_by_protocol": meta.get("val", {}),
            "teacher": train_cfg.get("teacher"),
            "wall_time_s": round(_wall_time(run_dir), 1),
            "hardware": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
                        f"torch threads {train_cfg.get('threads')}",
            "config": train_cfg,
            **({"note": note} if note else {}),
        },
        "eval": {"faces": ev["faces"], "num_faces": ev["num_faces"], "protocols": ev["protocols"],
                 "camera_protocol_version": ev["camera_protocol_version"], "rows": rows},
        "commands": commands,
        "preprocessing": preprocessing,
        "license_note": "trained on research/non-commercial face data: not for commercial use without checking "
                        "its terms",
    }
    (out_dir / f"{name}.json").write_text(json.dumps(card, indent=2) + "\n")
    print(f"shipped {out} ({out.stat().st_size / 1e6:.2f} MB) and its card")
    return out


def main(argv: list[str] | None = None) -> int:
    p = CLIParser(prog="python -m pkdn_edge.train.ship", description=__doc__.split("\n\n")[0])
    p.add_argument("--run", required=True, help="training run folder holding best.pt")
    p.add_argument("--faces", default="../shared/faces/eval",
                   help="aligned HR faces to evaluate the shipped weights on")
    p.add_argument("--command", action="append", default=[], help="a command that reproduces the run (repeatable)")
    p.add_argument("--name", default=None, help="file stem of the weights + card (default: pkdn_edge_x{s} for a "
                   "student, pkdn_teacher_x{s} for a teacher)")
    p.add_argument("--out", default=None, help="folder for the weights + card (default: pkdn_edge/weights for a "
                   "student, train/teachers for a teacher)")
    p.add_argument("--report", default=None, help="folder for the evaluation of the shipped weights "
                   "(default: reports/eval_x{s}_shipped or reports/eval_x{s}_teacher)")
    p.add_argument("--note", default="", help="what the card cannot read off the run, e.g. the history of an `init` "
                   "checkpoint (stored as training.note)")

    def body() -> int:
        args = p.parse_args(argv)  # inside run_cli: a usage error is one line, exit 2
        ship(args.run, args.faces, args.command, name=args.name, out_dir=args.out, report_dir=args.report,
             note=args.note)
        return 0

    return run_cli(body)


if __name__ == "__main__":
    sys.exit(main())
