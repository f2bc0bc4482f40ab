"""Cameras by index through ``cv2.VideoCapture`` (V4L2 on Linux), with reconnects.

Runs without torch: numpy + cv2 only.
"""

from __future__ import annotations

import os
import sys
import time

import cv2

from pkdn_edge.sources.base import CameraNotFoundError, FrameSource


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
    then the stream ends with ``end_reason`` set and ``lost`` (and ``incomplete``) True: the webcam
    loop prints its summary, then fails with one ``error:`` line (exit 2), so a service manager
    restarts it."""

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
            raise CameraNotFoundError(
                f"no camera at index {self.index} (cv2.VideoCapture({self.index}) cannot open it)")
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
        self.lost = self.incomplete = True
        return "end", None, None

    def _close(self) -> None:
        if self.cap is not None:
            self.cap.release()
            self.cap = None
