"""Bit-exact resume: a run stopped (or killed) and resumed by a new Trainer from ``last.pt`` ends with the
weights, optimiser state, per-step learning rates, losses and log of a run trained straight through.

``tests/test_train.py::test_resume_is_bit_exact`` already compares final weights after ``stop_at``; this
module adds the learning-rate schedule step by step (warm-up and cosine), the optimiser state, a kill
between periodic checkpoints (the log trimmed back to the checkpoint), and the ``block: rep`` model.
"""

import csv
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from pkdn_edge.models.checkpoint import load_model
from pkdn_edge.train.config import load_config
from pkdn_edge.train.loop import Trainer, learning_rate

REPO = Path(__file__).resolve().parents[1]
TINY = {"widths": [8, 12], "depth": 1, "bottleneck_depth": 1, "refine_width": 8}
STEPS = 10
TIMING = {"elapsed_s", "data_s"}  # log columns that measure time, not training


class RecordingTrainer(Trainer):
    """A Trainer that records, for every step it trains, the optimiser's learning rate and the loss."""

    def __init__(self, cfg) -> None:
        super().__init__(cfg)
        self.seen: list[tuple[int, float, float]] = []

    def train_step(self, step: int) -> dict[str, float]:
        stats = super().train_step(step)
        self.seen.append((step, self.opt.param_groups[0]["lr"], stats["loss"]))
        return stats


@pytest.fixture()
def faces(tmp_path):
    """16 synthetic 32×32 'faces' (a coloured ellipse with eyes and a mouth) in a temporary folder."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "faces"
    folder.mkdir()
    for i in range(16):
        img = np.full((32, 32, 3), rng.integers(0, 255, 3), np.uint8)
        cx, cy = 16 + int(rng.integers(-2, 3)), 16 + int(rng.integers(-2, 3))
        cv2.ellipse(img, (cx, cy), (10, 13), 0, 0, 360, [int(v) for v in rng.integers(80, 255, 3)], -1)
        for dx in (-4, 4):
            cv2.circle(img, (cx + dx, cy - 3), 2, (20, 20, 20), -1)
        cv2.line(img, (cx - 4, cy + 5), (cx + 4, cy + 5), (40, 0, 90), 1)
        cv2.imwrite(str(folder / f"face_{i:02d}.png"), cv2.GaussianBlur(img, (3, 3), 0.8))
    return folder


def _cfg(tmp_path: Path, out: str, block: str):
    return load_config(
        role="student", scale=4, data=str(tmp_path / "faces"), hr_size=32, num_val=4, model={**TINY, "block": block},
        steps=STEPS, batch_size=4, lr=3e-3, lr_min=1e-5, warmup_steps=3, log_every=1, val_every=STEPS, ckpt_every=4,
        out=str(tmp_path / out), cache_dir=str(tmp_path / "cache"), threads=1, device="cpu", augment=True,
    )


def _log(run: Path) -> list[dict]:
    with (run / "log.csv").open(newline="") as fh:
        return [{k: v for k, v in row.items() if k not in TIMING} for row in csv.DictReader(fh)]


def _assert_same_run(a: Path, b: Path) -> None:
    ca, cb = torch.load(a / "last.pt", weights_only=True), torch.load(b / "last.pt", weights_only=True)
    assert ca["step"] == cb["step"] == STEPS
    assert ca["model"].keys() == cb["model"].keys()
    assert all(torch.equal(ca["model"][k], cb["model"][k]) for k in ca["model"])
    oa, ob = ca["optimizer"], cb["optimizer"]
    assert oa["param_groups"] == ob["param_groups"]  # includes the last learning rate
    for i, sa in oa["state"].items():
        assert all(torch.equal(sa[k], ob["state"][i][k]) for k in sa)  # Adam's step count and moments
    assert _log(a) == _log(b)  # every logged step: loss, l1, lr, validation


@pytest.mark.parametrize("block", ["plain", "rep"])
def test_stopped_and_killed_runs_resume_bit_exactly_with_the_same_schedule(tmp_path, faces, block):
    straight = RecordingTrainer(_cfg(tmp_path, "straight", block))
    assert straight.model.cfg.block == block  # `model: {block: rep}` reaches create_model
    straight.run(progress=False)
    assert [s for s, _, _ in straight.seen] == list(range(STEPS))
    lrs = [lr for _, lr, _ in straight.seen]
    assert lrs == [learning_rate(s, straight.cfg) for s in range(STEPS)]
    assert lrs[:3] == sorted(lrs[:3]) and lrs[2:] == sorted(lrs[2:], reverse=True)  # warm-up, then cosine down

    # stopped at k = 6 (mid cosine, between checkpoints): a new Trainer resumes from last.pt
    first = RecordingTrainer(_cfg(tmp_path, "stopped", block))
    first.run(stop_at=6, progress=False)
    resumed = RecordingTrainer(_cfg(tmp_path, "stopped", block))
    assert resumed.step == 6
    resumed.run(progress=False)
    assert first.seen + resumed.seen == straight.seen  # the same (step, lr, loss), float for float
    _assert_same_run(tmp_path / "straight", tmp_path / "stopped")

    # killed at step 7 after the periodic checkpoint of step 4: the log's steps 5-7 are redone
    killed = RecordingTrainer(_cfg(tmp_path, "killed", block))
    killed.run(stop_at=4, progress=False)
    shutil.copy(tmp_path / "killed" / "last.pt", tmp_path / "step4.pt")
    killed.run(stop_at=7, progress=False)
    shutil.copy(tmp_path / "step4.pt", tmp_path / "killed" / "last.pt")  # as if the process died at step 7
    assert len(_log(tmp_path / "killed")) == 7
    after_kill = RecordingTrainer(_cfg(tmp_path, "killed", block))
    assert after_kill.step == 4 and len(_log(tmp_path / "killed")) == 4  # log trimmed to the checkpoint
    after_kill.run(progress=False)
    assert after_kill.seen == straight.seen[4:]
    _assert_same_run(tmp_path / "straight", tmp_path / "killed")

    best, _ = load_model(tmp_path / "straight" / "best.pt")  # what eval, ship and export load: plain form
    assert best.cfg.block == "plain"

    for run in ("straight", "stopped", "killed"):  # every run folder is outside the checkout
        assert not (tmp_path / run).resolve().is_relative_to(REPO)


def test_a_rep_fine_tune_of_a_plain_checkpoint_starts_at_the_plain_model(tmp_path, faces):
    """``model: {block: rep}`` with a plain ``init`` checkpoint: the Trainer splits it into branches
    (:func:`pkdn_edge.models.from_plain`), so step 0 computes exactly what the plain checkpoint does."""
    plain_run = Trainer(_cfg(tmp_path, "plain", "plain"))
    plain_run.run(stop_at=2, progress=False)
    plain, _ = load_model(tmp_path / "plain" / "last.pt")
    cfg = _cfg(tmp_path, "rep_ft", "rep")
    cfg.init = str(tmp_path / "plain" / "last.pt")
    rep = Trainer(cfg).model
    assert rep.cfg.block == "rep" and plain.cfg.block == "plain"
    x = torch.rand(2, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(rep.eval()(x), plain.eval()(x), atol=1e-5, rtol=0)
