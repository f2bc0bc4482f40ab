"""Which layers to thin: a per-layer cost profile and a search for the slim config under a MAC budget.

A PKDN student can only become another :class:`~pkdn_edge.models.PKDNConfig`: per-stage widths,
one residual-block ``mid_ratio`` and the upsampler's ``refine_width``. The cost of each choice is
known exactly (:func:`conv_shapes`: every conv's channels, kernel and grid, no model built), and
its damage is estimated from a data-driven channel importance (:mod:`.importance`: the Taylor
estimate of the loss change when a channel is removed, comparable across layers). The search:

1. enumerates every slim config whose widths are multiples of ``multiple`` channels (16: the
   channel block of ONNX Runtime's and OpenVINO's AVX-512 convolutions; a width in between is
   padded up to the next block and buys no speed, which is why uniform 25 % pruning, 48→36
   channels, was barely faster in ONNX Runtime) and ``mid_ratio`` in ``mid_ratios``;
2. keeps those within the budget: ``MACs ≤ target·MACs(source)``, and the same for the MACs with
   every channel count padded to the block (:func:`config_macs` with ``block``, the latency proxy);
3. ranks them by the importance of the channels they drop (:func:`config_damage`) and, when a
   ``measure`` callback is given, measures the ``top`` best (e.g. output error of the pruned,
   not yet fine-tuned model against the source on held-out faces) and takes the least damaged.

The 128×128-grid layers dominate: at ×4 the stage-0 residual blocks (32×32, 36 %), the
upsampler's refinement convs at 64×64 and 128×128 (16 %) and the stage-0 fusion block (6 %);
:func:`profile_rows` prints the table.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, replace
from typing import Callable

import torch

from pkdn_edge.models import PKDNConfig

from .prune import check_slimmer, upsampler_widths

# residual-block inner widths tried: with stage widths on the 16-grid, 2/3 and 1/3 of 48 are 32 and 16
MID_RATIOS = (1.0, 0.75, 0.666667, 0.5, 0.333333)
Conv = tuple[str, int, int, int, int]  # (layer group, in channels, out channels, kernel area, output grid area)


def conv_shapes(cfg: PKDNConfig, lr_side: int | None = None) -> list[Conv]:
    """Every conv of a student of ``cfg`` on an ``lr_side``² input (default 128/scale): the shapes
    :func:`pkdn_edge.models.complexity.count_macs` counts (a test checks they agree)."""
    if cfg.prior_channels:
        raise ValueError("conv_shapes covers students only")
    c, n, h = cfg.widths, len(cfg.widths), lr_side or 128 // cfg.scale
    area = [(h >> i) ** 2 for i in range(n)]
    rows: list[Conv] = [("stem", 3, c[0], 9, area[0])]
    rows += [(f"downs.{i - 1}", 4 * c[i - 1], c[i], 1, area[i]) for i in range(1, n)]

    def blocks(name: str, i: int, depth: int) -> list[Conv]:
        m = cfg.mid(c[i])
        return [(name, c[i], m, 9, area[i]), (name, m, c[i], 9, area[i])] * depth

    for i in range(n):
        hid, f = max(c[i] // cfg.reduction, 4), f"fusions.{i}"
        rows += blocks(f"enc_blocks.{i}", i, cfg.depth)
        rows += [(f, c[i], c[i], 9, area[i]), (f, c[i], 2 * c[i], 1, area[i]), (f, c[i], hid, 1, 1),
                 (f, hid, c[i], 1, 1), (f, c[i], 1, 9, area[i]), (f, c[i], c[i], 1, area[i])]
    rows += blocks("bottleneck", n - 1, cfg.bottleneck_depth)
    for i in range(n - 1):
        rows.append((f"ups.{i}", c[i + 1], 4 * c[i], 1, area[i + 1]))
        rows += [(f"ffbs.{i}", c[j], c[i], 1, area[j]) for j in range(n)]
        rows.append((f"ffbs.{i}", (n + 1) * c[i], c[i], 1, area[i]))
        rows += blocks(f"dec_blocks.{i}", i, cfg.depth)
    r = upsampler_widths(cfg)
    chans = [c[0]] + r
    for k in range(len(r)):
        rows.append((f"upsampler.ups.{k}", chans[k], 4 * r[k], 1, area[0] * 4**k))
        rows.append((f"upsampler.refines.{k}", r[k], r[k], 9, area[0] * 4 ** (k + 1)))
    rows.append(("upsampler.to_rgb", r[-1], 3, 9, area[0] * 4 ** len(r)))
    return rows


def _pad(ch: int, block: int) -> int:
    return ch if block <= 1 or ch < 8 else math.ceil(ch / block) * block


def config_macs(cfg: PKDNConfig, block: int = 1, lr_side: int | None = None) -> int:
    """MACs per face of a student of ``cfg``; with ``block > 1`` every channel count of 8 or more
    is first padded up to a multiple of ``block`` (what blocked CPU kernels compute)."""
    return sum(_pad(ci, block) * _pad(co, block) * k * a for _, ci, co, k, a in conv_shapes(cfg, lr_side))


# ms per call ≈ a·(padded MMACs) + b·(padded conv-output elements, millions) + c: least squares over five
# ×4 students (original, 4 pruned configs) as OpenVINO INT8, 1 thread, CPU time per call measured under
# load on this 2-core AMD EPYC (2026-12-05; fp32 fits 0.0067 / 1.46 / 0.04). The activation volume
# dominates: the 32×32 stage-0 and 64/128-px upsampler layers cost far more time than their MACs say.
LATENCY_MODEL = (0.00081, 1.08, 0.70)


def latency_proxy(cfg: PKDNConfig, block: int = 16) -> float:
    """Estimated ms per face of an OpenVINO INT8 student of ``cfg`` (:data:`LATENCY_MODEL`); only
    ratios between configs are meant to be used."""
    a, b, c = LATENCY_MODEL
    acts = sum(_pad(co, block) * area for _, _, co, _, area in conv_shapes(cfg))
    return a * config_macs(cfg, block) / 1e6 + b * acts / 1e6 + c


def profile_rows(cfg: PKDNConfig) -> list[tuple[str, int, float]]:
    """Per-layer-group cost profile: ``(group, MACs, share of the total)``, largest first."""
    acc: dict[str, int] = {}
    for name, ci, co, k, a in conv_shapes(cfg):
        acc[name] = acc.get(name, 0) + ci * co * k * a
    total = sum(acc.values())
    return sorted(((k, v, v / total) for k, v in acc.items()), key=lambda r: -r[1])


# ------------------------------------------------------------------------------------------------ search


def _widths(full: int, multiple: int, floor: int) -> list[int]:
    """Candidate widths for a space of ``full`` channels: multiples of ``multiple`` (≥ ``floor``) and ``full``."""
    return sorted({w for w in range(multiple, full + 1, multiple) if w >= floor} | {full})


def candidates(src: PKDNConfig, multiple: int = 16, mid_ratios: tuple[float, ...] = MID_RATIOS) -> list[PKDNConfig]:
    """Every slimmer config of ``src`` on the grid (stage widths and ``refine_width`` multiples of
    ``multiple``; ``mid_ratio`` from ``mid_ratios`` up to the source's)."""
    stage = [_widths(w, multiple, min(multiple, w)) for w in src.widths]
    refine = _widths(src.refine_width, multiple, min(8, src.refine_width))
    mids = sorted({m for m in mid_ratios if m <= src.mid_ratio} | {src.mid_ratio})
    out = []
    for ws in itertools.product(*stage):
        for r, m in itertools.product(refine, mids):
            cfg = replace(src, widths=tuple(ws), refine_width=r, mid_ratio=m)
            try:
                check_slimmer(src, cfg)
            except ValueError:
                continue
            out.append(cfg)
    return out


def space_sizes(cfg: PKDNConfig) -> dict[str, int]:
    """Channels per prunable space of a student of ``cfg`` (the keys of ``prune.group_sums``)."""
    n = len(cfg.widths)
    sizes: dict[str, int] = {}
    for i, w in enumerate(cfg.widths):
        sizes.update({f"S{i}": w, f"G{i}": w, f"H{i}": max(w // cfg.reduction, 4)})
        groups = [f"enc.{i}"] + ([f"dec.{i}"] if i < n - 1 else [])
        for g in groups:
            sizes.update({f"M.{g}.{j}": cfg.mid(w) for j in range(cfg.depth)})
    sizes.update({f"M.bottleneck.{j}": cfg.mid(cfg.widths[-1]) for j in range(cfg.bottleneck_depth)})
    sizes.update({f"R{k}": r for k, r in enumerate(upsampler_widths(cfg))})
    return sizes


def damage_table(importance: dict[str, torch.Tensor]) -> dict[str, list[float]]:
    """Per space, ``table[space][d]``: the summed importance of its ``d`` least important channels."""
    return {k: [0.0] + torch.cumsum(torch.sort(v.double()).values, 0).tolist() for k, v in importance.items()}


def config_damage(table: dict[str, list[float]], cfg: PKDNConfig) -> float:
    """Summed importance of the channels a prune to ``cfg`` drops (the least important of each
    space); ``table`` from :func:`damage_table` of the source model's importance."""
    return sum(table[space][len(table[space]) - 1 - k] for space, k in space_sizes(cfg).items())


@dataclass
class SearchResult:
    """The chosen slim config and the evidence: ``ranked`` rows (config, MACs, padded MACs,
    estimated damage, measured damage or None) of the candidates within budget, best first."""

    config: PKDNConfig
    source_macs: int
    macs: int
    ranked: list[dict]

    def to_dict(self) -> dict:
        return {"config": self.config.to_dict(), "source_macs": self.source_macs, "macs": self.macs,
                "ranked": self.ranked}


def search_config(src: PKDNConfig, importance: dict[str, torch.Tensor], target: float, multiple: int = 16,
                  top: int = 6, measure: Callable[[PKDNConfig], float] | None = None,
                  mid_ratios: tuple[float, ...] = MID_RATIOS, min_speedup: float | None = None) -> SearchResult:
    """The least damaged slim config of ``src`` with at most ``target`` of its MACs (plain and
    block-padded) and, with ``min_speedup``, an estimated speed-up (:func:`latency_proxy`) of at
    least that; see the module docstring. Raises ValueError when none fits the budget."""
    if not 0.0 < target <= 1.0:
        raise ValueError(f"the MAC target is a fraction of the source's MACs in (0, 1], got {target}")
    base, base_pad, base_ms = config_macs(src), config_macs(src, multiple), latency_proxy(src, multiple)
    table = damage_table(importance)
    rows = []
    for cfg in candidates(src, multiple, mid_ratios):
        macs, padded, speedup = config_macs(cfg), config_macs(cfg, multiple), base_ms / latency_proxy(cfg, multiple)
        if macs <= target * base and padded <= target * base_pad and speedup >= (min_speedup or 0.0):
            rows.append({"config": cfg, "macs": macs, "padded_macs": padded, "proxy_speedup": speedup,
                         "damage": config_damage(table, cfg)})
    if not rows:
        extra = f" and an estimated speed-up >= {min_speedup}x" if min_speedup else ""
        raise ValueError(f"no config of {list(src.widths)} on a {multiple}-channel grid has <= {target:.0%} of its MACs"
                         f"{extra}")
    rows.sort(key=lambda r: (r["damage"], r["padded_macs"]))
    head = rows[:top]
    for r in head:
        r["measured"] = measure(r["config"]) if measure else None
    if measure:
        head.sort(key=lambda r: (r["measured"], r["damage"]))
    best = head[0]
    ranked = [{**r, "config": {"widths": list(r["config"].widths), "refine_width": r["config"].refine_width,
                               "mid_ratio": r["config"].mid_ratio}} for r in head]
    return SearchResult(best["config"], base, best["macs"], ranked)


def schedule(src: PKDNConfig, final: PKDNConfig, steps: int) -> list[PKDNConfig]:
    """Configs of pruning in ``steps`` steps from ``src`` to ``final`` (the last is ``final``):
    widths move linearly (rounded to multiples of 4), ``mid_ratio`` linearly; each config is a
    slimmer version of the one before."""
    out, prev = [], src
    for k in range(1, steps):
        t = k / steps
        ws = tuple(max(f, min(p, 4 * round((s + (f - s) * t) / 4)))
                   for s, f, p in zip(src.widths, final.widths, prev.widths))
        r_lin = src.refine_width + (final.refine_width - src.refine_width) * t
        r = max(final.refine_width, min(prev.refine_width, 4 * round(r_lin / 4)))
        cfg = replace(src, widths=ws, refine_width=r,
                      mid_ratio=round(src.mid_ratio + (final.mid_ratio - src.mid_ratio) * t, 6))
        while any(cfg.mid(a) > prev.mid(b) for a, b in zip(cfg.widths, prev.widths)):
            cfg = replace(cfg, mid_ratio=round(cfg.mid_ratio * 0.99, 6))
        check_slimmer(prev, cfg)
        out.append(cfg)
        prev = cfg
    check_slimmer(prev, final)
    return out + [final]
