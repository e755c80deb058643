"""Evidence figures: mid-slice triptychs (synthetic | nearest training case | difference) as PNG files.

Figures that show real cases are derived from protected data: they are written inside the audit folder of the
workspace only, and listed in the evidence with ``contains_real_data = true`` so that export can leave them out.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

__all__ = ["triptych"]


def _to_u8(a: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return (np.clip((a - lo) / max(hi - lo, 1e-6), 0, 1) * 255).astype(np.uint8)


def _mid_slices(vol: np.ndarray) -> np.ndarray:
    """Axial, coronal and sagittal mid slices of a ``(Z, Y, X)`` volume, side by side (flipped for display)."""
    z, y, x = vol.shape
    n = max(vol.shape)
    tiles = []
    for sl in (vol[z // 2], vol[:, y // 2, :][::-1], vol[:, :, x // 2][::-1]):
        pad = np.full((n, n), float(vol.min()), dtype=np.float32)
        pad[: sl.shape[0], : sl.shape[1]] = sl
        tiles.append(pad)
    return np.concatenate(tiles, axis=1)


def triptych(path: Path, synthetic: np.ndarray, nearest: np.ndarray, title: str, *, scale: int = 4) -> Path:
    """Rows: synthetic, nearest training case, absolute difference (each: axial | coronal | sagittal)."""
    rows = [_mid_slices(synthetic), _mid_slices(nearest), _mid_slices(np.abs(synthetic - nearest))]
    lo, hi = np.percentile(np.r_[rows[0].ravel(), rows[1].ravel()], [1, 99])
    dhi = max(float(np.percentile(rows[2], 99)), 1e-6)
    imgs = [_to_u8(rows[0], lo, hi), _to_u8(rows[1], lo, hi), _to_u8(rows[2], 0, dhi)]
    gap = np.zeros((2, imgs[0].shape[1]), dtype=np.uint8)
    canvas = np.concatenate([imgs[0], gap, imgs[1], gap, imgs[2]], axis=0)
    img = Image.fromarray(canvas).resize((canvas.shape[1] * scale, canvas.shape[0] * scale), Image.Resampling.NEAREST)
    header = Image.new("L", (img.width, 14), 0)
    ImageDraw.Draw(header).text((2, 1), title[:120], fill=255)
    out = Image.new("L", (img.width, img.height + 14), 0)
    out.paste(header, (0, 0))
    out.paste(img, (0, 14))
    path.parent.mkdir(parents=True, exist_ok=True)
    out.save(path, format="PNG")
    return path
