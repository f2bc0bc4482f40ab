"""Writers for the webcam loop's shown frames: a video file or a folder of PNG frames, written on a
thread of their own so that encoding is off the loop's critical path (its cost is reported).

Encoders (``--encoder``):

* ``auto``: H.264 through PyAV (``pip install av``; libx264, preset ``ultrafast``, CRF 23, one
  encoder thread) for .mp4/.mkv/.mov/.m4v when PyAV is installed, else OpenCV's MPEG-4 part 2
  (``mp4v``); .avi is always Motion-JPEG;
* ``h264``: PyAV H.264 (an error naming ``pip install av`` when it is missing);
* ``mp4v``: OpenCV's MPEG-4 part 2 (larger files, no extra package);
* ``nvv4l2h264enc``: a Jetson's hardware H.264 encoder through GStreamer
  (:func:`jetson_h264_pipeline`; needs an OpenCV with GStreamer, as JetPack's).

Runs without torch: numpy + cv2 (+ av when installed).
"""

from __future__ import annotations

import importlib.util
import queue
import threading
import time
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

from pkdn_edge.errors import MissingDependencyError, PKDNError
from pkdn_edge.sources.base import letterbox


def check_writable(path: Path, flag: str) -> None:
    """Fail before the run (one ``error:`` line) when ``path`` cannot be created: its folder cannot be
    made or is not writable. A file created only for the check is removed again."""
    path = Path(path)
    existed = path.exists()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "ab"):
            pass
    except OSError as exc:
        raise PKDNError(f"cannot write {flag} {path}: {exc.strerror or exc}") from None
    if not existed:
        try:
            path.unlink()
        except OSError:
            pass




VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".mov", ".m4v")
ENCODERS = ("auto", "h264", "mp4v", "nvv4l2h264enc")
H264_PRESET, H264_CRF = "ultrafast", 23


def pyav_available() -> bool:
    return importlib.util.find_spec("av") is not None


def jetson_h264_pipeline(path: str | Path, bitrate: int = 8_000_000) -> str:
    """GStreamer pipeline for ``cv2.VideoWriter(pipeline, cv2.CAP_GSTREAMER, 0, fps, (w, h))`` that
    encodes BGR frames with a Jetson's hardware H.264 encoder (``nvv4l2h264enc``) into an MP4 file."""
    return (f"appsrc ! video/x-raw, format=(string)BGR ! videoconvert ! video/x-raw, format=(string)BGRx ! "
            f"nvvidconv ! video/x-raw(memory:NVMM), format=(string)NV12 ! nvv4l2h264enc bitrate={int(bitrate)} "
            f"insert-sps-pps=true ! h264parse ! qtmux ! filesink location={Path(path)} sync=false")


def resolve_encoder(path: Path, encoder: str = "auto") -> str:
    """The encoder that writes ``path``: ``png`` for a folder, ``mjpg`` for .avi, else ``encoder``
    with ``auto`` resolved (H.264 through PyAV when installed, else mp4v)."""
    if encoder not in ENCODERS:
        raise PKDNError(f"unknown encoder {encoder!r} (choose from {', '.join(ENCODERS)})")
    ext = Path(path).suffix.lower()
    if ext not in VIDEO_EXTENSIONS:
        return "png"
    if encoder == "auto":
        return "mjpg" if ext == ".avi" else ("h264" if pyav_available() else "mp4v")
    if encoder == "h264" and not pyav_available():
        raise MissingDependencyError("av", None, "--encoder h264 (PyAV)")
    if encoder == "nvv4l2h264enc":
        from pkdn_edge.sources.gstreamer import gstreamer_unavailable_message, opencv_has_gstreamer

        if not opencv_has_gstreamer():
            raise PKDNError(gstreamer_unavailable_message("--encoder nvv4l2h264enc"))
    return encoder


class _PyAVH264:
    """H.264 (libx264) into an MP4/MKV/MOV container through PyAV; odd sizes lose their last px row/column."""

    def __init__(self, path: Path, fps: float, size: tuple[int, int]) -> None:
        import av

        self.av = av
        self.w, self.h = size[0] - size[0] % 2, size[1] - size[1] % 2
        self.container = av.open(str(path), mode="w")
        self.stream = self.container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        self.stream.width, self.stream.height, self.stream.pix_fmt = self.w, self.h, "yuv420p"
        self.stream.options = {"preset": H264_PRESET, "crf": str(H264_CRF)}
        self.stream.codec_context.thread_count = 1

    def write(self, img: np.ndarray) -> None:
        frame = self.av.VideoFrame.from_ndarray(np.ascontiguousarray(img[: self.h, : self.w]), format="bgr24")
        for packet in self.stream.encode(frame):
            self.container.mux(packet)

    def release(self) -> None:
        for packet in self.stream.encode():
            self.container.mux(packet)
        self.container.close()


class _OpenCVVideo:
    """cv2.VideoWriter: mp4v / MJPG files, or a GStreamer pipeline (nvv4l2h264enc)."""

    def __init__(self, path: Path, fps: float, size: tuple[int, int], encoder: str) -> None:
        if encoder == "nvv4l2h264enc":
            self.vw = cv2.VideoWriter(jetson_h264_pipeline(path), cv2.CAP_GSTREAMER, 0, fps, size)
        else:
            fourcc = cv2.VideoWriter_fourcc(*("MJPG" if encoder == "mjpg" else "mp4v"))
            self.vw = cv2.VideoWriter(str(path), fourcc, fps, size)
        if not self.vw.isOpened():
            raise PKDNError(f"cannot write video {path} with {encoder} (OpenCV refused it; try .avi, a folder or "
                            f"another --encoder)")

    def write(self, img: np.ndarray) -> None:
        self.vw.write(img)

    def release(self) -> None:
        self.vw.release()


class _PNGFolder:
    def __init__(self, path: Path) -> None:
        self.path, self.n = path, 0

    def write(self, img: np.ndarray) -> None:
        """One frame; a failed write (disk full, ...) is an ``OSError`` (cv2.imwrite only returns False)
        and leaves no truncated frame behind."""
        ok, buf = cv2.imencode(".png", img, [cv2.IMWRITE_PNG_COMPRESSION, 1])
        if not ok:
            raise PKDNError(f"cannot encode frame {self.n} as PNG for {self.path}")
        path = self.path / f"{self.n:06d}.png"
        try:
            with open(path, "wb") as f:
                f.write(buf.tobytes())
        except OSError:
            path.unlink(missing_ok=True)
            raise
        self.n += 1

    def release(self) -> None:
        pass


class FrameWriter:
    """A video file or, for a path without a video extension, a folder of lossless PNG frames
    (000000.png, ...), written on a background thread (``threaded``; a bounded queue of
    ``queue_size`` frames: when the encoder falls behind, :meth:`write` waits, so the loop's FPS stays
    honest). :attr:`stats`: encoder, frames, ``encode_ms`` (mean time per frame in the encoder) and
    ``wait_ms`` (mean time the loop spent handing a frame over, copy and waiting included)."""

    def __init__(self, path: Path, fps: float, encoder: str = "auto", threaded: bool = True,
                 queue_size: int = 4) -> None:
        self.path, self.fps = Path(path), float(fps)
        self.encoder = resolve_encoder(self.path, encoder)
        self.video = self.encoder != "png"
        (self.path.parent if self.video else self.path).mkdir(parents=True, exist_ok=True)
        self.size: tuple[int, int] | None = None
        self._sink = None if self.video else _PNGFolder(self.path)
        self.n = 0
        self._encode_s = self._wait_s = 0.0
        self._error: BaseException | None = None
        self._q: queue.Queue | None = None
        self._pool: list[np.ndarray] = []
        self._slot = 0
        self._thread: threading.Thread | None = None
        self.threaded = bool(threaded)
        if threaded:
            self._q = queue.Queue(maxsize=queue_size)
            self._thread = threading.Thread(target=self._work, name="pkdn-writer", daemon=True)
            self._thread.start()

    # -- loop side ------------------------------------------------------------------------------
    def write(self, img: np.ndarray) -> None:
        """Hand ``img`` over (copied: the loop reuses its buffers)."""
        t = time.perf_counter()
        self._raise_error()
        if self._q is None:
            self._encode(img)
        else:
            self._q.put(self._copy(img))
        self.n += 1
        self._wait_s += time.perf_counter() - t

    def _copy(self, img: np.ndarray) -> np.ndarray:
        """A copy in a ring of preallocated buffers (queue size + 2: the one reused was handed over that
        many frames ago, so the encoder is done with it)."""
        need = self._q.maxsize + 2
        if len(self._pool) < need:
            self._pool.append(np.empty_like(img))
            buf = self._pool[-1]
        else:
            buf = self._pool[self._slot]
            if buf.shape != img.shape:
                buf = self._pool[self._slot] = np.empty_like(img)
            self._slot = (self._slot + 1) % need
        np.copyto(buf, img)
        return buf

    def _raise_error(self) -> None:
        if self._error is not None:
            err, self._error = self._error, None
            if isinstance(err, PKDNError):
                raise err
            if isinstance(err, OSError):  # disk full, ...: the file and the disk's problem on one line
                from pkdn_edge.errors import describe_os_error

                raise PKDNError(f"writing --output {self.path} failed: {describe_os_error(err)}")
            raise PKDNError(f"writing --output {self.path} failed: {err}")

    # -- writer side ----------------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            img = self._q.get()
            if img is None:
                return
            if self._error is None:
                try:
                    self._encode(img)
                except BaseException as exc:  # noqa: BLE001 - reported to the loop on its next write
                    self._error = exc

    def _encode(self, img: np.ndarray) -> None:
        t = time.perf_counter()
        if self._sink is None:
            self.size = (img.shape[1], img.shape[0])
            if self.encoder == "h264":
                self._sink = _PyAVH264(self.path, self.fps, self.size)
            else:
                self._sink = _OpenCVVideo(self.path, self.fps, self.size, self.encoder)
        if self.video and (img.shape[1], img.shape[0]) != self.size:  # image folders: frames of other sizes
            img = letterbox(img, self.size)
        self._sink.write(img)
        self._encode_s += time.perf_counter() - t

    def release(self) -> None:
        """Drain the queue, finish the file; an encoder error becomes one PKDNError."""
        if self._thread is not None:
            self._q.put(None)
            self._thread.join()
            self._thread = None
        if self._sink is not None:
            try:
                self._sink.release()
            finally:
                self._sink = None
        self._raise_error()

    @property
    def stats(self) -> dict:
        n = max(1, self.n)
        return {"encoder": self.encoder, "threaded": self.threaded,
                "frames": self.n, "encode_ms": round(1e3 * self._encode_s / n, 3),
                "wait_ms": round(1e3 * self._wait_s / n, 3)}
