"""A camera degradation model: what a webcam does to a small face, HR (H,W,3) → LR (H/s,W/s,3).

One draw of :class:`CameraDegradation` runs, in order (every range a setting, every choice seeded)::

    optics blur ─► resample ↓s ─► sensor noise ─► image processor ─► MJPEG, JPEG or video codec
    (iso / aniso    (area, PIL      (shot + read,    (denoise, tone,     (JPEG q, or H.264 / MPEG-4
     Gaussian,       bicubic; no     colour or        sharpen, 4:2:0;     through PyAV, one P-frame)
     or motion)      low-pass:       luma only)       off in v1)
                     bilinear, bicubic_point, nearest)

* **Scale-free ranges.** Blur widths and motion lengths are in *LR* pixels (the sensor's), so one
  config means the same camera at ×4 and ×8.
* **Second order** (``p_second``, as in Real-ESRGAN/BSRGAN): the chain runs twice, first down to an
  intermediate size, with noise and compression in random order in the second round.
* **Shuffled order** (``p_shuffle``, as in BSRGAN): blur, resampler, noise and the image-processor
  stages in a random permutation, compression last.
* **Clean pairs** (``p_clean``): that fraction of faces gets the paper protocol (PIL bicubic ↓s only).
* **Stages added after protocol v1** (image processor, MJPEG, shuffled order, the point-sampling
  resamplers) are off by default and draw no random numbers when off, so v1 draws are bit-identical.
  ``preset: wide`` (:data:`WIDE`) turns them all on.
* **Video codecs** through PyAV (libx264, MPEG-4 part 2): the LR face is the P-frame after a shifted
  I-frame, so it carries inter-frame blocks (why PyAV, not OpenCV or albumentations: docs/camera.md).

All functions take and return RGB uint8 arrays. :func:`camera_protocol_lr` is the frozen evaluation
set: the same faces always get the same degraded LR (``CAMERA_PROTOCOL_VERSION``);
:func:`family_protocol_lr` the frozen per-family sets of the robustness matrix (``FAMILY_PROTOCOL_VERSION``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from fractions import Fraction

import cv2
import numpy as np
from PIL import Image

from pkdn_edge.errors import PKDNError

from .degradations import bicubic_down

# v1's (the default): area, point-sampled bilinear, PIL antialiased bicubic
RESAMPLERS = ("area", "bilinear", "bicubic")
ALL_RESAMPLERS = RESAMPLERS + ("bicubic_point", "nearest")  # + OpenCV bicubic without a low-pass, point sampling
CODECS = ("libx264", "mpeg4")
DENOISERS = ("bilateral", "guided")
CHROMA_SAMPLING = ("420", "422", "444")
_JPEG_SAMPLING = {"420": "IMWRITE_JPEG_SAMPLING_FACTOR_420", "422": "IMWRITE_JPEG_SAMPLING_FACTOR_422",
                  "444": "IMWRITE_JPEG_SAMPLING_FACTOR_444"}
CAMERA_PROTOCOL_VERSION = 1
CAMERA_PROTOCOL_SEED = 20261204


def _is_number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and bool(np.isfinite(v))


def _range(name: str, r: tuple, lo: float = 0.0) -> tuple:
    if not isinstance(r, (tuple, list)) or len(r) != 2 or not all(map(_is_number, r)) or not lo <= r[0] <= r[1]:
        raise PKDNError(f"camera setting {name} must be a range [low, high] with {lo} <= low <= high, got {r!r}")
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
    # ---- added after protocol v1 (issue 29). All off by default: with them off no random number is
    # drawn for them, so every v1 draw (and the frozen v1 protocol) is bit-identical; to_dict() lists
    # a stage's settings only when its probability is not 0. Resamplers may also be "bicubic_point" and
    # "nearest" (ALL_RESAMPLERS).
    # image processor, after sensor noise (widths in LR pixels): noise reduction, tone, sharpening, chroma
    p_denoise: float = 0.0                        # edge-preserving smear
    denoisers: tuple[str, ...] = DENOISERS        # bilateral filter or self-guided filter, drawn uniformly
    denoise_strength: tuple[float, float] = (6.0, 24.0)  # 0..255 units: bilateral σ_colour / guided √ε
    denoise_radius: tuple[float, float] = (0.5, 1.5)     # bilateral σ_space / guided box radius
    p_tone: float = 0.0                           # tone curve: gamma, then an S-curve
    gamma: tuple[float, float] = (0.8, 1.25)
    tone_contrast: tuple[float, float] = (0.0, 0.4)  # S-curve weight (0 = none)
    p_sharpen: float = 0.0                        # unsharp mask on luma (overshoot = halos)
    sharpen_amount: tuple[float, float] = (0.3, 1.5)
    sharpen_radius: tuple[float, float] = (0.5, 1.5)
    p_chroma: float = 0.0                         # chroma subsampling of a YUV stream (BT.601 full range)
    chroma_sampling: tuple[str, ...] = ("420",)   # "420" (NV12/I420), "422" (YUYV), "444"
    # compression: MJPEG as USB webcams send it (before the JPEG / codec choice above)
    p_mjpeg: float = 0.0
    mjpeg_quality: tuple[int, int] = (50, 90)
    mjpeg_sampling: tuple[str, ...] = ("422", "420")  # drawn uniformly
    # order: with this probability the stages run in a random order (BSRGAN), compression last
    p_shuffle: float = 0.0

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name.startswith("p_") and (not _is_number(v) or not 0.0 <= v <= 1.0):
                raise PKDNError(f"camera setting {f.name} must be a probability in [0, 1], got {v!r}")
            if isinstance(v, list):
                object.__setattr__(self, f.name, tuple(v))
        for name in ("blur_sigma", "motion_length", "shot_gain", "read_sigma", "jpeg_quality", "h264_crf",
                     "mpeg4_qscale", "denoise_strength", "denoise_radius", "tone_contrast", "sharpen_amount",
                     "sharpen_radius", "mjpeg_quality"):
            _range(name, getattr(self, name))
        _range("second_scale", self.second_scale, lo=1.0)
        _range("gamma", self.gamma, lo=0.1)
        if self.tone_contrast[1] > 1:
            raise PKDNError(f"camera setting tone_contrast must lie in [0, 1], got {list(self.tone_contrast)}")
        for q in ("jpeg_quality", "mjpeg_quality"):
            if getattr(self, q)[1] > 100:
                raise PKDNError(f"camera setting {q} must lie in [0, 100], got {list(getattr(self, q))}")
        for name, allowed in (("resamplers", ALL_RESAMPLERS), ("codecs", CODECS), ("denoisers", DENOISERS),
                              ("chroma_sampling", CHROMA_SAMPLING), ("mjpeg_sampling", CHROMA_SAMPLING)):
            v = getattr(self, name)
            if isinstance(v, str) or not v or set(v) - set(allowed):
                raise PKDNError(f"camera {name} must be a non-empty subset of {list(allowed)}, got {v!r}")
        if self.p_codec > 0:
            _require_av()

    @classmethod
    def from_dict(cls, d: dict | None) -> "CameraDegradation":
        """Settings from a config mapping (unknown keys are an error). ``preset: wide`` starts from
        :data:`WIDE` instead of the v1 defaults; the other keys override it."""
        d = dict(d or {})
        preset = d.pop("preset", "v1")
        if preset not in CAMERA_PRESETS:
            raise PKDNError(f"unknown camera preset {preset!r}; choose from {sorted(CAMERA_PRESETS)}")
        d = {**CAMERA_PRESETS[preset], **d}
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise PKDNError(f"unknown camera settings {unknown}; valid: {sorted(known)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})

    def to_dict(self) -> dict:
        """The settings. A stage added after protocol v1 is listed (probability and settings) only when
        its probability is not 0: an off stage draws nothing, so a v1 model's dict, and the pinned hash
        of the v1 protocol, are what they were."""
        d = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}
        for p, keys in _ADDED_STAGES.items():
            if d[p] == 0:
                for k in (p, *keys):
                    del d[k]
        return d

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
            x = self.isp(self.noise(x, rng), 1.0, rng)
            x = self.compress(_u8(x), rng).astype(np.float32)
            x = self.blur(x, 1.0, rng)  # second round: a milder blur, in intermediate pixels
            x = self.resample(x, (w // scale, h // scale), rng)
            if rng.random() < 0.5:
                return self.compress(_u8(self.isp(self.noise(x, rng), 1.0, rng)), rng)
            return _u8(self.isp(self.noise(self.compress(_u8(x), rng).astype(np.float32), rng), 1.0, rng))
        if _happens(rng, self.p_shuffle):
            return self.shuffled(x, scale, rng)
        x = self.blur(x, scale, rng)
        x = self.resample(x, (w // scale, h // scale), rng)
        x = self.isp(self.noise(x, rng), 1.0, rng)
        return self.compress(_u8(x), rng)

    def shuffled(self, x: np.ndarray, scale: int, rng: np.random.Generator) -> np.ndarray:
        """BSRGAN-style random order: blur, resample, noise and the image-processor stages in a
        random permutation (widths follow the current pixel size), compression last."""
        h, w = x.shape[:2]
        px = float(scale)  # input pixels per LR pixel: scale until the resampler has run, then 1
        for stage in rng.permutation(len(SHUFFLED_STAGES)):
            name = SHUFFLED_STAGES[stage]
            if name == "resample":
                x, px = self.resample(x, (w // scale, h // scale), rng), 1.0
            elif name == "blur":
                x = self.blur(x, px, rng)
            elif name == "noise":
                x = self.noise(x, rng)
            else:
                x = getattr(self, name)(x, px, rng)
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
        """Float (H,W,3) → float (size[1], size[0], 3) with a random resampler.

        With a low-pass: ``area`` (sensor binning), ``bicubic`` (PIL, antialiased). Without one
        (aliasing, as cheap scalers do): ``bilinear`` and ``bicubic_point`` (OpenCV, interpolation
        at the sample points only) and ``nearest`` (point sampling at a random phase: line skipping).
        """
        kind = self.resamplers[rng.integers(len(self.resamplers))]
        if kind == "bicubic":  # PIL's antialiased bicubic, per channel in float
            return np.stack([np.asarray(Image.fromarray(x[..., c]).resize(size, Image.BICUBIC)) for c in range(3)],
                            axis=-1)
        if kind == "nearest":
            return point_sample(x, size, rng.random(2))
        interp = {"area": cv2.INTER_AREA, "bilinear": cv2.INTER_LINEAR, "bicubic_point": cv2.INTER_CUBIC}[kind]
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

    # ------------------------------------------------------------------ the image processor
    def isp(self, x: np.ndarray, px: float, rng: np.random.Generator) -> np.ndarray:
        """A webcam's image processor on float (H,W,3): noise reduction, tone, sharpening, chroma
        subsampling, each with its probability (no draws for a stage whose probability is 0)."""
        for name in ISP_STAGES:
            x = getattr(self, name)(x, px, rng)
        return x

    def denoise(self, x: np.ndarray, px: float, rng: np.random.Generator) -> np.ndarray:
        """Edge-preserving noise reduction (the 'smear' of webcam ISPs): bilateral or self-guided."""
        if not _happens(rng, self.p_denoise):
            return x
        kind = self.denoisers[rng.integers(len(self.denoisers))]
        strength = rng.uniform(*self.denoise_strength)
        radius = rng.uniform(*self.denoise_radius) * px
        if kind == "bilateral":
            return cv2.bilateralFilter(np.ascontiguousarray(x, np.float32), -1, strength, radius,
                                       borderType=cv2.BORDER_REFLECT_101)
        return guided_filter(x, max(1, round(radius)), strength * strength)

    def tone(self, x: np.ndarray, px: float, rng: np.random.Generator) -> np.ndarray:  # noqa: ARG002
        """Tone curve: gamma, then a smoothstep S-curve blended in with weight ``tone_contrast``."""
        if not _happens(rng, self.p_tone):
            return x
        g = rng.uniform(*self.gamma)
        c = rng.uniform(*self.tone_contrast)
        y = (np.clip(x, 0, 255) / 255.0) ** g
        y = (1 - c) * y + c * y * y * (3 - 2 * y)
        return (y * 255.0).astype(np.float32)

    def sharpen(self, x: np.ndarray, px: float, rng: np.random.Generator) -> np.ndarray:
        """Unsharp mask on luma, without threshold or clipping of the overshoot (halos)."""
        if not _happens(rng, self.p_sharpen):
            return x
        amount = rng.uniform(*self.sharpen_amount)
        radius = rng.uniform(*self.sharpen_radius) * px
        y = x @ np.array([0.299, 0.587, 0.114], np.float32)
        detail = y - cv2.GaussianBlur(y, (0, 0), radius, borderType=cv2.BORDER_REFLECT_101)
        return x + (amount * detail)[..., None]

    def chroma(self, x: np.ndarray, px: float, rng: np.random.Generator) -> np.ndarray:  # noqa: ARG002
        """Chroma subsampling of a YUV stream (4:2:0 or 4:2:2: 2×2 or 2×1 means of Cb/Cr), then the
        receiver's upsampling (bilinear or nearest, drawn)."""
        if not _happens(rng, self.p_chroma):
            return x
        mode = self.chroma_sampling[rng.integers(len(self.chroma_sampling))]
        return chroma_subsample(x, mode, nearest=bool(rng.random() < 0.5))

    # ------------------------------------------------------------------ compression
    def compress(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """MJPEG, JPEG or a video codec (or nothing) on uint8 (H,W,3)."""
        if _happens(rng, self.p_mjpeg):
            q = int(rng.integers(self.mjpeg_quality[0], self.mjpeg_quality[1] + 1))
            return jpeg(x, q, self.mjpeg_sampling[rng.integers(len(self.mjpeg_sampling))])
        if rng.random() < self.p_jpeg:
            q = int(rng.integers(self.jpeg_quality[0], self.jpeg_quality[1] + 1))
            return jpeg(x, q)
        if rng.random() < self.p_codec:
            codec = self.codecs[rng.integers(len(self.codecs))]
            r = self.h264_crf if codec == "libx264" else self.mpeg4_qscale
            return video_codec(x, codec, int(rng.integers(r[0], r[1] + 1)))
        return x


ISP_STAGES = ("denoise", "tone", "sharpen", "chroma")  # their order in the fixed chain
SHUFFLED_STAGES = ("blur", "resample", "noise") + ISP_STAGES
# the stages added after protocol v1, each with its settings (to_dict leaves out a stage that is off)
_ADDED_STAGES = {
    "p_denoise": ("denoisers", "denoise_strength", "denoise_radius"),
    "p_tone": ("gamma", "tone_contrast"),
    "p_sharpen": ("sharpen_amount", "sharpen_radius"),
    "p_chroma": ("chroma_sampling",),
    "p_mjpeg": ("mjpeg_quality", "mjpeg_sampling"),
    "p_shuffle": (),
}


def _happens(rng: np.random.Generator, p: float) -> bool:
    """A draw for a stage added after protocol v1: none at all when ``p`` is 0 (keeps v1's draws)."""
    return p > 0 and rng.random() < p


def _u8(x: np.ndarray) -> np.ndarray:
    return np.clip(x + 0.5, 0, 255).astype(np.uint8)


def point_sample(x: np.ndarray, size: tuple[int, int], phase: np.ndarray) -> np.ndarray:
    """Nearest-neighbour point sampling to ``size`` (w, h) at sub-sample ``phase`` (x, y in [0, 1)):
    output pixel i takes input pixel floor((i + phase)·in/out). At an integer factor this is line
    skipping that keeps every s-th row and column, starting at floor(phase·s)."""
    h, w = x.shape[:2]
    cols = np.minimum(((np.arange(size[0]) + phase[0]) * w / size[0]).astype(int), w - 1)
    rows = np.minimum(((np.arange(size[1]) + phase[1]) * h / size[1]).astype(int), h - 1)
    return np.ascontiguousarray(x[rows][:, cols])


def guided_filter(x: np.ndarray, radius: int, eps: float) -> np.ndarray:
    """Self-guided filter (He et al., 2010) per channel on float (H,W,3), box radius ``radius``,
    regulariser ``eps`` (0..255² units): smooths where the local variance is below ``eps``, keeps edges."""
    k = (2 * radius + 1, 2 * radius + 1)

    def box(a):
        return cv2.boxFilter(a, -1, k, borderType=cv2.BORDER_REFLECT_101)

    x = np.ascontiguousarray(x, np.float32)
    mean = box(x)
    var = box(x * x) - mean * mean
    a = var / (var + eps)
    b = mean - a * mean
    return box(a) * x + box(b)


_RGB2YCC = np.array([[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]], np.float32)


def chroma_subsample(x: np.ndarray, mode: str, nearest: bool = False) -> np.ndarray:
    """RGB float (H,W,3) through BT.601 full-range YCbCr with Cb/Cr averaged over 2×2 (``420``) or
    2×1 (``422``) blocks and brought back by bilinear (or ``nearest``) upsampling; ``444`` is a no-op."""
    if mode == "444":
        return x
    h, w = x.shape[:2]
    ycc = x @ _RGB2YCC.T
    fy = 2 if mode == "420" else 1
    ph, pw = -h % fy, -w % 2
    c = np.pad(ycc[..., 1:], ((0, ph), (0, pw), (0, 0)), mode="edge")
    c = c.reshape(c.shape[0] // fy, fy, c.shape[1] // 2, 2, 2).mean(axis=(1, 3))
    interp = cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR
    c = cv2.resize(np.ascontiguousarray(c), (w + pw, h + ph), interpolation=interp)[:h, :w]
    ycc = np.concatenate([ycc[..., :1], c], axis=-1)
    return ycc @ np.linalg.inv(_RGB2YCC).T.astype(np.float32)


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


def jpeg(x: np.ndarray, quality: int, sampling: str | None = None) -> np.ndarray:
    """JPEG round trip (OpenCV's libjpeg; its default chroma sampling 4:2:0, or ``sampling``
    ``"420"``/``"422"``/``"444"``) of an RGB uint8 image."""
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)]
    if sampling is not None:
        params += [cv2.IMWRITE_JPEG_SAMPLING_FACTOR, getattr(cv2, _JPEG_SAMPLING[sampling])]
    ok, buf = cv2.imencode(".jpg", x[..., ::-1], params)
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


# ---------------------------------------------------------------------- presets
# A wider camera for training (issue 29), from the public models' ranges (docs/camera.md): optics from
# sharp (σ 0) to blurry drawn independently of the resampler, resamplers with and without a low-pass,
# the image processor, MJPEG, BSRGAN-style shuffled order beside the fixed chain and second order.
WIDE: dict = dict(
    p_clean=0.1, p_blur=0.7, blur_sigma=(0.0, 1.2), p_aniso=0.3, p_motion=0.1, motion_length=(1.0, 3.0),
    resamplers=ALL_RESAMPLERS, p_noise=0.8, shot_gain=(0.0, 0.3), read_sigma=(0.5, 5.0), p_color_noise=0.5,
    p_denoise=0.4, p_tone=0.3, p_sharpen=0.5, p_chroma=0.5, chroma_sampling=("420", "422"),
    p_mjpeg=0.25, p_jpeg=0.4, jpeg_quality=(30, 95), p_codec=0.4, p_second=0.2, p_shuffle=0.2)
CAMERA_PRESETS: dict[str, dict] = {"v1": {}, "wide": WIDE}

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


# ---------------------------------------------------------------------- per-family protocols (robustness matrix)
FAMILY_PROTOCOL_VERSION = 1
_NONE = dict(p_clean=0.0, p_blur=0.0, p_noise=0.0, p_jpeg=0.0, p_codec=0.0, p_second=0.0, resamplers=("area",))
FAMILY_SETTINGS: dict[str, dict] = {
    # one degradation family each, on top of area binning ↓s (a clean sensor); `mixed` is every stage
    "clean": {},
    "blur": dict(p_blur=1.0, blur_sigma=(0.3, 1.5), p_aniso=0.3, p_motion=0.15, motion_length=(1.0, 3.0)),
    "aliasing": dict(resamplers=("bilinear", "bicubic_point", "nearest")),
    "noise": dict(p_noise=1.0, shot_gain=(0.02, 0.3), read_sigma=(1.0, 5.0), p_color_noise=0.5),
    "isp": dict(p_denoise=0.6, p_tone=0.6, p_sharpen=0.8, p_chroma=1.0, chroma_sampling=("420", "422")),
    "jpeg": dict(p_mjpeg=0.5, p_jpeg=1.0, jpeg_quality=(30, 90)),
    "video": dict(p_codec=1.0),
    "mixed": None,  # the WIDE model without clean pairs
}
FAMILIES = tuple(FAMILY_SETTINGS)
_FAMILY_IDS = {"clean": 1, "blur": 2, "aliasing": 3, "noise": 4, "isp": 5, "jpeg": 6, "video": 7, "mixed": 8}


def family_protocol(name: str) -> CameraDegradation:
    """The frozen degradation of a per-family evaluation protocol (``FAMILY_PROTOCOL_VERSION``)."""
    if name not in FAMILY_SETTINGS:
        raise PKDNError(f"unknown protocol family {name!r}; choose from {list(FAMILIES)}")
    if name == "mixed":
        return CameraDegradation(**{**WIDE, "p_clean": 0.0})
    return CameraDegradation(**{**_NONE, **FAMILY_SETTINGS[name]})


def family_protocol_key(name: str) -> dict:
    """What defines a family protocol (its pinned hash covers this): settings, version and seed."""
    return {"family": name, "version": FAMILY_PROTOCOL_VERSION, "seed": [CAMERA_PROTOCOL_SEED, FAMILY_PROTOCOL_VERSION,
            _FAMILY_IDS[name]], "settings": family_protocol(name).to_dict()}


def family_protocol_lr(hr: np.ndarray, scale: int, name: str) -> np.ndarray:
    """LR faces of the family protocol ``name``; face ``i`` seeded by (seed, version, family id, scale, i)."""
    deg = family_protocol(name)
    return np.stack([
        deg(x, scale, np.random.default_rng(
            [CAMERA_PROTOCOL_SEED, FAMILY_PROTOCOL_VERSION, _FAMILY_IDS[name], scale, i]))
        for i, x in enumerate(hr)
    ])


def protocol_lr(hr: np.ndarray, scale: int, protocol: str) -> np.ndarray:
    """LR faces of an evaluation protocol of :data:`PROTOCOLS` or :data:`PROTOCOL_ALIASES`: ``"paper"``
    (PIL bicubic ↓s; alias ``"bicubic"``), ``"camera"`` (v1) or a family of :data:`FAMILIES`."""
    if PROTOCOL_ALIASES.get(protocol, protocol) == "paper":
        return np.stack([bicubic_down(x, scale) for x in hr])
    if protocol == "camera":
        return camera_protocol_lr(hr, scale)
    if protocol in FAMILY_SETTINGS:
        return family_protocol_lr(hr, scale, protocol)
    raise PKDNError(f"unknown protocol {protocol!r}; choose from {list(PROTOCOLS)}")


PROTOCOLS = ("paper", "camera") + FAMILIES
PROTOCOL_ALIASES = {"bicubic": "paper"}  # the paper protocol's former name (validation and log.csv still use it)
DEFAULT_PROTOCOLS = ("paper", "camera")  # what pkdn-train eval (and ship) scores unless told otherwise
