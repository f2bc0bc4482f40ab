"""pkdn_edge.imageio: robust reading (truncated/corrupt/odd formats), atomic writing, listing.

All data is synthetic (made with cv2.imencode in a temp folder); no shared/ data.
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from pkdn_edge.errors import ImageReadError, PKDNError
from pkdn_edge.imageio import ImageWriteError, image_size_from_header, iter_images, read_image, to_bgr8, write_image


def _pattern(h: int = 64, w: int = 80) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([x * 255 // max(1, w - 1), y * 255 // max(1, h - 1), (x + y) % 256], -1)
    return img.astype(np.uint8)


def _write_bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _enc(ext: str, img: np.ndarray, params=()) -> bytes:
    ok, buf = cv2.imencode(ext, img, list(params))
    assert ok
    return buf.tobytes()


# ------------------------------------------------------------------------------------------------
# reading: good files


@pytest.mark.parametrize("ext", [".png", ".jpg", ".bmp", ".webp"])
def test_reads_bgr_uint8(tmp_path, ext):
    img = _pattern()
    p = _write_bytes(tmp_path / f"a{ext}", _enc(ext, img))
    out = read_image(p)
    assert out.dtype == np.uint8 and out.shape == (64, 80, 3) and out.flags.c_contiguous
    if ext in (".png", ".bmp"):
        assert np.array_equal(out, img)
    else:  # lossy
        assert np.abs(out.astype(int) - img).mean() < 6


def test_grayscale_becomes_three_equal_channels(tmp_path):
    g = _pattern()[:, :, 0]
    out = read_image(_write_bytes(tmp_path / "g.png", _enc(".png", g)))
    assert out.shape == (64, 80, 3)
    assert np.array_equal(out[:, :, 0], g) and np.array_equal(out[:, :, 1], g) and np.array_equal(out[:, :, 2], g)


def test_rgba_alpha_is_composited_on_black(tmp_path):
    img = np.full((20, 30, 4), 200, np.uint8)
    img[:, :10, 3] = 0      # transparent -> black
    img[:, 10:20, 3] = 255  # opaque -> colour kept
    img[:, 20:, 3] = 128    # half -> ~half
    out = read_image(_write_bytes(tmp_path / "rgba.png", _enc(".png", img)))
    assert out.shape == (20, 30, 3)
    assert (out[:, :10] == 0).all()
    assert (out[:, 10:20] == 200).all()
    assert np.abs(out[:, 20:].astype(int) - 100).max() <= 1


def test_gray_alpha_and_to_bgr8_shapes():
    ga = np.zeros((10, 10, 2), np.uint8)
    ga[..., 0], ga[..., 1] = 100, 255
    assert (to_bgr8(ga) == 100).all() and to_bgr8(ga).shape == (10, 10, 3)
    assert to_bgr8(np.zeros((10, 10, 1), np.uint8)).shape == (10, 10, 3)
    f = np.linspace(-0.5, 1.5, 100, dtype=np.float32).reshape(10, 10)
    o = to_bgr8(f)
    assert o.dtype == np.uint8 and o.min() == 0 and o.max() == 255


def test_16bit_is_scaled_to_8bit(tmp_path):
    v = (np.arange(256, dtype=np.uint16) * 257).reshape(16, 16)
    img16 = np.stack([v, v[::-1], np.full_like(v, 65535)], -1)
    out = read_image(_write_bytes(tmp_path / "c16.png", _enc(".png", img16)))
    assert out.dtype == np.uint8 and out.shape == (16, 16, 3)
    assert np.array_equal(out[:, :, 0], np.arange(256).reshape(16, 16))
    assert (out[:, :, 2] == 255).all()
    gray16 = read_image(_write_bytes(tmp_path / "g16.png", _enc(".png", v)))
    assert np.array_equal(gray16[:, :, 1], np.arange(256).reshape(16, 16))


def test_jpeg_with_trailing_data_after_end_marker_is_fine(tmp_path):
    data = _enc(".jpg", _pattern()) + b"\x00" * 10 + b"appended trailer (e.g. a motion-photo video)"
    assert read_image(_write_bytes(tmp_path / "trailer.jpg", data)).shape == (64, 80, 3)


def test_header_size_parsing():
    img = _pattern(40, 70)
    for ext in (".png", ".jpg", ".bmp", ".webp"):
        assert image_size_from_header(_enc(ext, img)) == (70, 40), ext
    assert image_size_from_header(b"not an image at all") is None


# ------------------------------------------------------------------------------------------------
# reading: bad files


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(ImageReadError, match="nope.jpg.*no such file"):
        read_image(tmp_path / "nope.jpg")
    with pytest.raises(ImageReadError, match="folder"):
        read_image(tmp_path)


@pytest.mark.parametrize("ext,frac", [(".jpg", 0.6), (".jpg", 0.98), (".png", 0.6), (".png", 0.95)])
def test_truncated_files_are_refused(tmp_path, ext, frac):
    rng = np.random.default_rng(0)
    img = cv2.GaussianBlur(rng.integers(0, 255, (120, 160, 3), np.uint8), (0, 0), 1.0)
    data = _enc(ext, img)
    cut = data[: int(len(data) * frac)]
    p = _write_bytes(tmp_path / f"cut{ext}", cut)
    with pytest.raises(ImageReadError, match=r"cut\%s.*truncated" % ext):
        read_image(p)


def test_jpeg_missing_only_the_end_marker_is_refused(tmp_path):
    data = _enc(".jpg", _pattern())
    assert data.endswith(b"\xff\xd9")
    with pytest.raises(ImageReadError, match="truncated"):
        read_image(_write_bytes(tmp_path / "noeoi.jpg", data[:-2]))


def test_truncated_webp_and_bmp(tmp_path):
    for ext in (".webp", ".bmp"):
        data = _enc(ext, _pattern())
        with pytest.raises(ImageReadError, match="truncated"):
            read_image(_write_bytes(tmp_path / f"cut{ext}", data[: len(data) // 2]))


_NOISE = np.random.default_rng(1).integers(0, 256, 2000, dtype=np.uint8).tobytes()


@pytest.mark.parametrize("content", [b"", b"hello, this is not an image" * 10, _NOISE,
                                     b"\xff\xd8\xff\xe0" + _NOISE[:500], b"\x89PNG\r\n\x1a\n" + _NOISE[:200]],
                         ids=["empty", "text", "noise", "jpeg-magic", "png-magic"])
def test_garbage_bytes_are_refused(tmp_path, content):
    p = _write_bytes(tmp_path / "garbage.jpg", content)
    with pytest.raises(ImageReadError, match="garbage.jpg"):
        read_image(p)


def test_tiny_images_are_refused(tmp_path):
    p = _write_bytes(tmp_path / "tiny.png", _enc(".png", np.zeros((4, 40, 3), np.uint8)))
    with pytest.raises(ImageReadError, match=r"tiny.png.*4 px|tiny.png.*40x4"):
        read_image(p)
    ok = _write_bytes(tmp_path / "eight.png", _enc(".png", np.zeros((8, 8, 3), np.uint8)))
    assert read_image(ok).shape == (8, 8, 3)


def _png_header_only(w: int, h: int) -> bytes:
    def chunk(t: bytes, d: bytes) -> bytes:
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    idat = chunk(b"IDAT", zlib.compress(b"\x00" * 16))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + idat + chunk(b"IEND", b"")


def test_huge_images_are_refused_before_decoding(tmp_path):
    p = _write_bytes(tmp_path / "huge.png", _png_header_only(12000, 10000))  # 120 MP, no real pixel data
    with pytest.raises(ImageReadError, match=r"huge.png.*12000x10000.*megapixels"):
        read_image(p)
    small = _write_bytes(tmp_path / "small.png", _enc(".png", _pattern()))
    with pytest.raises(ImageReadError, match="megapixels"):
        read_image(small, max_pixels=1000)


def test_errors_are_user_errors():
    assert issubclass(ImageReadError, PKDNError) and issubclass(ImageWriteError, PKDNError)


# ------------------------------------------------------------------------------------------------
# writing / listing


@pytest.mark.parametrize("ext", [".png", ".jpg", ".bmp", ".webp"])
def test_write_roundtrip_and_no_temp_files_left(tmp_path, ext):
    img = _pattern()
    p = write_image(tmp_path / "sub" / f"out{ext}", img)
    assert p.is_file()
    back = read_image(p)
    if ext in (".png", ".bmp"):
        assert np.array_equal(back, img)
    else:
        assert np.abs(back.astype(int) - img).mean() < 6
    assert sorted(x.name for x in p.parent.iterdir()) == [f"out{ext}"]


def test_write_overwrites_atomically(tmp_path):
    p = tmp_path / "x.png"
    write_image(p, np.zeros((10, 10, 3), np.uint8))
    write_image(p, np.full((10, 10, 3), 7, np.uint8))
    assert (read_image(p) == 7).all()
    assert [x.name for x in tmp_path.iterdir()] == ["x.png"]


def test_write_errors_are_clear(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(ImageWriteError, match="a_file"):
        write_image(blocker / "out.png", np.zeros((10, 10, 3), np.uint8))
    with pytest.raises(ImageWriteError, match="extension"):
        write_image(tmp_path / "out.gifx", np.zeros((10, 10, 3), np.uint8))
    with pytest.raises(ImageWriteError, match="uint8"):
        write_image(tmp_path / "out.png", np.zeros((10, 10, 3), np.float32))
    with pytest.raises(ImageWriteError, match="does not exist"):
        write_image(tmp_path / "missing" / "out.png", np.zeros((10, 10, 3), np.uint8), mkdir=False)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root ignores folder permissions")
def test_write_into_read_only_folder(tmp_path):
    d = tmp_path / "ro"
    d.mkdir()
    d.chmod(0o500)
    try:
        with pytest.raises(ImageWriteError, match="writable"):
            write_image(d / "out.png", np.zeros((10, 10, 3), np.uint8))
    finally:
        d.chmod(0o700)


def test_iter_images_sorted_and_filtered(tmp_path):
    for name in ["b.png", "a.JPG", "c.jpeg", "d.bmp", "e.webp", "notes.txt", ".hidden.png", "f.gif"]:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "z.png").write_bytes(b"x")
    (tmp_path / "dir.png").mkdir()
    names = [p.name for p in iter_images(tmp_path)]
    assert names == ["a.JPG", "b.png", "c.jpeg", "d.bmp", "e.webp"]
    assert [p.name for p in iter_images(tmp_path, recursive=True)][-1] == "z.png"
    with pytest.raises(PKDNError, match="no such folder"):
        iter_images(tmp_path / "missing")
    with pytest.raises(PKDNError, match="not a folder"):
        iter_images(tmp_path / "b.png")
