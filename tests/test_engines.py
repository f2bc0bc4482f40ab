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


class RampEngine(NearestEngine):
    """Nearest-neighbour upscaling plus a left-to-right ramp: not mirror-symmetric."""

    def _infer(self, x: np.ndarray) -> np.ndarray:
        y = super()._infer(x)
        return y + np.linspace(0.0, 0.1, y.shape[-1], dtype=np.float32)


@pytest.mark.parametrize("batch", [None, 1, 3])
def test_flip_tta_averages_the_mirrored_pass(batch):
    rng = np.random.default_rng(0)
    x = rng.random((2, 3, 32, 32), dtype=np.float32)
    plain = RampEngine(_manifest(batch=batch))
    e = RampEngine(_manifest(batch=batch))
    e.tta = "flip"
    y = e.run_tensor(x)
    f = plain.run_tensor(x)
    f_mirror = plain.run_tensor(x[..., ::-1].copy())[..., ::-1]
    np.testing.assert_allclose(y, 0.5 * (f + f_mirror), atol=1e-6)
    assert not np.allclose(y, f, atol=1e-3)  # the ramp is averaged out: the two passes differ
    np.testing.assert_allclose(y, x.repeat(4, axis=2).repeat(4, axis=3) + 0.05, atol=1e-6)  # ramp + mirror = 0.05
    if batch is None:
        assert e.calls == [4]  # face and mirror in one call
    assert "+flip" in e.name
    assert e.run_tensor(np.empty((0, 3, 32, 32), np.float32)).shape == (0, 3, 128, 128)


def test_load_engine_rejects_an_unknown_tta(tmp_path):
    with pytest.raises(PKDNError, match="unknown tta"):
        load_engine(tmp_path, tta="rot90")


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
    monkeypatch.setattr(base.importlib.util, "find_spec",
                        lambda name, *a: None if name == "openvino" else real(name, *a))
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
    monkeypatch.setattr(base.importlib.util, "find_spec",
                        lambda name, *a: None if name == "tensorrt" else real(name, *a))
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
# logic (named-tensor API of TensorRT >= 8.5 and the 8.0-8.4 binding API), dynamic shapes, batch splitting,
# broken/foreign engine files and the per-generation build settings. A real TensorRT + GPU run is at the end
# (skipped here with a reason).

_MEM: dict[int, np.ndarray] = {}
_ENGINE_BYTES = b"ENGINE" + bytes(200)  # a "serialized engine" the fake runtime accepts (>= 64 bytes)


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

    def _run(self, pin, pout, shape, api):
        n = shape[0]
        x = _MEM[pin][: n * 3 * 32 * 32 * 4].view(np.float32).reshape(n, 3, 32, 32)
        y = x.repeat(4, 2).repeat(4, 3) * 2.0
        _MEM[pout][: y.nbytes] = y.reshape(-1).view(np.uint8)
        self.e.calls.append(n)
        self.e.apis.add(api)
        return True

    # TensorRT >= 8.5
    def set_input_shape(self, name, shape):
        assert name == "lr"
        self.shape = shape
        return True

    def set_tensor_address(self, name, ptr):
        self.addr[name] = ptr

    def execute_async_v3(self, stream):
        return self._run(self.addr["lr"], self.addr["sr"], self.shape or self.e.static, "v3")

    # TensorRT 8.0-8.4
    def set_binding_shape(self, i, shape):
        assert i == 0
        self.shape = shape
        return True

    def execute_async_v2(self, bindings, stream):
        return self._run(bindings[0], bindings[1], self.shape or self.e.static, "v2")


class _FakeEngineV3:
    """TensorRT 10.x/11.x: named tensors only (no binding methods at all)."""

    def __init__(self, batch, scale=4, names=("lr", "sr")):
        self.batch, self.calls, self.apis = batch, [], set()
        self.static = (batch, 3, 32, 32) if batch > 0 else None
        self.names, self.out_hw = list(names), 32 * scale
        self.num_io_tensors = len(names)

    def get_tensor_name(self, i):
        return self.names[i]

    def get_tensor_dtype(self, name):
        return "float32"

    def get_tensor_shape(self, name):
        return (self.batch, 3, 32, 32) if name == "lr" else (self.batch, 3, self.out_hw, self.out_hw)

    def get_tensor_profile_shape(self, name, profile):
        return (1, 3, 32, 32), (4, 3, 32, 32), (8, 3, 32, 32)

    def create_execution_context(self):
        return _FakeContext(self)


class _FakeEngineV2(_FakeEngineV3):
    """TensorRT 8.0-8.4: bindings only (no num_io_tensors)."""

    def __getattribute__(self, name):
        if name == "num_io_tensors":
            raise AttributeError(name)
        return object.__getattribute__(self, name)

    @property
    def num_bindings(self):
        return len(self.names)

    def get_binding_name(self, i):
        return self.names[i]

    def get_binding_index(self, name):
        return self.names.index(name)

    def get_binding_dtype(self, i):
        return "float32"

    def get_binding_shape(self, i):
        return self.get_tensor_shape(self.names[i])

    def get_profile_shape(self, profile, name):
        return self.get_tensor_profile_shape(name, profile)


class _FakeEngine85(_FakeEngineV3):
    """TensorRT 8.5/8.6: both APIs exist; the backend must pick the named-tensor one."""

    num_bindings = 2

    def get_binding_index(self, name):
        raise AssertionError("the binding API must not be used when the tensor API exists")


def _fake_tensorrt(engine, version="10.3.0", deserialize=None):
    import importlib.machinery
    import types

    trt = types.ModuleType("tensorrt")
    trt.__spec__ = importlib.machinery.ModuleSpec("tensorrt", None)
    trt.__version__ = version

    class Logger:
        WARNING = 2

        def __init__(self, severity):
            pass

    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, data):
            if deserialize is not None:
                return deserialize(data)
            return engine if data.startswith(b"ENGINE") else None

    trt.Logger, trt.Runtime, trt.nptype = Logger, Runtime, lambda dt: np.float32
    return trt


def _trt_artifact(tmp_path, batch, engine_bytes=_ENGINE_BYTES, scale=4):
    from pkdn_edge.manifest import write_manifest

    (tmp_path / "model.onnx").write_bytes(b"onnx")
    m = _manifest(batch=batch, scale=scale)
    m.target = "tensorrt"
    if engine_bytes is not None:
        (tmp_path / "model.plan").write_bytes(engine_bytes)
        m.engine_file = "model.plan"
    write_manifest(m, tmp_path)
    return m


@pytest.fixture
def fake_trt(monkeypatch):
    """Install a fake tensorrt module for `engine`; returns the installer."""
    from pkdn_edge.engines import tensorrt as trt_backend

    monkeypatch.setattr(trt_backend, "_cuda", _FakeCuda)

    def install(engine, **kw):
        monkeypatch.setitem(sys.modules, "tensorrt", _fake_tensorrt(engine, **kw))
        return engine

    return install


@pytest.mark.parametrize("kind,version,batch", [("v3", "10.3.0", -1), ("v3", "10.3.0", 2), ("v3", "11.0.0", -1),
                                                 ("85", "8.5.2", -1), ("85", "8.6.2", 1),
                                                 ("v2", "8.2.1", -1), ("v2", "8.2.1", 1)])
def test_tensorrt_backend_binds_by_name_and_splits_batches(tmp_path, fake_trt, kind, version, batch):
    engine = fake_trt({"v3": _FakeEngineV3, "v2": _FakeEngineV2, "85": _FakeEngine85}[kind](batch), version=version)
    _trt_artifact(tmp_path, None if batch < 0 else batch)
    e = load_engine(tmp_path)
    want_api = "binding" if kind == "v2" else "tensor"
    assert e.backend == "tensorrt" and e.api == want_api and e.tensor_api == (want_api == "tensor")
    x = np.random.default_rng(0).random((10, 3, 32, 32), dtype=np.float32)
    y = e.run_tensor(x)
    np.testing.assert_allclose(y, x.repeat(4, 2).repeat(4, 3) * 2.0)
    assert engine.calls == ([8, 2] if batch < 0 else [batch] * (10 // batch))  # profile max 8 / static batch
    assert engine.apis == {"v2" if kind == "v2" else "v3"}
    assert e.run(np.zeros((3, 32, 32, 3), np.uint8)).shape == (3, 128, 128, 3)
    e.close()
    e.close()  # idempotent


def test_tensorrt_api_selection_follows_the_available_methods():
    from pkdn_edge.engines.tensorrt import select_api

    class Ctx3:
        execute_async_v3 = set_tensor_address = None

    class Ctx2:
        execute_async_v2 = None

    class Both(Ctx3, Ctx2):
        pass

    v3, v2 = _FakeEngineV3(1), _FakeEngineV2(1)
    assert select_api(v3, Ctx3()) == "tensor"       # 10.x/11.x
    assert select_api(_FakeEngine85(1), Both()) == "tensor"  # 8.5/8.6: both exist, tensor API wins
    assert select_api(v2, Both()) == "binding"      # 8.0-8.4 engines have no num_io_tensors
    assert select_api(v2, Ctx2()) == "binding"
    with pytest.raises(PKDNError, match="TensorRT 8.0 or newer"):
        select_api(v3, Ctx2())                       # no usable execute call at all


def test_tensorrt_version_parsing():
    import types

    from pkdn_edge.engines.tensorrt import trt_major, trt_version

    assert trt_version(types.SimpleNamespace(__version__="10.3.0.30")) == (10, 3)
    assert trt_version(types.SimpleNamespace(__version__="8.5.2.2")) == (8, 5)
    assert trt_major(types.SimpleNamespace(__version__="11.0.0")) == 11
    assert trt_version(types.SimpleNamespace(__version__="garbage")) == (0, 0)


def test_tensorrt_backend_explains_a_missing_or_foreign_engine(tmp_path, fake_trt):
    from pkdn_edge.engines import tensorrt as trt_backend

    fake_trt(_FakeEngineV3(1))
    _trt_artifact(tmp_path, 1, engine_bytes=None)
    with pytest.raises(PKDNError, match="no TensorRT engine yet"):
        load_engine(tmp_path)
    (tmp_path / "model.plan").write_bytes(b"built elsewhere" * 10)  # valid size, not deserializable here
    trt_backend.register_engine(tmp_path, tmp_path / "model.plan", check=False)  # (register itself would refuse it)
    with pytest.raises(PKDNError, match="cannot deserialize .*another TensorRT version.*rebuild it on this device"):
        load_engine(tmp_path)


def test_tensorrt_truncated_or_corrupt_engine_is_one_clear_error(tmp_path, fake_trt):
    from pkdn_edge.engines.tensorrt import open_engine, register_engine
    from pkdn_edge.manifest import read_manifest

    fake_trt(_FakeEngineV3(1))
    _trt_artifact(tmp_path, 1)
    assert load_engine(tmp_path).api == "tensor"
    # registered engine truncated after the fact: the manifest's sha256 catches it before TensorRT sees it
    plan = tmp_path / "model.plan"
    plan.write_bytes(_ENGINE_BYTES[:100])
    with pytest.raises(PKDNError, match="modified or truncated"):
        load_engine(tmp_path)
    # an engine file given directly (not hashed): empty/short files are refused before deserializing
    plan.write_bytes(_ENGINE_BYTES)
    register_engine(tmp_path, plan)
    (tmp_path / "empty.plan").write_bytes(b"")
    with pytest.raises(PKDNError, match="0 bytes: empty or truncated.*rebuild"):
        open_engine(read_manifest(tmp_path), engine_file="empty.plan")
    with pytest.raises(PKDNError, match="empty or truncated"):
        register_engine(tmp_path, tmp_path / "empty.plan")
    # bytes TensorRT rejects (returns None), with the version it was registered with named
    (tmp_path / "junk.plan").write_bytes(bytes(range(256)) * 4)
    m = read_manifest(tmp_path)
    m.extras["engine"] = {"tensorrt": "8.5.2"}
    with pytest.raises(PKDNError, match=r"cannot deserialize .*junk\.plan.*corrupt or truncated.*registered with "
                                        r"TensorRT 8\.5\.2"):
        open_engine(m, engine_file="junk.plan")


def test_tensorrt_dla_engine_runs_on_the_core_it_was_built_for(tmp_path, fake_trt):
    from pkdn_edge.engines.tensorrt import register_engine

    fake_trt(_FakeEngineV3(1))
    _trt_artifact(tmp_path, 1)
    (tmp_path / "model_trt10_dla1.plan").write_bytes(_ENGINE_BYTES)
    register_engine(tmp_path, tmp_path / "model_trt10_dla1.plan")
    e = load_engine(tmp_path)
    assert e.dla_core == 1 and e.runtime.DLA_core == 1
    assert e.run(np.zeros((1, 32, 32, 3), np.uint8)).shape == (1, 128, 128, 3)
    e.close()
    assert load_engine(tmp_path, engine_file="model.plan").dla_core is None


def test_tensorrt_deserialize_exception_is_wrapped(tmp_path, fake_trt):
    def boom(data):
        raise RuntimeError("Serialization assertion magicTagRead == kMAGIC_TAG failed")

    fake_trt(_FakeEngineV3(1), deserialize=boom)
    _trt_artifact(tmp_path, 1)
    with pytest.raises(PKDNError, match="cannot deserialize .*magicTagRead.*rebuild it on this device"):
        load_engine(tmp_path)


@pytest.mark.parametrize("engine,match", [(_FakeEngineV3(1, scale=8), r"maps \[1, 3, 32, 32\] -> \[1, 3, 256, 256\]"),
                                          (_FakeEngineV3(1, names=("input", "sr")), "manifest says 'lr'"),
                                          (_FakeEngineV3(1, names=("lr", "sr", "aux")), "exactly 'lr' -> 'sr'")])
def test_tensorrt_engine_of_another_model_is_refused(tmp_path, fake_trt, engine, match):
    fake_trt(engine)
    _trt_artifact(tmp_path, 1)
    with pytest.raises(PKDNError, match=match):
        load_engine(tmp_path)


def test_tensorrt_missing_names_what_to_install(monkeypatch):
    from pkdn_edge.engines import tensorrt as trt_backend

    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import tensorrt -> ImportError
    with pytest.raises(MissingDependencyError, match="JetPack.*python3-libnvinfer.*pip install tensorrt"):
        trt_backend._import_tensorrt()
    # inside a venv on a Jetson, where JetPack put tensorrt in the system dist-packages
    monkeypatch.setattr(sys, "prefix", "/home/me/venv")
    monkeypatch.setattr(sys, "base_prefix", "/usr")
    real_isdir = trt_backend.os.path.isdir
    monkeypatch.setattr(trt_backend.os.path, "isdir",
                        lambda p: p.endswith("dist-packages/tensorrt") or real_isdir(p))
    with pytest.raises(MissingDependencyError, match="--system-site-packages"):
        trt_backend._import_tensorrt()


def test_tensorrt_without_cuda_memory_names_cuda_python(monkeypatch):
    from pkdn_edge.engines import tensorrt as trt_backend

    def no(*a, **k):
        raise ImportError("absent")

    monkeypatch.setattr(trt_backend._CudaPython, "__init__", no)
    monkeypatch.setattr(trt_backend._CudaTorch, "__init__", no)
    with pytest.raises(PKDNError, match=r"cuda-python.*pkdn-edge\[tensorrt\].*CUDA build of torch"):
        trt_backend._cuda()


# -- building: per-generation settings with a fake builder


def _fake_trt_builder(version, fast_int8=True, dla_cores=2):
    import enum
    import types

    rec = types.SimpleNamespace(flags=[], network_flags=None, parsed=None, profile=None, pool=None, device=None,
                                dla=None)
    trt = _fake_tensorrt(None, version=version)

    class NetworkDefinitionCreationFlag(enum.IntEnum):
        EXPLICIT_BATCH = 0

    trt.NetworkDefinitionCreationFlag = NetworkDefinitionCreationFlag
    major = int(version.split(".")[0])
    flag_names = ["GPU_FALLBACK"] + (["FP16", "INT8"] if major < 11 else [])
    trt.BuilderFlag = types.SimpleNamespace(**{n: n for n in flag_names})
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE="WORKSPACE")
    trt.DeviceType = types.SimpleNamespace(DLA="DLA", GPU="GPU")

    class Profile:
        def set_shape(self, name, mn, opt, mx):
            rec.profile = (name, mn, opt, mx)

    class Config:
        def set_memory_pool_limit(self, pool, size):
            rec.pool = (pool, size)

        def set_flag(self, f):
            rec.flags.append(f)

        def add_optimization_profile(self, p):
            pass

        def __setattr__(self, k, v):
            if k == "default_device_type":
                rec.device = v
            elif k == "DLA_core":
                rec.dla = v
            object.__setattr__(self, k, v)

    class Builder:
        platform_has_fast_int8 = fast_int8
        num_DLA_cores = dla_cores

        def __init__(self, logger):
            pass

        def create_network(self, flags):
            rec.network_flags = flags
            return "network"

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            return b"PLAN" + bytes(100)

    class OnnxParser:
        num_errors = 0

        def __init__(self, network, logger):
            pass

        def parse(self, data):
            rec.parsed = data
            return True

    trt.Builder, trt.OnnxParser = Builder, OnnxParser
    return trt, rec


@pytest.mark.parametrize("version,precision,onnx_file,flags,net_flags", [
    ("8.2.1", "fp16", "model.onnx", ["FP16"], 1),
    ("8.5.2", "int8", "model.onnx", ["FP16", "INT8"], 1),
    ("10.3.0", "fp16", "model.onnx", ["FP16"], 0),
    ("10.3.0", "int8", "model.onnx", ["FP16", "INT8"], 0),
    ("10.3.0", "fp32", "model.onnx", [], 0),
    ("11.0.0", "fp16", "model_fp16.onnx", [], 0),  # strongly typed: the fp16 ONNX, no flags
    ("11.0.0", "int8", "model.onnx", [], 0),       # Q/DQ decides
])
def test_tensorrt_build_settings_per_generation(tmp_path, monkeypatch, version, precision, onnx_file, flags,
                                                net_flags):
    from pkdn_edge.engines.tensorrt import build_engine_file
    from pkdn_edge.manifest import write_manifest

    trt, rec = _fake_trt_builder(version)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    (tmp_path / "model.onnx").write_bytes(b"fp32-or-qdq")
    (tmp_path / "model_fp16.onnx").write_bytes(b"fp16")
    m = _manifest(batch=None)
    m.target, m.precision = "tensorrt", precision
    m.extras["trt_onnx"] = {"8": "model.onnx", "10": "model.onnx",
                            "11": "model_fp16.onnx" if precision == "fp16" else "model.onnx"}
    write_manifest(m, tmp_path)
    out = build_engine_file(m, workspace_mb=256, max_batch=8)
    major = version.split(".")[0]
    assert out.name == f"model_trt{major}.plan" and out.read_bytes().startswith(b"PLAN")
    assert rec.parsed == (tmp_path / onnx_file).read_bytes()
    assert rec.flags == flags and rec.network_flags == net_flags
    assert rec.pool == ("WORKSPACE", 256 << 20)
    assert rec.profile == ("lr", (1, 3, 32, 32), (4, 3, 32, 32), (8, 3, 32, 32))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp")]  # atomic write left nothing


def test_tensorrt_build_dla_and_int8_guards(tmp_path, monkeypatch):
    from pkdn_edge.engines.tensorrt import build_engine_file
    from pkdn_edge.manifest import write_manifest

    (tmp_path / "model.onnx").write_bytes(b"onnx")
    m = _manifest(batch=1)
    m.target, m.precision = "tensorrt", "fp16"
    write_manifest(m, tmp_path)
    trt, rec = _fake_trt_builder("8.5.2")
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    out = build_engine_file(m, dla_core=1)
    assert out.name == "model_trt8_dla1.plan"
    assert (rec.device, rec.dla) == ("DLA", 1) and "GPU_FALLBACK" in rec.flags and rec.profile is None
    with pytest.raises(PKDNError, match="DLA core 2 does not exist"):
        build_engine_file(m, dla_core=2)
    m.precision = "fp32"
    with pytest.raises(PKDNError, match="DLA runs fp16 and int8 only"):
        build_engine_file(m, dla_core=0)
    m.precision = "int8"
    trt, rec = _fake_trt_builder("8.2.1", fast_int8=False)  # Jetson Nano (Maxwell)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    with pytest.raises(PKDNError, match="no fast INT8.*fp16"):
        build_engine_file(m)


def test_tensorrt_cli_parser_and_info(tmp_path, fake_trt, capsys):
    from pkdn_edge.engines.tensorrt import build_parser, main

    a = build_parser().parse_args(["build", "x", "--workspace-mb", "512", "--dla-core", "0", "--max-batch", "8"])
    assert (a.cmd, a.workspace_mb, a.dla_core, a.max_batch) == ("build", 512, 0, 8)
    fake_trt(_FakeEngineV3(1), version="10.3.0")
    _trt_artifact(tmp_path, 1)
    assert main(["info", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "tensorrt_here: 10.3.0" in out and "engine_file: model.plan" in out
    assert main(["register", str(tmp_path), str(tmp_path / "nope.plan")]) == 2
    assert "does not exist" in capsys.readouterr().err


# -- a real TensorRT (skipped without TensorRT and a CUDA GPU)


def test_real_tensorrt_builds_and_runs_a_nearest_upscaler(tmp_path):
    trt = pytest.importorskip("tensorrt", reason="TensorRT is not installed (JetPack on Jetson; pip install tensorrt "
                                                 "on an x86 machine with an NVIDIA GPU)")
    onnx = pytest.importorskip("onnx", reason="building the test ONNX needs onnx (pkdn-edge[export])")
    from onnx import TensorProto, helper

    from pkdn_edge.engines.tensorrt import _cuda, build_engine_file, register_engine
    from pkdn_edge.manifest import write_manifest

    try:
        _cuda()
    except PKDNError as exc:
        pytest.skip(f"TensorRT {trt.__version__} is installed but no CUDA memory helper/GPU: {exc}")
    scales = helper.make_tensor("scales", TensorProto.FLOAT, [4], [1.0, 1.0, 4.0, 4.0])
    roi = helper.make_tensor("roi", TensorProto.FLOAT, [0], [])
    node = helper.make_node("Resize", ["lr", "roi", "scales"], ["sr"], mode="nearest")
    graph = helper.make_graph([node], "nearest_x4", [helper.make_tensor_value_info("lr", TensorProto.FLOAT,
                                                                                    ["batch", 3, 32, 32])],
                              [helper.make_tensor_value_info("sr", TensorProto.FLOAT, ["batch", 3, 128, 128])],
                              initializer=[roi, scales])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "model.onnx"))
    m = _manifest(batch=None)
    m.target = "tensorrt"
    write_manifest(m, tmp_path)
    register_engine(tmp_path, build_engine_file(m, max_batch=8))
    e = load_engine(tmp_path)
    x = np.random.default_rng(0).random((11, 3, 32, 32), dtype=np.float32)
    np.testing.assert_allclose(e.run_tensor(x), x.repeat(4, 2).repeat(4, 3), atol=1e-6)
    e.close()
