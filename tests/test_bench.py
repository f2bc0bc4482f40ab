"""pkdn-bench: a tiny end-to-end report (random x4 student, generated faces, few repetitions), the
isolated worker, the targets logic, and the OpenCV dnn_superres peer wrapper.

No ../shared needed; the peer-model checks skip with a reason when the .pb files are absent.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from pkdn_edge.export.bench.cli import main as bench_main
from pkdn_edge.export.bench.configs import bicubic_configs, select
from pkdn_edge.export.bench.peers import (
    PEER_MODELS,
    OpenCVSuperRes,
    PILBicubic,
    _DepthToSpace,
    default_peer_dir,
    find_peers,
)
from pkdn_edge.export.bench.quality import make_lr
from pkdn_edge.export.bench.report import compute_targets, pareto_front
from pkdn_edge.export.bench.timing import PeakRSS, latency_stats, time_calls
from pkdn_edge.export.bench.worker import measure_isolated
from pkdn_edge.export.data import synthetic_faces
from pkdn_edge.metrics import psnr
from pkdn_edge.models import create_model
from pkdn_edge.models.checkpoint import export_weights

PEER_DIR = default_peer_dir()
RESULT_KEYS = {"id", "kind", "scale", "backend", "precision", "ok", "import_ms", "load_ms", "first_ms", "cold_start_ms",
               "latency_ms", "samples_ms", "memory", "quality", "size_bytes"}


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("bench")
    torch.manual_seed(0)
    export_weights(create_model("edge", 4), d / "x4.pt")
    (d / "faces").mkdir()
    for i, face in enumerate(synthetic_faces(4, seed=7)):
        cv2.imwrite(str(d / "faces" / f"f{i}.png"), face[..., ::-1])
    return d


@pytest.fixture(scope="module")
def report(setup) -> tuple[Path, dict]:
    d = setup
    argv = ["--scales", "4", "--weights4", str(d / "x4.pt"), "--faces", str(d / "faces"), "--artifacts",
            str(d / "art"), "--out", str(d / "report"), "--configs", "pkdn-x4-torch-fp32", "pkdn-x4-onnxruntime-fp32",
            "bicubic-x4", "fsrcnn-x4", "--runs", "4", "--warmup", "1", "--threads", "1", "--no-isolate",
            "--no-stages", "--no-gpu"]
    if PEER_DIR is None:
        argv += ["--peers", str(d)]  # an existing folder without the .pb files: the peer is skipped with a note
    assert bench_main(argv) == 0
    return d / "report", json.loads((d / "report" / "report.json").read_text())


def test_report_writes_markdown_json_and_plots(report):
    out, rep = report
    for name in ("report.md", "report.json", "latency.png", "pareto.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert (out / "latency.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert {"schema", "created", "command", "machine", "settings", "faces", "targets", "results", "gpu",
            "notes"} <= set(rep)
    m = rep["machine"]
    assert {"cpu", "cpu_flags", "threads", "usable_cpus", "libraries", "load_average"} <= set(m)
    assert m["threads"] == 1 and "numpy" in m["libraries"] and "onnxruntime" in m["libraries"]
    assert rep["settings"]["runs"] == 4 and rep["settings"]["warmup"] == 1
    md = (out / "report.md").read_text()
    for section in ("## Targets", "## Machine", "## What is measured", "## CPU, ×4", "## GPU"):
        assert section in md
    assert "no GPU: skipped" in md


def test_report_has_latency_memory_quality_per_configuration(report):
    _, rep = report
    res = {r["id"]: r for r in rep["results"]}
    expected = {"pkdn-x4-torch-fp32", "pkdn-x4-onnxruntime-fp32", "bicubic-x4"} | ({"fsrcnn-x4"} if PEER_DIR else set())
    assert set(res) == expected
    for r in res.values():
        assert r["ok"], r.get("error")
        assert RESULT_KEYS <= set(r)
        lat = r["latency_ms"]
        assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] and lat["runs"] == 4 and len(r["samples_ms"]) == 4
        assert r["cold_start_ms"] == pytest.approx(r["load_ms"] + r["first_ms"])
        assert r["memory"]["peak_delta_mb"] >= 0 and r["memory"]["method"].startswith("RSS")
        assert r["quality"]["faces"] == 4
        assert {"psnr_ctcnet", "ssim_ctcnet", "psnr_dic", "ssim_dic"} <= set(r["quality"])
    # the ONNX export and the eager model agree; the PKDN artifacts are sized on disk
    assert res["pkdn-x4-onnxruntime-fp32"]["quality"]["psnr_ctcnet"] == pytest.approx(
        res["pkdn-x4-torch-fp32"]["quality"]["psnr_ctcnet"], abs=0.01)
    assert res["pkdn-x4-onnxruntime-fp32"]["size_bytes"] > 1e6
    # targets are computed, not hard-coded: without LapSRN x8 / INT8 they are n/a with a reason
    targets = {t["id"]: t for t in rep["targets"]}
    assert set(targets) == {"x8_vs_lapsrn", "int8_speedup"}
    assert all(t["status"] == "n/a" and t["reason"] for t in targets.values())
    if PEER_DIR is None:
        assert any("FSRCNN" in n and "skipped" in n for n in rep["notes"])


def test_isolated_worker_measures_in_a_fresh_process(tmp_path):
    hr = synthetic_faces(2, seed=3)
    np.savez(tmp_path / "faces.npz", hr=hr, lr4=make_lr(hr, 4))
    cfg = bicubic_configs((4,))[0].to_dict()
    rec = measure_isolated(cfg, tmp_path / "faces.npz", threads=1, warmup=1, runs=3)
    assert rec["ok"], rec.get("error")
    assert rec["isolated"] and rec["latency_ms"]["runs"] == 3 and rec["import_ms"] > 0
    bad = measure_isolated({**cfg, "runtime": "nope"}, tmp_path / "faces.npz", threads=1, warmup=0, runs=1)
    assert not bad["ok"] and "nope" in bad["error"]


def _result(id_, kind, scale, p50, psnr_db, device="cpu"):
    return {"id": id_, "kind": kind, "scale": scale, "ok": True, "device": device, "latency_ms": {"p50": p50},
            "quality": {"psnr_ctcnet": psnr_db}}


def test_targets_pass_and_fail_from_measured_numbers():
    lap = _result("lapsrn-x8", "peer", 8, 16.0, 23.7)
    good = [lap, _result("pkdn-x8-openvino-int8", "ours", 8, 1.5, 26.4),
            _result("pkdn-x8-torch-fp32", "ours", 8, 6.0, 26.4),
            _result("pkdn-x4-torch-fp32", "ours", 4, 9.0, 30.5), _result("pkdn-x4-openvino-int8", "ours", 4, 2.1, 30.5)]
    t = {x["id"]: x for x in compute_targets(good)}
    assert t["x8_vs_lapsrn"]["status"] == "pass" and t["x8_vs_lapsrn"]["best"] == "pkdn-x8-openvino-int8"
    assert [r["passed"] for r in t["x8_vs_lapsrn"]["rows"]] == [True, False]  # 6 ms > 16/4
    assert t["int8_speedup"]["status"] == "pass"
    assert [r["speedup"] for r in t["int8_speedup"]["rows"]] == pytest.approx([9.0 / 2.1, 4.0])  # x4, x8
    slow = [lap, _result("pkdn-x8-openvino-int8", "ours", 8, 1.5, 25.0),
            _result("pkdn-x8-torch-fp32", "ours", 8, 3.0, 25.0)]
    t = {x["id"]: x for x in compute_targets(slow)}
    assert t["x8_vs_lapsrn"]["status"] == "fail"  # +1.3 dB only
    assert t["int8_speedup"]["status"] == "fail"  # 2x only
    gpu_only = [_result("lapsrn-x8", "peer", 8, 16.0, 23.7, device="cuda")]
    assert {x["status"] for x in compute_targets(gpu_only)} == {"n/a"}


def test_cpu_contention_excludes_our_own_work():
    from pkdn_edge.export.bench.system import CpuContention

    c = CpuContention().start()
    x = 0
    for i in range(2_000_000):  # our own CPU work is not "other processes"
        x += i
    out = c.stop()
    if out is None:
        pytest.skip("no /proc/stat on this system")
    assert out["wall_s"] >= 0 and out["other_cpus_busy"] >= 0


def test_timing_helpers():
    assert list(time_calls(lambda x: x, [1, 2], warmup=2, runs=5).shape) == [5]
    st = latency_stats([1.0, 2.0, 3.0, 4.0])
    assert st["p50"] == 2.5 and st["min"] == 1.0 and st["fps"] == pytest.approx(400.0)
    mem = PeakRSS().start()
    # 64 MiB, touched: above glibc's largest mmap threshold (32 MiB), so it is always fresh pages and
    # not heap memory an earlier test freed but kept resident (which made a 32 MiB block order-dependent)
    block = np.ones(64 * 2**20, np.uint8)
    assert mem.stop()["peak_delta_mb"] >= 48
    del block
    assert pareto_front([(1.0, 20.0), (2.0, 19.0), (3.0, 25.0), (0.5, 18.0)]) == [3, 0, 2]


def test_depth_to_space_layer_matches_tensorflow_order():
    layer = _DepthToSpace({}, [])
    x = np.arange(2 * 16 * 3 * 5, dtype=np.float32).reshape(2, 16, 3, 5)
    assert layer.getMemoryShapes([list(x.shape)]) == [[2, 1, 12, 20]]
    y = layer.forward([x])[0]
    # TF DepthToSpace (NHWC, DCR): out[y*4+i, x*4+j] = in[y, x, (i*4+j)*C + c] with C = 1
    for i in range(4):
        for j in range(4):
            np.testing.assert_array_equal(y[:, 0, i::4, j::4], x[:, i * 4 + j])


def test_peer_notes_when_models_are_missing(tmp_path):
    found, notes = find_peers(tmp_path, (4, 8))
    assert found == [] and len(notes) == len(PEER_MODELS) and all("skipped" in n for n in notes)
    assert select(bicubic_configs((4, 8)), ["*-x8"])[0].id == "bicubic-x8"


@pytest.mark.skipif(PEER_DIR is None, reason="shared/peers/opencv_dnn_superres is absent (OpenCV dnn_superres models)")
@pytest.mark.parametrize("model", PEER_MODELS, ids=lambda m: f"{m.key}-x{m.scale}")
def test_peer_wrapper_super_resolves_a_synthetic_face_like_bicubic_or_better(model):
    path = PEER_DIR / model.file
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    hr = synthetic_faces(2, seed=11)
    lr = make_lr(hr, model.scale)
    peer, bic = OpenCVSuperRes(path, model.scale, threads=1), PILBicubic(model.scale)
    lr_bgr = np.ascontiguousarray(lr[..., ::-1])
    out = peer.run(lr_bgr)
    assert out.shape == (2, 128, 128, 3) and out.dtype == np.uint8
    assert np.array_equal(peer.run(lr_bgr[0]), out[0])
    p_peer = np.mean([psnr(o[..., ::-1], h) for o, h in zip(out, hr)])
    p_bic = np.mean([psnr(o[..., ::-1], h) for o, h in zip(bic.run(lr_bgr), hr)])
    assert p_peer > p_bic - 1.0, (p_peer, p_bic)  # generic SR: around bicubic on faces, never far below


def _full(id_, kind, scale, p50, psnr_db, device="cpu", backend="openvino", precision="int8"):
    samples = list(np.linspace(0.9 * p50, 1.2 * p50, 9))
    return {"id": id_, "label": id_, "kind": kind, "scale": scale, "ok": True, "device": device, "backend": backend,
            "precision": precision, "size_bytes": 2_000_000, "import_ms": 100.0, "load_ms": 50.0, "first_ms": 5.0,
            "cold_start_ms": 55.0, "latency_ms": latency_stats(samples), "samples_ms": samples,
            "memory": {"peak_delta_mb": 12.0, "method": "RSS"},
            "quality": {"psnr_ctcnet": psnr_db, "ssim_ctcnet": 0.8, "psnr_dic": psnr_db, "ssim_dic": 0.8, "faces": 81}}


def test_flip_tta_configuration_reuses_the_int8_artifact(tmp_path, monkeypatch):
    """``pkdn-x{s}-openvino-int8-flip`` runs the INT8 artifact with ``tta="flip"``: one export serves both."""
    import pkdn_edge.export.bench.configs as C

    configs = C.our_cpu_configs({8: tmp_path / "w.pt"})
    ids = [c.id for c in configs]
    assert ids == ["pkdn-x8-torch-fp32", "pkdn-x8-onnxruntime-fp32", "pkdn-x8-openvino-fp32", "pkdn-x8-openvino-int8",
                   "pkdn-x8-openvino-int8-flip"]
    flip = configs[-1]
    assert flip.options == {"tta": "flip"} and flip.export == ("openvino", "int8") and configs[3].options == {}
    built = []

    def fake_ensure(target, prec, weights, folder, **kw):
        built.append((target, prec))
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    monkeypatch.setattr(C, "ensure_artifact", fake_ensure)
    C.build_artifacts(configs, tmp_path / "art")
    assert built.count(("openvino", "int8")) == 1 and flip.path == configs[3].path


def test_gpu_configurations_and_report_sections_render_from_fabricated_results(tmp_path):
    from pkdn_edge.export.bench.configs import our_gpu_configs
    from pkdn_edge.export.bench.report import write_report

    gpu = {"cuda": True, "tensorrt": True, "devices": ["Fake GPU"], "onnxruntime_providers": ["CUDAExecutionProvider"]}
    ids = [c.id for c in our_gpu_configs({8: tmp_path / "w.pt"}, gpu)]
    assert ids == ["pkdn-x8-torch-fp32-cuda", "pkdn-x8-torch-fp16-cuda", "pkdn-x8-onnxruntime-fp32-cuda",
                   "pkdn-x8-tensorrt-fp16", "pkdn-x8-tensorrt-int8"]
    assert our_gpu_configs({8: tmp_path / "w.pt"}, {"cuda": False}) == []
    results = [_full("lapsrn-x8", "peer", 8, 16.0, 23.7, backend="opencv-dnn", precision="fp32"),
               _full("bicubic-x8", "baseline", 8, 0.1, 23.9, backend="pil", precision="uint8"),
               _full("pkdn-x8-openvino-int8", "ours", 8, 1.5, 26.4),
               _full("pkdn-x8-torch-fp32", "ours", 8, 6.0, 26.4, backend="torch", precision="fp32"),
               _full("pkdn-x8-tensorrt-int8", "ours", 8, 0.3, 26.4, device="cuda", backend="tensorrt"),
               {"id": "espcn-x4", "kind": "peer", "scale": 4, "ok": False, "error": "boom"}]
    machine = {"cpu": "Fake CPU", "arch": "x86_64", "cpu_flags": ["avx2"], "usable_cpus": 2, "logical_cpus": 2,
               "threads": 2, "memory_gb": 8, "os": "Linux", "load_average": [0.1, 0.1, 0.1],
               "libraries": {"numpy": "2"}}
    rep = {"created": "now", "command": "pkdn-bench", "machine": machine, "load_average_end": [0.1, 0.1, 0.1],
           "settings": {"threads": 2, "warmup": 20, "runs": 9, "isolate": True, "memory_method": "RSS"},
           "faces": {"folder": "eval", "count": 81}, "gpu": gpu, "targets": compute_targets(results),
           "results": results, "stages": None, "notes": ["a note"]}
    files = write_report(rep, tmp_path / "rep")
    assert {f.name for f in files} == {"report.md", "report.json", "latency.png", "pareto.png", "latency_gpu.png"}
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "### GPU, ×8" in md and "pkdn-x8-tensorrt-int8" in md and "Fake GPU" in md
    assert md.count("**PASS**") == 2 and "espcn-x4: failed: boom" in md and "* a note" in md
    assert "Warning: the machine was busy" not in md
    from pkdn_edge.export.bench.report import markdown

    machine["contention"] = {"other_cpus_busy": 1.5, "wall_s": 100.0}  # other processes used 1.5 of 2 CPUs
    assert "Warning: the machine was busy" in markdown(rep)
    saved = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert saved["results"][0]["samples_ms"][0] == pytest.approx(14.4)


def test_artifacts_are_reused_while_the_weights_are_unchanged(report, setup):
    from pkdn_edge.export.bench.configs import artifact_matches, ensure_artifact
    from pkdn_edge.export.context import CalibOptions
    from pkdn_edge.manifest import read_manifest, sha256_file

    folder = setup / "art" / "onnx_fp32_x4"
    logs: list[str] = []
    assert ensure_artifact("onnx", "fp32", setup / "x4.pt", folder, log=logs.append) == folder
    assert logs and logs[0].startswith("reusing")
    m, digest = read_manifest(folder), sha256_file(setup / "x4.pt")
    assert artifact_matches(m, "onnx", "fp32", digest) and not artifact_matches(m, "onnx", "fp32", "0" * 64)
    # INT8 artifacts must also match the calibration settings
    m.precision, m.extras = "int8", {"calibration": {"faces": "generated (300 synthetic faces)", "n": 300},
                                     "quantization": {"preset": "performance", "ignore": ["edges"],
                                                      "subset_size": 300, "fast_bias_correction": True}}
    synthetic = CalibOptions(synthetic=True)
    assert artifact_matches(m, "onnx", "int8", digest, synthetic)
    assert not artifact_matches(m, "onnx", "int8", digest, CalibOptions())  # real faces wanted
    assert not artifact_matches(m, "onnx", "int8", digest, CalibOptions(synthetic=True, size=64))
    index = json.loads((setup / "art" / "index.json").read_text())
    assert {c["id"] for c in index["configs"]} >= {"pkdn-x4-onnxruntime-fp32", "bicubic-x4"}
