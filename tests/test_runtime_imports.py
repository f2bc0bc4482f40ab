"""The runtime imports with torch (and training/export code) absent, as on a Jetson."""

import subprocess
import sys

BLOCKER = r"""
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {'torch', 'nncf', 'torchao', 'onnxscript', 'torch_pruning', 'dlib', 'PIL', 'yaml'}:
            raise ModuleNotFoundError(f'blocked {name}')
sys.meta_path.insert(0, Block())
"""

RUNTIME_MODULES = ["pkdn_edge", "pkdn_edge.metrics", "pkdn_edge.errors", "pkdn_edge.imageio",
                   "pkdn_edge.face", "pkdn_edge.face.align", "pkdn_edge.face.detector",
                   "pkdn_edge.face.tracking", "pkdn_edge.pipeline", "pkdn_edge.sources", "pkdn_edge.webcam",
                   "pkdn_edge.pretrained", "pkdn_edge.manifest", "pkdn_edge.engines", "pkdn_edge.atomic",
                   "pkdn_edge.telemetry", "pkdn_edge.engines.openvino", "pkdn_edge.engines.tensorrt",
                   "pkdn_edge.engines.select", "pkdn_edge.loopstats", "pkdn_edge.display", "pkdn_edge.writers",
                   "pkdn_edge.sources.camera", "pkdn_edge.sources.files", "pkdn_edge.sources.demo",
                   "pkdn_edge.sources.gstreamer", "pkdn_edge.face.scan"]


def test_runtime_imports_without_torch():
    code = BLOCKER + "\n".join(f"import {m}" for m in RUNTIME_MODULES) + """
import sys
assert 'torch' not in sys.modules
try:
    import pkdn_edge.models
except ModuleNotFoundError as e:
    assert 'torch' in str(e)
else:
    raise SystemExit('the blocker did not work: models imported without torch')
print('ok')
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().endswith("ok")


# -- every module a device install imports, and pkdn-export --help ------------------------------------

from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# needs torch by design (training/export-side): pkdn_edge.models*, __main__ modules (they run on import);
# the benchmark suite is pkdn_edge.export.bench (export/bench/), outside this folder since issue 32
TORCH_SIDE = ("pkdn_edge.models",)
# the torch-free part of export/: what `pkdn-export --help` and its "install the extra" error need
EXPORT_TORCH_FREE = ["pkdn_edge.export", "pkdn_edge.export.cli", "pkdn_edge.export.settings",
                     "pkdn_edge.export.formats"]


def device_modules() -> list[str]:
    """Every module under pkdn_edge/ (the runtime package) except :data:`TORCH_SIDE`."""
    out = []
    for f in sorted((ROOT / "pkdn_edge").rglob("*.py")):
        parts = list(f.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        name = ".".join(parts)
        if parts[-1] != "__main__" and not any(name == t or name.startswith(t + ".") for t in TORCH_SIDE):
            out.append(name)
    return out


BLOCK_MORE = BLOCKER.replace("'yaml'}", "'yaml', 'onnx', 'torch_tensorrt'}")


def _run_blocked(code: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCK_MORE + code], capture_output=True, text=True, **kw)


def test_every_device_module_imports_without_torch():
    mods = device_modules() + EXPORT_TORCH_FREE
    assert set(RUNTIME_MODULES) <= set(mods)  # the hand-written list above is a subset
    r = _run_blocked("\n".join(f"import {m}" for m in mods) + "\nassert 'torch' not in sys.modules\nprint('ok')")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().endswith("ok")


def test_pkdn_export_help_without_torch_lists_builders_and_names_the_extra(tmp_path):
    (tmp_path / "sitecustomize.py").write_text(BLOCK_MORE)  # the blocker in every interpreter started
    env = {**__import__("os").environ, "PYTHONPATH": str(tmp_path)}
    blocked = subprocess.run([sys.executable, "-c", "import torch"], capture_output=True, text=True, env=env)
    assert blocked.returncode != 0 and "blocked torch" in blocked.stderr  # the blocker works
    r = subprocess.run([sys.executable, "-m", "pkdn_edge.export", "--help"], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    for word in ("--target", "--builder", "torch-tensorrt", "trtexec", "pkdn-edge[export]"):
        assert word in r.stdout, word
    r = subprocess.run([sys.executable, "-m", "pkdn_edge.export", "--target", "onnx"], capture_output=True,
                       text=True, env=env)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    assert lines[0].startswith("error: torch is not installed") and "pkdn-edge[export]" in lines[0]
