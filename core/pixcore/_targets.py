"""Target kinds: what a tensor in a sample *means*.

A sample is a plain ``dict[str, torch.Tensor]``; every pixel-aligned value in it is an
instance of one of the tensor subclasses below, so that augmentations, losses and
visualisers can look at a value and know its rules (a flip negates a normal's x, a mask
is never interpolated, ...). The subclasses derive from torchvision's ``TVTensor``: any
operation on them returns a plain ``torch.Tensor`` again, so they cost nothing in the
model and collate into ordinary batches.

Invalid pixels are carried by a :class:`ValidityMask`, never by sentinel values inside
float targets. A class mask may additionally mark pixels with its ignore index, which is
the convention every segmentation data set uses.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torchvision import tv_tensors

__all__ = [
    "ClassMask",
    "Image",
    "Intrinsics",
    "ScalarField",
    "TargetKind",
    "UnitVectorField",
    "ValidityMask",
    "kind_of",
]

#: The ignore index used when a data set does not say otherwise (Pascal VOC, ADE20K, ...).
DEFAULT_IGNORE_INDEX = 255


class TargetKind(tv_tensors.TVTensor):
    """Base of pixcore's typed tensors.

    Subclasses declare ``kind`` (a stable, lower-case name used in configs and error
    messages) and ``spatial`` (whether the last two dimensions are image rows and
    columns). Third-party kinds (an edge map, an optical-flow field) subclass this.
    """

    kind: ClassVar[str] = "target"
    spatial: ClassVar[bool] = True

    def __new__(
        cls,
        data: Any,
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | int | None = None,
        requires_grad: bool | None = None,
    ) -> TargetKind:
        tensor = cls._to_tensor(data, dtype=dtype, device=device, requires_grad=requires_grad)
        cls._check(tensor)
        return tensor.as_subclass(cls)

    @classmethod
    def _check(cls, tensor: torch.Tensor) -> None:
        """Raise ``ValueError`` if ``tensor`` cannot hold this kind (shape, dtype)."""


class Image(TargetKind):
    """An image, ``[C, H, W]``: ``uint8`` in 0..255 or float (already normalised)."""

    kind = "image"

    @classmethod
    def _check(cls, tensor: torch.Tensor) -> None:
        if tensor.ndim < 3:
            raise ValueError(f"an Image needs shape [..., C, H, W], got {tuple(tensor.shape)}")


class ClassMask(TargetKind):
    """Integer class per pixel, ``[H, W]``; pixels equal to the ignore index are not scored."""

    kind = "class_mask"

    @classmethod
    def _check(cls, tensor: torch.Tensor) -> None:
        if tensor.is_floating_point() or tensor.dtype == torch.bool:
            raise ValueError(
                f"a ClassMask holds integer class ids, got dtype {tensor.dtype}; "
                "convert with mask.long()"
            )


class ScalarField(TargetKind):
    """A float value per pixel, ``[1, H, W]``: metric depth (z, metres), disparity, height..."""

    kind = "scalar_field"

    @classmethod
    def _check(cls, tensor: torch.Tensor) -> None:
        if not tensor.is_floating_point():
            raise ValueError(f"a ScalarField is floating point, got dtype {tensor.dtype}")
        if tensor.ndim < 3 or tensor.shape[-3] != 1:
            raise ValueError(f"a ScalarField has shape [..., 1, H, W], got {tuple(tensor.shape)}")


class UnitVectorField(TargetKind):
    """A unit 3-vector per pixel, ``[3, H, W]``: surface normals in the camera frame.

    Camera frame (OpenCV): x right, y down, z forward. Normals face the camera.
    """

    kind = "unit_vector_field"

    @classmethod
    def _check(cls, tensor: torch.Tensor) -> None:
        if not tensor.is_floating_point():
            raise ValueError(f"a UnitVectorField is floating point, got dtype {tensor.dtype}")
        if tensor.ndim < 3 or tensor.shape[-3] != 3:
            raise ValueError(
                f"a UnitVectorField has shape [..., 3, H, W], got {tuple(tensor.shape)}"
            )


class ValidityMask(TargetKind):
    """Boolean ``[H, W]``: True where the pixel's float targets are defined."""

    kind = "validity_mask"

    @classmethod
    def _check(cls, tensor: torch.Tensor) -> None:
        if tensor.dtype != torch.bool:
            raise ValueError(
                f"a ValidityMask is boolean, got dtype {tensor.dtype}; build it with `x > 0` "
                "or `torch.isfinite(x)`"
            )


class Intrinsics(TargetKind):
    """Pinhole camera matrix ``[3, 3]`` (fx, fy, cx, cy in pixels). Not pixel-aligned."""

    kind = "intrinsics"
    spatial = False

    @classmethod
    def _check(cls, tensor: torch.Tensor) -> None:
        if tuple(tensor.shape[-2:]) != (3, 3):
            raise ValueError(f"Intrinsics have shape [..., 3, 3], got {tuple(tensor.shape)}")


def kind_of(value: Any) -> str | None:
    """Return the kind name of ``value`` (``"class_mask"``, ...) or None for untyped values."""
    return value.kind if isinstance(value, TargetKind) else None
