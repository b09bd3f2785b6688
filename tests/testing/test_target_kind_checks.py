"""check_target_kind: what padded pixels hold, and flip rules applied to batches.

Each broken kind below passes the per-sample property run (its rules move every pixel
correctly); only the fill-value and batched-flip checks catch it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

import pytest
import torch
from pixcore import augment
from pixcore.augment import Geometry
from pixcore.targets import ClassMask, ScalarField, TargetKind
from pixcore.testing import ContractError, check_target_kind
from torch import Tensor

EXAMPLES = 8


class PartMask(ClassMask):
    """A third-party class mask (object parts); 0 is a real part id."""

    kind = "part_mask"


class EdgeMap(TargetKind):
    """A third-party binary edge map, ``[1, H, W]``."""

    kind = "edge_map"


class Ridges(TargetKind):
    """A third-party label map without channels, ``[H, W]``."""

    kind = "ridges"


class Height(ScalarField):
    """A third-party scalar field: height above the floor, ``[1, H, W]``."""

    kind = "height"


def _flip(x: Tensor, g: Geometry) -> Tensor:
    return x.flip(g.dim)


def _rot90(x: Tensor, g: Geometry) -> Tensor:
    return torch.rot90(x, g.k, (-2, -1))


def _nearest_rules(fill: float) -> dict[str, augment.Rule]:
    return {
        "flip": _flip,
        "rotate90": _rot90,
        "crop": lambda x, g: g.crop(x, fill),
        "warp": lambda x, g: g.nearest(x, fill),
    }


#: ``rules(kind, {op: rule})`` registers rules for one test.
Register = Callable[[type[TargetKind], Mapping[str, augment.Rule]], None]


@pytest.fixture
def rules() -> Iterator[Register]:
    """``rules(kind, {op: rule})`` registers rules for one test."""
    registered: list[tuple[str, type[TargetKind]]] = []

    def register(kind: type[TargetKind], table: Mapping[str, augment.Rule]) -> None:
        for op, rule in table.items():
            augment.register_rule(op, kind, rule)
            registered.append((op, kind))

    yield register
    for op, kind in registered:
        augment.unregister_rule(op, kind)


def make_parts(h: int, w: int, g: torch.Generator) -> PartMask:
    return PartMask(torch.randint(0, 4, (h, w), generator=g))


def make_edges(h: int, w: int, g: torch.Generator) -> EdgeMap:
    return EdgeMap(torch.rand(1, h, w, generator=g) > 0.7)


def make_ridges(h: int, w: int, g: torch.Generator) -> Ridges:
    return Ridges(torch.randint(0, 5, (h, w), generator=g))


def make_height(h: int, w: int, g: torch.Generator) -> Height:
    return Height(torch.rand(1, h, w, generator=g) * 3)


# -- fill values ------------------------------------------------------------------------


def test_a_class_mask_kind_that_pads_with_the_ignore_value_passes(rules: Register) -> None:
    rules(PartMask, {
        "crop": lambda x, g: g.crop(x, g.mask_fill),
        "warp": lambda x, g: g.nearest(x, g.mask_fill),
    })
    check_target_kind(PartMask, make_parts, max_examples=EXAMPLES)


def test_a_class_mask_kind_that_pads_with_a_real_label_is_caught(rules: Register) -> None:
    rules(PartMask, {
        "crop": lambda x, g: g.crop(x, 0),
        "warp": lambda x, g: g.nearest(x, 0),
    })
    with pytest.raises(ContractError, match=r"padded pixels of PartMask hold 0, but they must hold "
                                            r"the geometry's mask_fill \(the ignore index\)"):
        check_target_kind(PartMask, make_parts, max_examples=EXAMPLES)


def test_a_class_mask_kind_that_ignores_the_configured_mask_fill_is_caught(rules: Register) -> None:
    # Always 255: right for the default, wrong for a transform with mask_fill=7.
    rules(PartMask, {
        "crop": lambda x, g: g.crop(x, 255),
        "warp": lambda x, g: g.nearest(x, 255),
    })
    with pytest.raises(ContractError, match=r"hold 255, but they must hold the geometry's mask_fill"):
        check_target_kind(PartMask, make_parts, max_examples=EXAMPLES)


def test_a_scalar_kind_must_pad_with_its_fill(rules: Register) -> None:
    rules(Height, {"crop": lambda x, g: g.crop(x, 1.0)})
    with pytest.raises(ContractError, match=r"'crop' rule.*padded pixels of Height hold 1, but they must hold 0"):
        check_target_kind(Height, make_height, max_examples=EXAMPLES)


def test_a_declared_fill_is_what_padded_pixels_must_hold(rules: Register) -> None:
    rules(EdgeMap, _nearest_rules(True))
    check_target_kind(EdgeMap, make_edges, fill=True, max_examples=EXAMPLES)
    with pytest.raises(ContractError, match=r"padded pixels of EdgeMap hold 1, but they must hold 0"):
        check_target_kind(EdgeMap, make_edges, max_examples=EXAMPLES)


def test_the_fill_of_a_class_mask_cannot_be_overridden() -> None:
    with pytest.raises(ValueError, match=r"PartMask is a ClassMask, whose padded pixels must hold "
                                         r"the geometry's mask_fill .*drop fill=0"):
        check_target_kind(PartMask, make_parts, fill=0)


# -- flip rules on batches --------------------------------------------------------------


def test_rules_with_negative_dims_pass(rules: Register) -> None:
    rules(EdgeMap, _nearest_rules(0.0))
    rules(Ridges, _nearest_rules(0))
    check_target_kind(EdgeMap, make_edges, max_examples=EXAMPLES)
    check_target_kind(Ridges, make_ridges, max_examples=EXAMPLES)


def test_a_flip_rule_with_positive_dims_is_caught(rules: Register) -> None:
    # Right on one [1, H, W] sample; on a batch [B, 1, H, W] it flips the wrong axes.
    table = _nearest_rules(0.0)
    table["flip"] = lambda x, g: x.flip(2 if g.axis == "horizontal" else 1)
    rules(EdgeMap, table)
    with pytest.raises(ContractError, match=r"the 'flip' rule of EdgeMap \(horizontal\) gives on a "
                                            r"batch \(2, 1, 5, 7\) another result.*x\.flip\(g\.dim\)"):
        check_target_kind(EdgeMap, make_edges, max_examples=EXAMPLES)


def test_x_flip_1_on_a_label_map_is_caught(rules: Register) -> None:
    # x.flip(1) mirrors an [H, W] sample left-right, but a batch of predictions
    # [B, C, H, W] along its channels.
    table = _nearest_rules(0)
    table["flip"] = lambda x, g: x.flip(1 if g.axis == "horizontal" else 0)
    rules(Ridges, table)
    with pytest.raises(ContractError, match=r"'flip' rule of Ridges \(horizontal\) gives on a batch "
                                            r"\(2, 2, 5, 7\) another result"):
        check_target_kind(Ridges, make_ridges, max_examples=EXAMPLES)


def test_a_flip_rule_that_fails_on_a_batch_is_caught(rules: Register) -> None:
    def per_sample_only(x: Tensor, g: Geometry) -> Tensor:
        channels, height, width = x.shape  # breaks on [B, C, H, W]
        return x.flip(g.dim)

    table = _nearest_rules(0.0)
    table["flip"] = per_sample_only
    rules(EdgeMap, table)
    with pytest.raises(ContractError, match=r"gives on a batch \(2, 1, 5, 7\) an error \(ValueError"):
        check_target_kind(EdgeMap, make_edges, max_examples=EXAMPLES)
