"""TensorRT backend (Jetson / NVIDIA GPUs): runs the engine named by a ``tensorrt`` artifact.

TensorRT engines are specific to the GPU and the TensorRT version that built them, so
``pkdn-export --target tensorrt`` ships the TensorRT-ready ONNX plus build commands, and the
engine is built **on the device**, either with ``trtexec`` (then ``register`` it) or here::

    python -m pkdn_edge.engines.tensorrt build exports/tensorrt_int8_x4          # Python API build
    python -m pkdn_edge.engines.tensorrt register exports/tensorrt_int8_x4 model_trt10.plan  # trtexec-built
    python -m pkdn_edge.engines.tensorrt info exports/tensorrt_int8_x4           # what is here, what runs

Both record the engine in ``manifest.json`` (``engine_file``), after which :func:`load_engine`
deserializes it. I/O binds **by tensor name** (the manifest's ``input_name``/``output_name``):

==========================  ================================================================
TensorRT                    API used (chosen by what the engine/context objects offer)
==========================  ================================================================
8.0 - 8.4 (JetPack 4.6)     bindings: ``get_binding_index``, ``set_binding_shape``,
                            ``execute_async_v2(bindings, stream)``
8.5 / 8.6 (JetPack 5, 6.0)  named tensors (both exist; the tensor API is preferred)
10.x / 11.x (JetPack 6.1+)  named tensors only: ``num_io_tensors``, ``get_tensor_name``,
                            ``set_input_shape``, ``set_tensor_address``, ``execute_async_v3``
==========================  ================================================================

Device memory and the stream come from ``cuda-python`` (``cuda.bindings.runtime``, or the older
``cuda.cudart``), else from a CUDA build of torch. A missing, empty, truncated or foreign engine
file is one :class:`~pkdn_edge.errors.PKDNError` line that says to rebuild it on this device.

Versions: JetPack 4.6 ships TensorRT 8.2 (Nano), JetPack 5.1.x 8.5, JetPack 6.0 8.6, JetPack
6.1/6.2 10.3. TensorRT 11 removed the weak-typing precision flags (strongly typed networks only).
"""

from __future__ import annotations

import argparse
import importlib
import os  # noqa: F401 (tests patch os.path through this module)
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np

from pkdn_edge.atomic import atomic_write_bytes
from pkdn_edge.errors import CLIParser, PKDNError, run_cli
from pkdn_edge.manifest import Manifest, add_file, read_manifest

from .base import Engine, check_precision
from .trt_common import (  # noqa: F401
    _import_tensorrt,
    _rebuild_hint,
    _system_tensorrt_hint,
    compute_capability,
    engine_io_names,
    trt_major,
    trt_version,
)

# --------------------------------------------------------------------------------------------------
# CUDA memory: cuda-python or torch


class _CudaPython:
    """Device buffers and a stream through cuda-python's runtime API."""

    def __init__(self) -> None:
        try:
            from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
        except ImportError:
            from cuda import cudart  # type: ignore[no-redef]  # older cuda-python (ImportError when absent)
        self.rt = cudart
        self.stream = self._ok(cudart.cudaStreamCreate(), "cudaStreamCreate")

    def _ok(self, ret: Any, call: str = "CUDA call") -> Any:
        err, *rest = ret if isinstance(ret, tuple) else (ret,)
        if int(err) != 0:
            name = getattr(err, "name", str(err))
            raise PKDNError(f"{call} failed: {name} (is a CUDA GPU visible to this process? on Jetson the user "
                            f"needs the 'video' group)")
        return rest[0] if len(rest) == 1 else (rest or None)

    @property
    def stream_handle(self) -> int:
        return int(self.stream)

    def malloc(self, nbytes: int) -> int:
        return int(self._ok(self.rt.cudaMalloc(max(1, nbytes)), "cudaMalloc"))

    def free(self, ptr: int) -> None:
        self.rt.cudaFree(ptr)

    def h2d(self, ptr: int, host: np.ndarray) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._ok(self.rt.cudaMemcpyAsync(ptr, host.ctypes.data, host.nbytes, kind, self.stream), "cudaMemcpyAsync")

    def d2h(self, host: np.ndarray, ptr: int) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._ok(self.rt.cudaMemcpyAsync(host.ctypes.data, ptr, host.nbytes, kind, self.stream), "cudaMemcpyAsync")

    def sync(self) -> None:
        self._ok(self.rt.cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")


class _CudaTorch:
    """The same through torch.cuda (when cuda-python is absent but a CUDA torch is present)."""

    def __init__(self) -> None:
        import torch

        if not torch.cuda.is_available():
            raise ImportError("torch has no CUDA")
        self.torch = torch
        self.stream = torch.cuda.Stream()
        self._tensors: dict[int, Any] = {}

    @property
    def stream_handle(self) -> int:
        return int(self.stream.cuda_stream)

    def malloc(self, nbytes: int) -> int:
        t = self.torch.empty(max(1, nbytes), dtype=self.torch.uint8, device="cuda")
        self._tensors[t.data_ptr()] = t
        return t.data_ptr()

    def free(self, ptr: int) -> None:
        self._tensors.pop(ptr, None)

    def h2d(self, ptr: int, host: np.ndarray) -> None:
        with self.torch.cuda.stream(self.stream):
            src = self.torch.from_numpy(host.reshape(-1).view(np.uint8))
            self._tensors[ptr][: host.nbytes].copy_(src, non_blocking=False)

    def d2h(self, host: np.ndarray, ptr: int) -> None:
        with self.torch.cuda.stream(self.stream):
            host.reshape(-1).view(np.uint8)[:] = self._tensors[ptr][: host.nbytes].cpu().numpy()

    def sync(self) -> None:
        self.stream.synchronize()


def _cuda() -> Any:
    errors = []
    for impl in (_CudaPython, _CudaTorch):
        try:
            return impl()
        except ImportError as exc:
            errors.append(f"{impl.__name__}: {exc}")
    raise PKDNError("the TensorRT backend needs CUDA memory from cuda-python (pip install 'pkdn-edge[tensorrt]' with "
                    "a cuda-python 12.x matching your CUDA/JetPack, e.g. 'cuda-python==12.6.*' on JetPack 6.1/6.2) "
                    "or a CUDA build of torch")


# --------------------------------------------------------------------------------------------------
# engine


def select_api(engine: Any, context: Any) -> str:
    """``"tensor"`` (named-tensor API, TensorRT >= 8.5; the only one from 10.0) or ``"binding"``
    (TensorRT 8.0-8.4), from the methods the engine and its execution context offer."""
    if hasattr(engine, "num_io_tensors") and hasattr(context, "execute_async_v3") \
            and hasattr(context, "set_tensor_address"):
        return "tensor"
    if hasattr(engine, "num_bindings") and hasattr(context, "execute_async_v2"):
        return "binding"
    raise PKDNError("this TensorRT has neither execute_async_v3 (named tensors, >= 8.5) nor execute_async_v2 "
                    "(bindings, 8.x); TensorRT 8.0 or newer is needed")


class TensorRTEngine(Engine):
    """A deserialized TensorRT engine; inputs/outputs bound by the manifest's tensor names.

    Attributes (beyond :class:`~pkdn_edge.engines.base.Engine`): ``api`` (``"tensor"`` or
    ``"binding"``), ``max_batch`` (the optimization profile's max batch, or the static batch),
    ``engine_path``, ``trt_version``, ``dla_core`` (``None`` for a GPU engine; taken from a
    ``..._dla<N>.plan`` name unless given).
    """

    backend = "tensorrt"

    def __init__(self, manifest: Manifest, threads: int = 2, precision: str | None = None,
                 engine_file: str | None = None, dla_core: int | None = None) -> None:
        trt = _import_tensorrt()
        super().__init__(manifest, threads, precision)
        check_precision(manifest, precision, self.backend)
        self.trt = trt
        self.trt_version = str(getattr(trt, "__version__", "?"))
        self._buffers: dict[str, tuple[int, int]] = {}  # name -> (ptr, nbytes)
        name = engine_file or manifest.engine_file
        if not name:
            raise PKDNError(f"{manifest.root} has no TensorRT engine yet: build it on this device with "
                            f"`python -m pkdn_edge.engines.tensorrt build {manifest.root}` "
                            f"or trtexec (see {manifest.root}/BUILD.md), then register it")
        path = manifest.path(name)
        self.engine_path = path
        if not path.is_file():
            raise PKDNError(f"TensorRT engine {path} is missing; {_rebuild_hint(manifest)}")
        data = path.read_bytes()
        if len(data) < 64:
            raise PKDNError(f"TensorRT engine {path} is {len(data)} bytes: empty or truncated (an interrupted copy or "
                            f"build?); {_rebuild_hint(manifest)}")
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        if dla_core is None:  # a DLA engine (model_trt10_dla1.plan) runs on the DLA core it was built for
            m = re.search(r"_dla(\d+)\.\w+$", path.name)
            dla_core = int(m.group(1)) if m else None
        self.dla_core = dla_core
        if dla_core is not None:
            self.runtime.DLA_core = int(dla_core)
        try:
            self.engine = self.runtime.deserialize_cuda_engine(data)
        except Exception as exc:  # some versions raise instead of returning None
            self.engine = None
            why = f" ({str(exc).strip().splitlines()[0][:200]})" if str(exc).strip() else ""
        else:
            why = ""
        if self.engine is None:
            built = (manifest.extras.get("engine") or {}).get("tensorrt")
            was = f"; it was registered with TensorRT {built}" if built and built != self.trt_version else ""
            raise PKDNError(f"TensorRT {self.trt_version} cannot deserialize {path}{why}: the file is corrupt or "
                            f"truncated, or was built by another TensorRT version or on another GPU{was} (engines only "
                            f"run on the GPU model and TensorRT version that built them); {_rebuild_hint(manifest)}")
        self.context = self.engine.create_execution_context()
        if self.context is None:
            raise PKDNError(f"TensorRT could not create an execution context for {path} (out of GPU memory?)")
        self.api = select_api(self.engine, self.context)
        self.tensor_api = self.api == "tensor"
        self._in, self._out = engine_io_names(manifest)
        names = self._io_names()
        for n in (self._in, self._out):
            if n not in names:
                raise PKDNError(f"engine {path} has I/O tensors {names}, the manifest says {n!r}; it was built from "
                                f"another model: {_rebuild_hint(manifest)}")
        if len(names) != 2:
            raise PKDNError(f"engine {path} has I/O tensors {names}; a PKDN engine has exactly "
                            f"{self._in!r} -> {self._out!r}: {_rebuild_hint(manifest)}")
        self._check_shapes(path, manifest)
        self.max_batch = self._max_batch()
        self._dynamic = self._shape(self._in)[0] < 0
        self._in_dtype, self._out_dtype = self._dtype(self._in), self._dtype(self._out)
        self.cuda = _cuda()

    # -- introspection (both APIs) -------------------------------------------------------------------
    def _io_names(self) -> list[str]:
        e = self.engine
        if self.tensor_api:
            return [e.get_tensor_name(i) for i in range(e.num_io_tensors)]
        return [e.get_binding_name(i) for i in range(e.num_bindings)]

    def _dtype(self, name: str) -> np.dtype:
        e = self.engine
        dt = e.get_tensor_dtype(name) if self.tensor_api else e.get_binding_dtype(e.get_binding_index(name))
        return np.dtype(self.trt.nptype(dt))

    def _shape(self, name: str) -> tuple[int, ...]:
        e = self.engine
        shape = e.get_tensor_shape(name) if self.tensor_api else e.get_binding_shape(e.get_binding_index(name))
        return tuple(int(d) for d in shape)

    def _check_shapes(self, path: Path, manifest: Manifest) -> None:
        """The engine must map (N,3,h,w) to (N,3,s·h,s·w) of this artifact (a wrong engine would write
        past the output buffer)."""
        h, w = self.lr_size
        want_in, want_out = (3, h, w), (3, h * self.scale, w * self.scale)
        got_in, got_out = self._shape(self._in), self._shape(self._out)
        if len(got_in) != 4 or tuple(got_in[1:]) != want_in or len(got_out) != 4 or tuple(got_out[1:]) != want_out:
            raise PKDNError(f"engine {path} maps {list(got_in)} -> {list(got_out)}, this x{self.scale} artifact needs "
                            f"[N, {', '.join(map(str, want_in))}] -> [N, {', '.join(map(str, want_out))}]; "
                            f"{_rebuild_hint(manifest)}")

    def _max_batch(self) -> int:
        shape = self._shape(self._in)
        if shape[0] > 0:
            self.batch = shape[0]  # a static engine runs exactly its batch (base pads/splits)
            return shape[0]
        self.batch = None
        e = self.engine
        try:
            if self.tensor_api and hasattr(e, "get_tensor_profile_shape"):
                return max(1, int(e.get_tensor_profile_shape(self._in, 0)[2][0]))
            return max(1, int(e.get_profile_shape(0, self._in)[2][0]))
        except Exception:
            return 1

    # -- run ------------------------------------------------------------------------------------------
    def _buffer(self, name: str, nbytes: int) -> int:
        ptr, size = self._buffers.get(name, (0, 0))
        if size < nbytes:
            if ptr:
                self.cuda.free(ptr)
                self._buffers.pop(name, None)
            ptr = self.cuda.malloc(nbytes)
            self._buffers[name] = (ptr, nbytes)
        return ptr

    def run_tensor(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float32)
        if self.batch is None and x.ndim == 4 and x.shape[0] > self.max_batch:  # split past the profile's max
            parts = [super(TensorRTEngine, self).run_tensor(x[i : i + self.max_batch])
                     for i in range(0, x.shape[0], self.max_batch)]
            return np.concatenate(parts)
        return super().run_tensor(x)

    def _infer(self, x: np.ndarray) -> np.ndarray:
        n = x.shape[0]
        h, w = self.lr_size
        xin = np.ascontiguousarray(x.astype(self._in_dtype, copy=False))
        out = np.empty((n, 3, h * self.scale, w * self.scale), self._out_dtype)
        pin = self._buffer(self._in, xin.nbytes)
        pout = self._buffer(self._out, out.nbytes)
        self.cuda.h2d(pin, xin)
        ctx = self.context
        dynamic = self._dynamic
        if self.tensor_api:  # TensorRT >= 8.5
            if dynamic and ctx.set_input_shape(self._in, tuple(xin.shape)) is False:
                raise PKDNError(f"TensorRT refused input shape {tuple(xin.shape)} (profile max batch {self.max_batch})")
            ctx.set_tensor_address(self._in, pin)
            ctx.set_tensor_address(self._out, pout)
            ok = ctx.execute_async_v3(self.cuda.stream_handle)
        else:  # TensorRT 8.0-8.4 binding API
            e = self.engine
            i_in, i_out = e.get_binding_index(self._in), e.get_binding_index(self._out)
            if dynamic and ctx.set_binding_shape(i_in, tuple(xin.shape)) is False:
                raise PKDNError(f"TensorRT refused input shape {tuple(xin.shape)} (profile max batch {self.max_batch})")
            bindings = [0] * e.num_bindings
            bindings[i_in], bindings[i_out] = pin, pout
            ok = ctx.execute_async_v2(bindings, self.cuda.stream_handle)
        if not ok:
            raise PKDNError(f"TensorRT {self.trt_version} execution failed (batch {n}; see the TensorRT log above)")
        self.cuda.d2h(out, pout)
        self.cuda.sync()
        return out.astype(np.float32, copy=False)

    def close(self) -> None:
        cuda = getattr(self, "cuda", None)
        for ptr, _ in getattr(self, "_buffers", {}).values():
            if cuda is not None:
                cuda.free(ptr)
        if hasattr(self, "_buffers"):
            self._buffers.clear()
        # the context before the engine before the runtime (TensorRT's ownership order)
        for attr in ("context", "engine", "runtime"):
            if hasattr(self, attr):
                setattr(self, attr, None)

    def __del__(self) -> None:  # best effort
        try:
            self.close()
        except Exception:
            pass


def open_engine(manifest: Manifest, threads: int = 2, precision: str | None = None, **options: Any) -> TensorRTEngine:
    """Backend entry point used by :func:`pkdn_edge.engines.load_engine`."""
    return TensorRTEngine(manifest, threads, precision, **options)


# --------------------------------------------------------------------------------------------------
# building on the device


def onnx_for_generation(manifest: Manifest, major: int) -> str:
    """The ONNX file of an artifact that TensorRT ``major`` should build from."""
    per_gen = manifest.extras.get("trt_onnx", {})
    return str(per_gen.get(str(major)) or per_gen.get("11" if major >= 11 else "10") or manifest.model_file)


def default_engine_name(major: int, dla_core: int | None = None) -> str:
    """``model_trt<major>.plan`` (``model_trt<major>_dla<core>.plan`` for a DLA engine), as in
    deploy/jetson/README.md."""
    return f"model_trt{major}" + (f"_dla{dla_core}" if dla_core is not None else "") + ".plan"


def build_engine_file(manifest: Manifest, out_name: str | None = None, workspace_mb: int = 1024,
                      opt_batch: int | None = None, max_batch: int | None = None,
                      dla_core: int | None = None) -> Path:
    """Build a serialized engine from the artifact's ONNX with the TensorRT Python API.

    Precision per generation: 8.x/10.x are weakly typed (fp16: ``BuilderFlag.FP16``; int8: the
    Q/DQ ONNX with ``INT8`` + ``FP16`` flags); 11.x builds strongly typed networks, so the ONNX's own
    types decide (fp16: the fp16 ONNX; int8: the Q/DQ ONNX). Dynamic-batch ONNX gets a profile
    ``1 / opt / max`` (defaults 1 / 4 / 16). ``dla_core`` puts the layers DLA supports on that DLA
    core (Xavier / Orin AGX / Orin NX), the rest falls back to the GPU; fp16/int8 only.
    Returns the engine path (inside the artifact; written atomically).
    """
    trt = _import_tensorrt()
    major = trt_major(trt)
    if dla_core is not None and manifest.precision == "fp32":
        raise PKDNError("DLA runs fp16 and int8 only: export with --precision fp16 (or int8) for a DLA engine")
    onnx_name = onnx_for_generation(manifest, major)
    onnx_path = manifest.path(onnx_name)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    if manifest.precision == "int8" and major < 10 and getattr(builder, "platform_has_fast_int8", True) is False:
        raise PKDNError("this GPU has no fast INT8 (e.g. the Jetson Nano's Maxwell GPU): export with --precision fp16")
    flags = 0
    if major < 10:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errs = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise PKDNError(f"TensorRT {trt.__version__} cannot parse {onnx_path}: {errs}")
    config = builder.create_builder_config()
    if hasattr(config, "set_memory_pool_limit"):
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb << 20)
    else:  # TensorRT < 8.4
        config.max_workspace_size = workspace_mb << 20
    if major < 11:
        if manifest.precision in ("fp16", "int8") and hasattr(trt.BuilderFlag, "FP16"):
            config.set_flag(trt.BuilderFlag.FP16)
        if manifest.precision == "int8":
            config.set_flag(trt.BuilderFlag.INT8)
    if dla_core is not None:
        n_dla = int(getattr(builder, "num_DLA_cores", 0) or 0)
        if dla_core < 0 or dla_core >= n_dla:
            raise PKDNError(f"DLA core {dla_core} does not exist here ({n_dla} DLA cores; the Orin Nano and "
                            f"Jetson Nano have none)")
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = int(dla_core)
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    if manifest.dynamic:
        h, w = manifest.lr_size
        mx = max_batch or 16
        opt = min(opt_batch or 4, mx)
        profile = builder.create_optimization_profile()
        profile.set_shape(manifest.input_name, (1, 3, h, w), (opt, 3, h, w), (mx, 3, h, w))
        config.add_optimization_profile(profile)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise PKDNError(f"TensorRT {trt.__version__} failed to build an engine from {onnx_path} (see the log above)")
    out = manifest.path(out_name or default_engine_name(major, dla_core))
    atomic_write_bytes(out, bytes(plan))
    return out


def check_engine_bytes(manifest: Manifest, data: bytes, path: Path) -> str:
    """Refuse bytes that are not a TensorRT engine of this artifact: TensorRT must deserialize them
    and the engine must have the manifest's input and output tensors. Returns the TensorRT version.

    There is no public file header to check without TensorRT, so this needs the ``tensorrt``
    package (JetPack's python3-libnvinfer on a Jetson) and its GPU; without it, a clear error."""
    try:
        trt = importlib.import_module("tensorrt")
    except ImportError:
        raise PKDNError(f"cannot check that {path} is a TensorRT engine: TensorRT's Python package is not installed "
                        f"here{_system_tensorrt_hint()}; register it on the device that built it (JetPack: "
                        f"python3-libnvinfer), or pass --no-check to record it unchecked") from None
    version = str(getattr(trt, "__version__", "?"))
    why = ""
    try:
        engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(data)
    except Exception as exc:  # some versions raise instead of returning None
        engine = None
        why = f" ({str(exc).strip().splitlines()[0][:200]})" if str(exc).strip() else ""
    if engine is None:
        raise PKDNError(f"{path} is not a TensorRT engine that TensorRT {version} can load{why}: it is not an engine, "
                        f"or it is corrupt or truncated, or it was built by another TensorRT version or on another "
                        f"GPU; "
                        f"{_rebuild_hint(manifest)}")
    if hasattr(engine, "num_io_tensors"):
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    else:
        names = [engine.get_binding_name(i) for i in range(engine.num_bindings)]
    want = engine_io_names(manifest)
    if [n for n in want if n not in names]:
        raise PKDNError(f"engine {path} has I/O tensors {names}, this artifact needs {want[0]!r} -> "
                        f"{want[1]!r}: it was built from another model; {_rebuild_hint(manifest)}")
    return version


def register_engine(artifact: str | Path, engine_path: str | Path, check: bool = True,
                    info: dict[str, Any] | None = None) -> Manifest:
    """Record an engine file (copied into the artifact if it lies elsewhere) in the manifest, with
    the TensorRT version and the GPU's compute capability (``extras.engine``) and ``info`` (the
    builder, the engine's I/O names when they differ from the ONNX ones).

    ``check`` (default): TensorRT must load it as an engine of this artifact first
    (:func:`check_engine_bytes`), so random bytes or another model's engine are refused."""
    m = read_manifest(artifact)
    src = Path(engine_path)
    if not src.is_file():
        raise PKDNError(f"engine file {src} does not exist")
    if src.stat().st_size < 64:
        raise PKDNError(f"engine file {src} is {src.stat().st_size} bytes: empty or truncated; rebuild it")
    data = src.read_bytes()
    info = dict(info or {})
    if info.get("io"):
        m.extras = {**m.extras, "engine": {"io": info["io"]}}  # the names check_engine_bytes expects
    if check:
        check_engine_bytes(m, data, src)
    dst = m.path(src.name)
    if src.resolve() != dst.resolve():
        atomic_write_bytes(dst, data)
    try:
        trt = importlib.import_module("tensorrt")
        info["tensorrt"] = str(trt.__version__)
    except ImportError:
        pass
    cc = compute_capability()
    if cc:
        info["compute_capability"] = cc
    if not check:
        info["checked"] = False
    return add_file(artifact, dst.name, engine_file=dst.name, extras={**m.extras, "engine": info})


def describe(artifact: str | Path) -> dict[str, Any]:
    """What a tensorrt artifact holds and what this machine offers (for ``info``; no GPU needed)."""
    m = read_manifest(artifact)
    out: dict[str, Any] = {"artifact": str(m.root), "target": m.target, "precision": m.precision, "scale": m.scale,
                           "dynamic": m.dynamic, "engine_file": m.engine_file,
                           "engine_built_with": (m.extras.get("engine") or {}).get("tensorrt"),
                           "engine_compute_capability": (m.extras.get("engine") or {}).get("compute_capability"),
                           "engine_builder": (m.extras.get("engine") or {}).get("builder"),
                           "build_commands": m.extras.get("build_commands", {})}
    try:
        trt = importlib.import_module("tensorrt")
        out["tensorrt_here"] = str(trt.__version__)
        out["onnx_for_this_tensorrt"] = onnx_for_generation(m, trt_major(trt))
    except ImportError:
        out["tensorrt_here"] = None
    out["compute_capability_here"] = compute_capability()
    return out


def build_parser() -> argparse.ArgumentParser:
    p = CLIParser(prog="python -m pkdn_edge.engines.tensorrt",
                  description="Build, register or inspect the TensorRT engine of a tensorrt artifact on this device.")
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="build the engine with the TensorRT Python API and record it")
    b.add_argument("artifact")
    b.add_argument("--workspace-mb", type=int, default=1024, help="builder workspace (MiB)")
    b.add_argument("--opt-batch", type=int, default=None, help="dynamic artifacts: profile opt batch (default 4)")
    b.add_argument("--max-batch", type=int, default=None, help="dynamic artifacts: profile max batch (default 16)")
    b.add_argument("--dla-core", type=int, default=None,
                   help="build for this DLA core with GPU fallback (Xavier, Orin AGX/NX; fp16/int8 only)")
    b.add_argument("--output", default=None, help="engine file name inside the artifact (default model_trt<N>.plan)")
    r = sub.add_parser("register", help="record an engine built with trtexec (TensorRT must load it first)")
    r.add_argument("artifact")
    r.add_argument("engine")
    r.add_argument("--no-check", action="store_true",
                   help="record the engine without loading it (a machine without TensorRT's Python package)")
    i = sub.add_parser("info", help="print what the artifact holds and which TensorRT is installed here")
    i.add_argument("artifact")
    return p


def main(argv: list[str] | None = None) -> int:
    """``python -m pkdn_edge.engines.tensorrt build|register|info ARTIFACT [ENGINE]``."""

    def body() -> int:
        args = build_parser().parse_args(argv)
        if args.cmd == "register":
            m = register_engine(args.artifact, args.engine, check=not args.no_check)
            print(f"registered {m.engine_file} in {m.root}/manifest.json"
                  + (" (not checked: load it once to be sure)" if args.no_check else ""))
            return 0
        if args.cmd == "info":
            for k, v in describe(args.artifact).items():
                print(f"{k}: {v}")
            return 0
        m = read_manifest(args.artifact)
        if m.target != "tensorrt":
            raise PKDNError(f"{args.artifact} is a {m.target} artifact, not tensorrt")
        out = build_engine_file(m, out_name=args.output, workspace_mb=args.workspace_mb, opt_batch=args.opt_batch,
                                max_batch=args.max_batch, dla_core=args.dla_core)
        m = register_engine(args.artifact, out, check=False)  # just built here; opened right below
        eng = open_engine(m)
        eng.warmup(2)
        eng.close()
        print(f"built and registered {out.name} ({out.stat().st_size / 1e6:.1f} MB) in {m.root}")
        return 0

    return run_cli(body)


if __name__ == "__main__":
    sys.exit(main())
