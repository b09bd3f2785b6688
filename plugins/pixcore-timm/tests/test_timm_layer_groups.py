"""TimmBackbone.layer_groups(): timm's block groups, mapped onto the feature extractor."""

from __future__ import annotations

import re

import pytest
from pixcore._interfaces import feature_level_groups
from pixcore_timm import TimmBackbone
from pixcore_timm import _backbone as timm_backbone


def _resnet_block(name: str) -> int:
    """Hand-written group of a resnet18 parameter: stem 0, then one per basic block."""
    match = re.match(r"model\.layer(\d)[._](\d)\.", name)
    if match is None:
        assert re.match(r"model\.(conv1|bn1)\.", name), name
        return 0
    return 1 + 2 * (int(match.group(1)) - 1) + int(match.group(2))


def _every_parameter_once(backbone: TimmBackbone, groups: list[list[str]]) -> None:
    listed = [name for group in groups for name in group]
    assert sorted(listed) == sorted(name for name, _ in backbone.named_parameters())


def test_resnet18_has_one_group_per_block() -> None:
    backbone = TimmBackbone("resnet18")
    groups = backbone.layer_groups()
    _every_parameter_once(backbone, groups)
    assert [sorted({_resnet_block(n) for n in group}) for group in groups] == [[i] for i in range(9)]


def test_renamed_feature_extractors_keep_timms_groups() -> None:
    # convnext's feature extractor flattens `stem.0` into `stem_0`: still timm's groups.
    backbone = TimmBackbone("convnext_atto")
    groups = backbone.layer_groups()
    _every_parameter_once(backbone, groups)
    assert len(groups) > len(backbone.feature_info)
    assert all(name.startswith("model.stem") for name in groups[0])
    assert any(name.startswith("model.stages_3.blocks.1.") for name in groups[-1])


def test_without_timm_groups_it_falls_back_to_feature_levels(monkeypatch: pytest.MonkeyPatch) -> None:
    backbone = TimmBackbone("resnet18")
    monkeypatch.setattr(timm_backbone, "_timm_groups", lambda model_name, extractor: None)
    assert backbone.layer_groups() == feature_level_groups(backbone)
    assert len(backbone.layer_groups()) == len(backbone.feature_info)
