"""The reliability matrix of docs/reliability.md: one test per row (case | what happens | test).

Hostile and unlucky inputs a new user meets: re-exports over their files, telemetry, damaged
videos, read-only folders and full disks (simulated with OSError(EROFS/ENOSPC), so the tests also
mean something when run as root, where chmod does not block), config holes, stale output folders,
tampered manifests, interrupted writes and NNCF's extension build lock. Everything runs on tiny
random models, generated images and the built-in demo source: no ../shared, no GPU, no network.
"""

from __future__ import annotations

import errno
import importlib.util
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from pkdn_edge.errors import PKDNError, run_cli

ROOT = Path(__file__).resolve().parents[1]
HAS_TORCH = importlib.util.find_spec("torch") is not None
HAS_OPENVINO = importlib.util.find_spec("openvino") is not None
HAS_NNCF = importlib.util.find_spec("nncf") is not None
needs_torch = pytest.mark.skipif(not HAS_TORCH, reason="torch is not installed (pkdn-edge[train])")
needs_openvino = pytest.mark.skipif(not HAS_OPENVINO, reason="openvino is not installed (pkdn-edge[openvino])")
needs_nncf = pytest.mark.skipif(not HAS_NNCF, reason="nncf is not installed (pkdn-edge[export])")
TINY = {"widths": [8, 12], "depth": 1, "bottleneck_depth": 1, "refine_width": 8}

# A sitecustomize for subprocesses: DNS lookups and TCP/UDP connections are refused and recorded.
# Forked children (openvino_telemetry's sender) inherit the patched socket module.
NETGUARD = '''
import os, socket
_LOG = os.environ.get("PKDN_NETGUARD_LOG")
def _record(what):
    with open(_LOG, "a") as f:
        f.write(f"{os.getpid()} {what}\\n")
def _getaddrinfo(host, *a, **k):
    _record(f"getaddrinfo {host}")
    raise OSError("network use in a pkdn-edge test")
_connect = socket.socket.connect
def _guarded_connect(self, addr, *a, **k):
    if self.family in (socket.AF_INET, socket.AF_INET6):
        _record(f"connect {addr}")
        raise OSError("network use in a pkdn-edge test")
    return _connect(self, addr, *a, **k)
socket.getaddrinfo = _getaddrinfo
socket.socket.connect = _guarded_connect
'''


def _one_error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def _tiny_weights(path: Path, scale: int = 4) -> Path:
    import torch

    from pkdn_edge.models import create_model
    from pkdn_edge.models.checkpoint import export_weights

    torch.manual_seed(0)
    export_weights(create_model("edge", scale, **{k: tuple(v) if isinstance(v, list) else v for k, v in TINY.items()}),
                   path)
    return path


def _export_cli(args: list[str], capsys) -> tuple[int, str, str]:
    from pkdn_edge.export.cli import main

    rc = main(args)
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def _guarded_run(cmd: list[str], tmp_path: Path, timeout: float = 300, env: dict | None = None):
    guard = tmp_path / "netguard"
    guard.mkdir(exist_ok=True)
    (guard / "sitecustomize.py").write_text(NETGUARD)
    log = tmp_path / "network.log"
    e = dict(os.environ, PYTHONPATH=os.pathsep.join([str(guard), str(ROOT)]), PKDN_NETGUARD_LOG=str(log),
             **(env or {}))
    e.pop("CI", None)  # openvino_telemetry stays quiet on CI machines: test the user's situation
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=e, cwd=tmp_path)
    return r, (log.read_text() if log.exists() else "")


# ------------------------------------------------------------------------------------------------
# 1. re-export over an artifact folder


@needs_torch
def test_reexport_keeps_user_files_and_engines(tmp_path, capsys):
    w = _tiny_weights(tmp_path / "w.pt")
    out = tmp_path / "art"
    args = ["--target", "tensorrt", "--weights", str(w), "--out", str(out), "--verify-synthetic"]
    assert _export_cli(args, capsys)[0] == 0
    (out / "my_notes.txt").write_text("keep me")
    (out / "model_trt10.plan").write_bytes(b"ENGINE" + bytes(100))  # built and registered on the device
    from pkdn_edge.engines.tensorrt import register_engine
    from pkdn_edge.manifest import read_manifest

    register_engine(out, out / "model_trt10.plan", check=False)
    rc, stdout, err = _export_cli(args, capsys)  # same checkpoint, same ONNX
    assert rc == 0, err
    assert (out / "my_notes.txt").read_text() == "keep me"
    assert (out / "model_trt10.plan").read_bytes().startswith(b"ENGINE")
    assert read_manifest(out).engine_file == "model_trt10.plan"  # same ONNX: still registered
    assert "kept 1 file(s)" in stdout and "my_notes.txt" in stdout and "still registered" in stdout
    # a different model: the engine stays on disk but is no longer registered, and the summary says so
    w8 = _tiny_weights(tmp_path / "w2.pt")
    import torch

    ckpt = torch.load(w8, weights_only=True)
    ckpt["model"] = {k: v + 0.01 if v.is_floating_point() else v for k, v in ckpt["model"].items()}
    torch.save(ckpt, w8)
    rc, stdout, err = _export_cli(["--target", "tensorrt", "--weights", str(w8), "--out", str(out),
                                   "--verify-synthetic"], capsys)
    assert rc == 0, err
    assert (out / "model_trt10.plan").is_file() and (out / "my_notes.txt").is_file()
    assert read_manifest(out).engine_file is None
    assert "not registered" in stdout and "rebuild it" in stdout
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no work folders left


# ------------------------------------------------------------------------------------------------
# 2. telemetry off: no DNS lookup, no connection


@needs_openvino
def test_webcam_loop_with_openvino_touches_no_network(tmp_path):
    r, net = _guarded_run([sys.executable, "-m", "pkdn_edge.webcam", "--backend", "openvino", "--source", "demo",
                           "--frames", "4", "--headless", "--output", "none", "--threads", "1"], tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert net == "", f"network use during the webcam loop:\n{net}"


@needs_openvino
@needs_torch
def test_openvino_export_touches_no_network(tmp_path):
    w = _tiny_weights(tmp_path / "w.pt")
    r, net = _guarded_run([sys.executable, "-m", "pkdn_edge.export", "--target", "openvino", "--weights", str(w),
                           "--out", str(tmp_path / "ov"), "--verify-synthetic", "--threads", "1"], tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert net == "", f"network use during the export:\n{net}"


# ------------------------------------------------------------------------------------------------
# 3a. pkdn-prepare and damaged videos


class _NoFace:
    def detect(self, img):
        return []


class _DamagedCapture:
    """A video of 20 frames whose reads 6-8 fail (a damaged stretch), then decode again."""

    def __init__(self, path):
        self.i = 0

    def isOpened(self):
        return True

    def get(self, prop):
        return 20 if prop == cv2.CAP_PROP_FRAME_COUNT else 0

    def read(self):
        i, self.i = self.i, self.i + 1
        if i >= 20 or 6 <= i <= 8:
            return False, None
        return True, np.full((40, 40, 3), i, np.uint8)

    def grab(self):
        return self.read()[0]

    def release(self):
        pass


def test_prepare_reports_damaged_video_frames(tmp_path, monkeypatch, capsys):
    from pkdn_edge.face import prepare as prep

    monkeypatch.setattr(cv2, "VideoCapture", _DamagedCapture)
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"not used: the capture is faked")
    lines = []
    stats = prep.prepare(video, tmp_path / "out", detector=_NoFace(), quiet=True, log=lines.append)
    assert stats.read == 17 and stats.frames_failed == 3  # not "5 frames, nothing skipped"
    assert "3 undecodable frames" in stats.summary(tmp_path / "out")
    assert any("could not be decoded" in ln for ln in lines)
    monkeypatch.setattr(prep, "prepare", lambda *a, **k: stats)
    assert prep.main([str(video), str(tmp_path / "out2")]) == 1  # finished, but frames were lost


# ------------------------------------------------------------------------------------------------
# 5. OS errors: one error line, exit 2


def test_run_cli_turns_os_errors_into_one_line(capsys):
    def full_disk():
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "out/last.pt")

    assert run_cli(full_disk) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "out/last.pt" in line and "No space left" in line and "disk is full" in line


@needs_torch
def test_eval_out_on_a_read_only_folder_is_one_error_line(tmp_path, monkeypatch, capsys):
    from pkdn_edge.train.cli import main

    w = _tiny_weights(tmp_path / "w.pt")
    faces = tmp_path / "faces"
    faces.mkdir()
    for i in range(2):
        cv2.imwrite(str(faces / f"f{i}.png"), np.full((128, 128, 3), 60 + i, np.uint8))
    out = tmp_path / "ro"
    real_mkdir = Path.mkdir

    def read_only(self, *a, **k):
        if self == out or out in self.parents:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))
        return real_mkdir(self, *a, **k)

    monkeypatch.setattr(Path, "mkdir", read_only)
    rc = main(["eval", "--weights", str(w), "--faces", str(faces), "--out", str(out), "--threads", "1"])
    line = _one_error_line(capsys.readouterr().err)
    assert rc == 2 and "Read-only file system" in line and str(out) in line


@needs_torch
def test_training_out_on_a_read_only_folder_is_one_error_line(tmp_path, monkeypatch, capsys):
    from pkdn_edge.train.cli import main

    faces = tmp_path / "faces"
    faces.mkdir()
    for i in range(12):
        cv2.imwrite(str(faces / f"f{i}.png"), np.full((32, 32, 3), 10 * i, np.uint8))
    out = tmp_path / "run"
    real_mkdir = Path.mkdir

    def read_only(self, *a, **k):
        if self == out:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))
        return real_mkdir(self, *a, **k)

    monkeypatch.setattr(Path, "mkdir", read_only)
    monkeypatch.setattr(signal, "signal", lambda *a: None)  # the CLI's SIGTERM handler: not in pytest
    rc = main(["student", "--no-progress", "--set", f"data={faces}", f"out={out}", "hr_size=32", "num_val=4",
               "steps=2", "batch_size=2", "threads=1", "device=cpu", f"cache_dir={tmp_path / 'cache'}",
               "model={widths: [8, 12], depth: 1, bottleneck_depth: 1, refine_width: 8}"])
    line = _one_error_line(capsys.readouterr().err)
    assert rc == 2 and "Read-only file system" in line


@needs_torch
def test_export_on_a_full_disk_is_one_error_line_and_leaves_nothing(tmp_path, monkeypatch, capsys):
    from pkdn_edge.export import exporter

    w = _tiny_weights(tmp_path / "w.pt")

    def full_disk(*a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "manifest.json")

    monkeypatch.setattr(exporter, "write_manifest", full_disk)
    before = set(tmp_path.iterdir())
    rc, _, err = _export_cli(["--target", "onnx", "--weights", str(w), "--out", str(tmp_path / "art"),
                              "--verify-synthetic"], capsys)
    assert rc == 2
    line = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(line) == 1 and "No space left on device" in line[0] and "disk is full" in line[0]
    assert "Traceback" not in err
    assert set(tmp_path.iterdir()) == before  # no artifact, no hidden work folder


@needs_torch
def test_checkpoint_save_on_a_full_disk_is_one_error_line_and_keeps_the_old_file(tmp_path, monkeypatch, capsys):
    from pkdn_edge import atomic
    from pkdn_edge.models.checkpoint import save_atomic

    path = tmp_path / "last.pt"
    save_atomic({"step": 1}, path)
    old = path.read_bytes()
    real_fdopen = os.fdopen

    class FullDisk:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, data):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        def __getattr__(self, name):
            return getattr(self.f, name)

    monkeypatch.setattr(atomic.os, "fdopen", lambda *a, **k: FullDisk(real_fdopen(*a, **k)))
    assert run_cli(lambda: save_atomic({"step": 2}, path)) == 2
    assert "No space left on device" in _one_error_line(capsys.readouterr().err)
    assert path.read_bytes() == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # no temp file left


# ------------------------------------------------------------------------------------------------
# 6. config holes: caught when the config is read, one line


@needs_torch
@pytest.mark.parametrize("override,match", [
    ("ckpt_every=0", "ckpt_every must be >= 1"),
    ("val_every=0", "val_every must be >= 1"),
    ("lr=0", "lr must be > 0"),
    ("lr=-1e-4", "lr must be > 0"),
    ("model={widhts: [8, 12]}", r"unknown model: keys \['widhts'\]"),
    ("model={widths: []}", "do not make a network"),
])
def test_config_holes_are_caught_up_front(override, match):
    from pkdn_edge.train.config import load_config

    with pytest.raises(PKDNError, match=match):
        load_config(None, [override])


@needs_torch
def test_set_teacher_empty_means_no_distillation():
    from pkdn_edge.train.config import load_config

    cfg = load_config(ROOT / "train" / "configs" / "edge_x8_student.yaml", ["teacher="])
    assert cfg.teacher == ""


# ------------------------------------------------------------------------------------------------
# 7. re-running into an output folder; non-aligned faces


class _TemplateFace:
    """A detector that finds one face at the 128-px template position of any image."""

    def detect(self, img):
        from pkdn_edge.face.align import TEMPLATE_128
        from pkdn_edge.face.detector import Face

        return [Face(np.array([20, 20, 108, 108], np.float32), 0.99, TEMPLATE_128.astype(np.float32))]


def test_prepare_never_mixes_old_and_new_crops(tmp_path, capsys):
    from pkdn_edge.face.prepare import prepare

    src = tmp_path / "in"
    src.mkdir()
    for name in ("a", "b"):
        cv2.imwrite(str(src / f"{name}.png"), np.full((128, 128, 3), 90, np.uint8))
    out = tmp_path / "out"
    assert prepare(src, out, detector=_TemplateFace(), quiet=True).written == 2
    (src / "a.png").unlink()
    with pytest.raises(PKDNError, match="already holds 2 crops.*--overwrite"):
        prepare(src, out, detector=_TemplateFace(), quiet=True)
    (out / "notes.txt").write_text("kept")
    stats = prepare(src, out, detector=_TemplateFace(), quiet=True, overwrite=True, log=lambda s: None)
    assert stats.written == 1
    assert sorted(p.name for p in out.iterdir()) == ["MANIFEST.csv", "b_0.png", "notes.txt"]  # a_0.png is gone
    cv2.imwrite(str(out / "mine.jpg"), np.zeros((64, 64, 3), np.uint8))  # an image pkdn-prepare did not write
    with pytest.raises(PKDNError, match="did not write"):
        prepare(src, out, detector=_TemplateFace(), quiet=True, overwrite=True)
    assert (out / "mine.jpg").is_file()


@needs_torch
def test_eval_and_calibration_refuse_non_aligned_images(tmp_path, capsys):
    from pkdn_edge.export.data import read_faces
    from pkdn_edge.train.data import FaceData

    faces = tmp_path / "faces"
    faces.mkdir()
    cv2.imwrite(str(faces / "face.png"), np.full((128, 128, 3), 80, np.uint8))
    cv2.imwrite(str(faces / "photo.jpg"), np.full((120, 160, 3), 80, np.uint8))  # a photo, not an aligned crop
    with pytest.raises(PKDNError, match=r"not square aligned face crops.*photo\.jpg \(160x120\).*pkdn-prepare"):
        FaceData.load(faces, recursive=False)
    with pytest.raises(PKDNError, match=r"not square aligned face crops.*photo\.jpg.*pkdn-prepare"):
        read_faces(sorted(faces.iterdir()))
    (faces / "photo.jpg").unlink()
    cv2.imwrite(str(faces / "big.png"), np.full((256, 256, 3), 80, np.uint8))
    capsys.readouterr()
    assert FaceData.load(faces, recursive=False).hr.shape == (2, 128, 128, 3)
    assert "1 of 2 faces" in capsys.readouterr().err  # resizing is said, once
    assert read_faces(sorted(faces.iterdir())).shape == (2, 128, 128, 3)


# ------------------------------------------------------------------------------------------------
# 8. manifests name files inside their folder only


def _manifest_dict(**kw) -> dict:
    d = {"target": "onnx", "precision": "fp32", "scale": 4, "model_file": "model.onnx", "files": {},
         "input_shape": [1, 3, 32, 32], "output_shape": [1, 3, 128, 128]}
    d.update(kw)
    return d


@pytest.mark.parametrize("name", ["../outside.onnx", "/etc/passwd", "sub/../../outside.onnx", "C:\\x.onnx"])
def test_manifest_pointing_outside_its_folder_is_refused(tmp_path, name):
    from pkdn_edge.manifest import read_manifest, sha256_file

    art = tmp_path / "art"
    art.mkdir()
    (tmp_path / "outside.onnx").write_bytes(b"not yours")
    digest = sha256_file(tmp_path / "outside.onnx")
    (art / "manifest.json").write_text(json.dumps(_manifest_dict(model_file=name, files={name: digest})))
    with pytest.raises(PKDNError, match="outside the artifact folder"):
        read_manifest(art)


def test_manifest_file_symlinked_outside_its_folder_is_refused(tmp_path):
    from pkdn_edge.manifest import read_manifest, sha256_file

    art = tmp_path / "art"
    art.mkdir()
    (tmp_path / "outside.onnx").write_bytes(b"not yours")
    try:
        (art / "model.onnx").symlink_to(tmp_path / "outside.onnx")
    except OSError:
        pytest.skip("no symlinks here")
    files = {"model.onnx": sha256_file(tmp_path / "outside.onnx")}
    (art / "manifest.json").write_text(json.dumps(_manifest_dict(files=files)))
    with pytest.raises(PKDNError, match="outside the artifact folder"):
        read_manifest(art)


# ------------------------------------------------------------------------------------------------
# 9. interrupted writes


@needs_torch
def test_checkpoint_save_removes_stale_temp_files(tmp_path):
    from pkdn_edge.models.checkpoint import save_atomic

    dead = 2 ** 22 + 12345  # above the default pid_max: never a live process
    (tmp_path / f".last.pt.{dead}.abcd.tmp").write_bytes(b"killed mid-save")
    legacy = tmp_path / "last.pt.x1y2z3.tmp"  # the name earlier versions used
    legacy.write_bytes(b"killed mid-save")
    os.utime(legacy, (time.time() - 3600, time.time() - 3600))
    (tmp_path / "other.pt.x.tmp").write_bytes(b"not ours")
    save_atomic({"step": 1}, tmp_path / "last.pt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt", "other.pt.x.tmp"]


def test_atomic_write_fsyncs_before_the_rename(tmp_path, monkeypatch):
    from pkdn_edge import atomic

    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(atomic.os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(atomic.os, "replace", lambda a, b: (events.append("replace"), real_replace(a, b))[1])
    atomic.atomic_write_bytes(tmp_path / "x.bin", b"data")
    assert events[:2] == ["fsync", "replace"] and (tmp_path / "x.bin").read_bytes() == b"data"


@needs_torch
def test_checkpoints_and_crops_get_the_usual_file_mode(tmp_path):
    from pkdn_edge.atomic import file_mode
    from pkdn_edge.imageio import write_image
    from pkdn_edge.models.checkpoint import save_atomic

    want = file_mode()
    if want & 0o044 == 0:
        pytest.skip(f"umask {0o777 & ~want | 0o111:o} makes private files anyway")
    save_atomic({"step": 1}, tmp_path / "last.pt")
    write_image(tmp_path / "crop.png", np.zeros((8, 8, 3), np.uint8))
    assert (tmp_path / "last.pt").stat().st_mode & 0o777 == want  # e.g. 0644, not mkstemp's 0600
    assert (tmp_path / "crop.png").stat().st_mode & 0o777 == want


@needs_torch
def test_sigterm_during_export_leaves_no_work_folder(tmp_path):
    w = _tiny_weights(tmp_path / "w.pt")
    ready = tmp_path / "ready"
    script = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from pkdn_edge.export.targets import onnx as onnx_target
        def slow_export(ctx):
            (ctx.workdir / "model.onnx").write_bytes(b"half")
            Path({str(ready)!r}).write_text("x")
            time.sleep(120)
        onnx_target.export = slow_export
        from pkdn_edge.export.cli import main
        sys.exit(main(["--target", "onnx", "--weights", {str(w)!r}, "--out", {str(tmp_path / "art")!r},
                       "--verify-synthetic"]))
    """)
    p = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(1200):
            if ready.exists() or p.poll() is not None:
                break
            time.sleep(0.1)
        assert ready.exists(), p.communicate()[1][-2000:]
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 130, err[-2000:]
    assert "interrupted" in err
    assert sorted(x.name for x in tmp_path.iterdir()) == ["ready", "w.pt"]  # no .art.tmp-* folder


@needs_torch
def test_work_folders_of_a_killed_export_are_removed_by_the_next(tmp_path, capsys):
    w = _tiny_weights(tmp_path / "w.pt")
    dead = 2 ** 22 + 12345
    (tmp_path / f".art.tmp-{dead}-k1ll3d").mkdir()
    (tmp_path / f".art.tmp-{dead}-k1ll3d" / "model.onnx").write_bytes(b"half")
    legacy = tmp_path / ".art.tmp-ab12cd34"  # killed before pids were in the name: removed once 6 h old
    legacy.mkdir()
    os.utime(legacy, (time.time() - 7 * 3600, time.time() - 7 * 3600))
    rc, _, err = _export_cli(["--target", "onnx", "--weights", str(w), "--out", str(tmp_path / "art"),
                              "--verify-synthetic"], capsys)
    assert rc == 0, err
    assert "interrupted export" in err
    assert sorted(x.name for x in tmp_path.iterdir()) == ["art", "w.pt"]


@needs_torch
def test_long_export_steps_print_progress_lines():
    from pkdn_edge.export.exporter import Heartbeat

    lines, seen = [], threading.Event()

    def log(s):
        lines.append(s)
        if "still" in s:
            seen.set()

    with Heartbeat(log, every=0.05) as hb:
        hb("int8: NNCF PTQ on PyTorch ...")
        assert seen.wait(30), lines
    assert any(ln.startswith("  ... still int8: NNCF PTQ on PyTorch") for ln in lines)


def _fake_tensorrt_module(accept: bytes):
    import importlib.machinery
    import types

    trt = types.ModuleType("tensorrt")
    trt.__spec__ = importlib.machinery.ModuleSpec("tensorrt", None)
    trt.__version__ = "10.3.0"

    class Logger:
        WARNING = 2

        def __init__(self, severity):
            pass

    class Engine:
        num_io_tensors = 2

        def get_tensor_name(self, i):
            return ["lr", "sr"][i]

    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, data):
            return Engine() if bytes(data).startswith(accept) else None

    trt.Logger, trt.Runtime = Logger, Runtime
    return trt


def test_tensorrt_register_refuses_random_bytes(tmp_path, monkeypatch, capsys):
    from pkdn_edge.engines.tensorrt import main
    from pkdn_edge.manifest import read_manifest, sha256_file

    (tmp_path / "model.onnx").write_bytes(b"onnx")
    d = _manifest_dict(target="tensorrt", files={"model.onnx": sha256_file(tmp_path / "model.onnx")})
    (tmp_path / "manifest.json").write_text(json.dumps(d))
    junk = tmp_path / "junk.plan"
    junk.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # no TensorRT here: nothing can vouch for the bytes
    assert main(["register", str(tmp_path), str(junk)]) == 2
    assert "--no-check" in _one_error_line(capsys.readouterr().err)
    monkeypatch.setitem(sys.modules, "tensorrt", _fake_tensorrt_module(accept=b"ENGINE"))
    assert main(["register", str(tmp_path), str(junk)]) == 2
    assert "is not a TensorRT engine" in _one_error_line(capsys.readouterr().err)
    assert read_manifest(tmp_path).engine_file is None
    good = tmp_path / "model_trt10.plan"
    good.write_bytes(b"ENGINE" + bytes(100))
    assert main(["register", str(tmp_path), str(good)]) == 0
    assert read_manifest(tmp_path).engine_file == "model_trt10.plan"


# ------------------------------------------------------------------------------------------------
# 10. NNCF's extension build lock


@needs_nncf
@needs_torch
def test_int8_quantization_ignores_a_stale_nncf_build_lock(tmp_path):
    """A lock left by a killed NNCF extension build made every later quantization wait (15 min with
    this project's timeout, forever with NNCF_EXTENSION_LOAD_TIMEOUT=0). Quantization must finish, the
    stale lock be removed with a line saying so, and no network be touched."""
    ext = tmp_path / "torch_extensions"
    script = textwrap.dedent("""
        import numpy as np, torch
        from pkdn_edge.export.int8._nncf_ext import lock_path
        lock = lock_path()
        lock.parent.mkdir(parents=True, exist_ok=True)
        lock.write_text("")
        from pkdn_edge.models import create_model
        from pkdn_edge.export.int8.ptq import quantize_torch
        from pkdn_edge.export.settings import Int8Settings
        m = create_model("edge", 8, widths=(8, 12), depth=1, bottleneck_depth=1, refine_width=8).eval()
        x = np.random.default_rng(0).random((8, 3, 16, 16), dtype=np.float32)
        q = quantize_torch(m, x, Int8Settings(subset_size=8))
        assert q(torch.from_numpy(x[:1])).shape == (1, 3, 128, 128)
        print("quantized; lock left:", lock.exists())
    """)
    r, net = _guarded_run([sys.executable, "-c", script], tmp_path, timeout=600,
                          env={"TORCH_EXTENSIONS_DIR": str(ext), "NNCF_EXTENSION_LOAD_TIMEOUT": "0"})
    assert r.returncode == 0, r.stderr[-3000:]
    assert "quantized; lock left: False" in r.stdout
    assert "removed" in r.stderr and "interrupted build" in r.stderr
    assert net == "", f"network use during NNCF quantization:\n{net}"


@needs_torch
def test_nncf_build_lock_held_by_a_live_process_is_left_alone(tmp_path):
    from pkdn_edge.export.int8._nncf_ext import check_stale_lock, lock_holders

    lock = tmp_path / "lock"
    fd = os.open(lock, os.O_CREAT | os.O_EXCL)  # what torch's FileBaton does while it builds
    try:
        if lock_holders(lock) is None:
            pytest.skip("no /proc here")
        lines = []
        assert check_stale_lock(lines.append, lock) == "held"
        assert lock.exists() and str(os.getpid()) in lines[0]
    finally:
        os.close(fd)
    assert check_stale_lock(lambda s: None, lock) == "removed" and not lock.exists()
