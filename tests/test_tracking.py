"""Landmark smoothing and face tracking (pkdn_edge.face.tracking): no shared/ data, no torch."""

import numpy as np
import pytest

from pkdn_edge.face.tracking import FaceTracker, LandmarkSmoother, OneEuroFilter, box_iou, interocular
from pkdn_edge.sources import DemoSource

BASE = np.array([[100.0, 100.0], [113.0, 100.0], [106.5, 108.0], [101.0, 116.0], [112.0, 116.0]])  # IOD 13


class Det:
    def __init__(self, lm, score=0.99):
        self.landmarks = np.asarray(lm, np.float32)
        c, iod = self.landmarks.mean(0), interocular(self.landmarks)
        self.box = np.array([c[0] - 1.1 * iod, c[1] - 1.3 * iod, c[0] + 1.1 * iod, c[1] + 1.2 * iod], np.float32)
        self.score = score


def test_one_euro_lowers_noise_and_follows_motion():
    rng = np.random.default_rng(0)
    f = OneEuroFilter(min_cutoff=1.0, beta=1.0)
    raw, out = [], []
    for i in range(300):
        x = BASE + rng.normal(0, 0.7, BASE.shape)
        raw.append(x)
        out.append(f(x, i / 30, norm=13.0))
    raw, out = np.array(raw[30:]), np.array(out[30:])
    assert out.std(0).mean() < 0.4 * raw.std(0).mean()
    # a steady move of 1 IOD/s: the filter follows with bounded lag (beta opens it)
    g = OneEuroFilter(min_cutoff=1.0, beta=1.0)
    for i in range(60):
        y = g(BASE + [13.0 * i / 30, 0], i / 30, norm=13.0)
    lag = (BASE[:, 0] + 13.0 * 59 / 30 - y[:, 0]).mean()
    assert 0 <= lag < 4.0
    slow = OneEuroFilter(min_cutoff=1.0, beta=0.0)
    for i in range(60):
        z = slow(BASE + [13.0 * i / 30, 0], i / 30, norm=13.0)
    assert (BASE[:, 0] + 13.0 * 59 / 30 - z[:, 0]).mean() > lag  # beta = 0 lags more


def test_smoother_lowers_jitter_variance():
    rng = np.random.default_rng(1)
    sm = LandmarkSmoother()
    off = LandmarkSmoother(enabled=False)
    a, b = [], []
    for i in range(200):
        x = BASE + rng.normal(0, 0.8, BASE.shape)
        a.append(sm(x, i / 30))
        b.append(off(x, i / 30))
    a, b = np.array(a[20:]), np.array(b[20:])
    assert np.allclose(b, np.array([BASE]) + (b - BASE), atol=1e-5)  # disabled = pass-through
    # frame-to-frame jitter and variance both drop a lot
    assert np.abs(np.diff(a, axis=0)).mean() < 0.3 * np.abs(np.diff(b, axis=0)).mean()
    assert a.var(0).mean() < 0.2 * b.var(0).mean()


def test_smoother_resets_on_jump():
    sm = LandmarkSmoother(reset_frac=0.5)
    for i in range(30):
        sm(BASE, i / 30)
    small = sm(BASE + [3.0, 0.0], 1.0)  # 0.23 IOD: smoothed, not taken as is
    assert 0 < small[0, 0] - BASE[0, 0] < 3.0
    assert sm.resets == 0
    jumped = sm(BASE + [40.0, 0.0], 1.0 + 1 / 30)  # 3 IOD: reset to the measurement
    assert sm.resets == 1
    assert np.allclose(jumped, BASE + [40.0, 0.0], atol=1e-4)


def test_smoother_predict_moves_state():
    sm = LandmarkSmoother()
    sm(BASE, 0.0)
    M = np.array([[1.0, 0.0, 5.0], [0.0, 1.0, -2.0]])
    sm.predict(M)
    assert np.allclose(sm.state, BASE + [5.0, -2.0], atol=1e-4)
    out = sm(BASE + [5.0, -2.0], 1 / 30)  # the measurement agrees with the motion: no correction
    assert np.allclose(out, BASE + [5.0, -2.0], atol=1e-3)


def test_box_iou():
    a = np.array([[0, 0, 10, 10]], np.float32)
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]], np.float32)
    assert np.allclose(box_iou(a, b), [[1.0, 1 / 3, 0.0]], atol=1e-6)


def _frame():
    return np.full((240, 320, 3), 128, np.uint8)


def test_association_keeps_ids_and_expires():
    tr = FaceTracker(detect_every=1, flow=False, max_misses=1)
    f = _frame()
    A, B = BASE, BASE + [150.0, 20.0]
    t1 = tr.update(f, 0.0, [Det(A), Det(B)])
    ids = {round(float(t.landmarks[0, 0])): t.id for t in t1}
    assert len(t1) == 2
    for i in range(1, 10):  # small moves; detections in swapped order
        t = tr.update(f, i / 30, [Det(B + [i, 0]), Det(A + [i, 0])])
        assert len(t) == 2
    now = {t.id for t in tr.tracks}
    assert now == set(ids.values())
    # face B disappears: kept for max_misses detector runs, then expired
    tr.update(f, 0.4, [Det(A + [10, 0])])
    assert len(tr.tracks) == 2
    tr.update(f, 0.45, [Det(A + [10, 0])])
    assert len(tr.tracks) == 1
    assert tr.stats["tracks_expired"] == 1
    # a new face gets a new id
    t = tr.update(f, 0.5, [Det(A + [10, 0]), Det(B)])
    assert len(t) == 2 and max(x.id for x in t) == 2


def test_max_faces_keeps_largest():
    tr = FaceTracker(detect_every=1, flow=False, max_faces=2)
    c = BASE.mean(0)
    dets = [Det((BASE - c) * s + c + [x, 0]) for s, x in ((1.0, 0), (2.0, 100), (1.5, 200))]
    tracks = tr.update(np.zeros((480, 640, 3), np.uint8), 0.0, dets)
    assert len(tracks) == 2
    assert sorted(round(t.iod) for t in tracks) == [20, 26]


def test_detect_every():
    tr = FaceTracker(detect_every=3)
    runs = []
    for i in range(9):
        runs.append(tr.should_detect())
        tr.update(_frame(), i / 30, [] if runs[-1] else None)
    assert runs == [True, False, False] * 3


def test_duplicate_tracks_are_merged():
    tr = FaceTracker(detect_every=1, flow=False)
    tracks = tr.update(_frame(), 0.0, [Det(BASE), Det(BASE + [0.5, 0.5])])
    assert len(tracks) == 1


def test_flow_tracks_the_demo_between_detections():
    """Detector only on frame 0 (perfect landmarks); optical flow alone follows the moving face."""
    demo = DemoSource(faces=1, frames=40, noise=2.0, jitter=0.5)
    tr = FaceTracker(detect_every=1000, smooth=True)
    errs = []
    for i in range(40):
        truth = demo.landmarks_at(i)[0]
        dets = [Det(truth)] if i == 0 else None
        tracks = tr.update(demo.render(i), i / 30, dets)
        assert len(tracks) == 1
        errs.append(np.sqrt(((tracks[0].landmarks - truth) ** 2).sum(-1)).mean() / interocular(truth))
    # the face moves several IODs over 40 frames (camera pan/zoom/roll + sway); flow keeps it within 10 %
    moved = np.abs(demo.landmarks_at(39)[0] - demo.landmarks_at(0)[0]).max() / interocular(demo.landmarks_at(0)[0])
    assert moved > 0.5
    assert max(errs) < 0.10, max(errs)


@pytest.mark.parametrize("detect_every", [1, 5])
def test_smoothing_lowers_landmark_jitter_on_demo(detect_every):
    """Noisy detections (0.7 px on a 13 px IOD) on the moving demo: smoothed landmarks are both more
    accurate and steadier than raw ones."""
    demo = DemoSource(faces=1, frames=60)
    frames = [demo.render(i) for i in range(60)]
    truth = [demo.landmarks_at(i)[0] for i in range(60)]

    def run(smooth):
        rng = np.random.default_rng(0)
        tr = FaceTracker(detect_every=detect_every, smooth=smooth)
        err, jit, prev = [], [], None
        for i in range(60):
            dets = [Det(truth[i] + rng.normal(0, 0.7, (5, 2)))] if tr.should_detect() else None
            lm = tr.update(frames[i], i / 30, dets)[0].landmarks
            e = lm - truth[i]
            err.append(np.sqrt((e ** 2).sum(-1)).mean())
            if prev is not None:
                jit.append(np.sqrt(((e - prev) ** 2).sum(-1)).mean())
            prev = e
        return np.mean(err[10:]), np.mean(jit[10:])

    e_raw, j_raw = run(False)
    e_s, j_s = run(True)
    assert e_s < 0.7 * e_raw
    assert j_s < 0.6 * j_raw


def test_detector_box_formats():
    from pkdn_edge.face.tracking import _face_fields

    class F:
        landmarks = BASE
        score = 0.9

    f = F()
    f.box = [90.0, 85.0, 125.0, 130.0]  # x1 y1 x2 y2
    assert np.allclose(_face_fields(f)[0], [90, 85, 125, 130])
    f.box = [90.0, 85.0, 35.0, 45.0]  # x y w h
    assert np.allclose(_face_fields(f)[0], [90, 85, 125, 130])
