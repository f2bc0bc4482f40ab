"""deploy/jetson: every command of the guide and the systemd unit must parse with the project's CLIs.

Each ```bash block of deploy/jetson/README.md is split into commands; those that run a project CLI
(``pkdn-export``, ``pkdn-train``, ``pkdn-prepare``, any ``[project.scripts]`` entry, or
``python -m pkdn_edge...``) are parsed by that CLI's own argparse parser (``build_parser()``): every
``--flag`` must exist and the whole line must parse (types, choices, required arguments). Camera
specs (``--source csi:...``) must build a pipeline. ``trtexec`` lines must carry a
``# TensorRT N`` tag and use only flags that TensorRT generation has; the engine-building ones must be
the command ``pkdn-export`` writes into BUILD.md for that generation (plus workspace/DLA flags).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import re
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pkdn_edge.errors import PKDNError

REPO = Path(__file__).resolve().parent.parent
GUIDE = REPO / "deploy" / "jetson" / "README.md"
SERVICE = REPO / "deploy" / "jetson" / "pkdn-edge-webcam.service"

# trtexec flags per TensorRT generation (only those this project's docs may use; extend with care)
_TRT_COMMON = {"--onnx", "--saveEngine", "--loadEngine", "--minShapes", "--optShapes", "--maxShapes", "--shapes",
               "--useDLACore", "--allowGPUFallback", "--verbose", "--iterations", "--warmUp", "--duration",
               "--avgRuns", "--useSpinWait", "--noDataTransfers", "--useCudaGraph", "--separateProfileRun",
               "--dumpProfile", "--exportProfile", "--exportTimes", "--inputIOFormats", "--outputIOFormats",
               "--timingCacheFile"}
_TRT_FLAGS = {
    (8, 2): _TRT_COMMON | {"--fp16", "--int8", "--best", "--workspace", "--explicitBatch", "--buildOnly"},
    (8, 5): _TRT_COMMON | {"--fp16", "--int8", "--best", "--workspace", "--explicitBatch", "--buildOnly",
                           "--memPoolSize"},
    (10, 0): _TRT_COMMON | {"--fp16", "--int8", "--best", "--memPoolSize", "--stronglyTyped", "--skipInference",
                            "--builderOptimizationLevel"},
    (11, 0): _TRT_COMMON | {"--memPoolSize", "--skipInference", "--builderOptimizationLevel"},
}
_TRT_GONE = {  # why a flag is not in a generation's list
    10: {"--workspace": "removed in TensorRT 10 (use --memPoolSize=workspace:MiB)",
         "--explicitBatch": "explicit batch is always on in TensorRT 10", "--minTiming": "removed in TensorRT 10"},
    11: {"--fp16": "TensorRT 11 networks are strongly typed (no precision flags)", "--int8": "strongly typed in 11",
         "--best": "strongly typed in 11", "--workspace": "removed in TensorRT 10"},
}
_TRT_OPTIONAL = ("--memPoolSize", "--workspace", "--useDLACore", "--allowGPUFallback", "--verbose")


def _trt_flags(major: int, minor: int) -> set[str]:
    if major <= 8:
        return _TRT_FLAGS[(8, 5) if minor >= 5 else (8, 2)]
    return _TRT_FLAGS[(10, 0) if major == 10 else (11, 0)]


@dataclass
class Command:
    where: str                 # "README.md:123"
    tokens: list[str]
    trt: tuple[int, int] | None = None  # TensorRT generation tag in force (trtexec lines)
    extra: dict = field(default_factory=dict)


def _scripts() -> dict[str, str]:
    """[project.scripts] of pyproject.toml: name -> module."""
    text = (REPO / "pyproject.toml").read_text()
    block = re.search(r"^\[project\.scripts\]\s*\n(.*?)(?:^\[|\Z)", text, re.M | re.S)
    out = {}
    for m in re.finditer(r'^\s*([\w.-]+)\s*=\s*"([\w.]+):\w+"', block.group(1) if block else "", re.M):
        out[m.group(1)] = m.group(2)
    return out


_ENV = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
_TAG = re.compile(r"#\s*TensorRT\s+(\d+)(?:\.(\d+))?", re.I)


def commands_in_markdown(text: str, name: str = "README.md") -> list[Command]:
    """Commands of the ```bash/sh/shell/console blocks (continuations joined, comments dropped)."""
    cmds: list[Command] = []
    for block in re.finditer(r"^```(\w*)[^\n]*\n(.*?)^```", text, re.M | re.S):
        if block.group(1).lower() not in ("bash", "sh", "shell", "console"):
            continue
        first_line = text[: block.start(2)].count("\n") + 1
        trt = None
        lines = block.group(2).split("\n")
        i = 0
        while i < len(lines):
            line, start = lines[i], i
            while line.rstrip().endswith("\\") and i + 1 < len(lines):
                i += 1
                line = line.rstrip()[:-1] + " " + lines[i]
            i += 1
            tag = _TAG.match(line.strip())
            if tag:
                trt = (int(tag.group(1)), int(tag.group(2) or 0))
            cmds.extend(_split(line.lstrip("$ "), f"{name}:{first_line + start}", trt))
    return cmds


def _split(line: str, where: str, trt: tuple[int, int] | None) -> list[Command]:
    try:
        tokens = shlex.split(line, comments=True)
    except ValueError as exc:
        raise AssertionError(f"{where}: cannot split {line!r}: {exc}") from None
    out, cur = [], []
    for t in tokens + [";"]:
        if t in ("&&", "||", ";", "|"):
            if cur:
                out.append(Command(where, cur, trt))
            cur = []
        else:
            cur.append(t)
    return out


def _program(tokens: list[str]) -> tuple[str, list[str]] | None:
    """('module', args) for project CLIs, ('trtexec', args), or None for anything else."""
    toks = list(tokens)
    while toks and (_ENV.match(toks[0]) or toks[0] in ("sudo", "env", "exec", "time", "nice", "nohup")):
        toks.pop(0)
    if not toks:
        return None
    prog = Path(toks[0]).name
    if re.fullmatch(r"python(3(\.\d+)?)?", prog) and len(toks) >= 3 and toks[1] == "-m":
        return (toks[2], toks[3:]) if toks[2].startswith("pkdn_edge") else None
    if prog == "trtexec":
        return "trtexec", toks[1:]
    scripts = _scripts()
    if prog in scripts or prog.startswith("pkdn-"):
        if prog not in scripts:
            raise AssertionError(f"{prog} is not a [project.scripts] entry of pyproject.toml")
        return scripts[prog], toks[1:]
    return None


def _parser_for(module: str) -> argparse.ArgumentParser:
    for name in (module, module + ".cli"):
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.split(".")[0] not in ("pkdn_edge",):
                pytest.skip(f"{name} needs {exc.name} (install pkdn-edge[dev] to check its commands)")
            continue
        if hasattr(mod, "build_parser"):
            return mod.build_parser()
    raise AssertionError(f"no build_parser() in {module} or {module}.cli: cannot check its commands")


def _option_strings(parser: argparse.ArgumentParser) -> set[str]:
    opts = set()
    for a in parser._actions:
        opts.update(a.option_strings)
        if isinstance(a, argparse._SubParsersAction):
            for sub in a.choices.values():
                opts |= _option_strings(sub)
    return opts


def check_cli(cmd: Command, module: str, args: list[str]) -> list[str]:
    """Problems of one project-CLI command (empty when it parses)."""
    parser = _parser_for(module)
    known = _option_strings(parser)
    problems = [f"{cmd.where}: {module} has no option {a.split('=')[0]} ({' '.join(cmd.tokens)})"
                for a in args if a.startswith("--") and a.split("=")[0] not in known]
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            ns = parser.parse_args(args)
    except (SystemExit, PKDNError) as exc:
        msg = err.getvalue().strip().splitlines()[-1:] or [str(exc)]
        problems.append(f"{cmd.where}: `{' '.join(cmd.tokens)}` does not parse: {msg[0]}")
        return problems
    source = getattr(ns, "source", None)
    if module == "pkdn_edge.webcam" and source and re.match(r"(csi|usb|gst)(:|$)", source, re.I):
        from pkdn_edge.sources import gstreamer_pipeline

        try:
            gstreamer_pipeline(source)
        except PKDNError as exc:
            problems.append(f"{cmd.where}: --source {source!r}: {exc}")
    return problems


def _build_command_candidates(gen: str) -> set[tuple[str, ...]]:
    tte = pytest.importorskip("pkdn_edge.export.targets.tensorrt", reason="comparing with BUILD.md needs the "
                                                                          "export extra (pkdn-edge[export])")
    from pkdn_edge.pretrained import serve_window

    cands = set()
    for precision in ("fp32", "fp16", "int8"):
        for batch in (1, None):
            for lr in {(serve_window(s),) * 2 for s in (4, 8)} | {(32, 32), (16, 16)}:  # served and training crops
                toks = shlex.split(tte.build_commands(precision, batch, lr)[gen])
                cands.add(tuple(sorted([Path(toks[0]).name] + toks[1:])))
    return cands


def check_trtexec(cmd: Command, args: list[str], compare_with_export: bool = True) -> list[str]:
    where = f"{cmd.where}: `{' '.join(cmd.tokens)}`"
    if cmd.trt is None:
        return [f"{where}: no '# TensorRT N' comment above it says which TensorRT it is for"]
    major, minor = cmd.trt
    allowed = _trt_flags(major, minor)
    problems = []
    for a in args:
        if not a.startswith("--"):
            problems.append(f"{where}: unexpected argument {a!r}")
            continue
        flag = a.split("=")[0]
        if flag not in allowed:
            why = _TRT_GONE.get(10 if major == 10 else major, {}).get(flag, "not a known flag of that generation")
            problems.append(f"{where}: {flag} for TensorRT {major}.{minor}: {why}")
    if compare_with_export and any(a.startswith("--saveEngine") for a in args) and not problems:
        core = [re.sub(r"(_dla\d+)(\.plan)$", r"\2", a) for a in args if a.split("=")[0] not in _TRT_OPTIONAL]
        gen = "8" if major <= 8 else ("10" if major == 10 else "11")
        if tuple(sorted(["trtexec"] + core)) not in _build_command_candidates(gen):
            problems.append(f"{where}: not the build command pkdn-export writes for TensorRT {gen} "
                            f"(pkdn_edge.export.targets.tensorrt.build_commands) plus workspace/DLA flags")
    return problems


def check_commands(cmds: list[Command]) -> tuple[list[str], dict[str, int]]:
    problems: list[str] = []
    counts: dict[str, int] = {}
    for c in cmds:
        prog = _program(c.tokens)
        if prog is None:
            continue
        name, args = prog
        counts[name] = counts.get(name, 0) + 1
        problems += check_trtexec(c, args) if name == "trtexec" else check_cli(c, name, args)
    return problems, counts


def _service_commands() -> list[Command]:
    cmds = []
    for n, line in enumerate(SERVICE.read_text().splitlines(), 1):
        m = re.match(r"\s*ExecStart(?:Pre|Post)?=[-@:+!]*(.*)", line)
        if m:
            cmds.extend(_split(m.group(1), f"{SERVICE.name}:{n}", None))
    return cmds


# --------------------------------------------------------------------------------------------- tests


def test_every_project_command_in_the_guide_parses():
    cmds = commands_in_markdown(GUIDE.read_text())
    problems, counts = check_commands(cmds)
    assert not problems, "\n".join(problems)
    # the guide really exercises the CLIs (a broken extractor must not pass by finding nothing)
    assert counts.get("pkdn_edge.webcam", 0) >= 6, counts
    assert counts.get("pkdn_edge.export.cli", 0) >= 4, counts
    assert counts.get("pkdn_edge.engines.tensorrt", 0) >= 5, counts
    assert counts.get("trtexec", 0) >= 10, counts


def test_the_service_unit_runs_a_valid_webcam_command():
    text = SERVICE.read_text()
    for section in ("[Unit]", "[Service]", "[Install]"):
        assert section in text
    assert re.search(r"^Restart=on-failure$", text, re.M) and re.search(r"^WantedBy=", text, re.M)
    cmds = _service_commands()
    assert len(cmds) == 1
    prog = _program(cmds[0].tokens)
    assert prog is not None and prog[0] == "pkdn_edge.webcam", cmds[0].tokens
    assert Path(cmds[0].tokens[0]).is_absolute(), "systemd needs an absolute interpreter path"
    problems, _ = check_commands(cmds)
    assert not problems, "\n".join(problems)
    assert SERVICE.name in GUIDE.read_text()


def test_every_trtexec_build_line_matches_what_pkdn_export_writes():
    cmds = [c for c in commands_in_markdown(GUIDE.read_text()) if (_program(c.tokens) or ("",))[0] == "trtexec"]
    gens = {c.trt[0] for c in cmds if c.trt}
    assert {8, 10, 11} <= gens, gens  # the guide covers 8.x, 10.x and 11.x
    assert any(c.trt == (8, 2) for c in cmds) and any(c.trt[0] == 8 and c.trt[1] >= 5 for c in cmds if c.trt)


def test_results_table_has_no_made_up_numbers():
    text = GUIDE.read_text()
    table = re.search(r"### Results\n\n(\|.*?\n)\n", text + "\n\n", re.S)
    assert table, "the guide has a results table"
    rows = [r for r in table.group(1).strip().splitlines() if not re.match(r"\|[-| ]+\|$", r)]
    header, body = rows[0], rows[1:]
    width = header.count("|")
    assert body and all(r.count("|") == width for r in body)
    first_measured = [c.strip() for c in header.strip("|").split("|")].index("engine (trtexec) ms, batch 1")
    for r in body:
        cells = [c.strip() for c in r.strip("|").split("|")][first_measured:]
        assert all(c == "not yet measured" for c in cells), f"{r}: fill in only what was measured on a board"


# the checker itself must catch mistakes


@pytest.mark.parametrize("snippet,match", [
    ("python -m pkdn_edge.webcam --nope 1", "has no option --nope"),
    ("python -m pkdn_edge.webcam --backend tflite", "does not parse"),
    ("python -m pkdn_edge.webcam --source csi:0,zoom=2", "unknown csi option"),
    ("pkdn-export --target tensorrt --precision fp64", "does not parse"),
    ("python -m pkdn_edge.engines.tensorrt build x --workspace 5", "has no option --workspace"),
    ("# TensorRT 10.3\ntrtexec --onnx=model.onnx --saveEngine=model_trt10.plan --fp16 --workspace=1024",
     "removed in TensorRT 10"),
    ("# TensorRT 11\ntrtexec --onnx=model.onnx --saveEngine=model_trt11.plan --fp16", "strongly typed"),
    ("# TensorRT 8.2\ntrtexec --onnx=model.onnx --saveEngine=model_trt8.plan --memPoolSize=workspace:64",
     "not a known flag"),
    ("trtexec --onnx=model.onnx --saveEngine=model_trt10.plan", "no '# TensorRT N' comment"),
    ("# TensorRT 10\ntrtexec --onnx=model.onnx --saveEngine=model_trt8.plan --fp16", "not the build command"),
])
def test_checker_catches_bad_commands(snippet, match):
    problems, _ = check_commands(commands_in_markdown(f"```bash\n{snippet}\n```\n"))
    assert any(match in p for p in problems), problems


def test_checker_reads_continuations_chains_and_ignores_other_programs():
    text = ("```bash\nsudo apt install -y python3-venv  # not checked\n"
            "PKDN_EXPORTS=/x ~/venv/bin/python -m pkdn_edge.webcam \\\n  --source demo --frames 5 && echo done\n"
            "```\n```text\npkdn-export --not-a-command-block\n```\n")
    cmds = commands_in_markdown(text)
    progs = [_program(c.tokens) for c in cmds]
    assert progs[0] is None and progs[1] == ("pkdn_edge.webcam", ["--source", "demo", "--frames", "5"])
    assert len(cmds) == 3 and check_commands(cmds)[0] == []


if __name__ == "__main__":  # print every checked command (handy when editing the guide)
    for c in commands_in_markdown(GUIDE.read_text()) + _service_commands():
        if _program(c.tokens):
            print(c.where, c.trt or "", " ".join(c.tokens))
    sys.exit(0)
