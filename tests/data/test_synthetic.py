"""Tests of the synthetic scene renderer and its data set.

Every geometric check re-derives the expected value from the scene description
(intrinsics, camera pose, room box, primitives, windows) with its own float64 geometry,
never from the renderer's intermediate values.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from pixcore._targets import (
    ClassMask,
    Image,
    Intrinsics,
    ScalarField,
    UnitVectorField,
    ValidityMask,
)
from pixcore.data._synthetic import (
    CLASS_NAMES,
    STYLES,
    Primitive,
    RenderedScene,
    SyntheticScenes,
    render_scene,
)

FLOOR, WALL, CEILING, SPHERE, BOX, CYLINDER, WINDOW = (
    CLASS_NAMES.index(n)
    for n in ("floor", "wall", "ceiling", "sphere", "box", "cylinder", "window")
)
SIZES = [(128, 128), (97, 130), (64, 48)]
# (seed, index) pairs reused by several tests; rendering is cached per test session.
# (100, 90) has a ray with an exactly zero x direction (once rendered as depth -inf).
SCENES = [(0, i) for i in range(12)] + [(7, i) for i in range(6)] + [(100, 90)]

_cache: dict[tuple[int, int, int, int], RenderedScene] = {}


def render(seed: int, index: int, height: int = 128, width: int = 128) -> RenderedScene:
    key = (seed, index, height, width)
    if key not in _cache:
        _cache[key] = render_scene(seed, index, height, width)
    return _cache[key]


# --------------------------------------------------------------------------------------
# Independent geometry
# --------------------------------------------------------------------------------------


def camera_rays(s: RenderedScene) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Return (K^-1 (u, v, 1) per pixel [H, W, 3], world directions, R, camera centre)."""
    h, w = s.semseg.shape
    v, u = np.mgrid[0:h, 0:w].astype(np.float64)
    pix = np.stack([u, v, np.ones_like(u)], axis=-1)
    cam = pix @ np.linalg.inv(s.scene.intrinsics).T
    rot = s.scene.camera_to_world[:3, :3]
    return cam, cam @ rot.T, rot, s.scene.camera_to_world[:3, 3]


def world_points(s: RenderedScene) -> np.ndarray:
    """Back-project depth with the intrinsics and pose: [H, W, 3] world points."""
    cam, _, rot, centre = camera_rays(s)
    return (cam * s.depth[..., None].astype(np.float64)) @ rot.T + centre


def world_normals(s: RenderedScene) -> np.ndarray:
    rot = s.scene.camera_to_world[:3, :3]
    return s.normals.astype(np.float64) @ rot.T


def box_local(p: np.ndarray, prim: Primitive) -> np.ndarray:
    """World points -> a box's own frame (undo its yaw)."""
    c, s_ = math.cos(prim.yaw), math.sin(prim.yaw)
    d = p - np.asarray(prim.centre)
    x, y = c * d[..., 0] + s_ * d[..., 1], -s_ * d[..., 0] + c * d[..., 1]
    return np.stack([x, y, d[..., 2]], -1)


def ray_sphere(
    origin: np.ndarray, direction: np.ndarray, centre: tuple[float, ...], radius: float
) -> float:
    """Smallest positive ray parameter of a hit, inf if none (float64)."""
    oc = origin - np.asarray(centre)
    a = direction @ direction
    b = oc @ direction
    c = oc @ oc - radius**2
    disc = b * b - a * c
    if disc < 0:
        return math.inf
    t = (-b - math.sqrt(disc)) / a
    return t if t > 0 else math.inf


# --------------------------------------------------------------------------------------
# Normals and validity
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("seed", "index"), SCENES)
def test_normals_unit_facing_camera_and_zero_where_invalid(seed: int, index: int) -> None:
    s = render(seed, index)
    cam, _, _, _ = camera_rays(s)
    v = s.valid
    norm = np.linalg.norm(s.normals.astype(np.float64), axis=-1)
    np.testing.assert_allclose(norm[v], 1.0, atol=1e-5)
    facing = np.einsum("hwc,hwc->hw", s.normals.astype(np.float64), cam)
    assert (facing[v] < 0).all(), "normals must face the camera"
    assert (s.normals[~v] == 0).all()
    assert (s.depth[~v] == 0).all()
    assert (s.depth[v] > 0).all()
    np.testing.assert_array_equal(v, s.semseg != WINDOW)


def test_window_pixels_lie_inside_a_window_rectangle() -> None:
    found = 0
    for seed, index in SCENES:
        s = render(seed, index)
        mask = s.semseg == WINDOW
        if not mask.any():
            continue
        assert s.scene.windows, "window pixels without a window"
        _, d, _, o = camera_rays(s)
        d = d[mask]
        inside = np.zeros(len(d), dtype=bool)
        for win in s.scene.windows:
            lo, hi = np.asarray(win.corner_min), np.asarray(win.corner_max)
            axis = 0 if win.wall < 2 else 1
            with np.errstate(divide="ignore", invalid="ignore"):
                t = (lo[axis] - o[axis]) / d[:, axis]
            p = o + t[:, None] * d
            tol = 1e-4
            inside |= (t > 0) & np.all((p >= lo - tol) & (p <= hi + tol), axis=1)
        assert inside.all()
        found += mask.sum()
    assert found > 0, "no window was seen in any test scene"


# --------------------------------------------------------------------------------------
# Room geometry
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("height", "width"), SIZES)
@pytest.mark.parametrize("index", range(6))
def test_floor_and_ceiling_depth_and_normals(index: int, height: int, width: int) -> None:
    s = render(3, index, height, width)
    _, d, rot, o = camera_rays(s)
    lo, hi = s.scene.room_min, s.scene.room_max
    up_cam = rot.T @ np.array([0.0, 0.0, 1.0])  # world up in the camera frame
    for cls, plane, normal in ((FLOOR, lo[2], up_cam), (CEILING, hi[2], -up_cam)):
        m = s.semseg == cls
        if not m.any():
            continue
        # Rays have camera z = 1, so the ray parameter is the z-depth.
        expected = (plane - o[2]) / d[m][:, 2]
        np.testing.assert_allclose(s.depth[m], expected, rtol=1e-4)
        np.testing.assert_allclose(s.normals[m], np.broadcast_to(normal, (m.sum(), 3)), atol=1e-5)
        # The hit is inside the room's footprint.
        p = o + expected[:, None] * d[m]
        assert (p[:, :2] >= lo[:2] - 1e-4).all() and (p[:, :2] <= hi[:2] + 1e-4).all()
    assert (s.semseg == FLOOR).any()


@pytest.mark.parametrize(("seed", "index"), SCENES[:8])
def test_wall_pixels_are_not_floor_rays(seed: int, index: int) -> None:
    """A ray labelled wall hits the floor plane (if at all) outside the room."""
    s = render(seed, index)
    _, d, _, o = camera_rays(s)
    lo, hi = s.scene.room_min, s.scene.room_max
    m = (s.semseg == WALL) & (d[..., 2] < 0)
    t = (lo[2] - o[2]) / d[m][:, 2]
    p = o[:2] + t[:, None] * d[m][:, :2]
    # Signed distance inside the footprint: negative outside. 1 mm of slack for seams.
    inside = np.minimum((p - lo[:2]).min(axis=1), (hi[:2] - p).min(axis=1))
    assert (inside < 1e-3).all()


@pytest.mark.parametrize(("seed", "index"), SCENES[:8])
def test_wall_points_lie_on_a_wall_plane(seed: int, index: int) -> None:
    s = render(seed, index)
    m = s.semseg == WALL
    p = world_points(s)[m]
    n = world_normals(s)[m]
    lo, hi = s.scene.room_min, s.scene.room_max
    planes = np.stack([p[:, 0] - lo[0], hi[0] - p[:, 0], p[:, 1] - lo[1], hi[1] - p[:, 1]], 1)
    tol = 1e-4 * np.linalg.norm(hi - lo)
    on_plane = np.abs(planes) < tol
    assert on_plane.any(axis=1).all()
    # Within the room's extent, and the normal is the inward normal of a wall the point
    # lies on (either one in a corner).
    assert (p >= lo - 1e-3).all() and (p <= hi + 1e-3).all()
    inward = np.array([[1.0, 0, 0], [-1.0, 0, 0], [0, 1.0, 0], [0, -1.0, 0]])
    matches = np.abs(n[:, None, :] - inward[None]).max(axis=2) < 1e-5
    assert (matches & on_plane).any(axis=1).all()


# --------------------------------------------------------------------------------------
# Primitives
# --------------------------------------------------------------------------------------


def test_sphere_pixels_lie_on_an_analytic_sphere() -> None:
    checked = 0
    for seed, index in SCENES:
        s = render(seed, index)
        m = s.semseg == SPHERE
        spheres = [q for q in s.scene.primitives if q.kind == "sphere"]
        if not m.any():
            continue
        p, n = world_points(s)[m], world_normals(s)[m]
        err = np.stack(
            [np.abs(np.linalg.norm(p - q.centre, axis=1) - q.radius) for q in spheres], 1
        )
        which = err.argmin(axis=1)
        assert (err.min(axis=1) < 1e-4 * (1 + s.depth[m])).all()
        # The normal is the radial direction of that sphere.
        centres = np.array([q.centre for q in spheres])[which]
        radii = np.array([q.radius for q in spheres])[which]
        np.testing.assert_allclose(n, (p - centres) / radii[:, None], atol=2e-4)
        checked += m.sum()
    assert checked > 1000


def test_unoccluded_sphere_centre_is_labelled_sphere() -> None:
    checked = 0
    for seed, index in SCENES:
        s = render(seed, index)
        k, c2w = s.scene.intrinsics, s.scene.camera_to_world
        rot, o = c2w[:3, :3], c2w[:3, 3]
        h, w = s.semseg.shape
        for q in s.scene.primitives:
            if q.kind != "sphere":
                continue
            pc = rot.T @ (np.asarray(q.centre) - o)
            if pc[2] <= q.radius:
                continue
            u, v = k[0, 0] * pc[0] / pc[2] + k[0, 2], k[1, 1] * pc[1] / pc[2] + k[1, 2]
            ui, vi = round(u), round(v)
            if not (0 <= ui < w and 0 <= vi < h):
                continue
            ray = rot @ np.linalg.inv(k) @ np.array([ui, vi, 1.0])
            t = ray_sphere(o, ray, q.centre, q.radius)
            # Skip if any other primitive's bounding sphere could be in front.
            occluded = False
            for other in s.scene.primitives:
                if other is q:
                    continue
                bound = math.hypot(other.footprint_radius, other.half_extents[2])
                if ray_sphere(o, ray, other.centre, bound) < t:
                    occluded = True
            if occluded:
                continue
            assert s.semseg[vi, ui] == SPHERE
            assert s.valid[vi, ui]
            np.testing.assert_allclose(s.depth[vi, ui], t, rtol=1e-4)
            checked += 1
    assert checked >= 3


def test_box_and_cylinder_pixels_lie_on_their_surfaces() -> None:
    boxes = cylinders = 0
    for seed, index in SCENES:
        s = render(seed, index)
        pts = world_points(s)
        nrm = world_normals(s)
        tol = 1e-4 * (1 + s.depth)
        m = s.semseg == BOX
        if m.any():
            p, n, t = pts[m], nrm[m], tol[m]
            ok = np.zeros(len(p), dtype=bool)
            for q in s.scene.primitives:
                if q.kind != "box":
                    continue
                local = box_local(p, q)
                excess = np.abs(local) - np.asarray(q.half_extents)
                on = np.abs(excess.max(axis=1)) < t  # on the boundary of the box
                # The normal is the face normal: local axis of the largest excess.
                face = excess.argmax(axis=1)
                expected = np.zeros_like(local)
                expected[np.arange(len(p)), face] = np.sign(local[np.arange(len(p)), face])
                local_n = box_local(n + np.asarray(q.centre), q)
                on &= np.abs(local_n - expected).max(axis=1) < 1e-4
                ok |= on
            assert ok.all()
            boxes += m.sum()
        m = s.semseg == CYLINDER
        if m.any():
            p, n, t = pts[m], nrm[m], tol[m]
            ok = np.zeros(len(p), dtype=bool)
            for q in s.scene.primitives:
                if q.kind != "cylinder":
                    continue
                rad = np.hypot(p[:, 0] - q.centre[0], p[:, 1] - q.centre[1])
                z = p[:, 2]
                side = (np.abs(rad - q.radius) < t) & (z > -t) & (z < q.height + t)
                side &= np.abs(n[:, 2]) < 1e-4
                cap = (np.abs(z - q.height) < t) & (rad < q.radius + t)
                cap &= np.abs(n[:, 2] - 1) < 1e-5
                ok |= side | cap
            assert ok.all()
            cylinders += m.sum()
    assert boxes > 1000 and cylinders > 1000


def reference_labels(s: RenderedScene) -> tuple[np.ndarray, np.ndarray]:
    """Class map and z-depth re-derived from the scene description (float64, naive)."""
    _, d, _, o = camera_rays(s)
    h, w = s.semseg.shape
    d = d.reshape(-1, 3)
    lo, hi = s.scene.room_min, s.scene.room_max
    with np.errstate(divide="ignore", invalid="ignore"):
        t_axes = np.where(d > 0, (hi - o) / d, (lo - o) / d)
        axis = t_axes.argmin(axis=1)
        best = t_axes.min(axis=1)
        cls = np.where(axis == 2, np.where(d[:, 2] > 0, CEILING, FLOOR), WALL)
        p = o + best[:, None] * d
        for win in s.scene.windows:
            a = 0 if win.wall < 2 else 1
            side = d[:, a] > 0 if win.wall % 2 else d[:, a] < 0
            wmin, wmax = np.asarray(win.corner_min), np.asarray(win.corner_max)
            inside = np.all((p >= wmin - 1e-9) & (p <= wmax + 1e-9), axis=1)
            cls = np.where((axis == a) & side & inside, WINDOW, cls)
        for q in s.scene.primitives:
            c = np.asarray(q.centre)
            if q.kind == "sphere":
                oc = o - c
                a2, b, cc = (d * d).sum(1), d @ oc, oc @ oc - q.radius**2
                disc = b * b - a2 * cc
                t = np.where(disc >= 0, (-b - np.sqrt(disc)) / a2, np.inf)
            elif q.kind == "box":
                lo_l = box_local(o[None], q)[0]
                dl = box_local(d + c, q)
                ext = np.asarray(q.half_extents)
                t1, t2 = (-ext - lo_l) / dl, (ext - lo_l) / dl
                tn, tf = np.minimum(t1, t2).max(1), np.maximum(t1, t2).min(1)
                t = np.where(tn <= tf, tn, np.inf)
            else:
                oc = o[:2] - c[:2]
                a2, b = (d[:, :2] ** 2).sum(1), d[:, :2] @ oc
                disc = b * b - a2 * (oc @ oc - q.radius**2)
                t = (-b - np.sqrt(disc)) / a2
                z = o[2] + t * d[:, 2]
                t = np.where((disc >= 0) & (z >= 0) & (z <= q.height), t, np.inf)
                tc = (q.height - o[2]) / d[:, 2]
                pc = o[:2] + tc[:, None] * d[:, :2]
                on_cap = (np.hypot(*(pc - c[:2]).T) <= q.radius) & (tc > 0)
                t = np.minimum(t, np.where(on_cap, tc, np.inf))
            t = np.where(t > 0, t, np.inf)
            cls = np.where(t < best, q.class_id, cls)
            best = np.minimum(t, best)
    return cls.reshape(h, w), best.reshape(h, w)


@pytest.mark.parametrize(("height", "width"), [(128, 128), (97, 130)])
@pytest.mark.parametrize("index", range(8))
def test_labels_match_a_naive_reference_renderer(index: int, height: int, width: int) -> None:
    """Every pixel's class and depth agree with a naive float64 ray caster, except at
    silhouette edges where a pixel centre grazes two surfaces."""
    s = render(4, index, height, width)
    cls, depth = reference_labels(s)
    padded = np.pad(cls, 1, mode="edge")
    neighbours = [
        padded[1 + dv : 1 + dv + height, 1 + du : 1 + du + width]
        for dv in (-1, 0, 1)
        for du in (-1, 0, 1)
    ]
    edge = np.any([n != cls for n in neighbours], axis=0)
    wrong = s.semseg != cls
    assert not (wrong & ~edge).any(), f"{(wrong & ~edge).sum()} interior pixels mislabelled"
    assert wrong.mean() < 0.005
    ok = s.valid & ~wrong
    np.testing.assert_allclose(s.depth[ok], depth[ok], rtol=1e-4)


# --------------------------------------------------------------------------------------
# Determinism, sizes, content
# --------------------------------------------------------------------------------------


def _assert_same(a: RenderedScene, b: RenderedScene) -> None:
    for name in ("image", "semseg", "depth", "normals", "valid", "intrinsics"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and np.array_equal(x, y), name
    np.testing.assert_array_equal(a.scene.camera_to_world, b.scene.camera_to_world)
    assert a.scene.primitives == b.scene.primitives
    assert a.scene.windows == b.scene.windows


def test_deterministic_and_order_independent() -> None:
    first = render_scene(11, 4)
    for i in (0, 9, 3):
        render_scene(11, i)
    render_scene(5, 4)
    _assert_same(first, render_scene(11, 4))
    other = render_scene(11, 5)
    assert not np.array_equal(first.image, other.image)
    assert not np.array_equal(first.image, render_scene(12, 4).image)


@pytest.mark.parametrize(("height", "width"), [(97, 130), (33, 31), (1, 1), (130, 97)])
def test_odd_sizes(height: int, width: int) -> None:
    s = render_scene(2, 1, height, width)
    assert s.image.shape == (height, width, 3) and s.image.dtype == np.uint8
    assert s.semseg.shape == (height, width) and s.semseg.dtype == np.uint8
    assert s.depth.shape == (height, width) and s.depth.dtype == np.float32
    assert s.normals.shape == (height, width, 3) and s.normals.dtype == np.float32
    assert s.valid.shape == (height, width) and s.valid.dtype == np.bool_
    assert s.intrinsics.shape == (3, 3) and s.intrinsics.dtype == np.float32
    k = s.scene.intrinsics
    assert k[0, 2] == (width - 1) / 2 and k[1, 2] == (height - 1) / 2 and k[0, 0] == k[1, 1]
    np.testing.assert_array_equal(s.intrinsics, k.astype(np.float32))
    # The camera is the same whatever the size: the horizontal field of view is kept.
    ref = render_scene(2, 1)
    np.testing.assert_array_equal(s.scene.camera_to_world, ref.scene.camera_to_world)


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    index=st.integers(0, 2**40),
    height=st.integers(8, 90),
    width=st.integers(8, 90),
)
def test_random_scenes_match_the_reference(seed: int, index: int, height: int, width: int) -> None:
    s = render_scene(seed, index, height, width)
    cls, depth = reference_labels(s)
    assert (s.semseg != cls).mean() < 0.02  # only silhouette pixels may differ
    ok = s.valid & (s.semseg == cls)
    np.testing.assert_allclose(s.depth[ok], depth[ok], rtol=1e-4)
    norm = np.linalg.norm(s.normals[s.valid].astype(np.float64), axis=-1)
    np.testing.assert_allclose(norm, 1.0, atol=1e-5)
    np.testing.assert_array_equal(s.valid, s.semseg != WINDOW)
    assert 2 <= len(s.scene.primitives) <= 6 and len(s.scene.windows) <= 2


def test_bad_size_raises() -> None:
    with pytest.raises(ValueError, match="positive"):
        render_scene(0, 0, 0, 10)


def test_scenes_are_not_trivial() -> None:
    seen: set[int] = set()
    for seed, index in SCENES[:10]:
        s = render(seed, index)
        assert 2 <= len(s.scene.primitives) <= 6
        assert s.semseg.max() < len(CLASS_NAMES)
        assert s.image.astype(np.float64).std() > 15
        assert len(np.unique(s.semseg)) >= 3
        seen |= set(np.unique(s.semseg).tolist())
    assert seen == set(range(len(CLASS_NAMES)))


def test_camera_pose_is_a_rotation_with_zero_roll() -> None:
    for seed, index in SCENES[:6]:
        s = render(seed, index)
        c2w = s.scene.camera_to_world
        rot = c2w[:3, :3]
        np.testing.assert_allclose(rot.T @ rot, np.eye(3), atol=1e-12)
        assert np.linalg.det(rot) == pytest.approx(1.0)
        np.testing.assert_array_equal(c2w[3], [0, 0, 0, 1])
        assert abs(rot[2, 0]) < 1e-12  # camera x axis is horizontal: no roll
        assert s.scene.room_min[2] == 0 and (c2w[:3, 3] > s.scene.room_min).all()
        assert (c2w[:3, 3] < s.scene.room_max).all()


# --------------------------------------------------------------------------------------
# Data set
# --------------------------------------------------------------------------------------


def test_dataset_sample_kinds_dtypes_shapes() -> None:
    ds = SyntheticScenes("val", length=3, height=40, width=56, seed=1)
    assert len(ds) == 3
    assert ds.class_names == CLASS_NAMES and ds.ignore_index == 255
    sample = ds[2]
    expected = {
        "image": (Image, torch.uint8, (3, 40, 56)),
        "semseg": (ClassMask, torch.int64, (40, 56)),
        "depth": (ScalarField, torch.float32, (1, 40, 56)),
        "normals": (UnitVectorField, torch.float32, (3, 40, 56)),
        "valid": (ValidityMask, torch.bool, (40, 56)),
        "intrinsics": (Intrinsics, torch.float32, (3, 3)),
    }
    assert set(sample) == set(expected) == set(ds.target_kinds)
    for key, (kind, dtype, shape) in expected.items():
        assert type(sample[key]) is kind and ds.target_kinds[key] is kind, key
        assert sample[key].dtype == dtype and tuple(sample[key].shape) == shape, key
    # Same content as the renderer, in channels-first layout.
    s = render_scene(3 * 1 + 1, 2, 40, 56)
    np.testing.assert_array_equal(sample["image"].permute(1, 2, 0).numpy(), s.image)
    np.testing.assert_array_equal(sample["normals"].permute(1, 2, 0).numpy(), s.normals)
    np.testing.assert_array_equal(sample["depth"][0].numpy(), s.depth)


def test_dataset_splits_differ_and_are_deterministic() -> None:
    images = {
        split: SyntheticScenes(split, length=2, height=32, width=32)[0]["image"]
        for split in ("train", "val", "test")
    }
    assert not torch.equal(images["train"], images["val"])
    assert not torch.equal(images["train"], images["test"])
    assert not torch.equal(images["val"], images["test"])
    again = SyntheticScenes("train", length=2, height=32, width=32)[0]["image"]
    assert torch.equal(images["train"], again)
    other_seed = SyntheticScenes("train", length=2, height=32, width=32, seed=1)[0]["image"]
    assert not torch.equal(images["train"], other_seed)


def test_dataset_errors() -> None:
    with pytest.raises(ValueError, match=r"'bogus'.*train.*val.*test"):
        SyntheticScenes("bogus")
    ds = SyntheticScenes(length=2, height=16, width=16)
    for bad in (-1, 2, 100):
        with pytest.raises(IndexError):
            ds[bad]
    ds[np.int64(1)]  # numpy integers are indices too


def test_dataset_transform_is_applied_last() -> None:
    seen: list[set[str]] = []

    def transform(sample: dict) -> dict:
        seen.append(set(sample))
        return {**sample, "extra": torch.zeros(1)}

    ds = SyntheticScenes(length=1, height=16, width=16, transform=transform)
    out = ds[0]
    assert "extra" in out and seen == [set(SyntheticScenes.target_kinds)]


def test_dataset_collates_with_default_collate() -> None:
    ds = SyntheticScenes(length=4, height=24, width=20)
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    assert batch["image"].shape == (4, 3, 24, 20)
    assert batch["valid"].dtype == torch.bool


# --------------------------------------------------------------------------------------
# Styles
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("index", range(4))
def test_night_labels_match_the_naive_reference_renderer(index: int) -> None:
    """Night scenes are other draws of the same geometry: their labels are exact too."""
    s = render_scene(4, index, 97, 130, style="night")
    cls, depth = reference_labels(s)
    assert (s.semseg != cls).mean() < 0.005  # silhouette pixels only
    ok = s.valid & (s.semseg == cls)
    np.testing.assert_allclose(s.depth[ok], depth[ok], rtol=1e-4)
    np.testing.assert_array_equal(s.valid, s.semseg != WINDOW)


def _camera(s: RenderedScene) -> tuple[float, float, float]:
    """Camera height (m), pitch and horizontal field of view (degrees), from the pose and K."""
    forward = s.scene.camera_to_world[:3, 2]  # the camera's z axis in the world (z up)
    hfov = 2 * math.atan(s.semseg.shape[1] / 2 / s.scene.intrinsics[0, 0])
    return s.scene.camera_to_world[2, 3], math.degrees(math.asin(forward[2])), math.degrees(hfov)


def test_night_is_another_distribution_of_cameras_objects_and_light() -> None:
    scenes = {style: [render_scene(2, i, 32, 32, style=style) for i in range(40)] for style in STYLES}
    assert STYLES == ("day", "night")
    for style, (height, pitch, hfov) in {"day": ((1.0, 1.8), (-25, 5), (55, 75)),
                                         "night": ((1.6, 2.3), (-40, -10), (70, 90))}.items():
        cameras = np.array([_camera(s) for s in scenes[style]])
        assert (cameras[:, 0] >= height[0]).all() and (cameras[:, 0] <= height[1]).all(), style
        assert (cameras[:, 1] >= pitch[0] - 1e-9).all() and (cameras[:, 1] <= pitch[1] + 1e-9).all(), style
        assert (cameras[:, 2] >= hfov[0] - 1e-9).all() and (cameras[:, 2] <= hfov[1] + 1e-9).all(), style
    # Spheres are one kind in three by day, one in five by night (40 rooms, ~160 objects).
    kinds = {style: [p.kind for s in scenes[style] for p in s.scene.primitives] for style in STYLES}
    assert kinds["day"].count("sphere") / len(kinds["day"]) > 0.25
    assert kinds["night"].count("sphere") / len(kinds["night"]) < 0.25
    # Darker rooms, and dark windows where the day has a bright sky.
    brightness = {style: np.mean([s.image.mean() for s in scenes[style]]) for style in STYLES}
    assert brightness["night"] < 0.6 * brightness["day"]
    for style, lo, hi in (("day", 140, 255), ("night", 0, 50)):
        glass = np.concatenate([s.image[s.semseg == WINDOW].mean(axis=1) for s in scenes[style]])
        assert glass.size > 20 and lo < np.median(glass) < hi, style
    assert all(s.image.astype(np.float64).std() > 5 for s in scenes["night"])  # not black frames


def test_styles_are_deterministic_with_streams_of_their_own() -> None:
    night = render_scene(11, 4, 40, 48, style="night")
    for i in (0, 9):
        render_scene(11, i, 40, 48, style="night")
        render_scene(11, i, 40, 48)
    _assert_same(night, render_scene(11, 4, 40, 48, style="night"))
    _assert_same(render_scene(11, 4, 40, 48), render_scene(11, 4, 40, 48, style="day"))  # the default
    day = render_scene(11, 4, 40, 48)
    # Another stream, not a repainted day scene: the room and the camera differ too.
    assert not np.array_equal(night.scene.room_max, day.scene.room_max)
    assert not np.array_equal(night.scene.camera_to_world[:2, 3], day.scene.camera_to_world[:2, 3])
    with pytest.raises(ValueError, match=r"unknown style 'dusk'; the styles are day, night"):
        render_scene(0, 0, style="dusk")  # type: ignore[arg-type]


def test_dataset_style() -> None:
    ds = SyntheticScenes("val", length=2, height=24, width=20, seed=1, style="night")
    s = render_scene(3 * 1 + 1, 1, 24, 20, style="night")
    np.testing.assert_array_equal(ds[1]["image"].permute(1, 2, 0).numpy(), s.image)
    np.testing.assert_array_equal(ds[1]["semseg"].numpy(), s.semseg)
    assert "style='night'" in repr(ds)
    with pytest.raises(ValueError, match=r"unknown style 'Night'; the styles are day, night"):
        SyntheticScenes(style="Night")  # type: ignore[arg-type]
