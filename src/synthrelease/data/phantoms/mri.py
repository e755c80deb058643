"""Brain glioma MRI phantoms (BraTS layout): channels t1c, t1n, t2w, t2f; labels ``{1 NCR, 2 SNFH, 3 ET}``.

Each patient (drawn from ``SeedSequence([seed, index, 0x3A1])``) has its own head, face, pose, brain and glioma.
Anatomy: scalp skin and fat, a face on the anterior (-y) side (nose, lips, eyes in fat-filled orbits, nasal cavity
and sinuses), a skull dark in every sequence, a CSF rim, a folded grey-matter cortical ribbon over white matter, an
interhemispheric fissure, two lateral ventricles, and a glioma in one hemisphere: oedema / SNFH (label 2, largest,
lobulated), an enhancing rim (ET, label 3) around a necrotic core (NCR, label 1).

Contrast (arbitrary units, +-7 % per patient) in the order t1c / t1n / t2w / t2f:
WM 880/900/480/620, GM 620/640/780/820, CSF 180/170/1400/120, fat 1250/1300/950/900, oedema 550/560/1150/1350,
ET 1350/650/900/1000 (enhances only on t1c), NCR 250/280/1300/600, bone 60/60/50/50, air 0.
Then a Gaussian PSF, a smooth multiplicative bias field (about +-15 %, one per sequence) and Rician noise
(1.5-3 % of WM). A subset of the channels gives the same arrays as the full set.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from synthrelease.data.case import Case
from synthrelease.data.phantoms._anatomy import (
    Bumps,
    Frame,
    Head,
    check_request,
    draw_bumps,
    draw_head,
    draw_pose,
    ensure_label,
    gaussian_psf,
    make_frame,
    paint,
    point_frame,
    rotation,
    slabs,
)
from synthrelease.data.schema import BRATS_SCHEMA, Modality
from synthrelease.errors import InputError

__all__ = ["MRI_CHANNELS", "make_mri_phantom"]

_STREAM = 0x3A1
_CRANIUM_W = -15.0  # cranium centre below the volume centre (mm): the brain fills the FOV, the chin is cut
MRI_CHANNELS = ("t1c", "t1n", "t2w", "t2f")
_TISSUES: dict[str, tuple[float, float, float, float]] = {
    "skin": (700, 700, 650, 600), "fat": (1250, 1300, 950, 900), "muscle": (450, 460, 380, 420),
    "bone": (60, 60, 50, 50), "csf": (180, 170, 1400, 120), "gm": (620, 640, 780, 820), "wm": (880, 900, 480, 620),
    "eye": (160, 150, 1350, 130), "air": (0, 0, 0, 0), "oedema": (550, 560, 1150, 1350),
    "et": (1350, 650, 900, 1000), "ncr": (250, 280, 1300, 600),
}


def _channel_indices(channels: Sequence[str]) -> list[int]:
    names = (channels,) if isinstance(channels, str) else tuple(channels)
    unknown = [c for c in names if c not in MRI_CHANNELS]
    if unknown or not names or len(set(names)) != len(names):
        raise InputError(f"MRI phantom channels {list(names)} are unknown, empty or repeated",
                         fix=f"choose distinct channels among {list(MRI_CHANNELS)}")
    return [MRI_CHANNELS.index(c) for c in names]


def _brain(frame: Frame, head: Head, csf: float) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Brain-surface signed distance (cranial cavity less the CSF rim and the fissure) and the head's parts."""
    u, _, w = frame.coords
    body = head.surface(frame)
    parts = head.interior(frame, body)
    fissure = np.maximum(np.abs(u) - 1.5, (head.centre_w - 0.05 * head.cranium[2]) - w)
    parts["body"] = body
    return np.maximum(parts["cavity"] + csf, -fissure), parts


def _gyri(frame: Frame, normals: np.ndarray, waves: np.ndarray, phases: np.ndarray, amp: float) -> np.ndarray:
    """Smooth folding field (mm) that moves the grey/white boundary: a sum of plane waves 14-22 mm long."""
    u, v, w = frame.coords
    out = np.zeros_like(u)
    for n, lam, ph in zip(normals, waves, phases, strict=True):
        k = 2 * np.pi / float(lam)
        out += np.cos(k * (float(n[0]) * u + float(n[1]) * v + float(n[2]) * w) + float(ph))
    return out * np.float32(amp / np.sqrt(len(waves) / 2))


def _bias(frame: Frame, fov_mm: float, coeffs: np.ndarray) -> np.ndarray:
    """Multiplicative bias field ``exp(sum c_k b_k)`` over quadratic polynomials of scanner coordinates."""
    n, o, h = frame.shape, frame.geometry.origin[0], frame.h
    ax = ((o + h * np.arange(n)) / (0.5 * fov_mm)).astype(np.float32)
    nz = frame.coords[0].shape[0]
    x, y, z = ax[None, None, :], ax[None, :, None], ax[frame.z0:frame.z0 + nz, None, None]
    basis = (x, y, z, x * x - 0.33, y * y - 0.33, z * z - 0.33, x * y, x * z, y * z)
    log = sum(float(c) * b for c, b in zip(coeffs, basis, strict=True))
    return np.exp(np.broadcast_to(log, (nz, n, n))).astype(np.float32)


@dataclass(frozen=True)
class _Patient:
    """Everything drawn for one MRI patient (tumour parts: centre, semi-axes, rotation, bumps)."""

    head: Head
    csf: float
    gm: float
    gyri: tuple[np.ndarray, np.ndarray, np.ndarray]
    ventricles: tuple[float, float, Bumps]
    oedema: tuple[np.ndarray, np.ndarray, np.ndarray, Bumps]
    core: tuple[np.ndarray, np.ndarray, np.ndarray, Bumps]
    contrast: np.ndarray  # (tissue, channel)
    bias: np.ndarray  # (channel, 9)
    fov_mm: float


def _render(frame: Frame, pt: _Patient, rim: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Biased image (C, z, Y, X) of one slab before PSF and noise, with the oedema and tumour-core distances."""
    head, h, b, c = pt.head, frame.h, pt.head.cranium[1], pt.head.cranium[2]
    brain, parts = _brain(frame, head, pt.csf)
    body = parts["body"]
    wm = brain + pt.gm + _gyri(frame, *pt.gyri, 1.4)
    scale, angle, v_bumps = pt.ventricles
    vent = np.full_like(brain, 1e4)
    for s in (1.0, -1.0):
        vc = (s * (3.0 + 4.0 * scale), -0.05 * b, _CRANIUM_W + 0.12 * c)
        vent = np.minimum(vent, frame.ellipsoid(vc, (5.5 * scale, 0.28 * b, 8.0 * scale), rot=rotation(rz=s * angle),
                                                bumps=v_bumps))
    sds = [frame.ellipsoid(centre, axes, rot=rot, bumps=bumps) for centre, axes, rot, bumps in (pt.oedema, pt.core)]
    core = np.maximum(sds[1], brain)
    oed = np.maximum(np.maximum(np.minimum(sds[0], core - 4.0), brain), -vent)
    tissue = dict(zip(_TISSUES, pt.contrast, strict=True))
    image = np.zeros((len(pt.bias), *brain.shape), dtype=np.float32)
    layers = [
        (body, "skin"), (body + head.skin, "fat"), (body + head.skin + head.fat, "muscle"), (parts["nose"], "muscle"),
        (parts["skull"], "bone"), (parts["cavity"], "csf"), (brain, "gm"), (wm, "wm"), (vent, "csf"),
        (parts["orbits"], "fat"), (parts["eyes"], "eye"), (parts["air"], "air"), (oed, "oedema"), (core, "et"),
        (core + rim, "ncr"),
    ]
    for sd, name in layers:
        paint(image, sd, tissue[name], h)
    for k, coeffs in enumerate(pt.bias):
        image[k] *= _bias(frame, pt.fov_mm, coeffs)
    return image, oed, core


def make_mri_phantom(index: int, *, shape: int = 64, seed: int = 0, fov_mm: float = 220.0,
                     channels: Sequence[str] = MRI_CHANNELS) -> Case:
    """Brain glioma MRI phantom ``phantom{index:03d}``: ``shape``^3 voxels over ``fov_mm``, BraTS labels.

    ``channels`` picks and orders sequences among t1c, t1n, t2w, t2f (``InputError`` otherwise). The same
    ``(seed, index)`` gives the same patient at every ``shape``, and bit-identical arrays for the same ``shape``.
    """
    check_request(index, shape, seed, fov_mm)
    chans = _channel_indices(channels)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(index), _STREAM]))
    pose = draw_pose(rng, fov_mm)
    head = draw_head(rng, _CRANIUM_W)
    _a, b, c = head.cranium
    csf, gm = float(rng.uniform(1.5, 3.5)), float(rng.uniform(2.5, 3.5))
    g_normals, g_waves, g_phases = rng.normal(size=(8, 3)), rng.uniform(14, 22, 8), rng.uniform(0, 2 * np.pi, 8)
    g_normals /= np.linalg.norm(g_normals, axis=1, keepdims=True)
    vent_scale, vent_angle, vent_bumps = float(rng.uniform(0.7, 1.5)), float(rng.uniform(8, 18)), draw_bumps(rng, 0.1)
    side = float(rng.choice([-1.0, 1.0]))
    t_centre = np.array([side * rng.uniform(18, 40), rng.uniform(-0.4, 0.35) * b,
                         _CRANIUM_W + rng.uniform(0.0, 0.4) * c])
    r_oed, core_frac, rim = float(rng.uniform(22, 36)), float(rng.uniform(0.35, 0.6)), float(rng.uniform(2.5, 6.0))
    oed_axes, core_axes = r_oed * rng.uniform(0.8, 1.2, 3), rng.uniform(0.8, 1.2, 3)
    oed_rot, core_rot = rotation(*rng.uniform(-90, 90, 3)), rotation(*rng.uniform(-90, 90, 3))
    core_shift = rng.uniform(-0.15, 0.15, 3) * r_oed
    oed_bumps, core_bumps = draw_bumps(rng, 0.28), draw_bumps(rng, 0.15)
    contrast = np.asarray(list(_TISSUES.values())) * rng.uniform(0.93, 1.07, (len(_TISSUES), 4))
    bias_c = rng.normal(0.0, 0.06, (4, 9))
    noise_frac, psf = rng.uniform(0.015, 0.03, 4), float(rng.uniform(0.5, 0.9))
    child_seeds = rng.integers(0, 2**63 - 1, 4)

    # keep the tumour core inside the brain: move its centre towards the hemisphere centre if too shallow
    hemi = np.array([side * 30.0, 0.0, _CRANIUM_W + 0.15 * c])
    for t in np.linspace(0.0, 1.0, 6):
        centre = t_centre + t * (hemi - t_centre)
        depth = -float(_brain(point_frame(centre), head, csf)[0][0, 0, 0])
        if depth >= 15.0:
            break
    r_core = float(np.clip(core_frac * r_oed, 6.0, max(6.0, depth - 3.0)))
    core_c = centre + core_shift * min(1.0, max(0.0, (depth - r_core) / 10.0))

    pt = _Patient(head, csf, gm, (g_normals, g_waves, g_phases), (vent_scale, vent_angle, vent_bumps),
                  (centre, oed_axes, oed_rot, oed_bumps), (core_c, r_core * core_axes, core_rot, core_bumps),
                  contrast[:, chans], bias_c[chans], float(fov_mm))
    n = int(shape)
    image = np.empty((len(chans), n, n, n), dtype=np.float32)
    oed, core = np.empty((n, n, n), dtype=np.float32), np.empty((n, n, n), dtype=np.float32)
    for z0, z1 in slabs(n):
        frame = make_frame(n, float(fov_mm), pose, z0, z1)
        image[:, z0:z1], oed[z0:z1], core[z0:z1] = _render(frame, pt, rim)
    image = gaussian_psf(image, psf, frame.h)
    for k, ch in enumerate(chans):
        sigma = np.float32(noise_frac[ch] * 1000.0)
        noise = np.random.default_rng(int(child_seeds[ch])).standard_normal((2, n, n, n), dtype=np.float32)
        image[k] = np.sqrt((image[k] + sigma * noise[0]) ** 2 + (sigma * noise[1]) ** 2)
    ncr = core + rim

    labels = np.zeros((shape,) * 3, dtype=np.uint8)
    labels[oed < 0] = 2
    labels[core < 0] = 3
    labels[ncr < 0] = 1
    ensure_label(labels, ncr, 1)
    ensure_label(labels, core, 3, keep=(1,))
    ensure_label(labels, oed, 2, keep=(1, 3))
    marks = {name: pose.to_physical(p) for name, p in head.points().items()}
    marks["tumour_centre"] = pose.to_physical(core_c)
    meta = {"phantom": {"modality": "MR", "region": "brain", "seed": int(seed), "index": int(index),
                        "tumour_side": "left" if side > 0 else "right",
                        "landmarks_mm": {k: list(v) for k, v in marks.items()}}}
    return Case(case_id=f"phantom{index:03d}", image=image, labels=labels, geometry=frame.geometry,
                modality=Modality.MR, channel_names=tuple(MRI_CHANNELS[ch] for ch in chans), schema=BRATS_SCHEMA,
                meta=meta)
