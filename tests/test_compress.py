"""pkdn-compress: prune → distillation fine-tuning (Trainer) → NNCF INT8 (PTQ, QAT, accuracy control) → report.

Tiny models (widths 8/12) and generated 128×128 faces written by the test: no ../shared, a few
training steps, a few calibration faces.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from pkdn_edge.engines import load_engine
from pkdn_edge.export.compress.cli import main as compress_main
from pkdn_edge.export.compress.prune import prune_student
from pkdn_edge.export.compress.run import REPORT_KEYS
from pkdn_edge.export.data import synthetic_faces, to_lr
from pkdn_edge.manifest import read_manifest
from pkdn_edge.models import create_model
from pkdn_edge.models.checkpoint import export_weights, load_model, read_checkpoint

pytestmark = pytest.mark.usefixtures("nncf_reference_quantizers")  # no C++ extension build in tests

HAS_INT8 = importlib.util.find_spec("nncf") is not None and importlib.util.find_spec("openvino") is not None
needs_int8 = pytest.mark.skipif(not HAS_INT8, reason="nncf/openvino are not installed (pkdn-edge[export])")
TINY = {"widths": (8, 12), "depth": 1, "bottleneck_depth": 1, "refine_width": 8, "prior_width": 4}
TRAIN_SET = ["num_val=4", "batch_size=2", "augment=false"]


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict[str, Path]:
    """Generated faces (train 20, eval 4) as PNG files, a tiny x4 student and teacher."""
    d = tmp_path_factory.mktemp("compress")
    for name, n, seed in (("train", 20, 11), ("eval", 4, 12)):
        (d / name).mkdir()
        for i, face in enumerate(synthetic_faces(n, seed=seed)):
            cv2.imwrite(str(d / name / f"face_{i:03d}.png"), face[..., ::-1])
    torch.manual_seed(0)
    export_weights(create_model("edge", 4, "student", **TINY), d / "student.pt")
    export_weights(create_model("edge", 4, "teacher", **TINY), d / "teacher.pt")
    return {"root": d, "train": d / "train", "eval": d / "eval", "student": d / "student.pt",
            "teacher": d / "teacher.pt", "cache": d / "cache"}


def _train_set(env) -> list[str]:
    return TRAIN_SET + [f"cache_dir={env['cache']}"]


def _args(env, out: Path, *extra: str) -> list[str]:
    return ["--weights", str(env["student"]), "--teacher", str(env["teacher"]), "--out", str(out),
            "--faces", str(env["eval"]), "--data", str(env["train"]), "--prune", "0.5", "--finetune-steps", "2",
            "--calib-size", "8", "--threads", "1", "--latency-runs", "2", "--no-progress", *extra,
            "--set", *_train_set(env)]


# ---------------------------------------------------------------------------------------------- end to end


@needs_int8
def test_compress_runs_end_to_end_and_writes_the_report(env, capsys):
    out = env["root"] / "out"
    assert compress_main(_args(env, out, "--int8", "ptq")) == 0
    report = json.loads((out / "report.json").read_text())
    assert set(REPORT_KEYS) <= set(report)
    m = report["models"]
    assert m["pruned"]["widths"] == [4, 6] and m["pruned"]["params"] < m["original"]["params"]
    assert m["pruned"]["macs"] < m["original"]["macs"]
    rows = {r["model"]: r for r in report["quality"]["rows"]}
    assert list(rows) == ["bicubic", "original (fp32)", "pruned, before fine-tuning (fp32)",
                          "pruned + fine-tuned (fp32)", "pruned + INT8 ptq (OpenVINO)"]
    for r in rows.values():
        assert {"psnr_ctcnet", "ssim_ctcnet", "psnr_dic", "ssim_dic", "delta_psnr_ctcnet"} <= set(r)
        assert np.isfinite(r["psnr_ctcnet"]) and 0 < r["ssim_dic"] <= 1
    lat = {(r["model"], r["backend"], r["precision"]) for r in report["latency"]["rows"]}
    assert {("original", "onnxruntime", "fp32"), ("pruned", "onnxruntime", "fp32"), ("original", "openvino", "fp32"),
            ("pruned", "openvino", "fp32"), ("pruned + INT8 ptq", "openvino", "int8")} == lat
    assert report["latency"]["speedup_onnxruntime_fp32"] > 0
    assert report["stages"]["finetune"]["done"] and report["stages"]["int8"]["ignore"] == ["edges"]
    # the artifacts: checkpoints load, the fine-tuning run checkpointed, exports are engine-loadable
    pruned, meta = load_model(out / "pruned.pt")
    assert pruned.cfg.widths == (4, 6) and meta["pruning"]["ratio"] == 0.5
    assert read_checkpoint(out / "finetune" / "last.pt")["step"] == 2
    assert read_manifest(out / "openvino_int8").precision == "int8"
    assert read_manifest(out / "onnx_fp32").verification["passed"]
    int8 = load_engine(out / "openvino_int8", threads=1)
    assert int8.run(np.zeros((1, 32, 32, 3), np.uint8)).shape == (1, 128, 128, 3)
    assert not (out / ".reference").exists()
    text = (out / "report.md").read_text()
    assert "## Quality" in text and "## Latency" in text and "speedup onnxruntime fp32" in text
    assert "## Quality" in capsys.readouterr().out
    # another ratio into the same folder is refused (one line), nothing is touched
    before = (out / "report.json").read_text()
    args = _args(env, out, "--int8", "ptq")
    args[args.index("--prune") + 1] = "0.25"
    assert compress_main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err and "prune" in err
    assert (out / "report.json").read_text() == before


@pytest.mark.parametrize("case", ["missing", "teacher_as_student", "ratio", "mode", "reserved", "teacher_scale",
                                  "faces", "data", "foreign_out", "macs", "speedup"])
def test_bad_inputs_are_one_line_errors(env, tmp_path, capsys, case):
    out = tmp_path / "out"
    args = _args(env, out, "--int8", "none")
    if case == "missing":
        args[args.index("--weights") + 1] = str(tmp_path / "nope.pt")
    elif case == "teacher_as_student":
        args[args.index("--weights") + 1] = str(env["teacher"])
    elif case == "ratio":
        args[args.index("--prune") + 1] = "1.0"
    elif case == "mode":
        args[args.index("--int8") + 1] = "int4"
    elif case == "reserved":
        args.append("steps=5")
    elif case == "teacher_scale":
        export_weights(create_model("edge", 8, "teacher", **TINY), tmp_path / "t8.pt")
        args[args.index("--teacher") + 1] = str(tmp_path / "t8.pt")
    elif case == "faces":
        args[args.index("--faces") + 1] = str(tmp_path / "no_faces")
    elif case == "data":
        args[args.index("--data") + 1] = str(tmp_path / "no_data")
    elif case == "foreign_out":
        out.mkdir()
        (out / "notes.txt").write_text("keep")
    elif case == "macs":
        args = ["--target-macs", "1.5"] + args
    elif case == "speedup":
        args = ["--target-macs", "0.9", "--target-speedup", "0.5"] + args
    assert compress_main(args) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and err[0].startswith("error: "), err
    assert case == "foreign_out" or not out.exists()


# ---------------------------------------------------------------------------------------------- fine-tuning


def test_pkdn_train_fine_tunes_a_pruned_checkpoint_with_selection_adapters(env, tmp_path):
    """``pkdn-train student --set init=pruned.pt teacher=...``: the pruned architecture wins, the
    feature adapters start as channel selections, and the run checkpoints and resumes."""
    from pkdn_edge.export.compress.prune import plan_pruning
    from pkdn_edge.train.config import load_config
    from pkdn_edge.train.loop import Trainer

    student, _ = load_model(env["student"])
    plan = plan_pruning(student, 0.5)
    export_weights(prune_student(student, 0.5), tmp_path / "pruned.pt", meta={"pruning": plan.to_meta()})
    cfg = load_config(None, _train_set(env), role="student", scale=4, data=str(env["train"]), steps=3, threads=1,
                      init=str(tmp_path / "pruned.pt"), teacher=str(env["teacher"]), out=str(tmp_path / "run"),
                      log_every=1, val_every=3, ckpt_every=1, device="cpu")
    t = Trainer(cfg)
    assert t.model.cfg.widths == (4, 6)
    for idx, ad in zip(plan.feature_index(), t.adapters.maps):
        if isinstance(ad, torch.nn.Identity):  # same width (the upsampler keeps >= 8 channels): all kept
            assert idx == list(range(len(idx)))
            continue
        w = ad.weight[:, :, 0, 0]
        assert torch.equal(w[idx, torch.arange(len(idx))], torch.ones(len(idx))) and w.abs().sum() == len(idx)
    t.run(stop_at=2, progress=False)
    resumed = Trainer(cfg)
    assert resumed.step == 2
    assert resumed.run(progress=False)["done"]
    tuned, _ = load_model(tmp_path / "run" / "best.pt")
    assert tuned.cfg == t.model.cfg


# ---------------------------------------------------------------------------------------------- INT8


def test_feature_tap_reads_the_distilled_features_of_forward():
    from pkdn_edge.export.int8.qat import FeatureTap

    m = create_model("edge", 8, **TINY).eval()
    lr = torch.rand(2, 3, 16, 16)
    with torch.no_grad(), FeatureTap(m) as tap:
        y = m(lr)
        ref_y, ref = m.forward_features(lr)
    assert torch.equal(y, ref_y)
    assert len(tap.features) == len(ref) and all(torch.equal(a, b) for a, b in zip(tap.features, ref))


@needs_int8
def test_qat_trains_resumes_and_exports_to_openvino_and_qdq_onnx(env, tmp_path):
    from pkdn_edge.export.context import QuantizedModel
    from pkdn_edge.export.exporter import run_export
    from pkdn_edge.export.int8.qat import BEST_NAME, run_qat
    from pkdn_edge.export.int8.tensorrt_lint import lint_file
    from pkdn_edge.export.settings import Int8Settings
    from pkdn_edge.train.config import load_config

    student, _ = load_model(env["student"])
    export_weights(prune_student(student, 0.5), tmp_path / "p.pt")
    model, _ = load_model(tmp_path / "p.pt")
    calib = to_lr(synthetic_faces(8, seed=3), 4)

    def cfg(steps):
        return load_config(None, _train_set(env), role="student", scale=4, data=str(env["train"]), steps=steps,
                           lr=1e-4, threads=1, teacher=str(env["teacher"]), out=str(tmp_path / "qat"),
                           log_every=1, val_every=1, ckpt_every=1, device="cpu", warmup_steps=1)

    settings = Int8Settings(subset_size=8)
    q, summary = run_qat(model, cfg(2), calib, settings, progress=False)
    assert summary["steps"] == 2 and summary["ptq_val_psnr"] is not None and summary["best_step"] in (0, 1, 2)
    assert (tmp_path / "qat" / BEST_NAME).is_file() and read_checkpoint(tmp_path / "qat" / "last.pt")["step"] == 2
    q, summary = run_qat(model, cfg(3), calib, settings, progress=False)  # resumes at step 2
    assert read_checkpoint(tmp_path / "qat" / "last.pt")["step"] == 3
    info = QuantizedModel(q, {"method": "qat", **summary})
    hr = synthetic_faces(4, seed=5)
    with torch.no_grad():
        ref = q(torch.from_numpy(to_lr(hr, 4))).numpy()
    for target in ("openvino", "onnx"):
        r = run_export(target, "int8", tmp_path / "p.pt", out=tmp_path / target, threads=1, verify=False,
                       benchmark=False, log=lambda s: None, int8_model=info, window=0)  # the 32x32 crop
        m = read_manifest(r.out)
        assert m.extras["quantization"]["method"] == "qat"
        if target == "onnx":
            assert lint_file(r.out / "model.onnx") == []  # TensorRT-shaped Q/DQ
        y = load_engine(r.out, threads=1).run_tensor(to_lr(hr, 4))
        assert y.shape == (4, 3, 128, 128)
        assert np.abs(y - ref).mean() < 0.01  # the artifact computes the QAT model


@needs_int8
def test_accuracy_controlled_ptq_on_openvino(env, tmp_path):
    from pkdn_edge.export.context import CalibOptions
    from pkdn_edge.export.exporter import run_export
    from pkdn_edge.export.settings import Int8Settings

    calib = CalibOptions(folder=env["train"], size=8, settings=Int8Settings(subset_size=8), select_size=4,
                         accuracy_control=True, max_drop=0.05)
    r = run_export("openvino", "int8", env["student"], out=tmp_path / "acc", calib=calib, threads=1, verify=False,
                   benchmark=False, log=lambda s: None, window=0)
    q = read_manifest(r.out).extras["quantization"]
    assert q["accuracy_control"] and q["max_drop_db"] == 0.05
    sel = q["selection"]
    assert sel["faces"] == 4 and np.isfinite(sel["delta_db"]) and sel["fake_quantize_ops"] > 0
    assert load_engine(r.out, threads=1).run(np.zeros((1, 32, 32, 3), np.uint8)).shape == (1, 128, 128, 3)


def test_latency_is_timed_in_alternating_blocks_not_call_by_call():
    """Each engine gets its timed calls in blocks (3 untimed calls first), blocks take turns in an
    order that reverses each round: an engine's spinning worker threads never sit between two
    timed calls of another engine."""
    from pkdn_edge.export.compress.report import measure_latency

    calls: list[str] = []

    class Fake:
        lr_size = (4, 4)

        def __init__(self, name):
            self.name = name

        def run_tensor(self, x):
            calls.append(self.name)

    ms = measure_latency({"a": Fake("a"), "b": Fake("b")}, runs=60, warmup=2, block=25)
    assert set(ms) == {"a", "b"} and all(v["ms_median"] >= 0 for v in ms.values())
    runs = [(k, len(list(g))) for k, g in itertools.groupby(calls)]
    # warm-up 2 each, then blocks of 3 + 25, 3 + 25, 3 + 10, the order a b | b a | a b
    assert runs == [("a", 2), ("b", 2), ("a", 28), ("b", 28 + 28), ("a", 28 + 13), ("b", 13)]


# ---------------------------------------------------------------------------------------------- the recipe


def _recipe_args(env, out: Path, *extra: str) -> list[str]:
    """--target-macs on the tiny student, distilled from itself (no --teacher), a 4-channel grid."""
    return ["--weights", str(env["student"]), "--out", str(out), "--faces", str(env["eval"]), "--data",
            str(env["train"]), "--target-macs", "0.85", "--multiple", "4", "--importance-batches", "2",
            "--finetune-steps", "4", "--calib-size", "8", "--threads", "1", "--no-progress", *extra,
            "--set", *_train_set(env)]


def test_target_macs_in_steps_distilled_from_the_unpruned_student(env):
    out = env["root"] / "recipe"
    assert compress_main(_recipe_args(env, out, "--prune-steps", "2", "--int8", "none", "--latency-runs", "0")) == 0
    report = json.loads((out / "report.json").read_text())
    m = report["models"]
    assert m["pruned"]["macs"] <= 0.85 * m["original"]["macs"]
    assert report["stages"]["search"]["mode"] == "search" and report["stages"]["search"]["ranked"]
    assert report["settings"]["distill_source"] == str(out / "source.pt")
    ft = report["stages"]["finetune"]
    assert ft["steps_per_prune_step"] == [2, 2] and len(ft["runs"]) == 2
    assert ft["config"]["teacher"] == str(out / "source.pt")
    assert (out / "step1" / "pruned_init.pt").is_file() and (out / "step1" / "best.pt").is_file()
    pruned, meta = load_model(out / "pruned.pt")
    source, _ = load_model(out / "source.pt")
    assert meta["pruning"]["feature_channels_before"] == source.feature_channels
    assert [len(i) for i in meta["pruning"]["feature_index"]] == pruned.feature_channels
    assert {r["protocol"] for r in report["quality"]["rows"]} == {"bicubic", "camera"}
    # the same command again reuses everything (nothing retrained) and another target is refused
    mtime = (out / "finetune" / "best.pt").stat().st_mtime
    assert compress_main(_recipe_args(env, out, "--prune-steps", "2", "--int8", "none", "--latency-runs", "0")) == 0
    assert (out / "finetune" / "best.pt").stat().st_mtime == mtime
    args = _recipe_args(env, out, "--prune-steps", "2", "--int8", "none", "--latency-runs", "0")
    args[args.index("--target-macs") + 1] = "0.8"
    assert compress_main(args) == 2


@needs_int8
def test_sweep_writes_the_ratio_table(env, capsys):
    out = env["root"] / "sweep"
    args = _recipe_args(env, out, "--sweep", "0.9", "0.8", "--int8", "ptq", "--latency-runs", "2")
    args[args.index("--finetune-steps") + 1] = "1"
    assert compress_main(args) == 0
    s = json.loads((out / "sweep.json").read_text())
    assert [p["fraction"] for p in s["points"]] == [0.9, 0.8]
    for p in s["points"]:
        assert p["macs_fraction"] <= p["fraction"] + 1e-9
        assert p["speedup_ort_fp32"] > 0 and p["speedup_ov_int8"] > 0
        assert p["delta_bicubic"] is not None and p["delta_camera"] is not None
    assert {r["model"] for r in s["latency"]["rows"]} == {"original", "macs_0.9", "macs_0.8"}
    text = (out / "sweep.md").read_text()
    assert "| MAC fraction |" in text and "OV INT8 speed-up" in text and text in capsys.readouterr().out
    assert (out / "importance.pt").is_file() and not (out / "macs_0.9" / "importance.pt").exists()


def test_trainer_distils_from_a_student_checkpoint(env, tmp_path):
    """teacher=<a student>: no priors, output + feature distillation through selection adapters."""
    from pkdn_edge.export.compress.prune import plan_pruning
    from pkdn_edge.train.config import load_config
    from pkdn_edge.train.loop import Trainer

    student, _ = load_model(env["student"])
    plan = plan_pruning(student, 0.5)
    export_weights(prune_student(student, 0.5), tmp_path / "pruned.pt", meta={"pruning": plan.to_meta()})
    cfg = load_config(None, _train_set(env), role="student", scale=4, data=str(env["train"]), steps=2, threads=1,
                      init=str(tmp_path / "pruned.pt"), teacher=str(env["student"]), out=str(tmp_path / "run"),
                      log_every=1, val_every=2, ckpt_every=1, device="cpu")
    t = Trainer(cfg)
    assert t.priors is None and t.teacher.cfg.role == "student"
    stats = t.train_step(0)
    assert stats["feat"] >= 0 and stats["out"] > 0
    assert t.run(progress=False)["done"]


def test_fine_tuning_inherits_the_source_degradation(env, tmp_path):
    """A camera student's degradation, camera settings, validation protocol and precision carry over;
    without metadata the --train-config YAML is read."""
    from pkdn_edge.export.compress.config import CompressConfig
    from pkdn_edge.export.compress.finetune import Run, source_train_settings, train_config

    train = {"degradation": "camera", "camera": {"p_clean": 0.5}, "select_on": "mean", "precision": "bf16",
             "data": str(env["train"]), "batch_size": 4, "out": "runs/elsewhere"}
    base, where = source_train_settings({"train": train}, env["student"], None)
    student, _ = load_model(env["student"])
    run = Run(CompressConfig(weights=env["student"], out=tmp_path), tmp_path, env["student"], student, base, where)
    tc = train_config(run, tmp_path / "ft", 10, 1e-4)
    assert (tc.degradation, tc.camera, tc.select_on, tc.precision, tc.batch_size) == ("camera", {"p_clean": 0.5},
                                                                                     "mean", "bf16", 4)
    assert tc.teacher == str(tmp_path / "source.pt") and tc.out == str(tmp_path / "ft")
    (tmp_path / "c.yaml").write_text("degradation: camera\nselect_on: camera\n")
    base, where = source_train_settings({}, env["student"], tmp_path / "c.yaml")
    assert base["degradation"] == "camera" and base["select_on"] == "camera" and where.endswith("c.yaml")
