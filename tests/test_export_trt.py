"""pkdn-export --target tensorrt: engine builders (--builder), the manifest's engine facts, the
per-file fp16 summary, and benchmarks/gpu_check.sh without a GPU.

PLUMBING ONLY. No TensorRT, torch-tensorrt, trtexec or GPU exists here: fake ``tensorrt`` /
``torch_tensorrt`` modules (the ones tests/test_engines.py uses) and a fake ``trtexec`` script check
that the right builder is chosen, called with the right settings, and that its engine is registered
and bound by name. Nothing here says anything about real engines: their numbers come from
benchmarks/gpu_check.sh on an NVIDIA GPU (tests that need one are marked and skipped).
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from test_engines import _fake_tensorrt, _FakeContext, _FakeCuda, _FakeEngineV3  # the suite's fake TensorRT

from pkdn_edge.errors import PKDNError
from pkdn_edge.export.cli import main as cli_main
from pkdn_edge.export.exporter import run_export, summary_table
from pkdn_edge.export.settings import ExportRequest
from pkdn_edge.export.targets import tensorrt_builders as trt_builders
from pkdn_edge.manifest import read_manifest
from pkdn_edge.models import create_model
from pkdn_edge.models.checkpoint import export_weights

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("trt")
    torch.manual_seed(0)
    export_weights(create_model("edge", 4, widths=(8, 12), depth=1, bottleneck_depth=1, refine_width=8), d / "w.pt")
    return d / "w.pt"


def _req(weights: Path, out: Path, precision: str = "fp16", **kw) -> ExportRequest:
    return ExportRequest("tensorrt", precision, weights, out=out, verify_synthetic=True, benchmark=False,
                         threads=1, log=lambda s: None, **kw)


def _module(name: str, **attrs) -> types.ModuleType:
    m = types.ModuleType(name)
    m.__spec__ = importlib.machinery.ModuleSpec(name, None)
    for k, v in attrs.items():
        setattr(m, k, v)
    return m


@pytest.fixture
def no_builders(monkeypatch):
    """Nothing installed, whatever this machine has."""
    monkeypatch.setattr(trt_builders, "module_available", lambda mod: False)
    monkeypatch.setattr(trt_builders, "trtexec_path", lambda: None)


# ---------------------------------------------------------------------------------------------- choice


def test_auto_without_builders_keeps_the_onnx_and_build_md_artifact(no_builders):
    assert trt_builders.choose("auto") == (None, "TensorRT is not installed here")
    assert trt_builders.choose("none") == (None, "--builder none")
    for b in ("torch-tensorrt", "tensorrt", "trtexec"):
        with pytest.raises(PKDNError, match=f"--builder {b} cannot build an engine here"):
            trt_builders.choose(b)


def test_auto_prefers_torch_tensorrt_then_tensorrt_then_trtexec(monkeypatch):
    have = {"torch_tensorrt", "tensorrt"}
    monkeypatch.setattr(trt_builders, "module_available", lambda mod: mod in have)
    monkeypatch.setattr(trt_builders, "_cuda_visible", lambda: True)
    monkeypatch.setattr(trt_builders, "trtexec_path", lambda: "/usr/src/tensorrt/bin/trtexec")
    assert trt_builders.choose("auto")[0] == "torch-tensorrt"
    have.discard("torch_tensorrt")
    assert trt_builders.choose("auto")[0] == "tensorrt"
    have.clear()
    assert trt_builders.choose("auto")[0] == "trtexec"
    monkeypatch.setattr(trt_builders, "_cuda_visible", lambda: False)
    have.add("tensorrt")
    assert trt_builders.choose("auto")[0] == "trtexec"  # python TensorRT without a visible GPU is skipped


@pytest.mark.parametrize("banner,want", [("[TensorRT v100300] # trtexec", (10, 3)), ("[TensorRT v8601]", (8, 6)),
                                         ("[TensorRT v110000]", (11, 0))])
def test_trtexec_version_from_its_banner(tmp_path, banner, want):
    exe = tmp_path / "trtexec"
    exe.write_text(f"#!/bin/sh\necho '&&&& RUNNING TensorRT.trtexec {banner}'\n")
    exe.chmod(0o755)
    assert trt_builders.trtexec_version(str(exe)) == want


def test_cli_builder_flags(weights, tmp_path, capsys, no_builders):
    rc = cli_main(["--target", "onnx", "--builder", "trtexec", "--weights", str(weights), "--out", str(tmp_path / "a")])
    err = capsys.readouterr().err
    assert rc == 2 and "--builder works with --target tensorrt, not onnx" in err and not (tmp_path / "a").exists()
    rc = cli_main(["--target", "tensorrt", "--builder", "torch-tensorrt", "--weights", str(weights),
                   "--out", str(tmp_path / "b"), "--verify-synthetic"])
    err = capsys.readouterr().err
    assert rc == 2 and "torch-tensorrt is not installed" in err and not (tmp_path / "b").exists()


# ---------------------------------------------------------------------------------------------- fp16 summary


def test_fp16_artifact_lists_and_verifies_every_onnx_with_its_own_size(weights, tmp_path, no_builders):
    r = run_export(_req(weights, tmp_path / "fp16", batch=None))
    m = read_manifest(r.out)
    assert m.model_file == "model_fp16.onnx" and m.extras["trt_onnx"]["10"] == "model.onnx"
    names = [f.name for f in r.files]
    assert names == ["model.onnx", "model_fp16.onnx"]
    sizes = {f.name: f.size_bytes for f in r.files}
    assert sizes == {n: (r.out / n).stat().st_size for n in names}  # each file's own size, not the sum
    assert all(f.parity is not None and f.parity.passed for f in r.files)
    assert set(m.verification["files"]) == {"model.onnx"}  # the fp32-graph ONNX TensorRT 8/10 build from
    text = summary_table([r])
    assert text.count("model.onnx") == 1 and text.count("model_fp16.onnx") == 1
    assert any("ONNX the engine may be built from" in n for n in r.notes)


# ---------------------------------------------------------------------------------------------- builders


def test_trtexec_builder_runs_the_build_md_command_and_registers_the_engine(weights, tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "trtexec.args"
    (bin_dir / "trtexec").write_text(
        "#!/bin/sh\necho '&&&& RUNNING TensorRT.trtexec [TensorRT v100300]'\n"
        f"echo \"$@\" >> {log}\n"
        "for a in \"$@\"; do case $a in --saveEngine=*) printf 'ENGINE%0200d' 0 > \"${a#--saveEngine=}\";; "
        "esac; done\n")
    (bin_dir / "trtexec").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(trt_builders, "module_available", lambda mod: False)  # only trtexec here
    r = run_export(_req(weights, tmp_path / "art", precision="fp16", builder="auto", verify=False))
    m = read_manifest(r.out)
    assert m.engine_file == "model_trt10.plan" and (r.out / "model_trt10.plan").read_bytes().startswith(b"ENGINE")
    eng = m.extras["engine"]
    assert eng["builder"] == "trtexec" and eng["trtexec_version"] == "10.3" and eng["checked"] is False
    args = [ln for ln in log.read_text().splitlines() if "--onnx" in ln][0]
    assert "--onnx=model.onnx" in args and "--saveEngine=model_trt10.plan" in args and "--fp16" in args


class _Ctx(_FakeContext):
    def execute_async_v3(self, stream):
        return self._run(self.addr["lr"], self.addr["output0"], self.shape or self.e.static, "v3")


class _TorchTrtEngine(_FakeEngineV3):
    """What a torch-tensorrt engine looks like to TensorRT: input ``lr`` (our wrapper's argument), output
    ``output0``."""

    def __init__(self, batch):
        super().__init__(batch, names=("lr", "output0"))

    def get_tensor_mode(self, name):
        return "INPUT" if name == "lr" else "OUTPUT"

    def create_execution_context(self):
        return _Ctx(self)


def _fake_torch_tensorrt(calls: dict) -> types.ModuleType:
    class Input:
        def __init__(self, **kw):
            self.kw = kw

    def convert(ep, arg_inputs=None, enabled_precisions=None, use_explicit_typing=None):
        calls.update(program=ep, inputs=arg_inputs, precisions=enabled_precisions, typing=use_explicit_typing)
        return b"ENGINE" + bytes(200)

    dynamo = _module("torch_tensorrt.dynamo", convert_exported_program_to_serialized_trt_engine=convert)
    return _module("torch_tensorrt", Input=Input, dynamo=dynamo, __version__="2.13.0-fake")


def test_torch_tensorrt_builder_serializes_a_plain_engine_bound_by_its_names(weights, tmp_path, monkeypatch):
    from pkdn_edge.engines import load_engine
    from pkdn_edge.engines import tensorrt as trt_backend

    calls: dict = {}
    trt = _fake_tensorrt(_TorchTrtEngine(-1), version="10.3.0")
    trt.TensorIOMode = types.SimpleNamespace(INPUT="INPUT", OUTPUT="OUTPUT")
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setitem(sys.modules, "torch_tensorrt", _fake_torch_tensorrt(calls))
    monkeypatch.setattr(trt_builders, "_cuda_visible", lambda: True)
    monkeypatch.setattr(trt_builders, "DEVICE", "cpu")
    monkeypatch.setattr(trt_backend, "compute_capability", lambda device=0: "8.7")
    monkeypatch.setattr(trt_backend, "_cuda", _FakeCuda)
    r = run_export(_req(weights, tmp_path / "art", precision="fp16", builder="torch-tensorrt", batch=None,
                        verify=False, window=0))  # the fake engine maps the 32x32 training crop
    m = read_manifest(r.out)
    assert m.engine_file == "model_trt10.plan"
    eng = m.extras["engine"]
    assert eng["builder"] == "torch-tensorrt" and eng["tensorrt"] == "10.3.0" and eng["compute_capability"] == "8.7"
    assert eng["io"] == {"input": "lr", "output": "output0"}
    assert torch.float16 in calls["precisions"] and calls["typing"] is True
    assert calls["inputs"][0].kw["min_shape"] == (1, 3, 32, 32) and calls["inputs"][0].kw["max_shape"][0] == 16
    assert isinstance(calls["program"], torch.export.ExportedProgram)
    e = load_engine(r.out)  # the backend binds the engine's own output name from the manifest
    y = e.run_tensor(np.ones((3, 3, 32, 32), np.float32))
    assert y.shape == (3, 3, 128, 128) and np.allclose(y, 2.0)  # the fake engine's arithmetic, not a real model


def test_registering_records_the_tensorrt_version_and_compute_capability(tmp_path, monkeypatch):
    from test_engines import _trt_artifact

    from pkdn_edge.engines import tensorrt as trt_backend

    _trt_artifact(tmp_path, 1, engine_bytes=None)
    (tmp_path / "built.plan").write_bytes(b"ENGINE" + bytes(100))
    monkeypatch.setitem(sys.modules, "tensorrt", _fake_tensorrt(_FakeEngineV3(1), version="10.3.0"))
    monkeypatch.setattr(trt_backend, "compute_capability", lambda device=0: "8.7")
    m = trt_backend.register_engine(tmp_path, tmp_path / "built.plan")
    assert m.extras["engine"] == {"tensorrt": "10.3.0", "compute_capability": "8.7"}
    assert trt_backend.describe(tmp_path)["engine_compute_capability"] == "8.7"


# ---------------------------------------------------------------------------------------------- gpu_check.sh


def test_gpu_check_without_a_gpu_says_so_and_exits_0(tmp_path):
    env = {**os.environ, "PATH": f"{tmp_path}{os.pathsep}/usr/bin{os.pathsep}/bin",
           "PKDN_GPU_CHECK_OUT": str(tmp_path / "o")}
    r = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh")], capture_output=True, text=True, env=env,
                       cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "no NVIDIA GPU" in r.stdout and "nothing was measured" in r.stdout


@pytest.mark.skipif(not torch.cuda.is_available() or importlib.util.find_spec("torch_tensorrt") is None,
                    reason="needs an NVIDIA GPU and torch-tensorrt (benchmarks/gpu_check.sh runs every builder there)")
def test_real_torch_tensorrt_engine_matches_pytorch(weights, tmp_path):
    r = run_export(_req(weights, tmp_path / "real", precision="fp16", builder="torch-tensorrt"))
    m = read_manifest(r.out)
    assert m.engine_file and m.extras["engine"]["builder"] == "torch-tensorrt" and r.parity.passed
