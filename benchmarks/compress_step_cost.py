"""CPU seconds per fine-tuning step of a pruned student distilled from its source (what
``pkdn-compress`` runs), measured as process time so that it holds on a busy machine too.

    .venv/bin/python benchmarks/compress_step_cost.py runs/camera_x4_student/best.pt /tmp/step_cost_x4 --steps 20

Prunes the source to its best 72 %-MAC config (weight-norm importance: the step cost depends on
the widths only), builds ``pkdn-train``'s Trainer exactly as ``pkdn-compress`` does (the source's
training settings, ``teacher=`` the source, 1 thread, ``data_limit`` 1500) and times
``train_step`` after one warm-up step. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from pkdn_edge.export.compress.prune import apply_pruning, channel_importance, plan_for_config
from pkdn_edge.export.compress.prune_search import search_config
from pkdn_edge.models.checkpoint import export_weights, load_model
from pkdn_edge.train.config import load_config
from pkdn_edge.train.loop import Trainer

KEYS = ("data", "degradation", "camera", "select_on", "augment", "precision", "batch_size", "channels_last")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("weights", type=Path)
    ap.add_argument("work", type=Path, help="scratch folder")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--target", type=float, default=0.72)
    args = ap.parse_args()
    src, meta = load_model(args.weights)
    imp = channel_importance(src)
    cfg = search_config(src.cfg, imp, args.target).config
    plan = plan_for_config(src, cfg, imp)
    args.work.mkdir(parents=True, exist_ok=True)
    export_weights(apply_pruning(src, plan), args.work / "init.pt", meta={"pruning": plan.to_meta()})
    export_weights(src, args.work / "source.pt", meta=meta)
    train = {k: v for k, v in (meta.get("train") or {}).items() if k in KEYS}
    tcfg = load_config(None, [], **train, role="student", scale=src.cfg.scale, steps=1000, threads=1,
                       init=str(args.work / "init.pt"), teacher=str(args.work / "source.pt"),
                       out=str(args.work / "run"),
                       data_limit=1500, num_val=64, log_every=1000, val_every=1000, ckpt_every=1000)
    t = Trainer(tcfg)
    t.train_step(0)
    c0, w0, data_s = time.process_time(), time.time(), 0.0
    for k in range(1, args.steps + 1):
        data_s += t.train_step(k)["data_s"]
    c1, w1 = time.process_time(), time.time()
    print(json.dumps({"scale": src.cfg.scale, "widths": list(cfg.widths), "refine_width": cfg.refine_width,
                      "mid_ratio": cfg.mid_ratio, "steps": args.steps, "cpu_s_per_step": (c1 - c0) / args.steps,
                      "wall_s_per_step": (w1 - w0) / args.steps, "loader_wall_s_per_step": data_s / args.steps}))


if __name__ == "__main__":
    main()
