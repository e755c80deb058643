"""Networks of the ``wgan`` generator (Ferreira et al. 2025's cWGAN-GP), 3D, any grid.

- ``StyleUNet``: a StyleGAN-like U-Net. An encoder of the condition (one-hot label channels) keeps a skip per
  level; a mapping MLP turns ``z`` into a style ``w``; decoder blocks concatenate the skips and run styled
  convolutions (conv → per-voxel noise with a learned per-channel strength → LeakyReLU → AdaIN from ``w``);
  a 1×1 conv and tanh give the image channels.
- ``Critic``: a conv net on image + condition (concatenated), strided downsampling, no batch norm (layer, instance
  or no norm), flattened to one scalar per sample.
- ``gradient_penalty``: the WGAN-GP term on interpolates of real and fake images (condition fixed), in fp32.

Each level halves the grid (stride-2 convs round up, the decoder upsamples to the skip's size), so grids need not
be powers of two; the coarsest level needs at least 2 voxels per axis (instance norm).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["CRITIC_NORMS", "Critic", "StyleUNet", "gradient_penalty", "level_shapes"]

CRITIC_NORMS = ("none", "layer", "instance")
_SLOPE = 0.2


def level_shapes(shape: Sequence[int], levels: int) -> list[tuple[int, ...]]:
    """Grid of each U-Net level: ``shape`` halved (rounding up) ``levels - 1`` times."""
    out = [tuple(int(s) for s in shape)]
    for _ in range(levels - 1):
        out.append(tuple((s + 1) // 2 for s in out[-1]))
    return out


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Conv3d:
    return nn.Conv3d(cin, cout, 3, stride=stride, padding=1)


def _act() -> nn.LeakyReLU:
    return nn.LeakyReLU(_SLOPE)


def _voxel_noise(x: Tensor, generator: torch.Generator | None) -> Tensor:
    """One noise channel ``(B, 1, Z, Y, X)``: from ``generator`` (drawn on CPU, deterministic) or the global RNG."""
    shape = (x.shape[0], 1, *x.shape[2:])
    if generator is None:
        return torch.randn(shape, device=x.device, dtype=x.dtype)
    return torch.randn(shape, generator=generator).to(device=x.device, dtype=x.dtype)


class MappingNetwork(nn.Module):
    """``z`` → ``w``: pixel norm, then ``layers`` × (Linear, LeakyReLU)."""

    def __init__(self, z_dim: int, w_dim: int, layers: int) -> None:
        super().__init__()
        mods: list[nn.Module] = []
        for i in range(layers):
            mods += [nn.Linear(z_dim if i == 0 else w_dim, w_dim), _act()]
        self.net = nn.Sequential(*mods)

    def forward(self, z: Tensor) -> Tensor:
        z = z * torch.rsqrt(z.pow(2).mean(dim=1, keepdim=True) + 1e-8)
        out: Tensor = self.net(z)
        return out


class StyledConv(nn.Module):
    """conv 3³ → + noise·strength (per channel, learned, starts at 0) → LeakyReLU → AdaIN(w)."""

    def __init__(self, cin: int, cout: int, w_dim: int) -> None:
        super().__init__()
        self.conv = _conv(cin, cout)
        self.noise_strength = nn.Parameter(torch.zeros(1, cout, 1, 1, 1))
        self.norm = nn.InstanceNorm3d(cout, affine=False)
        self.style = nn.Linear(w_dim, 2 * cout)  # (scale - 1, bias) per channel

    def forward(self, x: Tensor, w: Tensor, generator: torch.Generator | None) -> Tensor:
        x = self.conv(x)
        x = F.leaky_relu(x + self.noise_strength * _voxel_noise(x, generator), _SLOPE)
        scale, bias = self.style(w).view(w.shape[0], 2, -1, 1, 1, 1).unbind(1)
        return self.norm(x) * (1 + scale) + bias


class UpBlock(nn.Module):
    """Upsample to the skip's grid, conv, concatenate the skip, two styled convs."""

    def __init__(self, cin: int, cout: int, w_dim: int) -> None:
        super().__init__()
        self.reduce = _conv(cin, cout)
        self.styled = nn.ModuleList([StyledConv(2 * cout, cout, w_dim), StyledConv(cout, cout, w_dim)])

    def forward(self, x: Tensor, skip: Tensor, w: Tensor, generator: torch.Generator | None) -> Tensor:
        x = F.interpolate(x, size=skip.shape[2:], mode="trilinear", align_corners=False)
        x = torch.cat([F.leaky_relu(self.reduce(x), _SLOPE), skip], dim=1)
        for layer in self.styled:
            x = layer(x, w, generator)
        return x


class StyleUNet(nn.Module):
    """Image ``(B, out_channels, *grid)`` in [-1, 1] from a one-hot condition ``(B, cond_channels, *grid)`` and z."""

    def __init__(self, cond_channels: int, out_channels: int, channels: Sequence[int], *, z_dim: int, w_dim: int,
                 mapping_layers: int) -> None:
        super().__init__()
        ch = list(channels)
        self.z_dim = z_dim
        self.mapping = MappingNetwork(z_dim, w_dim, mapping_layers)
        enc: list[nn.Module] = [nn.Sequential(_conv(cond_channels, ch[0]), _act(), _conv(ch[0], ch[0]), _act())]
        enc += [nn.Sequential(_conv(ch[i - 1], ch[i], stride=2), _act(), _conv(ch[i], ch[i]), _act())
                for i in range(1, len(ch))]
        self.encoder = nn.ModuleList(enc)
        self.bottleneck = nn.ModuleList([StyledConv(ch[-1], ch[-1], w_dim), StyledConv(ch[-1], ch[-1], w_dim)])
        self.decoder = nn.ModuleList([UpBlock(ch[i + 1], ch[i], w_dim) for i in reversed(range(len(ch) - 1))])
        self.out = nn.Conv3d(ch[0], out_channels, 1)

    def forward(self, cond: Tensor, z: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return self.decode(self.encode(cond), z, generator)

    def encode(self, cond: Tensor) -> list[Tensor]:
        """The condition encoder's features at every level (the skips; the last is the bottleneck's input). They
        depend on the condition only: a caller that varies z for one condition (GAN-Leaks' latent search) encodes
        once."""
        skips: list[Tensor] = []
        x = cond
        for block in self.encoder:
            x = block(x)
            skips.append(x)
        return skips

    def decode(self, skips: list[Tensor], z: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """The image from ``encode``'s features and z (voxel noise from ``generator``)."""
        w = self.mapping(z)
        x = skips[-1]
        for layer in self.bottleneck:
            x = layer(x, w, generator)
        for up, skip in zip(self.decoder, reversed(skips[:-1]), strict=True):
            x = up(x, skip, w, generator)
        return torch.tanh(self.out(x))


def _norm(kind: str, ch: int) -> nn.Module:
    if kind == "layer":
        return nn.GroupNorm(1, ch)
    if kind == "instance":
        return nn.InstanceNorm3d(ch, affine=True)
    return nn.Identity()


class Critic(nn.Module):
    """Scalar score per sample for image + condition; one stride-2 conv per level, then a final one and a linear."""

    def __init__(self, in_channels: int, channels: Sequence[int], shape: Sequence[int], norm: str = "layer") -> None:
        super().__init__()
        ch = list(channels)
        mods: list[nn.Module] = [_conv(in_channels, ch[0]), _act()]
        for i in range(1, len(ch)):
            mods += [_conv(ch[i - 1], ch[i], stride=2), _norm(norm, ch[i]), _act()]
        mods += [_conv(ch[-1], ch[-1], stride=2), _norm(norm, ch[-1]), _act()]
        self.body = nn.Sequential(*mods)
        final = level_shapes(shape, len(ch) + 1)[-1]
        self.head = nn.Linear(ch[-1] * math.prod(final), 1)

    def forward(self, image: Tensor, cond: Tensor) -> Tensor:
        x = self.body(torch.cat([image, cond.to(image.dtype)], dim=1))
        out: Tensor = self.head(x.flatten(1)).squeeze(1)
        return out


def gradient_penalty(critic: Callable[[Tensor, Tensor], Tensor], real: Tensor, fake: Tensor, cond: Tensor, *,
                     weight: float = 10.0, alpha: Tensor | None = None) -> Tensor:
    """``weight · E[(‖∇ D(x̂, c)‖₂ − 1)²]``, x̂ = α·real + (1 − α)·fake with α ~ U(0, 1) per sample; fp32, no autocast.

    The graph is kept (``create_graph``) so that the penalty trains the critic.
    """
    b = real.shape[0]
    if alpha is None:
        alpha = torch.rand(b, device=real.device)
    a = alpha.float().view(b, *([1] * (real.ndim - 1)))
    interp = (a * real.detach().float() + (1 - a) * fake.detach().float()).requires_grad_(True)
    with torch.autocast(device_type=real.device.type, enabled=False):
        score = critic(interp, cond.float())
        (grad,) = torch.autograd.grad(score.sum(), interp, create_graph=True)
        norm = torch.sqrt(grad.flatten(1).pow(2).sum(dim=1) + 1e-12)
        return weight * (norm - 1).pow(2).mean()
