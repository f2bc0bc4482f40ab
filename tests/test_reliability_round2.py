"""Reliability, round 2 (issue 30): outputs never replace inputs or user files, pkdn-prepare recovers
from any stop, manifests are checked whole, a full disk keeps the loop's summary, size limits come
before allocations. One test per row of docs/reliability.md; each fails without its fix.

Fast: the bicubic engine, a detector that finds nothing (or one face at the template position),
generated frames and tiny ONNX graphs; no ../shared data, no network.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from pkdn_edge import outputs, webcam, writers
from pkdn_edge.errors import PKDNError

ROOT = Path(__file__).resolve().parents[1]


class NoFaces:
    def detect(self, frame):
        return []


@pytest.fixture
def no_detector(monkeypatch):
    monkeypatch.setattr(webcam, "build_detector", lambda threads=2: NoFaces())


def _run(capsys, *argv):
    rc = webcam.main([str(a) for a in argv])
    return rc, capsys.readouterr().err


def _one_error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def _frame(i: int, size=(64, 48)) -> np.ndarray:
    rng = np.random.default_rng(i)
    return cv2.resize(rng.integers(0, 255, (6, 8, 3), dtype=np.uint8), size, interpolation=cv2.INTER_CUBIC)


def _video(path: Path, n: int = 12) -> Path:
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (64, 48))
    for i in range(n):
        vw.write(_frame(i))
    vw.release()
    assert path.stat().st_size > 0
    return path


BICUBIC = ("--headless", "--backend", "bicubic", "--no-overlay")


# ------------------------------------------------------------------------------------------------
# 1. the loop's outputs never replace what it reads


@pytest.mark.parametrize("how", ["same", "symlink", "hardlink"])
def test_output_naming_the_source_video_is_refused(tmp_path, capsys, no_detector, how):
    """`--source out/same.avi --output out/same.avi` replaced the 50-frame input with the output."""
    src = _video(tmp_path / "same.avi")
    before = src.read_bytes()
    out = tmp_path / "same.avi"
    if how == "symlink":
        out = tmp_path / "link.avi"
        out.symlink_to(src)
    elif how == "hardlink":
        out = tmp_path / "hard.avi"
        os.link(src, out)
    rc, err = _run(capsys, "--source", src, "--frames", 3, *BICUBIC, "--output", out)
    assert rc == 2
    assert "is the --source" in _one_error_line(err) and "--output" in err
    assert src.read_bytes() == before


def test_stats_json_naming_the_source_or_a_model_file_is_refused(tmp_path, capsys, no_detector, monkeypatch):
    """`--stats-json` naming the input video replaced the video with JSON; the shipped weights (here a
    stand-in folder) are protected the same way."""
    src = _video(tmp_path / "in.avi")
    before = src.read_bytes()
    rc, err = _run(capsys, "--source", src, "--frames", 3, *BICUBIC, "--output", "none", "--stats-json", src)
    assert rc == 2 and "--stats-json" in _one_error_line(err) and "reads" in err
    assert src.read_bytes() == before
    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "model.json").write_text("{}")
    monkeypatch.setattr(outputs, "WEIGHTS_DIR", weights)
    rc, err = _run(capsys, "--source", src, "--frames", 3, *BICUBIC, "--output", "none", "--stats-json",
                   weights / "model.json")
    assert rc == 2 and "shipped model file" in _one_error_line(err)
    assert (weights / "model.json").read_text() == "{}"
    rc, err = _run(capsys, "--source", src, "--frames", 3, *BICUBIC, "--output", tmp_path / "o.avi",
                   "--stats-json", tmp_path / "o.avi")
    assert rc == 2 and "is the --output video" in _one_error_line(err)


def test_png_output_folder_with_user_files_needs_overwrite(tmp_path, capsys, no_detector):
    """`--output DIR` where DIR holds the user's 000000.png ... overwrote them silently."""
    out = tmp_path / "frames"
    out.mkdir()
    mine = _frame(99)
    cv2.imwrite(str(out / "000000.png"), mine)
    (out / "notes.txt").write_text("mine")
    rc, err = _run(capsys, "--source", "demo:frames=2,size=64x48", *BICUBIC, "--output", out)
    assert rc == 2 and "--overwrite" in _one_error_line(err)
    assert np.array_equal(cv2.imread(str(out / "000000.png")), mine)
    for i in range(2, 5):  # an earlier, longer run's frames
        cv2.imwrite(str(out / f"{i:06d}.png"), mine)
    rc, err = _run(capsys, "--source", "demo:frames=2,size=64x48", *BICUBIC, "--output", out, "--overwrite")
    assert rc == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["000000.png", "000001.png", "notes.txt"]
    assert not np.array_equal(cv2.imread(str(out / "000000.png")), mine)


def test_png_output_into_the_source_folder_is_refused_even_with_overwrite(tmp_path, capsys, no_detector):
    src = tmp_path / "imgs"
    src.mkdir()
    for i in range(3):
        cv2.imwrite(str(src / f"{i:06d}.png"), _frame(i))
    before = {p.name: p.read_bytes() for p in src.iterdir()}
    rc, err = _run(capsys, "--source", src, *BICUBIC, "--output", src, "--overwrite")
    assert rc == 2 and "--source" in _one_error_line(err)
    assert {p.name: p.read_bytes() for p in src.iterdir()} == before


def test_headless_default_output_never_replaces_the_last_run(tmp_path, capsys, no_detector, monkeypatch):
    """Any run without --output overwrote out/webcam_demo.mp4."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(time, "time", lambda: 1_800_000_000.0)  # both runs in the same second
    videos = []
    for _ in range(2):
        rc, err = _run(capsys, "--source", "demo:frames=2,size=64x48", *BICUBIC, "--encoder", "mp4v")
        assert rc == 0, err
        videos.append(next(ln.split()[1] for ln in err.splitlines() if ln.startswith("video: ")))
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(1_800_000_000.0))
    assert [Path(v).name for v in videos] == [f"webcam_{stamp}.mp4", f"webcam_{stamp}-2.mp4"]
    assert all(Path(v).is_file() and Path(v).with_suffix(".json").is_file() for v in videos)


# ------------------------------------------------------------------------------------------------
# 4. a full disk while the loop writes


def test_full_disk_while_writing_the_video_keeps_summary_and_stats(tmp_path, capsys, no_detector, monkeypatch):
    """The video's disk fills up: the summary is printed, the stats JSON (another disk) is written, the
    unfinished video is removed, then one error line, exit 2."""
    real_write, real_release = writers._OpenCVVideo.write, writers._OpenCVVideo.release
    calls = {"n": 0}

    def write(self, img):
        calls["n"] += 1
        if calls["n"] > 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write(self, img)

    def release(self):
        real_release(self)
        raise OSError(errno.ENOSPC, "No space left on device")  # the container cannot be finished

    monkeypatch.setattr(writers._OpenCVVideo, "write", write)
    monkeypatch.setattr(writers._OpenCVVideo, "release", release)
    out, stats = tmp_path / "full" / "o.mp4", tmp_path / "other" / "s.json"
    rc, err = _run(capsys, "--source", "demo:frames=10,size=64x48", *BICUBIC, "--encoder", "mp4v",
                   "--output", out, "--stats-json", stats)
    assert rc == 2
    assert "p99" in err and "the writer failed" in err  # the summary
    last = err.rstrip().splitlines()[-1]
    assert last.startswith(f"error: writing --output {out} failed: No space left on device"), err
    assert "was removed" in last and err.count("error:") == 1
    assert not out.exists()
    s = json.loads(stats.read_text())
    assert s["end_reason"] == "the writer failed" and s["frames"] >= 3


def test_full_disk_while_writing_png_frames_is_not_silent(tmp_path, capsys, no_detector, monkeypatch):
    """cv2.imwrite only returned False on a full disk: frames were lost silently, exit 0."""
    real_open = open

    def full_open(path, mode="r", *a, **k):
        if "w" in mode and str(path).endswith("000002.png"):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_open(path, mode, *a, **k)

    monkeypatch.setattr(writers, "open", full_open, raising=False)
    out = tmp_path / "frames"
    rc, err = _run(capsys, "--source", "demo:frames=6,size=64x48", *BICUBIC, "--output", out)
    assert rc == 2
    assert "No space left on device" in err.rstrip().splitlines()[-1] and "p99" in err
    assert sorted(p.name for p in out.iterdir()) == ["000000.png", "000001.png"]


# ------------------------------------------------------------------------------------------------
# 6. smaller loop items


def test_source_with_no_readable_frame_warns(tmp_path, capsys, no_detector):
    folder = tmp_path / "broken"
    folder.mkdir()
    for i in range(3):
        (folder / f"{i}.png").write_bytes(b"not a png")
    rc, err = _run(capsys, "--source", folder, *BICUBIC, "--output", "none")
    assert rc == 0
    assert "warning: no frame was processed" in err and "3 unreadable" in err


@pytest.mark.parametrize("flag,value,match", [
    ("--threads", 0, "--threads must be >= 1"),
    ("--feather", -5, "--feather must be a number >= 0"),
    ("--feather", "nan", "--feather must be a number >= 0"),
    ("--max-faces", 0, "--max-faces must be >= 1"),
    ("--downscale", 0, "--downscale must be in"),
])
def test_loop_refuses_nonsense_numbers(tmp_path, capsys, no_detector, flag, value, match):
    rc, err = _run(capsys, "--source", "demo:frames=2,size=64x48", *BICUBIC, "--output", "none", flag, value)
    assert rc == 2 and match in _one_error_line(err)


def test_scale_8_with_an_x4_artifact_is_refused(capsys, no_detector):
    """`--scale 8 --artifact <an x4 export>` silently ran x4."""
    art = ROOT / "pkdn_edge" / "weights" / "onnx_fp32_x4"
    rc, err = _run(capsys, "--source", "demo:frames=2,size=64x48", "--headless", "--output", "none",
                   "--scale", 8, "--artifact", art)
    assert rc == 2 and "is a x4 model" in _one_error_line(err)


# ------------------------------------------------------------------------------------------------
# 2. pkdn-prepare recovers from any stop and never reads its own crops


class TemplateFace:
    """A detector that finds one face at the 128-px template position of any image; ``on_call``
    (call number -> action) runs before a detection (a stop arriving mid-run)."""

    def __init__(self, *a, on_call=None, **k):
        self.calls, self.on_call = 0, on_call or {}

    def detect(self, img):
        from pkdn_edge.face.align import TEMPLATE_128
        from pkdn_edge.face.detector import Face

        self.calls += 1
        if self.calls in self.on_call:
            self.on_call[self.calls]()
        return [Face(np.array([20, 20, 108, 108], np.float32), 0.99, TEMPLATE_128.astype(np.float32))]


def _photos(folder: Path, n: int = 5) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        cv2.imwrite(str(folder / f"p{i}.png"), np.full((128, 128, 3), 40 + 10 * i, np.uint8))
    return folder


def _listed(out: Path) -> list:
    import csv

    with open(out / "MANIFEST.csv", newline="") as f:
        return sorted(r["file"] for r in csv.DictReader(f))


def _prepare_cli(capsys, monkeypatch, *argv, detector=None):
    from pkdn_edge.face import detector as det_mod
    from pkdn_edge.face.prepare import main

    monkeypatch.setattr(det_mod, "RetinaFaceDetector", detector or TemplateFace)
    rc = main([str(a) for a in argv])
    cap = capsys.readouterr()
    return rc, cap.err + cap.out  # warnings on stderr, the summary on stdout


def test_prepare_sigterm_is_an_interrupt_and_the_run_can_be_redone(tmp_path, capsys, monkeypatch):
    """SIGTERM after a while: exit 143, no "interrupted", crops without a MANIFEST.csv, and even
    --overwrite refused the folder. Now: "interrupted", 130, a manifest of the crops written."""

    def outside(signum, frame):  # a SIGTERM prepare's own handler did not take fails the test, not pytest
        raise AssertionError("SIGTERM arrived outside pkdn-prepare's handler")

    def sigterm():  # what the interpreter does on a real SIGTERM: call the installed Python handler
        signal.getsignal(signal.SIGTERM)(signal.SIGTERM, None)

    src, out = _photos(tmp_path / "in"), tmp_path / "out"
    previous = signal.signal(signal.SIGTERM, outside)
    try:
        rc, err = _prepare_cli(capsys, monkeypatch, src, out, "--quiet",
                               detector=lambda *a, **k: TemplateFace(on_call={3: sigterm}))
        assert signal.getsignal(signal.SIGTERM) is outside  # restored after the run
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert rc == 130 and "interrupted" in err.strip().splitlines(), err
    assert _listed(out) == ["p0_0.png", "p1_0.png"]
    rc, err = _prepare_cli(capsys, monkeypatch, src, out, "--quiet", "--overwrite")
    assert rc == 0, err
    assert _listed(out) == [f"p{i}_0.png" for i in range(5)]


def test_prepare_killed_hard_leaves_a_manifest_that_overwrite_can_redo(tmp_path, capsys, monkeypatch):
    """SIGKILL (no finally block runs) mid-run: the appended MANIFEST.csv lists every crop written."""
    import subprocess
    import sys
    import textwrap

    src, out = _photos(tmp_path / "in"), tmp_path / "out"
    script = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from pathlib import Path
        from test_reliability_round2 import TemplateFace
        from pkdn_edge.face.prepare import prepare
        kill = lambda: os.kill(os.getpid(), signal.SIGKILL)
        prepare(Path({str(src)!r}), Path({str(out)!r}), detector=TemplateFace(on_call={{4: kill}}), quiet=True)
    """)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.returncode == -signal.SIGKILL, r.stderr
    assert sorted(p.name for p in out.glob("*.png")) == ["p0_0.png", "p1_0.png", "p2_0.png"]
    assert _listed(out) == ["p0_0.png", "p1_0.png", "p2_0.png"]
    rc, err = _prepare_cli(capsys, monkeypatch, src, out, "--quiet")
    assert rc == 2 and "--overwrite" in _one_error_line(err) and "did not write" not in err
    rc, err = _prepare_cli(capsys, monkeypatch, src, out, "--quiet", "--overwrite")
    assert rc == 0, err
    assert _listed(out) == [f"p{i}_0.png" for i in range(5)]


def test_prepare_on_a_full_disk_can_be_redone_with_overwrite(tmp_path, capsys, monkeypatch):
    """A full disk during prepare left crops and no MANIFEST.csv (the final write failed too)."""
    from pkdn_edge import imageio
    from pkdn_edge.face import prepare as prep

    src, out = _photos(tmp_path / "in"), tmp_path / "out"
    real = imageio.write_image
    n = {"crops": 0}

    def write_image(path, img, *a, **k):
        n["crops"] += 1
        if n["crops"] > 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, img, *a, **k)

    def no_space(path, data, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(imageio, "write_image", write_image)
    monkeypatch.setattr(prep, "atomic_write_bytes", no_space)
    rc, err = _prepare_cli(capsys, monkeypatch, src, out, "--quiet")
    assert rc == 2 and "No space left on device" in _one_error_line(err)
    monkeypatch.undo()
    rc, err = _prepare_cli(capsys, monkeypatch, src, out, "--quiet", "--overwrite")
    assert rc == 0, err
    assert _listed(out) == [f"p{i}_0.png" for i in range(5)]


def test_prepare_never_reads_its_own_output_folder(tmp_path, capsys, monkeypatch):
    """`pkdn-prepare out/p out/p/crops --recursive` run twice cropped its own crops."""
    src = _photos(tmp_path / "p", n=2)
    out = src / "crops"
    for extra in ([], ["--overwrite"]):
        rc, err = _prepare_cli(capsys, monkeypatch, src, out, "--recursive", *extra)
        assert rc == 0, err
        assert _listed(out) == ["p0_0.png", "p1_0.png"]
        assert "2 images read" in err and "nothing skipped" in err and "warning" not in err


@pytest.mark.parametrize("flag,value", [("--size", 100000), ("--det-side", 10**6), ("--threads", 0)])
def test_prepare_size_limits_come_before_any_allocation(tmp_path, capsys, monkeypatch, flag, value):
    """`pkdn-prepare --size 100000` tried a 30 GB allocation."""
    src = _photos(tmp_path / "in", n=1)
    rc, err = _prepare_cli(capsys, monkeypatch, src, tmp_path / "out", flag, value)
    assert rc == 2 and flag in _one_error_line(err)
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------------------
# 3. one typed manifest loader


SHIPPED_X4 = ROOT / "pkdn_edge" / "weights" / "onnx_fp32_x4"


def _artifact(tmp_path: Path, name: str = "art", **changes) -> Path:
    """A copy of the shipped x4 ONNX artifact with manifest fields changed (``None`` removes one)."""
    import shutil

    art = tmp_path / name
    shutil.copytree(SHIPPED_X4, art)
    d = json.loads((art / "manifest.json").read_text())
    for k, v in changes.items():
        if v is None:
            d.pop(k, None)
        else:
            d[k] = v
    (art / "manifest.json").write_text(json.dumps(d))
    return art


NORM = {"mean": [0.0] * 3, "std": [1.0] * 3, "range": [0.0, 1.0]}


@pytest.mark.parametrize("changes,match", [
    ({"files": ["model.onnx"]}, "files .*mapping"),
    ({"format_version": "abc"}, "format_version .*int"),
    ({"format_version": 0}, "format_version .*int >= 1"),
    ({"input_shape": ["batch", 3, "32", "32"]}, "input_shape .*h and w must be ints"),
    ({"input_shape": ["batch", 3, 100000, 100000], "output_shape": ["batch", 3, 400000, 400000]},
     "input_shape .*h and w must be ints in \\[1, 512\\]"),
    ({"input_shape": [10 ** 9, 3, 32, 32], "output_shape": [10 ** 9, 3, 128, 128], "dynamic": False, "batch": None},
     "input_shape .*N must be an int"),
    ({"scale": "4"}, "scale .*int"),
    ({"normalization": {**NORM, "std": [0, 0, 0]}}, "normalization.std .*nonzero"),
    ({"normalization": {**NORM, "range": [1, 0]}}, "normalization.range .*lo < hi"),
    ({"normalization": {**NORM, "mean": [0, 0]}}, "normalization.mean .*3 finite numbers"),
    ({"normalization": [0, 1]}, "normalization .*mapping"),
    ({"dynamic": "yes"}, "dynamic .*true or false"),
    ({"tools": "torch"}, "tools .*mapping"),
    ({"model_file": 5}, "model_file .*string"),
])
def test_manifest_fields_are_checked_with_one_line(tmp_path, changes, match):
    """A hand-edited manifest was a traceback (files as a list, format_version "abc", string dims), a
    224 GiB allocation (a 100000^2 input) or a black/white square pasted over the face (std 0, range [1,0])."""
    from pkdn_edge.manifest import read_manifest

    art = _artifact(tmp_path, **changes)
    with pytest.raises(PKDNError, match=match) as e:
        read_manifest(art)
    assert "\n" not in str(e.value) and "re-export" in str(e.value)


@pytest.mark.parametrize("raw,edited,match", [
    ('"format_version": 1', '"format_version": 1e400', "format_version .*int"),
    ('"std": [1.0, 1.0, 1.0]', '"std": [NaN, 1.0, 1.0]', "normalization.std .*finite"),
])
def test_manifest_non_finite_numbers_are_refused(tmp_path, raw, edited, match):
    """`format_version: 1e400` (inf in JSON) was a traceback; a NaN std pasted garbage."""
    from pkdn_edge.manifest import read_manifest

    art = _artifact(tmp_path)
    p = art / "manifest.json"
    text = json.dumps(json.loads(p.read_text()))  # one line, the shipped spacing
    assert raw in text
    p.write_text(text.replace(raw, edited, 1))
    with pytest.raises(PKDNError, match=match):
        read_manifest(art)


def test_manifest_must_list_every_file_the_runtime_loads(tmp_path):
    """An OpenVINO model.bin not in `files` (e.g. symlinked out of the folder) still loaded."""
    from pkdn_edge.manifest import read_manifest, sha256_file

    art = tmp_path / "ov"
    art.mkdir()
    (art / "model.xml").write_text("<net/>")
    (tmp_path / "elsewhere.bin").write_bytes(b"weights from somewhere")
    (art / "model.bin").symlink_to(tmp_path / "elsewhere.bin")
    d = json.loads((SHIPPED_X4 / "manifest.json").read_text())
    d.update(target="openvino", model_file="model.xml", files={"model.xml": sha256_file(art / "model.xml")})
    (art / "manifest.json").write_text(json.dumps(d))
    with pytest.raises(PKDNError, match="does not list model.bin"):
        read_manifest(art)
    d["files"]["model.bin"] = sha256_file(tmp_path / "elsewhere.bin")  # listed: the symlink is refused
    (art / "manifest.json").write_text(json.dumps(d))
    with pytest.raises(PKDNError, match="outside the artifact folder"):
        read_manifest(art)


def test_webcam_with_a_broken_manifest_is_one_error_line(tmp_path, capsys, no_detector):
    art = _artifact(tmp_path, normalization={**NORM, "std": [0, 0, 0]})
    rc, err = _run(capsys, "--source", "demo:frames=2,size=64x48", "--headless", "--output", "none",
                   "--backend", "onnxruntime", "--artifact", art)
    assert rc == 2 and "normalization.std" in _one_error_line(err)


def test_x8_shapes_on_an_x4_model_fail_before_the_first_frame(tmp_path, capsys, no_detector):
    """A manifest claiming x8 (h/2 x w/2 -> the same output) on the x4 model failed with a traceback at the
    first face."""
    n, c, h, w = json.loads((SHIPPED_X4 / "manifest.json").read_text())["input_shape"]
    art = _artifact(tmp_path, scale=8, input_shape=[n, c, h // 2, w // 2])
    rc, err = _run(capsys, "--source", "demo:frames=2,size=64x48", "--headless", "--output", "none",
                   "--backend", "onnxruntime", "--scale", 8, "--artifact", art)
    assert rc == 2
    line = _one_error_line(err)
    assert "manifest" in line and "re-export" in line


@pytest.mark.skipif(__import__("importlib").util.find_spec("torch") is None, reason="torch is not installed")
def test_eval_applies_the_manifest_normalization_as_the_loop_does(tmp_path):
    """`pkdn-train eval` fed [0,1] pixels to an artifact whose manifest says mean 0.5 / std 0.5 (the
    loop normalizes): the same artifact scored +3.43 dB in eval and pasted something else in the loop."""
    import torch

    from pkdn_edge.engines import load_engine
    from pkdn_edge.manifest import read_manifest, write_manifest
    from pkdn_edge.train.data import to_uint8
    from pkdn_edge.train.evaluate import ArtifactModel

    art = _artifact(tmp_path)
    m = read_manifest(art)
    m.normalization = {"mean": [0.5] * 3, "std": [0.5] * 3, "range": [0.0, 1.0]}
    write_manifest(m, rehash=False)
    faces = np.random.default_rng(0).integers(0, 256, (4, *m.lr_size, 3), dtype=np.uint8)  # BGR, as the loop has them
    loop = load_engine(art, backend="onnxruntime", threads=1).run(faces)[..., ::-1]  # -> RGB
    lr = torch.from_numpy(np.ascontiguousarray(faces[..., ::-1].transpose(0, 3, 1, 2))).float() / 255
    evald = to_uint8(ArtifactModel(art, threads=1)(lr))
    assert np.abs(evald.astype(int) - loop.astype(int)).max() <= 1


# ------------------------------------------------------------------------------------------------
# 5. size limits before allocating; an interrupted ONNX export leaves nothing

needs_torch = pytest.mark.skipif(__import__("importlib").util.find_spec("torch") is None,
                                 reason="torch is not installed (pkdn-edge[train])")
TINY = {"widths": (8, 12), "depth": 1, "bottleneck_depth": 1, "refine_width": 8}


def _tiny_weights(path: Path) -> Path:
    import torch

    from pkdn_edge.models import create_model
    from pkdn_edge.models.checkpoint import export_weights

    torch.manual_seed(0)
    export_weights(create_model("edge", 4, **TINY), path)
    return path


def _export(capsys, *argv):
    from pkdn_edge.export.cli import main

    rc = main([str(a) for a in argv])
    cap = capsys.readouterr()
    return rc, cap.err


@needs_torch
@pytest.mark.parametrize("flag,value,match", [("--batch", 100000, "--batch must be in \\[1, 1024\\]"),
                                              ("--opset", 99, "--opset must be in \\[13, 20\\]")])
def test_export_limits_are_checked_before_anything_is_loaded(tmp_path, capsys, flag, value, match):
    """`pkdn-export --batch 100000` ignored Ctrl-C for 10 s while tracing; `--opset 99` was a traceback."""
    import re

    out = tmp_path / "art"
    rc, err = _export(capsys, "--target", "onnx", "--no-verify", "--weights", tmp_path / "missing.pt", "--out", out,
                      flag, value)
    assert rc == 2 and re.search(match, _one_error_line(err)), err  # before the (missing) weights are read
    assert not out.exists() and not list(tmp_path.glob(".art.tmp-*"))


@needs_torch
def test_interrupted_onnx_export_leaves_no_work_folder_even_on_a_second_ctrl_c(tmp_path, capsys, monkeypatch):
    """Ctrl-C during the ONNX export, and again while the work folder was being removed: the hidden
    `.tmp` folder stayed behind."""
    import shutil

    from pkdn_edge.export.targets import onnx as onnx_target

    weights = _tiny_weights(tmp_path / "w.pt")
    real_rmtree = shutil.rmtree
    second = {"armed": True}

    def export(ctx):
        raise KeyboardInterrupt  # Ctrl-C while tracing

    def rmtree(path, *a, **k):
        if second["armed"] and ".tmp-" in str(path):
            second["armed"] = False
            raise KeyboardInterrupt  # Ctrl-C again, during the cleanup
        return real_rmtree(path, *a, **k)

    monkeypatch.setattr(onnx_target, "export", export)
    monkeypatch.setattr(shutil, "rmtree", rmtree)
    rc, err = _export(capsys, "--target", "onnx", "--no-verify", "--weights", weights, "--out", tmp_path / "art")
    assert rc == 130 and "interrupted" in err
    assert not second["armed"]
    assert not list(tmp_path.glob(".art.tmp-*")) and not (tmp_path / "art").exists()


# ------------------------------------------------------------------------------------------------
# 6. one line for corrupt checkpoints and OpenVINO load errors


@needs_torch
def test_pickled_or_corrupt_checkpoint_is_one_short_line(tmp_path, capsys):
    """A corrupt .pt printed 6 lines, among them torch's hint to load it with weights_only=False."""
    import torch

    class Code:
        def __reduce__(self):
            return (os.getcwd, ())

    torch.save({"model": Code(), "config": {}}, tmp_path / "code.pt")
    (tmp_path / "broken.pt").write_bytes(b"PK\x03\x04" + b"\0" * 64)
    for name, why in (("code.pt", "Python objects (posix.getcwd)"), ("broken.pt", "zip archive")):
        rc, err = _export(capsys, "--target", "onnx", "--no-verify", "--weights", tmp_path / name,
                          "--out", tmp_path / "art")
        line = _one_error_line(err)
        assert rc == 2 and why in line and "weights_only" not in line, err


@pytest.mark.skipif(__import__("importlib").util.find_spec("openvino") is None, reason="openvino is not installed")
def test_openvino_load_error_keeps_its_reason(tmp_path):
    """OpenVINO's message starts with `Exception from src/...cpp:84:`: that was all the error line said."""
    from pkdn_edge.engines import load_engine
    from pkdn_edge.manifest import sha256_file

    art = tmp_path / "ov"
    art.mkdir()
    (art / "model.xml").write_text("<net")
    (art / "model.bin").write_bytes(b"\0" * 16)
    d = json.loads((SHIPPED_X4 / "manifest.json").read_text())
    d.update(target="openvino", model_file="model.xml",
             files={n: sha256_file(art / n) for n in ("model.xml", "model.bin")})
    (art / "manifest.json").write_text(json.dumps(d))
    with pytest.raises(PKDNError) as e:
        load_engine(art, backend="openvino", threads=1)
    msg = str(e.value)
    assert "Unable to read the model" in msg and "\n" not in msg and not msg.rstrip().endswith(":")


@pytest.mark.parametrize("role", ["teacher", "student"])
def test_train_without_config_or_settings_is_refused(role, capsys, monkeypatch):
    """`pkdn-train teacher` with nothing else used to start a default run silently (minutes of landmark
    caching, no output); now it is one error line naming what to give, and nothing starts."""
    from pkdn_edge.train import cli as train_cli
    from pkdn_edge.train import loop

    monkeypatch.setattr(loop, "Trainer", lambda *a, **k: pytest.fail("a run started"))
    rc = train_cli.main([role])
    err = capsys.readouterr().err
    assert rc == 2 and "error:" in err and "--config" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_onnx_weights_in_external_files_are_refused(tmp_path, backend):
    """Every file a runtime reads is listed and hashed: an ONNX model whose weights sit in external data
    files beside it (read by the runtime, unlisted) is refused in one line instead of loading them."""
    onnx = pytest.importorskip("onnx")
    pytest.importorskip(backend)
    import hashlib
    import shutil

    from pkdn_edge.engines import load_engine

    src = Path(__file__).resolve().parent.parent / "pkdn_edge" / "weights" / "onnx_fp32_x8"
    art = tmp_path / "art"
    shutil.copytree(src, art)
    m = onnx.load(str(art / "model.onnx"))
    onnx.save_model(m, str(art / "model.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="weights.data", size_threshold=0)
    man = json.loads((art / "manifest.json").read_text())
    man["files"]["model.onnx"] = hashlib.sha256((art / "model.onnx").read_bytes()).hexdigest()
    (art / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(PKDNError, match="external data") as e:
        load_engine(art, backend=backend, threads=1)
    assert "\n" not in str(e.value)
    load_engine(src, backend=backend, threads=1)  # the shipped, self-contained model loads
