"""Frame sources for the webcam loop: camera, video file, image folder and a built-in demo.

Every source is an iterator of :class:`Frame` ``(index, t, image)``: ``image`` is a BGR uint8
(H, W, 3) array, ``t`` the capture time in seconds (camera: wall clock; files and demo: index / fps),
``index`` counts delivered frames. Corrupt frames (``None``, empty, wrong dtype or shape) are skipped
and counted in ``source.skipped``; gray and BGRA frames are converted. All frames of one stream have
the size of the first one (later frames of another size are letterboxed), so a video writer can be
opened once.

``open_source(spec)`` understands: a camera index (``0``), a video file, a folder of images,
``demo`` / ``demo:3`` / ``demo:faces=3,frames=300,jitter=0.5``, and GStreamer cameras (Jetson):
``csi:0`` / ``csi:1,width=1920,height=1080,fps=30,flip=2`` (``nvarguscamerasrc``),
``usb:/dev/video0`` / ``usb:1,width=1280,height=720,mjpeg=1`` (``v4l2src``) or ``gst:<pipeline>``
(a raw pipeline ending in ``appsink``), opened with ``cv2.VideoCapture(pipeline, cv2.CAP_GSTREAMER)``;
these need an OpenCV built with GStreamer (see :func:`opencv_has_gstreamer`). ``Downscale(src, f)`` (``--downscale F``)
shrinks any source by ``f`` with area averaging, to simulate a low-resolution camera.

Runs without torch: numpy + cv2 only.
"""

from __future__ import annotations

import importlib.util
import math
import os
import re
import sys
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator, NamedTuple

import cv2
import numpy as np

from pkdn_edge.errors import ImageReadError, PKDNError

__all__ = [
    "Frame",
    "FrameSource",
    "CameraSource",
    "VideoFileSource",
    "ImageFolderSource",
    "DemoSource",
    "Downscale",
    "CameraNotFoundError",
    "GStreamerSource",
    "GStreamerUnavailableError",
    "csi_pipeline",
    "usb_pipeline",
    "gstreamer_pipeline",
    "opencv_has_gstreamer",
    "open_source",
    "load_demo_face",
    "IMAGE_EXTENSIONS",
]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm")


class CameraNotFoundError(PKDNError):
    """No camera could be opened at the requested index."""


class Frame(NamedTuple):
    index: int
    t: float
    image: np.ndarray


class FrameSource:
    """Base class: subclasses implement :meth:`_read` returning ``(status, image, t)`` where status is
    ``"ok"``, ``"bad"`` (skip + count) or ``"end"``."""

    name = "source"
    fps: float = 30.0
    live = False  # True for cameras: frames come at the device's pace

    def __init__(self) -> None:
        self.skipped = 0        # corrupt frames dropped
        self.delivered = 0
        self.size: tuple[int, int] | None = None  # (w, h) of the stream, fixed by the first frame
        self.end_reason = ""    # why the stream ended (for the summary)
        self._closed = False

    # subclasses ---------------------------------------------------------------------------------
    def _read(self) -> tuple[str, np.ndarray | None, float | None]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _close(self) -> None:
        pass

    # public -------------------------------------------------------------------------------------
    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._close()

    def __enter__(self) -> "FrameSource":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __iter__(self) -> Iterator[Frame]:
        bad_run = 0
        while not self._closed:
            status, img, t = self._read()
            if status == "end":
                break
            img = self._validate(img) if status == "ok" else None
            if img is None:
                self.skipped += 1
                bad_run += 1
                if bad_run > 100:
                    self.end_reason = "more than 100 corrupt frames in a row"
                    break
                continue
            bad_run = 0
            if t is None:
                t = self.delivered / self.fps
            yield Frame(self.delivered, float(t), img)
            self.delivered += 1

    def _validate(self, img: object) -> np.ndarray | None:
        """A usable BGR uint8 frame, or None for a corrupt one."""
        if not isinstance(img, np.ndarray) or img.size == 0 or img.dtype != np.uint8:
            return None
        if img.ndim == 2:
            img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
        elif img.ndim == 3 and img.shape[2] == 4:
            img = cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
        elif img.ndim == 3 and img.shape[2] == 1:
            img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
        if img.ndim != 3 or img.shape[2] != 3 or min(img.shape[:2]) < 8:
            return None
        h, w = img.shape[:2]
        if self.size is None:
            self.size = (w, h)
        elif (w, h) != self.size:
            img = letterbox(img, self.size)
        return img


def letterbox(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Fit ``img`` into ``size`` (w, h) keeping its aspect ratio, black borders."""
    w, h = size
    ih, iw = img.shape[:2]
    k = min(w / iw, h / ih)
    nw, nh = max(1, round(iw * k)), max(1, round(ih * k))
    interp = cv2.INTER_AREA if k < 1 else cv2.INTER_LINEAR
    small = cv2.resize(img, (nw, nh), interpolation=interp)
    out = np.zeros((h, w, 3), np.uint8)
    x0, y0 = (w - nw) // 2, (h - nh) // 2
    out[y0:y0 + nh, x0:x0 + nw] = small
    return out


# --------------------------------------------------------------------------------------------------
# camera


def _quiet_opencv():
    """Silence OpenCV's own warnings (e.g. 'can't open camera by index') while probing."""
    try:
        level = cv2.utils.logging.getLogLevel()
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
        return level
    except Exception:  # very old cv2 builds
        return None


def _restore_opencv(level) -> None:
    if level is not None:
        try:
            cv2.utils.logging.setLogLevel(level)
        except Exception:
            pass


def _device_missing(index: int) -> bool:
    """On Linux a camera is a /dev/videoN node: when it is absent, do not even ask OpenCV."""
    return sys.platform.startswith("linux") and not os.path.exists(f"/dev/video{index}")


def camera_available(index: int) -> bool:
    """Cheap check whether camera ``index`` can be opened (no frame is kept)."""
    if _device_missing(index):
        return False
    level = _quiet_opencv()
    try:
        cap = cv2.VideoCapture(index)
        ok = cap.isOpened()
        cap.release()
        return ok
    finally:
        _restore_opencv(level)


class CameraSource(FrameSource):
    """A camera by index. Missing camera: :class:`CameraNotFoundError` with one clear line.
    Unplugged mid-stream: up to ``reconnect_tries`` reopen attempts (``reconnect_delay`` s apart),
    then the stream ends cleanly with ``end_reason`` set."""

    live = True

    def __init__(self, index: int = 0, width: int | None = None, height: int | None = None,
                 reconnect_tries: int = 5, reconnect_delay: float = 0.5) -> None:
        super().__init__()
        self.index = int(index)
        self.name = f"camera {self.index}"
        self.width, self.height = width, height
        self.reconnect_tries = int(reconnect_tries)
        self.reconnect_delay = float(reconnect_delay)
        self.reconnects = 0
        self.cap = self._open()
        if self.cap is None:
            raise CameraNotFoundError(f"no camera at index {self.index} (cv2.VideoCapture({self.index}) cannot open it)")
        fps = self.cap.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if fps and 1 <= fps <= 1000 else 30.0

    def _open(self):
        if _device_missing(self.index):
            return None
        level = _quiet_opencv()
        try:
            cap = cv2.VideoCapture(self.index)
            if not cap.isOpened():
                cap.release()
                return None
            if self.width:
                cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.width)
            if self.height:
                cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.height)
            try:
                cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # latest frame, not a stale queue
            except Exception:
                pass
            return cap
        finally:
            _restore_opencv(level)

    def _read(self):
        for attempt in range(self.reconnect_tries + 1):
            if self.cap is not None:
                ok, img = self.cap.read()
                t = time.perf_counter()
                if ok and img is not None:
                    return "ok", img, t
                if ok:  # opened but an empty frame: corrupt, not unplugged
                    return "bad", None, t
            if attempt == self.reconnect_tries:
                break
            # read failed: the camera was unplugged (or the driver hiccuped): reopen
            print(f"{self.name}: no frame, reconnecting ({attempt + 1}/{self.reconnect_tries})...",
                  file=sys.stderr)
            if self.cap is not None:
                self.cap.release()
            time.sleep(self.reconnect_delay)
            self.cap = self._open()
            self.reconnects += 1
        self.end_reason = f"{self.name} disconnected (gave up after {self.reconnect_tries} reconnect attempts)"
        return "end", None, None

    def _close(self) -> None:
        if self.cap is not None:
            self.cap.release()
            self.cap = None


# --------------------------------------------------------------------------------------------------
# files


class VideoFileSource(FrameSource):
    """A video file decoded by OpenCV (FFmpeg). ``t`` = frame index / file fps.
    ``loop=True`` restarts at the end (for long latency runs on short clips)."""

    def __init__(self, path: str | os.PathLike, loop: bool = False) -> None:
        super().__init__()
        self.path = Path(path)
        self.name = str(self.path)
        self.loop = loop
        if not self.path.is_file():
            raise ImageReadError(f"video file not found: {self.path}")
        self.cap = cv2.VideoCapture(str(self.path))
        if not self.cap.isOpened():
            raise ImageReadError(f"cannot decode video {self.path} (not a video OpenCV/FFmpeg can read)")
        fps = self.cap.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if fps and 1 <= fps <= 1000 else 30.0
        n = self.cap.get(cv2.CAP_PROP_FRAME_COUNT)
        self.frame_count = int(n) if n and n > 0 else None
        self._pos = 0
        self._fails = 0

    def _read(self):
        while True:
            ok, img = self.cap.read()
            if ok:
                self._pos += 1
                self._fails = 0
                return "ok", img, None
            # end of stream, or an undecodable frame before the end: skip a few
            self._fails += 1
            if self.frame_count is not None and self._pos + self._fails < self.frame_count and self._fails <= 10:
                return "bad", None, None
            if self.loop and self.delivered > 0:
                self.cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
                self._pos = 0
                self._fails = 0
                continue
            self.end_reason = "end of file"
            return "end", None, None

    def _close(self) -> None:
        self.cap.release()


class ImageFolderSource(FrameSource):
    """The images of a folder in name order, at ``fps`` (for ``t``). Unreadable files are skipped
    and counted; images of another size than the first are letterboxed into it."""

    def __init__(self, path: str | os.PathLike, fps: float = 10.0, loop: bool = False) -> None:
        super().__init__()
        self.path = Path(path)
        self.name = str(self.path)
        self.fps = float(fps)
        self.loop = loop
        self.files = sorted(p for p in self.path.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
        if not self.files:
            raise ImageReadError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in folder {self.path}")
        self._i = 0

    def _read(self):
        if self._i >= len(self.files):
            if not (self.loop and self.delivered > 0):
                self.end_reason = "end of folder"
                return "end", None, None
            self._i = 0
        p = self.files[self._i]
        self._i += 1
        img = cv2.imread(str(p), cv2.IMREAD_COLOR)
        return ("ok", img, None) if img is not None else ("bad", None, None)


# --------------------------------------------------------------------------------------------------
# demo

# The shipped demo face: a crop (x 40-420, y 0-420) of skimage's public-domain NASA portrait of
# astronaut Eileen Collins (see pkdn_edge/data/README.md). Landmarks in the crop, template order
# (image-left eye, image-right eye, nose tip, image-left mouth corner, image-right mouth corner):
# the mean of RetinaFace's landmarks on the photo at 4 scales (0.5x-1.5x), so they mean what the
# runtime detector means.
_DEMO_ASSET = Path(__file__).parent / "data" / "demo_face_astronaut.jpg"
_DEMO_CROP = (40, 0, 420, 420)  # x1, y1, x2, y2 in astronaut.png
DEMO_FACE_LANDMARKS = np.array([[164.3, 101.3], [207.8, 103.9], [184.2, 128.6], [162.7, 140.4], [204.3, 142.6]],
                               np.float32)


@dataclass
class DemoFace:
    image: np.ndarray       # BGR person photo
    mask: np.ndarray        # float32 0..1, feathered head-and-shoulders cut-out
    landmarks: np.ndarray   # (5, 2) in image px
    origin: str             # where the photo came from

    @property
    def iod(self) -> float:
        d = self.landmarks[1] - self.landmarks[0]
        return float(math.hypot(float(d[0]), float(d[1])))


def _person_mask(h: int, w: int, lm: np.ndarray) -> np.ndarray:
    """Feathered head + shoulders mask around the landmarks."""
    iod = float(np.hypot(*(lm[1] - lm[0])))
    c = lm[:2].mean(0)
    m = np.zeros((h, w), np.uint8)
    cv2.ellipse(m, (int(c[0]), int(c[1] + 0.1 * iod)), (int(1.75 * iod), int(2.4 * iod)), 0, 0, 360, 255, -1)
    cv2.ellipse(m, (int(c[0]), int(c[1] + 5.0 * iod)), (int(4.6 * iod), int(3.0 * iod)), 0, 0, 360, 255, -1)
    k = int(0.5 * iod) | 1
    return cv2.GaussianBlur(m, (k, k), 0).astype(np.float32) / 255.0


def _synthetic_face() -> tuple[np.ndarray, np.ndarray]:
    """A drawn face (fallback when no real photo is available; detectors may not fire on it)."""
    img = np.full((420, 380, 3), (200, 190, 185), np.uint8)
    lm = DEMO_FACE_LANDMARKS.copy()
    cv2.ellipse(img, (185, 120), (75, 95), 0, 0, 360, (120, 160, 210), -1)
    cv2.ellipse(img, (185, 60), (80, 50), 0, 180, 360, (40, 60, 90), -1)
    for x, y in lm[:2]:
        cv2.ellipse(img, (int(x), int(y)), (10, 5), 0, 0, 360, (255, 255, 255), -1)
        cv2.circle(img, (int(x), int(y)), 4, (60, 40, 30), -1)
    cv2.line(img, (185, 105), (int(lm[2, 0]), int(lm[2, 1])), (90, 120, 170), 3)
    cv2.ellipse(img, (185, 140), (22, 8), 0, 0, 180, (60, 60, 160), 3)
    cv2.rectangle(img, (60, 260), (320, 420), (40, 90, 200), -1)
    return img, lm


def load_demo_face() -> DemoFace:
    """The demo person: the shipped public-domain photo; else scikit-image's astronaut.png when
    installed; else a drawn face (with a warning)."""
    img, lm, origin = None, DEMO_FACE_LANDMARKS.copy(), ""
    if _DEMO_ASSET.is_file():
        img = cv2.imread(str(_DEMO_ASSET), cv2.IMREAD_COLOR)
        origin = "NASA portrait of Eileen Collins (public domain), shipped with pkdn_edge"
    if img is None:
        spec = importlib.util.find_spec("skimage")  # locate the file without importing skimage
        if spec is not None and spec.origin:
            p = Path(spec.origin).parent / "data" / "astronaut.png"
            full = cv2.imread(str(p), cv2.IMREAD_COLOR) if p.is_file() else None
            if full is not None:
                x1, y1, x2, y2 = _DEMO_CROP
                img, origin = full[y1:y2, x1:x2].copy(), f"{p} (public domain)"
    if img is None:
        print("demo: no real face photo found (pkdn_edge/data missing, scikit-image absent): "
              "using a drawn face; a real face detector may not find it", file=sys.stderr)
        img, lm = _synthetic_face()
        origin = "synthetic drawing"
    h, w = img.shape[:2]
    return DemoFace(img, _person_mask(h, w, lm), lm, origin)


def _similarity(scale: float, angle_deg: float, center_from: np.ndarray, center_to: np.ndarray) -> np.ndarray:
    """2x3 matrix: rotate/scale about ``center_from`` and move it to ``center_to``."""
    a = math.radians(angle_deg)
    c, s = scale * math.cos(a), scale * math.sin(a)
    R = np.array([[c, -s], [s, c]], np.float64)
    t = np.asarray(center_to, np.float64) - R @ np.asarray(center_from, np.float64)
    return np.hstack([R, t[:, None]])


def _compose(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """A after B (2x3 each)."""
    A3 = np.vstack([A, [0, 0, 1]])
    B3 = np.vstack([B, [0, 0, 1]])
    return (A3 @ B3)[:2]


class DemoSource(FrameSource):
    """A built-in, deterministic 'webcam' clip: the public-domain demo face (one or several copies),
    cut out and composited on a soft procedural background, filmed by a moving camera (pan, zoom,
    roll) with hand shake (``jitter`` px RMS) and sensor noise (``noise`` gray levels), rendered by
    area averaging at a low resolution (faces about ``iod`` px between the eyes) like a cheap camera.

    ``faces``: number of people (1-6), ``frames``: clip length (finite, so demos end on their own),
    ``size``: (w, h) = 640x480, ``fps``: 30. ``landmarks_at(i)`` gives the true landmarks of frame i
    (for tests and for measuring tracking error).
    """

    name = "demo"

    def __init__(self, faces: int = 1, frames: int = 300, size: tuple[int, int] = (640, 480), fps: float = 30.0,
                 jitter: float = 0.5, noise: float = 2.0, iod: float | None = None, seed: int = 0,
                 motion: float = 1.0) -> None:
        super().__init__()
        if not 1 <= faces <= 6:
            raise PKDNError("demo: faces must be 1..6")
        if frames < 1:
            raise PKDNError("demo: frames must be >= 1")
        self.faces, self.frames, self.fps = int(faces), int(frames), float(fps)
        self.name = f"demo ({self.faces} face{'s' if self.faces > 1 else ''}, {self.frames} frames)"
        self.W, self.H = int(size[0]), int(size[1])
        self.jitter, self.noise, self.motion = float(jitter), float(noise), float(motion)
        self.face = load_demo_face()
        self.seed = int(seed)
        rng = np.random.default_rng(seed)
        self._bg = self._background(rng)
        # people: world positions (frame px at rest) and sizes (IOD at rest)
        if iod is None:
            iods = {1: [13.0], 2: [11.0, 15.0]}.get(self.faces, list(np.linspace(8.0, 17.0, self.faces)))
        else:
            iods = [float(iod)] * self.faces
        xs = np.linspace(0.5, 0.5, 1) if self.faces == 1 else np.linspace(0.2, 0.8, self.faces)
        self.people = []
        for k in range(self.faces):
            self.people.append(dict(
                pos=np.array([xs[k] * self.W, (0.42 + 0.06 * ((k % 2) - 0.5)) * self.H]),
                iod=iods[k], phase=rng.uniform(0, 2 * math.pi, 4), flip=(k % 2 == 1),
            ))
        # hand shake: a smoothed random walk, fixed per seed
        n = self.frames + 8
        shake = rng.normal(0, 1, (n, 3))
        kern = np.ones(3) / 3
        shake = np.stack([np.convolve(shake[:, j], kern, mode="same") for j in range(3)], 1)
        shake /= max(1e-9, shake[:, :2].std())
        self._shake = shake
        self._i = 0
        self._noise_buf = np.empty((self.H, self.W), np.int16)
        self._flipped = (np.ascontiguousarray(self.face.image[:, ::-1]), np.ascontiguousarray(self.face.mask[:, ::-1]))
        self._frame = np.empty((self.H, self.W, 3), np.uint8)

    # -- rendering ----------------------------------------------------------------------------
    def _background(self, rng: np.random.Generator) -> np.ndarray:
        """A large soft 'room': low-frequency colour blobs + some texture (flow needs it)."""
        bw, bh = 2 * self.W, 2 * self.H
        low = rng.uniform(70, 190, (6, 8, 1)) + rng.uniform(-25, 25, (6, 8, 3))
        bg = cv2.resize(low.astype(np.float32), (bw, bh), interpolation=cv2.INTER_CUBIC)
        mid = rng.normal(0, 10, (bh // 16, bw // 16, 1)).astype(np.float32)
        bg += cv2.resize(mid, (bw, bh), interpolation=cv2.INTER_CUBIC)[..., None]
        for _ in range(40):  # a few shelves / frames on the wall
            x, y = int(rng.uniform(0, bw)), int(rng.uniform(0, bh))
            cw, ch = int(rng.uniform(20, 160)), int(rng.uniform(10, 100))
            col = tuple(float(v) for v in rng.uniform(40, 200) + rng.uniform(-30, 30, 3))
            cv2.rectangle(bg, (x, y), (x + cw, y + ch), col, -1)
        bg = cv2.GaussianBlur(bg, (0, 0), 2.5)  # out of focus
        return np.clip(bg, 0, 255).astype(np.uint8)

    def _camera(self, i: int) -> np.ndarray:
        """World -> frame similarity at frame i (pan, zoom, roll, shake)."""
        t = i / self.fps
        m = self.motion
        zoom = 1.0 + m * 0.18 * math.sin(2 * math.pi * t / 6.0)
        roll = m * 5.0 * math.sin(2 * math.pi * t / 7.5 + 0.5)
        pan = np.array([m * 0.06 * self.W * math.sin(2 * math.pi * t / 9.0),
                        m * 0.04 * self.H * math.sin(2 * math.pi * t / 5.0 + 1.0)])
        sh = self._shake[min(i, len(self._shake) - 1)]
        pan = pan + self.jitter * sh[:2]
        c = np.array([self.W / 2, self.H / 2])
        return _similarity(zoom, roll + 0.3 * self.jitter * sh[2], c, c + pan)

    def _person(self, k: int, i: int) -> np.ndarray:
        """Photo -> world similarity of person k at frame i (head sway, nods)."""
        p = self.people[k]
        t = i / self.fps
        ph = p["phase"]
        f = self.face
        scale = p["iod"] / f.iod * (1.0 + self.motion * 0.06 * math.sin(2 * math.pi * t / 4.0 + ph[0]))
        angle = self.motion * 8.0 * math.sin(2 * math.pi * t / 3.3 + ph[1])
        sway = np.array([self.motion * 0.25 * p["iod"] * 4 * math.sin(2 * math.pi * t / 5.1 + ph[2]),
                         self.motion * 0.15 * p["iod"] * 4 * math.sin(2 * math.pi * t / 2.7 + ph[3])])
        eyes = f.landmarks[:2].mean(0)
        return _similarity(scale, angle, eyes, p["pos"] + sway)

    def transform(self, k: int, i: int) -> np.ndarray:
        """Photo -> frame similarity (2x3) of person k at frame i (pixel centres at integers)."""
        return _compose(self._camera(i), self._person(k, i))

    def landmarks_at(self, i: int) -> list[np.ndarray]:
        """True (5, 2) landmarks of every person at frame i, in frame px (template order)."""
        out = []
        for k in range(self.faces):
            M = self.transform(k, i)
            lm = self.face.landmarks.astype(np.float64)
            if self.people[k]["flip"]:
                lm = self._flipped_landmarks()
            out.append((lm @ M[:, :2].T + M[:, 2]).astype(np.float32))
        return out

    def _flipped_landmarks(self) -> np.ndarray:
        w = self.face.image.shape[1]
        lm = self.face.landmarks.astype(np.float64).copy()
        lm[:, 0] = (w - 1) - lm[:, 0]
        return lm[[1, 0, 2, 4, 3]]  # mirror swaps image-left and image-right points

    def render(self, i: int) -> np.ndarray:
        """Frame i (BGR uint8, a new array)."""
        cam = self._camera(i)
        # background: world = a (2W x 2H) wall centred on the frame
        off = np.array([[1, 0, -self.W / 2], [0, 1, -self.H / 2]], np.float64)
        frame = cv2.warpAffine(self._bg, _compose(cam, off), (self.W, self.H), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_REFLECT_101)
        order = sorted(range(self.faces), key=lambda k: self.people[k]["iod"])  # small (far) first
        for k in order:
            self._paste_person(frame, k, i)
        if self.noise > 0:
            cv2.setRNGSeed(self.seed * 100003 + i)  # frame i is the same whenever it is rendered
            cv2.randn(self._noise_buf, 0, self.noise)  # luma noise (cheaper than per channel)
            n = self._noise_buf
            frame = cv2.add(frame, cv2.merge((n, n, n)), dtype=cv2.CV_8U)  # saturating
        return frame

    def _paste_person(self, frame: np.ndarray, k: int, i: int) -> None:
        f = self.face
        img, mask = f.image, f.mask
        if self.people[k]["flip"]:
            img, mask = self._flipped
        M = self.transform(k, i)
        s = math.hypot(M[0, 0], M[1, 0])
        # area-average the photo down to the target scale first (a camera integrates light; no aliasing)
        h, w = img.shape[:2]
        nw, nh = max(2, round(w * s)), max(2, round(h * s))
        small = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA)
        msmall = cv2.resize(mask, (nw, nh), interpolation=cv2.INTER_AREA)
        sx, sy = nw / w, nh / h
        # photo px -> small px: x' = (x + .5) * sx - .5; so small -> frame = M . inv(that)
        to_small = np.array([[sx, 0, 0.5 * sx - 0.5], [0, sy, 0.5 * sy - 0.5]], np.float64)
        inv = cv2.invertAffineTransform(to_small)
        Ms = _compose(M, inv)
        # warp only the bounding box of the person in the frame
        corners = np.array([[0, 0], [nw - 1, 0], [nw - 1, nh - 1], [0, nh - 1]], np.float64)
        fc = corners @ Ms[:, :2].T + Ms[:, 2]
        x1, y1 = max(0, int(math.floor(fc[:, 0].min())) - 1), max(0, int(math.floor(fc[:, 1].min())) - 1)
        x2, y2 = min(self.W, int(math.ceil(fc[:, 0].max())) + 2), min(self.H, int(math.ceil(fc[:, 1].max())) + 2)
        if x2 <= x1 or y2 <= y1:
            return
        Mr = Ms.copy()
        Mr[:, 2] -= (x1, y1)
        size = (x2 - x1, y2 - y1)
        person = cv2.warpAffine(small, Mr, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        alpha = cv2.warpAffine(msmall, Mr, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        roi = frame[y1:y2, x1:x2]
        roi[...] = cv2.blendLinear(person, np.ascontiguousarray(roi), alpha, 1.0 - alpha)

    # -- FrameSource ----------------------------------------------------------------------------
    def _read(self):
        if self._i >= self.frames:
            self.end_reason = "end of demo"
            return "end", None, None
        img = self.render(self._i)
        self._i += 1
        return "ok", img, None


class Downscale(FrameSource):
    """Wraps a source and shrinks every frame by ``factor`` (area averaging: what a lower-resolution
    sensor of the same optics would see)."""

    def __init__(self, source: FrameSource, factor: float) -> None:
        super().__init__()
        if not factor > 1.0:
            raise PKDNError("--downscale must be > 1")
        self.source, self.factor = source, float(factor)
        self.name = f"{source.name} /{factor:g}"
        self.fps, self.live = source.fps, source.live
        self._it = iter(source)

    def _read(self):
        try:
            fr = next(self._it)
        except StopIteration:
            self.end_reason = self.source.end_reason
            return "end", None, None
        h, w = fr.image.shape[:2]
        size = (max(8, round(w / self.factor)), max(8, round(h / self.factor)))
        return "ok", cv2.resize(fr.image, size, interpolation=cv2.INTER_AREA), fr.t

    @property
    def skipped_total(self) -> int:
        return self.skipped + self.source.skipped

    def _close(self) -> None:
        self.source.close()


# --------------------------------------------------------------------------------------------------
# GStreamer cameras (Jetson: CSI through nvarguscamerasrc, USB through v4l2src, or any pipeline)

GST_SCHEMES = ("csi", "usb", "gst")
_APPSINK = "appsink drop=true max-buffers=1 sync=false"  # latest frame only: no stale queue
_TO_BGR = "videoconvert ! video/x-raw, format=(string)BGR"


class GStreamerUnavailableError(PKDNError):
    """The installed OpenCV was built without GStreamer, so a ``csi:``/``usb:``/``gst:`` source cannot open."""


def opencv_has_gstreamer() -> bool:
    """Whether this OpenCV can open GStreamer pipelines (``cv2.videoio_registry.hasBackend``, else the
    ``GStreamer:`` line of ``cv2.getBuildInformation()``). PyPI's ``opencv-python`` wheels are built
    without GStreamer; JetPack's OpenCV and Debian/Ubuntu's ``python3-opencv`` have it."""
    try:
        return bool(cv2.videoio_registry.hasBackend(cv2.CAP_GSTREAMER))
    except Exception:  # very old cv2 without videoio_registry
        m = re.search(r"^\s*GStreamer:\s*(\S+)", cv2.getBuildInformation(), re.M)
        return bool(m and m.group(1).upper().startswith("YES"))


def gstreamer_unavailable_message(what: str = "a GStreamer source") -> str:
    where = getattr(cv2, "__file__", "?")
    return (f"{what} needs OpenCV built with GStreamer, but the cv2 {cv2.__version__} in use ({where}) has none "
            f"(see 'GStreamer:' under 'Video I/O' in cv2.getBuildInformation(); PyPI's opencv-python wheels are "
            f"built without it). "
            f"On a Jetson use JetPack's OpenCV (sudo apt install nvidia-opencv) or Debian/Ubuntu's python3-opencv: "
            f"create the venv with --system-site-packages and `pip uninstall opencv-python` inside it (see "
            f"deploy/jetson/README.md); for a USB camera without GStreamer use its index instead (--source 0)")


def _fraction(fps: float) -> str:
    f = Fraction(float(fps)).limit_denominator(1001)
    return f"{f.numerator}/{f.denominator}"


def _pos_int(name: str, v: object, lo: int = 1) -> int:
    try:
        i = int(v)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        raise PKDNError(f"camera option {name}={v!r} is not an integer") from None
    if i < lo:
        raise PKDNError(f"camera option {name}={i} must be >= {lo}")
    return i


def csi_pipeline(sensor_id: int = 0, width: int = 1280, height: int = 720, fps: float = 30, flip: int = 0,
                 sensor_mode: int | None = None, out_width: int | None = None, out_height: int | None = None) -> str:
    """The GStreamer pipeline of a Jetson CSI camera (libargus ``nvarguscamerasrc``): ``width×height``
    at ``fps`` in NVMM memory, ``nvvidconv`` (hardware; ``flip`` = flip-method 0-7, optional resize to
    ``out_width×out_height``) to BGRx, ``videoconvert`` to BGR, and an ``appsink`` that keeps only
    the latest frame."""
    sensor_id, width, height = _pos_int("sensor", sensor_id, 0), _pos_int("width", width), _pos_int("height", height)
    if not 0 <= int(flip) <= 7:
        raise PKDNError(f"camera option flip={flip} must be 0-7 (nvvidconv flip-method)")
    if not float(fps) > 0:
        raise PKDNError(f"camera option fps={fps} must be > 0")
    src = f"nvarguscamerasrc sensor-id={sensor_id}"
    if sensor_mode is not None:
        src += f" sensor-mode={_pos_int('mode', sensor_mode, 0)}"
    ow = _pos_int("out_width", out_width) if out_width else width
    oh = _pos_int("out_height", out_height) if out_height else height
    return (f"{src} ! video/x-raw(memory:NVMM), width=(int){width}, height=(int){height}, format=(string)NV12, "
            f"framerate=(fraction){_fraction(fps)} ! nvvidconv flip-method={int(flip)} ! "
            f"video/x-raw, width=(int){ow}, height=(int){oh}, format=(string)BGRx ! {_TO_BGR} ! {_APPSINK}")


def usb_pipeline(device: str | int = "/dev/video0", width: int | None = 640, height: int | None = 480,
                 fps: float | None = 30, mjpeg: bool = False) -> str:
    """The GStreamer pipeline of a USB (UVC) camera through ``v4l2src``: raw frames (or MJPEG decoded
    by ``jpegdec`` with ``mjpeg``, which most cameras need above 640×480 at 30 fps), converted to BGR.
    ``width``/``height``/``fps`` ``None`` let the camera choose."""
    dev = f"/dev/video{int(device)}" if str(device).isdigit() else str(device)
    if not dev.startswith("/dev/"):
        raise PKDNError(f"usb camera device {dev!r} is not a /dev/videoN node or an index")
    caps = ["image/jpeg" if mjpeg else "video/x-raw"]
    if width:
        caps.append(f"width=(int){_pos_int('width', width)}")
    if height:
        caps.append(f"height=(int){_pos_int('height', height)}")
    if fps:
        if not float(fps) > 0:
            raise PKDNError(f"camera option fps={fps} must be > 0")
        caps.append(f"framerate=(fraction){_fraction(fps)}")
    decode = " ! jpegdec" if mjpeg else ""
    return f"v4l2src device={dev} ! {', '.join(caps)}{decode} ! {_TO_BGR} ! {_APPSINK}"


def _parse_options(rest: str, first: str) -> dict[str, str]:
    """``0,width=1280,fps=30`` -> {first: '0', 'width': '1280', 'fps': '30'}."""
    out: dict[str, str] = {}
    for i, part in enumerate(p.strip() for p in rest.split(",")):
        if not part:
            continue
        if "=" in part:
            k, v = (t.strip() for t in part.split("=", 1))
            out[k.lower()] = v
        elif i == 0:
            out[first] = part
        else:
            raise PKDNError(f"camera option {part!r} is not key=value")
    return out


def _truthy(v: str) -> bool:
    return v.strip().lower() in ("1", "true", "yes", "on")


def gstreamer_pipeline(spec: str) -> tuple[str, str, float | None]:
    """Parse a ``csi:``/``usb:``/``gst:`` source spec into ``(pipeline, name, fps)``.

    * ``csi`` / ``csi:0`` / ``csi:1,width=1920,height=1080,fps=30,flip=2,mode=0,out_width=960,out_height=540``
    * ``usb`` / ``usb:0`` / ``usb:/dev/video1,width=1280,height=720,fps=30,mjpeg=1``
    * ``gst:<pipeline>``: used as given; ``! videoconvert ! BGR ! appsink`` is appended when it has no appsink.
    """
    s = spec.strip()
    scheme, _, rest = s.partition(":")
    scheme = scheme.lower()
    if scheme == "gst":
        pipe = rest.strip()
        if not pipe:
            raise PKDNError("gst: needs a pipeline, e.g. gst:'v4l2src device=/dev/video0 ! videoconvert ! appsink'")
        if "appsink" not in pipe:
            pipe = f"{pipe} ! {_TO_BGR} ! {_APPSINK}"
        return pipe, f"gstreamer ({pipe.split('!')[0].strip()})", None
    if scheme == "csi":
        known = {"sensor", "width", "height", "fps", "flip", "mode", "out_width", "out_height"}
        o = _parse_options(rest, "sensor")
        bad = sorted(set(o) - known)
        if bad:
            raise PKDNError(f"unknown csi option(s) {', '.join(bad)} (known: {', '.join(sorted(known))})")
        try:
            fps = float(o.get("fps", 30))
        except ValueError:
            raise PKDNError(f"camera option fps={o['fps']!r} is not a number") from None
        pipe = csi_pipeline(sensor_id=o.get("sensor", 0), width=o.get("width", 1280), height=o.get("height", 720),
                            fps=fps, flip=_pos_int("flip", o.get("flip", 0), 0),
                            sensor_mode=o.get("mode"), out_width=o.get("out_width"), out_height=o.get("out_height"))
        return pipe, f"csi camera {o.get('sensor', 0)}", fps
    if scheme == "usb":
        known = {"device", "width", "height", "fps", "mjpeg"}
        o = _parse_options(rest, "device")
        bad = sorted(set(o) - known)
        if bad:
            raise PKDNError(f"unknown usb option(s) {', '.join(bad)} (known: {', '.join(sorted(known))})")

        def opt(key: str, default: str) -> str | None:  # "0" or "" = let the camera choose
            v = o.get(key, default)
            return None if v in ("", "0") else v

        fps_s = opt("fps", "30")
        try:
            fps = float(fps_s) if fps_s is not None else None
        except ValueError:
            raise PKDNError(f"camera option fps={fps_s!r} is not a number") from None
        device = o.get("device", "/dev/video0")
        pipe = usb_pipeline(device, opt("width", "640"), opt("height", "480"), fps, _truthy(o.get("mjpeg", "0")))
        dev = f"/dev/video{device}" if device.isdigit() else device
        return pipe, f"usb camera {dev}", fps
    raise PKDNError(f"{spec!r} is not a GStreamer source (use {', '.join(g + ':' for g in GST_SCHEMES)})")


def _is_gstreamer_spec(s: str) -> bool:
    low = s.lower()
    if low.startswith("gst:") or low.startswith("csi:") or low.startswith("usb:"):
        return True
    return low in ("csi", "usb") and not Path(s).exists()


def _gst_launch_hint(pipeline: str) -> str:
    """A shell line that runs ``pipeline`` without OpenCV (appsink -> fakesink; caps quoted for the shell)."""
    parts = [p.strip() for p in pipeline.split("!")]
    if parts and parts[-1].startswith("appsink"):
        parts[-1] = "fakesink"
    quoted = [f"'{p}'" if any(c in p for c in "(),;") else p for p in parts]
    return "gst-launch-1.0 -e " + " ! ".join(quoted)


class GStreamerSource(CameraSource):
    """A camera (or any live stream) through a GStreamer pipeline that ends in ``appsink``, opened with
    ``cv2.VideoCapture(pipeline, cv2.CAP_GSTREAMER)``. Behaves like :class:`CameraSource` (live,
    reconnects when frames stop). An OpenCV without GStreamer raises
    :class:`GStreamerUnavailableError`; a pipeline that does not start raises
    :class:`CameraNotFoundError` with a ``gst-launch-1.0`` line to test it."""

    def __init__(self, pipeline: str, name: str | None = None, fps: float | None = None,
                 reconnect_tries: int = 5, reconnect_delay: float = 0.5) -> None:
        FrameSource.__init__(self)
        self.pipeline = pipeline
        self.index = -1
        self.name = name or f"gstreamer ({pipeline.split('!')[0].strip()})"
        self.width = self.height = None
        self.reconnect_tries = int(reconnect_tries)
        self.reconnect_delay = float(reconnect_delay)
        self.reconnects = 0
        if not opencv_has_gstreamer():
            raise GStreamerUnavailableError(gstreamer_unavailable_message(self.name))
        self.cap = self._open()
        if self.cap is None:
            hint = " (is the camera connected and nvargus-daemon running? `sudo systemctl restart nvargus-daemon`)" \
                if "nvarguscamerasrc" in pipeline else ""
            raise CameraNotFoundError(f"{self.name}: OpenCV could not start the GStreamer pipeline{hint}; test it with "
                                      f"`{_gst_launch_hint(pipeline)}`")
        got = self.cap.get(cv2.CAP_PROP_FPS)
        self.fps = float(got) if got and 1 <= got <= 1000 else float(fps or 30.0)

    def _open(self):
        level = _quiet_opencv()
        try:
            cap = cv2.VideoCapture(self.pipeline, cv2.CAP_GSTREAMER)
            if not cap.isOpened():
                cap.release()
                return None
            return cap
        finally:
            _restore_opencv(level)


def _parse_demo(spec: str) -> dict:
    """``demo``, ``demo:3``, ``demo:faces=3,frames=120,jitter=1`` -> DemoSource kwargs."""
    kw: dict = {}
    rest = spec[4:].lstrip(":")
    for part in filter(None, rest.split(",")):
        if "=" not in part:
            kw["faces"] = int(part)
            continue
        k, v = part.split("=", 1)
        k = k.strip()
        if k in ("faces", "frames", "seed"):
            kw[k] = int(v)
        elif k in ("jitter", "noise", "iod", "fps", "motion"):
            kw[k] = float(v)
        elif k == "size":
            w, h = v.lower().split("x")
            kw["size"] = (int(w), int(h))
        else:
            raise PKDNError(f"unknown demo option {k!r} (faces, frames, jitter, noise, iod, fps, motion, size, seed)")
    return kw


def open_source(spec: str | int, downscale: float | None = None, loop: bool = False) -> FrameSource:
    """Open ``spec``: camera index, video file, image folder, ``demo[:...]`` or a GStreamer camera
    (``csi:...``, ``usb:...``, ``gst:...``, see :func:`gstreamer_pipeline`); optionally downscaled."""
    s = str(spec).strip()
    if s.lower().startswith("demo"):
        try:
            src: FrameSource = DemoSource(**_parse_demo(s.lower()))
        except ValueError as exc:
            raise PKDNError(f"bad demo spec {s!r}: {exc}") from None
    elif s.isdigit():
        src = CameraSource(int(s))
    elif _is_gstreamer_spec(s):
        pipeline, name, fps = gstreamer_pipeline(s)
        src = GStreamerSource(pipeline, name=name, fps=fps)
    else:
        p = Path(s)
        if p.is_dir():
            src = ImageFolderSource(p, loop=loop)
        elif p.is_file():
            src = VideoFileSource(p, loop=loop)
        else:
            raise ImageReadError(f"source {s!r} not found (give a camera index, a video file, an image folder, 'demo', "
                                 f"or a GStreamer camera: csi:0, usb:/dev/video0, gst:PIPELINE)")
    if downscale and downscale != 1:
        src = Downscale(src, downscale)
    return src
