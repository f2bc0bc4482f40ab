"""Re-parameterized blocks (``block: rep``): the training form merges exactly into the plain network."""

from dataclasses import replace

import pytest
import torch

from pkdn_edge.models import PKDN, create_model, from_plain, reparameterize
from pkdn_edge.models.checkpoint import export_weights, load_model, read_checkpoint
from pkdn_edge.models.complexity import count_macs, count_params
from pkdn_edge.models.reparam import rep_convs
from pkdn_edge.models.repconv import RepConv3x3

TINY = dict(widths=(8, 12), depth=1, bottleneck_depth=1, refine_width=8, prior_width=4)
BRANCHES = {"main": ("main",), "point": ("point",), "expand-squeeze": ("expand", "squeeze"), "skip": ("skip",)}


@pytest.fixture()
def branchwise(monkeypatch):
    """Run every RepConv3x3 as the literal sum of its branches (the reference the merge must equal)."""
    monkeypatch.setattr(RepConv3x3, "forward", RepConv3x3.forward_branches)


def _randomize(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random values in every parameter, including the branches that start at 0 (skip); kernels get a
    std of 0.5/sqrt(fan-in), so activations stay O(1) through the network."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            std = 0.5 / p[0].numel() ** 0.5 if p.dim() > 1 else 0.1
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return model.eval()


def _lr(scale: int, batch: int = 2) -> torch.Tensor:
    return torch.rand(batch, 3, 128 // scale, 128 // scale, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("scale", [4, 8])
def test_merged_model_computes_the_training_form(scale, monkeypatch):
    rep = _randomize(create_model("edge", scale, "student", block="rep"))
    assert rep_convs(rep) and all(c.skip is None or c.skip.abs().sum() > 0 for c in rep_convs(rep).values())
    merged = reparameterize(rep)
    assert merged.cfg == replace(rep.cfg, block="plain") and not rep_convs(merged)
    x = _lr(scale)
    with torch.no_grad():
        out = merged(x)
        online = rep(x)  # the training forward: one conv per rep conv with the merged kernel
        monkeypatch.setattr(RepConv3x3, "forward", RepConv3x3.forward_branches)
        reference = rep(x)  # every branch run on its own and summed
    assert (out - reference).abs().max() < 1e-5
    assert (online - reference).abs().max() < 1e-5


@pytest.mark.parametrize("scale", [4, 8])
def test_online_forward_matches_the_branches_in_output_and_gradients(scale):
    """Training runs one conv with the merged kernel: same output and the same gradient for every branch
    as running the branches one by one."""
    torch.manual_seed(scale)
    conv = RepConv3x3(12, 12)
    with torch.no_grad():
        conv.skip.normal_()
    x = torch.randn(2, 12, 128 // scale, 128 // scale)
    target = torch.randn(2, 12, 128 // scale, 128 // scale)
    grads = []
    for fwd in (conv.forward, conv.forward_branches):
        conv.zero_grad()
        y = fwd(x)
        ((y - target) ** 2).mean().backward()
        grads.append((y.detach(), {n: p.grad.clone() for n, p in conv.named_parameters()}))
    (y_online, g_online), (y_branches, g_branches) = grads
    assert (y_online - y_branches).abs().max() < 1e-5
    assert g_online.keys() == g_branches.keys() == {n for n, _ in conv.named_parameters()}
    for n in g_online:
        torch.testing.assert_close(g_online[n], g_branches[n], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("scale", [4, 8])
def test_merged_model_has_the_plain_macs_and_loads_into_a_plain_config(scale):
    rep = _randomize(create_model("edge", scale, "student", block="rep"))
    plain = create_model("edge", scale, "student")
    merged = reparameterize(rep)
    x = _lr(scale, batch=1)
    assert count_macs(merged, x) == count_macs(plain, x)
    assert count_macs(rep, x) == count_macs(plain, x)  # the online forward runs one conv per rep conv
    assert count_params(merged) == count_params(plain) < count_params(rep)
    state = merged.state_dict()
    assert list(state) == list(plain.state_dict())
    fresh = PKDN(replace(rep.cfg, block="plain")).eval()
    fresh.load_state_dict(state)  # strict: same keys and shapes
    with torch.no_grad():
        assert torch.equal(fresh(x), merged(x))


def test_a_teacher_merges_too():
    rep = _randomize(create_model("edge", 8, "teacher", block="rep", **TINY))
    assert rep.prior_encoder is not None and not rep_convs(rep.prior_encoder)  # the prior path stays plain
    x, prior = _lr(8), torch.rand(2, 11, 128, 128)
    with torch.no_grad():
        assert (reparameterize(rep)(x, prior) - rep(x, prior)).abs().max() < 1e-5


@pytest.mark.parametrize("scale", [4, 8])
def test_from_plain_starts_as_the_plain_model(scale):
    plain = _randomize(create_model("edge", scale, "student", **TINY))
    rng = torch.get_rng_state()
    rep = from_plain(plain)
    assert torch.equal(torch.get_rng_state(), rng)  # builds with a private RNG
    assert rep.cfg.block == "rep" and rep_convs(rep)
    x = _lr(scale)
    with torch.no_grad():
        assert (rep.eval()(x) - plain(x)).abs().max() < 1e-6
        back = reparameterize(rep)
    for k, v in plain.state_dict().items():
        torch.testing.assert_close(back.state_dict()[k], v, rtol=0, atol=1e-7)
    with pytest.raises(ValueError, match="block='plain'"):
        from_plain(rep)


def test_a_warm_started_rep_model_trains_its_extra_branches():
    """From plain weights the extra branches start at 0 but get gradients at once (squeeze, point, skip)
    or after the first step (expand, whose gradient flows through squeeze)."""
    rep = from_plain(_randomize(create_model("edge", 4, "student", **TINY))).train()
    opt = torch.optim.Adam(rep.parameters(), lr=1e-3)
    x, hr = _lr(4), torch.rand(2, 3, 128, 128)
    before = {n: p.detach().clone() for n, p in rep.named_parameters()}
    for _ in range(2):
        opt.zero_grad()
        torch.nn.functional.l1_loss(rep(x), hr).backward()
        opt.step()
    for name, conv in rep_convs(rep).items():
        for branch, p in conv.named_parameters():
            assert not torch.equal(p, before[f"{name}.{branch}"]), f"{name}.{branch} did not move"


@pytest.mark.parametrize("branch", list(BRANCHES))
def test_every_branch_reaches_the_merged_conv(branch, branchwise):
    """Perturb one branch of one rep conv: the merged network moves exactly as the training form does
    (a merge that dropped the branch would leave the merged output unchanged)."""
    rep = _randomize(create_model("edge", 4, "student", block="rep", **TINY))
    x = _lr(4)
    with torch.no_grad():
        before = reparameterize(rep)(x)
        conv = rep.enc_blocks[0][0].conv1  # a square conv: it has every branch, skip included
        assert conv.skip is not None
        for attr in BRANCHES[branch]:
            for p in getattr(conv, attr).parameters() if attr != "skip" else [conv.skip]:
                p.add_(torch.randn_like(p) * 0.5)
        reference = rep(x)  # branch by branch
        after = reparameterize(rep)(x)
    assert (after - before).abs().max() > 1e-3  # the perturbation shows in the output ...
    assert (after - reference).abs().max() < 1e-5  # ... and the merge follows it


def test_rep_conv_merges_into_one_plain_conv_per_branch():
    """Each branch alone (the others zeroed) merges into the conv it computes: 1×1 on the centre tap,
    expand→squeeze as a 3×3 product kernel, skip on the diagonal of the centre tap."""
    x = torch.randn(2, 6, 9, 9)
    for branch in BRANCHES:
        conv = _randomize(RepConv3x3(6, 6), seed=3)
        with torch.no_grad():
            for other, other_attrs in BRANCHES.items():
                if other == branch:
                    continue
                for attr in other_attrs:
                    if attr == "expand":
                        continue  # expand alone contributes nothing once squeeze is 0
                    for p in getattr(conv, attr).parameters() if attr != "skip" else [conv.skip]:
                        p.zero_()
            reference = conv.forward_branches(x)
            assert reference.abs().max() > 1e-2, branch
            plain = conv.to_conv()
            assert (plain(x) - reference).abs().max() < 1e-5, branch
            assert (conv(x) - reference).abs().max() < 1e-5, branch
    assert RepConv3x3(6, 4).skip is None  # no identity branch when the shapes differ


def test_checkpoints_of_rep_models_load_merged_for_inference(tmp_path):
    rep = _randomize(create_model("edge", 8, "student", block="rep", **TINY))
    export_weights(rep, tmp_path / "rep.pt", meta={"note": "rep"})
    assert read_checkpoint(tmp_path / "rep.pt")["config"]["block"] == "rep"
    merged, meta = load_model(tmp_path / "rep.pt")
    assert meta == {"note": "rep"} and merged.cfg.block == "plain" and not merged.training
    kept, _ = load_model(tmp_path / "rep.pt", merge=False)
    assert kept.cfg.block == "rep" and rep_convs(kept)
    x = _lr(8)
    with torch.no_grad():
        assert (merged(x) - rep(x)).abs().max() < 1e-5
        assert torch.equal(kept(x), rep(x))
    export_weights(merged, tmp_path / "plain.pt")  # a merged model saves as an ordinary plain checkpoint
    assert "block" not in read_checkpoint(tmp_path / "plain.pt")["config"]


def test_plain_configs_keep_their_checkpoint_dict_and_bad_blocks_are_refused():
    plain = create_model("edge", 4, "student")
    assert "block" not in plain.cfg.to_dict()  # plain checkpoints are written as before the setting existed
    assert type(plain.cfg).from_dict(plain.cfg.to_dict()) == plain.cfg
    assert reparameterize(plain) is plain
    cfg = create_model("edge", 4, "student", block="rep", **TINY).cfg
    assert type(cfg).from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="block must be one of"):
        create_model("edge", 4, "student", block="repvgg")
