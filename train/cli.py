"""``pkdn-train``: one CLI for the training verbs.

    pkdn-train teacher --config train/configs/edge_x8_teacher.yaml
    pkdn-train student --config train/configs/edge_x8_student.yaml [--set steps=2000 out=runs/x]
    pkdn-train eval --weights runs/edge_x8_student/best.pt --faces ../shared/faces/eval --out reports/eval_x8

Training resumes from ``<out>/last.pt`` when it exists; ``--max-minutes`` time-boxes a run (it
checkpoints and exits; run the same command again to continue). A usage error (an unknown verb, flag
or choice) is one ``error: ... (see pkdn-train VERB --help)`` line and exit 2
(:class:`~pkdn_edge.errors.CLIParser`).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys

from pkdn_edge.errors import CLIParser, PKDNError, run_cli


def _sigterm_as_interrupt() -> None:
    """A killed session (SIGTERM) unwinds like Ctrl-C, so the trainer writes last.pt on the way out."""

    def handler(signum, frame):  # noqa: ARG001
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def _train(role: str, args: argparse.Namespace) -> int:
    from .config import load_config
    from .loop import Trainer

    _sigterm_as_interrupt()

    if not args.config and not args.set:  # every default: a long run nobody asked for (issue 30)
        raise PKDNError(f"pkdn-train {role} needs --config CONFIG (see train/configs/) or --set KEY=VALUE ...; "
                        f"to train with every default, say so: --set out=runs/{role}")
    cfg = load_config(args.config, args.set, role=role)
    summary = Trainer(cfg).run(max_minutes=args.max_minutes, progress=not args.no_progress)
    print(json.dumps(summary))
    return 0


def _eval(args: argparse.Namespace) -> int:
    from .evaluate import run_eval

    if args.set and not args.val_of:
        raise PKDNError("--set overrides a training config: use it with --val-of CONFIG")

    from .camera import FAMILIES

    protocols = [q for p in args.protocol for q in (FAMILIES if p == "matrix" else (p,))]
    run_eval(args.weights, args.faces, args.out, scale=args.scale, grid_faces=args.grid, threads=args.threads,
             val_of=args.val_of, overrides=args.set, tta=args.tta, protocols=tuple(dict.fromkeys(protocols)),
             precision=args.precision)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .camera import DEFAULT_PROTOCOLS, PROTOCOL_ALIASES, PROTOCOLS

    p = CLIParser(prog="pkdn-train", description="Train and evaluate PKDN teachers and students.")
    sub = p.add_subparsers(dest="verb", required=True, parser_class=CLIParser)
    for role in ("teacher", "student"):
        s = sub.add_parser(role, help=f"train a PKDN {role}")
        s.add_argument("--config", help="YAML config (see train/configs/)")
        s.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override config keys")
        s.add_argument("--max-minutes", type=float, default=None, help="stop (with a checkpoint) after this long")
        s.add_argument("--no-progress", action="store_true", help="no progress bar (logs still go to log.csv)")
    e = sub.add_parser("eval", help="PSNR/SSIM vs bicubic on aligned HR faces + an image grid")
    e.add_argument("--weights", nargs="+", required=True, help="one or more checkpoints (student or teacher) or "
                   "exported artifact folders (pkdn-export --out: scored through their runtime engine)")
    e.add_argument("--faces", default="../shared/faces/eval", help="folder of aligned 128×128 HR faces")
    e.add_argument("--val-of", metavar="CONFIG", help="evaluate on the held-out validation faces of this training "
                   "config instead of --faces (for comparing and selecting models)")
    e.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="overrides of the --val-of config")
    e.add_argument("--out", default="reports/eval", help="output folder for eval.md/eval.json/grid.png")
    e.add_argument("--scale", type=int, default=None, help="check that every checkpoint has this scale")
    e.add_argument("--grid", type=int, default=6, help="faces shown in the grid image")
    e.add_argument("--threads", type=int, default=2)
    e.add_argument("--protocol", nargs="+", default=list(DEFAULT_PROTOCOLS), metavar="PROTOCOL",
                   choices=PROTOCOLS + tuple(PROTOCOL_ALIASES) + ("matrix",),
                   help="LR protocols (default: paper camera): paper (the paper protocol: PIL bicubic ↓s; "
                        "bicubic is an alias, its former name, and its rows keep that name), camera (the frozen "
                        "camera degradation set v1, train/camera.py), the frozen per-family sets clean, blur, "
                        "aliasing, noise, isp, jpeg, video, mixed, or matrix (all eight families); each gets its "
                        "own bicubic baseline row")
    e.add_argument("--precision", choices=("fp32", "bf16", "auto"), default="fp32",
                   help="fp32 (default; OpenVINO INFERENCE_PRECISION_HINT f32), or bf16/auto: bf16 only where the CPU "
                        "has it natively (AVX512-BF16/AMX; OpenVINO: BF16 in its CPU capabilities), else fp32")
    e.add_argument("--tta", choices=("none", "flip"), default="none",
                   help="flip: add a row per student with mirror self-ensembling (twice the compute)")
    return p


def main(argv: list[str] | None = None) -> int:
    def body() -> int:
        args = build_parser().parse_args(argv)  # inside run_cli: a usage error is one line, exit 2
        if args.verb == "eval":
            return _eval(args)
        return _train(args.verb, args)

    return run_cli(body)


if __name__ == "__main__":
    sys.exit(main())
