"""Re-parameterizable 3×3 convolution (ECBSR / RepVGG / SESR family; own code).

In training form one 3×3 conv (stride 1, zero padding 1) is the sum of linear branches, with no
normalization and no activation between them, so the sum is itself one 3×3 conv:

* ``main``:    3×3 conv, Cin → Cout, bias;
* ``point``:   1×1 conv, Cin → Cout, bias (lands on the centre tap);
* ``expand`` → ``squeeze``: 1×1 conv Cin → E (no bias) then 3×3 conv E → Cout (bias),
  E = ``expand`` × Cin. ``expand`` has no bias, so zero-padding its output is the same as
  zero-padding the input: the composition is exactly the 3×3 kernel ``Σ_e W_sq[o,e] · W_ex[e,i]``;
* ``skip``:    a learnable per-channel scale of the input (Cin = Cout only; the identity branch,
  diagonal of the centre tap), initialised at 0 so that deep residual stacks do not start doubled.

:meth:`RepConv3x3.merged` returns the one kernel and bias; :meth:`RepConv3x3.to_conv` the plain
``nn.Conv2d`` with the MACs of ``main`` alone. Training runs the merged kernel too
(:meth:`RepConv3x3.forward`): a training step costs about what the plain network's does, while the
optimiser still sees (and updates) every branch. The model-level helpers (merge a whole PKDN, start one
from plain weights) are in :mod:`pkdn_edge.models.reparam`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

REP_EXPAND = 2  # E / Cin of the expand-squeeze branch (ECBSR's depth multiplier)


class RepConv3x3(nn.Module):
    """Sum of linear branches equal to one 3×3 conv. (B,Cin,h,w) → (B,Cout,h,w).

    Drop-in for ``nn.Conv2d(cin, cout, 3, padding=1)`` in the training form of a network.
    """

    def __init__(self, cin: int, cout: int, expand: int = REP_EXPAND) -> None:
        super().__init__()
        self.cin, self.cout = cin, cout
        self.main = nn.Conv2d(cin, cout, 3, padding=1)
        self.point = nn.Conv2d(cin, cout, 1)
        self.expand = nn.Conv2d(cin, expand * cin, 1, bias=False)
        self.squeeze = nn.Conv2d(expand * cin, cout, 3, padding=1)
        self.skip = nn.Parameter(torch.zeros(cout)) if cin == cout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """One 3×3 conv with the kernel the branches sum to (:meth:`kernel`, built every call and
        differentiable): the same function and the same gradients for every branch as running the
        branches one by one (:meth:`forward_branches`; the branches are linear, with nothing between
        them), at the cost of a plain conv plus a weight-sized merge that does not grow with the batch
        (the online re-parameterization of OREPA)."""
        with torch.autocast(x.device.type, enabled=False):  # merge in the weights' dtype, not in bf16
            weight, bias = self.kernel()
        return F.conv2d(x, weight, bias, padding=1)

    def forward_branches(self, x: torch.Tensor) -> torch.Tensor:
        """The literal sum of the branches, each run on ``x`` (B,Cin,h,w) → (B,Cout,h,w): the reference
        :meth:`forward` and :meth:`merged` must equal; about 3× the MACs of :meth:`forward`."""
        y = self.main(x) + self.point(x) + self.squeeze(self.expand(x))
        if self.skip is not None:
            y = y + self.skip.view(1, -1, 1, 1) * x
        return y

    def kernel(self, dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The merged weight (Cout,Cin,3,3) and bias (Cout,), differentiable, computed in ``dtype``
        (default: the branches' own)::

            W = W_main + pad1(W_point + diag(skip)) + Σ_e W_squeeze[:, e] · W_expand[e, :]
            b = b_main + b_point + b_squeeze
        """
        def cast(t: torch.Tensor) -> torch.Tensor:
            return t if dtype is None else t.to(dtype)

        centre = cast(self.point.weight)[:, :, 0, 0]
        if self.skip is not None:
            centre = centre + torch.diag(cast(self.skip))
        weight = (
            cast(self.main.weight)
            + F.pad(centre[:, :, None, None], (1, 1, 1, 1))
            + torch.einsum("oekl,ei->oikl", cast(self.squeeze.weight), cast(self.expand.weight)[:, :, 0, 0])
        )
        bias = cast(self.main.bias) + cast(self.point.bias) + cast(self.squeeze.bias)
        return weight, bias

    @torch.no_grad()
    def merged(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The equivalent plain conv's weight (Cout,Cin,3,3) and bias (Cout,), detached, in the
        branches' dtype; summed in float64, so the merge adds no rounding beyond the final cast."""
        weight, bias = self.kernel(torch.float64)
        dt = self.main.weight.dtype
        return weight.to(dt), bias.to(dt)

    def to_conv(self) -> nn.Conv2d:
        """A plain ``nn.Conv2d(Cin, Cout, 3, padding=1)`` holding :meth:`merged` (same device/dtype)."""
        w, b = self.merged()
        conv = nn.Conv2d(self.cin, self.cout, 3, padding=1).to(device=w.device, dtype=w.dtype)
        with torch.no_grad():
            conv.weight.copy_(w)
            conv.bias.copy_(b)
        return conv

    @torch.no_grad()
    def load_plain(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        """Take a plain conv's weight (Cout,Cin,3,3) and bias (Cout,): ``main`` gets them, ``point``,
        ``squeeze`` and ``skip`` become 0, so the block computes exactly the plain conv. ``expand``
        keeps its (random) weights: with ``squeeze`` at 0 its gradient flows from the first step."""
        self.main.weight.copy_(weight)
        self.main.bias.copy_(bias)
        for p in (self.point.weight, self.point.bias, self.squeeze.weight, self.squeeze.bias):
            p.zero_()
        if self.skip is not None:
            self.skip.zero_()
