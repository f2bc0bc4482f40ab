"""Frame sources for the webcam loop: camera, video file, image folder and a built-in demo.

Every source is an iterator of :class:`Frame` ``(index, t, image)``: ``image`` is a BGR uint8
(H, W, 3) array, ``t`` the capture time in seconds (camera: wall clock; files and demo: index / fps),
``index`` counts delivered frames. Corrupt frames (``None``, empty, wrong dtype or shape) are skipped
and counted in ``source.skipped``; gray and BGRA frames are converted. All frames of a camera, video
or demo stream have the size of the first one (later frames of another size are letterboxed); an
image folder keeps every image's own size (a video writer letterboxes them into its first frame's).

``open_source(spec)`` understands: a camera index (``0``), a video file, a folder of images,
``demo`` / ``demo:3`` / ``demo:faces=3,frames=300,jitter=0.5``, and GStreamer cameras (Jetson):
``csi:0`` / ``csi:1,width=1920,height=1080,fps=30,flip=2`` (``nvarguscamerasrc``),
``usb:/dev/video0`` / ``usb:1,width=1280,height=720,mjpeg=1`` (``v4l2src``) or ``gst:<pipeline>``
(a raw pipeline ending in ``appsink``), opened with ``cv2.VideoCapture(pipeline, cv2.CAP_GSTREAMER)``;
these need an OpenCV built with GStreamer (see :func:`opencv_has_gstreamer`). ``Downscale(src, f)`` (``--downscale F``)
shrinks any source by ``f`` with area averaging, to simulate a low-resolution camera.

Runs without torch: numpy + cv2 only.
"""

from __future__ import annotations

from pathlib import Path

from pkdn_edge.errors import ImageReadError, PKDNError
from pkdn_edge.sources.base import IMAGE_EXTENSIONS, CameraNotFoundError, Downscale, Frame, FrameSource, letterbox
from pkdn_edge.sources.camera import CameraSource, camera_available
from pkdn_edge.sources.demo import DEMO_FACE_LANDMARKS, DemoFace, DemoSource, _parse_demo, load_demo_face
from pkdn_edge.sources.files import ImageFolderSource, VideoFileSource
from pkdn_edge.sources.gstreamer import (
    GST_SCHEMES,
    GStreamerSource,
    GStreamerUnavailableError,
    _is_gstreamer_spec,
    csi_pipeline,
    gstreamer_pipeline,
    gstreamer_unavailable_message,
    opencv_has_gstreamer,
    usb_pipeline,
)

__all__ = [
    "Frame",
    "FrameSource",
    "CameraSource",
    "VideoFileSource",
    "ImageFolderSource",
    "DemoSource",
    "Downscale",
    "CameraNotFoundError",
    "GStreamerSource",
    "GStreamerUnavailableError",
    "csi_pipeline",
    "usb_pipeline",
    "gstreamer_pipeline",
    "opencv_has_gstreamer",
    "open_source",
    "load_demo_face",
    "IMAGE_EXTENSIONS",
    # also importable from here, as before the split into modules
    "letterbox",
    "camera_available",
    "DEMO_FACE_LANDMARKS",
    "DemoFace",
    "GST_SCHEMES",
    "gstreamer_unavailable_message",
]


def open_source(spec: str | int, downscale: float | None = None, loop: bool = False) -> FrameSource:
    """Open ``spec``: camera index, video file, image folder, ``demo[:...]`` or a GStreamer camera
    (``csi:...``, ``usb:...``, ``gst:...``, see :func:`gstreamer_pipeline`); optionally downscaled."""
    s = str(spec).strip()
    if s.lower().startswith("demo"):
        try:
            src: FrameSource = DemoSource(**_parse_demo(s.lower()))
        except ValueError as exc:
            raise PKDNError(f"bad demo spec {s!r}: {exc}") from None
    elif s.isdigit():
        src = CameraSource(int(s))
    elif _is_gstreamer_spec(s):
        pipeline, name, fps = gstreamer_pipeline(s)
        src = GStreamerSource(pipeline, name=name, fps=fps)
    else:
        p = Path(s)
        if p.is_dir():
            src = ImageFolderSource(p, loop=loop)
        elif p.is_file():
            src = VideoFileSource(p, loop=loop)
        else:
            raise ImageReadError(f"source {s!r} not found (give a camera index, a video file, an image folder, 'demo', "
                                 f"or a GStreamer camera: csi:0, usb:/dev/video0, gst:PIPELINE)")
    if downscale and downscale != 1:
        src = Downscale(src, downscale)
    return src
