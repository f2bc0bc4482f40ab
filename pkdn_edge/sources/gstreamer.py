"""GStreamer cameras (Jetson: CSI through ``nvarguscamerasrc``, USB through ``v4l2src``, or any
pipeline ending in ``appsink``), opened with ``cv2.VideoCapture(pipeline, cv2.CAP_GSTREAMER)``.

Runs without torch: numpy + cv2 only.
"""

from __future__ import annotations

import re
from fractions import Fraction
from pathlib import Path

import cv2

from pkdn_edge.errors import PKDNError
from pkdn_edge.sources.base import CameraNotFoundError, FrameSource
from pkdn_edge.sources.camera import CameraSource, _quiet_opencv, _restore_opencv

GST_SCHEMES = ("csi", "usb", "gst")
_APPSINK = "appsink drop=true max-buffers=1 sync=false"  # latest frame only: no stale queue
_TO_BGR = "videoconvert ! video/x-raw, format=(string)BGR"


class GStreamerUnavailableError(PKDNError):
    """The installed OpenCV was built without GStreamer, so a ``csi:``/``usb:``/``gst:`` source cannot open."""


def opencv_has_gstreamer() -> bool:
    """Whether this OpenCV can open GStreamer pipelines (``cv2.videoio_registry.hasBackend``, else the
    ``GStreamer:`` line of ``cv2.getBuildInformation()``). PyPI's ``opencv-python`` wheels are built
    without GStreamer; JetPack's OpenCV and Debian/Ubuntu's ``python3-opencv`` have it."""
    try:
        return bool(cv2.videoio_registry.hasBackend(cv2.CAP_GSTREAMER))
    except Exception:  # very old cv2 without videoio_registry
        m = re.search(r"^\s*GStreamer:\s*(\S+)", cv2.getBuildInformation(), re.M)
        return bool(m and m.group(1).upper().startswith("YES"))


def gstreamer_unavailable_message(what: str = "a GStreamer source") -> str:
    where = getattr(cv2, "__file__", "?")
    return (f"{what} needs OpenCV built with GStreamer, but the cv2 {cv2.__version__} in use ({where}) has none "
            f"(see 'GStreamer:' under 'Video I/O' in cv2.getBuildInformation(); PyPI's opencv-python wheels are "
            f"built without it). "
            f"On a Jetson use JetPack's OpenCV (sudo apt install nvidia-opencv) or Debian/Ubuntu's python3-opencv: "
            f"create the venv with --system-site-packages and `pip uninstall opencv-python` inside it (see "
            f"deploy/jetson/README.md); for a USB camera without GStreamer use its index instead (--source 0)")


def _fraction(fps: float) -> str:
    f = Fraction(float(fps)).limit_denominator(1001)
    return f"{f.numerator}/{f.denominator}"


def _pos_int(name: str, v: object, lo: int = 1) -> int:
    try:
        i = int(v)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        raise PKDNError(f"camera option {name}={v!r} is not an integer") from None
    if i < lo:
        raise PKDNError(f"camera option {name}={i} must be >= {lo}")
    return i


def csi_pipeline(sensor_id: int = 0, width: int = 1280, height: int = 720, fps: float = 30, flip: int = 0,
                 sensor_mode: int | None = None, out_width: int | None = None, out_height: int | None = None) -> str:
    """The GStreamer pipeline of a Jetson CSI camera (libargus ``nvarguscamerasrc``): ``width×height``
    at ``fps`` in NVMM memory, ``nvvidconv`` (hardware; ``flip`` = flip-method 0-7, optional resize to
    ``out_width×out_height``) to BGRx, ``videoconvert`` to BGR, and an ``appsink`` that keeps only
    the latest frame."""
    sensor_id, width, height = _pos_int("sensor", sensor_id, 0), _pos_int("width", width), _pos_int("height", height)
    if not 0 <= int(flip) <= 7:
        raise PKDNError(f"camera option flip={flip} must be 0-7 (nvvidconv flip-method)")
    if not float(fps) > 0:
        raise PKDNError(f"camera option fps={fps} must be > 0")
    src = f"nvarguscamerasrc sensor-id={sensor_id}"
    if sensor_mode is not None:
        src += f" sensor-mode={_pos_int('mode', sensor_mode, 0)}"
    ow = _pos_int("out_width", out_width) if out_width else width
    oh = _pos_int("out_height", out_height) if out_height else height
    return (f"{src} ! video/x-raw(memory:NVMM), width=(int){width}, height=(int){height}, format=(string)NV12, "
            f"framerate=(fraction){_fraction(fps)} ! nvvidconv flip-method={int(flip)} ! "
            f"video/x-raw, width=(int){ow}, height=(int){oh}, format=(string)BGRx ! {_TO_BGR} ! {_APPSINK}")


def usb_pipeline(device: str | int = "/dev/video0", width: int | None = 640, height: int | None = 480,
                 fps: float | None = 30, mjpeg: bool = False) -> str:
    """The GStreamer pipeline of a USB (UVC) camera through ``v4l2src``: raw frames (or MJPEG decoded
    by ``jpegdec`` with ``mjpeg``, which most cameras need above 640×480 at 30 fps), converted to BGR.
    ``width``/``height``/``fps`` ``None`` let the camera choose."""
    dev = f"/dev/video{int(device)}" if str(device).isdigit() else str(device)
    if not dev.startswith("/dev/"):
        raise PKDNError(f"usb camera device {dev!r} is not a /dev/videoN node or an index")
    caps = ["image/jpeg" if mjpeg else "video/x-raw"]
    if width:
        caps.append(f"width=(int){_pos_int('width', width)}")
    if height:
        caps.append(f"height=(int){_pos_int('height', height)}")
    if fps:
        if not float(fps) > 0:
            raise PKDNError(f"camera option fps={fps} must be > 0")
        caps.append(f"framerate=(fraction){_fraction(fps)}")
    decode = " ! jpegdec" if mjpeg else ""
    return f"v4l2src device={dev} ! {', '.join(caps)}{decode} ! {_TO_BGR} ! {_APPSINK}"


def _parse_options(rest: str, first: str) -> dict[str, str]:
    """``0,width=1280,fps=30`` -> {first: '0', 'width': '1280', 'fps': '30'}."""
    out: dict[str, str] = {}
    for i, part in enumerate(p.strip() for p in rest.split(",")):
        if not part:
            continue
        if "=" in part:
            k, v = (t.strip() for t in part.split("=", 1))
            out[k.lower()] = v
        elif i == 0:
            out[first] = part
        else:
            raise PKDNError(f"camera option {part!r} is not key=value")
    return out


def _truthy(v: str) -> bool:
    return v.strip().lower() in ("1", "true", "yes", "on")


def gstreamer_pipeline(spec: str) -> tuple[str, str, float | None]:
    """Parse a ``csi:``/``usb:``/``gst:`` source spec into ``(pipeline, name, fps)``.

    * ``csi`` / ``csi:0`` / ``csi:1,width=1920,height=1080,fps=30,flip=2,mode=0,out_width=960,out_height=540``
    * ``usb`` / ``usb:0`` / ``usb:/dev/video1,width=1280,height=720,fps=30,mjpeg=1``
    * ``gst:<pipeline>``: used as given; ``! videoconvert ! BGR ! appsink`` is appended when it has no appsink.
    """
    s = spec.strip()
    scheme, _, rest = s.partition(":")
    scheme = scheme.lower()
    if scheme == "gst":
        pipe = rest.strip()
        if not pipe:
            raise PKDNError("gst: needs a pipeline, e.g. gst:'v4l2src device=/dev/video0 ! videoconvert ! appsink'")
        if "appsink" not in pipe:
            pipe = f"{pipe} ! {_TO_BGR} ! {_APPSINK}"
        return pipe, f"gstreamer ({pipe.split('!')[0].strip()})", None
    if scheme == "csi":
        known = {"sensor", "width", "height", "fps", "flip", "mode", "out_width", "out_height"}
        o = _parse_options(rest, "sensor")
        bad = sorted(set(o) - known)
        if bad:
            raise PKDNError(f"unknown csi option(s) {', '.join(bad)} (known: {', '.join(sorted(known))})")
        try:
            fps = float(o.get("fps", 30))
        except ValueError:
            raise PKDNError(f"camera option fps={o['fps']!r} is not a number") from None
        pipe = csi_pipeline(sensor_id=o.get("sensor", 0), width=o.get("width", 1280), height=o.get("height", 720),
                            fps=fps, flip=_pos_int("flip", o.get("flip", 0), 0),
                            sensor_mode=o.get("mode"), out_width=o.get("out_width"), out_height=o.get("out_height"))
        return pipe, f"csi camera {o.get('sensor', 0)}", fps
    if scheme == "usb":
        known = {"device", "width", "height", "fps", "mjpeg"}
        o = _parse_options(rest, "device")
        bad = sorted(set(o) - known)
        if bad:
            raise PKDNError(f"unknown usb option(s) {', '.join(bad)} (known: {', '.join(sorted(known))})")

        def opt(key: str, default: str) -> str | None:  # "0" or "" = let the camera choose
            v = o.get(key, default)
            return None if v in ("", "0") else v

        fps_s = opt("fps", "30")
        try:
            fps = float(fps_s) if fps_s is not None else None
        except ValueError:
            raise PKDNError(f"camera option fps={fps_s!r} is not a number") from None
        device = o.get("device", "/dev/video0")
        pipe = usb_pipeline(device, opt("width", "640"), opt("height", "480"), fps, _truthy(o.get("mjpeg", "0")))
        dev = f"/dev/video{device}" if device.isdigit() else device
        return pipe, f"usb camera {dev}", fps
    raise PKDNError(f"{spec!r} is not a GStreamer source (use {', '.join(g + ':' for g in GST_SCHEMES)})")


def _is_gstreamer_spec(s: str) -> bool:
    low = s.lower()
    if low.startswith("gst:") or low.startswith("csi:") or low.startswith("usb:"):
        return True
    return low in ("csi", "usb") and not Path(s).exists()


def _gst_launch_hint(pipeline: str) -> str:
    """A shell line that runs ``pipeline`` without OpenCV (appsink -> fakesink; caps quoted for the shell)."""
    parts = [p.strip() for p in pipeline.split("!")]
    if parts and parts[-1].startswith("appsink"):
        parts[-1] = "fakesink"
    quoted = [f"'{p}'" if any(c in p for c in "(),;") else p for p in parts]
    return "gst-launch-1.0 -e " + " ! ".join(quoted)


class GStreamerSource(CameraSource):
    """A camera (or any live stream) through a GStreamer pipeline that ends in ``appsink``, opened with
    ``cv2.VideoCapture(pipeline, cv2.CAP_GSTREAMER)``. Behaves like :class:`CameraSource` (live,
    reconnects when frames stop). An OpenCV without GStreamer raises
    :class:`GStreamerUnavailableError`; a pipeline that does not start raises
    :class:`CameraNotFoundError` with a ``gst-launch-1.0`` line to test it."""

    def __init__(self, pipeline: str, name: str | None = None, fps: float | None = None,
                 reconnect_tries: int = 5, reconnect_delay: float = 0.5) -> None:
        FrameSource.__init__(self)
        self.pipeline = pipeline
        self.index = -1
        self.name = name or f"gstreamer ({pipeline.split('!')[0].strip()})"
        self.width = self.height = None
        self.reconnect_tries = int(reconnect_tries)
        self.reconnect_delay = float(reconnect_delay)
        self.reconnects = 0
        if not opencv_has_gstreamer():
            raise GStreamerUnavailableError(gstreamer_unavailable_message(self.name))
        self.cap = self._open()
        if self.cap is None:
            hint = " (is the camera connected and nvargus-daemon running? `sudo systemctl restart nvargus-daemon`)" \
                if "nvarguscamerasrc" in pipeline else ""
            raise CameraNotFoundError(f"{self.name}: OpenCV could not start the GStreamer pipeline{hint}; test it with "
                                      f"`{_gst_launch_hint(pipeline)}`")
        got = self.cap.get(cv2.CAP_PROP_FPS)
        self.fps = float(got) if got and 1 <= got <= 1000 else float(fps or 30.0)

    def _open(self):
        level = _quiet_opencv()
        try:
            cap = cv2.VideoCapture(self.pipeline, cv2.CAP_GSTREAMER)
            if not cap.isOpened():
                cap.release()
                return None
            return cap
        finally:
            _restore_opencv(level)
