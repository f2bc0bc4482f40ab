"""TensorRT engine builders of ``pkdn-export --target tensorrt --builder ...`` (see
:data:`..settings.BUILDERS`): which one runs here, and building + registering the engine.

==============  ===================================================================================
builder         what it does (engine: ``model_trt<major>.plan`` in the artifact, registered)
==============  ===================================================================================
torch-tensorrt  fp32/fp16: ``torch.export`` of the student → ``torch_tensorrt.dynamo
                .convert_exported_program_to_serialized_trt_engine`` (a plain TensorRT engine that
                our backend and ``trtexec --loadEngine`` read); ``--exported-program`` also saves
                ``model_trt.ep`` (``torch_tensorrt.save``) for PyTorch users. int8: our Q/DQ ONNX
                built by the TensorRT Python API that torch-tensorrt installs (same graph as below).
tensorrt        the TensorRT Python API on the artifact's ONNX (:func:`pkdn_edge.engines.tensorrt
                .build_engine_file`).
trtexec         the BUILD.md ``trtexec`` command of the installed TensorRT generation.
==============  ===================================================================================

``auto`` takes the first available in that order; none available → no engine (the artifact's
ONNX + BUILD.md, as before). Every engine is registered with the TensorRT version, the GPU's compute
capability and the builder (``manifest.extras.engine``), then verified with the ``tensorrt`` backend.
Nothing here has run on a GPU in this repository's CI: the plumbing is tested with fake modules
(tests/test_export_trt.py); ``benchmarks/gpu_check.sh`` is the check on a real GPU.
"""

from __future__ import annotations

import importlib
import inspect
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any, Callable

from pkdn_edge.engines.base import module_available
from pkdn_edge.errors import PKDNError
from pkdn_edge.manifest import Manifest, read_manifest

ORDER = ("torch-tensorrt", "tensorrt", "trtexec")
DEVICE = "cuda"  # where torch-tensorrt traces the student (tests with fake modules set "cpu")
TRTEXEC_PATHS = ("/usr/src/tensorrt/bin/trtexec",)  # JetPack puts it here, not on PATH


def _cuda_visible() -> bool:
    """A CUDA GPU through torch or cuda-python (cheap; False on this CPU machine)."""
    try:
        import torch

        if torch.cuda.is_available():
            return True
    except ImportError:
        pass
    from pkdn_edge.engines.trt_common import compute_capability

    return compute_capability() is not None


def trtexec_path() -> str | None:
    """``trtexec`` on PATH, else JetPack's ``/usr/src/tensorrt/bin/trtexec``; None when absent."""
    found = shutil.which("trtexec")
    if found:
        return found
    return next((p for p in TRTEXEC_PATHS if Path(p).is_file()), None)


def why_unavailable(builder: str) -> str | None:
    """Why ``builder`` cannot build an engine here (None: it can)."""
    if builder == "torch-tensorrt":
        if not module_available("torch_tensorrt"):
            return "torch-tensorrt is not installed (pip install torch-tensorrt, matching your CUDA torch)"
        return None if _cuda_visible() else "no CUDA GPU is visible"
    if builder == "tensorrt":
        if not module_available("tensorrt"):
            return "TensorRT is not installed here"
        return None if _cuda_visible() else "no CUDA GPU is visible"
    if builder == "trtexec":
        return None if trtexec_path() else "trtexec is not on PATH nor in /usr/src/tensorrt/bin"
    raise PKDNError(f"unknown builder {builder!r}; choose from auto, {', '.join(ORDER)}, none")


def choose(requested: str) -> tuple[str | None, str]:
    """(builder to run or None, why none runs). ``auto``: the first of :data:`ORDER` available;
    an explicit builder that cannot run here is a :class:`PKDNError` naming what is missing."""
    if requested == "none":
        return None, "--builder none"
    if requested != "auto":
        why = why_unavailable(requested)
        if why:
            raise PKDNError(f"--builder {requested} cannot build an engine here: {why}")
        return requested, ""
    reasons = []
    for b in ORDER:
        why = why_unavailable(b)
        if why is None:
            return b, ""
        reasons.append(f"{b}: {why}")
    first = why_unavailable("tensorrt")
    return None, first if first else "; ".join(reasons)


# --------------------------------------------------------------------------------------------------
# the builders; each returns (engine path, extra facts for manifest.extras.engine)


def _trt_major_here() -> int:
    if module_available("tensorrt"):
        from pkdn_edge.engines.trt_common import trt_major

        return trt_major(importlib.import_module("tensorrt"))
    return 10


def trtexec_version(exe: str) -> tuple[int, int] | None:
    """(major, minor) from ``trtexec``'s banner (``[TensorRT v100300]`` → (10, 3); ``v8601`` → (8, 6))."""
    try:
        r = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(r"TensorRT v(\d+)", r.stdout + r.stderr)
    if not m:
        return None
    v = m.group(1)
    return (int(v[:-4]), int(v[-4:-2])) if len(v) >= 6 else (int(v[0]), int(v[1]))


def build_trtexec(folder: Path, manifest: Manifest, log: Callable[[str], None]) -> tuple[Path, dict[str, Any]]:
    """Run the BUILD.md command of the installed TensorRT generation in ``folder``."""
    exe = trtexec_path()
    if exe is None:
        raise PKDNError("trtexec is not on PATH nor in /usr/src/tensorrt/bin")
    ver = trtexec_version(exe)
    major = ver[0] if ver else _trt_major_here()
    cmds = manifest.extras.get("build_commands") or {}
    cmd = cmds.get(str(major)) or cmds.get("11" if major >= 11 else "10")
    if not cmd:
        raise PKDNError(f"{folder}/manifest.json has no trtexec command for TensorRT {major}")
    argv = [exe] + cmd.split()[1:]
    log(f"building the engine with trtexec (TensorRT {major}): {' '.join(argv)}")
    r = subprocess.run(argv, cwd=folder, capture_output=True, text=True)
    out = folder / next(a.split("=", 1)[1] for a in argv if a.startswith("--saveEngine="))
    if r.returncode != 0 or not out.is_file():
        tail = " | ".join((r.stderr or r.stdout).strip().splitlines()[-3:])
        raise PKDNError(f"trtexec failed (exit {r.returncode}): {tail}")
    return out, {"builder": "trtexec", "command": " ".join(argv[1:]),
                 **({"trtexec_version": f"{ver[0]}.{ver[1]}"} if ver else {})}


def build_tensorrt_api(folder: Path, manifest: Manifest, log: Callable[[str], None]) -> tuple[Path, dict[str, Any]]:
    from pkdn_edge.engines.tensorrt import build_engine_file

    log("building the TensorRT engine on this machine (TensorRT Python API) ...")
    return build_engine_file(manifest), {"builder": "tensorrt"}


class _LrToSr:
    """Wraps the student so the exported program's input is named ``lr`` and, for fp16, the network
    computes in fp16 with float32 input/output (as ``model_fp16.onnx``)."""

    @staticmethod
    def make(model: Any, half: bool) -> Any:
        import torch

        class LrToSr(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.net = model.half() if half else model

            def forward(self, lr: torch.Tensor) -> torch.Tensor:
                y = self.net(lr.half() if half else lr)
                return y.float()

        return LrToSr().eval()


def _accepted(fn: Any, **kw: Any) -> dict[str, Any]:
    """The keywords ``fn`` accepts (torch-tensorrt renamed/deprecated some across versions)."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return kw
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return kw
    return {k: v for k, v in kw.items() if k in params}


def engine_io(data: bytes) -> dict[str, str]:
    """``{"input": name, "output": name}`` of a serialized engine (needs TensorRT and its GPU)."""
    trt = importlib.import_module("tensorrt")
    engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(data)
    if engine is None:
        raise PKDNError("TensorRT cannot load the engine torch-tensorrt just built")
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
    outputs = [n for n in names if n not in inputs]
    if len(inputs) != 1 or len(outputs) != 1:
        raise PKDNError(f"the torch-tensorrt engine has I/O tensors {names}; expected one input and one output")
    return {"input": inputs[0], "output": outputs[0]}


def build_torch_tensorrt(folder: Path, manifest: Manifest, model: Any, log: Callable[[str], None],
                         save_program: bool = False) -> tuple[Path, dict[str, Any]]:
    """torch-tensorrt's dynamo path (see the module docstring). ``model``: the fp32 student (CPU)."""
    if manifest.precision == "int8":
        log("torch-tensorrt builder, int8: building our Q/DQ ONNX with the TensorRT it installed")
        path, info = build_tensorrt_api(folder, manifest, log)
        return path, {**info, "builder": "torch-tensorrt", "int8_from": "Q/DQ ONNX (TensorRT Python API)"}
    import copy

    import torch
    import torch_tensorrt

    from pkdn_edge.engines.trt_common import trt_major

    half = manifest.precision == "fp16"
    net = _LrToSr.make(copy.deepcopy(model).float().eval(), half).to(DEVICE)
    h, w = manifest.lr_size
    n = manifest.batch or 2  # a dynamic batch must not be traced at 1 (torch.export specializes 0/1)
    example = torch.rand(n, 3, h, w, device=DEVICE)
    dyn = None
    if manifest.dynamic:
        dyn = {"lr": {0: torch.export.Dim("batch", min=1, max=16)}}
        spec = torch_tensorrt.Input(min_shape=(1, 3, h, w), opt_shape=(4, 3, h, w), max_shape=(16, 3, h, w),
                                    dtype=torch.float32, name="lr")
    else:
        spec = torch_tensorrt.Input(shape=(n, 3, h, w), dtype=torch.float32, name="lr")
    log(f"building the engine with torch-tensorrt {torch_tensorrt.__version__} (dynamo, {manifest.precision}) ...")
    with torch.no_grad():
        ep = torch.export.export(net, (example,), dynamic_shapes=dyn)
        conv = torch_tensorrt.dynamo.convert_exported_program_to_serialized_trt_engine
        data = conv(ep, **_accepted(conv, arg_inputs=[spec], inputs=[spec], use_explicit_typing=True,
                                    enabled_precisions={torch.float16, torch.float32} if half else {torch.float32}))
    data = bytes(data)
    major = trt_major(importlib.import_module("tensorrt"))
    out = folder / f"model_trt{major}.plan"
    from pkdn_edge.atomic import atomic_write_bytes

    atomic_write_bytes(out, data)
    info: dict[str, Any] = {"builder": "torch-tensorrt", "torch_tensorrt": str(torch_tensorrt.__version__),
                            "io": engine_io(data)}
    if save_program:
        log("torch-tensorrt: compiling and saving the ExportedProgram model_trt.ep ...")
        comp = torch_tensorrt.dynamo.compile
        gm = comp(ep, **_accepted(comp, arg_inputs=[spec], inputs=[spec], use_explicit_typing=True,
                                  enabled_precisions={torch.float16, torch.float32} if half else {torch.float32}))
        torch_tensorrt.save(gm, str(folder / "model_trt.ep"), arg_inputs=[example])
        info["exported_program"] = "model_trt.ep"
    return out, info


def build_and_register(builder: str, folder: Path, model: Any, log: Callable[[str], None],
                       save_program: bool = False) -> str:
    """Build the engine of the artifact in ``folder`` with ``builder`` and register it (TensorRT
    version, compute capability, builder and I/O names in ``manifest.extras.engine``). Returns the
    backend that verifies it (``tensorrt``)."""
    from pkdn_edge.engines.tensorrt import register_engine

    manifest = read_manifest(folder)
    if builder == "torch-tensorrt":
        path, info = build_torch_tensorrt(folder, manifest, model, log, save_program)
    elif builder == "tensorrt":
        path, info = build_tensorrt_api(folder, manifest, log)
    elif builder == "trtexec":
        path, info = build_trtexec(folder, manifest, log)
    else:
        raise PKDNError(f"unknown builder {builder!r}")
    register_engine(folder, path, check=False, info=info)  # verification loads it right after
    if info.get("exported_program"):
        from pkdn_edge.manifest import add_file

        add_file(folder, info["exported_program"])
    return "tensorrt"
