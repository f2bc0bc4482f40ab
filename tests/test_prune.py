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


# ------------------------------------------------------------------------------------------------
# consistency of the channel bookkeeping across presets, scales and ratios


def _id_model(model):
    """A copy of ``model`` whose parameter entries hold their own 1-based global index (exact in fp32)."""
    import copy

    ids = copy.deepcopy(model)
    start = 1
    with torch.no_grad():
        for p in ids.parameters():
            p.copy_(torch.arange(start, start + p.numel(), dtype=torch.float64).reshape(p.shape))
            start += p.numel()
    assert start < 2**24
    return ids


@pytest.mark.parametrize("preset,scale,ratio", [("edge", 4, 0.5), ("edge", 8, 0.3), ("paper", 8, 0.6)])
def test_pruned_model_equals_the_original_with_dropped_channels_zeroed(preset, scale, ratio):
    """Independent of the coupling list: tag every weight entry with an id, prune the tagged copy with
    the real model's plan, zero every entry of the real model that was *not* copied. Dropped channels
    are then dead (no input, no output, no bias), so the slim model must compute exactly the same."""
    from pkdn_edge.export.prune import apply_pruning, plan_pruning

    torch.manual_seed(0)
    m = create_model(preset, scale).eval()
    plan = plan_pruning(m, ratio)
    slim = apply_pruning(m, plan).eval()
    copied = torch.cat([p.detach().reshape(-1) for p in apply_pruning(_id_model(m), plan).parameters()]).long()
    keep = torch.zeros(sum(p.numel() for p in m.parameters()) + 1, dtype=torch.bool)
    keep[copied] = True
    with torch.no_grad():
        start = 1
        for p in m.parameters():
            p.mul_(keep[start : start + p.numel()].reshape(p.shape))
            start += p.numel()
    lr = torch.rand(2, 3, 128 // scale, 128 // scale)
    with torch.no_grad():
        y_full, f_full = m.forward_features(lr)
        y_slim, f_slim = slim.forward_features(lr)
    assert y_slim.shape == (2, 3, 128, 128)
    torch.testing.assert_close(y_slim, y_full, atol=2e-5, rtol=1e-4)
    # distilled features: the slim ones are the kept channels of the full ones, the rest is zero
    for idx, a, b in zip(plan.feature_index(), f_slim, f_full):
        torch.testing.assert_close(a, b[:, idx], atol=2e-5, rtol=1e-4)
        rest = torch.ones(b.shape[1], dtype=torch.bool)
        rest[idx] = False
        assert not b[:, rest].any()


@pytest.mark.parametrize("preset", ["edge", "paper"])
@pytest.mark.parametrize("scale", [2, 4, 8])
@pytest.mark.parametrize("ratio", [0.25, 0.5, 0.75])
def test_pixel_shuffle_groups_and_widths_stay_consistent(preset, scale, ratio):
    from pkdn_edge.export.prune import plan_pruning

    m = create_model(preset, scale)
    plan = plan_pruning(m, ratio)
    slim = prune_student(m, ratio)
    w, w0 = slim.cfg.widths, m.cfg.widths
    assert all(a <= b for a, b in zip(w, w0)) and slim.cfg.refine_width <= m.cfg.refine_width
    for j, up in enumerate(slim.ups):  # decoder pixel-shuffle: 4 outputs per channel of stage j
        assert (up.conv.in_channels, up.conv.out_channels) == (w[j + 1], 4 * w[j])
        assert slim.ffbs[j].mix.in_channels == w[j] * (len(w) + 1)
    for i, down in enumerate(slim.downs):  # pixel-unshuffle: 4 inputs per channel of stage i
        assert (down.conv.in_channels, down.conv.out_channels) == (4 * w[i], w[i + 1])
    chans = [w[0]] + slim.upsampler.widths
    for k, (up, ref) in enumerate(zip(slim.upsampler.ups, slim.upsampler.refines)):
        assert (up.conv.in_channels, up.conv.out_channels) == (chans[k], 4 * chans[k + 1])
        assert ref.in_channels == ref.out_channels == chans[k + 1]
    for seq in list(slim.enc_blocks) + list(slim.dec_blocks) + [slim.bottleneck]:
        for b in seq:
            assert b.conv1.out_channels == b.conv2.in_channels <= b.conv1.in_channels
    # kept-channel lists: sorted, unique, within the source widths, one per distilled feature
    index = plan.feature_index()
    assert [len(i) for i in index] == slim.feature_channels
    assert all(i == sorted(set(i)) and max(i) < c for i, c in zip(index, m.feature_channels))
    assert plan.to_meta()["feature_channels_before"] == m.feature_channels
    lr = torch.rand(1, 3, 128 // scale, 128 // scale)
    with torch.no_grad():
        assert slim.eval()(lr).shape == (1, 3, 128, 128)


def test_selection_adapters_map_kept_channels_back_to_teacher_positions():
    from pkdn_edge.export.prune import plan_pruning
    from pkdn_edge.train.losses import FeatureAdapters

    m = create_model("edge", 4)
    plan = plan_pruning(m, 0.5)
    slim = prune_student(m, 0.5).eval()
    teacher_channels = create_model("edge", 4, "teacher").feature_channels
    ad = FeatureAdapters(slim.feature_channels, teacher_channels)
    assert ad.init_selection(plan.feature_index()) == len(teacher_channels)
    with torch.no_grad():
        _, feats = slim.forward_features(torch.rand(1, 3, 32, 32))
        mapped = ad(feats)
    for idx, f, g in zip(plan.feature_index(), feats, mapped):
        assert torch.equal(g[:, idx], f)
        rest = torch.ones(g.shape[1], dtype=torch.bool)
        rest[idx] = False
        assert not g[:, rest].any()  # zeros everywhere else
