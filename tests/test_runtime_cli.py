"""The runtime's command lines answer a usage error with one line (issue 32): ``error: ... (see PROG
--help)`` and exit status 2, as the README promises, never argparse's usage dump."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from pkdn_edge import webcam
from pkdn_edge.engines import tensorrt
from pkdn_edge.face import prepare

ROOT = Path(__file__).resolve().parents[1]

CASES = {
    "webcam: invalid choice": (webcam.main, ["--backend", "nope"], "python -m pkdn_edge.webcam"),
    "webcam: unknown flag": (webcam.main, ["--no-such-flag"], "python -m pkdn_edge.webcam"),
    "webcam: bad type": (webcam.main, ["--frames", "many"], "python -m pkdn_edge.webcam"),
    "prepare: missing arguments": (prepare.main, [], "pkdn-prepare"),
    "prepare: bad type": (prepare.main, ["in", "out", "--size", "big"], "pkdn-prepare"),
    "tensorrt: no command": (tensorrt.main, [], "python -m pkdn_edge.engines.tensorrt"),
    "tensorrt: invalid command": (tensorrt.main, ["nope"], "python -m pkdn_edge.engines.tensorrt"),
    "tensorrt: unknown flag": (tensorrt.main, ["info", "x", "--bogus"], "python -m pkdn_edge.engines.tensorrt"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_usage_error_is_one_line(case, capsys):
    main, argv, prog = CASES[case]
    rc = main(argv)
    out = capsys.readouterr()
    assert rc == 2
    assert out.err.count("\n") == 1 and out.err.startswith("error: "), out.err
    assert f"(see {prog}" in out.err and "usage:" not in out.err and not out.out


def test_every_runtime_parser_is_a_cli_parser():
    """No plain ``argparse.ArgumentParser`` under pkdn_edge/ (models aside): they would print a usage dump."""
    plain = []
    for f in sorted((ROOT / "pkdn_edge").rglob("*.py")):
        if f.relative_to(ROOT / "pkdn_edge").parts[0] == "models":
            continue
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == \
                    "ArgumentParser":
                plain.append(f"{f.relative_to(ROOT)}:{node.lineno}")
    assert not plain, f"use pkdn_edge.errors.CLIParser: {plain}"
