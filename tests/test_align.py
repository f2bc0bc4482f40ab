"""pkdn_edge.face.align: template, similarity fit, antialiased warp, feathered paste-back.

Synthetic data only (no shared/ data, no detector).
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from pkdn_edge.errors import PKDNError
from pkdn_edge.face.align import (
    TEMPLATE_128,
    align_faces,
    estimate_similarity,
    feather_mask,
    inverse_matrix,
    matrix_scale,
    paste_back,
    paste_faces,
    rescale_matrix,
    template,
    transform_points,
    umeyama_similarity,
    warp_face,
)


def _similarity(scale: float, angle_deg: float, tx: float, ty: float) -> np.ndarray:
    a = math.radians(angle_deg)
    c, s = scale * math.cos(a), scale * math.sin(a)
    return np.array([[c, -s, tx], [s, c, ty]])


def _about(scale: float, angle_deg: float, cx: float, cy: float, size: int = 128) -> np.ndarray:
    """Similarity frame -> crop with the given scale and rotation that maps frame point (cx, cy)
    onto the crop centre."""
    M = _similarity(scale, angle_deg, 0.0, 0.0)
    M[:, 2] = (size - 1) / 2.0 - M[:, :2] @ np.array([cx, cy])
    return M


def _smooth_frame(h: int = 480, w: int = 640, seed: int = 0, cell: int = 16) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (h // cell + 1, w // cell + 1, 3), np.uint8)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)


def _landmarks_for(M_frame_to_crop: np.ndarray, size: int = 128) -> np.ndarray:
    """Frame landmarks that a known frame -> crop similarity maps exactly onto the template."""
    return transform_points(inverse_matrix(M_frame_to_crop), template(size))


# ------------------------------------------------------------------------------------------------
# template


def test_template_values_and_scaling():
    assert np.array_equal(template(128), TEMPLATE_128)
    assert TEMPLATE_128.tolist() == [[42.5, 49.5], [85.5, 49.5], [64.0, 75.0], [45.5, 93.5], [82.5, 93.5]]
    assert not TEMPLATE_128.flags.writeable
    t32 = template(32)
    assert np.allclose(t32[0], [(42.5 + 0.5) / 4 - 0.5, (49.5 + 0.5) / 4 - 0.5])  # 10.25, 12.0
    assert np.allclose(template(16), (TEMPLATE_128 + 0.5) / 8 - 0.5)
    assert np.allclose(template(256), (TEMPLATE_128 + 0.5) * 2 - 0.5)
    # IOD scales linearly with the crop side
    for n in (16, 32, 64, 512):
        assert math.isclose(t32[1, 0] - t32[0, 0], 43 / 4)
        tn = template(n)
        assert math.isclose(tn[1, 0] - tn[0, 0], 43 * n / 128)
    with pytest.raises(ValueError):
        template(0)


def test_template_pixel_centre_convention_matches_cv2_resize():
    """A dot drawn at a 128 template point lands on the 32 template point after INTER_AREA."""
    img = np.zeros((128, 128), np.float32)
    img[48:52, 41:45] = 1.0  # 4x4 block centred on (42.5, 49.5)
    small = cv2.resize(img, (32, 32), interpolation=cv2.INTER_AREA)
    ys, xs = np.nonzero(small)
    cx, cy = (xs * small[ys, xs]).sum() / small.sum(), (ys * small[ys, xs]).sum() / small.sum()
    assert np.allclose([cx, cy], template(32)[0], atol=1e-6)


# ------------------------------------------------------------------------------------------------
# similarity


@pytest.mark.parametrize("scale,angle,tx,ty", [(0.25, 0.0, -40.0, -20.0), (0.8, 17.0, 30.0, -100.0),
                                                (2.5, -35.0, 10.0, 5.0), (0.05, 90.0, 60.0, -5.0)])
def test_similarity_recovers_a_known_transform(scale, angle, tx, ty):
    M_true = _similarity(scale, angle, tx, ty)
    lm = _landmarks_for(M_true)
    M = estimate_similarity(lm, 128)
    assert M.shape == (2, 3) and M.dtype == np.float64
    assert np.allclose(M, M_true, atol=1e-6 * max(1.0, scale * 100))
    assert np.allclose(transform_points(M, lm), TEMPLATE_128, atol=1e-4)
    assert math.isclose(matrix_scale(M), scale, rel_tol=1e-6)


def test_similarity_is_least_squares_over_all_points():
    """With one landmark badly off, all 5 points are still used (no RANSAC outlier rejection):
    the result equals the closed-form least-squares fit, and differs from the 4-point fit."""
    lm = _landmarks_for(_similarity(0.5, 5.0, 3.0, 4.0))
    lm[2] += (8.0, -6.0)  # the nose is off
    M = estimate_similarity(lm, 128)
    ref = umeyama_similarity(lm, TEMPLATE_128)
    assert np.allclose(M, ref, atol=1e-4)
    four = umeyama_similarity(np.delete(lm, 2, 0), np.delete(TEMPLATE_128, 2, 0))
    assert np.abs(M - four).max() > 1e-3
    # the least-squares residual is minimal: perturbing M raises it
    def res(A):
        return ((transform_points(A, lm) - TEMPLATE_128) ** 2).sum()
    for d in np.eye(6).reshape(6, 2, 3) * 1e-3:
        assert res(M) <= res(M + d) + 1e-9 and res(M) <= res(M - d) + 1e-9


def test_similarity_falls_back_to_umeyama(monkeypatch):
    lm = _landmarks_for(_similarity(0.7, -12.0, 5.0, 9.0), 32)
    monkeypatch.setattr(cv2, "estimateAffinePartial2D", lambda *a, **k: (None, None))
    M = estimate_similarity(lm, 32)
    assert np.allclose(transform_points(M, lm), template(32), atol=1e-6)


def test_similarity_rejects_bad_landmarks():
    with pytest.raises(PKDNError, match="degenerate"):
        estimate_similarity(np.ones((5, 2)) * 7.0)
    with pytest.raises(PKDNError, match="NaN"):
        estimate_similarity(np.full((5, 2), np.nan))
    with pytest.raises(ValueError):
        estimate_similarity(np.zeros((3, 3)))


def test_inverse_and_rescale():
    M = _similarity(0.3, 20.0, 7.0, -3.0)
    inv = inverse_matrix(M)
    pts = np.random.default_rng(0).uniform(0, 500, (10, 2))
    assert np.allclose(transform_points(inv, transform_points(M, pts)), pts)
    with pytest.raises(PKDNError):
        inverse_matrix(np.zeros((2, 3)))
    # frame -> 32 LR, re-expressed as x4 canvas -> 128 SR: same as fitting on the rescaled points
    lm = _landmarks_for(M, 32) + np.random.default_rng(1).normal(0, 1, (5, 2))
    M32 = estimate_similarity(lm, 32)
    A = rescale_matrix(M32, src_scale=4, dst_scale=4)
    lm_canvas = (lm + 0.5) * 4 - 0.5
    assert np.allclose(A, estimate_similarity(lm_canvas, 128), atol=1e-4)


# ------------------------------------------------------------------------------------------------
# warp


def test_warp_puts_landmarks_on_the_template():
    frame = np.zeros((400, 500, 3), np.uint8)
    M_true = _about(0.6, 25.0, 250.0, 200.0)
    lm = _landmarks_for(M_true)
    for x, y in lm:  # bright blobs at the landmarks
        cv2.circle(frame, (int(round(x * 16)), int(round(y * 16))), 3 * 16, (255, 255, 255), -1, cv2.LINE_AA, 4)
    crop = warp_face(frame, estimate_similarity(lm, 128), 128)
    g = crop[:, :, 0].astype(np.float64)
    for tx, ty in TEMPLATE_128:
        x0, y0 = int(tx) - 6, int(ty) - 6
        win = g[y0:y0 + 14, x0:x0 + 14]
        ys, xs = np.mgrid[y0:y0 + 14, x0:x0 + 14]
        c = np.array([(xs * win).sum(), (ys * win).sum()]) / win.sum()
        assert np.allclose(c, [tx, ty], atol=0.6), (c, tx, ty)


def test_warp_is_antialiased_when_minifying():
    """A 1-px checkerboard shrunk 10x must come out flat grey (a plain bilinear warp aliases)."""
    yy, xx = np.mgrid[0:1000, 0:1000]
    frame = (((xx + yy) % 2) * 255).astype(np.uint8)
    frame = np.dstack([frame] * 3)
    M = _similarity(0.1, 13.0, 5.0, 2.0)
    out = warp_face(frame, M, 64)
    naive = cv2.warpAffine(frame, M, (64, 64), flags=cv2.INTER_LINEAR)
    assert abs(out.mean() - 127.5) < 3 and out.std() < 3
    assert naive.std() > 3 * out.std()


def test_warp_downscaled_matches_area_shrink_of_128_crop():
    frame = _smooth_frame(cell=64)
    lm = _landmarks_for(_about(0.4, 10.0, 320.0, 240.0))
    hr = warp_face(frame, estimate_similarity(lm, 128), 128)
    lr_direct = warp_face(frame, estimate_similarity(lm, 32), 32)
    lr_area = cv2.resize(hr, (32, 32), interpolation=cv2.INTER_AREA)
    assert np.abs(lr_direct.astype(int) - lr_area).mean() < 1.5


@pytest.mark.parametrize("shift", [(-300, -200), (260, 220), (0, 0), (-350, 150)])
def test_warp_region_of_interest_equals_full_frame_warp(shift):
    """Reading only the face region gives the same pixels as warping the whole frame, mirrored
    borders included (magnifying warp: no pre-shrink, so the result must be identical)."""
    frame = _smooth_frame()
    lm = _landmarks_for(_similarity(1.6, 8.0, -380.0 - shift[0] * 1.6, -260.0 - shift[1] * 1.6))
    M = estimate_similarity(lm, 128)
    assert matrix_scale(M) > 1
    full = cv2.warpAffine(frame, M, (128, 128), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT_101)
    assert np.array_equal(warp_face(frame, M, 128), full)
    out = np.empty((128, 128, 3), np.uint8)
    assert warp_face(frame, M, 128, out=out) is out and np.array_equal(out, full)


def test_warp_shapes_and_several_faces():
    frame = _smooth_frame()
    lms = [_landmarks_for(_similarity(s, a, -x, -y)) for s, a, x, y in [(0.5, 0, 100, 80), (0.3, -20, 50, 30)]]
    crops, mats = align_faces(frame, lms, 32)
    assert crops.shape == (2, 32, 32, 3) and crops.dtype == np.uint8 and mats.shape == (2, 2, 3)
    assert warp_face(frame, mats[0], (40, 20)).shape == (20, 40, 3)
    assert warp_face(frame[:, :, 0], mats[0], 16).shape == (16, 16)


# ------------------------------------------------------------------------------------------------
# feather mask / paste back


def test_feather_mask():
    m = feather_mask(128, 8)
    assert m.shape == (128, 128) and m.dtype == np.float32 and not m.flags.writeable
    assert m.min() == 0.0 and m.max() <= 1.0 and m[64, 64] == pytest.approx(1.0, abs=1e-6)
    assert (m[0, :] == 0).all() and (m[:, -1] == 0).all()
    row = m[64, :64]
    assert (np.diff(row) >= -1e-7).all()  # rises monotonically from the border inward
    assert 0.2 < m[64, 9] < 0.8  # the ramp is centred about feather px from the border
    assert m[64, 20] == pytest.approx(1.0, abs=1e-6)
    assert feather_mask(128, 8) is m  # cached
    assert (feather_mask((20, 30), 0) == 1).all() and feather_mask((20, 30), 0).shape == (20, 30)
    assert feather_mask(16, 40).max() > 0  # feather larger than the crop still leaves a centre


def test_paste_back_round_trip_changes_only_the_face_region():
    frame = _smooth_frame()
    canvas = frame.copy()
    M = estimate_similarity(_landmarks_for(_similarity(0.5, 15.0, -120.0, -70.0)), 128)
    face = warp_face(frame, M, 128)
    # 1) pasting the unchanged crop back barely changes the frame
    box = paste_back(canvas, face, M, feather_px=6)
    x1, y1, x2, y2 = box
    assert 0 <= x1 < x2 <= 640 and 0 <= y1 < y2 <= 480
    outside = np.ones(canvas.shape[:2], bool)
    outside[y1:y2, x1:x2] = False
    assert np.array_equal(canvas[outside], frame[outside])
    assert np.abs(canvas.astype(int) - frame).mean() < 1.0
    # 2) a visibly different face changes the face region, nothing outside the crop footprint
    canvas = frame.copy()
    paste_back(canvas, 255 - face, M, feather_px=6)
    diff = np.abs(canvas.astype(int) - frame).max(2)
    foot = np.zeros(frame.shape[:2], np.uint8)
    corners = transform_points(inverse_matrix(M), [[-0.5, -0.5], [127.5, -0.5], [127.5, 127.5], [-0.5, 127.5]])
    cv2.fillConvexPoly(foot, np.round(corners).astype(np.int32), 1)
    foot = cv2.dilate(foot, np.ones((3, 3), np.uint8))
    assert diff[foot == 0].max() == 0
    centre = transform_points(inverse_matrix(M), [[64.0, 64.0]])[0].round().astype(int)
    assert np.abs(canvas[centre[1], centre[0]].astype(int) - (255 - frame[centre[1], centre[0]])).max() <= 6
    # the feathered edge blends: 2 crop px inside the border the change is only partial
    ex, ey = transform_points(inverse_matrix(M), [[64.0, 2.0]])[0].round().astype(int)
    full_change = np.abs(255 - 2 * frame[ey, ex].astype(int)).max()
    assert full_change > 40 and diff[ey, ex] < 0.3 * full_change


def test_paste_back_into_an_upscaled_canvas():
    frame = _smooth_frame(240, 320)
    lm = _landmarks_for(_similarity(0.3, -10.0, -20.0, -10.0), 32)
    M = estimate_similarity(lm, 32)
    lr = warp_face(frame, M, 32)
    sr = cv2.resize(lr, (128, 128), interpolation=cv2.INTER_CUBIC)
    canvas = cv2.resize(frame, (1280, 960), interpolation=cv2.INTER_CUBIC)
    before = canvas.copy()
    A = rescale_matrix(M, 4, 4)
    x1, y1, x2, y2 = paste_back(canvas, sr, A, feather_px=8)
    assert (x2 - x1) > 100 and (y2 - y1) > 100
    # the face is put back where it was: the pasted canvas stays close to the bicubic canvas
    assert np.abs(canvas[y1:y2, x1:x2].astype(int) - before[y1:y2, x1:x2]).mean() < 4


def test_paste_shrinking_face_and_outside_canvas():
    frame = _smooth_frame()
    M = estimate_similarity(_landmarks_for(_similarity(4.0, 0.0, -1200.0, -800.0)), 128)  # face ~32 px on frame
    canvas = frame.copy()
    box = paste_back(canvas, np.zeros((128, 128, 3), np.uint8), M, feather_px=1)
    x1, y1, x2, y2 = box
    assert x2 - x1 < 40 and y2 - y1 < 40
    assert canvas[y1:y2, x1:x2].mean() < frame[y1:y2, x1:x2].mean()
    far = rescale_matrix(M, 1, 1).copy()
    far[:, 2] -= M[:, :2] @ np.array([5000.0, 5000.0])  # the face lies far outside the canvas
    assert paste_back(canvas, np.zeros((128, 128, 3), np.uint8), far) is None


def test_paste_several_faces():
    frame = _smooth_frame()
    canvas = frame.copy()
    mats = [estimate_similarity(_landmarks_for(_similarity(0.6, a, -x, -y)), 128)
            for a, x, y in [(0, 50, 50), (10, 300, 200)]]
    faces = [np.full((128, 128, 3), v, np.uint8) for v in (0, 255)]
    boxes = paste_faces(canvas, faces, mats, feather_px=4)
    assert len(boxes) == 2 and all(b is not None for b in boxes)
    for (x1, y1, x2, y2), v in zip(boxes, (0, 255)):
        cy, cx = (y1 + y2) // 2, (x1 + x2) // 2
        assert (canvas[cy, cx] == v).all()
    with pytest.raises(ValueError):
        paste_faces(canvas, faces, mats[:1])
