"""A self-supervised 3D encoder for the privacy and fidelity checks, trained on the workspace's real cases.

SimCLR-style contrastive learning: two randomly augmented views of one case are positives, every other case in the
batch a negative (MONAI's ``ContrastiveLoss``, NT-Xent). The views: mirrors on every axis, rotations up to 15
degrees, shifts up to 15% of the field of view, scaling by up to 15%, intensity gain and offset, noise: the envelope
of the copy search, so that a copy moved within it still ranks its source among its nearest. The backbone is
MONAI's 3D ``ResNet`` on standardized volumes brought to a small cube; the embedding is its pooled feature vector,
averaged over the case and its mirror image and scaled to unit length.

The audit trains it on members and non-members alike (train and holdout), so the space favours neither side of a
membership attack. Training is seeded (weights, views and batches) and cached under the workspace's
``cache/embedding/`` keyed by the configuration and the volumes' bytes: the model is derived from protected data
and never leaves the workspace.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["CaseEncoder", "EmbeddingConfig", "cached_encoder"]


@dataclass(frozen=True)
class EmbeddingConfig:
    size: int = 32  # input cube (voxels per side)
    widths: tuple[int, int, int, int] = (8, 16, 32, 64)
    projection: int = 32
    steps: int = 150
    batch: int = 16  # cases per step (two views each)
    lr: float = 2e-3
    temperature: float = 0.2
    # the copy search's envelope: a copy moved, mirrored on any axis, turned or rescaled lands next to its source
    max_rotation_deg: float = 15.0
    max_shift: float = 0.15  # fraction of the field of view
    max_scale: float = 0.15
    flip_axes: tuple[int, ...] = (0, 1, 2)  # mirrored at random on each of these (0 = x, 1 = y, 2 = z)
    noise: float = 0.1
    seed: int = 0


def _backbone(channels: int, widths: tuple[int, ...]) -> nn.Module:
    from monai.networks.nets import ResNet

    return ResNet("basic", [1, 1, 1, 1], list(widths), spatial_dims=3, n_input_channels=channels,
                  conv1_t_size=3, conv1_t_stride=1, feed_forward=False)


def augment(x: torch.Tensor, cfg: EmbeddingConfig, g: torch.Generator) -> torch.Tensor:
    """One random view of each volume in ``(B, C, s, s, s)``: mirrors, rotation, shift, scale, gain, offset, noise."""
    b = x.shape[0]

    def uniform(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=g) * 2 - 1

    angles = uniform(b, 3) * math.radians(cfg.max_rotation_deg)
    thetas = []
    for i in range(b):
        rot = torch.eye(3)
        for axis in range(3):
            c, s = math.cos(float(angles[i, axis])), math.sin(float(angles[i, axis]))
            p, q = [a for a in range(3) if a != axis]
            r = torch.eye(3)
            r[p, p], r[p, q], r[q, p], r[q, q] = c, -s, s, c
            rot = r @ rot
        thetas.append(rot)
    lin = torch.stack(thetas) * (1 + uniform(b, 1, 1) * cfg.max_scale)
    for axis in cfg.flip_axes:
        flip = torch.where(torch.rand(b, generator=g) < 0.5, -1.0, 1.0)
        lin[:, :, axis] *= flip[:, None]
    theta = torch.cat([lin, (uniform(b, 3) * 2 * cfg.max_shift)[:, :, None]], dim=2)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    gain = 1 + uniform(b, 1, 1, 1, 1) * 0.1
    offset = uniform(b, 1, 1, 1, 1) * 0.1
    noise = torch.randn(out.shape, generator=g) * (torch.rand(b, 1, 1, 1, 1, generator=g) * cfg.noise)
    return out * gain + offset + noise


class CaseEncoder(nn.Module):
    """Backbone + projection head; ``embed`` returns unit, flip-averaged backbone features."""

    def __init__(self, channels: int, config: EmbeddingConfig | None = None) -> None:
        super().__init__()
        self.config = config or EmbeddingConfig()
        self.channels = channels
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.config.seed)
            self.backbone = _backbone(channels, self.config.widths)
            width = self.config.widths[-1]
            self.head = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, self.config.projection))

    def fit(self, volumes: torch.Tensor, progress: Callable[[int, int], None] | None = None) -> list[float]:
        """Contrastive training on ``(N, C, s, s, s)`` volumes (already at ``config.size``); the loss per step."""
        from monai.losses import ContrastiveLoss

        cfg = self.config
        n = volumes.shape[0]
        if n < 2:
            raise ValueError("contrastive training needs at least two training cases")
        g = torch.Generator().manual_seed(cfg.seed)
        loss_fn = ContrastiveLoss(temperature=cfg.temperature)
        opt = torch.optim.AdamW(self.parameters(), lr=cfg.lr, weight_decay=1e-4)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.steps)
        losses: list[float] = []
        self.train()
        order = torch.randperm(n, generator=g)
        pos = 0
        for step in range(cfg.steps):
            if pos + min(cfg.batch, n) > n:
                order, pos = torch.randperm(n, generator=g), 0
            idx = order[pos:pos + min(cfg.batch, n)]
            pos += len(idx)
            x = volumes[idx]
            a, b = augment(x, cfg, g), augment(x, cfg, g)
            za, zb = self.head(self.backbone(a)), self.head(self.backbone(b))
            loss = loss_fn(za, zb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
            if progress:
                progress(step + 1, cfg.steps)
        self.eval()
        return losses

    @torch.no_grad()
    def embed(self, volumes: torch.Tensor, batch: int = 32) -> torch.Tensor:
        """Unit embeddings ``(N, width)``: the mean of the case's and its mirror image's features."""
        self.eval()
        out = []
        for i in range(0, volumes.shape[0], batch):
            x = volumes[i:i + batch]
            f = self.backbone(x) + self.backbone(x.flip(-1))
            out.append(F.normalize(f, dim=1))
        return torch.cat(out) if out else torch.zeros(0, self.config.widths[-1])


def cached_encoder(volumes: torch.Tensor, cache_dir: Path, config: EmbeddingConfig,
                   progress: Callable[[int, int], None] | None = None) -> CaseEncoder:
    """The encoder trained on ``volumes`` with ``config``: loaded from ``cache_dir`` or trained and stored there."""
    h = hashlib.sha256(json.dumps(asdict(config), sort_keys=True).encode())
    h.update(str(tuple(volumes.shape)).encode())
    h.update(volumes.contiguous().numpy().tobytes())
    path = Path(cache_dir) / "embedding" / f"encoder-{h.hexdigest()[:20]}.pt"
    encoder = CaseEncoder(volumes.shape[1], config)
    if path.is_file():
        encoder.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        encoder.eval()
        return encoder
    encoder.fit(volumes, progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
    torch.save(encoder.state_dict(), tmp)
    os.replace(tmp, path)
    return encoder
