"""The runtime is the ground floor (issue 32): no module under pkdn_edge/ imports or launches the
export or training tools (``pkdn_edge.export``, ``pkdn_edge.train``), which sit above it
(docs/architecture.md). ``pkdn_edge/models/`` (torch model code, not on a device install) is not
checked here; test_import_cycles.py and test_runtime_imports.py check the rest of the layering.

Parsed with ``ast`` (nothing is imported), so imports inside functions count too:

* imports: ``import pkdn_edge.export...``, ``from pkdn_edge.train import ...``, ``from pkdn_edge import
  export``, relative ones (``from ..export import ...``), and ``importlib.import_module`` /
  ``__import__`` / ``runpy.run_module`` / ``find_spec`` of such a name;
* launches: a module that starts a process (``subprocess.*``, ``os.system``, ``os.exec*``, ``os.spawn*``,
  ``os.popen``) may not hold a string naming those modules (``-m pkdn_edge.export``, ``-c "from
  pkdn_edge.export.cli import main"``) or a command name as an argv element (``"pkdn-export"``).
  A message that tells the user which ``pkdn-export ...`` command to run is fine.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RUNTIME = ROOT / "pkdn_edge"
NOT_CHECKED = ("models",)  # torch model code: its own layer (docs/architecture.md)
UPPER = ("pkdn_edge.export", "pkdn_edge.train")
COMMANDS = ("pkdn-export", "pkdn-train", "pkdn-compress")
# calls that start a process (besides anything of the subprocess module, imported at all)
LAUNCHERS = {"os": ("system", "popen", "exec", "spawn", "posix_spawn"), "asyncio": ("create_subprocess",)}
IMPORTERS = ("import_module", "__import__", "run_module", "find_spec")


def runtime_files() -> list[Path]:
    """Every ``.py`` under pkdn_edge/ except :data:`NOT_CHECKED`, sorted."""
    return sorted(f for f in RUNTIME.rglob("*.py") if f.relative_to(RUNTIME).parts[0] not in NOT_CHECKED)


def module_name(path: Path, root: Path = RUNTIME) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _upper(name: str) -> bool:
    return any(name == u or name.startswith(u + ".") for u in UPPER)


def _absolute(module: str, is_pkg: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_pkg else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _call_name(func: ast.AST) -> tuple[str, str]:
    """(owner, attribute) of a call: ``subprocess.run`` -> ("subprocess", "run"), ``Popen`` -> ("", "Popen")."""
    if isinstance(func, ast.Attribute):
        owner = func.value
        return (owner.id if isinstance(owner, ast.Name) else getattr(owner, "attr", "")), func.attr
    return "", getattr(func, "id", "")


def _launches(node: ast.AST) -> bool:
    if isinstance(node, ast.Import):
        return any(a.name.split(".")[0] == "subprocess" for a in node.names)
    if isinstance(node, ast.ImportFrom):
        return (node.module or "").split(".")[0] == "subprocess"
    if isinstance(node, ast.Call):
        owner, attr = _call_name(node.func)
        return attr.startswith(LAUNCHERS.get(owner, ()) or ("\0",))
    return False


def _strings(tree: ast.AST) -> list[str]:
    return [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)]


def violations(source: str, module: str, is_pkg: bool = False) -> list[str]:
    """What in ``source`` (the text of ``module``) imports or launches the export/training tools."""
    tree = ast.parse(source)
    out: list[str] = []
    launches = False
    for node in ast.walk(tree):
        launches = launches or _launches(node)
        if isinstance(node, ast.Import):
            out += [f"line {node.lineno}: import {a.name}" for a in node.names if _upper(a.name)]
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(module, is_pkg, node)
            names = [base] + [f"{base}.{a.name}" for a in node.names]
            if any(_upper(n) for n in names):
                out.append(f"line {node.lineno}: from {'.' * node.level}{node.module or ''} import "
                           + ", ".join(a.name for a in node.names))
        elif isinstance(node, ast.Call):
            if _call_name(node.func)[1] in IMPORTERS:
                out += [f"line {node.lineno}: {_call_name(node.func)[1]}({s!r})" for s in _strings(node) if _upper(s)]
    if launches:
        for s in _strings(tree):
            if any(u in s for u in UPPER) or s.strip() in COMMANDS:
                out.append(f"starts a process and names {s.strip()[:80]!r}")
    return out


def test_the_walk_sees_the_runtime():
    files = runtime_files()
    assert RUNTIME / "webcam.py" in files and RUNTIME / "engines" / "select.py" in files
    assert not any("models" in f.relative_to(RUNTIME).parts for f in files)


@pytest.mark.parametrize("path", runtime_files(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_runtime_module_neither_imports_nor_launches_export_or_train(path):
    found = violations(path.read_text(), module_name(path), path.name == "__init__.py")
    assert not found, (f"{path.relative_to(ROOT)} reaches above the runtime (docs/architecture.md): "
                       + "; ".join(found))


# -- the checker itself: it must catch what it is for, and let user-facing messages through ----------

CAUGHT = {
    "absolute": "import pkdn_edge.export.cli\n",
    "from": "from pkdn_edge.train.config import load\n",
    "package attribute": "from pkdn_edge import export\n",
    "relative, in a function": "def f():\n    from ..export import formats\n    return formats\n",
    "relative package attribute": "def f():\n    from .. import train\n",
    "import_module": "import importlib\nm = importlib.import_module('pkdn_edge.export.cli')\n",
    "-m": "import subprocess, sys\nsubprocess.run([sys.executable, '-m', 'pkdn_edge.train', 'eval'])\n",
    "-c runner in a variable": ("import subprocess, sys\n"
                                "def f(cmd):\n"
                                "    runner = 'from pkdn_edge.export.cli import main; main()'\n"
                                "    return subprocess.run([sys.executable, '-c', runner] + cmd)\n"),
    "console script": "from subprocess import Popen\nPopen(['pkdn-export', '--target', 'onnx'])\n",
    "os.system": "import os\nos.system('python -m pkdn_edge.train student --config c.yaml')\n",
}
ALLOWED = {
    "a message naming the command": ("from pkdn_edge.errors import PKDNError\n"
                                     "def f(s):\n"
                                     "    raise PKDNError(f'no x{s} model: export one with `pkdn-export --target onnx "
                                     "--scale {s}`')\n"),
    "an argv list only printed": "def cmd(s):\n    return ['pkdn-export', '--scale', str(s)]\n",
    "a process that is not an upper tool": "import subprocess\nsubprocess.run(['nvidia-smi'])\n",
    "runtime imports": "from ..errors import PKDNError\nfrom pkdn_edge.exports_dir import x\n",
}


@pytest.mark.parametrize("case", sorted(CAUGHT))
def test_the_check_catches(case):
    assert violations(CAUGHT[case], "pkdn_edge.engines.select"), case


@pytest.mark.parametrize("case", sorted(ALLOWED))
def test_the_check_allows(case):
    assert not violations(ALLOWED[case], "pkdn_edge.engines.select"), case


LOOP = ("pkdn_edge.pipeline", "pkdn_edge.webcam", "pkdn_edge.display", "pkdn_edge.loopstats")


@pytest.mark.parametrize("path", sorted((RUNTIME / "engines").glob("*.py")), ids=lambda p: p.name)
def test_engines_sit_below_the_pipeline(path):
    """engines/ is imported by the pipeline and the loop, never the reverse (BicubicEngine lives in
    engines/bicubic.py, not in pipeline.py)."""
    module, is_pkg = module_name(path), path.name == "__init__.py"
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.startswith(LOOP)]
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(module, is_pkg, node)
            found += [n for n in [base] + [f"{base}.{a.name}" for a in node.names] if n.startswith(LOOP)]
    assert not found, f"{path.relative_to(ROOT)} imports {found}"
