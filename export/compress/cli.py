"""``pkdn-compress``: structured pruning → distillation fine-tuning → INT8, measured, in one command.

    pkdn-compress --weights runs/camera_x4_student/best.pt --target-macs 0.72 \\
        --finetune-steps 3000 --int8 ptq --out compressed/x4

The flags, one field each of :class:`.config.CompressConfig`; what runs is :func:`.run.run_compress`
(the stages and the output folder are listed there). Bad input → one ``error:`` line, exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pkdn_edge.errors import CLIParser, run_cli, sigterm_as_interrupt

from ..settings import IGNORE_GROUPS, PRESETS, parse_ignore
from .config import INT8_MODES, CompressConfig


def build_parser() -> argparse.ArgumentParser:
    p = CLIParser(prog="pkdn-compress", formatter_class=argparse.RawDescriptionHelpFormatter,
                  description="Compress a PKDN student: structured pruning, distillation fine-tuning, NNCF INT8; "
                              "writes checkpoints, artifacts and report.md/report.json.",
                  epilog="examples:\n  pkdn-compress --weights runs/camera_x4_student/best.pt --target-macs 0.72 "
                         "--finetune-steps 3000 --out compressed/x4\n  pkdn-compress --weights "
                         "runs/camera_x4_student/best.pt --sweep 0.9 0.8 0.72 0.6 --finetune-steps 500 "
                         "--out compressed/x4_sweep")
    p.add_argument("--weights", type=Path, required=True, help="student checkpoint to compress")
    p.add_argument("--teacher", type=Path, default=None, help="teacher checkpoint for distillation (same scale)")
    p.add_argument("--out", type=Path, required=True, help="output folder (re-run the same command to resume)")
    p.add_argument("--prune", type=float, default=0.5,
                   help="uniform pruning: fraction of every channel space removed, in [0, 1) (default 0.5)")
    p.add_argument("--target-macs", type=float, default=None,
                   help="per-layer pruning to at most this fraction of the source's MACs (overrides --prune)")
    p.add_argument("--target-speedup", type=float, default=None,
                   help="with --target-macs: also an estimated OpenVINO INT8 speed-up of at least this (e.g. 1.3)")
    p.add_argument("--sweep", type=float, nargs="+", default=(), metavar="F",
                   help="run the recipe for each MAC fraction and write one ratio table (sweep.md)")
    p.add_argument("--prune-steps", type=int, default=1,
                   help="prune in this many steps, fine-tuning between (default 1)")
    p.add_argument("--importance", choices=("taylor", "norm"), default="taylor",
                   help="channel importance: taylor (measured on training batches) or norm (weights only)")
    p.add_argument("--importance-batches", type=int, default=64, help="training batches for taylor (default 64)")
    p.add_argument("--multiple", type=int, default=16, help="channel grid of --target-macs widths (default 16)")
    p.add_argument("--distill-from", choices=("auto", "source", "teacher", "none"), default="auto",
                   help="distillation source: the unpruned student (source), --teacher, or none; auto: the teacher "
                        "when given, else the source")
    p.add_argument("--train-config", type=Path, default=None,
                   help="the source's training YAML, used when its checkpoint records no training settings")
    p.add_argument("--finetune-steps", type=int, default=1500, help="distillation fine-tuning steps, all pruning steps "
                                                                   "together (0: none)")
    p.add_argument("--finetune-lr", type=float, default=2e-4, help="fine-tuning peak learning rate (cosine decay)")
    p.add_argument("--int8", choices=INT8_MODES, default="ptq",
                   help="ptq: NNCF PTQ on OpenVINO; acc: PTQ with accuracy control (--max-drop); qat: PTQ + "
                        "quantization-aware training with distillation; none: fp32 only (default ptq)")
    p.add_argument("--qat-steps", type=int, default=300, help="QAT steps (--int8 qat)")
    p.add_argument("--qat-lr", type=float, default=1e-5, help="QAT peak learning rate")
    p.add_argument("--faces", type=Path, default=None, help="evaluation faces (default ../shared/faces/eval)")
    p.add_argument("--data", default=None, help="training faces (default: the student's training data)")
    p.add_argument("--calib", type=Path, default=None, help="calibration faces (default: --data; never the eval set)")
    p.add_argument("--calib-size", type=int, default=300, help="calibration faces (default 300)")
    p.add_argument("--calib-synthetic", action="store_true", help="calibrate on generated faces (CI only)")
    p.add_argument("--ignore", default="edges",
                   help=f"ignored-scope groups kept in float, comma-separated, or none: "
                        f"{', '.join(IGNORE_GROUPS)} (default edges)")
    p.add_argument("--int8-preset", choices=PRESETS, default="performance", help="NNCF preset")
    p.add_argument("--max-drop", type=float, default=0.1, help="PSNR drop (dB) allowed by --int8 acc (default 0.1)")
    p.add_argument("--tensorrt", action="store_true", help="also write a TensorRT-ready Q/DQ ONNX of the INT8 model")
    p.add_argument("--latency-runs", type=int, default=200, help="timed calls per model (0: skip latency)")
    p.add_argument("--threads", type=int, default=2, help="CPU threads (default 2)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="TrainConfig overrides for fine-tuning and QAT, e.g. batch_size=8 cache_dir=.cache/pkdn")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def config_from_args(args: argparse.Namespace) -> CompressConfig:
    return CompressConfig(
        weights=args.weights, out=args.out, teacher=args.teacher, prune=args.prune, target_macs=args.target_macs,
        target_speedup=args.target_speedup,
        prune_steps=args.prune_steps, importance=args.importance, importance_batches=args.importance_batches,
        multiple=args.multiple, distill_from=args.distill_from, train_config=args.train_config,
        finetune_steps=args.finetune_steps, finetune_lr=args.finetune_lr, int8=args.int8, qat_steps=args.qat_steps,
        qat_lr=args.qat_lr, faces=args.faces, data=args.data, calib=args.calib, calib_size=args.calib_size,
        calib_synthetic=args.calib_synthetic, ignore=parse_ignore(args.ignore), int8_preset=args.int8_preset,
        max_drop=args.max_drop, tensorrt=args.tensorrt, latency_runs=args.latency_runs, threads=args.threads,
        sweep=tuple(args.sweep), train_overrides=list(args.set), progress=not args.no_progress)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``pkdn-compress``."""

    def body() -> int:
        cfg = config_from_args(build_parser().parse_args(argv))
        sigterm_as_interrupt()
        from .run import run_compress

        report = run_compress(cfg, log=lambda s: print(s, file=sys.stderr))
        print((Path(cfg.out) / ("sweep.md" if cfg.sweep else "report.md")).read_text())
        return 0 if report else 1

    return run_cli(body)


if __name__ == "__main__":
    sys.exit(main())
