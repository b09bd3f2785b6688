"""Every kind of timm model at any input size, with every head, frozen and unfrozen.

One model per kind: a CNN, a hierarchical transformer, a window-based transformer (Swin,
channels-last features), a plain ViT and DINOv2 (single stride, dynamic position
embeddings), a model with position tables of one size (``resize``) and one whose windows
must tile the image (``native_multiple``). Random weights; no network.
"""

from __future__ import annotations

import math

import pixcore
import pytest
import timm
import torch
from pixcore.testing import check_backbone, isolated_manager
from pixcore_timm import TimmBackbone
from pixcore_timm import _plugin as timm_plugin

HEADS = ("fpn", "linear", "deeplabv3plus", "upernet", "dpt")
ODD_SIZES = ((97, 130), (61, 83))

#: name -> (size policy ``auto`` picks, strides of the default levels)
MODELS = {
    "test_resnet": ("stride", [4, 8, 16, 32]),
    "pvt_v2_b0": ("stride", [4, 8, 16, 32]),
    "swin_tiny_patch4_window7_224": ("stride", [4, 8, 16, 32]),
    "test_vit": ("stride", [16, 16, 16, 16]),
    "vit_small_patch14_dinov2": ("stride", [14, 14, 14, 14]),
    "test_vit_relpos": ("resize", [16, 16, 16, 16]),
    "halonet_h1": ("native_multiple", [4, 8, 16, 32]),
}


@pytest.fixture(scope="module")
def manager() -> pixcore.PluginManager:
    return isolated_manager(timm_plugin, "pixcore_seg._plugin")


def _all_heads_model(manager: pixcore.PluginManager, name: str, freeze: bool) -> pixcore.MultiTaskModel:
    """One segmentation output per head, on one shared backbone."""
    tasks = {
        head: {"task": "segmentation", "params": {"num_classes": 3}, "head": {"name": head, "params": _small(head)}}
        for head in HEADS
    }
    return pixcore.build_model(
        {"name": f"timm/{name}", "params": {"freeze": freeze}}, tasks=tasks, manager=manager
    )


def _small(head: str) -> dict[str, int]:
    return {} if head == "linear" else {"channels": 32}


@pytest.mark.slow
@pytest.mark.parametrize("freeze", [False, True], ids=["unfrozen", "frozen"])
@pytest.mark.parametrize("name", list(MODELS))
def test_every_head_at_odd_sizes(manager: pixcore.PluginManager, name: str, freeze: bool) -> None:
    torch.manual_seed(0)
    model = _all_heads_model(manager, name, freeze)
    policy, strides = MODELS[name]
    assert model.backbone.size_policy == policy
    assert [level.stride for level in model.backbone.feature_info] == strides
    model.train()
    for height, width in ODD_SIZES[:1] if freeze else ODD_SIZES:
        images = torch.randint(0, 256, (2, 3, height, width), dtype=torch.uint8)
        out = model(images)
        assert set(out) == set(HEADS)
        for head, logits in out.items():
            assert logits.shape == (2, 3, height, width), head
            assert torch.isfinite(logits).all(), head
        sum(logits.float().square().mean() for logits in out.values()).backward()
        for head in HEADS:
            grads = [p.grad for p in model.heads[head].parameters()]
            assert all(g is not None and torch.isfinite(g).all() for g in grads), head
        backbone_grads = [p.grad for p in model.backbone.parameters()]
        if freeze:
            assert all(g is None for g in backbone_grads)
            assert not model.backbone.model.training  # frozen: eval mode even in model.train()
        else:
            assert any(g is not None and g.abs().sum() > 0 for g in backbone_grads)
        model.zero_grad(set_to_none=True)


@pytest.mark.parametrize("name", ["test_vit", "swin_tiny_patch4_window7_224", "test_vit_relpos", "inception_v3"])
def test_contract_at_odd_sizes(name: str) -> None:
    # Each level is ceil(H / stride) x ceil(W / stride) of the padded image, channels first.
    check_backbone(TimmBackbone(name), sizes=((97, 130), (33, 35), (224, 224)), backward=False)


def test_swin_features_are_channels_first() -> None:
    backbone = TimmBackbone("swin_tiny_patch4_window7_224")
    assert backbone.channels_last  # timm returns NHWC for Swin
    features = backbone(torch.randn(1, 3, 224, 224))
    assert [tuple(f.shape) for f in features] == [
        (1, 96, 56, 56), (1, 192, 28, 28), (1, 384, 14, 14), (1, 768, 7, 7)
    ]


def _timm_vit(name: str) -> torch.nn.Module:
    """The same ViT as a plain timm model, for reference outputs."""
    return timm.create_model(name, dynamic_img_size=True).eval()


def test_vit_takes_four_evenly_spaced_blocks_after_the_final_norm() -> None:
    torch.manual_seed(0)
    backbone = TimmBackbone("vit_small_patch14_dinov2").eval()
    reference = _timm_vit("vit_small_patch14_dinov2")
    reference.load_state_dict(backbone.model.model.state_dict(), strict=False)
    x = torch.randn(1, 3, 98, 126)  # 7 x 9 patches of 14 pixels
    with torch.no_grad():
        expected = reference.forward_intermediates(x, indices=[2, 5, 8, 11], norm=True, intermediates_only=True)
        features = backbone(x)
    assert [f.shape for f in features] == [(1, 384, 7, 9)] * 4
    for got, want in zip(features, expected, strict=True):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize(("probe", "blocks"), [("lin.1", [11]), ("lin.4", [8, 9, 10, 11])])
def test_dinov2_probes_concatenate_the_class_token(probe: str, blocks: list[int]) -> None:
    torch.manual_seed(0)
    backbone = TimmBackbone("vit_small_patch14_reg4_dinov2", probe=probe).eval()
    assert backbone.protocol.startswith(f"DINOv2 {probe} (")
    assert [(f.channels, f.stride) for f in backbone.feature_info] == [(768, 14)] * len(blocks)
    reference = _timm_vit("vit_small_patch14_reg4_dinov2")
    reference.load_state_dict(backbone.model.model.state_dict(), strict=False)
    x = torch.randn(2, 3, 70, 42)
    with torch.no_grad():
        tokens = reference.forward_intermediates(
            x, indices=blocks, norm=True, intermediates_only=True, return_prefix_tokens=True
        )
        features = backbone(x)
    for got, (patches, prefix) in zip(features, tokens, strict=True):
        assert prefix.shape[1] == 5  # the class token and four registers
        torch.testing.assert_close(got[:, :384], patches)
        # Register tokens are dropped; the class token is broadcast over every position.
        torch.testing.assert_close(got[:, 384:], prefix[:, 0, :, None, None].expand(-1, -1, 5, 3))


def test_probe_and_class_token_refused_where_they_cannot_work() -> None:
    with pytest.raises(pixcore.ConfigError, match="plain transformer with a class token"):
        TimmBackbone("test_resnet", probe="lin.1")
    registry = isolated_manager(timm_plugin).registry("backbones")
    with pytest.raises(pixcore.ConfigError, match="leave out `out_indices`"):
        registry.create("timm/test_vit", {"probe": "lin.4", "out_indices": [1]})


def test_resize_policy_matches_running_the_model_at_its_native_size() -> None:
    torch.manual_seed(0)
    backbone = TimmBackbone("test_vit_relpos").eval()  # native 160 x 160
    x = torch.randn(1, 3, 96, 208)
    with torch.no_grad():
        features = backbone(x)
        native = backbone.model(torch.nn.functional.interpolate(x, size=(160, 160), mode="bilinear"))
    for got, raw in zip(features, native, strict=True):
        assert got.shape[-2:] == (6, 13)
        want = torch.nn.functional.interpolate(raw, size=(6, 13), mode="bilinear")
        torch.testing.assert_close(got, want)


def test_native_multiple_policy_crops_what_the_padded_image_gives() -> None:
    torch.manual_seed(0)
    backbone = TimmBackbone("halonet_h1").eval()  # blocks of 8 at stride 32: 256 x 256 tiles
    x = torch.randn(1, 3, 96, 288)
    with torch.no_grad():
        features = backbone(x)
        padded = backbone.model(torch.nn.functional.pad(x, (0, 224, 0, 160), mode="replicate"))
    for got, raw, level in zip(features, padded, backbone.feature_info, strict=True):
        size = (math.ceil(96 / level.stride), math.ceil(288 / level.stride))
        assert got.shape[-2:] == size
        torch.testing.assert_close(got, raw[..., : size[0], : size[1]])


def test_a_size_the_model_cannot_take_is_a_clear_error() -> None:
    backbone = TimmBackbone("test_vit_relpos", size_policy="stride")
    with pytest.raises(pixcore.ConfigError) as info:
        backbone(torch.randn(1, 3, 96, 96))
    message = str(info.value)
    assert "96x96" in message and "size_policy" in message and "'resize'" in message


def test_vit_layer_groups_follow_timm_blocks() -> None:
    backbone = TimmBackbone("test_vit")
    groups = backbone.layer_groups()
    blocks = len(backbone.model.model.blocks)
    # timm's group_matcher: the embeddings first, then one group per block, shallow to deep.
    assert {"model.model.cls_token", "model.model.pos_embed"} <= set(groups[0])
    for block in range(blocks):
        own = [name for name in groups[1 + block] if not name.startswith("model.model.norm.")]
        assert own and all(name.startswith(f"model.model.blocks.{block}.") for name in own)
    named = {name for name, p in backbone.named_parameters() if p.requires_grad}
    assert sorted(n for g in groups for n in g) == sorted(named)


def test_shifted_window_families_export_at_one_size_unless_resized() -> None:
    swin = TimmBackbone("swin_tiny_patch4_window7_224")
    assert not swin.dynamic_export and "shifted-window" in swin.fixed_export_reason
    assert TimmBackbone("swin_tiny_patch4_window7_224", size_policy="resize").dynamic_export
    assert TimmBackbone("test_vit").dynamic_export and TimmBackbone("resnet18").dynamic_export
