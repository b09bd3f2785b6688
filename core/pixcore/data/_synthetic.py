"""Procedurally rendered synthetic indoor scenes with exact labels for every task.

This is pixcore's embedded default data set: no files, no downloads, only numpy. Each
scene is a box-shaped room (floor, four walls, ceiling) holding 2 to 6 primitives
(spheres, boxes, vertical capped cylinders) standing on the floor, and 0 to 2 glass
windows on the walls, seen by a pinhole camera from inside the room. Every pixel is
ray cast analytically, so the labels are exact:

* ``semseg``: class id per pixel, see :data:`CLASS_NAMES`;
* ``depth``: metric **z-depth** (distance along the optical axis, not the ray length),
  in metres;
* ``normals``: unit surface normals in the camera frame, facing the camera;
* ``valid``: where depth and normals are defined. Windows are glass, which a depth
  sensor does not see (as in NYU or KITTI): there ``valid`` is False, ``depth`` is 0
  and ``normals`` are zero, while ``semseg`` says ``"window"``.

Conventions
-----------
*World frame*: **z up**, metres. The floor is the plane ``z = room_min[2] = 0`` and the
ceiling is ``z = room_max[2]``; the walls are the planes ``x = room_min[0]``,
``x = room_max[0]``, ``y = room_min[1]``, ``y = room_max[1]`` (wall indices 0 to 3 in
that order, see :data:`WALL_NAMES`).

*Camera frame* (OpenCV): x right, y down, z forward. ``camera_to_world`` maps camera
coordinates to world coordinates: ``p_world = R @ p_cam + t`` with ``R =
camera_to_world[:3, :3]`` and ``t = camera_to_world[:3, 3]`` (the camera centre).

*Pixels*: integer pixel coordinates ``(u, v)`` = (column, row) address pixel
**centres**; the principal point is the image centre ``((W - 1) / 2, (H - 1) / 2)``.
The ray of pixel ``(u, v)`` is ``K^-1 @ (u, v, 1)`` in the camera frame, and a point at
depth ``z`` on it is ``z * K^-1 @ (u, v, 1)``.

Rendering is deterministic: :func:`render_scene` draws everything from
``np.random.default_rng([seed, index])``, so the same arguments give bit-identical
arrays regardless of call order or process.

Styles
------
``style`` picks the distribution the scenes are drawn from (:data:`STYLES`), so that a
model can be trained on one and transferred to another with the same classes and the
same exact labels:

* ``"day"`` (the default): pale walls, a checkered floor, bright sky in the windows, a
  white light, an eye-level camera (1.0-1.8 m, pitch -25 to 5 degrees, 55-75 degree
  field of view) and spheres, boxes and cylinders equally often;
* ``"night"``: saturated walls with a dark band at their foot, a plank floor, dark
  windows, one warm lamp with a strong falloff and a dim ambient, a higher camera that
  looks down more (1.6-2.3 m, pitch -40 to -10 degrees, 70-90 degrees), boxes and
  cylinders twice as often as spheres, and the object textures swapped: spheres carry
  the vertical stripes that mark cylinders by day, cylinders the horizontal bands of
  the day's spheres, boxes are plain. A model that learnt "stripes mean cylinder" by
  day is wrong by night, as a photo model is on another camera or season.

Each style has its own scene streams: a night scene is drawn from
``np.random.default_rng([seed, index, 1])``, so scene ``index`` of a night stream shares
nothing with scene ``index`` of the day stream. The day's scenes are those of the
renderer before styles existed, bit for bit.
"""

from __future__ import annotations

import colorsys
import math
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import ClassVar, Literal, NamedTuple, get_args

import numpy as np
import torch

from pixcore._interfaces import Dataset
from pixcore._targets import (
    ClassMask,
    Image,
    Intrinsics,
    ScalarField,
    TargetKind,
    UnitVectorField,
    ValidityMask,
)

__all__ = [
    "CLASS_NAMES",
    "SPLITS",
    "STYLES",
    "WALL_NAMES",
    "Primitive",
    "RenderedScene",
    "SceneDescription",
    "SyntheticScenes",
    "Window",
    "render_scene",
]

#: Class names; the index is the class id in ``semseg``.
CLASS_NAMES: tuple[str, ...] = (
    "floor",
    "wall",
    "ceiling",
    "sphere",
    "box",
    "cylinder",
    "window",
)
FLOOR, WALL, CEILING, SPHERE, BOX, CYLINDER, WINDOW = range(len(CLASS_NAMES))

#: Wall indices used by :class:`Window`: the wall planes x=min, x=max, y=min, y=max.
WALL_NAMES: tuple[str, ...] = ("x_min", "x_max", "y_min", "y_max")

#: Split names of :class:`SyntheticScenes`, in the order of their stream ids.
SPLITS: tuple[str, ...] = ("train", "val", "test")

#: A scene style: which distribution scenes are drawn from (see the module docstring).
Style = Literal["day", "night"]
#: The style names, the default first.
STYLES: tuple[str, ...] = get_args(Style)

_KIND_CLASS = {"sphere": SPHERE, "box": BOX, "cylinder": CYLINDER}


# --------------------------------------------------------------------------------------
# Scene description
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Primitive:
    """One object standing on the floor, in world coordinates (z up, metres).

    Attributes
    ----------
    kind : str
        ``"sphere"``, ``"box"`` or ``"cylinder"``.
    class_id : int
        Its class id in :data:`CLASS_NAMES` (3, 4 or 5).
    centre : tuple of 3 floats
        Geometric centre (the sphere's centre, the box's centre, the middle of the
        cylinder's axis). Every primitive rests on the floor: ``centre[2]`` equals
        ``half_extents[2]``.
    half_extents : tuple of 3 floats
        Sphere: ``(r, r, r)``. Box: half side lengths along its local x, y, z axes
        (before ``yaw``). Cylinder: ``(r, r, h / 2)`` for radius ``r`` and height ``h``.
    yaw : float
        Rotation about the world z axis in radians (boxes only; 0 otherwise). A local
        point ``(a, b, c)`` is at ``centre + (a cos(yaw) - b sin(yaw),
        a sin(yaw) + b cos(yaw), c)``.
    albedo : tuple of 3 floats
        Base colour (linear RGB in 0..1); appearance only.

    """

    kind: str
    class_id: int
    centre: tuple[float, float, float]
    half_extents: tuple[float, float, float]
    yaw: float = 0.0
    albedo: tuple[float, float, float] = (0.5, 0.5, 0.5)

    @property
    def radius(self) -> float:
        """Radius of a sphere or cylinder (``half_extents[0]``), metres."""
        return self.half_extents[0]

    @property
    def height(self) -> float:
        """Total height above the floor, metres."""
        return 2.0 * self.half_extents[2]

    @property
    def footprint_radius(self) -> float:
        """Radius of the smallest vertical cylinder about ``centre`` that holds it, metres."""
        if self.kind == "box":
            return math.hypot(self.half_extents[0], self.half_extents[1])
        return self.half_extents[0]


@dataclass(frozen=True)
class Window:
    """A glass rectangle lying in a wall plane: no depth, class ``"window"``.

    Attributes
    ----------
    wall : int
        Index into :data:`WALL_NAMES` (0: ``x = room_min[0]``, 1: ``x = room_max[0]``,
        2: ``y = room_min[1]``, 3: ``y = room_max[1]``).
    corner_min, corner_max : tuple of 3 floats
        Opposite corners in world coordinates; they agree on the wall's coordinate
        (the rectangle is flat), so a wall point ``p`` is in the window iff
        ``corner_min <= p <= corner_max`` component-wise on the other two axes.

    """

    wall: int
    corner_min: tuple[float, float, float]
    corner_max: tuple[float, float, float]


@dataclass(frozen=True, eq=False)
class SceneDescription:
    """Everything needed to re-derive a scene's labels independently.

    All geometry is in world coordinates: z up, metres (see the module docstring).

    Attributes
    ----------
    intrinsics : np.ndarray
        ``(3, 3)`` float64 pinhole matrix ``[[fx, 0, cx], [0, fy, cy], [0, 0, 1]]`` in
        pixels, pixel centres at integer coordinates.
    camera_to_world : np.ndarray
        ``(4, 4)`` float64 rigid transform from the OpenCV camera frame (x right, y down,
        z forward) to the z-up world frame.
    room_min, room_max : np.ndarray
        ``(3,)`` float64 corners of the room box; ``room_min[2] == 0`` is the floor.
    primitives : tuple of Primitive
        The objects, in drawing order (overlaps are resolved by depth, not order).
    windows : tuple of Window
        Glass rectangles on the walls.
    light_position : np.ndarray
        ``(3,)`` float64 position of the point light (appearance only).
    height, width : int
        Image size in pixels.

    Equality is identity (``eq=False``): compare fields explicitly.

    """

    intrinsics: np.ndarray
    camera_to_world: np.ndarray
    room_min: np.ndarray
    room_max: np.ndarray
    primitives: tuple[Primitive, ...]
    windows: tuple[Window, ...]
    light_position: np.ndarray
    height: int
    width: int


@dataclass(frozen=True, eq=False)
class RenderedScene:
    """One rendered scene: an image and exact, pixel-aligned labels.

    Attributes
    ----------
    image : np.ndarray
        ``(H, W, 3)`` uint8 RGB.
    semseg : np.ndarray
        ``(H, W)`` uint8 class ids, indices into :data:`CLASS_NAMES`.
    depth : np.ndarray
        ``(H, W)`` float32 z-depth in metres (along the optical axis). 0.0 where
        ``valid`` is False, but consumers must use ``valid``, not the value.
    normals : np.ndarray
        ``(H, W, 3)`` float32 unit normals in the camera frame (x right, y down,
        z forward), facing the camera; zeros where ``valid`` is False.
    valid : np.ndarray
        ``(H, W)`` bool: True where depth and normals are defined (everything except
        windows).
    intrinsics : np.ndarray
        ``(3, 3)`` float32 pinhole matrix (same values as ``scene.intrinsics``).
    scene : SceneDescription
        The geometry the labels were derived from.

    Equality is identity (``eq=False``): compare arrays explicitly.

    """

    image: np.ndarray
    semseg: np.ndarray
    depth: np.ndarray
    normals: np.ndarray
    valid: np.ndarray
    intrinsics: np.ndarray
    scene: SceneDescription


# --------------------------------------------------------------------------------------
# Scene sampling
# --------------------------------------------------------------------------------------


def _hsv(h: float, s: float, v: float) -> tuple[float, float, float]:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, s, v)
    return (float(r), float(g), float(b))


def _readonly(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


class _Draws:
    """Scalar random draws from a generator, fetched in blocks (scalar calls are slow)."""

    def __init__(self, rng: np.random.Generator, block: int = 128) -> None:
        self._rng = rng
        self._block = block
        self._buf: list[float] = []
        self._pos = 0

    def random(self) -> float:
        if self._pos == len(self._buf):
            self._buf = self._rng.random(self._block).tolist()
            self._pos = 0
        self._pos += 1
        return self._buf[self._pos - 1]

    def uniform(self, lo: float, hi: float) -> float:
        return lo + (hi - lo) * self.random()

    def integer(self, lo: int, hi: int) -> int:
        """Uniform integer in ``[lo, hi)``."""
        return min(lo + int((hi - lo) * self.random()), hi - 1)


@dataclass(frozen=True)
class _Style:
    """Appearance parameters of a room (not needed to derive labels)."""

    floor: tuple[float, float, float]
    floor_tile: float  # checker period in metres
    wall: tuple[float, float, float]
    wall_stripe: float  # stripe period in metres, 0 for plain walls
    ceiling: tuple[float, float, float]
    stripes: tuple[int, ...]  # per primitive: number of pattern repeats
    look: _Look  # what every room of its style shares


@dataclass(frozen=True)
class _Look:
    """How a style lights and textures every room; a room's own colours are in :class:`_Style`."""

    ambient: float  # shade of a surface the light does not reach...
    ambient_up: float  # ...plus this times the world normal's z (ceilings a little brighter)
    light: float  # the point light's strength
    falloff: float  # 1 / the squared distance (m^2) at which the light is halved
    sky: float  # brightness of window glass 1 m above the floor...
    sky_up: float  # ...plus this per metre upwards
    frame: float  # added on the window crosses (mullions)
    glass: tuple[float, float, float]  # window colour
    tint: tuple[float, float, float] | None  # the light's colour, multiplying the image; None: white
    floor_planks: bool  # planks (their edges at x = k * floor_tile) instead of a checkerboard
    wainscot: float  # height in metres of a darker band at the foot of the walls; 0: none
    patterns: Mapping[str, _Pattern]  # the texture of each primitive kind


@dataclass(frozen=True)
class _SceneStyle:
    """What scenes of a style are drawn from. Room size, object sizes, windows and the
    light's position are drawn alike for every style; the labels are computed alike."""

    stream: tuple[int, ...]  # appended to [seed, index] in the generator's seed: a style's own scenes
    camera_height: tuple[float, float]  # metres
    pitch: tuple[float, float]  # degrees; negative looks down
    hfov: tuple[float, float]  # horizontal field of view, degrees
    kinds: tuple[str, ...]  # a primitive's kind is drawn uniformly from these: a repeated kind is likelier
    palette: Callable[[_Draws, tuple[int, ...]], _Style]  # a room's colours, given the primitives' stripes


def _day_palette(d: _Draws, stripes: tuple[int, ...]) -> _Style:
    """Pale walls (some striped), a light checkered floor, a white ceiling."""
    return _Style(
        floor=_hsv(d.uniform(0.03, 0.12), d.uniform(0.35, 0.65), d.uniform(0.5, 0.75)),
        floor_tile=d.uniform(0.3, 0.7),
        wall=_hsv(d.random(), d.uniform(0.08, 0.25), d.uniform(0.75, 0.92)),
        wall_stripe=d.uniform(0.25, 0.6) if d.random() < 0.6 else 0.0,
        ceiling=_hsv(d.uniform(0.1, 0.6), 0.04, d.uniform(0.9, 0.98)),
        stripes=stripes,
        look=_DAY_LOOK,
    )


def _night_palette(d: _Draws, stripes: tuple[int, ...]) -> _Style:
    """Saturated plain walls, dark wooden planks (``floor_tile``: their width), a grey ceiling."""
    return _Style(
        floor=_hsv(d.uniform(0.02, 0.09), d.uniform(0.5, 0.8), d.uniform(0.3, 0.5)),
        floor_tile=d.uniform(0.12, 0.25),
        wall=_hsv(d.random(), d.uniform(0.35, 0.6), d.uniform(0.45, 0.7)),
        wall_stripe=0.0,
        ceiling=_hsv(d.uniform(0.05, 0.15), 0.1, d.uniform(0.5, 0.65)),
        stripes=stripes,
        look=_NIGHT_LOOK,
    )


def _sample_scene(
    rng: np.random.Generator, height: int, width: int, spec: _SceneStyle
) -> tuple[SceneDescription, _Style]:
    """Draw a random room, camera, primitives, windows and appearance from ``spec``'s ranges."""
    d = _Draws(rng)
    # Room: 4-8 m wide and deep, 2.5-3.5 m high, floor at z = 0, centred on the origin.
    size_x, size_y, size_z = d.uniform(4.0, 8.0), d.uniform(4.0, 8.0), d.uniform(2.5, 3.5)
    lo_x, hi_x, lo_y, hi_y = -size_x / 2, size_x / 2, -size_y / 2, size_y / 2

    # Camera: 0.5 m from the walls, at the style's height, looking roughly towards a
    # random point of the room (so it rarely stares at a wall from up close).
    m = 0.5
    cam_x, cam_y = d.uniform(lo_x + m, hi_x - m), d.uniform(lo_y + m, hi_y - m)
    cam_z = d.uniform(*spec.camera_height)
    for _ in range(20):
        tx, ty = d.uniform(lo_x + m, hi_x - m), d.uniform(lo_y + m, hi_y - m)
        if math.hypot(tx - cam_x, ty - cam_y) > 1.5:
            break
    yaw = math.atan2(ty - cam_y, tx - cam_x) + d.uniform(-0.3, 0.3)
    pitch = math.radians(d.uniform(*spec.pitch))
    hfov = math.radians(d.uniform(*spec.hfov))

    cp, sp, cy, sy = math.cos(pitch), math.sin(pitch), math.cos(yaw), math.sin(yaw)
    forward = (cp * cy, cp * sy, sp)
    right = (sy, -cy, 0.0)
    down = (  # forward x right
        forward[1] * right[2] - forward[2] * right[1],
        forward[2] * right[0] - forward[0] * right[2],
        forward[0] * right[1] - forward[1] * right[0],
    )
    camera_to_world = np.array(
        [
            [right[0], down[0], forward[0], cam_x],
            [right[1], down[1], forward[1], cam_y],
            [right[2], down[2], forward[2], cam_z],
            [0.0, 0.0, 0.0, 1.0],
        ]
    )
    f = (width / 2.0) / math.tan(hfov / 2.0)
    intrinsics = np.array([[f, 0.0, (width - 1) / 2.0], [0.0, f, (height - 1) / 2.0], [0, 0, 1]])

    # Primitives: mostly in front of the camera, never touching a wall or the camera.
    primitives: list[Primitive] = []
    stripes: list[int] = []
    for _ in range(d.integer(2, 7)):
        kind = spec.kinds[d.integer(0, len(spec.kinds))]
        obj_yaw = 0.0
        if kind == "sphere":
            r = d.uniform(0.15, 0.6)
            half = (r, r, r)
        elif kind == "box":
            half = (d.uniform(0.15, 0.6), d.uniform(0.15, 0.6), d.uniform(0.15, 0.6))
            obj_yaw = d.uniform(0.0, math.pi / 2)
        else:
            r = d.uniform(0.15, 0.6)
            half = (r, r, d.uniform(0.15, 0.6))
        foot = math.hypot(half[0], half[1]) if kind == "box" else half[0]
        x0, x1 = lo_x + foot + 0.05, hi_x - foot - 0.05
        y0, y1 = lo_y + foot + 0.05, hi_y - foot - 0.05
        for attempt in range(200):
            if attempt < 30 and d.random() < 0.8:
                angle = yaw + d.uniform(-0.45, 0.45) * hfov
                dist = d.uniform(1.2, 5.0)
                x, y = cam_x + dist * math.cos(angle), cam_y + dist * math.sin(angle)
            else:
                x, y = d.uniform(x0, x1), d.uniform(y0, y1)
            if x0 <= x <= x1 and y0 <= y <= y1 and math.hypot(x - cam_x, y - cam_y) > foot + 0.4:
                break
        else:  # pragma: no cover - the exclusion zones are far smaller than the room
            continue
        albedo = _hsv(d.random(), d.uniform(0.65, 1.0), d.uniform(0.6, 0.95))
        primitives.append(
            Primitive(kind, _KIND_CLASS[kind], (x, y, half[2]), half, obj_yaw, albedo)
        )
        stripes.append(d.integer(3, 6))

    # Windows on the walls, preferably the ones the camera looks at.
    windows: list[Window] = []
    norm = max(math.hypot(forward[0], forward[1]), 1e-9)
    outward = ((-1.0, 0.0), (1.0, 0.0), (0.0, -1.0), (0.0, 1.0))
    weights = [max((ox * forward[0] + oy * forward[1]) / norm, 0.0) + 0.15 for ox, oy in outward]
    cumulative = np.cumsum(weights) / sum(weights)
    room_min = (lo_x, lo_y, 0.0)
    room_max = (hi_x, hi_y, size_z)
    for _ in range(d.integer(0, 3)):
        wall = min(int(np.searchsorted(cumulative, d.random(), side="right")), 3)
        along = 1 if wall < 2 else 0  # horizontal axis in the wall plane
        fixed = 1 - along
        length = room_max[along] - room_min[along]
        w = min(d.uniform(0.8, 2.0), length - 0.6)
        c = d.uniform(room_min[along] + w / 2 + 0.3, room_max[along] - w / 2 - 0.3)
        z0 = d.uniform(0.7, 1.2)
        z1 = z0 + d.uniform(0.8, min(1.6, size_z - z0 - 0.2))
        plane = room_min[fixed] if wall % 2 == 0 else room_max[fixed]
        cmin, cmax = [0.0, 0.0, z0], [0.0, 0.0, z1]
        cmin[fixed] = cmax[fixed] = plane
        cmin[along], cmax[along] = c - w / 2, c + w / 2
        windows.append(Window(wall, tuple(cmin), tuple(cmax)))  # type: ignore[arg-type]

    light = np.array([d.uniform(lo_x + m, hi_x - m), d.uniform(lo_y + m, hi_y - m), size_z - 0.3])
    style = spec.palette(d, tuple(stripes))
    scene = SceneDescription(
        intrinsics=_readonly(intrinsics),
        camera_to_world=_readonly(camera_to_world),
        room_min=_readonly(np.array(room_min)),
        room_max=_readonly(np.array(room_max)),
        primitives=tuple(primitives),
        windows=tuple(windows),
        light_position=_readonly(light),
        height=height,
        width=width,
    )
    return scene, style


# --------------------------------------------------------------------------------------
# Ray casting
# --------------------------------------------------------------------------------------

_F = np.float32
_ONE = _F(1.0)
# Surface ids of the room in the `surface` map; primitive i has id _OBJ0 + i.
_S_FLOOR, _S_WALL, _S_CEILING, _S_WINDOW, _OBJ0 = FLOOR, WALL, CEILING, 3, 4


def _rect(
    prim: Primitive,
    rot_t: list[list[float]],
    origin: list[float],
    k: list[list[float]],
    height: int,
    width: int,
) -> tuple[slice, slice]:
    """Pixel rectangle that holds the primitive's image (the whole image if unsure).

    Projects the 8 corners of a box bounding the primitive (the box itself for boxes);
    ``rot_t`` is the world-to-camera rotation, ``origin`` the camera centre.
    """
    hx, hy, hz = prim.half_extents
    if prim.kind == "box":
        c, s = math.cos(prim.yaw), math.sin(prim.yaw)
        axes = ((c * hx, s * hx, 0.0), (-s * hy, c * hy, 0.0), (0.0, 0.0, hz))
    else:
        axes = ((hx, 0.0, 0.0), (0.0, hy, 0.0), (0.0, 0.0, hz))
    rel = [prim.centre[j] - origin[j] for j in range(3)]
    q0 = [sum(row[j] * rel[j] for j in range(3)) for row in rot_t]
    qa = [[sum(row[j] * ax[j] for j in range(3)) for row in rot_t] for ax in axes]
    us, vs = [], []
    for s1 in (-1.0, 1.0):
        for s2 in (-1.0, 1.0):
            for s3 in (-1.0, 1.0):
                x, y, z = (q0[i] + s1 * qa[0][i] + s2 * qa[1][i] + s3 * qa[2][i] for i in range(3))
                if z < 1e-2:  # a corner near or behind the camera: no finite bound
                    return slice(0, height), slice(0, width)
                us.append(x / z)
                vs.append(y / z)
    u0 = max(math.floor(k[0][0] * min(us) + k[0][2]) - 1, 0)
    u1 = min(math.ceil(k[0][0] * max(us) + k[0][2]) + 2, width)
    v0 = max(math.floor(k[1][1] * min(vs) + k[1][2]) - 1, 0)
    v1 = min(math.ceil(k[1][1] * max(vs) + k[1][2]) + 2, height)
    return slice(v0, max(v0, v1)), slice(u0, max(u0, u1))


_Hit = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def _hit_sphere(
    prim: Primitive, o: np.ndarray, dx: np.ndarray, dy: np.ndarray, dz: np.ndarray
) -> _Hit:
    """Ray parameter of the front hit (inf on a miss) and the world normal there.

    Quadrics are solved in float64 (``dx, dy, dz`` are float64): at silhouettes the root
    is ill-conditioned and float32 would lose ~1e-4 relative depth accuracy.
    """
    r = prim.radius
    ox, oy, oz = (float(v) for v in o - prim.centre)
    a = dx * dx + dy * dy + dz * dz
    b = ox * dx + oy * dy + oz * dz  # half of the usual b
    cc = ox * ox + oy * oy + oz * oz - r * r  # > 0: the camera is outside
    disc = b * b - a * cc
    hit = (disc >= 0) & (b < 0)  # with cc > 0, the front root is positive iff b < 0
    # Stable form of the near root, t = cc / (-b + sqrt(disc)): no cancellation.
    t = np.where(hit, cc / (np.sqrt(disc) - b), np.inf)
    nx, ny, nz = ox + t * dx, oy + t * dy, oz + t * dz
    inv = 1.0 / np.sqrt(nx * nx + ny * ny + nz * nz)  # ~1 / r, exactly unit
    return t.astype(_F), (nx * inv).astype(_F), (ny * inv).astype(_F), (nz * inv).astype(_F)


def _hit_box(
    prim: Primitive, o: np.ndarray, dx: np.ndarray, dy: np.ndarray, dz: np.ndarray
) -> _Hit:
    cs, sn = math.cos(prim.yaw), math.sin(prim.yaw)
    wx, wy, wz = (float(v) for v in o - prim.centre)
    # World -> box frame: rotate by -yaw about z.
    origin = (cs * wx + sn * wy, -sn * wx + cs * wy, wz)
    ldx = _F(cs) * dx + _F(sn) * dy
    ldy = _F(-sn) * dx + _F(cs) * dy
    tn, tf = [], []
    for ld, ol, h in zip((ldx, ldy, dz), origin, prim.half_extents, strict=True):
        inv = _F(1.0) / ld
        t1 = _F(-h - ol) * inv
        t2 = _F(h - ol) * inv
        tn.append(np.minimum(t1, t2))
        tf.append(np.maximum(t1, t2))
    tnear = np.maximum(np.maximum(tn[0], tn[1]), tn[2])
    tfar = np.minimum(np.minimum(tf[0], tf[1]), tf[2])
    t = np.where((tnear <= tfar) & (tnear > 0), tnear, _F(np.inf))
    # Normal: the slab entered last, pointing against the ray.
    on_x = tn[0] == tnear
    on_y = (tn[1] == tnear) & ~on_x
    on_z = ~(on_x | on_y)
    nlx = np.copysign(on_x.astype(_F), -ldx)
    nly = np.copysign(on_y.astype(_F), -ldy)
    nz = np.copysign(on_z.astype(_F), -dz)
    return t, _F(cs) * nlx - _F(sn) * nly, _F(sn) * nlx + _F(cs) * nly, nz


def _hit_cylinder(
    prim: Primitive, o: np.ndarray, dx: np.ndarray, dy: np.ndarray, dz: np.ndarray
) -> _Hit:
    """Vertical capped cylinder on the floor; float64 rays as in :func:`_hit_sphere`."""
    r = prim.radius
    top = 2.0 * prim.half_extents[2]  # the base is on the floor, z = 0
    ox, oy = float(o[0] - prim.centre[0]), float(o[1] - prim.centre[1])
    oz = float(o[2])
    a = dx * dx + dy * dy
    b = ox * dx + oy * dy
    cc = ox * ox + oy * oy - r * r  # > 0: the camera is outside
    disc = b * b - a * cc
    ts = cc / (np.sqrt(disc) - b)  # NaN where disc < 0
    zs = oz + ts * dz
    side = (disc >= 0) & (b < 0) & (zs >= 0) & (zs <= top)
    ts = np.where(side, ts, np.inf)
    if oz > top:  # the top cap is visible only from above
        tc = (top - oz) / dz
        px, py = ox + tc * dx, oy + tc * dy
        cap = (tc > 0) & (px * px + py * py <= r * r) & (tc < ts)
        t = np.where(cap, tc, ts)
    else:
        cap = np.zeros(ts.shape, dtype=bool)
        t = ts
    nx, ny = ox + t * dx, oy + t * dy
    inv = 1.0 / np.sqrt(nx * nx + ny * ny)  # ~1 / r, exactly unit
    nx = np.where(cap, 0.0, nx * inv).astype(_F)
    ny = np.where(cap, 0.0, ny * inv).astype(_F)
    return t.astype(_F), nx, ny, cap.astype(_F)


_HITS = {"sphere": _hit_sphere, "box": _hit_box, "cylinder": _hit_cylinder}
_NOISE: dict[tuple[int, int], np.ndarray] = {}
_NOISE_PAD = 61


def _noise(height: int, width: int) -> np.ndarray:
    """A fixed uniform noise tile (+-6 grey levels), larger than the image; cached."""
    tile = _NOISE.get((height, width))
    if tile is None:
        if len(_NOISE) > 8:
            _NOISE.clear()
        gen = np.random.default_rng(0x5EED)
        shape = (height + _NOISE_PAD, width + _NOISE_PAD, 3)
        tile = (gen.random(shape, dtype=_F) - _F(0.5)) * _F(12.0)
        _NOISE[(height, width)] = tile
    return tile


_SCENE_STYLES: dict[str, _SceneStyle] = {
    "day": _SceneStyle(
        stream=(), camera_height=(1.0, 1.8), pitch=(-25.0, 5.0), hfov=(55.0, 75.0),
        kinds=("sphere", "box", "cylinder"), palette=_day_palette,
    ),
    "night": _SceneStyle(
        stream=(1,), camera_height=(1.6, 2.3), pitch=(-40.0, -10.0), hfov=(70.0, 90.0),
        kinds=("box", "box", "cylinder", "cylinder", "sphere"), palette=_night_palette,
    ),
}


def render_scene(
    seed: int, index: int, height: int = 128, width: int = 128, style: Style = "day"
) -> RenderedScene:
    """Render synthetic indoor scene number ``index`` of stream ``seed``.

    Parameters
    ----------
    seed : int
        Non-negative stream seed.
    index : int
        Non-negative scene index in the stream.
    height, width : int
        Image size in pixels (any positive size; need not be square or a multiple of 32).
    style : str
        The distribution the scene is drawn from, one of :data:`STYLES` (see the module
        docstring): ``"day"`` (default) or ``"night"``.

    Returns
    -------
    RenderedScene
        Image and exact labels; see :class:`RenderedScene` for dtypes and conventions
        (z-depth in metres, camera-frame normals, ``valid`` False on windows).

    Notes
    -----
    Deterministic: all randomness comes from ``np.random.default_rng([seed, index])``
    (``[seed, index, 1]`` for ``"night"``), so the same arguments give bit-identical
    arrays, whatever was rendered before.

    """
    if height < 1 or width < 1:
        raise ValueError(f"image size must be positive, got height={height}, width={width}")
    spec = _SCENE_STYLES.get(style)
    if spec is None:
        raise ValueError(f"unknown style {style!r}; the styles are {', '.join(STYLES)}")
    rng = np.random.default_rng([seed, index, *spec.stream])
    scene, appearance = _sample_scene(rng, height, width, spec)
    # Misses are carried as t = inf; inf * 0 and x / 0 are expected and discarded.
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        return _render(scene, appearance, rng)


_Rect = tuple[slice, slice]


class _Rays(NamedTuple):
    """The camera's rays: origin, rotation, float64 ``K^-1 (u, v, 1)`` axes, world rays."""

    o: np.ndarray  # (3,) float64 camera centre in the world
    r64: np.ndarray  # (3, 3) float64 camera-to-world rotation
    r: np.ndarray  # (3, 3) float32 camera-to-world rotation
    xs64: np.ndarray  # (1, W) float64 camera-frame x of K^-1 (u, v, 1)
    ys64: np.ndarray  # (H, 1) float64 camera-frame y of K^-1 (u, v, 1)
    dx: np.ndarray  # (H, W) float32 world direction, camera z component 1
    dy: np.ndarray
    dz: np.ndarray


class _Surfaces(NamedTuple):
    """Nearest surface per pixel, updated in place as primitives and windows are added.

    ``surface`` holds surface ids: floor 0, wall 1, ceiling 2, window 3, primitive i
    ``4 + i``. ``on_x``, ``on_y``, ``pos_x``, ``pos_y`` record which room plane each ray
    leaves through (an x or y wall, on the max or min side); windows need them.
    """

    t: np.ndarray  # (H, W) float32 ray parameter = z-depth
    surface: np.ndarray  # (H, W) uint8 surface id
    nx: np.ndarray  # (H, W) float32 world normal
    ny: np.ndarray
    nz: np.ndarray
    on_x: np.ndarray  # (H, W) bool: the room exit is an x wall
    on_y: np.ndarray  # (H, W) bool: the room exit is a y wall
    pos_x: np.ndarray  # (H, W) bool: dx > 0
    pos_y: np.ndarray  # (H, W) bool: dy > 0


class _Points(NamedTuple):
    """World coordinates (float32) of each pixel's visible surface point."""

    px: np.ndarray
    py: np.ndarray
    pz: np.ndarray


def _camera_rays(scene: SceneDescription) -> _Rays:
    """Camera centre, rotation and the world directions of the rays ``K^-1 (u, v, 1)``.

    Their camera z is 1, so the ray parameter ``t`` of a hit is its z-depth. The
    per-axis float64 terms are kept for the quadric solves, which need float64 rays.
    """
    height, width = scene.height, scene.width
    k = scene.intrinsics
    r64 = scene.camera_to_world[:3, :3]
    r = r64.astype(_F)
    o = scene.camera_to_world[:3, 3]
    xs64 = ((np.arange(width) - k[0, 2]) / k[0, 0])[None, :]
    ys64 = ((np.arange(height) - k[1, 2]) / k[1, 1])[:, None]
    xs, ys = xs64.astype(_F), ys64.astype(_F)
    dx = r[0, 0] * xs + (r[0, 1] * ys + r[0, 2])
    dy = r[1, 0] * xs + (r[1, 1] * ys + r[1, 2])
    dz = r[2, 0] * xs + (r[2, 1] * ys + r[2, 2])
    return _Rays(o, r64, r, xs64, ys64, dx, dy, dz)


def _room_exit(scene: SceneDescription, rays: _Rays) -> _Surfaces:
    """Where each ray leaves the room: the nearest of its three exit planes.

    From inside a box a ray meets exactly one x, one y and one z plane ahead of it, so
    the room surface is the plane with the smallest exit parameter; its normal points
    against the ray. This is the background every primitive is compared against.
    """
    o, dx, dy, dz = rays.o, rays.dx, rays.dy, rays.dz
    lo, hi = scene.room_min, scene.room_max
    pos_x, pos_y, pos_z = dx > 0, dy > 0, dz > 0
    # The camera is strictly inside, so every exit parameter is positive; abs() turns
    # the -inf of a zero direction component (negative numerator / +0) into +inf.
    tx = np.abs((_F(lo[0] - o[0]) + _F(hi[0] - lo[0]) * pos_x) / dx)
    ty = np.abs((_F(lo[1] - o[1]) + _F(hi[1] - lo[1]) * pos_y) / dy)
    tz = np.abs((_F(lo[2] - o[2]) + _F(hi[2] - lo[2]) * pos_z) / dz)
    on_z = (tz <= tx) & (tz <= ty)
    on_x = (tx <= ty) & ~on_z
    on_y = ~(on_x | on_z)
    t = np.minimum(np.minimum(tx, ty), tz)
    # Floor 0, wall 1, ceiling 2 (without np.where, slow on full frames).
    surface = (~on_z).view(np.uint8) + (on_z & pos_z).view(np.uint8) * np.uint8(2)
    nx = np.copysign(on_x.astype(_F), -dx)
    ny = np.copysign(on_y.astype(_F), -dy)
    nz = np.copysign(on_z.astype(_F), -dz)
    return _Surfaces(t, surface, nx, ny, nz, on_x, on_y, pos_x, pos_y)


def _primitive_hit(prim: Primitive, rays: _Rays, rs: _Rect) -> _Hit:
    """Hit parameter and world normal of one primitive on the rays of rectangle ``rs``.

    Boxes use the float32 rays; spheres and cylinders rebuild their rays in float64
    from the per-axis terms, as their root solves are ill-conditioned at silhouettes.
    """
    o = rays.o
    if prim.kind == "box":
        return _hit_box(prim, o, rays.dx[rs], rays.dy[rs], rays.dz[rs])
    r64 = rays.r64
    x64, y64 = rays.xs64[:, rs[1]], rays.ys64[rs[0]]
    return _HITS[prim.kind](
        prim,
        o,
        r64[0, 0] * x64 + (r64[0, 1] * y64 + r64[0, 2]),
        r64[1, 0] * x64 + (r64[1, 1] * y64 + r64[1, 2]),
        r64[2, 0] * x64 + (r64[2, 1] * y64 + r64[2, 2]),
    )


def _hit_primitives(scene: SceneDescription, rays: _Rays, surf: _Surfaces) -> list[_Rect]:
    """Add the primitives to ``surf`` in place: where a hit is nearer, it wins.

    Each primitive is tested only inside its projected image rectangle (cheap to bound,
    and most primitives cover a small part of the image). Returns the rectangles, in
    primitive order, for the pattern step to reuse.
    """
    rot_t, origin = rays.r64.T.tolist(), rays.o.tolist()
    k_list = scene.intrinsics.tolist()
    rects: list[_Rect] = []
    for i, prim in enumerate(scene.primitives):
        rs = _rect(prim, rot_t, origin, k_list, scene.height, scene.width)
        rects.append(rs)
        if rs[0].stop <= rs[0].start or rs[1].stop <= rs[1].start:
            continue
        ti, nxi, nyi, nzi = _primitive_hit(prim, rays, rs)
        closer = ti < surf.t[rs]
        np.copyto(surf.t[rs], ti, where=closer)
        np.copyto(surf.nx[rs], nxi, where=closer)
        np.copyto(surf.ny[rs], nyi, where=closer)
        np.copyto(surf.nz[rs], nzi, where=closer)
        np.copyto(surf.surface[rs], np.uint8(_OBJ0 + i), where=closer)
    return rects


def _surface_points(rays: _Rays, t: np.ndarray) -> _Points:
    """World position ``o + t d`` of each pixel's surface, for windows and patterns."""
    o = rays.o
    ox, oy, oz = _F(o[0]), _F(o[1]), _F(o[2])
    return _Points(ox + t * rays.dx, oy + t * rays.dy, oz + t * rays.dz)


def _window_pixels(
    win: Window, surf: _Surfaces, on_wall: np.ndarray, pts: _Points
) -> tuple[np.ndarray, np.ndarray]:
    """Pixels of one window, and of the cross through its centre.

    A window pixel is a visible point of the window's own wall (right plane, right
    side) inside its rectangle. The cross (mullions) is appearance only and is not yet
    clipped to the window.
    """
    if win.wall < 2:
        along, ai = pts.py, 1
        side = surf.on_x & (surf.pos_x if win.wall == 1 else ~surf.pos_x)
    else:
        along, ai = pts.px, 0
        side = surf.on_y & (surf.pos_y if win.wall == 3 else ~surf.pos_y)
    pz = pts.pz
    a0, a1 = win.corner_min[ai], win.corner_max[ai]
    z0, z1 = win.corner_min[2], win.corner_max[2]
    inside = (
        on_wall & side & (along >= _F(a0)) & (along <= _F(a1)) & (pz >= _F(z0)) & (pz <= _F(z1))
    )
    cross = (np.abs(along - _F((a0 + a1) / 2)) < _F(0.03)) | (
        np.abs(pz - _F((z0 + z1) / 2)) < _F(0.03)
    )
    return inside, cross


def _windows_and_mullions(
    scene: SceneDescription, surf: _Surfaces, pts: _Points
) -> tuple[np.ndarray, np.ndarray] | None:
    """Relabel wall pixels inside a window rectangle as window (in ``surf``, in place).

    Windows are flat rectangles in the wall planes, so they are found on the wall hits
    rather than ray cast. Returns the window mask and the mullion (window cross) mask,
    or None for a scene without windows.
    """
    if not scene.windows:
        return None
    window = np.zeros((scene.height, scene.width), dtype=bool)
    on_wall = surf.surface == _S_WALL
    mullions = np.zeros((scene.height, scene.width), dtype=bool)
    for win in scene.windows:
        inside, cross = _window_pixels(win, surf, on_wall, pts)
        window |= inside
        mullions |= cross
    mullions &= window
    np.copyto(surf.surface, np.uint8(_S_WINDOW), where=window)
    return window, mullions


def _semantic_labels(scene: SceneDescription, surface: np.ndarray) -> np.ndarray:
    """Class id per pixel: surface ids mapped through a per-scene lookup table."""
    lut = np.array(
        [FLOOR, WALL, CEILING, WINDOW] + [p.class_id for p in scene.primitives], dtype=np.uint8
    )
    return np.take(lut, surface)


def _sphere_pattern(prim: Primitive, n: int, pts: _Points, nz: np.ndarray, rs: _Rect) -> np.ndarray:
    """Horizontal bands (latitude) on a sphere: ``n`` per radius, alternately darker."""
    cells = np.floor((pts.pz[rs] - _F(prim.centre[2])) * _F(n / prim.radius))
    return _ONE - _F(0.45) * (cells - _F(2.0) * np.floor(cells * _F(0.5)))


def _cylinder_pattern(
    prim: Primitive, n: int, pts: _Points, nz: np.ndarray, rs: _Rect
) -> np.ndarray:
    """``2 n`` vertical stripes (longitude) on a cylinder's side; a plain, bright cap.

    The sign of ``Im((x + iy)^n)`` alternates every ``pi / n`` of azimuth, which gives
    the stripes with products only (no arctan).
    """
    cx, cy, _ = prim.centre
    re, im = pts.px[rs] - _F(cx), pts.py[rs] - _F(cy)
    zr, zi = re, im
    for _ in range(n - 1):
        zr, zi = zr * re - zi * im, zr * im + zi * re
    f = _ONE - _F(0.45) * (zi < 0)
    return np.maximum(f, _F(1.1) * (nz[rs] > 0.5))


def _box_pattern(prim: Primitive, n: int, pts: _Points, nz: np.ndarray, rs: _Rect) -> np.ndarray:
    """Dark edges around every face of a box: points near at least two face borders."""
    cx, cy, cz = prim.centre
    cs, sn = _F(math.cos(prim.yaw)), _F(math.sin(prim.yaw))
    ax, ay = pts.px[rs] - _F(cx), pts.py[rs] - _F(cy)
    hx, hy, hz = prim.half_extents
    near = (
        (np.abs(cs * ax + sn * ay) > _F(0.8 * hx)).view(np.uint8)
        + (np.abs(cs * ay - sn * ax) > _F(0.8 * hy)).view(np.uint8)
        + (np.abs(pts.pz[rs] - _F(cz)) > _F(0.8 * hz)).view(np.uint8)
    )
    return _ONE - _F(0.65) * (near >= 2)


def _plain_pattern(prim: Primitive, n: int, pts: _Points, nz: np.ndarray, rs: _Rect) -> np.ndarray:
    """No texture: the albedo and the light only."""
    return np.ones(pts.pz[rs].shape, dtype=_F)


_Pattern = Callable[[Primitive, int, _Points, np.ndarray, _Rect], np.ndarray]

_DAY_LOOK = _Look(
    ambient=0.34, ambient_up=0.04, light=1.1, falloff=1.0 / 16.0,
    sky=0.82, sky_up=0.08, frame=0.4, glass=(0.55, 0.78, 1.0), tint=None,
    floor_planks=False, wainscot=0.0,
    patterns={"sphere": _sphere_pattern, "cylinder": _cylinder_pattern, "box": _box_pattern},
)
# One warm lamp in a dark room: little ambient, a light that is strong nearby and falls
# off fast (halved at 2 m instead of 4 m), night outside. The kinds' textures swapped.
_NIGHT_LOOK = _Look(
    ambient=0.1, ambient_up=0.02, light=2.4, falloff=1.0 / 4.0,
    sky=0.22, sky_up=0.04, frame=0.45, glass=(0.3, 0.38, 0.75), tint=(1.0, 0.8, 0.56),
    floor_planks=True, wainscot=0.9,
    patterns={"sphere": _cylinder_pattern, "cylinder": _sphere_pattern, "box": _plain_pattern},
)


def _surface_pattern(
    scene: SceneDescription,
    style: _Style,
    surf: _Surfaces,
    pts: _Points,
    rects: list[_Rect],
) -> np.ndarray:
    """Brightness factor per pixel from the surface's texture, in world coordinates.

    A checkerboard (or planks) on the floor, optional vertical stripes or a dark foot on
    the walls, and the style's pattern per primitive kind (computed inside its
    rectangle), so that the image carries texture and geometry cues, not flat colours.
    Appearance only; 1 elsewhere.
    """
    surface, px, py = surf.surface, pts.px, pts.py
    look = style.look
    inv_tile = _F(1.0 / style.floor_tile)
    cells = np.floor(px * inv_tile)
    if not look.floor_planks:
        cells = cells + np.floor(py * inv_tile)
    checker = cells - _F(2.0) * np.floor(cells * _F(0.5))  # parity, 0 or 1
    pattern = _ONE - _F(0.45) * checker * (surface == _S_FLOOR)
    if style.wall_stripe > 0:
        cells = np.floor((px + py) * _F(1.0 / style.wall_stripe))
        stripe = cells - _F(2.0) * np.floor(cells * _F(0.5))
        pattern -= _F(0.12) * stripe * (surface == _S_WALL)
    if look.wainscot > 0:
        pattern -= _F(0.35) * ((pts.pz < _F(look.wainscot)) & (surface == _S_WALL))
    for i, (prim, rs) in enumerate(zip(scene.primitives, rects, strict=True)):
        mine = surface[rs] == _OBJ0 + i
        f = look.patterns[prim.kind](prim, style.stripes[i], pts, surf.nz, rs)
        np.copyto(pattern[rs], f, where=mine)
    return pattern


def _shading(
    scene: SceneDescription,
    look: _Look,
    surf: _Surfaces,
    pts: _Points,
    pattern: np.ndarray,
    windows: tuple[np.ndarray, np.ndarray] | None,
) -> np.ndarray:
    """Grey level per pixel: Lambertian shading from one point light plus ambient.

    The light falls off with distance; the pattern multiplies it. Window glass shows
    the sky instead (brighter upwards) with a light frame at the mullions.
    """
    px, py, pz, nz = pts.px, pts.py, pts.pz, surf.nz
    light = scene.light_position
    lx, ly, lz = _F(light[0]) - px, _F(light[1]) - py, _F(light[2]) - pz
    d2 = lx * lx + ly * ly + lz * lz
    ndotl = np.maximum(surf.nx * lx + surf.ny * ly + nz * lz, _F(0)) / np.sqrt(d2)
    shade = _F(look.ambient) + _F(look.ambient_up) * nz + ndotl * (_F(look.light) / (_ONE + d2 * _F(look.falloff)))
    shade *= pattern
    if windows is not None:
        window, mullions = windows
        sky = _F(look.sky) + _F(look.sky_up) * (pz - _ONE) + _F(look.frame) * mullions
        np.copyto(shade, sky, where=window)
    return shade


def _colour_image(
    scene: SceneDescription,
    style: _Style,
    surface: np.ndarray,
    shade: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """uint8 RGB image: each surface's colour times its shade and the light's colour,
    plus a little noise.

    The noise is a window of a fixed cached tile at an offset drawn from ``rng``:
    cheaper than fresh noise per scene and still deterministic.
    """
    colours = np.array(
        [style.floor, style.wall, style.ceiling, style.look.glass]
        + [p.albedo for p in scene.primitives],
        dtype=_F,
    ) * _F(255.0)
    img = np.stack([np.take(colours[:, c], surface) * shade for c in range(3)], axis=-1)
    if style.look.tint is not None:
        img *= np.asarray(style.look.tint, dtype=_F)
    oy_, ox_ = int(rng.integers(0, _NOISE_PAD + 1)), int(rng.integers(0, _NOISE_PAD + 1))
    img += _noise(scene.height, scene.width)[oy_ : oy_ + scene.height, ox_ : ox_ + scene.width]
    np.clip(img, 0.0, 255.0, out=img)
    return (img + _F(0.5)).astype(np.uint8)


def _camera_labels(
    scene: SceneDescription, rays: _Rays, surf: _Surfaces, window: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Depth, normals and validity in the camera frame, as the labels define them.

    Normals rotate to the camera frame (``n_cam = R^T n_world``); ``t`` already is the
    z-depth. Glass is invisible to a depth sensor, so windows get zero depth and
    normals and ``valid`` False. Modifies ``surf.t`` in place (it becomes the depth).
    """
    r = rays.r
    nx, ny, nz, t = surf.nx, surf.ny, surf.nz, surf.t
    normal_planes = [r[0, j] * nx + r[1, j] * ny + r[2, j] * nz for j in range(3)]
    if window is not None:
        valid = ~window
        normal_planes = [n * valid for n in normal_planes]
        t *= valid
    else:
        valid = np.ones((scene.height, scene.width), dtype=bool)
    return t, np.stack(normal_planes, axis=-1), valid


def _render(scene: SceneDescription, style: _Style, rng: np.random.Generator) -> RenderedScene:
    """Ray cast ``scene``: one vectorised pass over all pixels per surface type.

    Per-pixel work is float32 (about 1e-7 relative error), except the sphere and
    cylinder root solves, which run in float64 inside each primitive's image rectangle
    (at silhouettes float32 would cost ~1e-4 relative depth). ``np.where`` and
    ``np.sign`` are avoided in the full-frame passes, where they are several times
    slower than arithmetic on booleans. Pixel noise is a fixed cached tile, shifted by
    an offset drawn from ``rng`` (cheaper than drawing fresh noise, still deterministic).
    """
    rays = _camera_rays(scene)
    surf = _room_exit(scene, rays)
    rects = _hit_primitives(scene, rays, surf)
    pts = _surface_points(rays, surf.t)
    windows = _windows_and_mullions(scene, surf, pts)
    semseg = _semantic_labels(scene, surf.surface)
    pattern = _surface_pattern(scene, style, surf, pts, rects)
    shade = _shading(scene, style.look, surf, pts, pattern, windows)
    image = _colour_image(scene, style, surf.surface, shade, rng)
    window = None if windows is None else windows[0]
    depth, normals, valid = _camera_labels(scene, rays, surf, window)
    return RenderedScene(
        image=image,
        semseg=semseg,
        depth=depth,
        normals=normals,
        valid=valid,
        intrinsics=scene.intrinsics.astype(_F),
        scene=scene,
    )


# --------------------------------------------------------------------------------------
# Torch data set
# --------------------------------------------------------------------------------------


class SyntheticScenes(Dataset):
    """Map-style data set of :func:`render_scene` samples, rendered on the fly.

    Parameters
    ----------
    split : str
        ``"train"``, ``"val"`` or ``"test"``: disjoint scene streams. Sample ``i`` of a
        split is ``render_scene(3 * seed + split_id, i, height, width, style)`` with
        ``split_id`` its position in :data:`SPLITS`, so no two (seed, split) pairs share
        a stream.
    length : int
        Number of samples.
    height, width : int
        Image size in pixels.
    seed : int
        Non-negative data set seed.
    style : str
        The distribution of the scenes, one of :data:`STYLES`: ``"day"`` (default) or
        ``"night"`` (see :mod:`pixcore.data._synthetic`). Another style is another
        distribution of the same classes and labels, with scene streams of its own.
    transform : callable, optional
        Applied last to each sample dict (e.g. an augmentation).

    Each sample holds ``"image"`` (:class:`Image` uint8 ``[3, H, W]``), ``"semseg"``
    (:class:`ClassMask` int64 ``[H, W]``), ``"depth"`` (:class:`ScalarField` float32
    ``[1, H, W]``, z-depth in metres), ``"normals"`` (:class:`UnitVectorField` float32
    ``[3, H, W]``, camera frame), ``"valid"`` (:class:`ValidityMask` bool ``[H, W]``,
    for depth and normals) and ``"intrinsics"`` (:class:`Intrinsics` float32 ``[3, 3]``).
    The semantic mask has no ignored pixels: windows are a class.

    """

    class_names: tuple[str, ...] = CLASS_NAMES
    ignore_index: int = 255
    target_kinds: ClassVar[dict[str, type[TargetKind]]] = {
        "image": Image,
        "semseg": ClassMask,
        "depth": ScalarField,
        "normals": UnitVectorField,
        "valid": ValidityMask,
        "intrinsics": Intrinsics,
    }

    def __init__(
        self,
        split: str = "train",
        length: int = 1000,
        height: int = 128,
        width: int = 128,
        seed: int = 0,
        style: Style = "day",
        transform: Callable[[dict], dict] | None = None,
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; valid splits are {', '.join(SPLITS)}")
        if style not in STYLES:
            raise ValueError(f"unknown style {style!r}; the styles are {', '.join(STYLES)}")
        if length < 0:
            raise ValueError(f"length must be >= 0, got {length}")
        if height < 1 or width < 1:
            raise ValueError(f"image size must be positive, got height={height}, width={width}")
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        self.split = split
        self.length = int(length)
        self.height = int(height)
        self.width = int(width)
        self.seed = int(seed)
        self.style: Style = style
        self.transform = transform
        self._stream = 3 * self.seed + SPLITS.index(split)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        i = operator.index(i)
        if not 0 <= i < self.length:
            raise IndexError(f"index {i} out of range for a data set of length {self.length}")
        s = render_scene(self._stream, i, self.height, self.width, self.style)
        sample: dict[str, torch.Tensor] = {
            "image": Image(torch.from_numpy(s.image).permute(2, 0, 1).contiguous()),
            "semseg": ClassMask(torch.from_numpy(s.semseg.astype(np.int64))),
            "depth": ScalarField(torch.from_numpy(s.depth)[None]),
            "normals": UnitVectorField(torch.from_numpy(s.normals).permute(2, 0, 1).contiguous()),
            "valid": ValidityMask(torch.from_numpy(s.valid)),
            "intrinsics": Intrinsics(torch.from_numpy(s.intrinsics)),
        }
        if self.transform is not None:
            sample = self.transform(sample)
        return sample

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(split={self.split!r}, length={self.length}, "
            f"height={self.height}, width={self.width}, seed={self.seed}, style={self.style!r})"
        )
