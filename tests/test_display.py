"""The composed views (pkdn_edge.display): the zoom panel of super-resolved faces and the headless
default-view rule. Fast: synthetic FrameResults, the bicubic engine, a detector that returns the demo
source's true landmarks. No shared/ data, no trained weights."""

from __future__ import annotations

import json
import tracemalloc
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from pkdn_edge import display, webcam
from pkdn_edge.display import PAD, PANEL_BG, PANEL_W, ROW_H, TILE, Composer, auto_view, zoom_rows
from pkdn_edge.engines.bicubic import BicubicEngine
from pkdn_edge.face.align import rescale_matrix, template, umeyama_similarity
from pkdn_edge.pipeline import FacePipeline, FaceResult, FrameResult
from pkdn_edge.sources import DemoSource

# ------------------------------------------------------------------------------------------------
# the default-view rule


def test_auto_view_zoom_only_where_the_canvas_shrinks_the_sr_faces():
    # the webcam's default 1920x1080 canvas with the x4 engine
    assert auto_view((1280, 720), (1920, 1080), 4) == "zoom"      # x1.5 < x4: faces shrunk 2.7x
    assert auto_view((1920, 1080), (1920, 1080), 4) == "zoom"     # x1
    assert auto_view((640, 480), (1440, 1080), 4) == "zoom"       # x2.25
    assert auto_view((320, 240), (1280, 960), 4) == "output"      # x4: pasted at native size
    assert auto_view((640, 480), (2560, 1920), 4) == "output"     # --canvas full
    assert auto_view((320, 240), (1280, 960), 8) == "zoom"        # a x8 canvas shrunk to x4
    assert auto_view((1280, 720), (1920, 1080), 0) == "output"    # no face path: nothing to zoom
    # a canvas too short for one face row keeps the output view
    assert auto_view((100, 50), (200, ROW_H + PAD - 1), 4) == "output"
    assert auto_view((100, 50), (300, ROW_H + PAD), 4) == "zoom"


def test_zoom_rows_fit_the_canvas_height_and_max_faces():
    assert zoom_rows(1080, 8) == (1080 - PAD) // ROW_H == 7
    assert zoom_rows(1080, 3) == 3
    assert zoom_rows(ROW_H + PAD - 1, 8) == 0
    for h in (200, 480, 720, 960, 1080, 1440):
        assert PAD + zoom_rows(h, 99) * ROW_H <= h


# ------------------------------------------------------------------------------------------------
# the zoom panel on synthetic frames


def _frame(w=320, h=240, seed=0):
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (h // 8, w // 8, 3), np.uint8)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)  # smooth texture: bicubic is exact-ish


def _face(track_id, cx, cy, iod=10.75, sr_value=None, rng=None, scale=4):
    """A FaceResult whose 5 landmarks sit at the x4 template's (32x32) shifted to (cx, cy) and scaled to
    ``iod`` px; ``sr``: a constant or random 128x128 image (what the engine 'returned')."""
    tpl = template(32)
    c = tpl.mean(0)
    lm = (tpl - c) * (iod / float(np.hypot(*(tpl[1] - tpl[0])))) + np.array([cx, cy])
    M = umeyama_similarity(lm, tpl)
    if sr_value is None:
        sr = (rng or np.random.default_rng(track_id)).integers(0, 256, (128, 128, 3), np.uint8)
    else:
        sr = np.full((128, 128, 3), sr_value, np.uint8)
    return FaceResult(track_id, lm, lm, np.array([cx - 20, cy - 20, cx + 20, cy + 20], np.float32), iod, scale,
                      M=M, lr=np.zeros((32, 32, 3), np.uint8), sr=sr, paste=None)


def _result(faces, canvas_wh=(480, 360)):
    canvas = np.full((canvas_wh[1], canvas_wh[0], 3), 77, np.uint8)
    return FrameResult(canvas, faces, {}, False)


def _tile(out, W, row, col):
    y = PAD + row * ROW_H + display.LABEL_H
    x = W + PAD + col * (TILE + PAD)
    return out[y:y + TILE, x:x + TILE]


def test_zoom_shows_sr_at_native_size_next_to_plain_bicubic():
    frame = _frame()
    face = _face(3, 150.3, 110.6, iod=12.0)
    res = _result([face])
    comp = Composer("zoom", "t", overlay=False)
    out = comp.compose(res, {}, frame=frame)
    H, W = res.canvas.shape[:2]
    assert out.shape == (H, W + PANEL_W, 3)
    assert np.array_equal(out[:, :W], res.canvas)                       # the canvas untouched (no overlay)
    assert np.array_equal(_tile(out, W, 0, 0), face.sr)                  # the SR output, not resampled
    A = rescale_matrix(face.M, 1.0, TILE / 32)
    want = cv2.warpAffine(frame, A, (TILE, TILE), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)
    assert np.array_equal(_tile(out, W, 0, 1), want)
    assert comp.tiles == 1
    # the label strip above the row is drawn on; everything below the row is the plain background
    y0 = PAD
    assert (out[y0:y0 + display.LABEL_H, W:] != PANEL_BG).any()
    assert (out[PAD + ROW_H:, W:] == PANEL_BG).all()


def test_bicubic_tile_is_the_frame_region_upscaled_plainly():
    """An upright face (no rotation): the comparison tile is the frame's face region resized x(128/32 *
    template scale) bicubically, i.e. what plain upscaling shows, not the model's template path."""
    frame = _frame(seed=1)
    tpl = template(32)
    # landmarks = the template itself shifted by an integer offset: M is a pure translation (LR px = frame px)
    off = np.array([100.0, 80.0])
    face = FaceResult(1, tpl + off, tpl + off, np.zeros(4, np.float32), 10.75, 4,
                      M=umeyama_similarity(tpl + off, tpl), lr=np.zeros((32, 32, 3), np.uint8),
                      sr=np.zeros((128, 128, 3), np.uint8))
    out = Composer("zoom", "t", overlay=False).compose(_result([face]), {}, frame=frame)
    tile = _tile(out, 480, 0, 1).astype(np.int16)
    crop = frame[70:122, 90:142]  # the 32x32 region with 10 px of context, so the resize sees the same borders
    up = cv2.resize(crop, None, fx=4, fy=4, interpolation=cv2.INTER_CUBIC).astype(np.int16)[40:168, 40:168]
    assert np.abs(tile - up).mean() < 1.0 and np.abs(tile - up).max() <= 3  # warp tables: +-few levels


def test_rows_ordered_by_track_id_follow_tracks_and_skip_unsuperresolved_faces():
    frame = _frame()
    comp = Composer("zoom", "t", overlay=True, max_tiles=8)
    a, b = _face(7, 80, 80, sr_value=200), _face(2, 200, 150, sr_value=100)
    big = FaceResult(4, a.landmarks, a.raw, a.box, 60.0, 0)             # too large: left bicubic
    nosr = _face(5, 120, 120, sr_value=30)
    nosr.sr = None                                                      # outside the frame: not SR'd
    out = comp.compose(_result([a, big, nosr, b]), {}, frame=frame)
    assert comp.tiles == 2
    assert (_tile(out, 480, 0, 0) == 100).all() and (_tile(out, 480, 1, 0) == 200).all()  # id 2, then id 7
    first = out
    out = comp.compose(_result([a]), {}, frame=frame)                   # face 2 left the scene
    assert out is first                                                 # the same buffer, reused
    assert comp.tiles == 1 and (_tile(out, 480, 0, 0) == 200).all()
    assert (out[PAD + ROW_H:, 480:] == PANEL_BG).all()                  # its row is gone
    fresh = Composer("zoom", "t", overlay=True).compose(_result([a]), {}, frame=frame)
    assert np.array_equal(out[:, 480:], fresh[:, 480:])                 # row 0 relabelled "#7", nothing stale
    out = comp.compose(_result([]), {}, frame=frame)
    assert comp.tiles == 0 and (out[:, 480:] == PANEL_BG).all()


def test_overlay_stays_on_the_canvas():
    """The FPS/latency lines and the face markers are drawn on the canvas part only, even when they are
    longer than a narrow canvas is wide (the panel persists between frames: a spill would stay)."""
    frame = _frame()
    face = _face(1, 300, 100, sr_value=90)
    face.paste = SimpleNamespace(box=(470, 40, 480, 120), base=np.empty((0, 0, 3), np.uint8))
    comp = Composer("zoom", "a long label " * 5, overlay=True)
    out = comp.compose(_result([face], (480, 360)), {"e2e": 3.0}, frame=frame)
    want = Composer("zoom", "x", overlay=False).compose(_result([face], (480, 360)), {}, frame=frame)
    assert (out[:, :480] != 77).any()                                    # the overlay is there
    assert np.array_equal(out[:, 480:], want[:, 480:])


@pytest.mark.parametrize("view", ["output", "zoom"])
def test_overlay_text_fits_a_narrow_frame(view):
    """On a 320 px wide frame the FPS/latency text is wrapped (and shrunk where a word alone is too wide)
    so that it stays inside the frame: nothing is cut off at the right edge."""
    W, H = 320, 240
    label = "pkdn-edge auto openvino int8"
    timings = {k: 123.4 for k in ("capture", "detect", "track", "align", "sr", "upscale", "paste", "total", "e2e")}
    comp = Composer(view, label, overlay=True)
    comp.note_loop(8.1)
    face = _face(1, 100, 100, sr_value=90)
    out = comp.compose(_result([face] * 8, (W, H)), timings, frame=_frame())
    drawn = np.argwhere((out[:, :W] != 77).any(axis=2))
    assert len(drawn)                                                   # the overlay is there
    top, left = drawn.min(0)
    bottom, right = drawn.max(0)
    assert left >= display.MARGIN // 2 and right < W - display.MARGIN // 2, (left, right)
    assert top >= 0 and bottom < H // 2                                 # a few short lines at the top
    # the layout itself: every line of both texts within the margins
    for text, scale in ((f"{label} | 123.4 FPS (whole loop) | faces 8", 0.4),
                        ("capture 123.4 detect 123.4 track 123.4 align 123.4 sr 123.4 | e2e 123.4 ms", 0.32)):
        lines = display.fit_text(text, W - 2 * display.MARGIN, scale)
        assert len(lines) > 1
        assert all(display.MARGIN + display.text_width(t, s) <= W - display.MARGIN for t, s in lines)
    assert display.fit_text("short", W, 0.4) == [("short", 0.4)]       # text that fits: one line, unchanged
    assert display.fit_text("x" * 80, W, 0.4)[0][1] < 0.4              # one word too wide: drawn smaller


def test_rows_capped_by_max_faces_and_canvas_height():
    frame = _frame()
    faces = [_face(i, 60 + 30 * i, 100, sr_value=10 * i + 5) for i in range(6)]
    comp = Composer("zoom", "t", overlay=False, max_tiles=8)
    out = comp.compose(_result(faces, (480, 2 * ROW_H + PAD + 40)), {}, frame=frame)
    assert comp.tiles == 2                                              # the height fits 2 rows
    assert (_tile(out, 480, 1, 0) == 15).all()                          # ids 0 and 1 shown
    assert (out[PAD + 2 * ROW_H:, 480:] != PANEL_BG).any()              # "+4 more" below them
    comp = Composer("zoom", "t", overlay=False, max_tiles=3)
    comp.compose(_result(faces, (480, 1080)), {}, frame=frame)
    assert comp.tiles == 3


def test_auto_decides_once_on_the_first_frame():
    comp = Composer("auto", "t", overlay=False, engine_scale=4)
    out = comp.compose(_result([], (480, 360)), {}, frame=_frame())      # 320x240 -> 480x360: x1.5
    assert comp.view == "zoom" and out.shape[1] == 480 + PANEL_W
    comp = Composer("auto", "t", overlay=False, engine_scale=4)
    res = _result([], (1280, 960))
    assert comp.compose(res, {}, frame=_frame()) is res.canvas and comp.view == "output"
    with pytest.raises(ValueError):
        Composer("zoom", "t").compose(_result([]), {})                  # no frame: no bicubic tiles
    with pytest.raises(ValueError):
        Composer("mosaic", "t")


def test_zoom_compose_allocates_nothing_per_frame():
    frame = _frame()
    comp = Composer("zoom", "label", overlay=True, max_tiles=4)
    faces = [_face(i, 60 + 60 * i, 120) for i in range(3)]
    timings = {"sr": 1.0, "e2e": 2.0}
    for f, x in zip(faces, (10, 80, 200)):
        f.paste = SimpleNamespace(box=(x, 40, x + 60, 120), base=np.empty((0, 0, 3), np.uint8))
    for _ in range(20):
        comp.compose(_result(faces), timings, frame=frame)
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        for i in range(300):
            comp.compose(_result(faces[: 1 + i % 3]), timings, frame=frame)
        grown = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert grown < 400_000, grown  # one canvas per call is made here by _result (460 kB); nothing kept


# ------------------------------------------------------------------------------------------------
# the CLI


class DemoTruth:
    """A detector returning the demo's true landmarks (--detect-every 1: call k is frame k)."""

    def __init__(self, demo: DemoSource):
        self.demo, self.calls = demo, 0

    def detect(self, frame):
        lms = self.demo.landmarks_at(self.calls)
        self.calls += 1
        return [SimpleNamespace(landmarks=np.asarray(lm, np.float32), score=0.99) for lm in lms]


@pytest.mark.parametrize("size,canvas,view,want", [("640x360", "960x540", None, "zoom"),      # x1.5 canvas
                                                   ("320x240", "1920x1080", None, "output"),   # x4 canvas
                                                   ("320x240", "1920x1080", "zoom", "zoom")])
def test_cli_view(tmp_path, capsys, monkeypatch, size, canvas, view, want):
    spec = f"demo:faces=2,frames=3,size={size},motion=0"
    w, h = (int(v) for v in size.split("x"))
    monkeypatch.setattr(webcam, "build_detector",
                        lambda threads=2: DemoTruth(DemoSource(faces=2, frames=3, size=(w, h), motion=0)))
    monkeypatch.setattr(webcam, "build_engine", lambda backend, scale, *a, **k: BicubicEngine(scale))  # no model
    out, stats = tmp_path / "out", tmp_path / "s.json"
    argv = ["--source", spec, "--headless", "--scale", "4", "--detect-every", "1", "--canvas", canvas,
            "--output", str(out), "--stats-json", str(stats)] + (["--view", view] if view else [])
    assert webcam.main(argv) == 0, capsys.readouterr().err
    s = json.loads(stats.read_text())
    img = cv2.imread(str(sorted(out.glob("*.png"))[-1]))
    cw, ch = s["canvas_size"]
    assert s["view"] == want
    assert img.shape[:2] == (ch, cw + (PANEL_W if want == "zoom" else 0))
    assert s["latency_ms"]["compose"]["p50"] > 0
    if want == "zoom":
        panel = img[:, cw:]
        for row in range(2):  # both faces super-resolved and shown
            assert (panel[PAD + row * ROW_H + display.LABEL_H:PAD + (row + 1) * ROW_H - PAD] != PANEL_BG).any()


def test_bicubic_engine_tile_matches_sr_tile_geometry():
    """With the bicubic 'engine' the SR tile and the comparison tile show the same region: they differ
    only by the template path's resampling (a few gray levels), so the panel compares like with like."""
    demo = DemoSource(faces=1, frames=2, size=(320, 240), motion=0, noise=0, iod=10.75)
    pipe = FacePipeline(BicubicEngine(4), None, canvas=(480, 360))
    frame = demo.render(0)
    res = pipe.process(frame, 0.0, detections=[SimpleNamespace(landmarks=demo.landmarks_at(0)[0], score=0.99)])
    out = Composer("zoom", "t", overlay=False).compose(res, {}, frame=frame)
    W = res.canvas.shape[1]
    sr, bic = _tile(out, W, 0, 0).astype(np.float32), _tile(out, W, 0, 1).astype(np.float32)
    assert np.abs(sr - bic).mean() < 6.0
    shifted = np.roll(bic, 4, axis=1)  # a 1-LR-px misregistration would show
    assert np.abs(sr - shifted).mean() > np.abs(sr - bic).mean() + 1.0


def test_a_window_larger_than_the_crop_shows_its_middle_at_native_size():
    """The x4 model is served on a 40x40 window (160x160 out): the SR tile is the output's middle
    128x128 (the face region, not resampled) and the bicubic tile shows the same region of the frame."""
    demo = DemoSource(faces=1, frames=2, size=(320, 240), motion=0, noise=0, iod=10.75)
    pipe = FacePipeline(BicubicEngine(4, lr_size=40), None, canvas=(480, 360))
    frame = demo.render(0)
    res = pipe.process(frame, 0.0, detections=[SimpleNamespace(landmarks=demo.landmarks_at(0)[0], score=0.99)])
    fr = res.faces[0]
    assert fr.sr.shape == (160, 160, 3)
    out = Composer("zoom", "t", overlay=False).compose(res, {}, frame=frame)
    W = res.canvas.shape[1]
    assert np.array_equal(_tile(out, W, 0, 0), fr.sr[16:144, 16:144])
    # the bicubic engine's SR is a plain resize of the window: the two tiles show the same pixels
    sr, bic = _tile(out, W, 0, 0).astype(np.float32), _tile(out, W, 0, 1).astype(np.float32)
    assert np.abs(sr - bic).mean() < 2.0
    assert np.abs(sr - np.roll(bic, 4, axis=1)).mean() > np.abs(sr - bic).mean() + 1.0
