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
    ``loop=True`` restarts at the end (for long latency runs on short clips).

    A frame that cannot be decoded before the file's known frame count is skipped and counted
    (``undecodable``); after ``SEEK_AFTER`` failures in a row the decoder is moved past them, and after
    ``GIVE_UP_AFTER`` the stream ends with ``incomplete`` set and an ``end_reason`` that says at which
    frame of how many decoding stopped: a damaged file is never reported as a normal end of file."""

    SEEK_AFTER = 10
    GIVE_UP_AFTER = 60
    TAIL_SLACK = 2  # frame counts from the container can be estimates: a short tail is a normal end

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
        self._next = 0          # index of the next frame in the file
        self._fails = 0         # undecodable frames in a row
        self._first_fail = 0    # where the current run of failures started
        self.undecodable = 0

    def _read(self):
        while True:
            ok, img = self.cap.read()
            if ok:
                self._next += 1
                self._fails = 0
                return "ok", img, None
            if self._skip_damaged():
                return "bad", None, None
            if self._fails and not self._tail_only():
                return self._stopped()
            if self.loop and self.delivered > 0:
                self.cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
                self._next = self._fails = 0
                continue
            return self._ended()

    def _skip_damaged(self) -> bool:
        """A failed read before the known end: count it, seek past a stuck decoder; False = stop."""
        fc = self.frame_count
        if fc is None or self._next >= fc or self._fails >= self.GIVE_UP_AFTER:
            return False
        if self._fails == 0:
            self._first_fail = self._next
        self._next += 1
        self._fails += 1
        self.undecodable += 1
        if self._fails % self.SEEK_AFTER == 0:
            self.cap.set(cv2.CAP_PROP_POS_FRAMES, self._next)
        return True

    def _tail_only(self) -> bool:
        """The failures are the last frames of an estimated frame count (normal end)."""
        fc = self.frame_count or 0
        return self._fails <= self.TAIL_SLACK and self._first_fail >= fc - self.TAIL_SLACK

    def _stopped(self):
        self.incomplete = True
        self.end_reason = (f"decoding stopped at frame {self._first_fail} of {self.frame_count}: "
                           f"{self.path} is damaged "
                           f"or truncated ({self.undecodable} frames could not be decoded)")
        return "end", None, None

    def _ended(self):
        self.undecodable -= self._fails  # a short tail of an estimated frame count is not damage
        self.end_reason = "end of file" + (f" ({self.undecodable} undecodable frames skipped)"
                                           if self.undecodable else "")
        return "end", None, None

    def _close(self) -> None:
        self.cap.release()


class ImageFolderSource(FrameSource):
    """The images of a folder in name order, at ``fps`` (for ``t``). Unreadable files are skipped
    and counted. Every image keeps its own size (``fixed_size = False``: photos of different sizes
    are not squeezed into the first one's); ``size`` is the first image's."""

    fixed_size = False

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
