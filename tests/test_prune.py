"""Structured pruning: real channel removal with consistent pixel-shuffle groups."""

import pytest
import torch

from pkdn_edge.export.prune import channel_importance, prune_student
from pkdn_edge.models import create_model
from pkdn_edge.models.checkpoint import export_weights, load_model
from pkdn_edge.models.complexity import count_macs, count_params


@pytest.mark.parametrize("scale", [4, 8])
def test_half_pruning_halves_widths_and_keeps_interface(scale):
    m = create_model("edge", scale).eval()
    slim = prune_student(m, 0.5).eval()
    assert slim.cfg.widths == tuple(w // 2 for w in m.cfg.widths)
    assert slim.cfg.refine_width == m.cfg.refine_width // 2
    assert slim.enc_blocks[0][0].conv1.out_channels == m.cfg.widths[0] // 2
    # pixel-shuffle convs keep r² = 4 outputs per kept channel
    assert slim.ups[0].conv.out_channels == 4 * slim.cfg.widths[0]
    assert slim.upsampler.ups[0].conv.out_channels == 4 * slim.cfg.refine_width
    lr = torch.rand(2, 3, 128 // scale, 128 // scale)
    with torch.no_grad():
        assert slim(lr).shape == (2, 3, 128, 128)
    macs = count_macs(slim, lr[:1])
    assert macs < 0.4 * count_macs(m, lr[:1])
    assert count_params(slim) < 0.35 * count_params(m)


def test_ratio_zero_is_an_exact_copy():
    m = create_model("edge", 8).eval()
    slim = prune_student(m, 0.0).eval()
    lr = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(slim(lr), m(lr))


def test_keeps_the_channels_with_the_largest_group_norm():
    m = create_model("edge", 8).eval()
    strong = torch.tensor([1, 5, 7, 30, 40])
    with torch.no_grad():
        m.stem.weight[strong] *= 50
        m.enc_blocks[0][0].conv1.weight[strong] *= 50  # inner channels of the first block
    imp = channel_importance(m)
    slim = prune_student(m, 0.9)  # keeps 5 of 48 channels
    assert slim.cfg.widths[0] == 5
    expected = m.stem.weight[strong]
    assert torch.equal(slim.stem.weight, expected)
    assert torch.topk(imp["M.enc.0.0"], 5).indices.sort().values.tolist() == strong.tolist()


def test_pruned_checkpoint_round_trips(tmp_path):
    slim = prune_student(create_model("edge", 4), 0.5)
    export_weights(slim, tmp_path / "p.pt")
    again, _ = load_model(tmp_path / "p.pt")
    assert again.cfg == slim.cfg


def test_teacher_and_bad_ratio_are_refused():
    with pytest.raises(ValueError, match="teacher"):
        prune_student(create_model("edge", 4, "teacher"), 0.5)
    with pytest.raises(ValueError, match="ratio"):
        prune_student(create_model("edge", 4), 1.0)
