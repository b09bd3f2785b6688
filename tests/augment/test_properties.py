"""The property suite (pixcore.testing) on every built-in transform, compositions and a new kind."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from pixcore import augment as a
from pixcore.targets import TargetKind
from pixcore.testing._augment_checks import (
    builtin_transforms,
    check_augmentation,
    check_target_kind,
    sample_strategy,
)
from torch import Tensor

GEOMETRIC = [
    "hflip", "vflip", "rotate90", "rotate", "random_resized_crop", "random_scale",
    "random_crop", "center_crop", "pad_if_needed", "resize",
]
PHOTOMETRIC = ["color_jitter", "random_gamma", "gaussian_blur", "gaussian_noise"]


@pytest.mark.parametrize("name", GEOMETRIC + PHOTOMETRIC)
def test_builtin_transform_properties(name: str) -> None:
    """Every property of check_augmentation_once, with random parameters too."""
    check_augmentation(builtin_transforms([name]))


def test_normalize_properties() -> None:
    check_augmentation(a.Normalize())


def test_zoom_divides_depth_when_asked() -> None:
    check_augmentation(a.RandomResizedCrop((9, 7), scale=(0.1, 1.0), divide_depth_by_zoom=True))
    check_augmentation(a.RandomScale((0.3, 3.0), divide_depth_by_zoom=True))


def test_compositions() -> None:
    pipeline = a.Compose([
        a.RandomScale((0.5, 1.5)), a.RandomCrop(10), a.HorizontalFlip(), a.VerticalFlip(),
        a.RandomRotate90(), a.Rotate(45.0), a.ColorJitter(hue=0.1),
    ])
    check_augmentation(pipeline)
    # A zoom right before a horizontal flip: Compose runs the two as one mirrored warp.
    check_augmentation(a.Compose([a.RandomResizedCrop((9, 7), scale=(0.1, 1.0)), a.HorizontalFlip()]))
    check_augmentation(a.Compose([a.RandomScale((0.4, 2.5)), a.HorizontalFlip(), a.CenterCrop(6)]))
    check_augmentation(a.OneOf([a.Rotate(90.0), a.RandomResizedCrop(5), a.PadIfNeeded(3, 30)]))


@given(case=sample_strategy(), axis=st.sampled_from(["h", "v"]))
def test_flip_twice_is_identity(case: tuple[dict[str, Tensor], int], axis: str) -> None:
    sample, _ = case
    flip = a.HorizontalFlip(p=1.0) if axis == "h" else a.VerticalFlip(p=1.0)
    twice = flip(flip(sample))
    for key, value in sample.items():
        assert type(twice[key]) is type(value)
        if key == "intrinsics":  # cx'' = (W - 1) - ((W - 1) - cx): one rounding each way
            torch.testing.assert_close(twice[key].as_subclass(Tensor), value.as_subclass(Tensor))
        else:
            assert torch.equal(twice[key].as_subclass(Tensor), value.as_subclass(Tensor)), key


@given(case=sample_strategy())
def test_four_quarter_turns_are_identity(case: tuple[dict[str, Tensor], int]) -> None:
    sample, _ = case
    out = sample
    for _ in range(4):
        out = a.apply_geometry(a.Rotate90(tuple(out["image"].shape[-2:]), k=1), out)
    for key, value in sample.items():
        assert torch.allclose(out[key].as_subclass(Tensor).double(), value.as_subclass(Tensor).double(), atol=1e-5), key


@given(case=sample_strategy(min_side=2), degrees=st.sampled_from([90.0, 180.0, 270.0, -90.0]))
def test_rotate_by_quarter_turns_equals_rotate90(case: tuple[dict[str, Tensor], int], degrees: float) -> None:
    """Both use the same angle convention (counter-clockwise as displayed)."""
    sample, _ = case
    h, w = sample["image"].shape[-2:]
    if degrees % 180 and h != w:  # a quarter turn of a non-square image changes its size
        side = min(h, w)
        sample = a.CenterCrop(side)(sample)
    size = tuple(sample["image"].shape[-2:])
    k = int(degrees // 90) % 4
    rotated = a.apply_geometry(a.Warp.rotation(size, degrees, interpolation="nearest"), sample)
    quarter = a.apply_geometry(a.Rotate90(size, k=k), sample)
    for key in ("image", "mask", "depth", "valid"):
        assert torch.equal(rotated[key].as_subclass(Tensor), quarter[key].as_subclass(Tensor)), key
    torch.testing.assert_close(
        rotated["normals"].as_subclass(Tensor), quarter["normals"].as_subclass(Tensor), atol=1e-6, rtol=0
    )
    torch.testing.assert_close(
        rotated["intrinsics"].as_subclass(Tensor), quarter["intrinsics"].as_subclass(Tensor), atol=1e-4, rtol=1e-6
    )


@pytest.mark.parametrize("name", PHOTOMETRIC + ["normalize"])
def test_photometric_leaves_targets_bit_identical(name: str, full_sample: object) -> None:
    import pixcore

    transform = pixcore.PluginManager(autoload=False).registry("augmentations").create(
        name, {} if name == "normalize" else {"p": 1.0}
    )

    @given(case=sample_strategy())
    def run(case: tuple[dict[str, Tensor], int]) -> None:
        sample, seed = case
        out = transform(sample, torch.Generator().manual_seed(seed))
        for key, value in sample.items():
            if key != "image":
                assert out[key] is value, key
        assert out["image"].shape == sample["image"].shape

    run()


def test_check_target_kind_on_a_third_party_kind(edge_rules: type[TargetKind]) -> None:
    def make(h: int, w: int, g: torch.Generator) -> TargetKind:
        return edge_rules(torch.rand(1, h, w, generator=g) > 0.7)

    check_target_kind(edge_rules, make)


def test_check_target_kind_with_a_vector_relation() -> None:
    """A flow-like kind whose vectors move with the image: a custom relation checks it."""

    class Displacement(TargetKind):
        kind = "displacement"

    def flip(x: Tensor, g: a.Geometry) -> Tensor:
        assert isinstance(g, a.Flip)
        out = x.flip(g.dim).clone()
        out[..., 0 if g.axis == "horizontal" else 1, :, :] *= -1
        return out

    rules = {
        "flip": flip,
        "rotate90": lambda x, g: torch.einsum(
            "ij,jhw->ihw", g.camera_map()[:2, :2].to(x.dtype), torch.rot90(x, g.k, (-2, -1))
        ),
        "crop": lambda x, g: g.crop(x, 0.0),
        "warp": lambda x, g: torch.einsum("ij,jhw->ihw", g.pixel_map()[:2, :2].to(x.dtype), g.nearest(x, 0.0)),
    }
    for op, rule in rules.items():
        a.register_rule(op, Displacement, rule)

    def relation(before: Tensor, after: Tensor, source: Tensor) -> None:
        # Flips, quarter turns and crops move vectors rigidly: their lengths are kept.
        taken = source >= 0
        moved = after.reshape(2, -1)[:, taken]
        origin = before.reshape(2, -1)[:, source[taken]]
        assert torch.allclose(moved.norm(dim=0), origin.norm(dim=0), atol=1e-5), "lengths changed"

    def make(h: int, w: int, g: torch.Generator) -> TargetKind:
        return Displacement(torch.randn(2, h, w, generator=g))

    try:
        exact = ["hflip", "vflip", "rotate90", "random_crop", "center_crop", "pad_if_needed"]
        check_target_kind(Displacement, make, relation=relation, transforms=builtin_transforms(exact))
    finally:
        for op in rules:
            a.unregister_rule(op, Displacement)
