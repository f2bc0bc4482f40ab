"""Writers for the webcam loop's shown frames: a video file or a folder of PNG frames.

Runs without torch: numpy + cv2.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from pkdn_edge.errors import PKDNError
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


class FrameWriter:
    """A video file (.mp4: MPEG-4 part 2 'mp4v', .avi: MJPG, ...) or, for a path without a video
    extension, a folder of lossless PNG frames (000000.png, ...)."""

    def __init__(self, path: Path, fps: float) -> None:
        self.path, self.fps = Path(path), float(fps)
        self.video = self.path.suffix.lower() in VIDEO_EXTENSIONS
        self.vw: cv2.VideoWriter | None = None
        self.n = 0
        if self.video:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        else:
            self.path.mkdir(parents=True, exist_ok=True)

    def write(self, img: np.ndarray) -> None:
        if not self.video:
            cv2.imwrite(str(self.path / f"{self.n:06d}.png"), img, [cv2.IMWRITE_PNG_COMPRESSION, 1])
        else:
            if self.vw is None:
                ext = self.path.suffix.lower()
                fourcc = cv2.VideoWriter_fourcc(*("MJPG" if ext == ".avi" else "mp4v"))
                self.size = (img.shape[1], img.shape[0])
                self.vw = cv2.VideoWriter(str(self.path), fourcc, self.fps, self.size)
                if not self.vw.isOpened():
                    raise PKDNError(f"cannot write video {self.path} (OpenCV/FFmpeg refused it; try .avi or a folder)")
            if (img.shape[1], img.shape[0]) != self.size:  # image folders: frames of other sizes
                img = letterbox(img, self.size)
            self.vw.write(img)
        self.n += 1

    def release(self) -> None:
        if self.vw is not None:
            self.vw.release()
            self.vw = None
