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
