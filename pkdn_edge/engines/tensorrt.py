"""TensorRT backend (Jetson / NVIDIA GPUs): runs the engine named by a ``tensorrt`` artifact.

TensorRT engines are specific to the GPU and the TensorRT version that built them, so
``pkdn-export --target tensorrt`` ships the TensorRT-ready ONNX plus build commands, and the
engine is built **on the device**, either with ``trtexec`` (then ``register`` it) or here::

    python -m pkdn_edge.engines.tensorrt build exports/tensorrt_int8_x4          # Python API build
    python -m pkdn_edge.engines.tensorrt register exports/tensorrt_int8_x4 model.plan  # trtexec-built

Both record the engine in ``manifest.json`` (``engine_file``), after which :func:`load_engine`
deserializes it. I/O binds by tensor name with the TensorRT ≥ 8.5 tensor API
(``set_tensor_address`` + ``execute_async_v3``; required from 10.x) and falls back to the 8.x
binding API (``execute_async_v2``) on older JetPacks. Device memory and streams come from
``cuda-python`` (``cuda.bindings.runtime`` or the older ``cuda.cudart``), else from torch.

Versions: JetPack 4.6 ships TensorRT 8.2 (Nano), JetPack 5.x 8.5, JetPack 6.x 10.3. TensorRT 11
removed the weak-typing precision flags (strongly typed networks only).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
from typing import Any

import numpy as np

from pkdn_edge.errors import PKDNError, run_cli
from pkdn_edge.manifest import Manifest, add_file, read_manifest

from .base import Engine, check_precision, missing_backend_error


def _import_tensorrt() -> Any:
    try:
        return importlib.import_module("tensorrt")
    except ImportError:
        raise missing_backend_error("tensorrt") from None


def trt_major(trt: Any) -> int:
    return int(str(trt.__version__).split(".")[0])


# --------------------------------------------------------------------------------------------------
# CUDA memory: cuda-python or torch


class _CudaPython:
    """Device buffers and a stream through cuda-python's runtime API."""

    def __init__(self) -> None:
        try:
            from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
        except ImportError:
            from cuda import cudart  # type: ignore[no-redef]  # older cuda-python
        self.rt = cudart
        self.stream = self._ok(cudart.cudaStreamCreate())

    def _ok(self, ret: Any) -> Any:
        err, *rest = ret if isinstance(ret, tuple) else (ret,)
        if int(err) != 0:
            raise PKDNError(f"CUDA call failed: {err}")
        return rest[0] if len(rest) == 1 else (rest or None)

    @property
    def stream_handle(self) -> int:
        return int(self.stream)

    def malloc(self, nbytes: int) -> int:
        return int(self._ok(self.rt.cudaMalloc(max(1, nbytes))))

    def free(self, ptr: int) -> None:
        self.rt.cudaFree(ptr)

    def h2d(self, ptr: int, host: np.ndarray) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._ok(self.rt.cudaMemcpyAsync(ptr, host.ctypes.data, host.nbytes, kind, self.stream))

    def d2h(self, host: np.ndarray, ptr: int) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._ok(self.rt.cudaMemcpyAsync(host.ctypes.data, ptr, host.nbytes, kind, self.stream))

    def sync(self) -> None:
        self._ok(self.rt.cudaStreamSynchronize(self.stream))


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
            self._tensors[ptr][: host.nbytes].copy_(self.torch.from_numpy(host.reshape(-1).view(np.uint8)), non_blocking=False)

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
            errors.append(str(exc))
    raise PKDNError("the TensorRT backend needs CUDA memory from cuda-python (pip install cuda-python, matching "
                    "your CUDA/JetPack version) or a CUDA build of torch")


# --------------------------------------------------------------------------------------------------
# engine


class TensorRTEngine(Engine):
    """A deserialized TensorRT engine; inputs/outputs bound by the manifest's tensor names."""

    backend = "tensorrt"

    def __init__(self, manifest: Manifest, threads: int = 2, precision: str | None = None,
                 engine_file: str | None = None) -> None:
        trt = _import_tensorrt()
        super().__init__(manifest, threads, precision)
        check_precision(manifest, precision, self.backend)
        name = engine_file or manifest.engine_file
        if not name:
            raise PKDNError(f"{manifest.root} has no TensorRT engine yet: build it on this device with "
                            f"`python -m pkdn_edge.engines.tensorrt build {manifest.root}` "
                            f"or trtexec (see {manifest.root}/BUILD.md), then register it")
        path = manifest.path(name)
        if not path.is_file():
            raise PKDNError(f"TensorRT engine {path} is missing; rebuild it on this device")
        self.trt = trt
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        self.engine = self.runtime.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise PKDNError(f"TensorRT {trt.__version__} cannot deserialize {path}: engines only run on the GPU and "
                            f"TensorRT version that built them; rebuild it on this device")
        self.context = self.engine.create_execution_context()
        self.cuda = _cuda()
        self.tensor_api = hasattr(self.engine, "num_io_tensors")  # TensorRT >= 8.5
        self._in, self._out = manifest.input_name, manifest.output_name
        names = self._io_names()
        for n in (self._in, self._out):
            if n not in names:
                raise PKDNError(f"engine {path} has tensors {names}, the manifest says {n!r}")
        self.max_batch = self._max_batch()
        self._buffers: dict[str, tuple[int, int]] = {}  # name -> (ptr, nbytes)

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

    def _max_batch(self) -> int:
        shape = self._shape(self._in)
        if shape[0] > 0:
            if self.batch is None:
                self.batch = shape[0]  # a static engine built from a dynamic ONNX
            return shape[0]
        e = self.engine
        try:
            if hasattr(e, "get_tensor_profile_shape"):
                return int(e.get_tensor_profile_shape(self._in, 0)[2][0])
            return int(e.get_profile_shape(0, self._in)[2][0])
        except Exception:
            return 1

    # -- run ------------------------------------------------------------------------------------------
    def _buffer(self, name: str, nbytes: int) -> int:
        ptr, size = self._buffers.get(name, (0, 0))
        if size < nbytes:
            if ptr:
                self.cuda.free(ptr)
            ptr = self.cuda.malloc(nbytes)
            self._buffers[name] = (ptr, nbytes)
        return ptr

    def run_tensor(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float32)
        if self.batch is None and x.shape[0] > self.max_batch:  # split past the profile's max batch
            parts = [super(TensorRTEngine, self).run_tensor(x[i : i + self.max_batch])
                     for i in range(0, x.shape[0], self.max_batch)]
            return np.concatenate(parts)
        return super().run_tensor(x)

    def _infer(self, x: np.ndarray) -> np.ndarray:
        n = x.shape[0]
        h, w = self.lr_size
        xin = np.ascontiguousarray(x.astype(self._dtype(self._in), copy=False))
        out = np.empty((n, 3, h * self.scale, w * self.scale), self._dtype(self._out))
        pin = self._buffer(self._in, xin.nbytes)
        pout = self._buffer(self._out, out.nbytes)
        self.cuda.h2d(pin, xin)
        ctx = self.context
        if self.tensor_api:
            if self._shape(self._in)[0] < 0:
                ctx.set_input_shape(self._in, tuple(xin.shape))
            ctx.set_tensor_address(self._in, pin)
            ctx.set_tensor_address(self._out, pout)
            ok = ctx.execute_async_v3(self.cuda.stream_handle)
        else:  # TensorRT 8.0-8.4 binding API
            e = self.engine
            i_in, i_out = e.get_binding_index(self._in), e.get_binding_index(self._out)
            if self._shape(self._in)[0] < 0:
                ctx.set_binding_shape(i_in, tuple(xin.shape))
            bindings = [0] * e.num_bindings
            bindings[i_in], bindings[i_out] = pin, pout
            ok = ctx.execute_async_v2(bindings, self.cuda.stream_handle)
        if not ok:
            raise PKDNError("TensorRT execution failed")
        self.cuda.d2h(out, pout)
        self.cuda.sync()
        return out.astype(np.float32, copy=False)

    def close(self) -> None:
        for ptr, _ in self._buffers.values():
            self.cuda.free(ptr)
        self._buffers.clear()

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


def build_engine_file(manifest: Manifest, out_name: str | None = None, workspace_mb: int = 1024,
                      opt_batch: int | None = None, max_batch: int | None = None) -> Path:
    """Build a serialized engine from the artifact's ONNX with the TensorRT Python API.

    Precision per generation: 8.x/10.x are weakly typed (fp16: ``BuilderFlag.FP16``; int8: the
    Q/DQ ONNX with ``INT8`` + ``FP16`` flags); 11.x builds strongly typed networks, so the ONNX's own
    types decide (fp16: the fp16 ONNX; int8: the Q/DQ ONNX). Dynamic-batch ONNX gets a profile
    ``1 / opt / max`` (defaults 1 / 4 / 16). Returns the engine path (inside the artifact).
    """
    trt = _import_tensorrt()
    major = trt_major(trt)
    onnx_name = onnx_for_generation(manifest, major)
    onnx_path = manifest.path(onnx_name)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
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
    out = manifest.path(out_name or f"model_trt{major}.plan")
    out.write_bytes(bytes(plan))
    return out


def register_engine(artifact: str | Path, engine_path: str | Path) -> Manifest:
    """Record an engine file (copied into the artifact if it lies elsewhere) in the manifest."""
    m = read_manifest(artifact)
    src = Path(engine_path)
    if not src.is_file():
        raise PKDNError(f"engine file {src} does not exist")
    dst = m.path(src.name)
    if src.resolve() != dst.resolve():
        dst.write_bytes(src.read_bytes())
    info: dict[str, Any] = {}
    try:
        trt = importlib.import_module("tensorrt")
        info["tensorrt"] = str(trt.__version__)
    except ImportError:
        pass
    return add_file(artifact, dst.name, engine_file=dst.name, extras={**m.extras, "engine": info})


def main(argv: list[str] | None = None) -> int:
    """``python -m pkdn_edge.engines.tensorrt build|register ARTIFACT [ENGINE]``."""
    p = argparse.ArgumentParser(prog="python -m pkdn_edge.engines.tensorrt",
                                description="Build or register the TensorRT engine of a tensorrt artifact on this device.")
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="build the engine with the TensorRT Python API and record it")
    b.add_argument("artifact")
    b.add_argument("--workspace-mb", type=int, default=1024)
    b.add_argument("--opt-batch", type=int, default=None)
    b.add_argument("--max-batch", type=int, default=None)
    r = sub.add_parser("register", help="record an engine built with trtexec")
    r.add_argument("artifact")
    r.add_argument("engine")
    args = p.parse_args(argv)

    def body() -> int:
        if args.cmd == "register":
            m = register_engine(args.artifact, args.engine)
            print(f"registered {m.engine_file} in {m.root}/manifest.json")
            return 0
        m = read_manifest(args.artifact)
        if m.target != "tensorrt":
            raise PKDNError(f"{args.artifact} is a {m.target} artifact, not tensorrt")
        out = build_engine_file(m, workspace_mb=args.workspace_mb, opt_batch=args.opt_batch, max_batch=args.max_batch)
        m = register_engine(args.artifact, out)
        eng = open_engine(m)
        eng.warmup(2)
        print(f"built and registered {out.name} ({out.stat().st_size / 1e6:.1f} MB) in {m.root}")
        return 0

    return run_cli(body)


if __name__ == "__main__":
    sys.exit(main())
