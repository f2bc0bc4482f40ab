"""One settings validator (issue 30): training configs, ``--set`` and pkdn-compress settings get
types and ranges checked, numbers must be finite, threads >= 1; a bad value is one ``error:`` line
and exit 2, before any data is read or any folder is made."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("torch")

from pkdn_edge.errors import PKDNError  # noqa: E402
from pkdn_edge.train.config import TrainConfig, load_config  # noqa: E402

BAD_SETS = [
    ("steps=.inf", "steps"),
    ("steps=1e400", "steps"),
    ("betas=0.9", "betas"),
    ("betas=[0.9, .nan]", "betas"),
    ("threads=0", "threads"),
    ("==", "key"),
    ("=5", "key"),
    ("lr=.nan", "lr"),
    ("lr=.inf", "lr"),
    ("batch_size=true", "batch_size"),
    ("augment=3", "augment"),
    ("w_out=-1", "w_out"),
    ("seed=-1", "seed"),
    ("camera=[1, 2]", "camera"),
    ("model=5", "model"),
    ("data_limit=-3", "data_limit"),
    ("grad_clip=.inf", "grad_clip"),
    ("device=tpu", "device"),
    ("layout=flat", "layout"),
    ("teacher=[a]", "teacher"),
    ("lr=!!python/name:os.system", "lr"),
]


@pytest.mark.parametrize("item, key", BAD_SETS)
def test_bad_set_values_are_one_error_line_and_exit_2(item, key, tmp_path, capsys):
    from pkdn_edge.train.cli import main

    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"data: {tmp_path / 'no_faces'}\nout: {tmp_path / 'run'}\n")
    assert main(["student", "--config", str(cfg), "--set", item]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and key in err[0], err
    assert "Traceback" not in err[0] and not (tmp_path / "run").exists()


@pytest.mark.parametrize("text, key", [
    ("steps: .inf", "steps"), ("betas: 0.9", "betas"), ("threads: 0", "threads"), ("lr: .nan", "lr"),
    ("hr_size: 100", "hr_size"), ("num_val: 0", "num_val"), ("feat_decay_steps: -1", "feat_decay_steps"),
])
def test_bad_yaml_values_are_refused_too(text, key, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text + "\n")
    with pytest.raises(PKDNError, match=key):
        load_config(cfg)


def test_direct_construction_uses_the_same_validator():
    with pytest.raises(PKDNError, match="threads"):
        TrainConfig(threads=0)
    with pytest.raises(PKDNError, match="lr"):
        TrainConfig(lr=float("inf"))
    with pytest.raises(PKDNError, match="betas"):
        TrainConfig(betas=0.9)


def test_good_values_still_load_with_their_types():
    cfg = load_config(overrides=["steps=1e3", "lr=2e-4", "betas=[0.8, 0.95]", "threads=1", "teacher=", "camera=",
                                 "augment=false"])
    assert cfg.steps == 1000 and isinstance(cfg.steps, int) and cfg.lr == 2e-4 and cfg.betas == (0.8, 0.95)
    assert cfg.threads == 1 and cfg.teacher == "" and cfg.camera == {} and cfg.augment is False


def test_compress_refuses_bad_settings_before_making_its_out_folder(tmp_path, capsys):
    pytest.importorskip("openvino")
    from pkdn_edge.export.compress.cli import main

    weights = Path(__file__).resolve().parents[1] / "pkdn_edge" / "weights" / "pkdn_edge_x4.pt"
    base = ["--weights", str(weights), "--out", str(tmp_path / "out"), "--int8", "none", "--finetune-steps", "0"]
    for extra, key in ((["--set", "=="], "key"), (["--set", "betas=0.9"], "betas"),
                       (["--set", "lr_min=.inf"], "lr_min"),
                       (["--finetune-lr", "inf"], "finetune-lr"), (["--prune", "nan"], "prune"),
                       (["--max-drop", "inf"], "max-drop"), (["--threads", "0"], "threads")):
        assert main(base + extra) == 2, extra
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and key in err[0], (extra, err)
        assert not (tmp_path / "out").exists(), extra


def test_degradation_and_protocol_names_have_one_list_and_old_names_still_load():
    """``DEGRADATIONS`` is the one list of training degradations (the validator's and BatchSampler's);
    ``webcam`` (the old name of ``blur_noise_jpeg``) and ``paper`` (= ``bicubic``) load as the canonical
    names, so checkpoints and log.csv columns keep them."""
    import numpy as np
    import torch

    from pkdn_edge.train.config import CHOICES
    from pkdn_edge.train.data import BatchSampler
    from pkdn_edge.train.degradations import DEGRADATIONS

    assert CHOICES["degradation"] is DEGRADATIONS
    assert load_config(overrides=["degradation=webcam"]).degradation == "blur_noise_jpeg"
    cfg = load_config(overrides=["degradation=paper", "select_on=paper"])
    assert (cfg.degradation, cfg.select_on) == ("bicubic", "bicubic")
    hr = np.random.default_rng(0).integers(0, 255, (6, 32, 32, 3), dtype=np.uint8)
    old, new = (BatchSampler(hr, 4, d, augment=False, seed=3).batch(5, 4) for d in ("webcam", "blur_noise_jpeg"))
    assert all(torch.equal(old[k], new[k]) for k in new)
    with pytest.raises(PKDNError, match="unknown degradation"):
        BatchSampler(hr, 4, "jpeg")
