"""Switch a PKDN between its plain and its re-parameterized (``block="rep"``) form.

* :func:`reparameterize`: rep → plain, exact: every :class:`~.repconv.RepConv3x3` becomes the one 3×3
  conv its branches sum to. The result is an ordinary ``block="plain"`` PKDN of the same config
  (same state-dict keys and shapes, same MACs), which is what export and the runtime see.
* :func:`from_plain`: plain → rep with the same function: each rep conv's ``main`` branch takes the
  plain weights and the other branches start at 0, so a trained (e.g. camera) student can be
  fine-tuned in rep form from where it is.

Neither touches the global torch RNG (the new network is built under :func:`torch.random.fork_rng`).
"""

from __future__ import annotations

from dataclasses import replace

import torch

from .pkdn import PKDN
from .repconv import RepConv3x3


def rep_convs(model: PKDN) -> dict[str, RepConv3x3]:
    """``{module name: RepConv3x3}`` of a network (empty for a plain one)."""
    return {name: m for name, m in model.named_modules() if isinstance(m, RepConv3x3)}


def _like(model: PKDN, block: str, seed: int) -> PKDN:
    """A fresh PKDN of ``model``'s config with ``block``, on its device and dtype, in its train/eval
    mode; built with a private RNG (``seed``) so the caller's random stream is left as it was."""
    p = next(model.parameters())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        other = PKDN(replace(model.cfg, block=block))
    return other.to(device=p.device, dtype=p.dtype).train(model.training)


@torch.no_grad()
def reparameterize(model: PKDN) -> PKDN:
    """The plain-form network computing what ``model`` computes (up to float rounding, < 1e-5).

    Returns a new ``block="plain"`` PKDN (``model`` itself when it is already plain); its
    ``state_dict`` loads into ``PKDN(replace(model.cfg, block="plain"))``, its MACs are those of the
    plain network. ``model`` is not changed.
    """
    if model.cfg.block == "plain":
        return model
    plain = _like(model, "plain", seed=0)
    reps, src = rep_convs(model), model.state_dict()
    state = {}
    for key in plain.state_dict():
        name, _, leaf = key.rpartition(".")
        if name in reps:
            weight, bias = reps[name].merged()
            state[key] = weight if leaf == "weight" else bias
        else:
            state[key] = src[key]
    plain.load_state_dict(state)
    return plain


@torch.no_grad()
def from_plain(model: PKDN, seed: int = 0) -> PKDN:
    """The ``block="rep"`` network computing exactly what the plain ``model`` computes.

    Every rep conv's ``main`` 3×3 branch takes the plain conv's weight and bias; ``point``,
    ``squeeze`` and ``skip`` are 0; ``expand`` keeps a seeded random init (``seed``) so its gradient
    is non-zero once ``squeeze`` moves. Every other weight is copied. ``model`` is not changed.
    """
    if model.cfg.block != "plain":
        raise ValueError(f"from_plain needs a block='plain' network, got block={model.cfg.block!r}")
    rep = _like(model, "rep", seed=seed)
    src = model.state_dict()
    reps = rep_convs(rep)
    inside = tuple(f"{name}." for name in reps)
    rep.load_state_dict({k: src[k] for k in rep.state_dict() if not k.startswith(inside)}, strict=False)
    for name, conv in reps.items():
        conv.load_plain(src[f"{name}.weight"], src[f"{name}.bias"])
    return rep
