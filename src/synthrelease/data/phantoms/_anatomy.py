"""Shared geometry of the built-in phantoms: grids in mm, patient pose, signed-distance shapes, a head with a face.

Anatomy is built in physical millimetres in a *patient frame* ``(u, v, w)`` (u = patient left, v = posterior,
w = superior, like LPS image axes), so a 16^3 and a 256^3 phantom of one patient show the same body. Shapes are
approximate signed distances in mm (negative inside). A tissue is painted with the fraction of each voxel its
shape covers (partial volume), so layers thinner than a voxel still shade the image at coarse grids.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np

from synthrelease.data.case import Geometry
from synthrelease.errors import InputError

Coords = tuple[np.ndarray, np.ndarray, np.ndarray]
Point = Sequence[float] | np.ndarray  # (u, v, w) in mm, or three semi-axes
FAR = 1.0e4  # signed distance used for "far outside" where a small shape was not evaluated
MIN_SHAPE = 16


def check_request(index: int, shape: int, seed: int, fov_mm: float) -> None:
    """Raise ``InputError`` unless the phantom request is usable."""
    for name, value in (("index", index), ("seed", seed)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
            raise InputError(f"phantom {name} {value!r} is not a non-negative integer", fix=f"pass {name}=0, 1, ...")
    if isinstance(shape, bool) or not isinstance(shape, int | np.integer) or shape < MIN_SHAPE:
        raise InputError(f"phantom shape {shape!r} is too small or not an integer",
                         fix=f"use shape >= {MIN_SHAPE} voxels per side (64 is a good default)")
    if not np.isfinite(fov_mm) or fov_mm <= 0:
        raise InputError(f"field of view {fov_mm!r} mm is not a positive number", fix="use e.g. fov_mm=240")


def rotation(rx: float = 0.0, ry: float = 0.0, rz: float = 0.0) -> np.ndarray:
    """Rotation matrix ``Rz @ Ry @ Rx`` (angles in degrees about the u, v, w axes)."""
    a, b, c = np.radians([rx, ry, rz])
    mx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    my = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    mz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return mz @ my @ mx


@dataclass(frozen=True)
class Pose:
    """Patient placement in the scanner: physical = ``rotation @ patient + shift_mm``."""

    rotation: np.ndarray
    shift_mm: np.ndarray

    def to_physical(self, point: Point) -> tuple[float, float, float]:
        x, y, z = self.rotation @ np.asarray(point, dtype=float) + self.shift_mm
        return (float(x), float(y), float(z))


def draw_pose(rng: np.random.Generator, fov_mm: float) -> Pose:
    """Random pose: rotation about z up to +-10 deg, about x up to +-6 deg, shift up to +-4 % of the FOV."""
    rz, rx = float(rng.uniform(-10, 10)), float(rng.uniform(-6, 6))
    return Pose(rotation(rx=rx, rz=rz), rng.uniform(-0.04, 0.04, 3) * fov_mm)


@dataclass(frozen=True)
class Frame:
    """Patient-frame coordinates ``(u, v, w)`` of the voxel centres of slices ``z0 ...`` of a ``shape``^3 grid."""

    shape: int
    geometry: Geometry
    pose: Pose
    coords: Coords
    z0: int = 0

    @property
    def h(self) -> float:
        """Voxel size in mm (isotropic)."""
        return self.geometry.spacing[0]

    def local(self, centre: Point, radius_mm: float, fn: Callable[[Coords], np.ndarray]) -> np.ndarray:
        """``fn`` evaluated only in the box of ``radius_mm`` around patient-frame ``centre``; ``FAR`` elsewhere."""
        out = np.full(self.coords[0].shape, FAR, dtype=np.float32)
        phys = np.asarray(self.pose.to_physical(centre))[::-1]  # (z, y, x)
        idx = (phys - np.asarray(self.geometry.origin)[::-1]) / self.h - np.array([self.z0, 0, 0])
        r = radius_mm / self.h
        lo = np.clip(np.floor(idx - r).astype(int), 0, out.shape)
        hi = np.clip(np.ceil(idx + r).astype(int) + 1, 0, out.shape)
        if np.any(hi <= lo):
            return out
        box = (slice(lo[0], hi[0]), slice(lo[1], hi[1]), slice(lo[2], hi[2]))
        out[box] = fn((self.coords[0][box], self.coords[1][box], self.coords[2][box]))
        return out

    def ellipsoid(self, centre: Point, axes: Point, *, rot: np.ndarray | None = None, bumps: Bumps | None = None,
                  pad: float = 6.0) -> np.ndarray:
        """``ellipsoid`` evaluated in its bounding box plus ``pad`` mm (``FAR`` elsewhere): fast for small shapes."""
        grow = 1.0 + (float(np.abs(bumps.amps).sum()) if bumps is not None else 0.0)
        radius = float(np.max(axes)) * grow + pad + 2 * self.h
        return self.local(centre, radius, partial(ellipsoid, centre=centre, axes=axes, rot=rot, bumps=bumps))


def slabs(shape: int, voxels: int = 1 << 18) -> list[tuple[int, int]]:
    """Slice ranges of about ``voxels`` voxels: phantoms are built slab by slab to stay in cache and memory."""
    step = max(1, voxels // (shape * shape))
    return [(z, min(shape, z + step)) for z in range(0, shape, step)]


def make_frame(shape: int, fov_mm: float, pose: Pose, z0: int = 0, z1: int | None = None) -> Frame:
    """Slices ``z0:z1`` of a ``shape``^3 grid of ``fov_mm / shape`` mm voxels centred on (0, 0, 0), in the
    patient frame of ``pose``."""
    h = fov_mm / shape
    o = -(shape - 1) / 2.0 * h
    geometry = Geometry(spacing=(h, h, h), origin=(o, o, o))
    ax = (o + h * np.arange(shape)).astype(np.float32)
    d = [ax[None, None, :] - np.float32(pose.shift_mm[0]), ax[None, :, None] - np.float32(pose.shift_mm[1]),
         ax[z0:z1, None, None] - np.float32(pose.shift_mm[2])]
    r = pose.rotation  # patient = R^T (physical - shift)
    uvw = tuple(float(r[0, k]) * d[0] + float(r[1, k]) * d[1] + float(r[2, k]) * d[2] for k in range(3))
    return Frame(shape, geometry, pose, (uvw[0], uvw[1], uvw[2]), z0)


def point_frame(point: Point) -> Frame:
    """A one-voxel frame at a patient-frame ``point``: evaluates any shape builder there, independent of the grid."""
    u, v, w = (np.full((1, 1, 1), float(c), dtype=np.float32) for c in point)
    pose = Pose(np.eye(3), np.zeros(3))
    origin = (float(point[0]), float(point[1]), float(point[2]))
    return Frame(1, Geometry(spacing=(1.0, 1.0, 1.0), origin=origin), pose, (u, v, w))


# -- signed-distance shapes ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Bumps:
    """Smooth random modulation of a shape's radius by direction: ``1 + sum a_k cos(f_k (n_k . d) + phi_k)``."""

    normals: np.ndarray
    freqs: np.ndarray
    phases: np.ndarray
    amps: np.ndarray

    def factor(self, x: np.ndarray, y: np.ndarray, z: np.ndarray, q: np.ndarray) -> np.ndarray:
        inv = 1.0 / np.maximum(q, 1e-6)
        s = np.zeros_like(x)
        for n, f, p, a in zip(self.normals, self.freqs, self.phases, self.amps, strict=True):
            dot = (float(n[0]) * x + float(n[1]) * y + float(n[2]) * z) * inv
            s += float(a) * np.cos(float(f) * dot + float(p))
        return np.maximum(1.0 + s, 0.4)


def draw_bumps(rng: np.random.Generator, amplitude: float, k: int = 6) -> Bumps:
    """Random ``Bumps`` whose radius changes by roughly +-``amplitude`` (a fraction)."""
    normals = rng.normal(size=(k, 3))
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    amps = amplitude * rng.uniform(0.5, 1.0, k) / np.sqrt(k / 2)
    return Bumps(normals, rng.uniform(1.5, 4.0, k), rng.uniform(0, 2 * np.pi, k), amps)


def _to_local(coords: Coords, centre: Point, rot: np.ndarray | None) -> Coords:
    du, dv, dw = (c - float(c0) for c0, c in zip(centre, coords, strict=True))
    if rot is None:
        return du, dv, dw
    r = rot  # local = R^T (p - c)
    lu, lv, lw = (float(r[0, k]) * du + float(r[1, k]) * dv + float(r[2, k]) * dw for k in range(3))
    return lu, lv, lw


def _finish(k0: np.ndarray, k1: np.ndarray, smallest: float) -> np.ndarray:
    """Signed distance ``k0 (k0 - 1) / k1`` from the normalised radius ``k0`` and gradient ``k1`` (safe at 0)."""
    return np.asarray((k0 - 1.0) * (k0 + 1e-6) / (k1 + 1e-6 / smallest))


def ellipsoid(coords: Coords, centre: Point, axes: Point, *, rot: np.ndarray | None = None,
              bumps: Bumps | None = None) -> np.ndarray:
    """Approximate signed distance (mm) to an ellipsoid, optionally rotated (``rot``: local -> patient) and bumpy."""
    lu, lv, lw = _to_local(coords, centre, rot)
    a, b, c = (float(x) for x in axes)
    x, y, z = lu * (1 / a), lv * (1 / b), lw * (1 / c)
    k0 = np.sqrt(x * x + y * y + z * z)
    xa, yb, zc = x * (1 / a), y * (1 / b), z * (1 / c)
    k1 = np.sqrt(xa * xa + yb * yb + zc * zc)
    if bumps is not None:
        f = bumps.factor(x, y, z, k0)
        k0, k1 = k0 / f, k1 / (f * f)
    return _finish(k0, k1, min(a, b, c))


def ellipse(du: np.ndarray, dv: np.ndarray, a: float | np.ndarray, b: float | np.ndarray) -> np.ndarray:
    """Approximate signed distance (mm) to an elliptic cylinder along w; ``du, dv`` are offsets from its axis."""
    ia, ib = 1 / a, 1 / b
    x, y = du * ia, dv * ib
    k0 = np.sqrt(x * x + y * y)
    xa, yb = x * ia, y * ib
    return _finish(k0, np.sqrt(xa * xa + yb * yb), float(np.min(np.minimum(a, b))))


def smooth_union(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    """Union of two shapes with a fillet of about ``k`` mm where they meet."""
    t = np.clip(0.5 + 0.5 * (b - a) / k, 0.0, 1.0)
    return np.asarray(b + (a - b) * t - k * t * (1.0 - t))


def paint(image: np.ndarray, sd: np.ndarray, values: np.ndarray, h: float) -> None:
    """Blend ``values`` (one per channel) into ``image`` (C, Z, Y, X) by the voxel fraction inside ``sd``."""
    cov = np.clip(0.5 - sd / h, 0.0, 1.0).astype(np.float32)
    for c, value in enumerate(values):
        image[c] += cov * (np.float32(value) - image[c])


def ensure_label(labels: np.ndarray, sd: np.ndarray, value: int, keep: Sequence[int] = ()) -> None:
    """If no voxel carries ``value`` (a shape smaller than a voxel), give it to the voxel deepest inside ``sd``."""
    if np.any(labels == value):
        return
    score = np.where(np.isin(labels, list(keep)), np.inf, sd)
    labels.flat[int(np.argmin(score))] = value


# -- a head with a face, shared by CT and MRI ----------------------------------------------------------------------
@dataclass(frozen=True)
class Head:
    """One patient's head and neck: sizes in mm; the cranium centre sits at ``(0, 0, centre_w)`` (patient frame)."""

    centre_w: float
    cranium: tuple[float, float, float]  # semi-axes (lateral, AP, SI)
    face: tuple[float, float, float]  # lower face / jaw ellipsoid semi-axes
    neck: tuple[float, float]  # neck ellipse semi-axes (lateral, AP)
    neck_length: float  # chin to shoulders
    nose: tuple[float, float, float]  # protrusion, half-width, half-length
    nose_tilt: float  # degrees, tip forward
    chin: tuple[float, float]  # protrusion, half-height
    lips: float  # lip protrusion
    skin: float
    fat: float
    skull: float
    scale: float

    def base_w(self, v: np.ndarray | float) -> np.ndarray | float:
        """Height of the skull base (tilted: anterior fossa higher) at AP position ``v``."""
        return self.centre_w - 0.35 * self.cranium[2] - 0.15 * v

    def points(self) -> dict[str, np.ndarray]:
        """Patient-frame landmarks (mm): head centre, nose tip, chin, eyes, nasal and maxillary air centres."""
        a, b, c = self.cranium
        _fa, fb, fc = self.face
        wh = self.centre_w
        prot, nw, nl = self.nose
        nose_front = -b * np.sqrt(1 - 0.42**2) - prot
        nose_b = 0.5 * prot + 6.0
        nose_c = np.array([0.0, nose_front + nose_b, wh - 0.42 * c])
        m = rotation(rx=-self.nose_tilt) @ np.diag([nw, nose_b, nl])
        e = np.array([0.0, -1.0, 0.0])
        tip = nose_c + m @ m.T @ e / np.sqrt(e @ m @ m.T @ e)
        w_chin = wh - 0.8 * c - 0.7 * fc
        chin_v = -0.25 * b - fb * np.sqrt(1 - 0.7**2) - self.chin[0]
        eye_v = -b * np.sqrt(1 - 0.42**2 - 0.2**2) + 15.0
        return {
            "head_centre": np.array([0.0, 0.0, wh]), "nose_centre": nose_c, "nose_tip": tip,
            "chin": np.array([0.0, chin_v, w_chin]), "mouth": np.array([0.0, -0.25 * b - fb, wh - 0.8 * c]),
            "eye_left": np.array([0.42 * a, eye_v, wh - 0.2 * c]),
            "eye_right": np.array([-0.42 * a, eye_v, wh - 0.2 * c]),
            "nasal_cavity": np.array([0.0, -0.45 * b, wh - 0.42 * c]),
            "sinus_left": np.array([0.3 * a, -0.55 * b, wh - 0.45 * c]),
            "sinus_right": np.array([-0.3 * a, -0.55 * b, wh - 0.45 * c]),
            "chin_bottom": np.array([0.0, -0.25 * b, wh - 0.8 * c - fc]),
        }

    def surface(self, frame: Frame) -> np.ndarray:
        """Skin surface: cranium + lower face + neck + shoulders, with nose, lips and chin on the anterior side."""
        u, v, w = frame.coords
        _a, b, c = self.cranium
        _fa, _fb, fc = self.face
        wh, p = self.centre_w, self.points()
        body = smooth_union(ellipsoid(frame.coords, (0, 0, wh), self.cranium),
                            ellipsoid(frame.coords, (0, -0.25 * b, wh - 0.8 * c), self.face), 14.0)
        neck = np.maximum(ellipse(u, v - 0.15 * b, *self.neck), w - (wh - 0.3 * c))
        body = smooth_union(body, neck, 18.0)
        w_sh = wh - 0.8 * c - fc - self.neck_length
        s = self.scale
        body = smooth_union(body, ellipsoid(frame.coords, (0, 0.2 * b, w_sh - 70), (175 * s, 100 * s, 75)), 25.0)
        prot, nw, nl = self.nose
        nose_axes, nose_rot = (nw, 0.5 * prot + 6.0, nl), rotation(rx=-self.nose_tilt)
        body = smooth_union(body, frame.ellipsoid(p["nose_centre"], nose_axes, rot=nose_rot), 5.0)
        m = p["mouth"]
        for dw in (5.0, -5.0):
            centre = (0.0, m[1] + 6.0 - self.lips, m[2] + dw)
            body = np.minimum(body, frame.ellipsoid(centre, (20 * s, 6.0, 5.0)))
        ch = p["chin"]
        centre = (0.0, ch[1] + 10.0, ch[2])
        chin = frame.ellipsoid(centre, (18 * s, 10.0, self.chin[1]), pad=8.0)
        return smooth_union(body, chin, 6.0)

    def interior(self, frame: Frame, body: np.ndarray) -> dict[str, np.ndarray]:
        """Signed distances of the skull (vault + base plate), cranial cavity, orbits, eyes, nasal/sinus air, nose."""
        u, v, w = frame.coords
        _a, b, _c = self.cranium
        p, s = self.points(), self.scale
        outer = ellipsoid(frame.coords, (0, 0, self.centre_w), self.cranium) + (self.skin + self.fat)
        inner = outer + self.skull
        base = self.base_w(v)
        vault = np.maximum(np.maximum(outer, -inner), (base - self.skull) - w)
        plate = np.maximum(np.abs(w - base) - 0.5 * self.skull, outer)
        plate = np.maximum(plate, -ellipse(u, v - 0.3 * b, 14.0 * s, 14.0 * s))  # foramen magnum
        orbits = np.full_like(u, FAR)
        eyes = np.full_like(u, FAR)
        r_eye = 12.0 * s
        for side in ("eye_left", "eye_right"):
            ce, co = p[side], p[side] + np.array([0.0, 6.0, 0.0])
            orbits = np.minimum(orbits, frame.ellipsoid(co, (16 * s, 20 * s, 15 * s)))
            eyes = np.minimum(eyes, frame.ellipsoid(ce, (r_eye,) * 3))
        orbits = np.maximum(orbits, body + self.skin)
        eyes = np.maximum(eyes, body + self.skin)
        skull = np.maximum(np.minimum(vault, plate), -orbits)
        cavity = np.maximum(np.maximum(inner, base + 0.5 * self.skull - w), -orbits)
        air_parts = [("nasal_cavity", (9 * s, 0.38 * b, 13 * s)), ("sinus_left", (13 * s, 17 * s, 15 * s)),
                     ("sinus_right", (13 * s, 17 * s, 15 * s))]
        air = np.full_like(u, FAR)
        for name, axes in air_parts:
            air = np.minimum(air, frame.ellipsoid(p[name], axes))
        prot, nw, nl = self.nose
        nose_axes, nc = (nw, 0.5 * prot + 6.0, nl), p["nose_centre"]
        nose = frame.ellipsoid(nc, nose_axes, rot=rotation(rx=-self.nose_tilt))
        return {"skull": skull, "cavity": cavity, "orbits": orbits, "eyes": eyes, "air": air,
                "nose": np.maximum(nose, body) + self.skin}


def draw_head(rng: np.random.Generator, centre_w: float) -> Head:
    """A random head: overall size +-12 %, independent axis jitter, neck length, nose, chin, lips, layer widths."""
    s = float(rng.uniform(0.88, 1.12))

    def jitter(base: Sequence[float], spread: float) -> tuple[float, ...]:
        return tuple(float(x) for x in s * np.asarray(base) * rng.uniform(1 - spread, 1 + spread, len(base)))

    cranium, face, neck = jitter((74, 94, 96), 0.04), jitter((54, 68, 56), 0.07), jitter((52, 56), 0.1)
    return Head(
        centre_w=centre_w, cranium=(cranium[0], cranium[1], cranium[2]), face=(face[0], face[1], face[2]),
        neck=(neck[0], neck[1]), neck_length=float(rng.uniform(35, 80)),
        nose=(float(rng.uniform(16, 28)), float(rng.uniform(9, 15)), float(rng.uniform(20, 28))),
        nose_tilt=float(rng.uniform(15, 30)), chin=(float(rng.uniform(4, 14)), float(rng.uniform(10, 16))),
        lips=float(rng.uniform(3, 8)), skin=float(rng.uniform(2.0, 3.0)), fat=float(rng.uniform(3, 9)),
        skull=float(rng.uniform(5, 8)), scale=s,
    )


def gaussian_psf(image: np.ndarray, sigma_mm: float, h: float) -> np.ndarray:
    """Blur each channel of ``image`` (C, Z, Y, X) with a Gaussian point-spread function of ``sigma_mm``."""
    sigma = sigma_mm / h
    if sigma < 0.15:
        return image
    from scipy import ndimage  # imported here: phantoms at coarse grids never need it

    return np.stack([ndimage.gaussian_filter(ch, sigma, mode="nearest", truncate=3.0) for ch in image])
