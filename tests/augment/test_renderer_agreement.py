"""Augmenting a rendered scene agrees with rendering the transformed scene.

The synthetic renderer gives exact labels for any camera, so a transform's result can be
compared with an independent ground truth:

* a horizontal flip equals rendering the mirrored world (x -> -x) with a mirrored camera;
* a quarter turn, or a small rotation, equals rendering with the camera rolled about its
  optical axis by the same angle (this pins the sign convention of the normals' rotation)
  and the intrinsics the transform returns;
* a crop or a zoom equals rendering with the intrinsics the transform returns (this pins
  the pixel-centre convention of the intrinsics update).
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from pixcore import augment as a
from pixcore.data._synthetic import (
    _SCENE_STYLES,
    WALL,
    Primitive,
    RenderedScene,
    SceneDescription,
    Window,
    _render,
    _sample_scene,
)
from pixcore.targets import ClassMask, Image, Intrinsics, ScalarField, UnitVectorField, ValidityMask
from torch import Tensor

SCENES = [(3, i) for i in range(6)]
H, W = 40, 56


def scene_and_style(seed: int, index: int, height: int = H, width: int = W) -> tuple[SceneDescription, object]:
    return _sample_scene(np.random.default_rng([seed, index]), height, width, _SCENE_STYLES["day"])


def render(scene: SceneDescription, style: object) -> RenderedScene:
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        return _render(scene, style, np.random.default_rng(0))  # type: ignore[arg-type]


def as_sample(s: RenderedScene) -> dict[str, Tensor]:
    return {
        "image": Image(torch.from_numpy(s.image).permute(2, 0, 1).contiguous()),
        "semseg": ClassMask(torch.from_numpy(s.semseg.astype(np.int64))),
        "depth": ScalarField(torch.from_numpy(s.depth)[None]),
        "normals": UnitVectorField(torch.from_numpy(s.normals).permute(2, 0, 1).contiguous()),
        "valid": ValidityMask(torch.from_numpy(s.valid)),
        "intrinsics": Intrinsics(torch.from_numpy(s.intrinsics).double()),
    }


def plain(x: Tensor) -> np.ndarray:
    return x.as_subclass(Tensor).numpy()


def with_camera(scene: SceneDescription, q: np.ndarray, k: np.ndarray, size: tuple[int, int]) -> SceneDescription:
    """The scene seen by a camera whose frame is ``q`` times the old one (``X' = q X``)."""
    c2w = scene.camera_to_world.copy()
    c2w[:3, :3] = scene.camera_to_world[:3, :3] @ q.T
    return replace(
        scene, camera_to_world=c2w, intrinsics=np.asarray(k, dtype=np.float64), height=size[0], width=size[1]
    )


def mirrored(scene: SceneDescription) -> SceneDescription:
    """The world mirrored in x (x -> -x), seen by the camera mirrored the same way."""
    m = np.diag([-1.0, 1.0, 1.0, 1.0])
    flip_x = np.diag([-1.0, 1.0, 1.0, 1.0])  # keeps the camera frame right-handed

    def mx(p: tuple[float, float, float]) -> tuple[float, float, float]:
        return (-p[0], p[1], p[2])

    primitives = tuple(
        Primitive(p.kind, p.class_id, mx(p.centre), p.half_extents, -p.yaw, p.albedo) for p in scene.primitives
    )
    windows = tuple(
        Window(
            {0: 1, 1: 0}.get(win.wall, win.wall),
            (-win.corner_max[0], win.corner_min[1], win.corner_min[2]),
            (-win.corner_min[0], win.corner_max[1], win.corner_max[2]),
        )
        for win in scene.windows
    )
    return replace(
        scene,
        camera_to_world=m @ scene.camera_to_world @ flip_x,
        room_min=np.array([-scene.room_max[0], scene.room_min[1], scene.room_min[2]]),
        room_max=np.array([-scene.room_min[0], scene.room_max[1], scene.room_max[2]]),
        primitives=primitives,
        windows=windows,
        light_position=np.array([-scene.light_position[0], *scene.light_position[1:]]),
    )


def agreement(out: dict[str, Tensor], truth: RenderedScene) -> dict[str, float]:
    """Fraction of equal classes, and depth / normal errors where the classes agree."""
    semseg = plain(out["semseg"])
    same = semseg == truth.semseg
    both = same & plain(out["valid"]) & truth.valid
    depth = plain(out["depth"])[0]
    normals = plain(out["normals"]).transpose(1, 2, 0)
    rel = np.abs(depth[both] - truth.depth[both]) / truth.depth[both]
    cos = np.clip((normals[both] * truth.normals[both]).sum(-1), -1.0, 1.0)
    angle = np.arccos(cos)
    return {
        "classes": float(same.mean()),
        "valid": float((plain(out["valid"]) == truth.valid).mean()),
        "depth_median": float(np.median(rel)),
        "depth_p95": float(np.quantile(rel, 0.95)),
        "angle_median": float(np.median(angle)),
        "angle_p90": float(np.quantile(angle, 0.90)),
    }


@pytest.mark.parametrize(("seed", "index"), SCENES)
def test_horizontal_flip_equals_the_mirrored_scene(seed: int, index: int) -> None:
    scene, style = scene_and_style(seed, index)
    out = a.HorizontalFlip(p=1.0)(as_sample(render(scene, style)))
    truth = render(mirrored(scene), style)
    stats = agreement(out, truth)
    assert stats["classes"] > 0.995 and stats["valid"] > 0.995, stats
    assert stats["depth_p95"] < 1e-4 and stats["angle_p90"] < 1e-3, stats
    np.testing.assert_allclose(plain(out["intrinsics"]), truth.intrinsics, atol=1e-9)


@pytest.mark.parametrize(("seed", "index"), SCENES)
@pytest.mark.parametrize("k", [1, 2, 3])
def test_quarter_turn_equals_the_rolled_camera(seed: int, index: int, k: int) -> None:
    scene, style = scene_and_style(seed, index)
    geometry = a.Rotate90((H, W), k=k)
    out = a.apply_geometry(geometry, as_sample(render(scene, style)))
    q = geometry.camera_map().numpy()
    truth = render(with_camera(scene, q, plain(out["intrinsics"]), geometry.out_size), style)
    stats = agreement(out, truth)
    assert stats["classes"] > 0.995 and stats["valid"] > 0.995, stats
    assert stats["depth_p95"] < 1e-4 and stats["angle_p90"] < 1e-3, stats


@pytest.mark.parametrize(("seed", "index"), SCENES[:4])
@pytest.mark.parametrize("degrees", [-25.0, 12.0, 40.0])
def test_rotation_equals_the_rolled_camera(seed: int, index: int, degrees: float) -> None:
    scene, style = scene_and_style(seed, index, 64, 64)
    out = a.Rotate((degrees, degrees))(as_sample(render(scene, style)))
    geometry = a.Warp.rotation((64, 64), degrees)
    q = geometry.camera_map().numpy()
    truth = render(with_camera(scene, q, plain(out["intrinsics"]), (64, 64)), style)
    inside = ~plain(out["valid"]) & truth.valid  # filled corners are invalid...
    filled = plain(out["semseg"]) == 255
    assert (plain(out["valid"])[filled] == 0).all() and inside.sum() >= filled.sum() * 0.5
    # ...elsewhere nearest neighbour reads a pixel within half a pixel of the exact ray.
    keep = ~filled
    sub = {k: v for k, v in out.items()}
    stats = agreement(sub, truth)
    classes = float((plain(out["semseg"])[keep] == truth.semseg[keep]).mean())
    assert classes > 0.93, stats
    assert stats["depth_median"] < 0.01 and stats["angle_median"] < 1e-3 and stats["angle_p90"] < 0.05, stats
    # The normals' in-plane rotation has the image's sign: the opposite sign is far off.
    wrong = a.Warp.rotation((64, 64), -degrees).camera_map()[:2, :2].numpy()
    right = q[:2, :2]
    walls = (plain(out["semseg"]) == WALL) & (truth.semseg == WALL) & plain(out["valid"]) & truth.valid
    if walls.sum() > 20:
        n = plain(out["normals"]).transpose(1, 2, 0)[walls]
        undone = n.copy()
        undone[:, :2] = n[:, :2] @ right @ wrong.T  # rotate back, then the wrong way
        truth_n = truth.normals[walls]
        assert np.median(np.abs(undone - truth_n).max(-1)) > np.median(np.abs(n - truth_n).max(-1)) + 0.05


@pytest.mark.parametrize(("seed", "index"), SCENES[:3])
def test_crop_equals_the_shifted_principal_point(seed: int, index: int) -> None:
    scene, style = scene_and_style(seed, index)
    geometry = a.Crop((H, W), top=7, left=11, height=25, width=30)
    out = a.apply_geometry(geometry, as_sample(render(scene, style)))
    truth = render(with_camera(scene, np.eye(3), plain(out["intrinsics"]), (25, 30)), style)
    stats = agreement(out, truth)
    assert stats["classes"] > 0.998 and stats["depth_p95"] < 1e-4 and stats["angle_p90"] < 1e-3, stats


@pytest.mark.parametrize(("seed", "index"), SCENES[:4])
@pytest.mark.parametrize("divide", [False, True])
def test_zoom_equals_the_scaled_intrinsics(seed: int, index: int, divide: bool) -> None:
    """Nearest-neighbour resampling reads the right rays; depth follows the convention."""
    scene, style = scene_and_style(seed, index, 64, 64)
    window, size = (9, 14, 30, 36), (60, 72)  # a 2x zoom of a window
    geometry = a.Warp.resize((64, 64), window, size, zoom_depth=divide)
    out = a.apply_geometry(geometry, as_sample(render(scene, style)))
    truth = render(with_camera(scene, np.eye(3), plain(out["intrinsics"]), size), style)
    zoom = geometry.zoom
    assert zoom == pytest.approx(2.0)
    if divide:
        out["depth"] = ScalarField(out["depth"].as_subclass(Tensor) * zoom)
    stats = agreement(out, truth)
    assert stats["classes"] > 0.95 and stats["depth_median"] < 0.01 and stats["angle_median"] < 1e-3, stats


@pytest.mark.parametrize(("seed", "index"), SCENES[:4])
@pytest.mark.parametrize(("window", "size", "step"), [((5, 8, 20, 24), (60, 72), 3), ((0, 1, 63, 54), (21, 18), 1)])
def test_odd_zooms_read_exact_rays(
    seed: int, index: int, window: tuple[int, int, int, int], size: tuple[int, int], step: int
) -> None:
    """Zooming by 3 or 1/3 maps source pixel centres onto output pixel centres.

    There nearest neighbour reads exactly the ray that the new intrinsics assign to the
    output pixel, so depth and classes must match the rendering exactly: half a pixel
    of error in the intrinsics' pixel-centre convention would show.
    """
    scene, style = scene_and_style(seed, index, 64, 64)
    geometry = a.Warp.resize((64, 64), window, size)
    out = a.apply_geometry(geometry, as_sample(render(scene, style)))
    truth = render(with_camera(scene, np.eye(3), plain(out["intrinsics"]), size), style)
    offset = step // 2  # output pixels 1, 4, 7, ... for a 3x zoom; all of them for 1/3
    pick = (slice(offset, None, step), slice(offset, None, step))
    same = plain(out["semseg"])[pick] == truth.semseg[pick]
    assert same.mean() > 0.995
    valid = same & truth.valid[pick]
    depth = plain(out["depth"])[0][pick][valid]
    np.testing.assert_allclose(depth, truth.depth[pick][valid], rtol=1e-4)


def test_pixel_centre_convention_of_the_intrinsics() -> None:
    """Explicit formulas: flip cx' = W - 1 - cx; resize cx' = (cx + 0.5) s - 0.5; crop shifts."""
    k = torch.tensor([[50.0, 0.0, 20.3], [0.0, 40.0, 10.7], [0.0, 0.0, 1.0]], dtype=torch.float64)
    sample = {"image": Image(torch.zeros(3, 24, 40, dtype=torch.uint8)), "k": Intrinsics(k)}
    flipped = a.HorizontalFlip(p=1.0)(sample)["k"]
    assert flipped[0, 2].item() == pytest.approx(39 - 20.3) and flipped[0, 0].item() == 50.0
    flipped = a.VerticalFlip(p=1.0)(sample)["k"]
    assert flipped[1, 2].item() == pytest.approx(23 - 10.7) and flipped[1, 1].item() == 40.0
    resized = a.Resize((12, 80))(sample)["k"]
    assert resized[0, 0].item() == pytest.approx(100.0) and resized[1, 1].item() == pytest.approx(20.0)
    assert resized[0, 2].item() == pytest.approx((20.3 + 0.5) * 2 - 0.5)
    assert resized[1, 2].item() == pytest.approx((10.7 + 0.5) * 0.5 - 0.5)
    cropped = a.CenterCrop((20, 30))(sample)["k"]
    assert cropped[0, 2].item() == pytest.approx(20.3 - 5) and cropped[1, 2].item() == pytest.approx(10.7 - 2)
    turned = a.apply_geometry(a.Rotate90((24, 40), k=1), sample)["k"]
    expected = torch.tensor([[40.0, 0.0, 10.7], [0.0, 50.0, 39 - 20.3], [0.0, 0.0, 1.0]], dtype=torch.float64)
    torch.testing.assert_close(turned.as_subclass(Tensor), expected)
    rolled = a.apply_geometry(a.Warp.rotation((24, 40), 30.0), {**sample, "k": Intrinsics(torch.tensor(
        [[50.0, 0.0, 19.5], [0.0, 50.0, 11.5], [0.0, 0.0, 1.0]], dtype=torch.float64))})["k"]
    # A centred camera with fx = fy keeps its intrinsics when it rolls about its axis.
    torch.testing.assert_close(rolled.as_subclass(Tensor)[:2], torch.tensor(
        [[50.0, 0.0, 19.5], [0.0, 50.0, 11.5]], dtype=torch.float64), atol=1e-9, rtol=0)
    assert math.isfinite(float(rolled.sum()))
