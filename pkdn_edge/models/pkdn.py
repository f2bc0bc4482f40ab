"""PKDN: Prior Knowledge Distillation Network for face super-resolution (arXiv 2409.14385).

One file for the network family, timm-style: small blocks with explicit arguments, one
:class:`PKDN` skeleton, and named presets built by :func:`create_model`.

Skeleton (both roles)::

    lr (B,3,h,w) ──bicubic ×s──────────────────────────────────────────────► + ─► sr (B,3,sh,sw)
       │                                                                     ▲
       └─ stem ─► [stage 0 ─ fusion 0] ─► down ─► [stage 1 ─ fusion 1] ─► … ─┐│
                      │ e0                            │ e1              bottleneck
                      ▼                               ▼                      ││
              FFB (all e_j resampled) ◄──── up ◄── [decoder stage] ◄────────┘│
                      │ d0                                                    │
                      └──► upsampler (log2 s × [pixel-shuffle ×2, conv]) ──────┘

* The encoder works on the LR grid (h×w) and halves it at every stage, so MACs scale with the LR
  size: ×8 (16→128) costs about a quarter of ×4 (32→128) for the same widths.
* **Teacher** (``role="teacher"``): a prior encoder turns the K-channel parsing map at HR size into
  features at every encoder scale; each :class:`ParsingFusionBlock` injects them with feature-wise
  affine modulation, channel attention and spatial attention.
* **Student** (``role="student"``): identical, except the fusion blocks are guided by the image
  features alone (``prior_channels=0``). It learns the priors only through distillation.
* The :class:`FeatureFusionBlock` of each decoder stage fuses the encoder features of **every**
  scale (resampled to the stage's grid), not only a same-scale skip.

Inputs are RGB in [0, 1], NCHW float32; outputs are RGB, unclamped (clamp to [0, 1] for display).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Callable, Literal

import torch
import torch.nn.functional as F
from torch import nn

from .repconv import RepConv3x3

Role = Literal["teacher", "student"]
BLOCKS = ("plain", "rep")
ConvFactory = Callable[[int, int], nn.Module]  # (cin, cout) -> a 3×3 conv, stride 1, padding 1


@dataclass(frozen=True)
class PKDNConfig:
    """Architecture of one PKDN network. One field per setting; presets live in :data:`PRESETS`.

    Attributes:
        scale: super-resolution factor (4: 32→128, 8: 16→128 faces).
        widths: channels of encoder stages 0..n-1 (stage i runs at the LR grid / 2**i).
        depth: residual blocks per encoder/decoder stage.
        bottleneck_depth: residual blocks at the coarsest scale.
        refine_width: channels of the upsampler's first ×2 step (halved at each further step, ≥ 8).
        prior_channels: K, channels of the parsing prior (teacher only; 0 = student).
        prior_width: channels of the prior features fed to each fusion block.
        reduction: channel-attention reduction ratio.
        mid_ratio: inner width of every residual block as a fraction of its stage width
            (1.0 = square blocks; structured pruning lowers it).
        block: form of the image path's 3×3 convs (stem, residual blocks, fusion guide and spatial
            gate, upsampler refinements, to-RGB): ``"plain"`` (one conv) or ``"rep"`` (the training
            form of :class:`~pkdn_edge.models.repconv.RepConv3x3`, parallel linear branches that
            :func:`~pkdn_edge.models.reparam.reparameterize` merges into the plain network). The
            prior encoder of a teacher stays plain.
    """

    scale: int = 4
    widths: tuple[int, ...] = (48, 64, 96)
    depth: int = 2
    bottleneck_depth: int = 2
    refine_width: int = 32
    prior_channels: int = 0
    prior_width: int = 16
    reduction: int = 4
    mid_ratio: float = 1.0
    block: str = "plain"

    def __post_init__(self) -> None:
        if self.scale not in (2, 4, 8):
            raise ValueError(f"scale must be 2, 4 or 8, got {self.scale}")
        if len(self.widths) < 1 or min(self.widths) < 1:
            raise ValueError(f"widths must be a non-empty tuple of positive ints, got {self.widths}")
        if self.block not in BLOCKS:
            raise ValueError(f"block must be one of {list(BLOCKS)}, got {self.block!r}")

    @property
    def role(self) -> Role:
        return "teacher" if self.prior_channels > 0 else "student"

    def mid(self, width: int) -> int:
        """Inner width of a residual block in a stage of ``width`` channels."""
        return max(1, round(width * self.mid_ratio))

    def conv3x3_factory(self) -> ConvFactory:
        """The factory of the image path's 3×3 convs, ``(cin, cout) -> module``, for :attr:`block`."""
        return RepConv3x3 if self.block == "rep" else conv3x3

    def to_dict(self) -> dict:
        """Plain-JSON dict; ``block`` is left out when ``"plain"``, so plain checkpoints keep the config
        dict they had before the setting existed (and older code can still read them)."""
        d = asdict(self)
        d["widths"] = list(self.widths)
        if d["block"] == "plain":
            del d["block"]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "PKDNConfig":
        d = dict(d)
        d["widths"] = tuple(d["widths"])
        return cls(**d)


def conv3x3(cin: int, cout: int, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, padding=1, bias=bias)


def conv1x1(cin: int, cout: int, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 1, bias=bias)


class ResBlock(nn.Module):
    """conv3×3 → ReLU → conv3×3 + identity. (B,C,h,w) → (B,C,h,w).

    ``mid`` is the inner width: structured pruning shrinks it without touching the block's interface.
    ``conv`` builds each 3×3 conv from ``(cin, cout)`` (:meth:`PKDNConfig.conv3x3_factory`).
    """

    def __init__(self, channels: int, mid: int | None = None, conv: ConvFactory | None = None) -> None:
        super().__init__()
        mid = mid or channels
        conv = conv or conv3x3
        self.conv1 = conv(channels, mid)
        self.act = nn.ReLU(inplace=True)
        self.conv2 = conv(mid, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(self.act(self.conv1(x)))


class ChannelAttention(nn.Module):
    """Squeeze-and-excitation gate. (B,C,h,w) → (B,C,1,1) in (0, 1)."""

    def __init__(self, channels: int, reduction: int) -> None:
        super().__init__()
        hidden = max(channels // reduction, 4)
        self.fc1 = conv1x1(channels, hidden)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = conv1x1(hidden, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.fc2(self.act(self.fc1(F.adaptive_avg_pool2d(x, 1)))))


class ParsingFusionBlock(nn.Module):
    """Inject a parsing prior into image features with attention.

    ``g = ReLU(conv3×3([x, p]))`` is a joint guide; it predicts a feature-wise affine modulation
    ``h = x·(1+γ) + β``, a channel gate (from ``h``) and a spatial gate (from ``g``); the gated
    ``h`` is projected and added to ``x``. With ``prior_channels=0`` (student) the guide sees ``x``
    only, so the block is the same shape with self-attention instead of prior attention.

    Shapes: x (B,C,h,w), prior (B,P,h,w) or None → (B,C,h,w). ``conv`` builds the two 3×3 convs.
    """

    def __init__(self, channels: int, prior_channels: int, reduction: int, conv: ConvFactory | None = None) -> None:
        super().__init__()
        conv = conv or conv3x3
        self.prior_channels = prior_channels
        self.guide = conv(channels + prior_channels, channels)
        self.act = nn.ReLU(inplace=True)
        self.affine = conv1x1(channels, 2 * channels)
        self.channel_gate = ChannelAttention(channels, reduction)
        self.spatial_gate = conv(channels, 1)
        self.proj = conv1x1(channels, channels)

    def forward(self, x: torch.Tensor, prior: torch.Tensor | None = None) -> torch.Tensor:
        if self.prior_channels:
            if prior is None:
                raise ValueError("this fusion block was built for a prior but got none")
            g = self.act(self.guide(torch.cat([x, prior], dim=1)))
        else:
            g = self.act(self.guide(x))
        gamma, beta = self.affine(g).chunk(2, dim=1)
        h = x * (1 + gamma) + beta
        h = h * self.channel_gate(h) * torch.sigmoid(self.spatial_gate(g))
        return x + self.proj(h)


class Downsample(nn.Module):
    """Pixel-unshuffle ×2 then conv1×1: (B,Cin,h,w) → (B,Cout,h/2,w/2). Lossless before the conv."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = conv1x1(4 * cin, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pixel_unshuffle(x, 2))


class Upsample(nn.Module):
    """conv1×1 to 4·Cout then pixel-shuffle ×2: (B,Cin,h,w) → (B,Cout,2h,2w)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = conv1x1(cin, 4 * cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pixel_shuffle(self.conv(x), 2)


class FeatureFusionBlock(nn.Module):
    """Fuse a decoder feature with the encoder features of every scale.

    Each encoder feature ``e_j`` is projected to ``Cout`` channels by a 1×1 conv at its own
    resolution (cheap), resampled to the decoder grid (average pooling when finer, bilinear when
    coarser), concatenated with the decoder feature and mixed by a 1×1 conv, plus a residual.

    Shapes: d (B,Cout,h,w), encoder [(B,C_j,h_j,w_j)] → (B,Cout,h,w).
    """

    def __init__(self, encoder_widths: tuple[int, ...], cout: int) -> None:
        super().__init__()
        self.proj = nn.ModuleList(conv1x1(c, cout) for c in encoder_widths)
        self.mix = conv1x1(cout * (len(encoder_widths) + 1), cout)

    def forward(self, d: torch.Tensor, encoder: list[torch.Tensor]) -> torch.Tensor:
        h, w = d.shape[-2:]
        parts = [d]
        for proj, e in zip(self.proj, encoder):
            e = proj(e)
            if e.shape[-1] > w:
                e = F.avg_pool2d(e, e.shape[-1] // w)
            elif e.shape[-1] < w:
                e = F.interpolate(e, size=(h, w), mode="bilinear", align_corners=False)
            parts.append(e)
        return d + self.mix(torch.cat(parts, dim=1))


class PriorEncoder(nn.Module):
    """Parsing map at HR size → prior features on every encoder grid.

    (B,K,sh,sw) → [(B,P,h/2**i,w/2**i) for i in stages]. The first step pixel-unshuffles by ``s``
    (no information lost for thin regions such as eyes), then each further scale is a strided conv.
    """

    def __init__(self, prior_channels: int, width: int, scale: int, num_stages: int) -> None:
        super().__init__()
        self.scale = scale
        self.stem = nn.Sequential(
            conv1x1(prior_channels * scale * scale, width), nn.ReLU(inplace=True), conv3x3(width, width)
        )
        self.downs = nn.ModuleList(
            nn.Sequential(nn.ReLU(inplace=True), nn.Conv2d(width, width, 3, stride=2, padding=1))
            for _ in range(num_stages - 1)
        )

    def forward(self, prior: torch.Tensor) -> list[torch.Tensor]:
        p = self.stem(F.pixel_unshuffle(prior, self.scale))
        feats = [p]
        for down in self.downs:
            p = down(p)
            feats.append(p)
        return feats


class Upsampler(nn.Module):
    """LR-grid features → RGB residual at ×s, progressively.

    ``log2(s)`` steps of [conv1×1 + pixel-shuffle ×2, conv3×3, ReLU]; step ``k`` has
    ``max(R / 2**k, 8)`` channels, so the cost per step stays flat while the grid grows; a final
    conv3×3 maps to RGB on the HR grid. (B,C,h,w) → first-step feature (B,R,2h,2w) (distilled),
    residual (B,3,sh,sw). ``conv`` builds the 3×3 convs.
    """

    def __init__(self, cin: int, width: int, scale: int, conv: ConvFactory | None = None) -> None:
        super().__init__()
        conv = conv or conv3x3
        steps = scale.bit_length() - 1
        self.widths = [max(width >> k, 8) for k in range(steps)]
        chans = [cin] + self.widths
        self.ups = nn.ModuleList(Upsample(chans[k], chans[k + 1]) for k in range(steps))
        self.refines = nn.ModuleList(conv(c, c) for c in self.widths)
        self.act = nn.ReLU(inplace=True)
        self.to_rgb = conv(self.widths[-1], 3)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        first = None
        for up, refine in zip(self.ups, self.refines):
            x = self.act(refine(up(x)))
            first = x if first is None else first
        return first, self.to_rgb(x)


class PKDN(nn.Module):
    """PKDN teacher or student (see the module docstring for the skeleton).

    ``forward(lr, prior=None) -> sr``: lr (B,3,h,w) in [0,1]; prior (B,K,sh,sw) soft parsing map
    (teacher only); sr (B,3,sh,sw). ``forward_features`` also returns the distilled features:
    encoder stages 0..n-1, the bottleneck, decoder stages n-2..0, and the upsampler's refinement
    feature (``2n + 1`` tensors; :attr:`feature_channels` lists their widths).
    """

    def __init__(self, cfg: PKDNConfig) -> None:
        super().__init__()
        self.cfg = cfg
        w = cfg.widths
        n = len(w)
        conv = cfg.conv3x3_factory()
        self.stem = conv(3, w[0])
        self.downs = nn.ModuleList(Downsample(w[i - 1], w[i]) for i in range(1, n))
        self.enc_blocks = nn.ModuleList(
            nn.Sequential(*(ResBlock(w[i], cfg.mid(w[i]), conv) for _ in range(cfg.depth))) for i in range(n)
        )
        self.fusions = nn.ModuleList(
            ParsingFusionBlock(w[i], cfg.prior_width if cfg.prior_channels else 0, cfg.reduction, conv)
            for i in range(n)
        )
        self.prior_encoder = (
            PriorEncoder(cfg.prior_channels, cfg.prior_width, cfg.scale, n) if cfg.prior_channels else None
        )
        self.bottleneck = nn.Sequential(*(ResBlock(w[-1], cfg.mid(w[-1]), conv) for _ in range(cfg.bottleneck_depth)))
        # decoder stage i (i = n-2 .. 0) goes from width w[i+1] at grid i+1 to w[i] at grid i
        self.ups = nn.ModuleList(Upsample(w[i + 1], w[i]) for i in range(n - 1))
        self.ffbs = nn.ModuleList(FeatureFusionBlock(w, w[i]) for i in range(n - 1))
        self.dec_blocks = nn.ModuleList(
            nn.Sequential(*(ResBlock(w[i], cfg.mid(w[i]), conv) for _ in range(cfg.depth))) for i in range(n - 1)
        )
        self.upsampler = Upsampler(w[0], cfg.refine_width, cfg.scale, conv)

    @property
    def feature_channels(self) -> list[int]:
        w = list(self.cfg.widths)
        return w + [w[-1]] + w[-2::-1] + [self.cfg.refine_width]

    def forward_features(
        self, lr: torch.Tensor, prior: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        if self.prior_encoder is not None:
            if prior is None:
                raise ValueError("the teacher needs a parsing prior (B,K,sH,sW)")
            priors: list[torch.Tensor | None] = self.prior_encoder(prior)
        else:
            priors = [None] * len(self.cfg.widths)
        base = F.interpolate(lr, scale_factor=self.cfg.scale, mode="bicubic", align_corners=False)

        feats: list[torch.Tensor] = []
        x = self.stem(lr)
        for i, (blocks, fusion) in enumerate(zip(self.enc_blocks, self.fusions)):
            if i > 0:
                x = self.downs[i - 1](x)
            x = fusion(blocks(x), priors[i])
            feats.append(x)
        encoder = feats[:]
        x = self.bottleneck(x)
        feats.append(x)
        for i in reversed(range(len(self.ups))):
            x = self.dec_blocks[i](self.ffbs[i](self.ups[i](x), encoder))
            feats.append(x)
        f, residual = self.upsampler(x)
        feats.append(f)
        return base + residual, feats

    def forward(self, lr: torch.Tensor, prior: torch.Tensor | None = None) -> torch.Tensor:
        return self.forward_features(lr, prior)[0]


# ---------------------------------------------------------------------------------------------
# presets

PRESETS: dict[str, PKDNConfig] = {
    # sized for a real-time webcam loop on 2 CPU cores / a Jetson after INT8
    "edge": PKDNConfig(widths=(48, 64, 96), depth=2, bottleneck_depth=2, refine_width=32, prior_width=16),
    # KDFSRNet-like capacity (64 channels, deeper stages) for GPU users
    "paper": PKDNConfig(widths=(64, 64, 64, 64), depth=4, bottleneck_depth=4, refine_width=64, prior_width=32),
}
NUM_PRIOR_CHANNELS = 11


def model_config(preset: str, scale: int, role: Role = "student", **overrides) -> PKDNConfig:
    """The config of a named preset at a scale and role; ``overrides`` replace single fields."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose from {sorted(PRESETS)}")
    if role not in ("teacher", "student"):
        raise ValueError(f"role must be 'teacher' or 'student', got {role!r}")
    prior = NUM_PRIOR_CHANNELS if role == "teacher" else 0
    return replace(PRESETS[preset], scale=scale, prior_channels=prior, **overrides)


def create_model(preset: str = "edge", scale: int = 4, role: Role = "student", **overrides) -> PKDN:
    """Build a PKDN network from a preset: ``create_model("edge", 8, "teacher")``."""
    return PKDN(model_config(preset, scale, role, **overrides))
