"""pixcore's built-in components, registered through the same hooks as any plugin."""

from __future__ import annotations

from collections.abc import Iterator

from pixcore.hookspecs import hookimpl
from pixcore.plugin._records import Component


@hookimpl
def pixcore_heads() -> Iterator[Component]:
    from pixcore.model import _heads as h

    yield Component(
        "fpn", h.FPNHead,
        description="Feature-pyramid decoder (Panoptic FPN semantic branch)",
    )
    yield Component(
        "linear", h.LinearHead,
        description="Linear probe: one 1x1 conv over all levels",
    )
    yield Component(
        "deeplabv3plus", h.DeepLabV3PlusHead,
        description="DeepLabv3+: ASPP on the coarsest level + low-level skip",
    )
    yield Component(
        "upernet", h.UPerNetHead,
        description="UPerNet: pyramid pooling + FPN + fusion of all levels",
    )
    yield Component(
        "dpt", h.DPTHead,
        description="DPT decoder: residual fusion blocks from coarse to fine",
    )


@hookimpl
def pixcore_datasets() -> Iterator[Component]:
    from pixcore.data import FolderDataset, ShardDataset, SyntheticScenes

    yield Component(
        "synthetic",
        SyntheticScenes,
        description="Procedural rooms with exact semseg, depth, normals (no download)",
    )
    yield Component(
        "folder",
        FolderDataset,
        description="Images and targets in folders, matched by file name (glob patterns)",
    )
    yield Component(
        "shards",
        ShardDataset,
        description="Samples streamed from `pixcore shard` tar shards, local or any fsspec URL (s3://)",
    )


@hookimpl
def pixcore_augmentations() -> Iterator[Component]:
    from pixcore import augment as a

    yield Component("hflip", a.HorizontalFlip, description="Mirror left-right (normals' x negated)")
    yield Component("vflip", a.VerticalFlip, description="Mirror top-bottom (normals' y negated)")
    yield Component("rotate90", a.RandomRotate90, description="0-3 quarter turns (normals rotated)")
    yield Component("rotate", a.Rotate, description="Small-angle rotation; corners filled and invalid")
    yield Component(
        "random_resized_crop", a.RandomResizedCrop, description="Random window resized to a fixed size"
    )
    yield Component("random_scale", a.RandomScale, description="Resize by a random factor")
    yield Component("random_crop", a.RandomCrop, description="Random window, padded if needed")
    yield Component("center_crop", a.CenterCrop, description="Centred window, padded if needed")
    yield Component("pad_if_needed", a.PadIfNeeded, description="Pad to a minimum size; pad invalid")
    yield Component("resize", a.Resize, description="Resize to a fixed size (masks nearest)")
    yield Component("color_jitter", a.ColorJitter, description="Brightness, contrast, saturation, hue")
    yield Component("random_gamma", a.RandomGamma, description="Random gamma curve")
    yield Component("gaussian_blur", a.GaussianBlur, description="Gaussian blur, random sigma")
    yield Component("gaussian_noise", a.GaussianNoise, description="Additive Gaussian noise")
    yield Component("normalize", a.Normalize, description="(x / 255 - mean) / std, float32")
    yield Component("compose", a.Compose, description="Apply transforms in order, with probability p")
    yield Component("one_of", a.OneOf, description="Apply one of the transforms, drawn by weight")


@hookimpl
def pixcore_weightings() -> Iterator[Component]:
    from pixcore.model._weighting import DynamicWeightAverage, FixedWeighting, UncertaintyWeighting

    yield Component(
        "fixed", FixedWeighting,
        description="Sum of each task's loss times its configured weight (the default)",
    )
    yield Component(
        "uncertainty", UncertaintyWeighting,
        description="Learned homoscedastic uncertainty weights (Kendall et al. 2018)",
    )
    yield Component(
        "dwa", DynamicWeightAverage,
        description="Dynamic Weight Average from loss ratios (Liu et al. 2019)",
    )
