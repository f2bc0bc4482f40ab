"""The engine interface shared by every backend, and :func:`load_engine`.

An engine wraps one exported artifact (see :mod:`pkdn_edge.manifest`)::

    engine = load_engine("exports/openvino_int8_x4")      # backend from the manifest's target
    sr = engine.run(faces_bgr)    # (N,h,w,3) uint8 BGR  ->  (N,s·h,s·w,3) uint8 BGR
    y = engine.run_tensor(x)      # (N,3,h,w) float32 RGB, manifest normalization -> (N,3,s·h,s·w)
    engine = load_engine("exports/openvino_int8_x4", tta="flip")  # mirror self-ensemble, 2x compute

Backends implement only :meth:`Engine._infer` on a batch the artifact accepts; this class does
the pixel conversion (BGR→RGB, ``/255``, mean/std, NCHW; back: clamp to ``range``, ``×255``,
round, BGR) and the batching (fixed-batch artifacts get padded or split batches), and the optional
test-time augmentation (``tta="flip"``: the mean of the face and its mirror image, mirrored back).

Nothing here imports a backend or torch: a backend module is imported only when it is asked for.
"""

from __future__ import annotations

import importlib
import importlib.util
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pkdn_edge.errors import MissingDependencyError, PKDNError
from pkdn_edge.manifest import MANIFEST_NAME, Manifest, read_manifest


@dataclass(frozen=True)
class BackendInfo:
    """One runtime backend: the module implementing it, what it needs, which targets it runs.

    This is the one backend table: ``export/formats.py`` names a row of it per export target (and
    a test checks they agree), and model selection (:mod:`.select`) should search ``search``
    folders in ``precisions`` order.
    """

    name: str
    module: str            # pkdn_edge.engines.<module>
    package: str           # the Python package it imports
    extra: str | None      # pip extra that installs it (None: not on PyPI)
    targets: tuple[str, ...]  # export targets whose artifacts it can run (first = its own)
    install_hint: str = ""
    search: tuple[str, ...] = ()      # artifact targets model selection looks for, in order (default: targets[:1])
    precisions: tuple[str, ...] = ()  # precisions model selection tries, in order of preference


BACKENDS: dict[str, BackendInfo] = {
    "onnxruntime": BackendInfo("onnxruntime", "pkdn_edge.engines.onnxruntime", "onnxruntime", "onnxruntime",
                               ("onnx", "tensorrt"), search=("onnx",), precisions=("fp32", "int8", "fp16")),
    "openvino": BackendInfo("openvino", "pkdn_edge.engines.openvino", "openvino", "openvino",
                            ("openvino", "onnx", "tensorrt"), search=("openvino", "onnx"),
                            precisions=("fp32", "int8", "fp16")),
    "tensorrt": BackendInfo("tensorrt", "pkdn_edge.engines.tensorrt", "tensorrt", None, ("tensorrt",),
                            "TensorRT ships with JetPack on Jetson (sudo apt install nvidia-jetpack; Python: "
                            "python3-libnvinfer) or NVIDIA's installers on x86 (pip install tensorrt)",
                            search=("tensorrt",), precisions=("fp16", "int8", "fp32")),
    "torch": BackendInfo("torch", "pkdn_edge.engines.torch", "torch", "train", ("torch",), search=("torch",),
                         precisions=("fp32", "fp16")),
}
# each export target's own backend (the backend whose targets[0] it is); export/formats.py agrees (tested)
DEFAULT_BACKEND = {b.targets[0]: name for name, b in BACKENDS.items()}


def module_available(package: str) -> bool:
    """Whether ``package`` can be imported here (cheap: nothing is imported)."""
    try:
        return importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):
        return False


def available_backends() -> list[str]:
    """Backends whose Python package is importable here (cheap: nothing is imported)."""
    return [name for name, b in BACKENDS.items() if module_available(b.package)]


def missing_backend_error(name: str, purpose: str = "") -> MissingDependencyError:
    """The error for a backend whose package is absent, naming how to get it."""
    b = BACKENDS[name]
    err = MissingDependencyError(b.package, b.extra, purpose or f"the {name} backend")
    if b.install_hint:
        err.args = (f"{b.package} is not installed (needed for {purpose or f'the {name} backend'}): {b.install_hint}",)
    return err


class Engine:
    """Super-resolves aligned LR faces with one exported artifact.

    Attributes:
        manifest: the artifact's :class:`~pkdn_edge.manifest.Manifest`.
        backend: backend name (``onnxruntime``, ``openvino``, ``tensorrt``, ``torch``).
        precision: the artifact's precision (``fp32``, ``fp16``, ``int8``).
        scale: SR factor ``s``.
        lr_size: ``(h, w)`` of an input face; outputs are ``(s·h, s·w)``.
        batch: the fixed batch of the artifact, or ``None`` when any batch runs in one call.
        threads: CPU threads the backend was asked to use.
        name: a short label for logs, e.g. ``"openvino int8 x4"``.
        tta: ``"none"``, or ``"flip"``: every face is also run mirrored left-right and the two
            outputs are averaged (same batch call on dynamic-batch artifacts; twice the compute).
    """

    backend = "base"
    tta = "none"

    def __init__(self, manifest: Manifest, threads: int = 2, precision: str | None = None) -> None:
        self.manifest = manifest
        self.scale = int(manifest.scale)
        self.lr_size: tuple[int, int] = manifest.lr_size
        self.precision = manifest.precision
        self.threads = int(threads)
        self.batch: int | None = None if manifest.dynamic else int(manifest.batch or manifest.input_shape[0])
        norm = manifest.normalization
        self._mean = np.asarray(norm.get("mean", [0, 0, 0]), np.float32).reshape(1, 3, 1, 1)
        self._std = np.asarray(norm.get("std", [1, 1, 1]), np.float32).reshape(1, 3, 1, 1)
        self._range = tuple(float(v) for v in norm.get("range", [0.0, 1.0]))
        self._identity_norm = bool(np.all(self._mean == 0) and np.all(self._std == 1))
        self.requested_precision = precision

    # -- to implement ----------------------------------------------------------------------------
    def _infer(self, x: np.ndarray) -> np.ndarray:
        """Run the model on ``x`` (B,3,h,w) float32 contiguous, where B == ``self.batch`` for a
        fixed-batch artifact. Returns (B,3,s·h,s·w) float32."""
        raise NotImplementedError

    # -- public ----------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        tta = "" if self.tta == "none" else f" +{self.tta}"
        return f"{self.backend} {self.precision} x{self.scale}{tta}"

    def __repr__(self) -> str:
        where = self.manifest.root or "?"
        batch = self.batch or "dynamic"
        return f"<{type(self).__name__} {self.name} batch={batch} threads={self.threads} from {where}>"

    def run_tensor(self, x: np.ndarray) -> np.ndarray:
        """(N,3,h,w) float32 normalized RGB → (N,3,s·h,s·w) float32 (unclamped), any N ≥ 0."""
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 4 or x.shape[1] != 3 or tuple(x.shape[2:]) != self.lr_size:
            raise PKDNError(f"{self.name}: expected input (N,3,{self.lr_size[0]},{self.lr_size[1]}), got {x.shape}")
        if self.tta == "flip" and x.shape[0] > 0:
            n = x.shape[0]
            y = self._run_batches(np.concatenate([x, x[..., ::-1]]))
            return 0.5 * (y[:n] + y[n:, ..., ::-1])
        return self._run_batches(x)

    def _run_batches(self, x: np.ndarray) -> np.ndarray:
        """:meth:`_infer` over any number of inputs, padding/splitting for fixed-batch artifacts."""
        n = x.shape[0]
        h, w = self.lr_size
        out_shape = (n, 3, h * self.scale, w * self.scale)
        if n == 0:
            return np.empty(out_shape, np.float32)
        if self.batch is None:
            return self._infer_checked(np.ascontiguousarray(x))
        b = self.batch
        out = np.empty(out_shape, np.float32)
        for i in range(0, n, b):
            chunk = x[i : i + b]
            k = chunk.shape[0]
            if k < b:  # pad the last chunk to the artifact's batch (edge values: no NaN risk)
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], b - k, axis=0)])
            out[i : i + k] = self._infer_checked(np.ascontiguousarray(chunk))[:k]
        return out

    def _infer_checked(self, x: np.ndarray) -> np.ndarray:
        """:meth:`_infer` whose failure on the manifest's shapes (an x8 manifest on an x4 model, a wrong
        input size) is one :class:`PKDNError` line at warm-up, not a runtime's traceback at the first face."""
        h, w = self.lr_size
        want = (x.shape[0], 3, h * self.scale, w * self.scale)
        try:
            y = np.asarray(self._infer(x), np.float32)
        except (PKDNError, MemoryError):
            raise
        except Exception as exc:  # noqa: BLE001 - the runtime's own error, reduced to its first line
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
            raise PKDNError(f"{self.name}: the model in {self.manifest.root} does not run on the input "
                            f"{list(x.shape)} its manifest declares ({reason}); re-export the artifact") from None
        if y.size != int(np.prod(want)):
            raise PKDNError(f"{self.name}: the model in {self.manifest.root} gives {list(y.shape)} for "
                            f"{list(x.shape)}, but its manifest declares x{self.scale} ({list(want)}): the manifest "
                            f"does not describe this model; re-export the artifact")
        return y.reshape(want)

    def normalize(self, x01: np.ndarray) -> np.ndarray:
        """(N,3,h,w) RGB in [0, 1] → the model's input: ``(x - mean) / std`` of the manifest. The one
        place the manifest's normalization is applied to inputs (the loop via :meth:`preprocess`,
        ``pkdn-train eval`` via :meth:`run_unit`)."""
        x = np.asarray(x01, np.float32)
        if not self._identity_norm:
            x = (x - self._mean) / self._std
        return np.ascontiguousarray(x)

    def denormalize(self, y: np.ndarray) -> np.ndarray:
        """The model's output → RGB in [0, 1]: ``y * std + mean``, clamped to ``range``, ``range``
        mapped to [0, 1] (the inverse of :meth:`normalize`, shared by the loop and eval)."""
        y = np.asarray(y, np.float32)
        if not self._identity_norm:
            y = y * self._std + self._mean
        lo, hi = self._range
        y = np.clip(y, lo, hi)
        if (lo, hi) != (0.0, 1.0):
            y = (y - lo) / (hi - lo)
        return y

    def run_unit(self, x01: np.ndarray) -> np.ndarray:
        """(N,3,h,w) float RGB in [0, 1] → (N,3,s·h,s·w) float RGB in [0, 1], with the manifest's
        normalization both ways (what :meth:`run` does, before the uint8 conversion)."""
        return self.denormalize(self.run_tensor(self.normalize(x01)))

    def preprocess(self, faces_bgr: np.ndarray) -> np.ndarray:
        """(N,h,w,3) uint8 BGR → (N,3,h,w) float32 normalized RGB."""
        return self.normalize(faces_bgr[..., ::-1].transpose(0, 3, 1, 2).astype(np.float32) * np.float32(1.0 / 255.0))

    def postprocess(self, y: np.ndarray) -> np.ndarray:
        """(N,3,H,W) float32 normalized RGB → (N,H,W,3) uint8 BGR (clamped, rounded)."""
        y = self.denormalize(y) * np.float32(255.0) + np.float32(0.5)
        return np.ascontiguousarray(y.astype(np.uint8)[:, ::-1].transpose(0, 2, 3, 1))

    def run(self, faces_bgr: np.ndarray) -> np.ndarray:
        """(N,h,w,3) uint8 BGR aligned LR faces → (N,s·h,s·w,3) uint8 BGR. A single (h,w,3) face
        gives a single (s·h,s·w,3) face."""
        faces = np.asarray(faces_bgr)
        single = faces.ndim == 3
        if single:
            faces = faces[None]
        if faces.ndim != 4 or faces.shape[3] != 3 or tuple(faces.shape[1:3]) != self.lr_size:
            h, w = self.lr_size
            raise PKDNError(f"{self.name}: expected faces (N,{h},{w},3), got {faces_bgr.shape}")
        if faces.dtype != np.uint8:
            raise PKDNError(f"{self.name}: expected uint8 BGR faces, got {faces.dtype}")
        out = self.postprocess(self.run_tensor(self.preprocess(faces)))
        return out[0] if single else out

    def warmup(self, n: int = 3) -> float:
        """Run ``n`` dummy batches (first-call allocations, kernel selection). Returns seconds spent."""
        t = time.perf_counter()
        x = np.full((self.batch or 1, 3, *self.lr_size), 0.5, np.float32)
        for _ in range(max(1, int(n))):
            self.run_tensor(x)
        return time.perf_counter() - t

    def close(self) -> None:
        """Release backend resources (optional; engines are also freed by garbage collection)."""


def _resolve_artifact(artifact: str | Path, backend: str | None) -> tuple[Path, str | None]:
    p = Path(artifact)
    if not p.exists():
        raise PKDNError(f"artifact {p} does not exist (export one with pkdn-export)")
    if p.is_file() and p.suffix == ".pt":
        if backend not in (None, "torch"):
            raise PKDNError(f"{p} is a PyTorch checkpoint: use backend 'torch' or export it with pkdn-export")
        return p, "torch"
    if p.is_file() and p.name != MANIFEST_NAME:
        raise PKDNError(f"{p} is neither an artifact folder, its {MANIFEST_NAME}, nor a .pt checkpoint")
    return p, backend


TTA_MODES = ("none", "flip")


def load_engine(artifact: str | Path, backend: str | None = None, threads: int = 2,
                precision: str | None = None, tta: str = "none", **options: Any) -> Engine:
    """Open an exported artifact (its folder or ``manifest.json``; or a ``.pt`` checkpoint for the
    ``torch`` backend) with ``backend`` (default: the manifest target's own backend).

    ``threads``: CPU threads for the backend; ``precision``: the precision you expect (an error if
    the artifact has another one; for OpenVINO ``fp16``/``bf16`` on an fp32 artifact select the
    inference precision hint instead); ``tta``: ``"flip"`` averages each face's output with that of
    its mirror image (see :class:`Engine`); ``options``: backend-specific keywords (``device`` for
    OpenVINO, ``providers`` for ONNX Runtime, ...). Raises :class:`PKDNError` with the fix on
    a missing/corrupt artifact, an unknown backend or a backend that is not installed.
    """
    if tta not in TTA_MODES:
        raise PKDNError(f"unknown tta {tta!r}; choose from {', '.join(TTA_MODES)}")
    path, backend = _resolve_artifact(artifact, backend)
    if backend is not None and backend not in BACKENDS:
        raise PKDNError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
    if backend == "torch" and path.is_file() and path.suffix == ".pt":
        manifest = None
    else:
        manifest = read_manifest(path)
        own = DEFAULT_BACKEND.get(manifest.target)
        backend = backend or own
        if backend is None:
            raise PKDNError(f"artifact target {manifest.target!r} has no runtime backend")
        if manifest.target not in BACKENDS[backend].targets:
            raise PKDNError(f"backend {backend} cannot run a {manifest.target} artifact ({path}); "
                            f"use backend {own} or export for target {BACKENDS[backend].targets[0]}")
    info = BACKENDS[backend]
    if not module_available(info.package):
        raise missing_backend_error(backend)
    module = importlib.import_module(info.module)
    engine = module.open_engine(path if manifest is None else manifest, threads=threads, precision=precision, **options)
    engine.tta = tta
    return engine


def external_data_hint(exc: BaseException, reason: str | None = None) -> str:
    """A runtime's load error in one line; for an ONNX model that keeps its weights in external files
    (which it reads beside the model, outside the manifest's hashed list), say so."""
    text = reason if reason is not None else (str(exc).splitlines() or [type(exc).__name__])[0]
    if "external" in str(exc).lower():
        return ("the model stores its weights in external data files; a pkdn-edge artifact holds them in the "
                f"listed model file (re-export it, or save it with onnx.save_model(..., save_as_external_data=False)) "
                f"({text[:200]})")
    return text


def check_precision(
    manifest: Manifest, precision: str | None, backend: str, allowed_hints: tuple[str, ...] = ()
) -> None:
    """Refuse a requested precision that the artifact does not have (except backend hints)."""
    if precision is None or precision == manifest.precision or precision in allowed_hints:
        return
    raise PKDNError(f"{backend}: artifact {manifest.root} is {manifest.precision}, not {precision}; export a "
                    f"{precision} one with `pkdn-export --target {manifest.target} --precision {precision} "
                    f"--scale {manifest.scale}`")
