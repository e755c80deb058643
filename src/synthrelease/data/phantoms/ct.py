"""Head-and-neck CT phantoms: Hounsfield units, labels ``{0 background, 1 tumour, 2 bone}``.

Each patient (drawn from ``SeedSequence([seed, index, 0xC7])``) has its own head size, neck length, face, bone sizes,
pose and tumour. Anatomy and values:

- air -1000 HU outside the body and in the airway (nasal cavity, maxillary sinuses, pharynx, larynx, trachea);
- body = cranium joined with a lower face, a neck and the top of the shoulders; a face on the anterior (-y) side
  (nose, lips, chin); skin ~2-3 mm at ~+30 HU, subcutaneous fat ~-100 HU, muscle / soft tissue ~+45 HU,
  parapharyngeal fat ~-90 HU, contrast-filled carotids and jugular veins ~+150..250 HU, brain ~+35 HU, eyes ~+15 HU;
- bone (label 2): skull vault and skull-base plate, U-shaped mandible with rami, cervical vertebrae (bodies, arches,
  spinous processes) posterior to the airway; cortical 1150-1500 HU, cancellous 350-650 HU; discs ~+80 HU;
- tumour (label 1): a lobulated ellipsoid 30-52 mm (semi-axes 15-26 mm before lobulation; 9-150 mL, median
  30 mL: an advanced T3/T4 primary or a bulky node) in the oropharynx, base of tongue, larynx or a level II/III neck
  node, displacing the airway; solid and avidly enhancing: core 120-150 HU, rim 5-20 HU brighter; it overrides bone
  in the label map.
  The tumour is conspicuous on purpose. The phantoms must let a segmentation model learn the tumour from 24
  patients at the 7.5 mm voxels of the 32^3 grid that CPU tests and the demo use. A smaller tumour (15-40 mm)
  with a 30-50 HU core under a thin 90-130 HU rim averages to muscle there, 2-5 voxels across; on it the real
  arm's tumour Dice was 0.14-0.17 (benchmarks/RESULTS.md);
- a Gaussian PSF (0.6-1.0 mm) then Gaussian noise (10-25 HU); values clipped to [-1024, 3071].
"""

from __future__ import annotations

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
    ellipse,
    ensure_label,
    gaussian_psf,
    make_frame,
    paint,
    point_frame,
    rotation,
    slabs,
)
from synthrelease.data.schema import CT_HEAD_NECK_SCHEMA, Modality

__all__ = ["TUMOUR_SITES", "make_ct_phantom"]

_STREAM = 0xC7
_CRANIUM_W = 60.0  # cranium centre above the volume centre (mm): the neck fills the lower half of the FOV
TUMOUR_SITES = ("oropharynx", "base_of_tongue", "larynx", "node_level_II", "node_level_III")


@dataclass(frozen=True)
class _Neck:
    """Sizes (mm) of the neck structures of one patient."""

    head: Head
    spine_v: float  # AP position of the vertebral bodies' centre at mid-neck
    body: tuple[float, float, float]  # vertebral body half-width, half-depth, height
    period: float  # vertebral level height (body + disc)
    phase: float
    canal: float  # spinal canal AP radius
    pharynx: tuple[float, float]  # airway radii (lateral, AP) in the pharynx
    trachea: tuple[float, float]
    mandible: tuple[float, float, float, float]  # arch semi-axes (lateral, AP), thickness, half-height

    def vertebra_v(self, w: np.ndarray | float) -> np.ndarray | float:
        """AP centre of the vertebral column at height ``w`` (gentle lordotic curve)."""
        mid = self.head.centre_w - 0.8 * self.head.cranium[2] - 40.0
        return self.spine_v + 0.002 * (w - mid) ** 2

    def airway(self, w: np.ndarray | float) -> tuple[np.ndarray | float, ...]:
        """Airway centre ``v`` and radii ``(ru, rv)`` at height ``w``: pharynx above the larynx, trachea below."""
        h = self.head
        w_lar = h.centre_w - 0.8 * h.cranium[2] - h.face[2] + 5.0
        t = np.clip((w_lar - w) / 20.0, 0.0, 1.0)
        ru = self.pharynx[0] * (1 - t) + self.trachea[0] * t
        rv = self.pharynx[1] * (1 - t) + self.trachea[1] * t
        return self.vertebra_v(w) - self.body[1] - 4.0 - rv - 12.0 * t, ru, rv

    def top(self) -> float:
        """Height of the top of the cervical spine (just below the skull base)."""
        return float(self.head.base_w(self.spine_v)) - 12.0


def _draw_neck(rng: np.random.Generator, head: Head) -> _Neck:
    s = head.scale
    j = [float(x) for x in rng.uniform(0.9, 1.1, 9)]
    fa, fb, _ = head.face
    return _Neck(
        head=head, spine_v=0.15 * head.cranium[1], body=(9.0 * s * j[0], 8.0 * s * j[1], 12.0 * s * j[2]),
        period=16.5 * s * j[3], phase=float(rng.uniform(0, 16)), canal=7.0 * s * j[4],
        pharynx=(13.0 * s * j[5], 7.0 * s * j[6]), trachea=(9.0 * s * j[7], 8.0 * s * j[7]),
        mandible=(0.7 * fa * j[8], 0.8 * fb, float(rng.uniform(8, 12)), float(rng.uniform(11, 15)) * s),
    )


def _bones(frame: Frame, nk: _Neck) -> dict[str, np.ndarray]:
    """Signed distances of mandible, vertebrae (bone), discs, spinal canal and cord."""
    u, v, w = frame.coords
    head = nk.head
    ma, mb, thick, hm = nk.mandible
    wm = head.centre_w - 0.8 * head.cranium[2] - 0.45 * head.face[2]
    front = -0.25 * head.cranium[1] - head.face[1] * (1 - 0.45**2) ** 0.5 + 10.0
    vm0 = front + mb
    arch = np.maximum(np.abs(ellipse(u, v - vm0, ma, mb)) - 0.5 * thick, np.abs(w - wm) - hm)
    mandible = np.maximum(arch, v - vm0)
    for side in (1.0, -1.0):
        c = (side * 0.95 * ma, vm0 + 4.0, wm + 28.0)
        mandible = np.minimum(mandible, frame.ellipsoid(c, (4.5, 12.0, 30.0), rot=rotation(rx=-12.0)))
    vs = nk.vertebra_v(w)
    bl, ba, hb = nk.body
    wl = np.abs(np.mod(w - nk.phase, nk.period) - 0.5 * nk.period)
    cap = w - nk.top()
    column = ellipse(u, v - vs, bl, ba)
    rc = nk.canal
    vc = vs + ba + 2.0 + rc
    canal = ellipse(u, v - vc, 1.15 * rc, rc)
    arch_v = np.maximum(np.maximum(ellipse(u, v - vc, 1.15 * rc + 5.0, rc + 5.0), -canal), wl - 0.5 * hb + 1.0)
    spinous = np.maximum(ellipse(u, v - (vc + rc + 9.0), 3.5, 7.0), wl - 0.5 * hb + 2.0)
    vertebrae = np.maximum(np.minimum(np.minimum(np.maximum(column, wl - 0.5 * hb), arch_v), spinous), cap)
    base_cap = w - head.base_w(v)
    return {
        "bone": np.minimum(mandible, vertebrae), "discs": np.maximum(column, cap),
        "canal": np.maximum(canal, base_cap), "cord": np.maximum(ellipse(u, v - vc, 0.6 * rc, 0.55 * rc), base_cap),
    }


def _soft(frame: Frame, nk: _Neck) -> dict[str, np.ndarray]:
    """Signed distances of the airway, vessels and parapharyngeal fat."""
    u, v, w = frame.coords
    head = nk.head
    va, ru, rv = nk.airway(w)
    top = head.centre_w - 0.38 * head.cranium[2]
    airway = np.maximum(ellipse(u, v - va, ru, rv), w - top)
    vs, ph, s = nk.vertebra_v(w), nk.pharynx[0], head.scale
    base_cap = w - head.base_w(v)
    vessels = np.full_like(u, 1e4)
    for side in (1.0, -1.0):
        carotid = ellipse(u - side * (ph + 12.0), v - (vs - 3.0), 3.5 * s, 3.5 * s)
        jugular = ellipse(u - side * (ph + 20.0), v - (vs + 3.0), 5.5 * s, 4.5 * s)
        vessels = np.minimum(vessels, np.minimum(carotid, jugular))
    wf = head.centre_w - 0.65 * head.cranium[2]
    fat = np.full_like(u, 1e4)
    for side in (1.0, -1.0):
        c = (side * (ph + 7.0), float(nk.airway(wf)[0]), wf)
        fat = np.minimum(fat, frame.ellipsoid(c, (5.0 * s, 9.0 * s, 16.0 * s)))
    return {"airway": airway, "vessels": np.maximum(vessels, base_cap), "fat": fat}


def _tumour_centre(rng: np.random.Generator, nk: _Neck) -> tuple[str, np.ndarray]:
    """A random plausible tumour site and its centre (patient frame, mm)."""
    head = nk.head
    site_i, side = int(rng.integers(len(TUMOUR_SITES))), float(rng.choice([-1.0, 1.0]))
    jit = rng.uniform(-1, 1, 3)
    w0 = head.centre_w - 0.8 * head.cranium[2]
    ws = {"oropharynx": w0 + 8 * jit[2], "base_of_tongue": w0 - 0.3 * head.face[2] + 5 * jit[2],
          "larynx": w0 - head.face[2] - 12 + 8 * jit[2], "node_level_II": w0 - 0.6 * head.face[2] + 6 * jit[2],
          "node_level_III": w0 - head.face[2] - 20 + 8 * jit[2]}
    site = TUMOUR_SITES[site_i]
    w = float(ws[site])
    va, ru, rv = (float(x) for x in nk.airway(w))
    vs = float(nk.vertebra_v(w))
    u_jug = nk.pharynx[0] + 22.0
    centres = {"oropharynx": (side * (0.8 * ru + 4), va), "base_of_tongue": (5 * jit[0], va - rv - 12),
               "larynx": (side * (0.6 * ru + 3), va - 2), "node_level_II": (side * u_jug, vs),
               "node_level_III": (side * u_jug, vs)}
    cu, cv = centres[site]
    return site, np.array([float(cu) + 3 * jit[0], float(cv) + 3 * jit[1], w])


@dataclass(frozen=True)
class _Patient:
    """Everything drawn for one CT patient."""

    nk: _Neck
    tumour: tuple[np.ndarray, np.ndarray, np.ndarray, Bumps]  # centre, semi-axes, rotation, bumps
    rim: float
    cortex: float
    hu: dict[str, float]


def _render(frame: Frame, pt: _Patient) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """HU image (1, z, Y, X) of one slab before PSF and noise, with the tumour and bone signed distances."""
    head, h, hu = pt.nk.head, frame.h, pt.hu
    body = head.surface(frame)
    inner = head.interior(frame, body)
    bones, soft = _bones(frame, pt.nk), _soft(frame, pt.nk)
    centre, axes, rot, bumps = pt.tumour
    t_sd = frame.ellipsoid(centre, axes, rot=rot, bumps=bumps)
    t_sd = np.maximum(t_sd, body + head.skin)
    bone = np.minimum(inner["skull"], bones["bone"])
    air = np.maximum(np.minimum(soft["airway"], inner["air"]), 3.0 - t_sd)
    image = np.full((1, *body.shape), -1000.0, dtype=np.float32)
    layers = [
        (body, hu["skin"]), (body + head.skin, hu["fat"]), (body + head.skin + head.fat, hu["muscle"]),
        (inner["nose"], hu["muscle"]), (soft["fat"], -90.0), (soft["vessels"], hu["vessel"]),
        (bones["discs"], hu["disc"]), (bone, hu["cortical"]), (bone + pt.cortex, hu["cancellous"]),
        (bones["canal"], 10.0), (bones["cord"], 35.0),
        (inner["cavity"], hu["brain"]), (inner["orbits"], -80.0), (inner["eyes"], 15.0), (air, -1000.0),
        (t_sd, hu["rim"]), (t_sd + pt.rim, hu["core"]),
    ]
    for sd, value in layers:
        paint(image, sd, np.array([value]), h)
    return image, t_sd, bone


def make_ct_phantom(index: int, *, shape: int = 64, seed: int = 0, fov_mm: float = 240.0) -> Case:
    """Head-and-neck CT phantom ``phantom{index:03d}``: ``shape``^3 voxels over ``fov_mm``, HU, tumour + bone labels.

    The same ``(seed, index)`` gives the same patient at every ``shape`` and bit-identical arrays for the same
    ``shape``; it does not depend on how many other cases are made.
    """
    check_request(index, shape, seed, fov_mm)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(index), _STREAM]))
    pose = draw_pose(rng, fov_mm)
    head = draw_head(rng, _CRANIUM_W)
    nk = _draw_neck(rng, head)
    site, centre = _tumour_centre(rng, nk)
    size, ratios, t_rot = float(rng.uniform(15, 26)), rng.uniform(0.8, 1.2, 3), rng.uniform(-90, 90, 3)
    bumps, rim = draw_bumps(rng, 0.22), float(rng.uniform(2.0, 4.0))
    ranges = {"skin": (20, 45), "fat": (-115, -85), "muscle": (38, 52), "brain": (30, 40), "vessel": (150, 250),
              "disc": (70, 95), "cortical": (1150, 1500), "cancellous": (350, 650), "core": (120, 150)}
    hu = {k: float(rng.uniform(*r)) for k, r in ranges.items()}
    hu["rim"] = hu["core"] + float(rng.uniform(5, 20))
    cortex, psf, noise = float(rng.uniform(1.5, 2.5)), float(rng.uniform(0.6, 1.0)), float(rng.uniform(10, 25))

    for shift in np.linspace(0.0, 0.6, 7):  # a shallow (nodal) site moves medially until the tumour fits
        here = centre * np.array([1.0 - shift, 1.0, 1.0])
        depth = -float(head.surface(point_frame(here))[0, 0, 0])
        if depth >= min(size, 12.0) + 6.0:
            break
    axes = max(7.5, min(size, depth - 5.0)) * ratios / min(1.0, float(ratios.min()))
    pt = _Patient(nk, (here, axes, rotation(*(float(a) for a in t_rot)), bumps), rim, cortex, hu)

    n = int(shape)
    image = np.empty((1, n, n, n), dtype=np.float32)
    t_sd, bone = np.empty((n, n, n), dtype=np.float32), np.empty((n, n, n), dtype=np.float32)
    for z0, z1 in slabs(n):
        frame = make_frame(n, float(fov_mm), pose, z0, z1)
        image[:, z0:z1], t_sd[z0:z1], bone[z0:z1] = _render(frame, pt)
    image = gaussian_psf(image, psf, frame.h)
    image += np.float32(noise) * rng.standard_normal(image.shape, dtype=np.float32)
    np.clip(image, -1024.0, 3071.0, out=image)

    labels = np.zeros((n, n, n), dtype=np.uint8)
    labels[bone < 0] = 2
    labels[t_sd < 0] = 1
    ensure_label(labels, t_sd, 1)
    ensure_label(labels, bone, 2, keep=(1,))
    marks = {name: pose.to_physical(p) for name, p in head.points().items()}
    marks["tumour_centre"] = pose.to_physical(here)
    meta = {"phantom": {"modality": "CT", "region": "head_neck", "seed": int(seed), "index": int(index),
                        "tumour_site": site, "landmarks_mm": {k: list(v) for k, v in marks.items()}}}
    return Case(case_id=f"phantom{index:03d}", image=image, labels=labels, geometry=frame.geometry,
                modality=Modality.CT, channel_names=("CT",), schema=CT_HEAD_NECK_SCHEMA, meta=meta)
