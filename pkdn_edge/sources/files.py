"""File sources: a video file (OpenCV/FFmpeg) and a folder of images.

Runs without torch: numpy + cv2 only.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2

from pkdn_edge.errors import ImageReadError
from pkdn_edge.sources.base import IMAGE_EXTENSIONS, FrameSource

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
