"""Training: a tiny student learns on generated faces, and a resumed run is bit-exact."""

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from pkdn_edge.errors import PKDNError
from pkdn_edge.models.checkpoint import load_model, read_checkpoint
from pkdn_edge.train.config import load_config
from pkdn_edge.train.loop import Trainer

REPO = Path(__file__).resolve().parents[1]
TINY = {"widths": [8, 12], "depth": 1, "bottleneck_depth": 1, "refine_width": 8, "prior_width": 4}


def _make_faces(folder, n=48, size=32, seed=0):
    """Smooth synthetic 'faces': an ellipse, two eyes, a mouth, random colours and positions."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        img = np.full((size, size, 3), rng.integers(0, 255, 3), np.uint8)
        c = (size // 2 + int(rng.integers(-2, 3)), size // 2 + int(rng.integers(-2, 3)))
        cv2.ellipse(img, c, (10, 13), 0, 0, 360, [int(v) for v in rng.integers(80, 255, 3)], -1)
        for dx in (-4, 4):
            cv2.circle(img, (c[0] + dx, c[1] - 3), 2, (20, 20, 20), -1)
        cv2.line(img, (c[0] - 4, c[1] + 5), (c[0] + 4, c[1] + 5), (40, 0, 90), 1)
        cv2.imwrite(str(folder / f"face_{i:03d}.png"), cv2.GaussianBlur(img, (3, 3), 0.8))
    return folder


def _cfg(tmp_path, out, **kw):
    base = dict(
        role="student", scale=4, data=str(tmp_path / "faces"), hr_size=32, num_val=8, model=TINY,
        steps=40, batch_size=8, lr=3e-3, warmup_steps=2, log_every=5, val_every=20, ckpt_every=10,
        out=str(tmp_path / out), cache_dir=str(tmp_path / "cache"), threads=1, device="cpu", augment=False,
    )
    base.update(kw)
    return load_config(**base)


@pytest.fixture()
def faces(tmp_path):
    return _make_faces(tmp_path / "faces")


def test_student_loss_falls_and_writes_checkpoints(tmp_path, faces):
    cfg = _cfg(tmp_path, "run")
    summary = Trainer(cfg).run(progress=False)
    assert summary["done"] and summary["step"] == 40
    with open(tmp_path / "run" / "log.csv") as fh:
        losses = [float(r["loss"]) for r in csv.DictReader(fh)]
    assert np.mean(losses[-2:]) < 0.8 * np.mean(losses[:2])
    model, meta = load_model(tmp_path / "run" / "best.pt")
    assert meta["val_psnr"] > 0 and model.cfg.widths == (8, 12)


def test_resume_is_bit_exact(tmp_path, faces):
    straight = Trainer(_cfg(tmp_path, "a", steps=12))
    straight.run(progress=False)

    first = Trainer(_cfg(tmp_path, "b", steps=12))
    first.run(stop_at=7, progress=False)  # an interrupted run
    resumed = Trainer(_cfg(tmp_path, "b", steps=12))  # picks up b/last.pt
    assert resumed.step == 7
    resumed.run(progress=False)

    a = read_checkpoint(tmp_path / "a" / "last.pt")["model"]
    b = read_checkpoint(tmp_path / "b" / "last.pt")["model"]
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_bad_config_is_a_clear_error(tmp_path):
    with pytest.raises(PKDNError, match="unknown config keys"):
        load_config(stepz=3)
    with pytest.raises(PKDNError, match="face folder not found"):
        Trainer(_cfg(tmp_path, "x", data=str(tmp_path / "nope")))


def test_truncated_checkpoint_is_a_clear_error(tmp_path, faces):
    Trainer(_cfg(tmp_path, "run", steps=2)).run(progress=False)
    ckpt = tmp_path / "run" / "last.pt"
    data = ckpt.read_bytes()
    ckpt.write_bytes(data[: len(data) // 2])
    with pytest.raises(PKDNError, match="corrupt"):
        load_model(ckpt)


def test_augmented_batches_are_seeded_and_swap_left_right_priors():
    from pkdn_edge.train.data import BatchSampler

    rng = np.random.default_rng(0)
    hr = rng.integers(0, 255, (6, 32, 32, 3), dtype=np.uint8)
    priors = np.zeros((6, 11, 32, 32), np.uint8)
    priors[:, 4, :, :16] = 255  # "image-left eye" region on the left half
    s = BatchSampler(hr, 4, priors=priors, augment=True, seed=3)
    a, b = s.batch(5, 8), s.batch(5, 8)
    assert all(torch.equal(a[k], b[k]) for k in a)  # pure function of (seed, step)
    assert not torch.equal(a["hr"], s.batch(6, 8)["hr"])
    # the image-left eye channel (4) is always on the left; flipped samples carry the region in
    # the image-right eye channel (5), on the right
    p = a["prior"]
    assert torch.all(p[:, 4, :, :12].sum(dim=(1, 2)) >= p[:, 4, :, 20:].sum(dim=(1, 2)))
    assert torch.all(p[:, 5, :, 20:].sum(dim=(1, 2)) >= p[:, 5, :, :12].sum(dim=(1, 2)))
    flipped = p[:, 5].sum(dim=(1, 2)) > 0
    assert 0 < int(flipped.sum()) < 8


def test_channels_last_trains_the_same_network(tmp_path, faces):
    """NHWC training (the default) is a memory layout, not a different model: same losses as NCHW
    up to float rounding, and the shipped weights are plain contiguous tensors."""
    runs = {}
    for cl in (True, False):
        t = Trainer(_cfg(tmp_path, f"cl_{cl}", steps=5, channels_last=cl))
        assert t.model.stem.weight.is_contiguous(memory_format=torch.channels_last) == cl
        runs[cl] = [t.train_step(k)["loss"] for k in range(5)]
        t.step = 5
        t.save_best(0.0)
    np.testing.assert_allclose(runs[True], runs[False], rtol=1e-4)
    state = torch.load(tmp_path / "cl_True" / "best.pt", weights_only=True)["model"]
    assert all(v.is_contiguous() for v in state.values())


def test_bf16_autocast_trains_the_same_losses_in_fp32_weights(tmp_path, faces):
    """precision=bf16 runs the forward passes (student and teacher) under bfloat16 autocast: the
    losses follow the fp32 run's to bf16 rounding, while weights, optimiser state and checkpoints
    stay fp32."""
    from pkdn_edge.models.checkpoint import export_weights

    export_weights(_tiny_teacher(), tmp_path / "teacher.pt")
    runs = {}
    for prec in ("fp32", "bf16"):
        t = Trainer(_cfg(tmp_path, prec, steps=6, precision=prec, teacher=str(tmp_path / "teacher.pt")))
        stats = [t.train_step(k) for k in range(6)]
        runs[prec] = [s["loss"] for s in stats]
        assert all(p.dtype == torch.float32 for p in t.model.parameters())
        assert all(np.isfinite(s["feat"]) and np.isfinite(s["out"]) for s in stats)
        t.step = 6
        t.save_best(0.0)
    np.testing.assert_allclose(runs["bf16"], runs["fp32"], rtol=3e-2)
    assert runs["bf16"] != runs["fp32"]  # autocast did run in bf16
    state = torch.load(tmp_path / "bf16" / "best.pt", weights_only=True)["model"]
    assert all(v.dtype in (torch.float32, torch.float16) for v in state.values() if v.is_floating_point())
    with pytest.raises(PKDNError, match="precision must be"):
        _cfg(tmp_path, "x", precision="fp16")


def test_mse_pixel_loss_is_the_mean_squared_error(tmp_path, faces):
    """pixel_loss=mse: the pixel term is the MSE of the step's own output (L1 still logged)."""
    import torch.nn.functional as F

    t = Trainer(_cfg(tmp_path, "mse", steps=2, pixel_loss="mse", w_pixel=2.0))
    b = {k: v.to(memory_format=t.memory_format) for k, v in t.sampler.batch(0, t.cfg.batch_size).items()}
    with torch.no_grad():
        sr, _ = t.model.forward_features(b["lr"], None)
    stats = t.train_step(0)
    assert stats["loss"] == pytest.approx(2.0 * F.mse_loss(sr, b["hr"]).item(), rel=1e-5)
    assert stats["l1"] == pytest.approx(F.l1_loss(sr, b["hr"]).item(), rel=1e-5)
    assert stats["loss"] < 2.0 * stats["l1"]  # errors below 1: squared is smaller, so not the L1 term
    with pytest.raises(PKDNError, match="pixel_loss must be"):
        _cfg(tmp_path, "x", pixel_loss="l2")


def test_ema_averages_the_weights_validates_them_and_resumes_bit_exactly(tmp_path, faces):
    """ema_decay: each step moves the average by (1 - decay) towards the live weights; best.pt holds the
    average, and an interrupted run resumes to the same average as a straight one."""
    t = Trainer(_cfg(tmp_path, "e", steps=6, ema_decay=0.75))
    before = {k: v.clone() for k, v in t.ema.model.state_dict().items()}
    t.train_step(0)
    live, avg = t.model.state_dict(), t.ema.model.state_dict()
    moved = [k for k in avg if avg[k].is_floating_point() and not torch.equal(live[k], before[k])]
    assert moved  # the step changed weights, and the average followed a quarter of the way
    for k in moved:
        torch.testing.assert_close(avg[k], 0.75 * before[k] + 0.25 * live[k])

    kw = dict(steps=12, ema_decay=0.9, val_every=12)  # one validation, at the end: best.pt is that average
    Trainer(_cfg(tmp_path, "ea", **kw)).run(progress=False)
    Trainer(_cfg(tmp_path, "eb", **kw)).run(stop_at=7, progress=False)  # an interrupted run ...
    Trainer(_cfg(tmp_path, "eb", **kw)).run(progress=False)  # ... resumed from eb/last.pt
    a = read_checkpoint(tmp_path / "ea" / "last.pt")
    b = read_checkpoint(tmp_path / "eb" / "last.pt")
    assert a["ema"].keys() == a["model"].keys()
    assert all(torch.equal(a["ema"][k], b["ema"][k]) for k in a["ema"])
    assert not all(torch.equal(a["ema"][k], a["model"][k]) for k in a["ema"])  # the average is not the live net
    best, meta = load_model(tmp_path / "ea" / "best.pt")
    assert meta["step"] == 12
    assert all(torch.equal(v, a["ema"][k]) for k, v in best.state_dict().items())

    Trainer(_cfg(tmp_path, "plain", steps=4)).run(progress=False)
    with pytest.raises(PKDNError, match="without ema_decay"):
        Trainer(_cfg(tmp_path, "plain", steps=8, ema_decay=0.9))
    with pytest.raises(PKDNError, match="ema_decay must be"):
        _cfg(tmp_path, "x", ema_decay=1.0)


def test_eval_flip_tta_adds_a_mirror_ensembled_row(tmp_path, faces):
    """``pkdn-train eval --tta flip``: one more row per student, the mean of the face's and its
    mirror's outputs; ``super_resolve`` refuses a teacher's prior (left/right regions)."""
    import json

    from pkdn_edge.train.cli import main
    from pkdn_edge.train.data import FaceData, to_tensor, to_uint8
    from pkdn_edge.train.degradations import bicubic_down
    from pkdn_edge.train.evaluate import super_resolve

    Trainer(_cfg(tmp_path, "run", steps=2)).run(progress=False)
    weights = str(tmp_path / "run" / "best.pt")
    out = tmp_path / "ev"
    assert main(["eval", "--weights", weights, "--faces", str(faces), "--out", str(out), "--threads", "1",
                 "--tta", "flip"]) == 0
    rows = json.loads((out / "eval.json").read_text())["rows"]
    models = ["bicubic", "student (run)", "student (run) +flip"]
    assert [(r["protocol"], r["model"]) for r in rows] == [(p, m) for p in ("paper", "camera") for m in models]
    assert rows[2]["psnr_ctcnet"] != rows[1]["psnr_ctcnet"]
    assert rows[3]["psnr_ctcnet"] < rows[0]["psnr_ctcnet"]  # the camera LR's bicubic is worse than the clean LR's
    model, _ = load_model(weights)
    hr = FaceData.load(faces, hr_size=32).hr[:4]
    lr = to_tensor(np.stack([bicubic_down(x, 4) for x in hr]))
    with torch.no_grad():
        want = 0.5 * (model(lr) + model(lr.flip(-1)).flip(-1))
    got = super_resolve(model, hr, 4, tta="flip")
    np.testing.assert_array_equal(got, to_uint8(want))
    with pytest.raises(PKDNError, match="tta is for students"):
        super_resolve(model, hr, 4, priors=np.zeros((4, 11, 32, 32), np.uint8), tta="flip")


def test_eval_runs_the_robustness_matrix_of_family_protocols(tmp_path, faces, capsys):
    """``pkdn-train eval --protocol matrix``: the eight frozen family protocols, each with its own
    bicubic row, and a matrix of gains (model × protocol) at the end of eval.md."""
    import json

    from pkdn_edge.train.camera import FAMILIES
    from pkdn_edge.train.cli import main

    Trainer(_cfg(tmp_path, "run", steps=2)).run(progress=False)
    out = tmp_path / "ev"
    args = ["eval", "--weights", str(tmp_path / "run" / "best.pt"), "--faces", str(faces), "--out", str(out),
            "--threads", "1", "--protocol", "clean", "matrix", "--grid", "2"]
    assert main(args) == 0
    assert "precision: torch fp32, openvino f32 (fp32 requested)" in capsys.readouterr().out
    report = json.loads((out / "eval.json").read_text())
    assert report["protocols"] == list(FAMILIES) and report["family_protocol_version"] == 1
    assert [(r["protocol"], r["model"]) for r in report["rows"]] == [
        (p, m) for p in FAMILIES for m in ("bicubic", "student (run)")]
    md = (out / "eval.md").read_text()
    assert "| scale | model | " + " | ".join(FAMILIES) + " |" in md
    gains = [f"{r['gain_db']:+.2f}" for r in report["rows"] if r["model"] != "bicubic"]
    assert "| ×4 | student (run) | " + " | ".join(gains) + " |" in md
    assert (out / "grid_x4_mixed.png").exists()
    capsys.readouterr()
    assert main(args[:-3] + ["--protocol", "webcam"]) == 2  # a usage error: one line, no usage dump
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("error: argument --protocol: invalid choice: 'webcam'"), err


def test_eval_protocol_paper_and_its_alias_bicubic(tmp_path, faces):
    """``--protocol paper`` is the paper protocol (PIL bicubic ↓s), the default with ``camera``;
    ``bicubic``, its former name, still works and keeps its name in the rows; both together run once."""
    import json

    from pkdn_edge.train.camera import DEFAULT_PROTOCOLS, PROTOCOLS, protocol_lr
    from pkdn_edge.train.cli import main

    assert DEFAULT_PROTOCOLS == ("paper", "camera") and "paper" in PROTOCOLS
    hr = _first_faces(faces)
    assert np.array_equal(protocol_lr(hr, 4, "paper"), protocol_lr(hr, 4, "bicubic"))
    Trainer(_cfg(tmp_path, "run", steps=2)).run(progress=False)
    weights = str(tmp_path / "run" / "best.pt")
    reports = {}
    for name, protocol in (("paper", ["paper"]), ("bicubic", ["bicubic", "paper"])):
        out = tmp_path / name
        assert main(["eval", "--weights", weights, "--faces", str(faces), "--out", str(out), "--threads", "1",
                     "--grid", "2", "--protocol", *protocol]) == 0
        reports[name] = json.loads((out / "eval.json").read_text())
        assert reports[name]["protocols"] == [name] and {r["protocol"] for r in reports[name]["rows"]} == {name}
        assert (out / "grid_x4.png").exists() and f"| ×4 | {name} | student (run) |" in (out / "eval.md").read_text()
    strip = [{k: v for k, v in r.items() if k != "protocol"} for r in reports["paper"]["rows"]]
    assert strip == [{k: v for k, v in r.items() if k != "protocol"} for r in reports["bicubic"]["rows"]]


def _first_faces(faces):
    from pkdn_edge.train.data import FaceData

    return FaceData.load(faces, hr_size=32).hr[:4]


def test_usage_errors_of_the_train_clis_are_one_line(capsys):
    """Every argparse in train/ is a CLIParser run inside run_cli: a bad flag or choice is one
    ``error: ... (see PROG --help)`` line on stderr, nothing on stdout, exit 2."""
    import subprocess
    import sys

    from pkdn_edge.train import camera_figure, cli, eval_priors, ship, warmstart

    cases = [(cli.main, ["eval", "--protocol", "nope"], "pkdn-train eval"), (cli.main, ["trian"], "pkdn-train"),
             (cli.main, ["student", "--max-minutes", "x"], "pkdn-train student"),
             (ship.main, ["--bogus"], "python -m pkdn_edge.train.ship"),
             (warmstart.main, [], "python -m pkdn_edge.train.warmstart"),
             (eval_priors.main, ["--bogus"], "python -m pkdn_edge.train.eval_priors"),
             (camera_figure.main, ["--faces", "x", "--out", "y.png", "--preset", "nope"],
              "python -m pkdn_edge.train.camera_figure")]
    for main, argv, prog in cases:
        assert main(argv) == 2, argv
        out, err = capsys.readouterr()
        assert out == "" and len(err.splitlines()) == 1, (argv, err)
        assert err.startswith("error: ") and err.rstrip().endswith(f"(see {prog} --help)"), err
    exe = Path(sys.executable).parent / "pkdn-train"
    if exe.exists():  # the installed console script, as the README promises
        r = subprocess.run([str(exe), "eval", "--protocol", "nope"], capture_output=True, text=True, timeout=120)
        assert r.returncode == 2 and r.stdout == "" and len(r.stderr.splitlines()) == 1, r.stderr
        assert r.stderr.startswith("error: argument --protocol: invalid choice: 'nope'"), r.stderr


def test_config_values_take_the_types_of_the_settings():
    """YAML 1.1 reads ``2e-4`` as a string: the config gives it the setting's type, or says why not."""
    cfg = load_config(overrides=["lr=2e-4", "steps=1e3", "min_sharpness=12"])
    assert cfg.lr == 2e-4 and isinstance(cfg.lr, float)
    assert cfg.steps == 1000 and isinstance(cfg.steps, int)
    assert cfg.min_sharpness == 12.0
    with pytest.raises(PKDNError, match="'lr' must be a float"):
        load_config(overrides=["lr=fast"])
    with pytest.raises(PKDNError, match="'steps' must be a int"):
        load_config(overrides=["steps=2.5"])


def test_face_sharpness_ranks_detail_and_filters_after_the_split(tmp_path, faces):
    from pkdn_edge.train.data import FaceData, face_sharpness, split_indices

    rng = np.random.default_rng(0)
    sharp = rng.integers(0, 255, (1, 128, 128, 3), dtype=np.uint8)
    soft = cv2.GaussianBlur(sharp[0], (0, 0), 2.0)[None]
    s = face_sharpness(np.concatenate([sharp, soft]))
    assert s[0] > s[1] + 10

    data = FaceData.load(faces, hr_size=32, cache_dir=tmp_path / "cache")
    scores = face_sharpness(data.hr)
    cut = float(np.median(scores))
    t = Trainer(_cfg(tmp_path, "sharp", steps=1, min_sharpness=cut))
    tr, va = split_indices(len(data), 8, 0)
    names = set(t.train_data.names) | set(t.val_data.names)
    assert names == {data.names[i] for i in np.concatenate([tr, va]) if scores[i] >= cut}
    assert set(t.val_data.names) <= {data.names[i] for i in va}  # held-out faces stay held out
    with pytest.raises(PKDNError, match="leaves 0 training"):
        Trainer(_cfg(tmp_path, "none", steps=1, min_sharpness=float(scores.max()) + 1))


def test_conv_feature_adapters_start_as_the_identity():
    from pkdn_edge.train.losses import FeatureAdapters

    conv = FeatureAdapters([8, 12], [8, 16], kind="conv")
    ident = FeatureAdapters([8, 12], [8, 16], kind="identity")
    assert isinstance(conv.maps[0], torch.nn.Conv2d) and isinstance(ident.maps[0], torch.nn.Identity)
    feats = [torch.randn(2, 8, 5, 5), torch.randn(2, 12, 3, 3)]
    out = conv(feats)
    torch.testing.assert_close(out[0], feats[0])
    assert out[1].shape == (2, 16, 3, 3)
    assert sum(p.numel() for p in conv.parameters()) > sum(p.numel() for p in ident.parameters())
    with pytest.raises(ValueError, match="adapter kind"):
        FeatureAdapters([8], [8], kind="mlp")


def test_eval_on_the_validation_split_of_a_config(tmp_path, faces, capsys):
    """``pkdn-train eval --val-of CONFIG``: the held-out faces the run validated on, nothing else."""
    import json

    import yaml

    from pkdn_edge.train.cli import main

    cfg = _cfg(tmp_path, "run", steps=2)
    Trainer(cfg).run(progress=False)
    conf = tmp_path / "run.yaml"
    conf.write_text(yaml.safe_dump(cfg.to_dict()))
    out = tmp_path / "val_eval"
    assert main(["eval", "--weights", str(tmp_path / "run" / "best.pt"), "--val-of", str(conf), "--out", str(out),
                 "--threads", "1"]) == 0
    report = json.loads((out / "eval.json").read_text())
    assert report["num_faces"] == cfg.num_val and report["faces"].startswith("validation split of")
    best = load_model(tmp_path / "run" / "best.pt")[1]
    student = next(r for r in report["rows"] if r["model"] != "bicubic")
    assert student["psnr_ctcnet"] == pytest.approx(best["val_psnr"], abs=1e-6)  # the run's own validation PSNR
    assert main(["eval", "--weights", str(tmp_path / "run" / "best.pt"), "--set", "num_val=4"]) == 2
    assert "use it with --val-of" in capsys.readouterr().err


@pytest.mark.parametrize("role", ["student", "teacher"])
def test_ship_writes_fp16_weights_a_card_and_the_eval_of_what_it_wrote(tmp_path, faces, role):
    """`python -m pkdn_edge.train.ship`: a student and a teacher run become fp16 weights + card
    (into the folder given, never the repo's, under the name given), evaluated as shipped; the
    teacher card names its prior."""
    from pkdn_edge.train.ship import main as ship_main

    run = tmp_path / "run"
    Trainer(_cfg(tmp_path, "run", role=role, steps=6, val_every=6, ckpt_every=6, data_limit=24)).run(progress=False)
    out, report = tmp_path / "shipped", tmp_path / "report"
    assert ship_main(["--run", str(run), "--faces", str(faces), "--out", str(out), "--report", str(report),
                      "--command", "pkdn-train ...", "--note", "from init",
                      *(["--name", "pkdn_teacher_x4_wide"] if role == "teacher" else [])]) == 0
    stem = "pkdn_edge_x4" if role == "student" else "pkdn_teacher_x4_wide"
    assert sorted(p.name for p in out.iterdir()) == [f"{stem}.json", f"{stem}.pt"]
    model, _ = load_model(out / f"{stem}.pt")
    assert model.cfg.role == role and model.cfg.widths == (8, 12)
    assert all(v.dtype == torch.float16 for v in torch.load(out / f"{stem}.pt", weights_only=True)["model"].values()
               if v.is_floating_point())
    card = json.loads((out / f"{stem}.json").read_text())
    assert card["role"] == role and card["training"]["steps"] == 6 and card["commands"] == ["pkdn-train ..."]
    assert card["training"]["note"] == "from init"
    assert [(r["protocol"], r["model"]) for r in card["eval"]["rows"]] == [
        (p, m) for p in ("paper", "camera") for m in ("bicubic", f"{role} ({stem})")]
    assert ("prior" in card["preprocessing"]) == (role == "teacher")
    assert json.loads((report / "eval.json").read_text())["rows"] == card["eval"]["rows"]


@pytest.mark.parametrize("path", sorted((REPO / "train" / "configs").rglob("*.yaml")), ids=lambda p: p.stem)
def test_every_config_loads_and_the_committed_weights_it_names_fit(path, monkeypatch):
    """Each config in train/configs parses, and a teacher / init file it names inside the repo (not a
    run folder of the user's) exists and is a network of the config's scale and the right role."""
    monkeypatch.chdir(REPO)  # configs name files relative to the repository root
    cfg = load_config(path)
    for key, role in (("teacher", "teacher"), ("init", cfg.role)):
        ref = getattr(cfg, key)
        if ref and not ref.startswith("runs/"):
            model, _ = load_model(ref)
            ok = {(role, cfg.scale)} | ({("teacher", cfg.scale)} if key == "init" else set())  # warm start
            assert (model.cfg.role, model.cfg.scale) in ok, f"{path}: {key} {ref}"


def _tiny_teacher(seed=0):
    from pkdn_edge.models import create_model

    torch.manual_seed(seed)
    teacher = create_model("edge", 4, "teacher", **{k: tuple(v) if isinstance(v, list) else v for k, v in TINY.items()})
    with torch.no_grad():  # random biases, so that the fold below is not a sum of zeros
        for p in teacher.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return teacher.eval()


def test_student_from_teacher_keeps_the_image_path_and_folds_the_mean_prior():
    """A teacher whose guides ignore the prior and the student made from it compute the same
    image; with a prior, each student guide conv equals the teacher's fed the mean prior
    features (away from the zero-padded border)."""
    from pkdn_edge.train.warmstart import student_from_teacher

    teacher = _tiny_teacher()
    lr, prior = torch.rand(2, 3, 8, 8), torch.rand(2, 11, 32, 32)
    student = student_from_teacher(teacher, prior)
    assert student.cfg.role == "student" and student.cfg.widths == teacher.cfg.widths
    assert student.prior_encoder is None
    pfeats = teacher.prior_encoder(prior)
    for i, (tf, sf) in enumerate(zip(teacher.fusions, student.fusions)):
        x = torch.rand(2, sf.guide.in_channels, 8 >> i, 8 >> i)
        mean = pfeats[i].mean(dim=(0, 2, 3))[None, :, None, None].expand(2, -1, *x.shape[2:])
        want = tf.guide(torch.cat([x, mean], 1))[..., 1:-1, 1:-1]
        assert torch.allclose(sf.guide(x)[..., 1:-1, 1:-1], want, atol=1e-5)
    with torch.no_grad():
        for f in teacher.fusions:
            f.guide.weight[:, f.guide.in_channels - teacher.cfg.prior_width :] = 0
    student = student_from_teacher(teacher)
    assert torch.equal(student(lr), teacher(lr, prior))
    with pytest.raises(PKDNError, match="needs a teacher"):
        student_from_teacher(student)


def test_a_student_run_can_start_from_a_teacher_checkpoint(tmp_path, faces):
    """`init: <teacher>` in a student config starts from the converted teacher (no prior input)."""
    from pkdn_edge.models.checkpoint import export_weights

    export_weights(_tiny_teacher(), tmp_path / "teacher.pt")
    trainer = Trainer(_cfg(tmp_path, "run", init=str(tmp_path / "teacher.pt"), steps=4, data_limit=24))
    assert trainer.model.cfg.role == "student" and trainer.model.prior_encoder is None
    teacher, _ = load_model(tmp_path / "teacher.pt")
    assert torch.equal(trainer.model.stem.weight, teacher.stem.weight)
    assert trainer.run(progress=False)["done"]


def test_warmstart_cli_scores_the_teacher_and_its_students(tmp_path, faces, capsys):
    """`python -m pkdn_edge.train.warmstart --config C` validates the teacher C's init names, then
    the students made from it."""
    import yaml

    from pkdn_edge.models.checkpoint import export_weights
    from pkdn_edge.train.warmstart import main

    export_weights(_tiny_teacher(), tmp_path / "teacher.pt")
    cfg = _cfg(tmp_path, "run", init=str(tmp_path / "teacher.pt"), data_limit=24).to_dict()
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["--config", str(tmp_path / "c.yaml")]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if "validation faces" in ln]
    assert [ln.split("  ")[0] for ln in lines] == [
        "teacher, with its prior", "student from it, prior dropped", "student from it, mean prior folded"]
    assert all(float(ln.split()[-6]) > 10 for ln in lines)  # PSNR in dB
