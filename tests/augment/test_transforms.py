"""Each transform's own behaviour: parameters, sizes, fills, colour maths, configs, workers."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pixcore
import pytest
import torch
from pixcore import augment as a
from pixcore.data import SyntheticScenes
from pixcore.targets import ClassMask, Image, Intrinsics, ScalarField, ValidityMask
from pixcore.train import AugmentedDataset
from torch import Tensor
from torch.utils.data import DataLoader
from torchvision.transforms.v2 import functional as TF

SampleFactory = Callable[..., dict[str, Tensor]]


def registry() -> pixcore.Registry[Any]:
    return pixcore.PluginManager(autoload=False).registry("augmentations")


def plain(x: Tensor) -> Tensor:
    return x.as_subclass(Tensor)


# -- parameters ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("rotate", {"degrees": 400.0}, r"Rotate: degrees=.* allowed: .*degrees <= 360"),
        ("rotate", {"interpolation": "cubic"}, r"Input should be 'bilinear' or 'nearest'"),
        ("random_resized_crop", {"size": 0}, r"RandomResizedCrop: size=0 is out of range; allowed: a positive int"),
        ("random_resized_crop", {"size": 8, "scale": [0.5, 1.5]}, r"scale=1.5 is out of range; allowed: .*scale <= 1"),
        ("random_resized_crop", {"size": 8, "ratio": [2.0, 1.0]}, r"ratio=\(2.0, 1.0\) .* lo <= hi"),
        ("random_scale", {"scale": [0.0, 2.0]}, r"RandomScale: scale=0.0 is out of range; allowed: .*0 < scale"),
        ("color_jitter", {"hue": 0.7}, r"ColorJitter: hue=0.7 is out of range; allowed: .*hue <= 0.5"),
        ("color_jitter", {"brightness": -0.1}, r"brightness=-0.1 is out of range"),
        ("gaussian_blur", {"kernel_size": 4}, r"GaussianBlur: kernel_size=4 is out of range; allowed: an odd int"),
        ("gaussian_noise", {"std": [0.2, 0.1]}, r"GaussianNoise: std=\(0.2, 0.1\)"),
        ("normalize", {"std": [0.2, 0.0, 0.1]}, r"Normalize: std=0.0 is out of range; allowed: .*0 < std"),
        ("one_of", {"transforms": ["hflip"], "weights": [1.0, 2.0]}, r"OneOf: weights=.*one weight per transform"),
        ("pad_if_needed", {"min_height": 0, "min_width": 3}, r"PadIfNeeded: \(min_height, min_width\)=\(0, 3\)"),
        ("random_crop", {"size": [4, 4], "mask_fill": 1.5}, r"mask_fill"),
    ],
)
def test_invalid_parameters_name_parameter_value_and_range(name: str, params: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        registry().create(name, params)


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("hflip", {}), ("vflip", {}), ("rotate90", {}), ("rotate", {"degrees": [-5, 15]}),
        ("random_resized_crop", {"size": [4, 6], "scale": [0.5, 1.0]}), ("random_scale", {"scale": [0.5, 1.5]}),
        ("random_crop", {"size": 5}), ("center_crop", {"size": [3, 9]}),
        ("pad_if_needed", {"min_height": 9, "min_width": 2}), ("resize", {"size": 4}),
        ("color_jitter", {"hue": 0.1}), ("random_gamma", {}), ("gaussian_blur", {"sigma": 1.0}),
        ("gaussian_noise", {}), ("normalize", {}),
        ("compose", {"transforms": ["hflip", {"name": "color_jitter", "params": {"p": 0.5}}]}),
        ("one_of", {"transforms": [{"name": "rotate", "params": {"degrees": 5}}, "vflip"], "weights": [1, 3]}),
    ],
)
def test_every_name_builds_from_config_and_runs(name: str, params: dict[str, Any], full_sample: SampleFactory) -> None:
    transform = registry().create(name, params)
    assert isinstance(transform, pixcore.Augmentation)
    out = transform(full_sample(6, 8), torch.Generator().manual_seed(0))
    assert set(out) == set(full_sample(6, 8))


def test_demo_config_uses_these_transforms() -> None:
    config = pixcore.load_config(Path(pixcore.__file__).parent / "configs" / "demo.yaml")
    names = [entry.name for entry in config.data.augmentations]
    assert len(names) >= 2 and {"hflip", "color_jitter"} <= set(names)
    transforms = [registry().create(e.name, e.params) for e in config.data.augmentations]
    data = SyntheticScenes(length=4, height=96, width=96)
    for i in range(4):
        out = a.Compose(transforms)(data[i], torch.Generator().manual_seed(i))
        assert out["image"].shape == (3, 96, 96) and out["semseg"].shape == (96, 96)


# -- geometric ------------------------------------------------------------------------------


def test_rotate_fills_corners_and_marks_them_invalid(full_sample: SampleFactory) -> None:
    sample = full_sample(21, 21, valid_fraction=1.0)
    out = a.Rotate((45.0, 45.0), fill=7.0, mask_fill=250)(sample)
    filled = plain(out["mask"]) == 250
    assert filled[0, 0] and filled[0, -1] and filled[-1, 0] and filled[-1, -1] and not filled[10, 10]
    assert not plain(out["valid"])[filled].any() and plain(out["valid"])[~filled].all()
    assert (plain(out["image"])[:, filled] == 7).all()
    assert (plain(out["depth"])[0][filled] == 0).all() and (plain(out["normals"])[:, filled] == 0).all()


def test_rotate_by_zero_changes_nothing(full_sample: SampleFactory) -> None:
    sample = full_sample(7, 9)
    out = a.Rotate(0.0)(sample)
    for key in sample:
        torch.testing.assert_close(plain(out[key]), plain(sample[key]))


def test_random_resized_crop_sizes_and_windows(full_sample: SampleFactory) -> None:
    sample = full_sample(30, 40)
    crop = a.RandomResizedCrop((11, 17), scale=(0.2, 0.6))
    for seed in range(20):
        top, left, h, w = crop.window((30, 40), torch.Generator().manual_seed(seed))
        assert 0 <= top and top + h <= 30 and 0 <= left and left + w <= 40
        assert 0.15 <= h * w / 1200 <= 0.65
        out = crop(sample, torch.Generator().manual_seed(seed))
        assert out["image"].shape == (3, 11, 17) and out["valid"].shape == (11, 17)
    whole = a.RandomResizedCrop((15, 20), p=0.0)(sample)
    expected = a.Resize((15, 20))(sample)
    for key in sample:
        assert torch.equal(plain(whole[key]), plain(expected[key])), key


def test_random_scale_then_random_crop_gives_a_fixed_size(full_sample: SampleFactory) -> None:
    pipeline = a.Compose([a.RandomScale((0.5, 2.0)), a.RandomCrop((12, 16))])
    sizes = set()
    for seed in range(12):
        g = torch.Generator().manual_seed(seed)
        scaled = a.RandomScale((0.5, 2.0))(full_sample(10, 14), g)
        sizes.add(tuple(scaled["image"].shape[-2:]))
        out = pipeline(full_sample(10, 14), torch.Generator().manual_seed(seed))
        assert out["image"].shape == (3, 12, 16)
    assert len(sizes) > 3


def test_random_crop_pads_small_inputs_or_refuses(full_sample: SampleFactory) -> None:
    sample = full_sample(4, 5, valid_fraction=1.0)
    out = a.RandomCrop((6, 5), mask_fill=99)(sample, torch.Generator().manual_seed(0))
    assert out["image"].shape == (3, 6, 5)
    assert int((plain(out["mask"]) == 99).sum()) == 5 * 2 and int(plain(out["valid"]).sum()) == 20
    with pytest.raises(ValueError, match=r"input \(4x5\) is smaller than size=\(6, 5\); set pad_if_needed=True"):
        a.RandomCrop((6, 5), pad_if_needed=False)(sample)


@pytest.mark.parametrize(("position", "top", "left"), [("center", 2, 1), ("top_left", 0, 0)])
def test_pad_if_needed_positions(position: str, top: int, left: int, full_sample: SampleFactory) -> None:
    sample = full_sample(4, 5)
    out = a.PadIfNeeded(9, 7, position=position)(sample)  # type: ignore[arg-type]
    assert out["image"].shape == (3, 9, 7)
    assert torch.equal(plain(out["image"])[:, top : top + 4, left : left + 5], plain(sample["image"]))
    k0, k1 = plain(sample["intrinsics"]), plain(out["intrinsics"])
    assert k1[0, 2] == pytest.approx(float(k0[0, 2]) + left) and k1[1, 2] == pytest.approx(float(k0[1, 2]) + top)
    assert a.PadIfNeeded(3, 3)(sample)["image"] is sample["image"]


def test_resize_nearest_image_and_float_images(full_sample: SampleFactory) -> None:
    sample = full_sample(6, 8, image_dtype=torch.float32)
    out = a.Resize((12, 16), interpolation="nearest")(sample)
    assert torch.equal(plain(out["image"]), plain(sample["image"]).repeat_interleave(2, -1).repeat_interleave(2, -2))
    bilinear = a.Resize((3, 4))(sample)
    assert bilinear["image"].dtype == torch.float32


def test_uint8_images_in_either_layout_agree(full_sample: SampleFactory) -> None:
    """Images decoded as HWC memory (torchvision.io, PIL) and contiguous ones give the same."""
    sample = full_sample(24, 32)
    chw = sample["image"]
    hwc = Image(plain(chw).permute(1, 2, 0).contiguous().permute(2, 0, 1))
    assert not hwc.is_contiguous()
    transforms = (a.Resize((17, 45)), a.Rotate(30.0), a.ColorJitter(hue=0.2), a.RandomResizedCrop(20), a.Normalize())
    for transform in transforms:
        left = transform({**sample, "image": chw}, torch.Generator().manual_seed(5))["image"]
        right = transform({**sample, "image": hwc}, torch.Generator().manual_seed(5))["image"]
        assert torch.equal(plain(left), plain(right)), transform


# -- photometric ---------------------------------------------------------------------------


def test_color_jitter_neutral_factors_are_identity(full_sample: SampleFactory) -> None:
    for dtype in (torch.uint8, torch.float32):
        sample = full_sample(9, 11, image_dtype=dtype)
        out = a.ColorJitter(brightness=0.0, contrast=0.0, saturation=0.0, hue=0.0)(sample)
        torch.testing.assert_close(plain(out["image"]), plain(sample["image"]), atol=1e-6, rtol=0)


def test_color_jitter_matches_torchvision_on_brightness_contrast_saturation() -> None:
    """Without clipping, the single colour matrix equals torchvision's steps in that order."""
    g = torch.Generator().manual_seed(0)
    image = torch.rand(3, 16, 16, generator=g) * 0.3 + 0.35
    jitter = a.ColorJitter(brightness=(1.1, 1.1), contrast=(0.8, 0.8), saturation=(1.3, 1.3))
    ours = plain(jitter({"image": Image(image)})["image"])
    theirs = TF.adjust_saturation(TF.adjust_contrast(TF.adjust_brightness(image, 1.1), 0.8), 1.3)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)


def test_color_jitter_saturation_zero_is_grey_and_hue_keeps_grey() -> None:
    g = torch.Generator().manual_seed(1)
    image = Image(torch.randint(0, 256, (3, 8, 8), generator=g, dtype=torch.uint8))
    grey = plain(a.ColorJitter(0.0, 0.0, saturation=(0.0, 0.0))({"image": image})["image"]).int()
    assert (grey.max(0).values - grey.min(0).values).max() <= 1
    flat = Image(torch.full((3, 4, 4), 120, dtype=torch.uint8))
    turned = a.ColorJitter(0.0, 0.0, 0.0, hue=(0.3, 0.3))({"image": flat})["image"]
    assert torch.equal(plain(turned), plain(flat))


def test_gamma_blur_noise_neutral_settings(full_sample: SampleFactory) -> None:
    sample = full_sample(7, 9)
    image = plain(sample["image"])
    assert torch.equal(plain(a.RandomGamma((1.0, 1.0))(sample)["image"]), image)
    assert torch.equal(plain(a.GaussianNoise(std=0.0, p=1.0)(sample)["image"]), image)
    constant = {"image": Image(torch.full((3, 6, 6), 77, dtype=torch.uint8))}
    assert torch.equal(plain(a.GaussianBlur(sigma=2.0, p=1.0)(constant)["image"]), plain(constant["image"]))
    blurred = plain(a.GaussianBlur(sigma=1.5, p=1.0)(sample)["image"]).float()
    assert blurred.std() < image.float().std()


def test_noise_is_drawn_from_the_generator(full_sample: SampleFactory) -> None:
    sample = full_sample(8, 8)
    noise = a.GaussianNoise(std=0.1, p=1.0)
    first = noise(sample, torch.Generator().manual_seed(4))["image"]
    assert torch.equal(first, noise(sample, torch.Generator().manual_seed(4))["image"])
    assert not torch.equal(first, noise(sample, torch.Generator().manual_seed(5))["image"])


def test_normalize(full_sample: SampleFactory) -> None:
    sample = full_sample(5, 6)
    out = plain(a.Normalize(mean=(0.5, 0.5, 0.5), std=(0.25, 0.5, 1.0))(sample)["image"])
    expected = (plain(sample["image"]).float() / 255 - 0.5) / torch.tensor([0.25, 0.5, 1.0])[:, None, None]
    torch.testing.assert_close(out, expected)
    assert out.dtype == torch.float32 and out.is_contiguous()
    floats = {"image": Image(torch.full((3, 2, 2), 0.5))}
    assert plain(a.Normalize((0.5,) * 3, (0.5,) * 3)(floats)["image"]).abs().max() == 0
    with pytest.raises(ValueError, match="the image has 1 channels but mean/std have 3 values"):
        a.Normalize()({"image": Image(torch.zeros(1, 2, 2, dtype=torch.uint8))})


# -- composition and seeding ----------------------------------------------------------------


def test_one_of_follows_its_weights(full_sample: SampleFactory) -> None:
    sample = full_sample(6, 8)
    never = a.OneOf([a.HorizontalFlip(p=1.0), a.VerticalFlip(p=1.0)], weights=[1.0, 0.0])
    for seed in range(10):
        out = never(sample, torch.Generator().manual_seed(seed))
        assert torch.equal(plain(out["mask"]), plain(sample["mask"]).flip(-1))
    both = a.OneOf([a.HorizontalFlip(p=1.0), a.VerticalFlip(p=1.0)])
    picks = {
        torch.equal(plain(both(sample, torch.Generator().manual_seed(s))["mask"]), plain(sample["mask"]).flip(-1))
        for s in range(20)
    }
    assert picks == {True, False}


def test_worker_processes_reproduce_the_stream() -> None:
    """The trainer seeds each sample by (seed, epoch, index): any number of workers agrees."""
    augmentation = a.Compose([
        a.RandomResizedCrop(24, scale=(0.3, 1.0)), a.HorizontalFlip(), a.Rotate(15.0),
        a.ColorJitter(hue=0.05), a.GaussianNoise(p=0.5),
    ])

    def stream(workers: int, epoch: int) -> dict[str, Tensor]:
        data = AugmentedDataset(SyntheticScenes(length=8, height=32, width=32), augmentation, seed=5)
        data.epoch = epoch
        loader = DataLoader(data, batch_size=4, num_workers=workers)
        batches = list(loader)
        return {k: torch.cat([b[k] for b in batches]) for k in batches[0]}

    first = stream(0, epoch=0)
    again = stream(2, epoch=0)
    for key in first:
        assert torch.equal(first[key], again[key]), key
    assert not torch.equal(first["image"], stream(0, epoch=1)["image"])


def test_unknown_keys_without_tensors_pass_through(full_sample: SampleFactory) -> None:
    sample: dict[str, Any] = full_sample(5, 5)
    sample["name"] = "scene-3"
    out = a.Rotate(10.0)(sample)
    assert out["name"] == "scene-3"


def test_class_mask_fill_must_fit_its_dtype() -> None:
    sample = {
        "image": Image(torch.zeros(3, 4, 4, dtype=torch.uint8)),
        "m": ClassMask(torch.zeros(4, 4, dtype=torch.uint8)),
    }
    with pytest.raises(ValueError, match=r"mask_fill=300 does not fit the class mask's dtype torch.uint8"):
        a.PadIfNeeded(6, 6, mask_fill=300)(sample)


def test_scalar_fields_and_validity_travel_together() -> None:
    depth = ScalarField(torch.arange(1.0, 13.0).view(1, 3, 4))
    valid = ValidityMask(torch.tensor([[True, False, True, True]] * 3))
    out = a.Rotate((90.0, 90.0), interpolation="nearest")({"d": depth, "v": valid, "k": Intrinsics(torch.eye(3))})
    d, v = plain(out["d"])[0], plain(out["v"])
    assert ((d == 0) | v | (d == 2) | (d == 6) | (d == 10)).all()  # invalid pixels came from column 1


@pytest.mark.parametrize(("size", "out"), [((14, 11), (16, 1)), ((13, 1), (9, 8)), ((1, 6), (3, 1))])
def test_thin_float_images_resize_correctly(size: tuple[int, int], out: tuple[int, int]) -> None:
    """Torch's antialiased float kernel is wrong for width-1 inputs or outputs: worked around."""
    h, w = size
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    ramp = torch.stack([xs / max(1, w - 1), ys / max(1, h - 1), torch.full_like(xs, 0.5)])
    floats = plain(a.Resize(out)({"image": Image(ramp)})["image"])
    uint8 = plain(a.Resize(out)({"image": Image((ramp * 255).round().to(torch.uint8))})["image"]).float() / 255
    torch.testing.assert_close(floats, uint8, atol=1.5 / 255, rtol=0)  # uint8 is right


# -- a zoom and a flip joined in Compose --------------------------------------------------

_ZOOMS = [
    a.RandomResizedCrop((13, 19), scale=(0.1, 1.0), p=0.7),  # shrinks or enlarges, coin drawn
    a.RandomResizedCrop((64, 48), scale=(0.3, 1.0)),  # enlarges: OpenCV's kernels
    a.RandomResizedCrop((30, 40), scale=(1.0, 1.0), ratio=(4 / 3, 4 / 3)),  # the window is the input: views
    a.RandomResizedCrop((21, 25), interpolation="nearest", antialias=False),
    a.RandomScale((0.5, 1.5), p=0.8),
    a.Resize((30, 40)),  # the input's size: leaves the sample as it is
    a.Resize((47, 61)),
]


def _sequential(zoom: a.Transform, flip: a.Transform, sample: dict[str, Tensor], seed: int) -> dict[str, Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return flip(zoom(sample, generator), generator)


@pytest.mark.parametrize("zoom", _ZOOMS, ids=repr)
@pytest.mark.parametrize("p", [0.5, 1.0, 0.0])
def test_compose_runs_a_zoom_and_a_flip_as_one_with_the_same_result(
    zoom: a.Transform, p: float, full_sample: SampleFactory
) -> None:
    flip = a.HorizontalFlip(p)
    pipeline = a.Compose([zoom, flip])
    assert [type(t).__name__ for t in pipeline._fused()] == ["_ZoomThenMirror"]
    for seed in range(12):
        sample = full_sample(30, 40, seed, mask_dtype=torch.uint8 if seed % 2 else torch.int64)
        if seed % 3 == 0:  # an image decoded to HWC memory, as the file readers give it
            sample["image"] = Image(plain(sample["image"]).permute(1, 2, 0).contiguous().permute(2, 0, 1))
        before = {key: value.clone() for key, value in sample.items()}
        got = pipeline(sample, torch.Generator().manual_seed(seed))
        expected = _sequential(zoom, flip, sample, seed)
        assert got.keys() == expected.keys()
        for key in expected:
            assert type(got[key]) is type(expected[key]) and got[key].dtype == expected[key].dtype, key
            if key == "intrinsics":  # one matrix product instead of two
                torch.testing.assert_close(plain(got[key]), plain(expected[key]), rtol=1e-6, atol=1e-4)
            else:
                assert torch.equal(plain(got[key]), plain(expected[key])), (key, seed)
            assert torch.equal(plain(sample[key]), plain(before[key])), f"the input's {key} was changed"


def test_the_joined_pair_mirrors_the_resized_crop(full_sample: SampleFactory) -> None:
    """Against an independent reference: torchvision's resized crop, then a mirror."""
    sample = full_sample(30, 40, 3, kinds=("image", "mask", "normals"))
    crop = a.RandomResizedCrop((50, 60), scale=(0.3, 0.6))
    out = a.Compose([crop, a.HorizontalFlip(p=1.0)])(sample, torch.Generator().manual_seed(5))
    top, left, h, w = crop.window((30, 40), torch.Generator().manual_seed(5))
    mask = TF.resized_crop(plain(sample["mask"])[None], top, left, h, w, [50, 60], TF.InterpolationMode.NEAREST_EXACT)
    assert torch.equal(plain(out["mask"]), mask[0].flip(-1))
    normals = TF.resized_crop(plain(sample["normals"]), top, left, h, w, [50, 60], TF.InterpolationMode.NEAREST_EXACT)
    normals = normals.flip(-1)
    normals[0] = -normals[0]
    assert torch.equal(plain(out["normals"]), normals)


def test_compose_rebuilds_the_joined_chain_when_its_list_changes(full_sample: SampleFactory) -> None:
    pipeline = a.Compose([a.Resize((20, 20)), a.HorizontalFlip(p=1.0)])
    assert [type(t).__name__ for t in pipeline._fused()] == ["_ZoomThenMirror"]
    pipeline.transforms.insert(1, a.VerticalFlip(p=1.0))
    assert [type(t).__name__ for t in pipeline._fused()] == ["Resize", "VerticalFlip", "HorizontalFlip"]
    sample = full_sample(8, 6)
    generator = torch.Generator().manual_seed(0)
    expected = a.HorizontalFlip(p=1.0)(a.VerticalFlip(p=1.0)(a.Resize((20, 20))(sample, generator), generator))
    got = pipeline(sample, torch.Generator().manual_seed(0))
    assert torch.equal(plain(got["depth"]), plain(expected["depth"]))


def test_kinds_with_a_rule_of_another_package_run_the_pair_one_after_the_other(edge_kind: type[Any]) -> None:
    """A warp rule written before mirrored warps existed resizes ``g.window`` itself."""

    def resize_window(x: Tensor, g: Any) -> Tensor:
        top, left, h, w = g.window
        crop = x[..., top : top + h, left : left + w]
        return torch.nn.functional.interpolate(crop[None].float(), size=g.size, mode="nearest-exact")[0].to(x.dtype)

    a.register_rule("warp", edge_kind, resize_window)
    a.register_rule("flip", edge_kind, lambda x, g: x.flip(g.dim))
    try:
        edges = edge_kind((torch.rand(1, 30, 40, generator=torch.Generator().manual_seed(1)) > 0.5).to(torch.uint8))
        sample = {"image": Image(torch.zeros(3, 30, 40, dtype=torch.uint8)), "edges": edges}
        zoom, flip = a.RandomResizedCrop((25, 35)), a.HorizontalFlip(p=1.0)
        got = a.Compose([zoom, flip])(sample, torch.Generator().manual_seed(2))
        expected = _sequential(zoom, flip, sample, 2)
        assert torch.equal(plain(got["edges"]), plain(expected["edges"]))
    finally:
        a.unregister_rule("warp", edge_kind)
        a.unregister_rule("flip", edge_kind)
