"""GStreamer camera presets of pkdn_edge.sources (Jetson CSI / USB / raw pipelines).

The pipeline strings are checked exactly; opening goes through a fake ``cv2.VideoCapture`` (PyPI's
opencv-python has no GStreamer); a real pipeline runs only where OpenCV has GStreamer.
"""

from __future__ import annotations

import itertools

import cv2
import numpy as np
import pytest

from pkdn_edge import sources
from pkdn_edge.errors import PKDNError
from pkdn_edge.sources import (
    CameraNotFoundError,
    GStreamerSource,
    GStreamerUnavailableError,
    csi_pipeline,
    gstreamer_pipeline,
    open_source,
    opencv_has_gstreamer,
    usb_pipeline,
)
from pkdn_edge.sources import gstreamer as gst_sources

SINK = "videoconvert ! video/x-raw, format=(string)BGR ! appsink drop=true max-buffers=1 sync=false"


def test_csi_pipeline_default_and_options():
    assert csi_pipeline() == (
        "nvarguscamerasrc sensor-id=0 ! video/x-raw(memory:NVMM), width=(int)1280, height=(int)720, "
        "format=(string)NV12, framerate=(fraction)30/1 ! nvvidconv flip-method=0 ! "
        f"video/x-raw, width=(int)1280, height=(int)720, format=(string)BGRx ! {SINK}")
    p, name, fps = gstreamer_pipeline("csi:1,width=1920,height=1080,fps=60,flip=2,mode=1,out_width=960,out_height=540")
    assert p.startswith("nvarguscamerasrc sensor-id=1 sensor-mode=1 ! video/x-raw(memory:NVMM), width=(int)1920, "
                        "height=(int)1080, format=(string)NV12, framerate=(fraction)60/1 ! nvvidconv flip-method=2 ! "
                        "video/x-raw, width=(int)960, height=(int)540, format=(string)BGRx")
    assert (name, fps) == ("csi camera 1", 60.0)
    assert gstreamer_pipeline("csi")[0] == gstreamer_pipeline("csi:0")[0] == gstreamer_pipeline("CSI:sensor=0")[0]
    assert "framerate=(fraction)2997/100" in csi_pipeline(fps=29.97)


def test_usb_pipeline_raw_mjpeg_and_camera_chosen_modes():
    assert usb_pipeline() == ("v4l2src device=/dev/video0 ! video/x-raw, width=(int)640, height=(int)480, "
                              f"framerate=(fraction)30/1 ! {SINK}")
    p, name, fps = gstreamer_pipeline("usb:1,width=1280,height=720,fps=30,mjpeg=1")
    assert p == ("v4l2src device=/dev/video1 ! image/jpeg, width=(int)1280, height=(int)720, "
                 f"framerate=(fraction)30/1 ! jpegdec ! {SINK}")
    assert (name, fps) == ("usb camera /dev/video1", 30.0)
    p, name, fps = gstreamer_pipeline("usb:/dev/video2,width=0,height=0,fps=0")
    assert p == f"v4l2src device=/dev/video2 ! video/x-raw ! {SINK}" and fps is None
    assert gstreamer_pipeline("usb")[0] == gstreamer_pipeline("usb:0")[0] == usb_pipeline("/dev/video0")


def test_raw_gst_pipeline_is_kept_and_gets_an_appsink_when_missing():
    raw = "v4l2src device=/dev/video0 ! video/x-raw,format=YUY2 ! videoconvert ! video/x-raw,format=BGR ! appsink"
    assert gstreamer_pipeline("gst:" + raw) == (raw, "gstreamer (v4l2src device=/dev/video0)", None)
    assert gstreamer_pipeline("gst: videotestsrc pattern=ball")[0] == f"videotestsrc pattern=ball ! {SINK}"


@pytest.mark.parametrize("spec,match", [
    ("csi:0,zoom=2", "unknown csi option"), ("usb:0,exposure=3", "unknown usb option"),
    ("csi:0,flip=9", "flip=9 must be 0-7"), ("csi:0,width=wide", "not an integer"), ("csi:0,fps=0", "must be > 0"),
    ("csi:0,fps=fast", "not a number"), ("usb:video0", "not a /dev/videoN node"), ("csi:0,1", "not key=value"),
    ("gst:", "needs a pipeline"), ("usb:0,width=-5", "must be >= 1"),
])
def test_bad_camera_specs_are_one_line_errors(spec, match):
    with pytest.raises(PKDNError, match=match):
        gstreamer_pipeline(spec)


def test_gstreamer_detection_uses_the_registry_then_the_build_information(monkeypatch):
    monkeypatch.setattr(cv2.videoio_registry, "hasBackend", lambda api: api == cv2.CAP_GSTREAMER)
    assert opencv_has_gstreamer()
    monkeypatch.setattr(cv2.videoio_registry, "hasBackend", lambda api: False)
    assert not opencv_has_gstreamer()

    def broken(api):
        raise AttributeError("old cv2")

    monkeypatch.setattr(cv2.videoio_registry, "hasBackend", broken)
    monkeypatch.setattr(cv2, "getBuildInformation", lambda: "  Video I/O:\n    GStreamer:  YES (1.20.3)\n")
    assert opencv_has_gstreamer()
    monkeypatch.setattr(cv2, "getBuildInformation", lambda: "  Video I/O:\n    GStreamer:                   NO\n")
    assert not opencv_has_gstreamer()


def test_opencv_without_gstreamer_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(gst_sources, "opencv_has_gstreamer", lambda: False)
    for spec in ("csi:0", "usb:/dev/video0", "gst:videotestsrc ! appsink"):
        with pytest.raises(GStreamerUnavailableError, match=r"OpenCV built with GStreamer.*opencv-python.*"
                                                            r"nvidia-opencv.*--system-site-packages.*--source 0"):
            open_source(spec)


class _FakeCapture:
    """cv2.VideoCapture stand-in: records how it was opened, yields `frames` gray-ish BGR frames."""

    opened: list[tuple[str, int]] = []

    def __init__(self, spec, api=None, frames=3, ok=True):
        _FakeCapture.opened.append((spec, api))
        self.ok, self.left = ok, frames

    def isOpened(self):
        return self.ok

    def read(self):
        if self.left <= 0:
            return False, None
        self.left -= 1
        return True, np.full((48, 64, 3), 100 + self.left, np.uint8)

    def get(self, prop):
        return 25.0 if prop == cv2.CAP_PROP_FPS else 0.0

    def release(self):
        pass


def test_presets_open_through_cv2_capture_with_the_gstreamer_api(monkeypatch):
    monkeypatch.setattr(gst_sources, "opencv_has_gstreamer", lambda: True)
    _FakeCapture.opened = []
    monkeypatch.setattr(gst_sources.cv2, "VideoCapture", _FakeCapture)
    src = open_source("csi:0,width=640,height=480")
    assert isinstance(src, GStreamerSource) and src.live and src.name == "csi camera 0" and src.fps == 25.0
    frames = [f.image for f in itertools.islice(iter(src), 3)]
    assert len(frames) == 3 and frames[0].shape == (48, 64, 3)
    src.close()
    pipe, api = _FakeCapture.opened[0]
    assert api == cv2.CAP_GSTREAMER and pipe == gstreamer_pipeline("csi:0,width=640,height=480")[0]
    down = open_source("usb:2", downscale=2)
    assert down.name == "usb camera /dev/video2 /2" and next(iter(down)).image.shape == (24, 32, 3)
    down.close()


def test_a_pipeline_that_does_not_start_names_gst_launch(monkeypatch):
    monkeypatch.setattr(gst_sources, "opencv_has_gstreamer", lambda: True)
    monkeypatch.setattr(gst_sources.cv2, "VideoCapture", lambda spec, api=None: _FakeCapture(spec, api, ok=False))
    expected = (r"csi camera 0: OpenCV could not start.*nvargus-daemon.*"
                r"gst-launch-1.0 -e nvarguscamerasrc sensor-id=0 ! 'video/x-raw\(memory:NVMM\), .*' ! "
                r"nvvidconv flip-method=0 ! .* ! videoconvert ! .* ! fakesink`")
    with pytest.raises(CameraNotFoundError, match=expected):
        open_source("csi:0")


def test_bare_csi_or_usb_is_a_path_when_such_a_folder_exists(tmp_path, monkeypatch):
    (tmp_path / "usb").mkdir()
    cv2.imwrite(str(tmp_path / "usb" / "a.png"), np.zeros((16, 16, 3), np.uint8))
    monkeypatch.chdir(tmp_path)
    assert isinstance(open_source("usb"), sources.ImageFolderSource)
    monkeypatch.setattr(gst_sources, "opencv_has_gstreamer", lambda: False)
    with pytest.raises(GStreamerUnavailableError):
        open_source("usb:0")  # with a colon it is always the camera preset


@pytest.mark.skipif(not opencv_has_gstreamer(),
                    reason="this OpenCV has no GStreamer (PyPI's opencv-python wheels "
                           "are built without it; JetPack's OpenCV / python3-opencv have it)")
def test_real_gstreamer_test_pattern():
    # is-live: a live source like a camera (a non-live one fills the drop=true appsink faster than it is read)
    src = open_source("gst:videotestsrc is-live=true num-buffers=30 ! video/x-raw,width=64,height=48,framerate=30/1")
    frames = [f.image for f in itertools.islice(iter(src), 5)]
    src.close()
    assert len(frames) == 5 and frames[0].shape == (48, 64, 3) and frames[0].dtype == np.uint8
