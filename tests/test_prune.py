"""Structured pruning: real channel removal with consistent pixel-shuffle groups."""

import pytest
import torch

from pkdn_edge.export.compress.prune import channel_importance, prune_student
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


def _zero_dropped(m, plan) -> None:
    """Zero, in place, every weight of ``m`` that ``apply_pruning(m, plan)`` does not copy (found by
    pruning a copy of ``m`` whose weights are their own indices), so ``m`` computes what the slim model does."""
    from pkdn_edge.export.compress.prune import apply_pruning

    copied = torch.cat([p.detach().reshape(-1) for p in apply_pruning(_id_model(m), plan).parameters()]).long()
    keep = torch.zeros(sum(p.numel() for p in m.parameters()) + 1, dtype=torch.bool)
    keep[copied] = True
    with torch.no_grad():
        start = 1
        for p in m.parameters():
            p.mul_(keep[start : start + p.numel()].reshape(p.shape))
            start += p.numel()


@pytest.mark.parametrize("preset,scale,ratio", [("edge", 4, 0.5), ("edge", 8, 0.3), ("paper", 8, 0.6)])
def test_pruned_model_equals_the_original_with_dropped_channels_zeroed(preset, scale, ratio):
    """Independent of the coupling list: tag every weight entry with an id, prune the tagged copy with
    the real model's plan, zero every entry of the real model that was *not* copied. Dropped channels
    are then dead (no input, no output, no bias), so the slim model must compute exactly the same."""
    from pkdn_edge.export.compress.prune import apply_pruning, plan_pruning

    torch.manual_seed(0)
    m = create_model(preset, scale).eval()
    plan = plan_pruning(m, ratio)
    slim = apply_pruning(m, plan).eval()
    _zero_dropped(m, plan)
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
    from pkdn_edge.export.compress.prune import plan_pruning

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
    from pkdn_edge.export.compress.prune import plan_pruning
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


# ------------------------------------------------------------------------------------------------
# per-layer pruning: cost model, MAC-target search, data-driven importance, pruning in steps


@pytest.mark.parametrize("preset,scale,overrides", [
    ("edge", 4, {}), ("edge", 8, {"widths": (64, 96, 128), "refine_width": 64}), ("paper", 8, {}),
    ("edge", 4, {"widths": (32, 48, 80), "refine_width": 16, "mid_ratio": 0.5}), ("edge", 2, {"widths": (16, 24)}),
])
def test_conv_shapes_count_the_same_macs_as_the_hooks(preset, scale, overrides):
    from pkdn_edge.export.compress.prune_search import config_macs
    from pkdn_edge.models.pkdn import model_config

    cfg = model_config(preset, scale, **overrides)
    n = 128 // scale
    assert config_macs(cfg) == count_macs(create_model(preset, scale, **overrides), torch.rand(1, 3, n, n))
    assert config_macs(cfg, block=16) >= config_macs(cfg)


@pytest.mark.parametrize("scale,overrides,target",
                         [(4, {}, 0.72), (8, {"widths": (64, 96, 128), "refine_width": 64}, 0.6)])
def test_search_meets_the_mac_target_on_the_channel_grid(scale, overrides, target):
    from pkdn_edge.export.compress.prune import apply_pruning, plan_for_config
    from pkdn_edge.export.compress.prune_search import config_macs, search_config

    m = create_model("edge", scale, **overrides).eval()
    res = search_config(m.cfg, channel_importance(m), target, multiple=16, top=2, measure=lambda c: 0.0)
    c = res.config
    assert res.macs == config_macs(c) <= target * config_macs(m.cfg)
    assert config_macs(c, 16) <= target * config_macs(m.cfg, 16)
    assert all(w % 16 == 0 for w in c.widths) and c.refine_width % 16 == 0
    slim = apply_pruning(m, plan_for_config(m, c, channel_importance(m)))
    n = 128 // scale
    assert count_macs(slim, torch.rand(1, 3, n, n)) == res.macs
    with pytest.raises(ValueError, match="MACs"):
        search_config(m.cfg, channel_importance(m), 0.01, multiple=16)


def test_search_drops_the_channels_the_importance_calls_unimportant():
    """With every channel of every space important except half of the upsampler's, the search
    thins the upsampler (cheapest damage) before any stage."""
    from dataclasses import replace

    from pkdn_edge.export.compress.prune_search import config_macs, search_config

    m = create_model("edge", 4)
    imp = {k: torch.ones_like(v) * 100 for k, v in channel_importance(m).items()}
    imp["R0"][16:] = 0
    imp["R1"][8:] = 0
    thin = replace(m.cfg, refine_width=16)
    target = max(config_macs(thin, 16) / config_macs(m.cfg, 16), config_macs(thin) / config_macs(m.cfg)) + 1e-4
    res = search_config(m.cfg, imp, target, multiple=16, top=1)
    assert res.config.widths == m.cfg.widths and res.config.refine_width == 16


@pytest.mark.parametrize("preset,scale,overrides",
                         [("edge", 4, {"widths": (32, 48, 80), "refine_width": 16, "mid_ratio": 0.75}),
                          ("edge", 8, {"widths": (16, 64, 32), "refine_width": 8, "mid_ratio": 0.5})])
def test_per_layer_pruning_equals_the_original_with_dropped_channels_zeroed(preset, scale, overrides):
    """The zeroing check of uniform pruning, for slim configs the search can pick."""
    from dataclasses import replace

    from pkdn_edge.export.compress.prune import apply_pruning, plan_for_config

    torch.manual_seed(1)
    m = create_model(preset, scale).eval()
    if scale == 8:
        m = create_model(preset, scale, widths=(48, 64, 96)).eval()
    plan = plan_for_config(m, replace(m.cfg, **overrides), channel_importance(m))
    slim = apply_pruning(m, plan).eval()
    _zero_dropped(m, plan)
    with torch.no_grad():
        lr = torch.rand(2, 3, 128 // scale, 128 // scale)
        torch.testing.assert_close(slim(lr), m(lr), atol=2e-5, rtol=1e-4)
    assert slim.cfg == replace(m.cfg, **overrides)


def test_taylor_importance_on_data_runs_and_ignores_dead_channels():
    from pkdn_edge.export.compress.importance import taylor_importance

    torch.manual_seed(0)
    m = create_model("edge", 4, widths=(8, 12), depth=1, bottleneck_depth=1, refine_width=8)
    with torch.no_grad():  # inner channel 2 of the first block is dead: no filter, no bias, no reader
        b = m.enc_blocks[0][0]
        b.conv1.weight[2] = 0
        b.conv1.bias[2] = 0
        b.conv2.weight[:, 2] = 0
    before = {k: v.clone() for k, v in m.state_dict().items()}
    batches = [{"lr": torch.rand(2, 3, 32, 32), "hr": torch.rand(2, 3, 128, 128)} for _ in range(3)]
    imp = taylor_importance(m, iter(batches))
    assert set(imp) == set(channel_importance(m))
    assert all(v.shape == channel_importance(m)[k].shape and (v >= 0).all() for k, v in imp.items())
    assert imp["M.enc.0.0"][2] == 0 and imp["M.enc.0.0"].sum() > 0
    assert all(torch.equal(v, m.state_dict()[k]) for k, v in before.items())  # the model is untouched
    assert all(p.grad is None for p in m.parameters())


def test_pruning_in_steps_records_channels_against_the_original():
    """Two steps (A → B → C): C's kept-channel lists point into A's features, through B's."""
    from dataclasses import replace

    from pkdn_edge.export.compress.prune import apply_pruning, plan_for_config
    from pkdn_edge.export.compress.prune_search import schedule

    a = create_model("edge", 4).eval()
    final = replace(a.cfg, widths=(32, 48, 64), refine_width=16, mid_ratio=0.75)
    cfg_b, cfg_c = schedule(a.cfg, final, 2)
    assert cfg_c == final and all(x >= y for x, y in zip(cfg_b.widths, final.widths))
    plan_b = plan_for_config(a, cfg_b, channel_importance(a))
    b = apply_pruning(a, plan_b)
    plan_c = plan_for_config(b, cfg_c, channel_importance(b))
    meta = plan_c.to_meta(plan_b.to_meta())
    assert meta["feature_channels_before"] == a.feature_channels and meta["steps"] == 2
    c = apply_pruning(b, plan_c)
    assert [len(i) for i in meta["feature_index"]] == c.feature_channels
    for ib, ic, outer in zip(plan_b.feature_index(), plan_c.feature_index(), meta["feature_index"]):
        assert outer == [ib[j] for j in ic]


def test_search_with_a_speed_target_thins_the_high_resolution_layers():
    """The latency proxy charges activation volume: a speed target forces stage 0 or the upsampler
    (32×32 and 64/128-px grids) thinner than MACs alone would."""
    from pkdn_edge.export.compress.prune_search import latency_proxy, search_config

    m = create_model("edge", 4)
    imp = channel_importance(m)
    res = search_config(m.cfg, imp, 0.72, top=1, min_speedup=1.25)
    c = res.config
    assert latency_proxy(m.cfg) / latency_proxy(c) >= 1.25 and res.ranked[0]["proxy_speedup"] >= 1.25
    assert c.widths[0] < m.cfg.widths[0] or c.refine_width < m.cfg.refine_width
    with pytest.raises(ValueError, match="speed-up"):
        search_config(m.cfg, imp, 0.72, min_speedup=50.0)
