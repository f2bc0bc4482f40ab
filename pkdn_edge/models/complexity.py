"""Parameter and MAC counting for PKDN networks (own code, forward hooks; no extra dependency).

MACs count multiply-accumulates of convolutions (the bulk of the work) for one forward pass;
element-wise ops, pooling, interpolation and pixel-(un)shuffle are not counted.
"""

from __future__ import annotations

import torch
from torch import nn

from .repconv import RepConv3x3


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def count_macs(model: nn.Module, *inputs: torch.Tensor) -> int:
    """Multiply-accumulates of all ``nn.Conv2d``/``nn.Linear`` layers for one forward on ``inputs``.

    A :class:`~pkdn_edge.models.repconv.RepConv3x3` counts as the one 3×3 conv its forward runs (the
    weight-sized merge of its branches, once per forward whatever the batch, is not counted)."""
    total = 0

    def conv_hook(m: nn.Conv2d, _inp, out: torch.Tensor) -> None:
        nonlocal total
        k = m.kernel_size[0] * m.kernel_size[1] * (m.in_channels // m.groups)
        total += out.numel() * k

    def linear_hook(m: nn.Linear, _inp, out: torch.Tensor) -> None:
        nonlocal total
        total += out.numel() * m.in_features

    def rep_hook(m: RepConv3x3, _inp, out: torch.Tensor) -> None:
        nonlocal total  # forward runs one 3×3 conv with the merged kernel (its branch modules do not run)
        total += out.numel() * 9 * m.cin

    handles = []
    for m in model.modules():
        if isinstance(m, RepConv3x3):
            handles.append(m.register_forward_hook(rep_hook))
        elif isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
    was_training = model.training
    model.eval()
    try:
        model(*inputs)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    batch = inputs[0].shape[0]
    return total // batch


def preset_table() -> str:
    """Markdown table of params and MACs (per 128×128 output face) of every preset/scale/role."""
    from .pkdn import NUM_PRIOR_CHANNELS, PRESETS, create_model

    lines = ["| preset | scale | role | input | params (M) | GMACs / face |", "|---|---|---|---|---|---|"]
    for preset in PRESETS:
        for scale in (4, 8):
            for role in ("student", "teacher"):
                m = create_model(preset, scale, role)
                h = 128 // scale
                args = [torch.rand(1, 3, h, h)]
                if role == "teacher":
                    args.append(torch.rand(1, NUM_PRIOR_CHANNELS, 128, 128))
                lines.append(
                    f"| {preset} | ×{scale} | {role} | {h}×{h}" + (" + prior 11×128×128" if role == "teacher" else "")
                    + f" | {count_params(m) / 1e6:.3f} | {count_macs(m, *args) / 1e9:.3f} |"
                )
    return "\n".join(lines)


if __name__ == "__main__":
    print(preset_table())
