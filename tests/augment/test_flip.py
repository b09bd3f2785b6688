"""Flips: per-kind rules, intrinsics, reproducibility (the first transform pixcore had)."""

from __future__ import annotations

from collections.abc import Callable

import pixcore
import pytest
import torch
from pixcore import augment as a
from pixcore._augment import Compose, HorizontalFlip
from pixcore.targets import ClassMask, Image, Intrinsics, ScalarField, UnitVectorField
from torch import Tensor

SampleFactory = Callable[..., dict[str, Tensor]]

FLIP = a.HorizontalFlip(p=1.0)


def unit_normals(height: int, width: int, seed: int = 0) -> UnitVectorField:
    g = torch.Generator().manual_seed(seed)
    n = torch.randn(3, height, width, generator=g)
    n[2] = -n[2].abs()  # facing the camera (z towards it)
    return UnitVectorField(n / n.norm(dim=0, keepdim=True))


def test_compatibility_imports() -> None:
    assert HorizontalFlip is a.HorizontalFlip and Compose is a.Compose


def test_flip_keeps_kinds_and_mirrors(make_sample: SampleFactory) -> None:
    sample = make_sample(6, 8)
    out = FLIP(sample)
    assert set(out) == set(sample)
    for key, value in sample.items():
        assert type(out[key]) is type(value), key  # the kind survives the transform
        assert out[key].dtype == value.dtype and out[key].shape == value.shape
        assert torch.equal(out[key].as_subclass(Tensor), value.as_subclass(Tensor).flip(-1)), key


def test_flip_does_not_modify_its_input(make_sample: SampleFactory) -> None:
    sample = make_sample()
    sample["normals"] = unit_normals(6, 8)
    before = {k: v.clone() for k, v in sample.items()}
    FLIP(sample)
    a.VerticalFlip(p=1.0)(sample)
    for key in sample:
        assert torch.equal(sample[key], before[key]), key


@pytest.mark.parametrize(("flip", "component"), [(a.HorizontalFlip(p=1.0), 0), (a.VerticalFlip(p=1.0), 1)])
def test_normals_component_negated_and_mirrored(flip: a.Transform, component: int) -> None:
    normals = unit_normals(4, 6)
    out = flip({"normals": normals})["normals"]
    assert isinstance(out, UnitVectorField)
    mirrored = normals.as_subclass(Tensor).flip(-1 if component == 0 else -2)
    for c in range(3):
        sign = -1.0 if c == component else 1.0
        assert torch.equal(out[c].as_subclass(Tensor), sign * mirrored[c])
    torch.testing.assert_close(out.norm(dim=0), torch.ones(4, 6))  # still unit length


def test_masks_keep_their_value_set(make_sample: SampleFactory) -> None:
    sample = make_sample(9, 13)
    sample["semseg"] = ClassMask(torch.tensor([0, 3, 255]).repeat(9, 5)[:, :13])
    out = FLIP(sample)
    assert set(out["semseg"].unique().tolist()) == {0, 3, 255}  # no interpolated ids
    assert out["valid"].dtype == torch.bool
    assert out["valid"].sum() == sample["valid"].sum()


def back_project(depth: Tensor, k: Tensor, u: int, v: int) -> Tensor:
    """Camera-frame point seen at pixel (u, v): z * K^-1 [u, v, 1] (pinhole model)."""
    z = depth[0, v, u]
    return z * torch.linalg.solve(k, torch.tensor([float(u), float(v), 1.0], dtype=k.dtype))


def test_intrinsics_follow_the_flip() -> None:
    height, width = 6, 10
    g = torch.Generator().manual_seed(1)
    depth = ScalarField(torch.rand(1, height, width, generator=g, dtype=torch.float64) + 1.0)
    k = torch.tensor([[40.0, 0.0, 3.7], [0.0, 42.0, 2.2], [0.0, 0.0, 1.0]], dtype=torch.float64)
    out = FLIP({"depth": depth, "camera": Intrinsics(k)})
    k_flipped = out["camera"].as_subclass(Tensor)
    assert isinstance(out["camera"], Intrinsics)
    assert k_flipped[0, 2] == width - 1 - 3.7
    assert torch.equal(k_flipped[1], k[1]) and k_flipped[0, 0] == k[0, 0]
    # A scene mirrored in x (x -> -x) is what the flipped image shows: every pixel's
    # back-projected point must be the mirror image of the original one.
    for u, v in [(0, 0), (3, 2), (9, 5), (6, 1)]:
        original = back_project(depth.as_subclass(Tensor), k, u, v)
        flipped = back_project(out["depth"].as_subclass(Tensor), k_flipped, width - 1 - u, v)
        expected = original * torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64)
        torch.testing.assert_close(flipped, expected)


def test_batched_intrinsics() -> None:
    k = torch.eye(3).repeat(2, 1, 1)
    k[:, 0, 2] = torch.tensor([1.0, 2.0])
    out = FLIP({"image": Image(torch.zeros(3, 4, 8)), "camera": Intrinsics(k)})
    assert out["camera"][:, 0, 2].tolist() == [6.0, 5.0]


def test_p_is_checked() -> None:
    with pytest.raises(ValueError, match=r"HorizontalFlip: p=1.5 is out of range; allowed: 0 <= p <= 1"):
        a.HorizontalFlip(p=1.5)


def flipped(sample: dict[str, Tensor], out: dict[str, Tensor]) -> bool:
    return not torch.equal(out["image"], sample["image"])


def test_same_seed_same_decision(make_sample: SampleFactory) -> None:
    sample = make_sample(4, 9)
    flip = a.HorizontalFlip(p=0.5)
    decisions = []
    for seed in range(24):
        first = flipped(sample, flip(sample, torch.Generator().manual_seed(seed)))
        again = flipped(sample, flip(sample, torch.Generator().manual_seed(seed)))
        assert first == again, seed
        decisions.append(first)
    assert 0 < sum(decisions) < len(decisions)  # the seed matters: both outcomes happen


def test_p_zero_and_one() -> None:
    sample = {"image": Image(torch.arange(6, dtype=torch.uint8).reshape(1, 2, 3).expand(3, 2, 3))}
    assert torch.equal(a.HorizontalFlip(p=0.0)(sample)["image"], sample["image"])
    assert not torch.equal(a.HorizontalFlip(p=1.0)(sample)["image"], sample["image"])


def test_compose_shares_the_generator(make_sample: SampleFactory) -> None:
    sample = make_sample()
    twice = a.Compose([a.HorizontalFlip(p=1.0), a.HorizontalFlip(p=1.0)])
    assert torch.equal(twice(sample)["image"], sample["image"])
    chain = a.Compose([a.HorizontalFlip(p=0.5)] * 3)
    first = chain(sample, torch.Generator().manual_seed(3))
    again = chain(sample, torch.Generator().manual_seed(3))
    assert all(torch.equal(first[k], again[k]) for k in sample)


def test_hflip_is_registered() -> None:
    manager = pixcore.PluginManager(autoload=False)
    flip = manager.registry("augmentations").create("hflip", {"p": 1.0})
    assert isinstance(flip, a.HorizontalFlip) and isinstance(flip, pixcore.Augmentation)
    with pytest.raises(pixcore.ConfigError, match=r"data\.augmentations\.0\.params\.p"):
        manager.registry("augmentations").validate("hflip", {"p": "often"}, path="data.augmentations.0.params")
