"""Structured pruning of PKDN students: real channel removal, producing a slimmer ``PKDNConfig``.

Why our own code and not a library:

* **NNCF 3.x**: ``nncf.prune`` (3.4) offers only unstructured modes
  (``PruneMode.UNSTRUCTURED_MAGNITUDE_LOCAL/GLOBAL``, ``UNSTRUCTURED_REGULARIZATION_BASED``):
  binary masks that zero single weights but keep every tensor's shape, so nothing gets faster on
  dense CPU/GPU backends (ONNX Runtime, OpenVINO, TensorRT).
* **torch-pruning**'s dependency graph mishandles pixel-shuffle: the conv before a
  ``PixelShuffle(2)`` has ``4·C`` outputs that become ``C`` channels, so its outputs must be removed
  in groups of r² = 4 (``c·4 … c·4+3``) together with channel ``c`` of every consumer; the graph
  treats them as unrelated channels (or needs the layers excluded, which leaves the upsampler and
  every decoder stage unpruned). The same holds, mirrored, for pixel-unshuffle downsampling. On
  the ``edge`` student, torch-pruning 1.6.1's ``MetaPruner(model, x, GroupMagnitudeImportance(),
  pruning_ratio=0.5).step()`` stops with ``IndexError: index 16 is out of bounds for dimension 0
  with size 16``.
* PKDN's channel couplings are few and explicit, so listing them once here is shorter than
  teaching a generic tracer, and the result is an ordinary :class:`~pkdn_edge.models.PKDN` of a
  smaller :class:`~pkdn_edge.models.PKDNConfig` (no masks, no custom modules): it trains with
  ``pkdn-train``, saves/loads with :mod:`pkdn_edge.models.checkpoint` and exports with ``pkdn-export``.

Channel spaces (every conv that reads or writes a space is sliced with the same kept indices):

* **stream ``S_i``** (the residual stream of encoder/decoder stage ``i``): stem or downsampling
  conv outputs, every residual-block input/output, the fusion block's modulated features, channel
  gate, projection, the FFB projections into stage ``i`` and its mix conv (whose input is ``n+1``
  concatenated copies of ``S_i``-sized blocks), the upsampling conv into stage ``i`` (pixel-shuffle:
  **r² = 4 output channels per kept channel**, ``c·4 + k``) and the downsampling conv out of it
  (pixel-unshuffle: 4 input channels per kept channel).
* **``M``** the inner channels of each residual block, **``G_i``** the fusion block's guide (it
  drives the affine modulation γ/β and the spatial gate), **``H_i``** its channel-attention hidden
  units, **``R_k``** the width of upsampler step ``k`` (pixel-shuffle groups again; step widths
  halve and never drop below 8).

Importance of a channel is the L2 norm of every weight slice that touches it (its group norm:
output filters, input slices and biases across all coupled layers, the four pixel-shuffle outputs
of a channel counted together). :func:`plan_pruning` picks the kept channels,
:func:`apply_pruning` copies them into a fresh :class:`~pkdn_edge.models.PKDN`;
:meth:`PruningPlan.to_meta` records which channels survived so that fine-tuning can start the
distillation adapters as channel selections. Only students are pruned (a teacher's prior encoder
is left alone).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import torch

from pkdn_edge.models import PKDN, PKDNConfig
from pkdn_edge.models.pkdn import ChannelAttention

Index = torch.Tensor  # 1-D long tensor of kept channel indices (sorted)


def _keep(scores: torch.Tensor, k: int) -> Index:
    k = max(1, min(k, scores.numel()))
    return torch.sort(torch.topk(scores, k).indices).values


def _grouped(idx: Index, group: int) -> Index:
    """Channel indices → indices of their pixel-(un)shuffle groups: c → c·g … c·g+g-1."""
    return (idx[:, None] * group + torch.arange(group)[None]).reshape(-1)


Term = Callable[[torch.Tensor], torch.Tensor]  # a parameter → its per-element contribution


def norm_term(p: torch.Tensor) -> torch.Tensor:
    """Squared weights: group sums are squared group norms."""
    return p.detach().pow(2)


def taylor_term(p: torch.Tensor) -> torch.Tensor:
    """``w·∂L/∂w`` (after a backward pass): a group sum is the first-order change of the loss when
    the whole group is zeroed (Molchanov et al., 2019)."""
    return p.detach() * p.grad if p.grad is not None else torch.zeros_like(p)


def _sq_out(conv: torch.nn.Conv2d, group: int = 1, term: Term = norm_term) -> torch.Tensor:
    """Sum of ``term`` per output channel (summed over pixel-shuffle groups of size ``group``)."""
    w = term(conv.weight).sum(dim=(1, 2, 3))
    if conv.bias is not None:
        w = w + term(conv.bias)
    return w.reshape(-1, group).sum(1)


def _sq_in(conv: torch.nn.Conv2d, group: int = 1, offset: int = 0, size: int | None = None,
           term: Term = norm_term) -> torch.Tensor:
    """Sum of ``term`` per input channel (optionally of a slice ``offset:offset+size``, grouped)."""
    w = term(conv.weight).sum(dim=(0, 2, 3))
    if size is not None:
        w = w[offset : offset + size]
    return w.reshape(-1, group).sum(1)


def group_sums(model: PKDN, term: Term = norm_term) -> dict[str, torch.Tensor]:
    """Sum of ``term`` over every weight slice that touches each channel of every prunable channel
    space: ``{"S0": (w0,), "M.enc.0.1": (m,), …}`` (with :func:`norm_term`: squared group norms)."""
    if model.prior_encoder is not None:
        raise ValueError("only students are pruned; this model is a teacher")
    n = len(model.cfg.widths)
    w = model.cfg.widths
    imp: dict[str, torch.Tensor] = {}
    for i in range(n):
        s = torch.zeros(w[i])
        s += _sq_out(model.stem, term=term) if i == 0 else _sq_out(model.downs[i - 1].conv, term=term)
        if i + 1 < n:  # stage i feeds the next downsampling and receives the upsampling from i+1
            s += _sq_in(model.downs[i].conv, group=4, term=term)
            s += _sq_out(model.ups[i].conv, group=4, term=term)
        if i > 0:
            s += _sq_in(model.ups[i - 1].conv, term=term)
        blocks = list(model.enc_blocks[i]) + (list(model.dec_blocks[i]) if i < n - 1 else [])
        blocks += list(model.bottleneck) if i == n - 1 else []
        for b in blocks:
            s += _sq_in(b.conv1, term=term) + _sq_out(b.conv2, term=term)
        f = model.fusions[i]
        s += _sq_in(f.guide, size=w[i], term=term) + _sq_in(f.channel_gate.fc1, term=term)
        s += _sq_out(f.channel_gate.fc2, term=term)
        aff = _sq_out(f.affine, term=term)
        s += aff[: w[i]] + aff[w[i] :] + _sq_in(f.proj, term=term) + _sq_out(f.proj, term=term)
        for j in range(n - 1):  # FFB j projects every stage into stage j
            s += _sq_in(model.ffbs[j].proj[i], term=term)
            if j == i:
                ffb = model.ffbs[j]
                s += sum(_sq_out(p, term=term) for p in ffb.proj) + _sq_out(ffb.mix, term=term)
                s += sum(_sq_in(ffb.mix, offset=b * w[i], size=w[i], term=term) for b in range(n + 1))
        if i == 0:
            s += _sq_in(model.upsampler.ups[0].conv, term=term)
        imp[f"S{i}"] = s
        imp[f"G{i}"] = _sq_out(f.guide, term=term) + _sq_in(f.affine, term=term) + _sq_in(f.spatial_gate, term=term)
        imp[f"H{i}"] = _sq_out(f.channel_gate.fc1, term=term) + _sq_in(f.channel_gate.fc2, term=term)
    for name, seq in _block_groups(model):
        for j, b in enumerate(seq):
            imp[f"M.{name}.{j}"] = _sq_out(b.conv1, term=term) + _sq_in(b.conv2, term=term)
    up = model.upsampler
    for k, (u, r) in enumerate(zip(up.ups, up.refines)):
        nxt = _sq_in(up.ups[k + 1].conv, term=term) if k + 1 < len(up.ups) else _sq_in(up.to_rgb, term=term)
        imp[f"R{k}"] = _sq_out(u.conv, group=4, term=term) + _sq_in(r, term=term) + _sq_out(r, term=term) + nxt
    return imp


def channel_importance(model: PKDN) -> dict[str, torch.Tensor]:
    """Group-norm importance of every prunable channel space: ``{"S0": (w0,), "M.enc.0.1": …}``."""
    return {k: v.sqrt() for k, v in group_sums(model).items()}


def _block_groups(model: PKDN):
    for i, seq in enumerate(model.enc_blocks):
        yield f"enc.{i}", seq
    for i, seq in enumerate(model.dec_blocks):
        yield f"dec.{i}", seq
    yield "bottleneck", model.bottleneck


def _copy_conv(dst: torch.nn.Conv2d, src: torch.nn.Conv2d, out_idx: Index | None, in_idx: Index | None) -> None:
    w = src.weight.detach()
    if out_idx is not None:
        w = w[out_idx]
    if in_idx is not None:
        w = w[:, in_idx]
    if dst.weight.shape != w.shape:
        raise RuntimeError(f"pruned shape {tuple(w.shape)} does not fit {tuple(dst.weight.shape)}")
    dst.weight.data.copy_(w)
    if src.bias is not None:
        dst.bias.data.copy_(src.bias.detach() if out_idx is None else src.bias.detach()[out_idx])


@dataclass(frozen=True)
class PruningPlan:
    """Which channels of a student survive pruning.

    Attributes:
        ratio: fraction of channels removed from every prunable space (uniform pruning), or None
            when the slim config was chosen per layer (:mod:`.prune_search`).
        source: the unpruned student's config.
        config: the slim config (what the pruned checkpoint stores).
        keep: kept channel indices (sorted, into the source model) per channel space: ``S{i}``
            stage streams, ``G{i}``/``H{i}`` fusion guide / channel-attention hidden units,
            ``M.{group}.{j}`` residual-block inner channels, ``R{k}`` upsampler step widths.
    """

    ratio: float | None
    source: PKDNConfig
    config: PKDNConfig
    keep: dict[str, Index]

    def feature_index(self) -> list[list[int]]:
        """Kept channels of each distilled feature, in :meth:`PKDN.forward_features` order
        (encoder stages, bottleneck, decoder stages n-2..0, upsampler refinement)."""
        n = len(self.source.widths)
        spaces = [f"S{i}" for i in range(n)] + [f"S{n - 1}"] + [f"S{i}" for i in range(n - 2, -1, -1)] + ["R0"]
        return [self.keep[s].tolist() for s in spaces]

    def to_meta(self, parent: dict | None = None) -> dict:
        """Checkpoint metadata: lets ``pkdn-train`` start the distillation adapters of a pruned
        student as channel selections (see :meth:`~pkdn_edge.train.losses.FeatureAdapters.init_selection`).

        ``parent``: the ``pruning`` metadata of the model this plan pruned when that model was
        itself pruned (pruning in steps): the kept channels are then given against the original,
        unpruned student (the distillation source), and ``source_config`` is that student's."""
        meta = {"ratio": self.ratio, "config": self.config.to_dict(), "source_config": self.source.to_dict(),
                "feature_channels_before": _feature_channels(self.source), "feature_index": self.feature_index()}
        if parent:
            meta["feature_index"] = [[outer[j] for j in inner]
                                     for outer, inner in zip(parent["feature_index"], meta["feature_index"])]
            meta.update(source_config=parent["source_config"],
                        feature_channels_before=parent["feature_channels_before"],
                        steps=int(parent.get("steps", 1)) + 1)
        return meta


def _feature_channels(cfg: PKDNConfig) -> list[int]:
    """Widths of the distilled features of a model of ``cfg`` (as :attr:`PKDN.feature_channels`)."""
    w = list(cfg.widths)
    return w + [w[-1]] + w[-2::-1] + [cfg.refine_width]


def _slim_config(cfg: PKDNConfig, ratio: float) -> PKDNConfig:
    keep_frac = 1.0 - ratio
    new_w = tuple(min(c, max(4, round(c * keep_frac))) for c in cfg.widths)
    new_r = max(8, round(cfg.refine_width * keep_frac))
    # residual-block inner widths: the same fraction of the *original* width, expressed against the
    # new stage width (one ratio for all stages, as PKDNConfig has), never wider than before
    mid_ratio = round(cfg.mid_ratio * keep_frac * cfg.widths[0] / new_w[0], 6)
    new = replace(cfg, widths=new_w, refine_width=new_r, mid_ratio=mid_ratio)
    while any(new.mid(a) > cfg.mid(b) for a, b in zip(new.widths, cfg.widths)):
        new = replace(new, mid_ratio=round(new.mid_ratio * 0.99, 6))
    return new


def upsampler_widths(cfg: PKDNConfig) -> list[int]:
    """Channels of each upsampler step (as :class:`~pkdn_edge.models.pkdn.Upsampler` builds them)."""
    return [max(cfg.refine_width >> k, 8) for k in range(cfg.scale.bit_length() - 1)]


def check_slimmer(source: PKDNConfig, cfg: PKDNConfig) -> None:
    """Raise ValueError unless ``cfg`` is ``source`` with no channel space wider (a valid pruning target)."""
    same = replace(cfg, widths=source.widths, refine_width=source.refine_width, mid_ratio=source.mid_ratio)
    if same != source or len(cfg.widths) != len(source.widths):
        raise ValueError(f"{cfg} is not a slimmer version of {source}: only widths, refine_width and mid_ratio "
                         f"may change")
    wider = [i for i, (a, b) in enumerate(zip(cfg.widths, source.widths))
             if a > b or cfg.mid(a) > source.mid(b) or max(a // cfg.reduction, 4) > max(b // source.reduction, 4)]
    if wider or any(a > b for a, b in zip(upsampler_widths(cfg), upsampler_widths(source))):
        raise ValueError(f"{cfg} is wider than {source} somewhere (stages {wider} or the upsampler)")


def plan_for_config(model: PKDN, config: PKDNConfig, importance: dict[str, torch.Tensor],
                    ratio: float | None = None) -> PruningPlan:
    """Keep, in every channel space, the channels of largest ``importance`` (e.g.
    :func:`channel_importance` or :func:`pkdn_edge.export.importance.taylor_importance`) so that the
    pruned model has the widths of ``config``, a slimmer version of ``model.cfg``."""
    cfg = model.cfg
    check_slimmer(cfg, config)
    n = len(cfg.widths)
    keep: dict[str, Index] = {}
    for i, w in enumerate(config.widths):
        keep[f"S{i}"] = _keep(importance[f"S{i}"], w)
        keep[f"G{i}"] = _keep(importance[f"G{i}"], w)
        keep[f"H{i}"] = _keep(importance[f"H{i}"], max(w // cfg.reduction, 4))
    for name, seq in _block_groups(model):
        i = n - 1 if name == "bottleneck" else int(name.split(".")[1])
        for j in range(len(seq)):
            keep[f"M.{name}.{j}"] = _keep(importance[f"M.{name}.{j}"], config.mid(config.widths[i]))
    for k, r in enumerate(upsampler_widths(config)):
        keep[f"R{k}"] = _keep(importance[f"R{k}"], r)
    return PruningPlan(ratio, cfg, config, keep)


def plan_pruning(model: PKDN, ratio: float, importance: dict[str, torch.Tensor] | None = None) -> PruningPlan:
    """Uniform pruning: remove ``ratio`` of every channel space, keeping the channels of largest
    ``importance`` (default: group norm, :func:`channel_importance`). ``ratio=0.5`` halves every
    stage width, every residual block's inner width and the upsampler's step widths (down to 8)."""
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"pruning ratio must be in [0, 1), got {ratio}")
    imp = importance if importance is not None else channel_importance(model)
    return plan_for_config(model, _slim_config(model.cfg, ratio), imp, ratio=ratio)


def apply_pruning(model: PKDN, plan: PruningPlan) -> PKDN:
    """Copy the kept channels of ``model`` into a fresh :class:`PKDN` of ``plan.config``."""
    cfg = model.cfg
    if cfg != plan.source:
        raise ValueError("this pruning plan was made for another model config")
    n = len(cfg.widths)
    slim = PKDN(plan.config)
    S = [plan.keep[f"S{i}"] for i in range(n)]
    G = [plan.keep[f"G{i}"] for i in range(n)]
    H = [plan.keep[f"H{i}"] for i in range(n)]

    with torch.no_grad():
        _copy_conv(slim.stem, model.stem, S[0], None)
        for i in range(1, n):
            _copy_conv(slim.downs[i - 1].conv, model.downs[i - 1].conv, S[i], _grouped(S[i - 1], 4))
        slim_groups = dict(_block_groups(slim))
        for name, seq in _block_groups(model):
            i = n - 1 if name == "bottleneck" else int(name.split(".")[1])
            for j, (b_src, b_dst) in enumerate(zip(seq, slim_groups[name])):
                m = plan.keep[f"M.{name}.{j}"]
                _copy_conv(b_dst.conv1, b_src.conv1, m, S[i])
                _copy_conv(b_dst.conv2, b_src.conv2, S[i], m)
        for i in range(n):
            fs, fd = model.fusions[i], slim.fusions[i]
            _copy_conv(fd.guide, fs.guide, G[i], S[i])
            _copy_conv(fd.affine, fs.affine, torch.cat([S[i], S[i] + cfg.widths[i]]), G[i])
            _copy_ca(fd.channel_gate, fs.channel_gate, S[i], H[i])
            _copy_conv(fd.spatial_gate, fs.spatial_gate, None, G[i])
            _copy_conv(fd.proj, fs.proj, S[i], S[i])
        for j in range(n - 1):
            _copy_conv(slim.ups[j].conv, model.ups[j].conv, _grouped(S[j], 4), S[j + 1])
            for i in range(n):
                _copy_conv(slim.ffbs[j].proj[i], model.ffbs[j].proj[i], S[j], S[i])
            mix_in = torch.cat([S[j] + b * cfg.widths[j] for b in range(n + 1)])
            _copy_conv(slim.ffbs[j].mix, model.ffbs[j].mix, S[j], mix_in)
        up_s, up_d = model.upsampler, slim.upsampler
        prev = S[0]
        for k in range(len(up_s.ups)):
            r = plan.keep[f"R{k}"]
            _copy_conv(up_d.ups[k].conv, up_s.ups[k].conv, _grouped(r, 4), prev)
            _copy_conv(up_d.refines[k], up_s.refines[k], r, r)
            prev = r
        _copy_conv(up_d.to_rgb, up_s.to_rgb, None, prev)
    return slim.train(model.training)


def prune_student(model: PKDN, ratio: float) -> PKDN:
    """Remove ``ratio`` of the channels of every prunable space; returns a new, smaller PKDN.

    ``ratio=0.5`` halves every stage width, every residual block's inner width and the upsampler's
    step widths (down to 8; keeping the channels of largest group norm). The input/output interface
    (LR RGB in, 128×128 RGB out) is unchanged. :func:`plan_pruning` + :func:`apply_pruning` in one.
    """
    return apply_pruning(model, plan_pruning(model, ratio))


def _copy_ca(dst: ChannelAttention, src: ChannelAttention, s: Index, h: Index) -> None:
    _copy_conv(dst.fc1, src.fc1, h, s)
    _copy_conv(dst.fc2, src.fc2, s, h)
