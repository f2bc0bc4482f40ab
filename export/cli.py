"""``pkdn-export``: export a PKDN student to ONNX, OpenVINO, TensorRT (or a torch artifact).

    pkdn-export --target onnx                                   # shipped x4 student, fp32
    pkdn-export --target openvino --precision int8 --scale 8    # NNCF INT8 on shared/faces/train
    pkdn-export --target tensorrt --precision int8 --dynamic    # Q/DQ ONNX + trtexec commands
    pkdn-export --target tensorrt --precision fp16 --builder torch-tensorrt   # + engine on this GPU

Writes ``exports/<target>_<precision>_x<scale>/`` (model files + ``manifest.json``), verifies it
against PyTorch and prints a summary table. Bad input → one ``error:`` line, exit code 2, nothing
written.

This module imports only the torch-free :mod:`.settings` and :mod:`.formats` until an export
runs, so ``pkdn-export --help`` works on a runtime-only install; an export there is one
``error:`` line naming the extra to install (``pip install 'pkdn-edge[export]'``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pkdn_edge.errors import CLIParser, PKDNError, run_cli, sigterm_as_interrupt

from .formats import FORMATS, TARGETS, format_table, option_flag, target_options
from .settings import (
    BUILDERS,
    EXPORT_EXTRA,
    IGNORE_GROUPS,
    PRESETS,
    CalibOptions,
    ExportRequest,
    Int8Settings,
    parse_ignore,
)


def build_parser() -> argparse.ArgumentParser:
    p = CLIParser(prog="pkdn-export", formatter_class=argparse.RawDescriptionHelpFormatter,
                description="Export a PKDN face super-resolution student for edge runtimes.",
                epilog="targets:\n" + format_table() + "\n\nINT8 ignored-scope groups: "
                       + ", ".join(f"{k} ({', '.join(v)})" for k, v in IGNORE_GROUPS.items())
                       + "\n\nTensorRT engine builders (--builder):\n"
                       + "\n".join(f"  {k:15s} {v}" for k, v in BUILDERS.items())
                       + f"\n\nneeds the export tools (torch, onnx, nncf): {EXPORT_EXTRA}")
    p.add_argument("--target", required=True, metavar="|".join(TARGETS), help="export format (table below)")
    p.add_argument("--precision", choices=("fp32", "fp16", "int8"), default=None,
                   help="default: the target's first precision (fp32)")
    p.add_argument("--weights", type=Path, default=None,
                   help="checkpoint to export (default: the shipped student pkdn_edge/weights/pkdn_edge_x<scale>.pt)")
    p.add_argument("--scale", type=int, choices=(2, 4, 8), default=None,
                   help="x4 (32->128) or x8 (16->128); default: the checkpoint's scale, 4 for the shipped one")
    p.add_argument("--out", type=Path, default=None,
                   help="artifact folder (default exports/<target>_<precision>_x<scale>)")
    p.add_argument("--window", type=int, default=None, metavar="N",
                   help="side of the LR input window (default what the webcam loop feeds: 40 at x4, 1.25x its 32 "
                        "training crop; 16 at x8; 0 = the training crop)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--batch", type=int, default=1, help="fixed batch size (default 1; engines pad/split)")
    g.add_argument("--dynamic", action="store_true", help="dynamic batch axis")
    q = p.add_argument_group("int8")
    q.add_argument("--calib", type=Path, default=None,
                   help="aligned 128x128 faces for calibration (default ../shared/faces/train; never faces/eval)")
    q.add_argument("--calib-size", type=int, default=300, help="calibration faces (default 300)")
    q.add_argument("--calib-synthetic", action="store_true",
                   help="calibrate on generated faces (CI/tests without shared/: lower accuracy)")
    q.add_argument("--int8-preset", choices=PRESETS, default="performance",
                   help="NNCF preset: performance (symmetric) or mixed (asymmetric activations)")
    q.add_argument("--ignore", default="edges",
                   help="ignored-scope groups kept in float, comma-separated, 'none', or 'auto' (try several on "
                        "held-out training faces, keep the smallest within --max-drop); default edges")
    q.add_argument("--max-drop", type=float, default=0.1,
                   help="PSNR drop (dB) allowed by --ignore auto and --accuracy-control")
    q.add_argument("--accuracy-control", action="store_true",
                   help="openvino only: NNCF quantize_with_accuracy_control, starting from --ignore groups and "
                        "reverting ops to float until the PSNR drop on held-out training faces <= --max-drop")
    q.add_argument("--subset-size", type=int, default=300, help="NNCF subset_size (faces used for statistics)")
    q.add_argument("--full-bias-correction", action="store_true", help="NNCF's slower full bias correction")
    t = p.add_argument_group("tensorrt")
    t.add_argument("--builder", choices=tuple(BUILDERS), default="auto",
                   help="who builds the TensorRT engine here: " + ", ".join(BUILDERS) + " (default auto: the first "
                        "installed of torch-tensorrt, tensorrt, trtexec; none installed: ONNX + BUILD.md only)")
    t.add_argument("--exported-program", action="store_true",
                   help="torch-tensorrt builder: also save model_trt.ep (torch_tensorrt.save) for PyTorch users")
    v = p.add_argument_group("verification")
    v.add_argument("--no-verify", action="store_true", help="skip the parity check against PyTorch")
    v.add_argument("--verify-faces", type=Path, default=None,
                   help="HR faces for the parity check (default ../shared/faces/eval, else generated faces)")
    v.add_argument("--verify-synthetic", action="store_true", help="check parity on generated faces")
    p.add_argument("--threads", type=int, default=2, help="CPU threads for export, calibration and verification")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (>= 13)")
    return p


def request_from_args(args: argparse.Namespace) -> ExportRequest:
    """The parsed flags as an :class:`~.settings.ExportRequest` (torch-free); bad combinations → PKDNError."""
    if args.target not in TARGETS:
        raise PKDNError(f"unknown target {args.target!r}; choose from {', '.join(f.target for f in FORMATS)}")
    if args.calib_size < 1 or args.subset_size < 1 or args.threads < 1:
        raise PKDNError("--calib-size, --subset-size and --threads must be >= 1")
    auto = args.ignore.strip() == "auto"
    if args.accuracy_control and (auto or args.target != "openvino"):
        raise PKDNError("--accuracy-control works with --target openvino and an explicit --ignore (not auto)")
    defaults = build_parser().parse_args(["--target", args.target])
    for dest in sorted(target_options() - set(TARGETS[args.target].options)):
        if getattr(args, dest) != getattr(defaults, dest):
            owners = [f.target for f in FORMATS if dest in f.options]
            raise PKDNError(f"{option_flag(dest)} works with --target {'/'.join(owners)}, not {args.target}")
    settings = Int8Settings(preset=args.int8_preset, ignore=() if auto else parse_ignore(args.ignore),
                            subset_size=args.subset_size, fast_bias_correction=not args.full_bias_correction)
    calib = CalibOptions(folder=args.calib, size=args.calib_size, synthetic=args.calib_synthetic,
                         settings=settings, auto_ignore=auto, max_drop=args.max_drop,
                         accuracy_control=args.accuracy_control)
    return ExportRequest(target=args.target, precision=args.precision, weights=args.weights, scale=args.scale,
                         window=args.window, out=args.out, batch=None if args.dynamic else args.batch, calib=calib,
                         threads=args.threads,
                         verify=not args.no_verify, verify_faces=args.verify_faces,
                         verify_synthetic=args.verify_synthetic, opset=args.opset, builder=args.builder,
                         exported_program=args.exported_program, log=lambda s: print(s, file=sys.stderr))


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``pkdn-export`` / ``python -m pkdn_edge.export``."""

    def body() -> int:
        sigterm_as_interrupt()  # a killed export removes its work folder (exporter's finally) instead of leaving it
        request = request_from_args(build_parser().parse_args(argv))
        fmt = TARGETS[request.target]
        fmt.require(request.precision or fmt.precisions[0])  # torch & co absent: one line naming the extra
        from .exporter import run_export, summary_table

        report = run_export(request)
        print(summary_table([report]))
        for note in report.notes:
            print(f"note: {note}")
        return 0

    return run_cli(body)


if __name__ == "__main__":
    sys.exit(main())
