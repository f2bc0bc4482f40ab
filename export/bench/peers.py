"""Peers for side-by-side benchmarks: OpenCV dnn_superres models and PIL bicubic.

**OpenCV dnn_superres** (FSRCNN ×4, ESPCN ×4, LapSRN ×4/×8: TensorFlow ``.pb`` files in
``shared/peers/opencv_dnn_superres/``). ``cv2.dnn_superres`` lives in ``opencv-contrib-python``,
which conflicts with the ``opencv-python`` this project depends on, so :class:`OpenCVSuperRes`
loads the graphs with ``cv2.dnn.readNetFromTensorflow`` and reproduces the wrapper's processing
for these three models (``DnnSuperResImpl::upsample`` of OpenCV 4.x):

1. BGR uint8 → YCrCb (``cv2.COLOR_BGR2YCrCb``) → float32 / 255;
2. only **Y** goes through the network (blob ``1×1×h×w``), output ``1×1×sh×sw`` (layer
   ``NCHW_output``: the full-scale output, also for the multi-output LapSRN);
3. Cr and Cb are upscaled with ``cv2.resize`` (bilinear, the wrapper's default);
4. merge, ×255 with rounding and saturation to uint8, ``COLOR_YCrCb2BGR``.

The graphs contain a ``DepthToSpace`` op that dnn_superres implements as a custom layer (the
stock OpenCV layer needs a ``blocksize`` parameter the TensorFlow importer does not pass), so
:func:`register_depth_to_space` registers an equivalent Python layer (``cv2.dnn_registerLayer``,
process-wide; TensorFlow's DCR channel order).

Checked on the eval faces against the numbers measured with the real ``cv2.dnn_superres`` in
``shared/design/PKDN.md`` §4 (the check's numbers: docs/results.md, "Numbers moved out of
docstrings (issue 32)").

**Bicubic** (:class:`PILBicubic`): PIL bicubic ↑s, the baseline of the evaluation protocol.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from pkdn_edge.engines.bicubic import BicubicEngine
from pkdn_edge.errors import PKDNError


@dataclass(frozen=True)
class PeerModel:
    """One dnn_superres model: ``key`` (config id prefix), display ``name``, scale and file name."""

    key: str
    name: str
    scale: int
    file: str
    paper: str


PEER_MODELS: tuple[PeerModel, ...] = (
    PeerModel("fsrcnn", "FSRCNN", 4, "FSRCNN_x4.pb", "Dong et al., ECCV 2016"),
    PeerModel("espcn", "ESPCN", 4, "ESPCN_x4.pb", "Shi et al., CVPR 2016"),
    PeerModel("lapsrn", "LapSRN", 4, "LapSRN_x4.pb", "Lai et al., CVPR 2017"),
    PeerModel("lapsrn", "LapSRN", 8, "LapSRN_x8.pb", "Lai et al., CVPR 2017"),
)


def default_peer_dir() -> Path | None:
    """``shared/peers/opencv_dnn_superres`` when present (see :func:`pkdn_edge.export.data.shared_root`)."""
    from pkdn_edge.export.data import shared_root

    root = shared_root()
    p = root / "peers" / "opencv_dnn_superres" if root else None
    return p if p is not None and p.is_dir() else None


def find_peers(folder: Path | None, scales: tuple[int, ...] = (4, 8)) -> tuple[list[tuple[PeerModel, Path]], list[str]]:
    """The peer models present in ``folder`` for ``scales``, and one note per missing one."""
    found, notes = [], []
    for m in PEER_MODELS:
        if m.scale not in scales:
            continue
        path = folder / m.file if folder is not None else None
        if path is not None and path.is_file():
            found.append((m, path))
        else:
            where = folder if folder is not None else "shared/peers/opencv_dnn_superres (absent)"
            notes.append(f"{m.name} x{m.scale}: {m.file} not found in {where}: skipped")
    return found, notes


class _DepthToSpace:
    """TensorFlow ``DepthToSpace`` (DCR order) as an OpenCV dnn Python layer, NCHW blobs."""

    def __init__(self, params: dict, blobs: list) -> None:
        self.block = 0

    def getMemoryShapes(self, inputs: list) -> list:  # noqa: N802 - OpenCV's API name
        n, c, h, w = inputs[0]
        if c in (4, 9, 16):  # one image channel (what the dnn_superres layer assumes too)
            s = int(round(c ** 0.5))
        else:
            s = int(round((c / 3) ** 0.5))
        if s < 1 or c % (s * s):
            raise PKDNError(f"DepthToSpace: cannot infer the block size of {c} channels")
        self.block = s
        return [[n, c // (s * s), h * s, w * s]]

    def forward(self, inputs: list) -> list:
        x = inputs[0]
        n, c, h, w = x.shape
        s = self.block
        co = c // (s * s)
        y = x.reshape(n, s, s, co, h, w).transpose(0, 3, 4, 1, 5, 2).reshape(n, co, h * s, w * s)
        return [np.ascontiguousarray(y)]


_REGISTERED = False


def register_depth_to_space() -> None:
    """Register :class:`_DepthToSpace` as OpenCV dnn's ``DepthToSpace`` layer (once per process)."""
    global _REGISTERED
    if not _REGISTERED:
        cv2.dnn_registerLayer("DepthToSpace", _DepthToSpace)
        _REGISTERED = True


class OpenCVSuperRes:
    """A dnn_superres FSRCNN / ESPCN / LapSRN model run through ``cv2.dnn`` (see the module doc).

    Engine-like interface: ``scale``, ``lr_size``, ``name``, ``backend``, ``precision`` and
    :meth:`run` ((h,w,3) or (N,h,w,3) uint8 BGR → (s·h,s·w,3) / (N,s·h,s·w,3) uint8 BGR).
    ``threads`` sets ``cv2.setNumThreads`` (process-wide; ``None`` leaves it).
    """

    backend = "opencv-dnn"
    precision = "fp32"
    output = "NCHW_output"

    def __init__(self, path: str | Path, scale: int, name: str | None = None, threads: int | None = None,
                 lr_size: int | None = None) -> None:
        path = Path(path)
        if not path.is_file():
            raise PKDNError(f"peer model {path} does not exist")
        register_depth_to_space()
        if threads is not None:
            cv2.setNumThreads(max(1, int(threads)))
        try:
            self.net = cv2.dnn.readNetFromTensorflow(str(path))
        except cv2.error as exc:
            raise PKDNError(f"OpenCV cannot read {path}: {str(exc).strip().splitlines()[-1]}") from None
        self.net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
        self.net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
        if self.output not in self.net.getLayerNames():
            raise PKDNError(f"{path} has no {self.output!r} layer: not a dnn_superres FSRCNN/ESPCN/LapSRN model")
        self.path = path
        self.scale = int(scale)
        n = int(lr_size or 128 // self.scale)
        self.lr_size = (n, n)
        self.name = name or path.stem

    def upsample_y(self, y: np.ndarray) -> np.ndarray:
        """(h,w) float32 luma in [0,1] → (s·h,s·w) float32 (unclamped)."""
        self.net.setInput(np.ascontiguousarray(y, np.float32)[None, None])
        out = self.net.forward(self.output)
        s = self.scale
        if out.shape[-2:] != (y.shape[0] * s, y.shape[1] * s):
            raise PKDNError(f"{self.name}: output {out.shape} is not x{s} of the input {y.shape}")
        return out[0, 0]

    def _one(self, face: np.ndarray) -> np.ndarray:
        ycc = cv2.cvtColor(face, cv2.COLOR_BGR2YCrCb).astype(np.float32) * np.float32(1.0 / 255.0)
        h, w = face.shape[:2]
        s = self.scale
        y = self.upsample_y(ycc[..., 0])
        cr = cv2.resize(ycc[..., 1], (w * s, h * s), interpolation=cv2.INTER_LINEAR)
        cb = cv2.resize(ycc[..., 2], (w * s, h * s), interpolation=cv2.INTER_LINEAR)
        merged = cv2.merge([y, cr, cb]) * np.float32(255.0)
        merged = np.clip(np.rint(merged), 0, 255).astype(np.uint8)  # convertTo(CV_8U, 255): round + saturate
        return cv2.cvtColor(merged, cv2.COLOR_YCrCb2BGR)

    def run(self, faces_bgr: np.ndarray) -> np.ndarray:
        faces = np.asarray(faces_bgr)
        if faces.dtype != np.uint8 or faces.shape[-1] != 3 or faces.ndim not in (3, 4):
            raise PKDNError(f"{self.name}: expected uint8 BGR faces (N,h,w,3), got {faces.dtype} {faces.shape}")
        if faces.ndim == 3:
            return self._one(faces)
        return np.stack([self._one(f) for f in faces]) if len(faces) else np.empty(
            (0, faces.shape[1] * self.scale, faces.shape[2] * self.scale, 3), np.uint8)

    def warmup(self, n: int = 1) -> None:
        face = np.full((*self.lr_size, 3), 128, np.uint8)
        for _ in range(max(1, n)):
            self._one(face)


class PILBicubic(BicubicEngine):
    """PIL bicubic ↑s (the protocol's bicubic baseline): the pipeline's bicubic engine with PIL's
    antialiased kernel instead of OpenCV's. PIL resamples each channel independently, so BGR in →
    BGR out."""

    backend = "pil"
    precision = "uint8"

    def __init__(self, scale: int, lr_size: int | None = None) -> None:
        from PIL import Image

        super().__init__(scale, lr_size)
        self._image = Image

    def _one(self, face: np.ndarray) -> np.ndarray:
        h, w = face.shape[:2]
        im = self._image.fromarray(np.ascontiguousarray(face))
        return np.asarray(im.resize((w * self.scale, h * self.scale), self._image.BICUBIC))

    def run(self, faces_bgr: np.ndarray) -> np.ndarray:
        faces = np.asarray(faces_bgr)
        if faces.ndim == 3:
            return self._one(faces)
        return np.stack([self._one(f) for f in faces])

    def warmup(self, n: int = 1) -> None:
        self._one(np.zeros((*self.lr_size, 3), np.uint8))
