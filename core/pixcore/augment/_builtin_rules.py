"""The built-in rules: how flips, quarter turns, crops and warps move each built-in kind.

Importing this module registers them (``pixcore.augment`` and ``pixcore.augment._base``
import it). It depends on both the geometries (:mod:`pixcore.augment._geometry`) and the
rule table (:mod:`pixcore.augment._rules`), so neither of those needs the other's
registrations: the geometries know nothing about rules.
"""

from __future__ import annotations

import torch
from torch import Tensor

from pixcore._targets import (
    ClassMask,
    Image,
    Intrinsics,
    ScalarField,
    UnitVectorField,
    ValidityMask,
)
from pixcore.augment._geometry import Flip, Geometry, Rotate90, Warp
from pixcore.augment._rules import register_rule

__all__: list[str] = []


def _image_fill(x: Tensor, fill: float) -> float:
    if x.dtype.is_floating_point:
        return fill
    info = torch.iinfo(x.dtype)
    return float(min(max(round(fill), info.min), info.max))


def _mask_fill(x: Tensor, fill: int) -> int:
    info = torch.iinfo(x.dtype)
    if not info.min <= fill <= info.max:
        raise ValueError(
            f"mask_fill={fill} does not fit the class mask's dtype {x.dtype} "
            f"({info.min}..{info.max}); choose another mask_fill or convert the mask"
        )
    return fill


def _flip(x: Tensor, g: Flip) -> Tensor:
    return x.flip(g.dim)


def _rot90(x: Tensor, g: Rotate90) -> Tensor:
    return torch.rot90(x, g.k, (-2, -1))


def _apply_camera(n: Tensor, q: Tensor) -> Tensor:
    """``Q @ n`` over the channel dimension of ``n`` (``[..., 3, H, W]``); may reuse ``n``."""
    q2 = q[:2, :2]
    if torch.equal(q2, torch.eye(2, dtype=q.dtype)):
        return n
    if bool((q2.abs() == q2.abs().round()).all()):  # a signed permutation: exact
        out = torch.empty_like(n)
        for i in range(2):
            j = int(q2[i].abs().argmax())
            torch.mul(n[..., j, :, :], float(q2[i, j]), out=out[..., i, :, :])
        out[..., 2, :, :] = n[..., 2, :, :]
        return out
    m = q2.to(n.dtype)
    x, y = n[..., 0, :, :], n[..., 1, :, :]
    return torch.stack((m[0, 0] * x + m[0, 1] * y, m[1, 0] * x + m[1, 1] * y, n[..., 2, :, :]), dim=-3)


def _intrinsics(k: Tensor, g: Geometry) -> Tensor:
    p, q = g.pixel_map(), g.camera_map()
    return (p @ k.to(torch.float64) @ q.T).to(k.dtype)


# flip
for _kind in (Image, ClassMask, ScalarField, ValidityMask):
    register_rule("flip", _kind, _flip)


def _flip_vectors(x: Tensor, g: Flip) -> Tensor:
    out = x.flip(g.dim)  # a new tensor: negate the mirrored component in place
    out[..., 0 if g.axis == "horizontal" else 1, :, :].neg_()
    return out


register_rule("flip", UnitVectorField, _flip_vectors)
register_rule("flip", Intrinsics, _intrinsics)

# rotate90
for _kind in (Image, ClassMask, ScalarField, ValidityMask):
    register_rule("rotate90", _kind, _rot90)
register_rule("rotate90", UnitVectorField, lambda x, g: _apply_camera(_rot90(x, g), g.camera_map()))
register_rule("rotate90", Intrinsics, _intrinsics)

# crop
register_rule("crop", Image, lambda x, g: g.crop(x, _image_fill(x, g.fill)))
register_rule("crop", ClassMask, lambda x, g: g.crop(x, _mask_fill(x, g.mask_fill)))
register_rule("crop", ScalarField, lambda x, g: g.crop(x, 0.0))
register_rule("crop", UnitVectorField, lambda x, g: g.crop(x, 0.0))
register_rule("crop", ValidityMask, lambda x, g: g.crop(x, False))
register_rule("crop", Intrinsics, _intrinsics)


# warp
def _warp_image(x: Tensor, g: Warp) -> Tensor:
    if g.interpolation == "nearest":
        return g.nearest(x, _image_fill(x, g.fill))
    return g.bilinear(x, _image_fill(x, g.fill))


def _warp_depth(x: Tensor, g: Warp) -> Tensor:
    out = g.nearest(x, 0.0)
    factor = g.depth_factor
    return out * factor if factor != 1.0 else out


def _warp_vectors(x: Tensor, g: Warp) -> Tensor:
    out = g.nearest(x, 0.0)
    owned = out.untyped_storage().data_ptr() != x.untyped_storage().data_ptr()
    if owned and g.axis_aligned:  # the camera map is diag(sign a, sign e, 1): no matrix needed
        for i, scale in enumerate((g.matrix[0], g.matrix[4])):
            if scale < 0.0:
                out[..., i, :, :].neg_()
        return out
    return _apply_camera(out, g.camera_map())


def _warp_mask(x: Tensor, g: Warp) -> Tensor:
    return g.nearest(x, _mask_fill(x, g.mask_fill))


def _warp_validity(x: Tensor, g: Warp) -> Tensor:
    return g.nearest(x, False)


#: The built-in warp rules. Each handles a mirrored window warp (``Warp.mirrored``), so
#: a zoom and a flip may run as one warp on kinds that use them.
MIRRORING_WARP_RULES = frozenset({_warp_image, _warp_mask, _warp_depth, _warp_vectors, _warp_validity, _intrinsics})

register_rule("warp", Image, _warp_image)
register_rule("warp", ClassMask, _warp_mask)
register_rule("warp", ScalarField, _warp_depth)
register_rule("warp", UnitVectorField, _warp_vectors)
register_rule("warp", ValidityMask, _warp_validity)
register_rule("warp", Intrinsics, _intrinsics)
