"""The engine interface (pkdn_edge.engines): pixel conversion, batching, backends, errors."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from pkdn_edge.engines import BACKENDS, Engine, available_backends, load_engine
from pkdn_edge.errors import MissingDependencyError, PKDNError
from pkdn_edge.manifest import Manifest


def _manifest(batch: int | None = 2, scale: int = 4) -> Manifest:
    n = 128 // scale
    nb = batch if batch is not None else "batch"
    return Manifest(target="onnx", precision="fp32", scale=scale, model_file="model.onnx", files={"model.onnx": "0"},
                    input_shape=[nb, 3, n, n], output_shape=[nb, 3, 128, 128], batch=batch, dynamic=batch is None)


class NearestEngine(Engine):
    """A runtime-free engine: nearest-neighbour upscaling, records the batch sizes it was given."""

    backend = "nearest"

    def __init__(self, manifest: Manifest, offset: float = 0.0) -> None:
        super().__init__(manifest)
        self.calls: list[int] = []
        self.offset = offset

    def _infer(self, x: np.ndarray) -> np.ndarray:
        self.calls.append(x.shape[0])
        if self.batch is not None:
            assert x.shape[0] == self.batch
        s = self.scale
        return x.repeat(s, axis=2).repeat(s, axis=3) + self.offset


def test_fixed_batch_artifacts_get_padded_and_split_batches():
    e = NearestEngine(_manifest(batch=2))
    x = np.random.default_rng(0).random((5, 3, 32, 32), dtype=np.float32)
    y = e.run_tensor(x)
    assert y.shape == (5, 3, 128, 128)
    assert e.calls == [2, 2, 2]
    np.testing.assert_array_equal(y[4, :, ::4, ::4], x[4])


def test_dynamic_batch_runs_in_one_call_and_empty_input_works():
    e = NearestEngine(_manifest(batch=None))
    assert e.run_tensor(np.zeros((7, 3, 32, 32), np.float32)).shape == (7, 3, 128, 128)
    assert e.calls == [7]
    assert e.run(np.zeros((0, 32, 32, 3), np.uint8)).shape == (0, 128, 128, 3)


def test_run_converts_bgr_uint8_to_rgb_tensor_and_back():
    e = NearestEngine(_manifest(batch=None))
    faces = np.zeros((2, 32, 32, 3), np.uint8)
    faces[..., 0] = 10   # B
    faces[..., 2] = 200  # R
    x = e.preprocess(faces)
    assert x.shape == (2, 3, 32, 32) and x.dtype == np.float32
    assert np.allclose(x[:, 0], 200 / 255) and np.allclose(x[:, 2], 10 / 255)  # RGB order, [0,1]
    out = e.run(faces)
    assert out.shape == (2, 128, 128, 3) and out.dtype == np.uint8
    assert (out[..., 0] == 10).all() and (out[..., 2] == 200).all()  # back to BGR, exact round trip


def test_outputs_are_clamped_and_rounded():
    e = NearestEngine(_manifest(batch=None), offset=0.5)
    out = e.run(np.full((1, 32, 32, 3), 200, np.uint8))
    assert (out == 255).all()  # 200/255 + 0.5 > 1 → clamped
    e2 = NearestEngine(_manifest(batch=None), offset=0.002)
    out2 = e2.run(np.full((1, 32, 32, 3), 100, np.uint8))
    assert (out2 == 101).all()  # (100/255 + 0.002)·255 = 100.51 → rounds to 101


def test_a_single_face_gives_a_single_face():
    e = NearestEngine(_manifest(batch=1))
    assert e.run(np.zeros((32, 32, 3), np.uint8)).shape == (128, 128, 3)


@pytest.mark.parametrize("bad", [np.zeros((1, 16, 16, 3), np.uint8), np.zeros((1, 32, 32, 4), np.uint8),
                                 np.zeros((1, 32, 32, 3), np.float32)])
def test_wrong_face_shape_or_dtype_is_a_clear_error(bad):
    e = NearestEngine(_manifest())
    with pytest.raises(PKDNError, match="expected"):
        e.run(bad)


def test_warmup_runs_and_reports_time():
    e = NearestEngine(_manifest(batch=3))
    assert e.warmup(2) >= 0 and e.calls == [3, 3]


def test_backend_table_and_availability():
    assert set(BACKENDS) == {"onnxruntime", "openvino", "tensorrt", "torch"}
    assert "onnxruntime" in available_backends()
    assert BACKENDS["openvino"].extra == "openvino"


def test_missing_backend_names_the_extra(tmp_path, monkeypatch):
    from pkdn_edge.engines import base

    (tmp_path / "manifest.json").write_text("{}")
    monkeypatch.setattr(base, "read_manifest", lambda p: _manifest_at(tmp_path))
    real = base.importlib.util.find_spec
    monkeypatch.setattr(base.importlib.util, "find_spec", lambda name, *a: None if name == "openvino" else real(name, *a))
    with pytest.raises(MissingDependencyError, match=r"pip install 'pkdn-edge\[openvino\]'"):
        load_engine(tmp_path, backend="openvino")


def _manifest_at(root):
    m = _manifest()
    m.root = root
    return m


def test_tensorrt_absent_names_jetpack(tmp_path, monkeypatch):
    from pkdn_edge.engines import base

    m = _manifest_at(tmp_path)
    m.target = "tensorrt"
    monkeypatch.setattr(base, "read_manifest", lambda p: m)
    real = base.importlib.util.find_spec
    monkeypatch.setattr(base.importlib.util, "find_spec", lambda name, *a: None if name == "tensorrt" else real(name, *a))
    with pytest.raises(MissingDependencyError, match="JetPack"):
        load_engine(tmp_path)


def test_unknown_backend_and_missing_artifact_are_clear_errors(tmp_path):
    with pytest.raises(PKDNError, match="does not exist"):
        load_engine(tmp_path / "nope")
    with pytest.raises(PKDNError, match="no manifest.json"):
        load_engine(tmp_path)
    with pytest.raises(PKDNError, match="unknown backend"):
        load_engine(tmp_path, backend="tflite")


def test_torch_backend_runs_a_checkpoint(tmp_path):
    torch = pytest.importorskip("torch", reason="the torch backend needs the train extra")
    from pkdn_edge.models import create_model
    from pkdn_edge.models.checkpoint import export_weights

    torch.manual_seed(0)
    model = create_model("edge", 8).eval()
    export_weights(model, tmp_path / "w.pt")
    e = load_engine(tmp_path / "w.pt", backend="torch", threads=1)
    assert (e.scale, e.lr_size, e.batch, e.backend) == (8, (16, 16), None, "torch")
    x = np.random.default_rng(0).random((3, 3, 16, 16), dtype=np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(e.run_tensor(x), ref, atol=1e-6)
    assert e.run(np.zeros((2, 16, 16, 3), np.uint8)).shape == (2, 128, 128, 3)


def test_engine_modules_import_without_torch():
    blocker = r"""
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {'torch', 'nncf', 'torchao', 'onnxscript', 'torch_pruning', 'tensorrt', 'openvino'}:
            raise ModuleNotFoundError(f'blocked {name}')
sys.meta_path.insert(0, Block())
import pkdn_edge.manifest, pkdn_edge.engines
import pkdn_edge.engines.onnxruntime, pkdn_edge.engines.openvino, pkdn_edge.engines.tensorrt, pkdn_edge.engines.torch
assert 'torch' not in sys.modules and 'openvino' not in sys.modules
print(pkdn_edge.engines.available_backends())
"""
    r = subprocess.run([sys.executable, "-c", blocker], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "onnxruntime" in r.stdout


# ---------------------------------------------------------------------------------------------- TensorRT
# TensorRT is absent here: a fake `tensorrt` module and host-memory "CUDA" check the backend's binding
# logic (named-tensor API of TensorRT >= 8.5 and the 8.x binding API), dynamic shapes and batch splitting.

_MEM: dict[int, np.ndarray] = {}


class _FakeCuda:
    stream_handle = 0

    def malloc(self, nbytes):
        buf = np.zeros(nbytes, np.uint8)
        _MEM[id(buf)] = buf
        return id(buf)

    def free(self, ptr):
        _MEM.pop(ptr, None)

    def h2d(self, ptr, host):
        _MEM[ptr][: host.nbytes] = host.reshape(-1).view(np.uint8)

    def d2h(self, host, ptr):
        host.reshape(-1).view(np.uint8)[:] = _MEM[ptr][: host.nbytes]

    def sync(self):
        pass


class _FakeContext:
    def __init__(self, engine):
        self.e, self.shape, self.addr = engine, None, {}

    def _run(self, pin, pout, shape):
        n = shape[0]
        x = _MEM[pin][: n * 3 * 32 * 32 * 4].view(np.float32).reshape(n, 3, 32, 32)
        y = x.repeat(4, 2).repeat(4, 3) * 2.0
        _MEM[pout][: y.nbytes] = y.reshape(-1).view(np.uint8)
        self.e.calls.append(n)
        return True

    # TensorRT >= 8.5
    def set_input_shape(self, name, shape):
        self.shape = shape

    def set_tensor_address(self, name, ptr):
        self.addr[name] = ptr

    def execute_async_v3(self, stream):
        return self._run(self.addr["lr"], self.addr["sr"], self.shape or self.e.static)

    # TensorRT 8.0-8.4
    def set_binding_shape(self, i, shape):
        self.shape = shape

    def execute_async_v2(self, bindings, stream):
        return self._run(bindings[0], bindings[1], self.shape or self.e.static)


class _FakeEngineV3:
    def __init__(self, batch):
        self.batch, self.calls = batch, []
        self.static = (batch, 3, 32, 32) if batch > 0 else None
        self.num_io_tensors = 2

    def get_tensor_name(self, i):
        return ["lr", "sr"][i]

    def get_tensor_dtype(self, name):
        return "float32"

    def get_tensor_shape(self, name):
        return (self.batch, 3, 32, 32) if name == "lr" else (self.batch, 3, 128, 128)

    def get_tensor_profile_shape(self, name, profile):
        return (1, 3, 32, 32), (4, 3, 32, 32), (8, 3, 32, 32)

    def create_execution_context(self):
        return _FakeContext(self)


class _FakeEngineV2(_FakeEngineV3):
    def __getattribute__(self, name):
        if name == "num_io_tensors":
            raise AttributeError(name)
        return object.__getattribute__(self, name)

    num_bindings = 2

    def get_binding_name(self, i):
        return ["lr", "sr"][i]

    def get_binding_index(self, name):
        return ["lr", "sr"].index(name)

    def get_binding_dtype(self, i):
        return "float32"

    def get_binding_shape(self, i):
        return self.get_tensor_shape(["lr", "sr"][i])

    def get_profile_shape(self, profile, name):
        return self.get_tensor_profile_shape(name, profile)


def _fake_tensorrt(engine):
    import importlib.machinery
    import types

    trt = types.ModuleType("tensorrt")
    trt.__spec__ = importlib.machinery.ModuleSpec("tensorrt", None)
    trt.__version__ = "10.3.0"

    class Logger:
        WARNING = 2

        def __init__(self, severity):
            pass

    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, data):
            return engine if data == b"ENGINE" else None

    trt.Logger, trt.Runtime, trt.nptype = Logger, Runtime, lambda dt: np.float32
    return trt


@pytest.mark.parametrize("api,batch", [("v3", -1), ("v3", 2), ("v2", -1), ("v2", 1)])
def test_tensorrt_backend_binds_by_name_and_splits_batches(tmp_path, monkeypatch, api, batch):
    from pkdn_edge.engines import tensorrt as trt_backend
    from pkdn_edge.manifest import write_manifest

    engine = (_FakeEngineV3 if api == "v3" else _FakeEngineV2)(batch)
    monkeypatch.setitem(sys.modules, "tensorrt", _fake_tensorrt(engine))
    monkeypatch.setattr(trt_backend, "_cuda", _FakeCuda)
    (tmp_path / "model.onnx").write_bytes(b"onnx")
    (tmp_path / "model.plan").write_bytes(b"ENGINE")
    m = _manifest(batch=None if batch < 0 else batch)
    m.target, m.engine_file = "tensorrt", "model.plan"
    write_manifest(m, tmp_path)
    e = load_engine(tmp_path)
    assert e.backend == "tensorrt" and e.tensor_api == (api == "v3")
    x = np.random.default_rng(0).random((10, 3, 32, 32), dtype=np.float32)
    y = e.run_tensor(x)
    np.testing.assert_allclose(y, x.repeat(4, 2).repeat(4, 3) * 2.0)
    assert engine.calls == ([8, 2] if batch < 0 else [batch] * (10 // batch))
    e.close()


def test_tensorrt_backend_explains_a_missing_or_foreign_engine(tmp_path, monkeypatch):
    from pkdn_edge.engines import tensorrt as trt_backend
    from pkdn_edge.manifest import write_manifest

    monkeypatch.setitem(sys.modules, "tensorrt", _fake_tensorrt(_FakeEngineV3(1)))
    monkeypatch.setattr(trt_backend, "_cuda", _FakeCuda)
    (tmp_path / "model.onnx").write_bytes(b"onnx")
    m = _manifest(batch=1)
    m.target = "tensorrt"
    write_manifest(m, tmp_path)
    with pytest.raises(PKDNError, match="no TensorRT engine yet"):
        load_engine(tmp_path)
    (tmp_path / "model.plan").write_bytes(b"built elsewhere")
    trt_backend.register_engine(tmp_path, tmp_path / "model.plan")
    with pytest.raises(PKDNError, match="rebuild it on this device"):
        load_engine(tmp_path)
