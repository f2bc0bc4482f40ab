"""A camera degradation model: what a webcam does to a small face, HR (H,W,3) → LR (H/s,W/s,3).

One draw of :class:`CameraDegradation` runs, in order (every range a setting, every choice seeded)::

    optics blur ─► resample ↓s ─► sensor noise ─► JPEG or video codec
    (iso / aniso    (area,          (shot + read,    (JPEG q, or H.264 / MPEG-4
     Gaussian,       bilinear,       colour or        through PyAV, one P-frame)
     or motion)      PIL bicubic)    luma only)

* **Scale-free ranges.** Blur widths and motion lengths are in *LR* pixels (the sensor's), so one
  config means the same camera at ×4 and ×8.
* **Second order** (``p_second``, as in Real-ESRGAN/BSRGAN): the chain runs twice, first down to an
  intermediate size, with noise and compression in random order in the second round.
* **Clean pairs** (``p_clean``): that fraction of faces gets the paper protocol (PIL bicubic ↓s only).
* **Video codecs** through PyAV (``av``: FFmpeg's libx264 and its native MPEG-4 part 2 encoder). The LR
  face is coded as the P-frame after a one-pixel-shifted I-frame, so it carries inter-frame blocks.
  Why not OpenCV's ``VideoWriter``: it only writes files (a temp file per face) and the pip wheel
  has no H.264 encoder. Why not albumentations: it depends on ``opencv-python-headless``, which
  cannot live beside the ``opencv-python`` the runtime needs.

All functions take and return RGB uint8 arrays. :func:`camera_protocol_lr` is the frozen evaluation
set: the same faces always get the same degraded LR (``CAMERA_PROTOCOL_VERSION``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from fractions import Fraction

import cv2
import numpy as np
from PIL import Image

from pkdn_edge.errors import PKDNError

from .degradations import bicubic_down

RESAMPLERS = ("area", "bilinear", "bicubic")
CODECS = ("libx264", "mpeg4")
CAMERA_PROTOCOL_VERSION = 1
CAMERA_PROTOCOL_SEED = 20261204


def _range(name: str, r: tuple, lo: float = 0.0) -> tuple:
    if len(r) != 2 or not lo <= r[0] <= r[1]:
        raise PKDNError(f"camera setting {name} must be a range [low, high] with {lo} <= low <= high, got {list(r)}")
    return tuple(r)


@dataclass(frozen=True)
class CameraDegradation:
    """Random camera degradation; set a probability to 0 to drop a stage. Ranges are inclusive."""

    p_clean: float = 0.2                          # paper-protocol pairs (PIL bicubic ↓s, nothing else)
    # optics (LR pixels)
    p_blur: float = 0.9
    blur_sigma: tuple[float, float] = (0.2, 1.0)  # isotropic Gaussian σ
    p_aniso: float = 0.3                          # ... or anisotropic: σ_x, σ_y from blur_sigma, any angle
    p_motion: float = 0.1                         # ... or a short linear motion streak
    motion_length: tuple[float, float] = (1.0, 2.5)
    # sensor sampling
    resamplers: tuple[str, ...] = RESAMPLERS      # drawn uniformly
    # sensor noise (0..255 units): variance = shot_gain·signal + read_sigma²
    p_noise: float = 0.8
    shot_gain: tuple[float, float] = (0.0, 0.25)
    read_sigma: tuple[float, float] = (0.5, 4.0)
    p_color_noise: float = 0.5                    # per-channel noise; otherwise luma only (same on R, G, B)
    # compression: JPEG, or a video codec
    p_jpeg: float = 0.5
    jpeg_quality: tuple[int, int] = (40, 95)
    p_codec: float = 0.3                          # of the faces not JPEG-coded
    codecs: tuple[str, ...] = CODECS
    h264_crf: tuple[int, int] = (20, 38)          # libx264 constant rate factor (higher = worse)
    mpeg4_qscale: tuple[int, int] = (2, 14)       # MPEG-4 part 2 quantiser (higher = worse)
    # second order
    p_second: float = 0.2
    second_scale: tuple[float, float] = (1.2, 2.0)  # first round down to LR size × this, second to LR

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name.startswith("p_") and not 0.0 <= v <= 1.0:
                raise PKDNError(f"camera setting {f.name} must be a probability in [0, 1], got {v}")
            if isinstance(v, list):
                object.__setattr__(self, f.name, tuple(v))
        for name in ("blur_sigma", "motion_length", "shot_gain", "read_sigma", "jpeg_quality", "h264_crf", "mpeg4_qscale"):
            _range(name, getattr(self, name))
        _range("second_scale", self.second_scale, lo=1.0)
        bad = set(self.resamplers) - set(RESAMPLERS) or not self.resamplers
        if bad:
            raise PKDNError(f"camera resamplers must be a non-empty subset of {list(RESAMPLERS)}, got {list(self.resamplers)}")
        bad = set(self.codecs) - set(CODECS) or not self.codecs
        if bad:
            raise PKDNError(f"camera codecs must be a non-empty subset of {list(CODECS)}, got {list(self.codecs)}")
        if self.p_codec > 0:
            _require_av()

    @classmethod
    def from_dict(cls, d: dict | None) -> "CameraDegradation":
        """Settings from a config mapping (unknown keys are an error)."""
        d = dict(d or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise PKDNError(f"unknown camera settings {unknown}; valid: {sorted(known)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    # ------------------------------------------------------------------ one draw
    def __call__(self, hr: np.ndarray, scale: int, rng: np.random.Generator) -> np.ndarray:
        """(H,W,3) uint8 RGB → (H/s,W/s,3) uint8 RGB."""
        h, w = hr.shape[:2]
        if h % scale or w % scale:
            raise PKDNError(f"HR size {w}x{h} is not divisible by scale {scale}")
        if rng.random() < self.p_clean:
            return bicubic_down(hr, scale)
        x = hr.astype(np.float32)
        if rng.random() < self.p_second:
            r = rng.uniform(*self.second_scale)
            mid = (max(1, round(w / scale * r)), max(1, round(h / scale * r)))
            x = self.blur(x, w / mid[0], rng)  # first round: blur in its output's pixels
            x = self.resample(x, mid, rng)
            x = self.noise(x, rng)
            x = self.compress(_u8(x), rng).astype(np.float32)
            x = self.blur(x, 1.0, rng)  # second round: a milder blur, in intermediate pixels
            x = self.resample(x, (w // scale, h // scale), rng)
            if rng.random() < 0.5:
                return self.compress(_u8(self.noise(x, rng)), rng)
            return _u8(self.noise(self.compress(_u8(x), rng).astype(np.float32), rng))
        x = self.blur(x, scale, rng)
        x = self.resample(x, (w // scale, h // scale), rng)
        x = self.noise(x, rng)
        return self.compress(_u8(x), rng)

    # ------------------------------------------------------------------ stages
    def blur(self, x: np.ndarray, px: float, rng: np.random.Generator) -> np.ndarray:
        """Optics blur of float (H,W,3); ``px`` = input pixels per LR pixel."""
        if rng.random() >= self.p_blur:
            return x
        u = rng.random()
        if u < self.p_motion:
            k = motion_kernel(rng.uniform(*self.motion_length) * px, rng.uniform(0, np.pi))
        elif u < self.p_motion + self.p_aniso:
            sx, sy = rng.uniform(*self.blur_sigma, 2) * px
            k = gaussian_kernel(sx, sy, rng.uniform(0, np.pi))
        else:
            s = rng.uniform(*self.blur_sigma) * px
            return cv2.GaussianBlur(x, (0, 0), s, borderType=cv2.BORDER_REFLECT_101) if s > 0.05 else x
        return cv2.filter2D(x, -1, k, borderType=cv2.BORDER_REFLECT_101)

    def resample(self, x: np.ndarray, size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
        """Float (H,W,3) → float (size[1], size[0], 3) with a random resampler."""
        kind = self.resamplers[rng.integers(len(self.resamplers))]
        if kind == "bicubic":  # PIL's antialiased bicubic, per channel in float
            return np.stack([np.asarray(Image.fromarray(x[..., c]).resize(size, Image.BICUBIC)) for c in range(3)], axis=-1)
        interp = cv2.INTER_AREA if kind == "area" else cv2.INTER_LINEAR
        return cv2.resize(x, size, interpolation=interp)

    def noise(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Signal-dependent (shot) plus read noise on float 0..255 (H,W,3)."""
        if rng.random() >= self.p_noise:
            return x
        a = rng.uniform(*self.shot_gain)
        b = rng.uniform(*self.read_sigma)
        if rng.random() < self.p_color_noise:
            std = np.sqrt(a * np.clip(x, 0, 255) + b * b)
            return x + rng.standard_normal(x.shape).astype(np.float32) * std
        y = x @ np.array([0.299, 0.587, 0.114], np.float32)
        std = np.sqrt(a * np.clip(y, 0, 255) + b * b)
        return x + (rng.standard_normal(y.shape).astype(np.float32) * std)[..., None]

    def compress(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """JPEG or a video codec (or nothing) on uint8 (H,W,3)."""
        if rng.random() < self.p_jpeg:
            q = int(rng.integers(self.jpeg_quality[0], self.jpeg_quality[1] + 1))
            return jpeg(x, q)
        if rng.random() < self.p_codec:
            codec = self.codecs[rng.integers(len(self.codecs))]
            r = self.h264_crf if codec == "libx264" else self.mpeg4_qscale
            return video_codec(x, codec, int(rng.integers(r[0], r[1] + 1)))
        return x


def _u8(x: np.ndarray) -> np.ndarray:
    return np.clip(x + 0.5, 0, 255).astype(np.uint8)


def gaussian_kernel(sx: float, sy: float, theta: float) -> np.ndarray:
    """Normalised anisotropic Gaussian kernel with std ``sx``/``sy`` along axes rotated by ``theta``."""
    sx, sy = max(sx, 0.05), max(sy, 0.05)
    r = int(np.ceil(3 * max(sx, sy)))
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1].astype(np.float32)
    c, s = np.cos(theta), np.sin(theta)
    u, v = c * xx + s * yy, -s * xx + c * yy
    k = np.exp(-0.5 * ((u / sx) ** 2 + (v / sy) ** 2))
    return (k / k.sum()).astype(np.float32)


def motion_kernel(length: float, theta: float) -> np.ndarray:
    """Normalised linear motion-blur kernel of ``length`` pixels at angle ``theta`` (anti-aliased)."""
    r = int(np.ceil(length / 2)) + 1
    size = 2 * r + 1
    k = np.zeros((size * 4, size * 4), np.float32)  # draw at 4× then shrink (sub-pixel lengths)
    dx, dy = np.cos(theta) * length * 2, np.sin(theta) * length * 2
    c = size * 2
    cv2.line(k, (round(c - dx), round(c - dy)), (round(c + dx), round(c + dy)), 1.0, 4, cv2.LINE_AA)
    k = cv2.resize(k, (size, size), interpolation=cv2.INTER_AREA)
    return k / k.sum()


def jpeg(x: np.ndarray, quality: int) -> np.ndarray:
    """JPEG round trip (OpenCV's libjpeg, 4:2:0) of an RGB uint8 image."""
    ok, buf = cv2.imencode(".jpg", x[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise PKDNError("JPEG encoding failed")
    return np.ascontiguousarray(cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1])


def _require_av():
    try:
        import av  # noqa: F401
    except ImportError:
        raise PKDNError(
            "camera video-codec degradation needs PyAV: pip install 'pkdn-edge[train]' (or set camera p_codec: 0)"
        ) from None
    return av


def video_codec(x: np.ndarray, codec: str, q: int) -> np.ndarray:
    """Round trip of an RGB uint8 face through a video codec, as the P-frame after a shifted I-frame.

    Odd sizes are padded (edge) to even, as 4:2:0 needs. Single-threaded, so results are exact
    functions of the input.
    """
    av = _require_av()
    h, w = x.shape[:2]
    ph, pw = h + h % 2, w + w % 2
    img = np.pad(x, ((0, ph - h), (0, pw - w), (0, 0)), mode="edge")
    enc = av.CodecContext.create(codec, "w")
    enc.width, enc.height, enc.pix_fmt = pw, ph, "yuv420p"
    enc.time_base = Fraction(1, 30)
    enc.thread_count = 1
    if codec == "libx264":
        enc.options = {"crf": str(q), "preset": "veryfast", "tune": "zerolatency"}
    else:
        enc.options = {"qmin": str(q), "qmax": str(q)}
    packets = []
    for i, f in enumerate((np.roll(img, 1, axis=1), img)):
        vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")
        vf.pts = i
        packets += enc.encode(vf)
    packets += enc.encode(None)
    dec = av.CodecContext.create("h264" if codec == "libx264" else codec, "r")
    dec.thread_count = 1
    frames = []
    for p in packets:
        frames += dec.decode(p)
    frames += dec.decode(None)
    if len(frames) != 2:
        raise PKDNError(f"{codec} round trip returned {len(frames)} frames instead of 2")
    return np.ascontiguousarray(frames[-1].to_ndarray(format="rgb24")[:h, :w])


# ---------------------------------------------------------------------- the frozen evaluation protocol
CAMERA_PROTOCOL = CameraDegradation(p_clean=0.0)


def camera_protocol_lr(hr: np.ndarray, scale: int, degradation: CameraDegradation = CAMERA_PROTOCOL) -> np.ndarray:
    """The ``camera`` evaluation protocol's LR faces for HR faces (N,H,W,3) uint8 → (N,H/s,W/s,3).

    Face ``i`` is degraded with its own generator seeded by (protocol seed, version, scale, i), so a
    face's LR never depends on the other faces or on the order of evaluation.
    """
    return np.stack([
        degradation(x, scale, np.random.default_rng([CAMERA_PROTOCOL_SEED, CAMERA_PROTOCOL_VERSION, scale, i]))
        for i, x in enumerate(hr)
    ])


def protocol_lr(hr: np.ndarray, scale: int, protocol: str) -> np.ndarray:
    """LR faces of an evaluation protocol: ``"bicubic"`` (paper) or ``"camera"``."""
    if protocol == "bicubic":
        return np.stack([bicubic_down(x, scale) for x in hr])
    if protocol == "camera":
        return camera_protocol_lr(hr, scale)
    raise PKDNError(f"unknown protocol {protocol!r}; choose 'bicubic' or 'camera'")


PROTOCOLS = ("bicubic", "camera")


# ---------------------------------------------------------------------- a figure of examples
def example_figure(hr: np.ndarray, draws: int = 5, seed: int = 0) -> np.ndarray:
    """One RGB figure per HR face (128×128): row ×4 and row ×8, each ``HR | clean LR | draws`` of the
    default training degradation (without clean pairs), LR shown with nearest-neighbour ↑s."""
    deg = CameraDegradation(p_clean=0.0)
    rows = []
    for face_i, face in enumerate(hr):
        for s in (4, 8):
            rng = np.random.default_rng([seed, face_i, s])
            tiles = [face, bicubic_down(face, s)] + [deg(face, s, rng) for _ in range(draws)]
            up = [t if t.shape[0] == face.shape[0] else cv2.resize(t, face.shape[1::-1], interpolation=cv2.INTER_NEAREST)
                  for t in tiles]
            rows.append(np.concatenate([np.pad(t, ((2, 2), (2, 2), (0, 0)), constant_values=255) for t in up], axis=1))
    return np.concatenate(rows, axis=0)


def main(argv: list[str] | None = None) -> int:
    import argparse

    from pkdn_edge.errors import run_cli

    p = argparse.ArgumentParser(prog="python -m pkdn_edge.train.camera",
                                description="Write a figure of camera-degradation examples (HR | clean LR | draws, ×4 and ×8).")
    p.add_argument("--faces", required=True, help="folder of aligned 128×128 faces (e.g. pkdn-prepare output)")
    p.add_argument("--out", required=True, help="PNG to write")
    p.add_argument("--max-faces", type=int, default=2)
    p.add_argument("--draws", type=int, default=5)
    args = p.parse_args(argv)

    def body() -> int:
        from pathlib import Path

        files = sorted(f for f in Path(args.faces).glob("*") if f.suffix.lower() in (".png", ".jpg", ".jpeg"))
        faces = [cv2.imread(str(f)) for f in files[: args.max_faces]]
        if not faces or any(f is None or f.shape[:2] != (128, 128) for f in faces):
            raise PKDNError(f"{args.faces}: expected readable aligned 128×128 faces (pkdn-prepare output)")
        hr = np.stack([f[..., ::-1] for f in faces])
        fig = example_figure(hr, args.draws)
        if not cv2.imwrite(args.out, fig[..., ::-1]):
            raise PKDNError(f"could not write {args.out}")
        print(f"wrote {args.out}: per face, rows ×4 and ×8: HR | PIL-bicubic LR | {args.draws} camera draws")
        return 0

    return run_cli(body)


if __name__ == "__main__":
    import sys

    sys.exit(main())
