"""Channel importance measured on data, and the damage of a prune measured on held-out faces.

* :func:`taylor_importance`: for every channel space of :func:`.prune.group_sums`, the first-order
  Taylor estimate of the loss change when a channel (with every weight slice coupled to it) is
  removed, ``(Σ_group w·∂L/∂w)²`` summed over batches (Molchanov et al., "Importance Estimation
  for Neural Network Pruning", CVPR 2019), with ``L = L1(student(LR), HR)`` on batches of the
  student's own training degradation (camera students: the camera model). Being loss changes, the
  scores are comparable across layers, which the per-layer search (:mod:`.prune_search`) needs.
* :func:`training_batches` / :func:`held_out_lr`: those batches, and fixed held-out LR faces, from a
  :class:`~pkdn_edge.train.config.TrainConfig` (the source student's).
* :func:`output_damage`: mean squared difference between a pruned (not yet fine-tuned) model's
  output and the source's on held-out faces: what fine-tuning has to recover.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from pkdn_edge.models import PKDN

from .prune import group_sums, taylor_term


def taylor_importance(model: PKDN, batches: Iterator[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Σ over ``batches`` ({"lr": (B,3,h,w), "hr": (B,3,H,W)}) of ``(Σ_group w·∂L/∂w)²`` per channel
    of every prunable space (same keys as :func:`.prune.group_sums`). ``model`` is left unchanged
    (its gradients are cleared)."""
    acc: dict[str, torch.Tensor] = {}
    was_training = model.training
    model.eval()
    flags = [p.requires_grad for p in model.parameters()]
    model.requires_grad_(True)
    try:
        for b in batches:
            model.zero_grad(set_to_none=True)
            F.l1_loss(model(b["lr"]), b["hr"]).backward()
            for k, v in group_sums(model, taylor_term).items():
                acc[k] = acc.get(k, 0) + v.double().pow(2)
    finally:
        model.zero_grad(set_to_none=True)
        for p, f in zip(model.parameters(), flags):
            p.requires_grad_(f)
        model.train(was_training)
    if not acc:
        raise ValueError("taylor_importance needs at least one batch")
    return {k: v.float() for k, v in acc.items()}


def _train_split(cfg) -> tuple[np.ndarray, np.ndarray]:
    """(training HR, held-out HR) faces of a TrainConfig, split as pkdn-train splits them."""
    from pkdn_edge.train.data import FaceData
    from pkdn_edge.train.loop import train_val_split

    data = FaceData.load(cfg.data, cfg.layout, cfg.hr_size, cfg.cache_dir, limit=cfg.data_limit or None)
    tr, va = train_val_split(data, cfg)
    return data.hr[tr], data.hr[va]


def training_batches(cfg, num: int, batch_size: int, hr: np.ndarray | None = None) -> Iterator[dict[str, torch.Tensor]]:
    """``num`` seeded batches of the training faces of ``cfg`` (a TrainConfig) with its degradation,
    camera settings and augmentation; seed ``cfg.seed + 1`` (not the fine-tuning's own batches)."""
    from pkdn_edge.train.data import BatchSampler

    if hr is None:
        hr = _train_split(cfg)[0]
    sampler = BatchSampler(hr, cfg.scale, cfg.degradation, augment=cfg.augment, seed=cfg.seed + 1, camera=cfg.camera)
    for step in range(num):
        b = sampler.batch(step, batch_size)
        yield {"lr": b["lr"], "hr": b["hr"]}


def held_out_lr(cfg, num: int, hr: np.ndarray | None = None) -> torch.Tensor:
    """(N,3,h,w) LR faces of ``num`` held-out faces of ``cfg`` under its training degradation
    (no augmentation, fixed seed): the faces :func:`output_damage` compares on."""
    from pkdn_edge.train.data import BatchSampler

    if hr is None:
        hr = _train_split(cfg)[1]
    hr = hr[:num]
    # one sample per face, in order: a batch draws random indices, so degrade face by face
    out = []
    for i in range(len(hr)):
        one = BatchSampler(hr[i : i + 1], cfg.scale, cfg.degradation, flip=False, augment=False,
                           seed=cfg.seed + 2 + i, camera=cfg.camera)
        out.append(one.batch(0, 1)["lr"])
    return torch.cat(out)


@torch.no_grad()
def output_damage(source: PKDN, pruned: PKDN, lr: torch.Tensor, batch: int = 32) -> float:
    """Mean squared difference of ``pruned``'s and ``source``'s outputs on ``lr`` (N,3,h,w)."""
    source.eval()
    pruned.eval()
    total = 0.0
    for i in range(0, len(lr), batch):
        x = lr[i : i + batch]
        total += float(F.mse_loss(pruned(x), source(x), reduction="sum"))
    return total / max(1, lr.numel() * source.cfg.scale**2)
