"""The built-in demo 'webcam': a public-domain face composited on a moving procedural scene.

Runs without torch: numpy + cv2 only.
"""

from __future__ import annotations

import importlib.util
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from pkdn_edge.errors import PKDNError
from pkdn_edge.sources.base import FrameSource

# The shipped demo face: a crop (x 40-420, y 0-420) of skimage's public-domain NASA portrait of
# astronaut Eileen Collins (see pkdn_edge/data/README.md). Landmarks in the crop, template order
# (image-left eye, image-right eye, nose tip, image-left mouth corner, image-right mouth corner):
# the mean of RetinaFace's landmarks on the photo at 4 scales (0.5x-1.5x), so they mean what the
# runtime detector means.
_DEMO_ASSET = Path(__file__).resolve().parent.parent / "data" / "demo_face_astronaut.jpg"
_DEMO_CROP = (40, 0, 420, 420)  # x1, y1, x2, y2 in astronaut.png
DEMO_FACE_LANDMARKS = np.array([[164.3, 101.3], [207.8, 103.9], [184.2, 128.6], [162.7, 140.4], [204.3, 142.6]],
                               np.float32)


@dataclass
class DemoFace:
    image: np.ndarray       # BGR person photo
    mask: np.ndarray        # float32 0..1, feathered head-and-shoulders cut-out
    landmarks: np.ndarray   # (5, 2) in image px
    origin: str             # where the photo came from

    @property
    def iod(self) -> float:
        d = self.landmarks[1] - self.landmarks[0]
        return float(math.hypot(float(d[0]), float(d[1])))


def _person_mask(h: int, w: int, lm: np.ndarray) -> np.ndarray:
    """Feathered head + shoulders mask around the landmarks."""
    iod = float(np.hypot(*(lm[1] - lm[0])))
    c = lm[:2].mean(0)
    m = np.zeros((h, w), np.uint8)
    cv2.ellipse(m, (int(c[0]), int(c[1] + 0.1 * iod)), (int(1.75 * iod), int(2.4 * iod)), 0, 0, 360, 255, -1)
    cv2.ellipse(m, (int(c[0]), int(c[1] + 5.0 * iod)), (int(4.6 * iod), int(3.0 * iod)), 0, 0, 360, 255, -1)
    k = int(0.5 * iod) | 1
    return cv2.GaussianBlur(m, (k, k), 0).astype(np.float32) / 255.0


def _synthetic_face() -> tuple[np.ndarray, np.ndarray]:
    """A drawn face (fallback when no real photo is available; detectors may not fire on it)."""
    img = np.full((420, 380, 3), (200, 190, 185), np.uint8)
    lm = DEMO_FACE_LANDMARKS.copy()
    cv2.ellipse(img, (185, 120), (75, 95), 0, 0, 360, (120, 160, 210), -1)
    cv2.ellipse(img, (185, 60), (80, 50), 0, 180, 360, (40, 60, 90), -1)
    for x, y in lm[:2]:
        cv2.ellipse(img, (int(x), int(y)), (10, 5), 0, 0, 360, (255, 255, 255), -1)
        cv2.circle(img, (int(x), int(y)), 4, (60, 40, 30), -1)
    cv2.line(img, (185, 105), (int(lm[2, 0]), int(lm[2, 1])), (90, 120, 170), 3)
    cv2.ellipse(img, (185, 140), (22, 8), 0, 0, 180, (60, 60, 160), 3)
    cv2.rectangle(img, (60, 260), (320, 420), (40, 90, 200), -1)
    return img, lm


def load_demo_face() -> DemoFace:
    """The demo person: the shipped public-domain photo; else scikit-image's astronaut.png when
    installed; else a drawn face (with a warning)."""
    img, lm, origin = None, DEMO_FACE_LANDMARKS.copy(), ""
    if _DEMO_ASSET.is_file():
        img = cv2.imread(str(_DEMO_ASSET), cv2.IMREAD_COLOR)
        origin = "NASA portrait of Eileen Collins (public domain), shipped with pkdn_edge"
    if img is None:
        spec = importlib.util.find_spec("skimage")  # locate the file without importing skimage
        if spec is not None and spec.origin:
            p = Path(spec.origin).parent / "data" / "astronaut.png"
            full = cv2.imread(str(p), cv2.IMREAD_COLOR) if p.is_file() else None
            if full is not None:
                x1, y1, x2, y2 = _DEMO_CROP
                img, origin = full[y1:y2, x1:x2].copy(), f"{p} (public domain)"
    if img is None:
        print("demo: no real face photo found (pkdn_edge/data missing, scikit-image absent): "
              "using a drawn face; a real face detector may not find it", file=sys.stderr)
        img, lm = _synthetic_face()
        origin = "synthetic drawing"
    h, w = img.shape[:2]
    return DemoFace(img, _person_mask(h, w, lm), lm, origin)


def _similarity(scale: float, angle_deg: float, center_from: np.ndarray, center_to: np.ndarray) -> np.ndarray:
    """2x3 matrix: rotate/scale about ``center_from`` and move it to ``center_to``."""
    a = math.radians(angle_deg)
    c, s = scale * math.cos(a), scale * math.sin(a)
    R = np.array([[c, -s], [s, c]], np.float64)
    t = np.asarray(center_to, np.float64) - R @ np.asarray(center_from, np.float64)
    return np.hstack([R, t[:, None]])


def _compose(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """A after B (2x3 each)."""
    A3 = np.vstack([A, [0, 0, 1]])
    B3 = np.vstack([B, [0, 0, 1]])
    return (A3 @ B3)[:2]


class DemoSource(FrameSource):
    """A built-in, deterministic 'webcam' clip: the public-domain demo face (one or several copies),
    cut out and composited on a soft procedural background, filmed by a moving camera (pan, zoom,
    roll) with hand shake (``jitter`` px RMS) and sensor noise (``noise`` gray levels), rendered by
    area averaging at a low resolution (faces about ``iod`` px between the eyes) like a cheap camera.

    ``faces``: number of people (1-6), ``frames``: clip length (finite, so demos end on their own),
    ``size``: (w, h) = 640x480, ``fps``: 30. ``landmarks_at(i)`` gives the true landmarks of frame i
    (for tests and for measuring tracking error).
    """

    name = "demo"

    def __init__(self, faces: int = 1, frames: int = 300, size: tuple[int, int] = (640, 480), fps: float = 30.0,
                 jitter: float = 0.5, noise: float = 2.0, iod: float | None = None, seed: int = 0,
                 motion: float = 1.0) -> None:
        super().__init__()
        if not 1 <= faces <= 6:
            raise PKDNError("demo: faces must be 1..6")
        if frames < 1:
            raise PKDNError("demo: frames must be >= 1")
        self.faces, self.frames, self.fps = int(faces), int(frames), float(fps)
        self.name = f"demo ({self.faces} face{'s' if self.faces > 1 else ''}, {self.frames} frames)"
        self.W, self.H = int(size[0]), int(size[1])
        self.jitter, self.noise, self.motion = float(jitter), float(noise), float(motion)
        self.face = load_demo_face()
        self.seed = int(seed)
        rng = np.random.default_rng(seed)
        self._bg = self._background(rng)
        # people: world positions (frame px at rest) and sizes (IOD at rest)
        if iod is None:
            iods = {1: [13.0], 2: [11.0, 15.0]}.get(self.faces, list(np.linspace(8.0, 17.0, self.faces)))
        else:
            iods = [float(iod)] * self.faces
        xs = np.linspace(0.5, 0.5, 1) if self.faces == 1 else np.linspace(0.2, 0.8, self.faces)
        self.people = []
        for k in range(self.faces):
            self.people.append(dict(
                pos=np.array([xs[k] * self.W, (0.42 + 0.06 * ((k % 2) - 0.5)) * self.H]),
                iod=iods[k], phase=rng.uniform(0, 2 * math.pi, 4), flip=(k % 2 == 1),
            ))
        # hand shake: a smoothed random walk, fixed per seed
        n = self.frames + 8
        shake = rng.normal(0, 1, (n, 3))
        kern = np.ones(3) / 3
        shake = np.stack([np.convolve(shake[:, j], kern, mode="same") for j in range(3)], 1)
        shake /= max(1e-9, shake[:, :2].std())
        self._shake = shake
        self._i = 0
        self._noise_buf = np.empty((self.H, self.W), np.int16)
        self._flipped = (np.ascontiguousarray(self.face.image[:, ::-1]), np.ascontiguousarray(self.face.mask[:, ::-1]))
        self._frame = np.empty((self.H, self.W, 3), np.uint8)

    # -- rendering ----------------------------------------------------------------------------
    def _background(self, rng: np.random.Generator) -> np.ndarray:
        """A large soft 'room': low-frequency colour blobs + some texture (flow needs it)."""
        bw, bh = 2 * self.W, 2 * self.H
        low = rng.uniform(70, 190, (6, 8, 1)) + rng.uniform(-25, 25, (6, 8, 3))
        bg = cv2.resize(low.astype(np.float32), (bw, bh), interpolation=cv2.INTER_CUBIC)
        mid = rng.normal(0, 10, (bh // 16, bw // 16, 1)).astype(np.float32)
        bg += cv2.resize(mid, (bw, bh), interpolation=cv2.INTER_CUBIC)[..., None]
        for _ in range(40):  # a few shelves / frames on the wall
            x, y = int(rng.uniform(0, bw)), int(rng.uniform(0, bh))
            cw, ch = int(rng.uniform(20, 160)), int(rng.uniform(10, 100))
            col = tuple(float(v) for v in rng.uniform(40, 200) + rng.uniform(-30, 30, 3))
            cv2.rectangle(bg, (x, y), (x + cw, y + ch), col, -1)
        bg = cv2.GaussianBlur(bg, (0, 0), 2.5)  # out of focus
        return np.clip(bg, 0, 255).astype(np.uint8)

    def _camera(self, i: int) -> np.ndarray:
        """World -> frame similarity at frame i (pan, zoom, roll, shake)."""
        t = i / self.fps
        m = self.motion
        zoom = 1.0 + m * 0.18 * math.sin(2 * math.pi * t / 6.0)
        roll = m * 5.0 * math.sin(2 * math.pi * t / 7.5 + 0.5)
        pan = np.array([m * 0.06 * self.W * math.sin(2 * math.pi * t / 9.0),
                        m * 0.04 * self.H * math.sin(2 * math.pi * t / 5.0 + 1.0)])
        sh = self._shake[min(i, len(self._shake) - 1)]
        pan = pan + self.jitter * sh[:2]
        c = np.array([self.W / 2, self.H / 2])
        return _similarity(zoom, roll + 0.3 * self.jitter * sh[2], c, c + pan)

    def _person(self, k: int, i: int) -> np.ndarray:
        """Photo -> world similarity of person k at frame i (head sway, nods)."""
        p = self.people[k]
        t = i / self.fps
        ph = p["phase"]
        f = self.face
        scale = p["iod"] / f.iod * (1.0 + self.motion * 0.06 * math.sin(2 * math.pi * t / 4.0 + ph[0]))
        angle = self.motion * 8.0 * math.sin(2 * math.pi * t / 3.3 + ph[1])
        sway = np.array([self.motion * 0.25 * p["iod"] * 4 * math.sin(2 * math.pi * t / 5.1 + ph[2]),
                         self.motion * 0.15 * p["iod"] * 4 * math.sin(2 * math.pi * t / 2.7 + ph[3])])
        eyes = f.landmarks[:2].mean(0)
        return _similarity(scale, angle, eyes, p["pos"] + sway)

    def transform(self, k: int, i: int) -> np.ndarray:
        """Photo -> frame similarity (2x3) of person k at frame i (pixel centres at integers)."""
        return _compose(self._camera(i), self._person(k, i))

    def landmarks_at(self, i: int) -> list[np.ndarray]:
        """True (5, 2) landmarks of every person at frame i, in frame px (template order)."""
        out = []
        for k in range(self.faces):
            M = self.transform(k, i)
            lm = self.face.landmarks.astype(np.float64)
            if self.people[k]["flip"]:
                lm = self._flipped_landmarks()
            out.append((lm @ M[:, :2].T + M[:, 2]).astype(np.float32))
        return out

    def _flipped_landmarks(self) -> np.ndarray:
        w = self.face.image.shape[1]
        lm = self.face.landmarks.astype(np.float64).copy()
        lm[:, 0] = (w - 1) - lm[:, 0]
        return lm[[1, 0, 2, 4, 3]]  # mirror swaps image-left and image-right points

    def render(self, i: int) -> np.ndarray:
        """Frame i (BGR uint8, a new array)."""
        cam = self._camera(i)
        # background: world = a (2W x 2H) wall centred on the frame
        off = np.array([[1, 0, -self.W / 2], [0, 1, -self.H / 2]], np.float64)
        frame = cv2.warpAffine(self._bg, _compose(cam, off), (self.W, self.H), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_REFLECT_101)
        order = sorted(range(self.faces), key=lambda k: self.people[k]["iod"])  # small (far) first
        for k in order:
            self._paste_person(frame, k, i)
        if self.noise > 0:
            cv2.setRNGSeed(self.seed * 100003 + i)  # frame i is the same whenever it is rendered
            cv2.randn(self._noise_buf, 0, self.noise)  # luma noise (cheaper than per channel)
            n = self._noise_buf
            frame = cv2.add(frame, cv2.merge((n, n, n)), dtype=cv2.CV_8U)  # saturating
        return frame

    def _paste_person(self, frame: np.ndarray, k: int, i: int) -> None:
        f = self.face
        img, mask = f.image, f.mask
        if self.people[k]["flip"]:
            img, mask = self._flipped
        M = self.transform(k, i)
        s = math.hypot(M[0, 0], M[1, 0])
        # area-average the photo down to the target scale first (a camera integrates light; no aliasing)
        h, w = img.shape[:2]
        nw, nh = max(2, round(w * s)), max(2, round(h * s))
        small = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA)
        msmall = cv2.resize(mask, (nw, nh), interpolation=cv2.INTER_AREA)
        sx, sy = nw / w, nh / h
        # photo px -> small px: x' = (x + .5) * sx - .5; so small -> frame = M . inv(that)
        to_small = np.array([[sx, 0, 0.5 * sx - 0.5], [0, sy, 0.5 * sy - 0.5]], np.float64)
        inv = cv2.invertAffineTransform(to_small)
        Ms = _compose(M, inv)
        # warp only the bounding box of the person in the frame
        corners = np.array([[0, 0], [nw - 1, 0], [nw - 1, nh - 1], [0, nh - 1]], np.float64)
        fc = corners @ Ms[:, :2].T + Ms[:, 2]
        x1, y1 = max(0, int(math.floor(fc[:, 0].min())) - 1), max(0, int(math.floor(fc[:, 1].min())) - 1)
        x2, y2 = min(self.W, int(math.ceil(fc[:, 0].max())) + 2), min(self.H, int(math.ceil(fc[:, 1].max())) + 2)
        if x2 <= x1 or y2 <= y1:
            return
        Mr = Ms.copy()
        Mr[:, 2] -= (x1, y1)
        size = (x2 - x1, y2 - y1)
        person = cv2.warpAffine(small, Mr, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        alpha = cv2.warpAffine(msmall, Mr, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        roi = frame[y1:y2, x1:x2]
        roi[...] = cv2.blendLinear(person, np.ascontiguousarray(roi), alpha, 1.0 - alpha)

    # -- FrameSource ----------------------------------------------------------------------------
    def _read(self):
        if self._i >= self.frames:
            self.end_reason = "end of demo"
            return "end", None, None
        img = self.render(self._i)
        self._i += 1
        return "ok", img, None



def _parse_demo(spec: str) -> dict:
    """``demo``, ``demo:3``, ``demo:faces=3,frames=120,jitter=1`` -> DemoSource kwargs."""
    kw: dict = {}
    rest = spec[4:].lstrip(":")
    for part in filter(None, rest.split(",")):
        if "=" not in part:
            kw["faces"] = int(part)
            continue
        k, v = part.split("=", 1)
        k = k.strip()
        if k in ("faces", "frames", "seed"):
            kw[k] = int(v)
        elif k in ("jitter", "noise", "iod", "fps", "motion"):
            kw[k] = float(v)
        elif k == "size":
            w, h = v.lower().split("x")
            kw["size"] = (int(w), int(h))
        else:
            raise PKDNError(f"unknown demo option {k!r} (faces, frames, jitter, noise, iod, fps, motion, size, seed)")
    return kw
