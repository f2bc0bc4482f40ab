"""What the webcam loop shows: the composed view (output, bicubic | pkdn-edge side by side, or the
output with a zoom panel of the super-resolved faces at their native size) with its FPS/latency
overlay, and the optional window.

Runs without torch: numpy + cv2.
"""

from __future__ import annotations

import os
import sys

import cv2
import numpy as np

from pkdn_edge.face.align import rescale_matrix
from pkdn_edge.pipeline import FaceResult, FrameResult

VIEWS = ("auto", "side-by-side", "output", "zoom")

# the zoom panel: one row per super-resolved face, [pkdn-edge SR | plain bicubic], TILE x TILE each
TILE = 128          # px: the face's 128x128 region of the SR output, at native resolution
PAD = 6             # px between tiles, rows and the panel's edges
LABEL_H = 16        # px of label above each row's tiles
ROW_H = LABEL_H + TILE + PAD
PANEL_W = 3 * PAD + 2 * TILE
PANEL_BG = 40       # gray of the panel's background


def zoom_rows(canvas_h: int, max_tiles: int) -> int:
    """How many face rows the zoom panel has beside a canvas ``canvas_h`` px tall: as many as fit, at
    most ``max_tiles``."""
    return max(0, min(int(max_tiles), (int(canvas_h) - PAD) // ROW_H))


def auto_view(frame_wh: tuple[int, int], canvas_wh: tuple[int, int], engine_scale: float) -> str:
    """The headless default view (``--view auto`` without a window) for a ``frame_wh`` frame shown on a
    ``canvas_wh`` canvas made for ``engine_scale`` (the loop's canvas scale: its smallest engine scale;
    0 = no face path): ``"zoom"`` when the canvas is smaller than the frame x that scale (``--canvas``
    shrank it, so the SR faces are area-shrunk when pasted and their detail reaches the screen only in
    the zoom panel) and at least one face row fits the canvas height; else ``"output"`` (the SR faces
    are pasted at their native resolution)."""
    canvas_scale = canvas_wh[0] / max(1, frame_wh[0])
    if canvas_scale < float(engine_scale) - 1e-6 and zoom_rows(canvas_wh[1], 1) >= 1:
        return "zoom"
    return "output"


def display_available() -> bool:
    if sys.platform.startswith("linux") or "bsd" in sys.platform:
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


FONT = cv2.FONT_HERSHEY_SIMPLEX
MARGIN = 10         # px from the frame's left and right edges to the overlay text


def _thickness(scale: float) -> int:
    return max(1, int(round(scale * 2)))


def text_width(text: str, scale: float) -> int:
    """Width in px of ``text`` drawn by :func:`_put` at ``scale`` (its dark outline included)."""
    return cv2.getTextSize(text, FONT, scale, _thickness(scale) + 2)[0][0]


def fit_text(text: str, width: int, scale: float) -> list[tuple[str, float]]:
    """``text`` as (line, font scale) pairs that fit ``width`` px: broken at `` | `` (then at spaces)
    where it is too wide, and a word wider than the width on its own drawn smaller. A text that fits
    is one line at ``scale``."""
    if text_width(text, scale) <= width:
        return [(text, scale)]
    lines: list[tuple[str, float]] = []
    for part in text.split(" | "):
        line = ""
        for word in part.split(" "):
            wider = f"{line} {word}" if line else word
            if not line or text_width(wider, scale) <= width:
                line = wider
                continue
            lines.append((line, scale))
            line = word
        lines.append((line, scale))
    return [(t, s if text_width(t, s) <= width else s * width / text_width(t, s)) for t, s in lines]


def _put(img: np.ndarray, text: str, org: tuple[int, int], scale: float, color=(255, 255, 255)) -> None:
    """Outlined overlay text. Plain 8-connected strokes: antialiased ones cost several times more,
    and the dark outline hides the jaggies."""
    th = _thickness(scale)
    cv2.putText(img, text, org, FONT, scale, (0, 0, 0), th + 2, cv2.LINE_8)
    cv2.putText(img, text, org, FONT, scale, color, th, cv2.LINE_8)


def _put_fitted(img: np.ndarray, text: str, x: int, y: int, line_h: int, scale: float) -> int:
    """``text`` at (x, y), wrapped to the image width (:func:`fit_text`); returns the next line's y."""
    for line, s in fit_text(text, img.shape[1] - x - MARGIN, scale):
        _put(img, line, (x, y), s)
        y += line_h
    return y


def _label(img: np.ndarray, text: str, org: tuple[int, int], color) -> None:
    """A zoom-panel label (small, on the panel's plain background: no outline needed)."""
    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, 0.4, color, 1, cv2.LINE_8)


def _tiled(fr: FaceResult) -> bool:
    """The face was super-resolved (the zoom panel shows it)."""
    return fr.sr is not None and fr.M is not None and fr.engine_scale > 0


class Composer:
    """Builds the frame to show/write with the FPS/latency overlay, in reused buffers.

    ``view``: ``output`` (the canvas), ``side-by-side`` (input bicubic | pkdn-edge), ``zoom`` (the
    canvas with, on its right, a :data:`PANEL_W` px column of face rows: each super-resolved face's SR
    output at its native :data:`TILE` x :data:`TILE` size, labelled with its track id and engine scale,
    next to the same aligned region of the input frame upscaled by plain bicubic interpolation, one
    resampling), or ``auto``: decided on the first frame by :func:`auto_view` (the headless default;
    ``view`` then holds the choice, kept for the whole run so the video size does not change).
    ``engine_scale``: the scale the loop's canvas is made for (for ``auto``; 0 = no face path). ``max_tiles``: at
    most that many face rows (the loop's ``--max-faces``); fewer when the canvas is not tall enough
    (:func:`zoom_rows`). Rows are ordered by track id; faces that were not super-resolved (too large,
    outside the frame) get none.
    """

    def __init__(self, view: str, label: str, overlay: bool = True, engine_scale: float = 4,
                 max_tiles: int = 8) -> None:
        if view not in VIEWS:
            raise ValueError(f"unknown view {view!r} (one of {', '.join(VIEWS)})")
        self.view, self.label, self.overlay = view, label, overlay
        self.engine_scale = float(engine_scale)
        self.max_tiles = max(0, int(max_tiles))
        self.buf: np.ndarray | None = None
        self._bic = np.empty((self.max_tiles, TILE, TILE, 3), np.uint8)  # bicubic tiles (warp targets)
        self._fit = np.empty((self.max_tiles, TILE, TILE, 3), np.uint8)  # SR outputs not TILE-sized, resized
        self.tiles = 0  # face rows drawn on the last frame
        self._row_keys: list = []  # zoom panel: what each row shows (see _zoom)
        self.ema: dict[str, float] = {}
        self.loop_ema = 0.0

    def note_loop(self, ms: float) -> None:
        """The whole-loop time of the frame just finished (the overlay's FPS)."""
        self.loop_ema = ms if self.loop_ema == 0 else 0.9 * self.loop_ema + 0.1 * ms

    def compose(self, res: FrameResult, timings: dict[str, float], frame: np.ndarray | None = None) -> np.ndarray:
        """The frame to show/write for ``res``; ``timings``: this frame's stage latencies (ms);
        ``frame``: the input frame ``res`` was made from (the zoom view's bicubic tiles need it)."""
        canvas = res.canvas
        H, W = canvas.shape[:2]
        if self.view == "auto":
            self.view = "output" if frame is None else \
                auto_view((frame.shape[1], frame.shape[0]), (W, H), self.engine_scale)
        if self.view == "zoom":
            out = self._zoom(res, frame)
        elif self.view == "side-by-side":
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
            img = out[:, :W] if self.view == "zoom" else out  # the zoom panel stays clear of the overlay
            for k, v in timings.items():
                self.ema[k] = v if k not in self.ema else 0.9 * self.ema[k] + 0.1 * v
            s = max(0.4, min(1.5, H / 900))
            lh = int(32 * s)
            e2e = self.ema.get("e2e", 0.0)
            fps = 1000.0 / self.loop_ema if self.loop_ema > 0 else 0.0
            y = _put_fitted(img, f"{self.label} | {fps:.1f} FPS (whole loop) | faces {len(res.faces)}",
                            MARGIN, lh, lh, s)
            stages = " ".join(f"{k} {self.ema.get(k, 0):.1f}" for k in ("capture", "detect", "track", "align",
                                                                         "sr", "upscale", "paste"))
            _put_fitted(img, f"{stages} | e2e {e2e:.1f} ms", MARGIN, y, lh, s * 0.8)
            if self.view == "side-by-side":
                _put(out, "input bicubic", (MARGIN, H - lh // 2), s, (200, 200, 255))
                _put(out, "pkdn-edge", (W + MARGIN, H - lh // 2), s, (200, 255, 200))
            elif self.view == "zoom":  # which face on the canvas each row shows
                for fr in res.faces:
                    if fr.paste is not None and _tiled(fr):
                        x1, y1 = fr.paste.box[:2]
                        _put(img, f"#{fr.track_id}", (x1 + 2, max(lh, y1 - 4)), s * 0.6, (200, 255, 200))
        return out

    def _zoom(self, res: FrameResult, frame: np.ndarray | None) -> np.ndarray:
        """The canvas with the face panel on its right (see the class docstring). The panel persists
        in the reused buffer: each frame writes the tiles of the rows in use, and a row's labels are
        redrawn (and a row cleared) only when the face shown there changes."""
        if frame is None:
            raise ValueError("the zoom view needs the input frame (compose(..., frame=))")
        canvas = res.canvas
        H, W = canvas.shape[:2]
        shape = (H, W + PANEL_W, 3)
        rows = zoom_rows(H, self.max_tiles)
        if self.buf is None or self.buf.shape != shape:
            self.buf = np.empty(shape, np.uint8)
            self.buf[:, W:] = PANEL_BG
            self._row_keys = [None] * (rows + 1)  # what each row shows (track id, scale); last: "+N more"
        out = self.buf
        out[:, :W] = canvas
        panel = out[:, W:]
        faces = sorted((fr for fr in res.faces if _tiled(fr)), key=lambda fr: fr.track_id)
        xs, xb = PAD, 2 * PAD + TILE
        for i in range(rows):
            y = PAD + i * ROW_H
            ty = y + LABEL_H
            fr = faces[i] if i < len(faces) else None
            key = None if fr is None else (fr.track_id, fr.engine_scale)
            if key != self._row_keys[i]:
                self._row_keys[i] = key
                panel[y:ty + TILE] = PANEL_BG
                if fr is not None:
                    _label(panel, f"#{fr.track_id} pkdn-edge x{fr.engine_scale}", (xs, ty - 4), (200, 255, 200))
                    _label(panel, "bicubic", (xb, ty - 4), (200, 200, 255))
            if fr is None:
                continue
            sr = fr.sr
            n = fr.lr.shape[1] if fr.lr is not None else fr.sr.shape[1] / fr.engine_scale
            k, o = TILE / n, 0.0  # tile px per LR crop px; offset of the tile in SR px
            if sr.shape[0] > TILE and sr.shape[0] == n * fr.engine_scale:  # a window larger than the face's
                # 128/s crop (x4: 40 -> 160 px): its middle TILE x TILE, the face region, at native resolution
                o = (sr.shape[0] - TILE) / 2.0
                c = int(o)
                sr, k = sr[c:c + TILE, c:c + TILE], float(fr.engine_scale)
            elif sr.shape[:2] != (TILE, TILE):  # an engine with another output size: shown at TILE px
                interp = cv2.INTER_AREA if sr.shape[0] > TILE else cv2.INTER_CUBIC
                sr = cv2.resize(sr, (TILE, TILE), dst=self._fit[i], interpolation=interp)
            panel[ty:ty + TILE, xs:xs + TILE] = sr
            # the same region of the input frame, plain bicubic: frame px -> tile px in one warp
            A = rescale_matrix(fr.M, 1.0, k)
            A[:, 2] -= o
            cv2.warpAffine(frame, A, (TILE, TILE), dst=self._bic[i], flags=cv2.INTER_CUBIC,
                           borderMode=cv2.BORDER_REPLICATE)
            panel[ty:ty + TILE, xb:xb + TILE] = self._bic[i]
        self.tiles = min(rows, len(faces))
        more = len(faces) - self.tiles
        y = PAD + rows * ROW_H
        if more != self._row_keys[rows] and y + LABEL_H <= H:  # faces beyond the rows that fit
            self._row_keys[rows] = more
            panel[y:y + LABEL_H] = PANEL_BG
            if more > 0:
                _label(panel, f"+{more} more", (xs, y + LABEL_H - 4), (255, 255, 255))
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
