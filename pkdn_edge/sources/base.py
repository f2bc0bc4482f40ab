"""The frame-source contract: :class:`Frame`, :class:`FrameSource` (validation, corrupt-frame
skipping, one frame size per stream), :func:`letterbox` and the :class:`Downscale` wrapper.

Runs without torch: numpy + cv2 only.
"""

from __future__ import annotations

from typing import Iterator, NamedTuple

import cv2
import numpy as np

from pkdn_edge.errors import PKDNError

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
    fixed_size = True  # later frames of another size are letterboxed into the first one's (video streams)

    def __init__(self) -> None:
        self.skipped = 0        # corrupt frames dropped
        self.delivered = 0
        self.size: tuple[int, int] | None = None  # (w, h) of the stream, fixed by the first frame
        self.end_reason = ""    # why the stream ended (for the summary)
        self.incomplete = False  # the stream ended early (damaged file, ...): end_reason says why
        self.lost = False       # a live source (camera) stopped delivering frames: the run fails (exit 2)
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
                    self.incomplete = True
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
        elif (w, h) != self.size and self.fixed_size:
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


class Downscale(FrameSource):
    """Wraps a source and shrinks every frame by ``factor`` (area averaging: what a lower-resolution
    sensor of the same optics would see)."""

    def __init__(self, source: FrameSource, factor: float) -> None:
        super().__init__()
        if not factor > 1.0:
            raise PKDNError("--downscale must be > 1")
        self.source, self.factor = source, float(factor)
        self.name = f"{source.name} /{factor:g}"
        self.fps, self.live, self.fixed_size = source.fps, source.live, source.fixed_size
        self._it = iter(source)

    def _read(self):
        try:
            fr = next(self._it)
        except StopIteration:
            self.end_reason, self.incomplete = self.source.end_reason, self.source.incomplete
            self.lost = self.source.lost
            return "end", None, None
        h, w = fr.image.shape[:2]
        size = (max(8, round(w / self.factor)), max(8, round(h / self.factor)))
        return "ok", cv2.resize(fr.image, size, interpolation=cv2.INTER_AREA), fr.t

    @property
    def skipped_total(self) -> int:
        return self.skipped + self.source.skipped

    def _close(self) -> None:
        self.source.close()
