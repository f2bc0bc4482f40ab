"""Leave-one-family-out: how well does a camera student generalize to a degradation it never saw?

For each camera family F of the robustness matrix (docs/camera.md), a short fine-tune of the shipped
camera student on the ``wide`` camera model **without** F is scored on F's frozen protocol, against
the same fine-tune **with** every family (``wide`` itself). The loss (with F − without F, dB) is the
honest measure of generalization to F; issue 29 asks that it average ≤ 0.5 dB.

Every run has the same init, seed, steps and learning rate; only the camera settings differ. Runs
live under ``--out`` (outside the checkout) and a finished one is not retrained, so the script can be
stopped and started again::

    taskset -c 0 python benchmarks/leave_one_family_out.py --scale 4 --steps 600 --out /work/runs/lofo_x4
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import yaml

# What "without F" turns off in the wide model (train/camera.py WIDE); `clean` is the base every family
# sits on (area binning), so it has no leave-out run.
WITHOUT: dict[str, dict] = {
    "blur": {"p_blur": 0.0},
    "aliasing": {"resamplers": ["area", "bicubic"]},  # only resamplers with a low-pass (area, PIL antialiased bicubic)
    "noise": {"p_noise": 0.0},
    "isp": {"p_denoise": 0.0, "p_tone": 0.0, "p_sharpen": 0.0, "p_chroma": 0.0},
    "jpeg": {"p_jpeg": 0.0, "p_mjpeg": 0.0},
    "video": {"p_codec": 0.0},
}


def config(scale: int, camera: dict, steps: int, out: Path, data: str) -> dict:
    """One fine-tune's settings: the shipped camera student as init, the wide camera model with ``camera`` overrides."""
    return {
        "role": "student", "preset": "edge", "scale": scale, "init": f"pkdn_edge/weights/pkdn_edge_x{scale}.pt",
        "data": data, "degradation": "camera", "camera": {"preset": "wide", **camera}, "augment": True,
        "steps": steps, "warmup_steps": min(100, steps // 5), "batch_size": 16, "lr": 1.0e-4, "precision": "auto",
        "val_every": steps, "select_on": "mean", "threads": 1, "out": str(out),
    }


def train(name: str, cfg: dict, root: Path) -> Path:
    """Train one run unless its final checkpoint exists → path of its final weights."""
    run = Path(cfg["out"])
    final = run / "last.pt"
    if (run / "done").exists():
        return final
    cfg_path = root / f"{name}.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    cmd = [sys.executable, "-m", "pkdn_edge.train.cli", "student", "--config", str(cfg_path), "--no-progress"]
    print(" ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    (run / "done").write_text("")
    return final


def evaluate(weights: Path, protocols: list[str], out: Path, faces: str) -> dict[str, float]:
    """Gain over bicubic (dB, CTCNet PSNR) of ``weights`` on each protocol."""
    report = out / "eval.json"
    if not report.exists():
        cmd = [sys.executable, "-m", "pkdn_edge.train.cli", "eval", "--weights", str(weights), "--faces", faces,
               "--protocol", *protocols, "--threads", "1", "--out", str(out)]
        print(" ".join(cmd), flush=True)
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    rows = json.loads(report.read_text())["rows"]
    return {r["protocol"]: r["gain_db"] for r in rows if r["model"] != "bicubic"}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", type=int, choices=(4, 8), default=4)
    p.add_argument("--steps", type=int, default=600, help="fine-tuning steps per run")
    p.add_argument("--families", nargs="+", choices=sorted(WITHOUT), default=list(WITHOUT))
    p.add_argument("--data", default="../shared/faces/train")
    p.add_argument("--faces", default="../shared/faces/eval")
    p.add_argument("--out", required=True, help="run folder (keep it outside the checkout)")
    args = p.parse_args(argv)
    root = Path(args.out)
    root.mkdir(parents=True, exist_ok=True)

    with_all = train("with_all", config(args.scale, {}, args.steps, root / "with_all", args.data), root)
    base = evaluate(with_all, args.families, root / "eval_with_all", args.faces)
    shipped_weights = Path(f"pkdn_edge/weights/pkdn_edge_x{args.scale}.pt")
    shipped = evaluate(shipped_weights, args.families, root / "eval_shipped", args.faces)
    rows = []
    for fam in args.families:
        cfg = config(args.scale, WITHOUT[fam], args.steps, root / f"without_{fam}", args.data)
        w = train(f"without_{fam}", cfg, root)
        gain = evaluate(w, [fam], root / f"eval_without_{fam}", args.faces)[fam]
        rows.append({"family": fam, "shipped": shipped[fam], "with": base[fam], "without": gain,
                     "loss": base[fam] - gain})
        print(f"{fam}: with {base[fam]:+.2f}  without {gain:+.2f}  loss {base[fam] - gain:+.2f} dB", flush=True)

    mean_loss = sum(r["loss"] for r in rows) / len(rows)
    lines = [f"Leave-one-family-out, ×{args.scale}, {args.steps} fine-tuning steps from the shipped camera student "
             f"(`python benchmarks/leave_one_family_out.py --scale {args.scale} --steps {args.steps} "
             f"--out {args.out}`). "
             "Gain over bicubic of the same LR on the family's frozen protocol (81 eval faces, dB).", "",
             "| family | shipped student | fine-tune with F | fine-tune without F | loss |", "|---|---|---|---|---|"]
    lines += [f"| {r['family']} | {r['shipped']:+.2f} | {r['with']:+.2f} | {r['without']:+.2f} | {r['loss']:+.2f} |"
              for r in rows]
    lines += ["", f"Mean loss: {mean_loss:+.2f} dB."]
    (root / "lofo.md").write_text("\n".join(lines) + "\n")
    summary = {"scale": args.scale, "steps": args.steps, "rows": rows, "mean_loss": mean_loss}
    (root / "lofo.json").write_text(json.dumps(summary, indent=2))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
