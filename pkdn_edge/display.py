"""What the webcam loop shows: the composed view (output, or bicubic | pkdn-edge side by side) with
its FPS/latency overlay, and the optional window.

Runs without torch: numpy + cv2.
"""

from __future__ import annotations

import os
import sys

import cv2
import numpy as np

from pkdn_edge.pipeline import FrameResult


def display_available() -> bool:
    if sys.platform.startswith("linux") or "bsd" in sys.platform:
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


def _put(img: np.ndarray, text: str, org: tuple[int, int], scale: float, color=(255, 255, 255)) -> None:
    """Outlined overlay text. Plain 8-connected strokes: antialiased ones cost ~5x more (about 2 ms a
    frame on a 1080p canvas on 2 cores), and the dark outline hides the jaggies."""
    th = max(1, int(round(scale * 2)))
    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), th + 2, cv2.LINE_8)
    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, color, th, cv2.LINE_8)


class Composer:
    """Builds the frame to show/write (output, or bicubic | pkdn-edge) with the FPS/latency overlay,
    in reused buffers."""

    def __init__(self, view: str, label: str, overlay: bool = True) -> None:
        self.view, self.label, self.overlay = view, label, overlay
        self.buf: np.ndarray | None = None
        self.ema: dict[str, float] = {}
        self.loop_ema = 0.0

    def note_loop(self, ms: float) -> None:
        """The whole-loop time of the frame just finished (the overlay's FPS)."""
        self.loop_ema = ms if self.loop_ema == 0 else 0.9 * self.loop_ema + 0.1 * ms

    def compose(self, res: FrameResult, timings: dict[str, float]) -> np.ndarray:
        """The frame to show/write for ``res``; ``timings``: this frame's stage latencies (ms)."""
        canvas = res.canvas
        H, W = canvas.shape[:2]
        if self.view == "side-by-side":
            shape = (H, 2 * W, 3)
            if self.buf is None or self.buf.shape != shape:
                self.buf = np.empty(shape, np.uint8)
            out = self.buf
            out[:, W:] = canvas
            out[:, :W] = canvas
            for fr in reversed(res.faces):  # the bicubic baseline where faces were pasted (undo in reverse)
                if fr.paste is not None and fr.paste.base.size:
                    x1, y1, x2, y2 = fr.paste.box
                    out[y1:y2, x1:x2] = fr.paste.base
        else:
            out = canvas
        if self.overlay:
            for k, v in timings.items():
                self.ema[k] = v if k not in self.ema else 0.9 * self.ema[k] + 0.1 * v
            s = max(0.4, min(1.5, H / 900))
            lh = int(32 * s)
            e2e = self.ema.get("e2e", 0.0)
            fps = 1000.0 / self.loop_ema if self.loop_ema > 0 else 0.0
            _put(out, f"{self.label} | {fps:.1f} FPS (whole loop) | faces {len(res.faces)}", (10, lh), s)
            stages = " ".join(f"{k} {self.ema.get(k, 0):.1f}" for k in ("capture", "detect", "track", "align",
                                                                         "sr", "upscale", "paste"))
            _put(out, f"{stages} | e2e {e2e:.1f} ms", (10, 2 * lh), s * 0.8)
            if self.view == "side-by-side":
                _put(out, "input bicubic", (10, H - lh // 2), s, (200, 200, 255))
                _put(out, "pkdn-edge", (W + 10, H - lh // 2), s, (200, 255, 200))
        return out


class Window:
    """The optional OpenCV window. :meth:`show` returns ``""`` to go on, or why the loop should end
    (quit key, window closed). A cv2 without GUI support turns the window off (``failed`` set)."""

    title = "pkdn-edge (q to quit)"
    max_width = 1600

    def __init__(self, log) -> None:
        self.log = log
        self.open = True
        self.failed = False
        self.shown = 0

    def show(self, img: np.ndarray) -> str:
        if not self.open:
            return ""
        if img.shape[1] > self.max_width:
            k = self.max_width / img.shape[1]
            img = cv2.resize(img, (self.max_width, int(img.shape[0] * k)), interpolation=cv2.INTER_AREA)
        try:
            cv2.imshow(self.title, img)
            key = cv2.waitKey(1) & 0xFF
        except cv2.error as exc:  # OpenCV without GUI support (e.g. a -headless wheel)
            self.log(f"cannot open a window ({str(exc).strip().splitlines()[-1][:120]}): continuing headless")
            self.open, self.failed = False, True
            return ""
        if key in (ord("q"), 27):
            return "quit key"
        self.shown += 1
        if self.shown > 1 and cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE) < 1:
            return "window closed"
        return ""

    def close(self) -> None:
        if self.open:
            try:
                cv2.destroyAllWindows()
            except cv2.error:
                pass
