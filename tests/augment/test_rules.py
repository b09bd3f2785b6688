"""The rule table: registration, lookup, and refusal of kinds without a rule."""

from __future__ import annotations

from collections.abc import Callable

import pixcore
import pytest
import torch
import torch.nn.functional as F
from pixcore import augment as a
from pixcore.targets import (
    ClassMask,
    Image,
    Intrinsics,
    ScalarField,
    TargetKind,
    UnitVectorField,
    ValidityMask,
)
from torch import Tensor

SampleFactory = Callable[..., dict[str, Tensor]]

#: Every registered geometric transform, with parameters that make it act.
GEOMETRIC: dict[str, dict[str, object]] = {
    "hflip": {"p": 1.0},
    "vflip": {"p": 1.0},
    "rotate90": {},
    "rotate": {"degrees": 20.0},
    "random_resized_crop": {"size": 5},
    "random_scale": {},
    "random_crop": {"size": 4},
    "center_crop": {"size": 4},
    "pad_if_needed": {"min_height": 9, "min_width": 9},
    "resize": {"size": [3, 5]},
}
PHOTOMETRIC = ["color_jitter", "random_gamma", "gaussian_blur", "gaussian_noise", "normalize"]


def create(name: str, params: dict[str, object] | None = None) -> a.Transform:
    return pixcore.PluginManager(autoload=False).registry("augmentations").create(name, params or {})


class EdgeMap(TargetKind):
    """A third-party kind no built-in transform knows."""

    kind = "edge_map"


def test_every_transform_is_registered() -> None:
    names = pixcore.PluginManager(autoload=False).registry("augmentations").list()
    assert set(GEOMETRIC) | set(PHOTOMETRIC) | {"compose", "one_of"} <= set(names)


@pytest.mark.parametrize("name", sorted(GEOMETRIC))
@pytest.mark.parametrize("p", [1.0, 0.0])
def test_geometric_transforms_refuse_an_unknown_kind(name: str, p: float, make_sample: SampleFactory) -> None:
    # The silent pass-through of torchvision's v2 transforms, caught on the first call,
    # whatever the coin says, with the transform and the kind named.
    params = dict(GEOMETRIC[name])
    if "p" in params or name in ("rotate", "rotate90", "random_scale"):
        params["p"] = p
    transform = create(name, params)
    sample = make_sample(6, 8)
    sample["edges"] = EdgeMap(torch.zeros(1, 6, 8))
    with pytest.raises(a.UnsupportedKindError) as info:
        transform(sample, torch.Generator().manual_seed(0))
    message = str(info.value)
    assert type(transform).__name__ in message
    assert "'edge_map'" in message and "'edges'" in message and "register_rule" in message
    assert isinstance(info.value, TypeError)  # what callers of the first HorizontalFlip caught


@pytest.mark.parametrize("name", sorted(GEOMETRIC))
def test_a_kind_with_rules_is_welcome(name: str, make_sample: SampleFactory, edge_rules: type[TargetKind]) -> None:
    sample = make_sample(6, 8)
    edges = torch.zeros(1, 6, 8)
    edges[..., 2, :] = 1.0
    sample["edges"] = edge_rules(edges)
    out = create(name, GEOMETRIC[name])(sample, torch.Generator().manual_seed(1))
    assert type(out["edges"]) is edge_rules
    assert out["edges"].shape[-2:] == out["image"].shape[-2:]


@pytest.mark.parametrize("name", PHOTOMETRIC)
def test_photometric_transforms_pass_any_kind_through(name: str, make_sample: SampleFactory) -> None:
    sample = make_sample(6, 8)
    sample["edges"] = EdgeMap(torch.rand(1, 6, 8))
    out = create(name, {"p": 1.0} if name != "normalize" else {})(sample, torch.Generator().manual_seed(0))
    for key in ("edges", "depth", "valid", "semseg"):
        assert out[key] is sample[key]  # the very same tensor: untouched


def test_plain_tensors_are_refused(make_sample: SampleFactory) -> None:
    sample = make_sample()
    sample["depth"] = torch.rand(1, 6, 8)  # forgot to wrap it in ScalarField
    with pytest.raises(a.UnsupportedKindError, match=r"HorizontalFlip.*'depth'.*plain tensor"):
        a.HorizontalFlip()(sample)
    with pytest.raises(a.UnsupportedKindError, match="plain tensor"):
        a.ColorJitter()(sample)


def test_compose_and_one_of_check_every_child(make_sample: SampleFactory) -> None:
    # A child that would not have been drawn still refuses: no luck of the draw.
    sample = make_sample()
    sample["edges"] = EdgeMap(torch.zeros(1, 6, 8))
    one_of = a.OneOf([a.ColorJitter(), a.Rotate(10.0)], weights=[1.0, 0.0])
    with pytest.raises(a.UnsupportedKindError, match="Rotate has no rule for target kind 'edge_map'"):
        one_of(sample)
    with pytest.raises(a.UnsupportedKindError, match="VerticalFlip"):
        a.Compose([a.ColorJitter(), a.VerticalFlip(p=0.0)])(sample)


def test_filling_needs_a_validity_mask(make_sample: SampleFactory) -> None:
    sample = make_sample(6, 8)
    del sample["valid"]
    with pytest.raises(a.UnsupportedKindError, match=r"Rotate fills.*'depth' \(scalar_field\).*ValidityMask"):
        a.Rotate(10.0, p=0.0)(sample)
    with pytest.raises(a.UnsupportedKindError, match="PadIfNeeded"):
        a.PadIfNeeded(9, 9)(sample)
    # Transforms that cannot fill this input do not need one.
    a.PadIfNeeded(4, 4)(sample)
    a.RandomCrop(4)(sample)
    a.HorizontalFlip()(sample)
    a.Rotate(0.0)(sample)


def test_sizes_must_agree(make_sample: SampleFactory) -> None:
    sample = make_sample(6, 8)
    sample["semseg"] = ClassMask(torch.zeros(6, 7, dtype=torch.long))
    with pytest.raises(ValueError, match=r"'semseg' is 6x7"):
        a.HorizontalFlip()(sample)


# -- the registry API --------------------------------------------------------------------


def test_register_and_unregister() -> None:
    assert a.rule_for("flip", EdgeMap) is None
    a.register_rule("flip", EdgeMap, lambda x, g: x.flip(g.dim))
    try:
        assert a.rule_for("flip", EdgeMap) is not None
        assert "edge_map" in a.registered_rules()["flip"]
        with pytest.raises(a.RuleError, match="already has a 'flip' rule; pass replace=True"):
            a.register_rule("flip", EdgeMap, lambda x, g: x)
        a.register_rule("flip", EdgeMap, lambda x, g: x.flip(g.dim), replace=True)
    finally:
        a.unregister_rule("flip", EdgeMap)
    assert a.rule_for("flip", EdgeMap) is None
    with pytest.raises(KeyError, match="no 'flip' rule"):
        a.unregister_rule("flip", EdgeMap)


def test_a_transform_refuses_a_kind_again_once_its_rule_is_gone() -> None:
    """Transforms remember which kinds passed their check; a change of rules forgets it."""
    sample = {"edges": EdgeMap(torch.zeros(1, 4, 5))}
    flip = a.HorizontalFlip(p=1.0)
    a.register_rule("flip", EdgeMap, lambda x, g: x.flip(g.dim))
    try:
        flip(sample)
        flip(sample)
    finally:
        a.unregister_rule("flip", EdgeMap)
    with pytest.raises(a.UnsupportedKindError, match="HorizontalFlip has no rule for target kind 'edge_map'"):
        flip(sample)


def test_registration_errors() -> None:
    with pytest.raises(a.RuleError, match="unknown geometric operation 'shear'"):
        a.register_rule("shear", EdgeMap, lambda x, g: x)
    with pytest.raises(a.RuleError, match="subclasses of pixcore.targets.TargetKind"):
        a.register_rule("flip", Tensor, lambda x, g: x)  # type: ignore[arg-type]
    with pytest.raises(a.RuleError, match="callable"):
        a.register_rule("flip", EdgeMap, "flip")  # type: ignore[arg-type]


def test_subclasses_inherit_rules() -> None:
    class InstanceMask(ClassMask):
        kind = "instance_mask"

    assert a.rule_for("warp", InstanceMask) is a.rule_for("warp", ClassMask)
    out = a.HorizontalFlip(p=1.0)({"m": InstanceMask(torch.tensor([[1, 2, 3]]))})
    assert type(out["m"]) is InstanceMask and out["m"].tolist() == [[3, 2, 1]]


def _bilinear_normals(x: Tensor, g: a.Geometry) -> Tensor:
    """A broken rule: bilinear unit vectors, not renormalised."""
    assert isinstance(g, a.Warp)
    return F.interpolate(x[None], size=g.out_size, mode="bilinear", align_corners=False)[0]


def test_bilinear_normals_without_renormalisation_are_rejected() -> None:
    class TangentField(UnitVectorField):
        kind = "tangent_field"

    with pytest.raises(a.RuleError, match="not unit length.*nearest neighbour"):
        a.register_rule("warp", TangentField, _bilinear_normals)
    with pytest.raises(a.RuleError, match="not unit length"):
        a.register_rule("warp", UnitVectorField, _bilinear_normals, replace=True)
    assert a.rule_for("warp", TangentField) is a.rule_for("warp", UnitVectorField)

    def renormalised(x: Tensor, g: a.Geometry) -> Tensor:
        return F.normalize(_bilinear_normals(x, g), dim=0)

    a.register_rule("warp", TangentField, renormalised)  # a unit-length rule is accepted
    a.unregister_rule("warp", TangentField)


def test_builtin_kinds_have_every_rule() -> None:
    for op in a.OPS:
        for kind in (Image, ClassMask, ScalarField, UnitVectorField, ValidityMask, Intrinsics):
            assert a.rule_for(op, kind) is not None, (op, kind)
