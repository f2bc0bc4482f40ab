"""Image file input/output with clear errors, for the runtime (numpy + OpenCV only).

Every image that leaves :func:`read_image` is ``uint8`` ``(H, W, 3)`` **BGR** (OpenCV order), values
0-255, whatever the file held:

* grayscale -> 3 equal channels; gray + alpha and BGRA -> composited on black (alpha dropped);
* 16-bit -> 8-bit (``round(v / 257)``, so 65535 -> 255); float images -> ``clip(v, 0, 1) * 255``;
* JPEG EXIF orientation is applied (the photo comes out upright, as viewers show it).

Files that OpenCV would decode "successfully" into a partly grey image are refused: a JPEG whose
entropy-coded data has no end-of-image marker (``FF D9``), a PNG without its ``IEND`` chunk, a WebP
or BMP shorter than its header says. Images with a side < 8 px or more than 100 megapixels
(checked from the header, before decoding) are refused too. Every refusal is an
:class:`~pkdn_edge.errors.ImageReadError` whose message names the file.

:func:`write_image` writes through a temporary file in the target folder and ``os.replace``
(:mod:`pkdn_edge.atomic`; permissions ``0666 & ~umask``), so a reader never sees a half-written
file; :func:`iter_images` lists a folder's images, sorted.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Optional, Tuple, Union

import cv2
import numpy as np

from pkdn_edge.atomic import atomic_write_bytes  # re-exported: the project's one atomic-write helper
from pkdn_edge.errors import ImageReadError, PKDNError

__all__ = [
    "IMAGE_EXTENSIONS",
    "MIN_SIDE",
    "MAX_PIXELS",
    "ImageWriteError",
    "read_image",
    "decode_image",
    "write_image",
    "iter_images",
    "is_image_file",
    "image_size_from_header",
    "to_bgr8",
    "atomic_write_bytes",
]

PathLike = Union[str, "os.PathLike[str]"]

#: File name extensions (lower case, with the dot) that :func:`iter_images` lists.
IMAGE_EXTENSIONS: Tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
#: Smallest accepted image side in pixels.
MIN_SIDE = 8
#: Largest accepted image area in pixels (100 megapixels).
MAX_PIXELS = 100_000_000

_PNG_SIG = b"\x89PNG\r\n\x1a\n"


class ImageWriteError(PKDNError):
    """An image could not be written (folder missing or unwritable, disk full, bad array)."""


# --------------------------------------------------------------------------------------------------
# header parsing (size and completeness, without decoding)


def _sniff(data: bytes) -> str:
    """Container format from the magic bytes: ``jpeg``, ``png``, ``webp``, ``bmp`` or ``other``."""
    if data[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if data[:8] == _PNG_SIG:
        return "png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data[:2] == b"BM":
        return "bmp"
    return "other"


def _jpeg_scan(data: bytes) -> Tuple[Optional[Tuple[int, int]], int]:
    """Walk the JPEG marker segments up to the first start-of-scan (skipping APPn payloads such as
    EXIF thumbnails). Returns ((width, height) from the first SOF marker or None, offset of the first
    SOS marker or -1)."""
    size = None
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            return size, -1  # not at a marker: malformed header
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0x01,) or 0xD0 <= marker <= 0xD7:  # stand-alone markers
            i += 2
            continue
        (length,) = struct.unpack(">H", data[i + 2:i + 4])
        if marker == 0xDA:  # SOS
            return size, i
        # SOF0..SOF15 except DHT (C4), JPG (C8) and DAC (CC)
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC) and size is None and i + 9 <= n:
            h, w = struct.unpack(">HH", data[i + 5:i + 9])
            size = (int(w), int(h))
        i += 2 + length
    return size, -1


def _png_walk(data: bytes) -> Tuple[Optional[Tuple[int, int]], bool]:
    """((width, height) from IHDR or None, whether an IEND chunk is present where expected)."""
    size = None
    if len(data) >= 24 and data[12:16] == b"IHDR":
        w, h = struct.unpack(">II", data[16:24])
        size = (int(w), int(h))
    i, n = 8, len(data)
    while i + 8 <= n:
        (length,) = struct.unpack(">I", data[i:i + 4])
        ctype = data[i + 4:i + 8]
        if ctype == b"IEND":
            return size, True
        i += 12 + length  # length + type + data + crc
    return size, False


def _webp_size(data: bytes) -> Optional[Tuple[int, int]]:
    chunk = data[12:16]
    try:
        if chunk == b"VP8X" and len(data) >= 30:
            w = 1 + int.from_bytes(data[24:27], "little")
            h = 1 + int.from_bytes(data[27:30], "little")
            return w, h
        if chunk == b"VP8 " and len(data) >= 30:
            w, h = struct.unpack("<HH", data[26:30])
            return int(w & 0x3FFF), int(h & 0x3FFF)
        if chunk == b"VP8L" and len(data) >= 25:
            b = data[21:25]
            w = 1 + (((b[1] & 0x3F) << 8) | b[0])
            h = 1 + (((b[3] & 0x0F) << 10) | (b[2] << 2) | ((b[1] & 0xC0) >> 6))
            return w, h
    except (IndexError, struct.error):
        return None
    return None


def _bmp_size(data: bytes) -> Optional[Tuple[int, int]]:
    if len(data) < 26:
        return None
    (hdr,) = struct.unpack("<I", data[14:18])
    if hdr == 12:  # OS/2 BITMAPCOREHEADER
        w, h = struct.unpack("<HH", data[18:22])
    else:
        w, h = struct.unpack("<ii", data[18:26])
    return abs(int(w)), abs(int(h))


def image_size_from_header(data: bytes) -> Optional[Tuple[int, int]]:
    """(width, height) read from a JPEG/PNG/WebP/BMP header without decoding; None if unknown."""
    kind = _sniff(data)
    try:
        if kind == "jpeg":
            return _jpeg_scan(data)[0]
        if kind == "png":
            return _png_walk(data)[0]
        if kind == "webp":
            return _webp_size(data)
        if kind == "bmp":
            return _bmp_size(data)
    except struct.error:
        return None
    return None


def _truncation_problem(data: bytes, kind: str) -> Optional[str]:
    """Why ``data`` looks cut short (a message fragment), or None when it looks complete."""
    if kind == "jpeg":
        _, sos = _jpeg_scan(data)
        if sos < 0:
            return "JPEG is truncated or corrupt (no image data after the header)"
        # 0xFF inside entropy-coded data is always followed by 0x00 or a marker, so an end-of-image
        # marker after the first scan means the encoder finished. Trailing data after it is fine.
        if data.find(b"\xff\xd9", sos) < 0:
            return "JPEG is truncated (no end-of-image marker)"
        return None
    if kind == "png":
        if not _png_walk(data)[1]:
            return "PNG is truncated (no IEND chunk)"
        return None
    if kind == "webp":
        (riff,) = struct.unpack("<I", data[4:8])
        if len(data) < 8 + riff:
            return f"WebP is truncated ({len(data)} of {8 + riff} bytes)"
        return None
    if kind == "bmp" and len(data) >= 6:
        (total,) = struct.unpack("<I", data[2:6])
        if total and len(data) < total:
            return f"BMP is truncated ({len(data)} of {total} bytes)"
    return None


# --------------------------------------------------------------------------------------------------
# conversion


def to_bgr8(img: np.ndarray) -> np.ndarray:
    """Any decoded image -> uint8 (H, W, 3) BGR.

    ``img``: (H, W), (H, W, 1), (H, W, 2) gray + alpha, (H, W, 3) BGR or (H, W, 4) BGRA; uint8,
    uint16 (0-65535, scaled by 1/257), other integer types (scaled from their range) or float
    (0-1). Alpha is composited on black.
    """
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    alpha = None
    if img.ndim == 3 and img.shape[2] in (2, 4):
        alpha = img[:, :, -1]
        img = img[:, :, :-1]
        if img.shape[2] == 1:
            img = img[:, :, 0]
    if img.ndim == 3 and img.shape[2] != 3:
        raise ValueError(f"unsupported channel count {img.shape[2]}")

    def to_unit(a: np.ndarray) -> np.ndarray:
        if np.issubdtype(a.dtype, np.floating):
            return np.clip(np.nan_to_num(a.astype(np.float32)), 0.0, 1.0)
        return a.astype(np.float32) / float(np.iinfo(a.dtype).max)

    if alpha is not None:
        a = to_unit(alpha)
        if img.ndim == 3:
            a = a[:, :, None]
        out = np.rint(to_unit(img) * a * 255.0).astype(np.uint8)
    elif img.dtype == np.uint8:
        out = img
    elif img.dtype == np.uint16:
        out = ((img.astype(np.uint32) + 128) // 257).astype(np.uint8)
    else:
        out = np.rint(to_unit(img) * 255.0).astype(np.uint8)
    if out.ndim == 2:
        out = cv2.cvtColor(out, cv2.COLOR_GRAY2BGR)
    return np.ascontiguousarray(out)


# --------------------------------------------------------------------------------------------------
# reading


def decode_image(data: bytes, name: str = "<bytes>", min_side: int = MIN_SIDE,
                 max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode encoded image bytes (JPEG, PNG, WebP, BMP, anything OpenCV reads) with the checks
    of :func:`read_image`. ``name`` only appears in error messages. Returns uint8 (H, W, 3) BGR."""
    if len(data) == 0:
        raise ImageReadError(f"{name}: file is empty")
    kind = _sniff(data)
    size = image_size_from_header(data)
    if size is not None:
        _check_size(name, size[0], size[1], min_side, max_pixels)
    problem = _truncation_problem(data, kind)
    if problem is not None:
        raise ImageReadError(f"{name}: {problem}; re-export or re-download the file")
    buf = np.frombuffer(data, np.uint8)
    # JPEG: decode as colour with EXIF orientation applied (JPEG has no alpha). Others: decode
    # unchanged, keeping alpha and 16-bit depth, then convert.
    flags = cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH if kind == "jpeg" else cv2.IMREAD_UNCHANGED
    try:
        img = cv2.imdecode(buf, flags)
    except cv2.error as exc:
        raise ImageReadError(f"{name}: OpenCV cannot decode it ({str(exc).strip().splitlines()[-1]})") from None
    if img is None or img.size == 0:
        what = {"other": "not an image OpenCV can read (unknown format or corrupt data)"}.get(
            kind, f"corrupt {kind.upper()} data")
        raise ImageReadError(f"{name}: {what}")
    _check_size(name, img.shape[1], img.shape[0], min_side, max_pixels)
    try:
        return to_bgr8(img)
    except ValueError as exc:
        raise ImageReadError(f"{name}: {exc}") from None


def _check_size(name: str, w: int, h: int, min_side: int, max_pixels: int) -> None:
    if w * h > max_pixels:
        raise ImageReadError(
            f"{name}: image is {w}x{h} = {w * h / 1e6:.1f} megapixels, more than the "
            f"{max_pixels / 1e6:g} MP limit; downscale it first")
    if min(w, h) < min_side:
        raise ImageReadError(f"{name}: image is only {w}x{h} px; at least {min_side} px per side is needed")


def read_image(path: PathLike, min_side: int = MIN_SIDE, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Read an image file as uint8 (H, W, 3) BGR, values 0-255.

    Grayscale, alpha, palette and 16-bit files are converted (see the module docstring). Raises
    :class:`~pkdn_edge.errors.ImageReadError` (naming the file) when the file is missing, is a
    folder, cannot be read, is empty, truncated or corrupt, has a side below ``min_side`` px or more
    than ``max_pixels`` pixels.
    """
    p = Path(path)
    if not p.exists():
        raise ImageReadError(f"{p}: no such file")
    if p.is_dir():
        raise ImageReadError(f"{p}: is a folder, not an image file")
    try:
        with open(p, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise ImageReadError(f"{p}: cannot read it ({exc.strerror or exc})") from None
    return decode_image(data, str(p), min_side, max_pixels)


# --------------------------------------------------------------------------------------------------
# writing / listing


def write_image(path: PathLike, img: np.ndarray, quality: int = 95, mkdir: bool = True) -> Path:
    """Write ``img`` (uint8 (H, W), (H, W, 3) BGR or (H, W, 4) BGRA) atomically; returns the path.

    The format follows the extension (``.png``, ``.jpg``/``.jpeg`` at ``quality``, ``.webp`` at
    ``quality``, ``.bmp``). The bytes go to a temporary file in the same folder first, then
    ``os.replace`` puts it in place, so a crash never leaves a half-written image. ``mkdir``
    creates missing parent folders. Raises :class:`ImageWriteError` with the reason (unwritable
    folder, unsupported extension, bad array).
    """
    p = Path(path)
    ext = p.suffix.lower()
    if ext not in IMAGE_EXTENSIONS:
        raise ImageWriteError(f"{p}: unsupported image extension {ext or '(none)'!r}; "
                              f"use one of {', '.join(IMAGE_EXTENSIONS)}")
    img = np.asarray(img)
    if img.dtype != np.uint8 or not (img.ndim == 2 or (img.ndim == 3 and img.shape[2] in (1, 3, 4))):
        raise ImageWriteError(f"{p}: expected a uint8 (H, W[, 1|3|4]) image, got {img.dtype} {img.shape}")
    if img.size == 0:
        raise ImageWriteError(f"{p}: the image is empty {img.shape}")
    params: list = []
    if ext in (".jpg", ".jpeg"):
        params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)]
    elif ext == ".webp":
        params = [cv2.IMWRITE_WEBP_QUALITY, int(quality)]
    elif ext == ".png":
        params = [cv2.IMWRITE_PNG_COMPRESSION, 3]
    ok, enc = cv2.imencode(ext, np.ascontiguousarray(img), params)
    if not ok:
        raise ImageWriteError(f"{p}: OpenCV could not encode a {img.shape} image as {ext}")
    folder = p.parent
    if mkdir and not folder.exists():
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ImageWriteError(f"{p}: cannot create folder {folder} ({exc.strerror or exc})") from None
    if not folder.is_dir():
        raise ImageWriteError(f"{p}: folder {folder} does not exist" if not folder.exists()
                              else f"{p}: {folder} is not a folder")
    try:
        atomic_write_bytes(p, enc.tobytes(), fsync=False, clean=False)  # many small files (crops, frames)
    except OSError as exc:
        raise ImageWriteError(f"{p}: cannot write to folder {folder} ({exc.strerror or exc}); "
                              "check that it is writable and the disk is not full") from None
    return p


def is_image_file(path: PathLike) -> bool:
    """True when ``path`` has one of :data:`IMAGE_EXTENSIONS` (case-insensitive); no file access."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def iter_images(folder: PathLike, recursive: bool = False) -> list[Path]:
    """The image files (:data:`IMAGE_EXTENSIONS`, any case) in ``folder``, sorted by path.

    Hidden files (name starting with ``.``, e.g. :func:`write_image`'s temporary files) are left
    out. ``recursive`` also lists sub-folders. Raises :class:`~pkdn_edge.errors.PKDNError` when
    ``folder`` is missing or not a folder. Files are listed, not opened: use :func:`read_image`.
    """
    d = Path(folder)
    if not d.exists():
        raise PKDNError(f"{d}: no such folder")
    if not d.is_dir():
        raise PKDNError(f"{d}: not a folder")
    it = d.rglob("*") if recursive else d.iterdir()
    try:
        files = [p for p in it if not p.name.startswith(".") and is_image_file(p) and p.is_file()]
    except OSError as exc:
        raise PKDNError(f"{d}: cannot list the folder ({exc.strerror or exc})") from None
    return sorted(files)
