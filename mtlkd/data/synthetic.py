"""Procedural indoor rooms, ray-cast analytically: the embedded default dataset (numpy only).

Why: training, evaluation and export must work with no download. Labels, depth and normals come from the
same geometric model, so they agree exactly, and the appearance (class-correlated colours and textures,
Lambertian shading) carries enough of the answer for a network to learn it.

Conventions
- World frame: z up, the floor is z = 0 and the room spans [0, Lx] x [0, Ly] x [0, Lz] metres.
- Camera frame (the frame of `normal`): x right, y down, z forward (OpenCV). Pixel column u, row v looks
  along ((u + 0.5 - cx) / f, (v + 0.5 - cy) / f, 1); `render_scene` also returns `intrinsics`
  (f, f, cx, cy), `cam_to_world` (3 x 3, columns = camera axes in world) and `camera_height`.
- `depth` is the camera-frame z of the surface point (not the ray length), in metres: rays have z = 1 in
  the camera frame, so the ray parameter of a hit is its depth.
- `normal` is a unit vector in the camera frame that points back towards the camera (n . ray < 0).
"""

from __future__ import annotations

import colorsys
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CLASS_NAMES = (
    "bed", "books", "ceiling", "chair", "floor", "furniture", "objects",
    "painting", "sofa", "table", "tv", "wall", "window",
)  # fmt: skip
BED, BOOKS, CEILING, CHAIR, FLOOR, FURNITURE, OBJECTS, PAINTING, SOFA, TABLE, TV, WALL, WINDOW = range(13)
GENERATOR_VERSION = 1
SPLIT_CODES = {"train": 0, "val": 1}
FOLDERS = ("image", "label", "depth", "normal")
EPS = 1e-6


# ------------------------------------------------------------------------------------------ surfaces


@dataclass
class Surface:
    """What a primitive looks like: albedo blended towards `colour2` by a procedural pattern."""

    cls: int
    colour: np.ndarray
    colour2: np.ndarray
    pattern: str = "plain"  # plain | stripes | checker | grain | noise | grid
    period: float = 0.2
    axis: int = 0  # which surface coordinate stripes run across (0 = u, 1 = v)
    waves: np.ndarray | None = None  # k x 4: direction (2), relative frequency, phase; for noise
    emissive: float = 0.0


# Per class, one or more styles: base colour HSV ranges, patterns to pick from, period range (m), stripe
# axis (None: random), second colour (a factor range on the base colour, or HSV ranges of its own), emission.
# fmt: off
STYLES: dict[int, list[tuple]] = {
    WALL: [((0, 1), (0.05, 0.25), (0.7, 0.9), ("plain", "stripes"), (0.08, 0.3), 0, (0.85, 0.95), 0.0)],
    FLOOR: [((0.05, 0.11), (0.45, 0.7), (0.35, 0.6), ("grain",), (0.12, 0.25), None, (0.7, 0.7), 0.0),
            ((0, 1), (0, 0.12), (0.45, 0.8), ("checker",), (0.3, 0.6), 0, (0.65, 0.8), 0.0)],
    CEILING: [((0, 1), (0, 0.05), (0.85, 0.97), ("noise",), (2.0, 4.0), 0, (0.93, 0.97), 0.0)],
    BED: [((0, 1), (0.1, 0.5), (0.6, 0.95), ("checker", "stripes"), (0.15, 0.35), 0,
           ((0, 1), (0.2, 0.6), (0.5, 0.9)), 0.0)],
    BOOKS: [((0, 1), (0.5, 0.9), (0.3, 0.85), ("stripes",), (0.03, 0.06), 1, ((0, 1), (0.2, 0.2), (0.95, 0.95)), 0.0)],
    CHAIR: [((0.04, 0.12), (0.3, 0.7), (0.15, 0.4), ("grain",), (0.06, 0.12), 1, (0.65, 0.65), 0.0),
            ((0, 1), (0, 0.15), (0.08, 0.3), ("plain",), (0.1, 0.1), 0, (1.0, 1.0), 0.0)],
    TABLE: [((0.04, 0.12), (0.3, 0.7), (0.35, 0.65), ("grain",), (0.06, 0.12), 1, (0.65, 0.65), 0.0)],
    FURNITURE: [((0.04, 0.12), (0.3, 0.7), (0.3, 0.75), ("grain",), (0.06, 0.12), 1, (0.65, 0.65), 0.0),
                ((0, 1), (0.05, 0.4), (0.3, 0.9), ("grid",), (0.3, 0.6), 0, (0.6, 0.7), 0.0)],
    OBJECTS: [((0, 1), (0.6, 1.0), (0.5, 0.95), ("plain", "noise"), (0.15, 0.4), 0, (0.55, 0.7), 0.0)],
    PAINTING: [((0, 1), (0.6, 1.0), (0.4, 1.0), ("noise",), (0.15, 0.4), 0, ((0, 1), (0.6, 1.0), (0.3, 1.0)), 0.0)],
    SOFA: [((0, 1), (0.3, 0.65), (0.3, 0.6), ("checker",), (0.05, 0.09), 0, (0.75, 0.85), 0.0)],
    TV: [((0.55, 0.65), (0.2, 0.5), (0.04, 0.14), ("stripes",), (0.02, 0.02), 1, (1.4, 1.4), 0.0)],
    WINDOW: [((0.52, 0.62), (0.1, 0.45), (0.9, 1.0), ("grid",), (0.4, 0.7), 0, ((0, 0), (0, 0), (0.85, 1.0)), 0.8)],
}
# fmt: on


def _hsv(rng: np.random.Generator, hue: tuple, sat: tuple, val: tuple) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(rng.uniform(*hue) % 1.0, rng.uniform(*sat), rng.uniform(*val)))


def make_surface(rng: np.random.Generator, cls: int) -> Surface:
    """Class-correlated colours and textures (see STYLES), with per-object variation."""
    styles = STYLES[cls]
    hue, sat, val, patterns, period, axis, second, emissive = styles[rng.integers(len(styles))]
    colour = _hsv(rng, hue, sat, val)
    colour2 = _hsv(rng, *second) if len(second) == 3 else colour * rng.uniform(*second)
    angle = rng.uniform(0, np.pi, 4)
    waves = np.stack([np.cos(angle), np.sin(angle), rng.uniform(0.5, 1.5, 4), rng.uniform(0, 2 * np.pi, 4)], 1)
    pattern = patterns[rng.integers(len(patterns))]
    axis = int(rng.integers(2)) if axis is None else axis
    return Surface(cls, colour, colour2, pattern, rng.uniform(*period), axis, waves, emissive)


def pattern_value(surface: Surface, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Blend factor towards colour2 in [0, 1]; u, v are surface coordinates in metres (stick to surfaces)."""
    s, kind = surface, surface.pattern
    w = s.waves
    if kind == "plain":
        return np.zeros_like(u)
    if kind == "stripes":
        return np.clip(0.5 + 1.5 * np.sin(2 * np.pi * (v if s.axis else u) / s.period + w[0, 3]), 0, 1)
    if kind == "checker":
        return ((np.floor(u / s.period) + np.floor(v / s.period)) % 2).astype(u.dtype)
    if kind == "grid":  # frames, drawer fronts: thin lines every `period`
        fu, fv = (u / s.period) % 1.0, (v / s.period) % 1.0
        return ((fu < 0.08) | (fv < 0.08)).astype(u.dtype)
    if kind == "grain":  # planks across one coordinate, wavy lines along the other
        a, b = (v, u) if s.axis else (u, v)
        plank = np.floor(a / s.period)
        return 0.5 + 0.5 * np.sin(2 * np.pi * (a / s.period * 4 + 0.4 * np.sin(b * 3 + plank * 1.7)) + plank)
    if kind == "noise":  # a few random sinusoids: blotchy, scale set by the wave frequencies
        phase = (w[:, 0:1] * u[None] + w[:, 1:2] * v[None]) * w[:, 2:3] * (2 * np.pi / s.period) + w[:, 3:4]
        return np.clip(0.5 + 0.8 * np.sin(phase).mean(axis=0), 0, 1)
    raise ValueError(f"unknown pattern {kind!r}")


# ---------------------------------------------------------------------------------------- primitives
# Rays: origin o (3,), directions d (3, N), inv = 1 / d. Each `intersect` returns the nearest hit t >
# EPS per ray (inf when missed); each `normals` returns outward unit normals at hit points p (M, 3).


@dataclass
class Box:
    lo: np.ndarray
    hi: np.ndarray
    surface: Surface

    def intersect(self, o: np.ndarray, d: np.ndarray, inv: np.ndarray) -> np.ndarray:
        t1 = (self.lo - o)[:, None] * inv
        t2 = (self.hi - o)[:, None] * inv
        near = np.minimum(t1, t2).max(axis=0)
        far = np.maximum(t1, t2).min(axis=0)
        return np.where((near <= far) & (near > EPS), near, np.inf)

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        return self.lo, self.hi

    def normals(self, p: np.ndarray) -> np.ndarray:
        face = np.concatenate([np.abs(p - self.lo), np.abs(p - self.hi)], axis=1).argmin(axis=1)
        n = np.zeros_like(p)
        n[np.arange(len(p)), face % 3] = np.where(face < 3, -1.0, 1.0)
        return n


@dataclass
class Sphere:
    centre: np.ndarray
    radius: float
    surface: Surface

    def intersect(self, o: np.ndarray, d: np.ndarray, inv: np.ndarray) -> np.ndarray:
        oc = o - self.centre
        a = (d * d).sum(axis=0)
        b = oc @ d
        disc = b * b - a * (oc @ oc - self.radius**2)
        t = (-b - np.sqrt(np.maximum(disc, 0.0))) / a
        return np.where((disc >= 0) & (t > EPS), t, np.inf)

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        return self.centre - self.radius, self.centre + self.radius

    def normals(self, p: np.ndarray) -> np.ndarray:
        return (p - self.centre) / self.radius


@dataclass
class Cylinder:
    """Vertical cylinder: axis along world z through (x, y), from z0 to z1."""

    x: float
    y: float
    radius: float
    z0: float
    z1: float
    surface: Surface

    def intersect(self, o: np.ndarray, d: np.ndarray, inv: np.ndarray) -> np.ndarray:
        ox, oy = o[0] - self.x, o[1] - self.y
        a = d[0] ** 2 + d[1] ** 2
        b = ox * d[0] + oy * d[1]
        disc = b * b - a * (ox * ox + oy * oy - self.radius**2)
        with np.errstate(divide="ignore", invalid="ignore"):
            t = (-b - np.sqrt(np.maximum(disc, 0.0))) / a
        z = o[2] + t * d[2]
        side = np.where((disc >= 0) & (t > EPS) & (z >= self.z0) & (z <= self.z1), t, np.inf)
        for zc in (self.z0, self.z1):
            tc = (zc - o[2]) * inv[2]
            inside = (ox + tc * d[0]) ** 2 + (oy + tc * d[1]) ** 2 <= self.radius**2
            side = np.where(inside & (tc > EPS) & (tc < side), tc, side)
        return side

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        r = self.radius
        return np.array([self.x - r, self.y - r, self.z0]), np.array([self.x + r, self.y + r, self.z1])

    def normals(self, p: np.ndarray) -> np.ndarray:
        rx, ry = p[:, 0] - self.x, p[:, 1] - self.y
        radial = np.hypot(rx, ry)
        on_side = np.abs(radial - self.radius) < np.minimum(np.abs(p[:, 2] - self.z0), np.abs(p[:, 2] - self.z1))
        cap = np.where(np.abs(p[:, 2] - self.z1) < np.abs(p[:, 2] - self.z0), 1.0, -1.0)
        r = np.maximum(radial, EPS)
        return np.stack([np.where(on_side, rx / r, 0), np.where(on_side, ry / r, 0), np.where(on_side, 0, cap)], 1)


# ------------------------------------------------------------------------------------------- layout


@dataclass
class Placement:
    """An object's local frame on the floor: a runs along its back, b away from it (into the room)."""

    origin: np.ndarray
    ea: np.ndarray
    eb: np.ndarray

    def box(self, a0: float, a1: float, b0: float, b1: float, z0: float, z1: float) -> tuple[np.ndarray, np.ndarray]:
        c1 = self.origin + a0 * self.ea + b0 * self.eb
        c2 = self.origin + a1 * self.ea + b1 * self.eb
        return np.array([min(c1[0], c2[0]), min(c1[1], c2[1]), z0]), np.array(
            [max(c1[0], c2[0]), max(c1[1], c2[1]), z1]
        )

    def point(self, a: float, b: float) -> np.ndarray:
        return self.origin + a * self.ea + b * self.eb


class Scene:
    """A box room, a camera and the primitives in it, built by `sample_scene`."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self.size = np.array([rng.uniform(3.5, 7), rng.uniform(3, 6), rng.uniform(2.5, 3.2)])
        lx, ly, _ = self.size
        self.eye = np.array([rng.uniform(0.3, 1.0), rng.uniform(0.3, 0.7) * ly, rng.uniform(1.2, 1.8)])
        self.room = [make_surface(rng, c) for c in (WALL, WALL, WALL, WALL, FLOOR, CEILING)]
        if rng.random() < 0.6:  # most rooms have one wall colour
            self.room[1:4] = [self.room[0]] * 3
        self.prims: list[Box | Sphere | Cylinder] = []
        self.occupied: list[tuple[np.ndarray, np.ndarray]] = []
        self.supports: list[tuple[np.ndarray, np.ndarray]] = []  # tops that can carry small items
        # walls the camera sees: x = Lx, y = 0, y = Ly (x = 0 is behind it)
        self.walls = [
            (np.array([lx, 0.0]), np.array([0.0, 1.0]), np.array([-1.0, 0.0]), ly),
            (np.array([0.0, 0.0]), np.array([1.0, 0.0]), np.array([0.0, 1.0]), lx),
            (np.array([0.0, ly]), np.array([1.0, 0.0]), np.array([0.0, -1.0]), lx),
        ]

    def free(self, lo: np.ndarray, hi: np.ndarray) -> bool:
        """Inside the room, clear of the camera and of everything placed so far (touching is fine)."""
        if (lo < -1e-9).any() or (hi > self.size + 1e-9).any():
            return False
        gap = np.maximum(np.maximum(lo[:2] - self.eye[:2], self.eye[:2] - hi[:2]), 0)
        if np.hypot(*gap) < 0.5 or lo[0] < self.eye[0] + 0.4:
            return False
        return all((lo >= h - 1e-9).any() or (hi <= l + 1e-9).any() for l, h in self.occupied)  # noqa: E741

    def place(self, width: float, depth: float, height: float, on_wall: bool) -> Placement | None:
        """A free spot for a width x depth footprint, against a visible wall or anywhere facing anywhere."""
        rng = self.rng
        for _ in range(25):
            if on_wall:
                origin, ea, eb, length = self.walls[rng.integers(3)]
                if length < width:
                    continue
                plc = Placement(origin + ea * rng.uniform(0, length - width) + eb * rng.uniform(0, 0.05), ea, eb)
            else:
                turn = rng.integers(4)
                ea = np.array([[1.0, 0], [0, 1.0], [-1.0, 0], [0, -1.0]][turn])
                plc = Placement(np.zeros(2), ea, np.array([-ea[1], ea[0]]))
                lo, hi = plc.box(0, width, 0, depth, 0, height)
                shift = rng.uniform(0, 1, 2) * np.maximum(self.size[:2] - (hi - lo)[:2], 0) - lo[:2]
                plc.origin = shift
            lo, hi = plc.box(0, width, 0, depth, 0, height)
            if self.free(lo, hi):
                self.occupied.append((lo, hi))
                return plc
        return None

    def add_box(self, plc: Placement, a0, a1, b0, b1, z0, z1, surface: Surface) -> None:
        self.prims.append(Box(*plc.box(a0, a1, b0, b1, z0, z1), surface))


def add_floor_object(scene: Scene) -> None:
    """One piece of furniture (or a floor object) made of one or more primitives."""
    rng, u = scene.rng, scene.rng.uniform
    kind = rng.choice(["bed", "sofa", "table", "chair", "stool", "cabinet", "ball", "bin", "crate"],
                      p=[0.1, 0.12, 0.14, 0.14, 0.06, 0.18, 0.09, 0.09, 0.08])  # fmt: skip
    if kind == "bed" and (plc := scene.place(w := u(1.4, 1.9), dp := u(1.9, 2.1), hh := u(0.9, 1.2), True)):
        cover, head = make_surface(rng, BED), make_surface(rng, BED)
        scene.add_box(plc, 0, w, 0.08, dp, 0, top := u(0.45, 0.6), cover)
        scene.add_box(plc, 0, w, 0, 0.08, 0, hh, head)
        pillow = make_surface(rng, BED)
        for a in (0.15, w / 2 + 0.05):
            scene.add_box(plc, a, a + w / 2 - 0.2, 0.15, 0.5, top, top + 0.12, pillow)
    elif kind == "sofa" and (plc := scene.place(w := u(1.5, 2.3), dp := u(0.8, 0.95), 0.85, rng.random() < 0.7)):
        s = make_surface(rng, SOFA)
        scene.add_box(plc, 0, w, 0, dp, 0, u(0.38, 0.45), s)
        scene.add_box(plc, 0, w, 0, 0.2, 0, 0.85, s)
        for a in (0, w - 0.18):
            scene.add_box(plc, a, a + 0.18, 0, dp, 0, 0.6, s)
    elif kind == "table" and (plc := scene.place(w := u(0.8, 1.6), dp := u(0.6, 1.0), h := u(0.7, 0.78), False)):
        s = make_surface(rng, TABLE)
        scene.add_box(plc, 0, w, 0, dp, h - 0.04, h, s)
        for a, b in ((0, 0), (w - 0.05, 0), (0, dp - 0.05), (w - 0.05, dp - 0.05)):
            scene.add_box(plc, a, a + 0.05, b, b + 0.05, 0, h - 0.04, s)
        scene.supports.append(plc.box(0.02, w - 0.02, 0.02, dp - 0.02, h, h))
    elif kind == "chair" and (plc := scene.place(w := u(0.42, 0.5), w, 0.9, False)):
        s = make_surface(rng, CHAIR)
        scene.add_box(plc, 0, w, 0, w, 0.42, 0.47, s)
        scene.add_box(plc, 0, w, 0, 0.05, 0.47, u(0.85, 0.95), s)
        for a, b in ((0, 0), (w - 0.04, 0), (0, w - 0.04), (w - 0.04, w - 0.04)):
            scene.add_box(plc, a, a + 0.04, b, b + 0.04, 0, 0.42, s)
    elif kind == "stool" and (plc := scene.place(2 * (r := u(0.16, 0.22)), 2 * r, h := u(0.45, 0.7), False)):
        c = plc.point(r, r)
        scene.prims.append(Cylinder(c[0], c[1], r, 0.0, h, make_surface(rng, CHAIR)))
    elif kind == "cabinet" and (plc := scene.place(w := u(0.5, 1.6), dp := u(0.4, 0.6), h := u(0.5, 2.1), True)):
        scene.add_box(plc, 0, w, 0, dp, 0, h, make_surface(rng, FURNITURE))
        if h < 1.2:
            scene.supports.append(plc.box(0.02, w - 0.02, 0.02, dp - 0.02, h, h))
    elif kind == "ball" and (plc := scene.place(2 * (r := u(0.1, 0.3)), 2 * r, 2 * r, False)):
        scene.prims.append(Sphere(np.append(plc.point(r, r), r), r, make_surface(rng, OBJECTS)))
    elif kind == "bin" and (plc := scene.place(2 * (r := u(0.1, 0.25)), 2 * r, h := u(0.2, 0.7), False)):
        c = plc.point(r, r)
        scene.prims.append(Cylinder(c[0], c[1], r, 0.0, h, make_surface(rng, OBJECTS)))
    elif kind == "crate" and (plc := scene.place(w := u(0.2, 0.5), dp := u(0.2, 0.5), h := u(0.2, 0.5), False)):
        scene.add_box(plc, 0, w, 0, dp, 0, h, make_surface(rng, OBJECTS))


def add_on_support(scene: Scene, lo: np.ndarray, hi: np.ndarray) -> None:
    """Books, a small object or a TV standing on a table or low cabinet."""
    rng, u = scene.rng, scene.rng.uniform
    z = lo[2]
    for _ in range(10):
        kind = rng.choice(["books", "object", "tv"], p=[0.5, 0.35, 0.15])
        along = int(rng.integers(2))  # world axis the row / screen runs along
        if kind == "books":
            widths = u(0.02, 0.06, rng.integers(3, 9))
            size = [widths.sum(), u(0.12, 0.2)]
        elif kind == "tv":
            size = [u(0.7, 1.2), 0.06]
        else:
            size = [2 * (r := u(0.05, 0.15)), 2 * r]
        ext = np.array(size[::-1] if along else size)
        room = hi[:2] - lo[:2] - ext
        if (room < 0).any():
            continue
        base = lo[:2] + rng.uniform(0, 1, 2) * room
        top = {"books": 0.3, "tv": u(0.45, 0.7), "object": 2 * size[0]}[kind]
        box_lo, box_hi = np.append(base, z), np.append(base + ext, z + top)
        if not scene.free(box_lo, box_hi):
            continue
        scene.occupied.append((box_lo, box_hi))
        if kind == "books":
            offsets = np.concatenate([[0.0], np.cumsum(widths)])
            for a0, a1 in zip(offsets[:-1], offsets[1:], strict=True):
                blo, bhi = box_lo.copy(), box_hi.copy()
                blo[along], bhi[along] = base[along] + a0, base[along] + a1
                bhi[2] = z + u(0.15, 0.3)
                scene.prims.append(Box(blo, bhi, make_surface(rng, BOOKS)))
        elif kind == "tv":
            scene.prims.append(Box(box_lo, box_hi, make_surface(rng, TV)))
        elif rng.random() < 0.5:
            scene.prims.append(Sphere(np.append(base + r, z + r), r, make_surface(rng, OBJECTS)))
        else:
            scene.prims.append(Cylinder(*(base + r), r, z, z + u(0.1, 0.35), make_surface(rng, OBJECTS)))
        return


def add_wall_item(scene: Scene) -> None:
    """A painting (with frame), a window or a TV: thin boxes on a visible wall."""
    rng, u = scene.rng, scene.rng.uniform
    cls = rng.choice([PAINTING, WINDOW, TV], p=[0.45, 0.35, 0.2])
    w, h, z0, t = {
        PAINTING: (u(0.4, 1.2), u(0.3, 0.9), u(1.1, 1.6), 0.03),
        WINDOW: (u(0.8, 1.6), u(1.0, 1.4), u(0.8, 1.0), 0.03),
        TV: (u(0.9, 1.4), u(0.5, 0.8), u(0.8, 1.3), u(0.05, 0.08)),
    }[cls]
    h = min(h, scene.size[2] - z0 - 0.15)
    for _ in range(10):
        origin, ea, eb, length = scene.walls[rng.integers(3)]
        if length < w + 0.2:
            continue
        plc = Placement(origin + ea * u(0.1, length - w - 0.1), ea, eb)
        lo, hi = plc.box(-0.05, w + 0.05, 0, t, z0 - 0.05, z0 + h + 0.05)  # with room for a frame
        if scene.free(lo, hi):
            scene.occupied.append((lo, hi))
            if cls == PAINTING:  # frame behind the canvas
                frame = make_surface(rng, PAINTING)
                frame.pattern = "plain"
                scene.add_box(plc, -0.04, w + 0.04, 0, 0.02, z0 - 0.04, z0 + h + 0.04, frame)
                scene.add_box(plc, 0, w, 0, t, z0, z0 + h, make_surface(rng, cls))
            else:
                scene.add_box(plc, 0, w, 0, t, z0, z0 + h, make_surface(rng, cls))
            return


@dataclass(frozen=True)
class SceneRanges:
    """How varied the rooms are. The defaults make the benchmark's scenes (keep them fixed: a changed
    default changes every synthetic dataset and so every stored result made on one); `WIDE` is the
    pretraining distribution: emptier and fuller rooms, more wall items, a camera that looks further
    around, wider lenses and stronger or dimmer light."""

    floor_objects: tuple[int, int] = (4, 11)
    wall_items: tuple[int, int] = (1, 5)
    yaw: tuple[float, float] = (-35.0, 35.0)
    pitch: tuple[float, float] = (-22.0, 2.0)
    fov: tuple[float, float] = (55.0, 70.0)
    ambient: tuple[float, float] = (0.3, 0.45)
    exposure: tuple[float, float] = (0.9, 1.2)


BENCHMARK = SceneRanges()
WIDE = SceneRanges(floor_objects=(1, 16), wall_items=(0, 8), yaw=(-60.0, 60.0), pitch=(-40.0, 12.0),
                   fov=(45.0, 85.0), ambient=(0.15, 0.6), exposure=(0.6, 1.5))


def sample_scene(rng: np.random.Generator, ranges: SceneRanges = BENCHMARK) -> Scene:
    scene = Scene(rng)
    for _ in range(rng.integers(*ranges.floor_objects)):
        add_floor_object(scene)
    for lo, hi in list(scene.supports):
        for _ in range(rng.integers(1, 4)):
            add_on_support(scene, lo, hi)
    for _ in range(rng.integers(*ranges.wall_items)):
        add_wall_item(scene)
    return scene


# --------------------------------------------------------------------------------------- rendering


def look_rotation(rng: np.random.Generator, ranges: SceneRanges = BENCHMARK) -> np.ndarray:
    """Camera-to-world rotation (columns: right, down, forward) looking roughly along +x, slightly down."""
    yaw, pitch, roll = np.radians([rng.uniform(*ranges.yaw), rng.uniform(*ranges.pitch), rng.uniform(-4, 4)])
    forward = np.array([np.cos(pitch) * np.cos(yaw), np.cos(pitch) * np.sin(yaw), np.sin(pitch)])
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    right, down = np.cos(roll) * right + np.sin(roll) * down, -np.sin(roll) * right + np.cos(roll) * down
    return np.stack([right, down, forward], axis=1)


_CORNERS = np.array([[(i >> axis) & 1 for i in range(8)] for axis in range(3)], dtype=bool)  # 3 x 8: lo/hi


def pixel_window(
    bounds: tuple[np.ndarray, np.ndarray],
    eye: np.ndarray,
    rot: np.ndarray,
    focal: float,
    shape: tuple[int, int],
) -> tuple[slice, slice] | None:
    """The pixel rectangle a world box can cover (None: none), so small primitives cost few rays.

    Projections of the 8 corners bound the projection of the box when all are in front of the camera;
    a box that straddles the camera plane gets the whole image.
    """
    height, width = shape
    corners = np.where(_CORNERS, bounds[1][:, None], bounds[0][:, None])
    cam = rot.T @ (corners - eye[:, None])
    in_front = cam[2] > 0.05
    if not in_front.any():
        return None
    if not in_front.all():
        return slice(0, height), slice(0, width)
    u = focal * cam[0] / cam[2] + width / 2 - 0.5  # continuous pixel index
    v = focal * cam[1] / cam[2] + height / 2 - 0.5
    u0, u1 = max(int(np.floor(u.min())), 0), min(int(np.ceil(u.max())) + 1, width)
    v0, v1 = max(int(np.floor(v.min())), 0), min(int(np.ceil(v.max())) + 1, height)
    return (slice(v0, v1), slice(u0, u1)) if u0 < u1 and v0 < v1 else None


def render_scene(rng: np.random.Generator, height: int, width: int,
                 ranges: SceneRanges = BENCHMARK) -> dict[str, np.ndarray]:  # fmt: skip
    """Sample a room and ray-cast it: image, label, depth and normal (see the module docstring)."""
    scene = sample_scene(rng, ranges)
    rot = look_rotation(rng, ranges)
    focal = width / 2 / np.tan(np.radians(rng.uniform(*ranges.fov)) / 2)
    cx, cy = width / 2, height / 2
    n_pix = height * width
    ray_cam = np.empty((3, height, width))
    ray_cam[0] = ((np.arange(width) + 0.5 - cx) / focal)[None, :]
    ray_cam[1] = ((np.arange(height) + 0.5 - cy) / focal)[:, None]
    ray_cam[2] = 1.0
    ray_cam = ray_cam.reshape(3, n_pix)
    d = rot @ ray_cam
    with np.errstate(divide="ignore"):
        inv = 1.0 / d
    d_grid, inv_grid = d.reshape(3, height, width), inv.reshape(3, height, width)
    o = scene.eye
    pix = np.arange(n_pix)

    # The room: leave through the nearest of the three slabs' exit planes. Faces 0..5 = x0, x1, y0, y1, z0, z1.
    with np.errstate(invalid="ignore"):
        exits = np.maximum(-o[:, None] * inv, (scene.size - o)[:, None] * inv)
    axis = exits.argmin(axis=0)
    t = exits[axis, pix]
    ids = axis * 2 + (d[axis, pix] > 0)
    t_grid, ids_grid = t.reshape(height, width), ids.reshape(height, width)  # views: updates reach t, ids
    for k, prim in enumerate(scene.prims):
        window = pixel_window(prim.bounds(), o, rot, focal, (height, width))
        if window is None:
            continue
        rows, cols = window
        tk = prim.intersect(o, d_grid[:, rows, cols].reshape(3, -1), inv_grid[:, rows, cols].reshape(3, -1))
        t_win, ids_win = t_grid[rows, cols], ids_grid[rows, cols]
        closer = tk.reshape(t_win.shape) < t_win
        t_win[closer] = tk.reshape(t_win.shape)[closer]
        ids_win[closer] = k + 6

    surfaces = scene.room + [prim.surface for prim in scene.prims]
    points = (o[:, None] + t * d).T
    normal = np.zeros((n_pix, 3))
    order = np.argsort(ids, kind="stable")
    bounds = np.searchsorted(ids[order], np.arange(len(surfaces) + 1))
    room = ids < 6
    normal[room, ids[room] // 2] = np.where(ids[room] % 2 == 0, 1.0, -1.0)
    for k, prim in enumerate(scene.prims):
        idx = order[bounds[k + 6] : bounds[k + 7]]
        if len(idx):
            normal[idx] = prim.normals(points[idx])

    # Appearance: texture in surface coordinates (the two world axes across the dominant normal axis).
    dominant = np.abs(normal).argmax(axis=1)
    tex_u = np.where(dominant == 0, points[:, 1], points[:, 0])
    tex_v = np.where(dominant == 2, points[:, 1], points[:, 2])
    albedo = np.empty((n_pix, 3))
    emissive = np.zeros(n_pix)
    for k, surface in enumerate(surfaces):
        idx = order[bounds[k] : bounds[k + 1]]
        if len(idx):
            s = pattern_value(surface, tex_u[idx], tex_v[idx])[:, None]
            albedo[idx] = surface.colour * (1 - s) + surface.colour2 * s
            emissive[idx] = surface.emissive

    u = rng.uniform
    sun = np.array([u(-1, 1), u(-1, 1), u(0.6, 1.5)])
    sun /= np.linalg.norm(sun)
    lamp = np.array([u(0.3, 0.7), u(0.3, 0.7), 1.0]) * scene.size - [0, 0, 0.1]
    to_lamp = lamp - points
    lamp_dist = np.linalg.norm(to_lamp, axis=1)
    lamp_term = np.maximum((normal * to_lamp).sum(axis=1) / lamp_dist, 0) / (1 + (lamp_dist / 2.5) ** 2)
    shade = u(*ranges.ambient) + u(0.25, 0.45) * np.maximum(normal @ sun, 0) + u(0.4, 0.8) * lamp_term
    shade = shade / (1 + 0.01 * t**2)
    shade = shade * (1 - emissive) + emissive
    image = albedo * (shade * u(*ranges.exposure))[:, None] + rng.normal(0, u(0.005, 0.02), (n_pix, 3))

    normal_cam = normal @ rot
    facing_away = (normal_cam * ray_cam.T).sum(axis=1) > 0
    normal_cam[facing_away] *= -1
    classes = np.array([s.cls for s in surfaces], dtype=np.int64)
    return {
        "image": np.clip(image, 0, 1).reshape(height, width, 3).astype(np.float32),
        "label": classes[ids].reshape(height, width),
        "depth": t.reshape(height, width, 1).astype(np.float32),
        "normal": normal_cam.reshape(height, width, 3).astype(np.float32),
        "intrinsics": np.array([focal, focal, cx, cy]),
        "cam_to_world": rot,
        "camera_height": float(o[2]),
    }


def scene_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """Each image's own stream: generation is deterministic and independent of order and of n."""
    return np.random.default_rng([GENERATOR_VERSION, seed, SPLIT_CODES[split], index])


def write_synthetic(
    out: Path,
    n_train: int,
    n_val: int,
    size: tuple[int, int] = (96, 128),
    seed: int = 0,
    progress: bool = True,
) -> Path:
    """Render n_train + n_val scenes into the NYUv2 MTAN layout (out/{split}/{folder}/{i}.npy + meta.json)."""
    out = Path(out)
    height, width = size
    counts = {"train": n_train, "val": n_val}
    for split in counts:
        for folder in FOLDERS:
            (out / split / folder).mkdir(parents=True, exist_ok=True)
    jobs = [(split, i) for split, n in counts.items() for i in range(n)]
    with _progress_bar(progress) as bar:
        task = bar.add_task(f"synthetic {height}x{width}", total=len(jobs)) if bar else None
        for split, i in jobs:
            sample = render_scene(scene_rng(seed, split, i), height, width)
            for folder in FOLDERS:
                np.save(out / split / folder / f"{i}.npy", sample[folder])
            if bar:
                bar.advance(task)
    meta = {
        "dataset": "synthetic",
        "classes": list(CLASS_NAMES),
        "size": [height, width],
        "seed": seed,
        "train": n_train,
        "val": n_val,
        "generator_version": GENERATOR_VERSION,
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return out


def _progress_bar(enabled: bool):
    """A rich bar with images/minute and ETA, or a do-nothing context when disabled."""
    import contextlib

    if not enabled:
        return contextlib.nullcontext(None)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TimeRemainingColumn
    from rich.text import Text

    class RateColumn(ProgressColumn):
        def render(self, task) -> Text:
            speed = task.finished_speed or task.speed
            return Text(f"{speed * 60:,.0f} img/min" if speed else "? img/min", style="progress.data.speed")

    return Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(), RateColumn(),
                    TimeRemainingColumn(), transient=False)  # fmt: skip
