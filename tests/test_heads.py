"""The core's shared heads: contract, whole-model use, initialisation, errors, structure."""

from __future__ import annotations

import inspect
import math
from collections.abc import Iterator
from typing import Any

import pixcore
import pytest
import torch
import torch.nn.functional as F
from pixcore.model import _heads
from pixcore.plugin._params import params_model
from pixcore.testing import TinyBackbone, TinyBackbonePlugin, check_head, isolated_manager
from torch import nn

HEADS = ("fpn", "linear", "deeplabv3plus", "upernet", "dpt")
CLASSES = {
    "fpn": _heads.FPNHead,
    "linear": _heads.LinearHead,
    "deeplabv3plus": _heads.DeepLabV3PlusHead,
    "upernet": _heads.UPerNetHead,
    "dpt": _heads.DPTHead,
}
L = pixcore.FeatureLevel

#: Feature contracts besides TinyBackbone's (strides 4-32): one level at an odd stride,
#: five levels whose stride ratios are not all 2, and three levels at one stride (a ViT).
LEVELS = {
    "tiny": None,
    "one_level_stride_14": [L(7, 14)],
    "five_levels_odd_ratios": [L(5, 2), L(6, 6), L(7, 12), L(9, 24), L(3, 48)],
    "same_stride": [L(8, 16), L(8, 16), L(8, 16)],
}
SIZES = ((32, 32), (37, 50))


def small(name: str, **extra: Any) -> dict[str, Any]:
    """Narrow parameters that keep a head fast on a CPU."""
    return extra if name == "linear" else {"channels": 8, **extra}


@pytest.fixture(scope="module")
def heads_manager() -> pixcore.PluginManager:
    """Pixcore's built-ins only."""
    return isolated_manager()


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    # These tensors are tiny: a second thread gains nothing, and on a busy machine
    # OpenMP's barriers make small ops orders of magnitude slower.
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def build(
    name: str, levels: list[pixcore.FeatureLevel], out_channels: int = 3, **params: Any
) -> Any:
    return isolated_manager().registry("heads").create(
        name, params, context={"in_features": levels, "out_channels": out_channels}
    )


# --------------------------------------------------------------------------------------
# Contract
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("levels", list(LEVELS), ids=list(LEVELS))
@pytest.mark.parametrize("name", HEADS)
def test_contract(name: str, levels: str, heads_manager: pixcore.PluginManager) -> None:
    check_head(
        name, params=small(name), manager=heads_manager, in_features=LEVELS[levels], sizes=SIZES
    )


@pytest.mark.parametrize("name", [h for h in HEADS if h != "linear"])
def test_group_norm_trains_with_batch_size_one(
    name: str, heads_manager: pixcore.PluginManager
) -> None:
    check_head(
        name, params=small(name, norm="gn"), manager=heads_manager, sizes=SIZES, batch_size=1
    )


@pytest.mark.parametrize("name", HEADS)
def test_in_a_model_with_odd_input_size(name: str, manager: pixcore.PluginManager) -> None:
    # TinyBackbone (strides 4-32) through build_model: 37x50 is padded to 64x64 and cropped.
    manager.register(TinyBackbonePlugin(), name="pixcore.testing")
    model = pixcore.build_model(
        "testing/tiny",
        {"c": {"task": "test_classes", "params": {"num_classes": 4},
               "head": {"name": name, "params": small(name)}}},
        manager=manager,
    )
    image = torch.randint(0, 256, (2, 3, 37, 50), dtype=torch.uint8)
    out = model(image)["c"]
    assert out.shape == (2, 4, 37, 50)
    F.cross_entropy(out, torch.randint(0, 4, (2, 37, 50))).backward()
    stem = model.backbone.stem[0].weight.grad
    assert stem is not None and bool(stem.abs().sum() > 0), "no gradient reached the backbone"


# --------------------------------------------------------------------------------------
# Initialisation
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", HEADS)
def test_init(name: str) -> None:
    head = build(name, TinyBackbone(widths=(32, 48, 64, 96)).feature_info, out_channels=5,
                 **({} if name == "linear" else {"channels": 32}))
    output = head.output.requires_grad_(False)
    assert output.out_channels == 5
    assert 0.6e-3 < float(output.weight.std()) < 1.4e-3, "output layer must start small (std 1e-3)"
    assert torch.equal(output.bias, torch.zeros(5))
    head.requires_grad_(False)
    hidden = [m for m in head.modules() if isinstance(m, nn.Conv2d) and m is not output]
    for conv in hidden:
        if conv.weight.numel() < 2000:
            continue  # too few weights to estimate a standard deviation
        fan_out = conv.out_channels * conv.kernel_size[0] * conv.kernel_size[1]
        expected = math.sqrt(2.0 / fan_out)  # He et al. 2015, fan-out mode, ReLU gain
        assert float(conv.weight.std()) == pytest.approx(expected, rel=0.1), conv
        assert conv.bias is None or torch.equal(conv.bias, torch.zeros_like(conv.bias))
    assert hidden or name == "linear"
    for norm in (m for m in head.modules() if isinstance(m, (nn.BatchNorm2d, nn.GroupNorm))):
        assert torch.equal(norm.weight, torch.ones_like(norm.weight))
        assert torch.equal(norm.bias, torch.zeros_like(norm.bias))


@pytest.mark.parametrize("name", HEADS)
def test_fresh_head_predicts_near_zero(name: str) -> None:
    # The neutral point every task decodes from: logits ~ 0 (uniform classes), etc.
    levels = TinyBackbone().feature_info
    head = build(name, levels, **small(name)).eval()
    features = [torch.randn(2, f.channels, 64 // f.stride, 64 // f.stride) for f in levels]
    with torch.no_grad():
        assert float(head(features, (64, 64)).abs().max()) < 0.1


# --------------------------------------------------------------------------------------
# Parameters and errors
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", HEADS)
def test_params_model_matches_the_signature(
    name: str, heads_manager: pixcore.PluginManager
) -> None:
    record = heads_manager.registry("heads").get(name)
    assert record.factory is CLASSES[name] and record.description
    assert record.params is None  # declared once: the signature is the schema
    model = params_model(record)
    assert model.model_config.get("extra") == "forbid"
    signature = inspect.signature(CLASSES[name])
    assert set(signature.parameters) == set(model.model_fields)
    for field_name, field in model.model_fields.items():
        assert field.description, f"{name}.{field_name} has no description"
        default = signature.parameters[field_name].default
        if default is not inspect.Parameter.empty:
            assert field.default == default, f"{name}.{field_name}: {field.default} vs {default}"


@pytest.mark.parametrize("name", HEADS)
@pytest.mark.parametrize(
    ("levels", "problem"),
    [
        ([], "no feature level"),
        ([L(8, 16), L(8, 4)], "finest first"),
        ([L(0, 4)], "must be positive"),
    ],
    ids=["empty", "coarse_first", "zero_channels"],
)
def test_unusable_feature_info_is_a_clear_error(name: str, levels: list[Any], problem: str) -> None:
    with pytest.raises(pixcore.ConfigError, match=problem) as error:
        build(name, levels)
    message = str(error.value)
    assert repr(name) in message
    for level in levels:
        assert f"{level.channels} ch @ stride {level.stride}" in message


@pytest.mark.parametrize("name", HEADS)
def test_wrong_number_of_feature_maps(name: str) -> None:
    head = build(name, TinyBackbone().feature_info, **small(name))
    features = [torch.randn(1, 8, 8, 8)]
    with pytest.raises(ValueError, match=rf"'{name}' was built for 4 feature level"):
        head(features, (32, 32))


def test_bad_params_name_the_parameter() -> None:
    with pytest.raises(pixcore.ConfigError, match="atrous_rates"):
        build("deeplabv3plus", TinyBackbone().feature_info, atrous_rates=[6, 0])
    with pytest.raises(pixcore.ConfigError, match="pool_scales"):
        build("upernet", TinyBackbone().feature_info, pool_scales=[])
    with pytest.raises(pixcore.ConfigError, match="norm"):
        build("dpt", TinyBackbone().feature_info, norm="layer")


# --------------------------------------------------------------------------------------
# Structure, against independent references
# --------------------------------------------------------------------------------------


def test_linear_head_equals_concatenate_then_conv() -> None:
    levels = [L(3, 4), L(5, 8), L(2, 16)]
    head = build("linear", levels, out_channels=2)
    with torch.no_grad():
        head.output.weight.normal_()
        head.output.bias.normal_()
    features = [torch.randn(2, f.channels, 48 // f.stride, 48 // f.stride) for f in levels]
    # Reference: the textbook probe, upsample every level, concatenate, 1x1 conv (einsum).
    size = features[0].shape[-2:]
    stacked = torch.cat(
        [F.interpolate(f, size=size, mode="bilinear", align_corners=False) for f in features], dim=1
    )
    weight = head.output.weight[:, :, 0, 0]
    logits = torch.einsum("oc,bchw->bohw", weight, stacked) + head.output.bias.view(1, -1, 1, 1)
    expected = F.interpolate(logits, size=(48, 48), mode="bilinear", align_corners=False)
    with torch.no_grad():
        torch.testing.assert_close(head(features, (48, 48)), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    ("stride", "rates"), [(16, (6, 12, 18)), (8, (12, 24, 36)), (32, (3, 6, 9)), (14, (7, 14, 21))]
)
def test_default_atrous_rates_keep_their_reach(stride: int, rates: tuple[int, ...]) -> None:
    assert _heads.default_atrous_rates(stride) == rates
    head = build("deeplabv3plus", [L(4, 4), L(8, stride)], channels=8)
    dilations = sorted(m.dilation[0] for m in head.aspp.modules() if isinstance(m, nn.Conv2d)
                       and m.kernel_size == (3, 3))
    assert tuple(dilations) == rates
    custom = build("deeplabv3plus", [L(4, 4), L(8, stride)], channels=8, atrous_rates=(2, 4))
    assert custom.atrous_rates == (2, 4)


@pytest.mark.parametrize("name", HEADS)
def test_which_levels_reach_the_output(name: str) -> None:
    # DeepLabv3+ reads only the coarsest (ASPP) and the finest (low-level) maps; the other
    # heads fuse every level.
    levels = [L(4, 4), L(5, 8), L(6, 16), L(7, 32)]
    head = build(name, levels, **small(name))
    with torch.no_grad():
        head.output.weight.normal_()  # a visible output, so that every path carries gradient
    features = [torch.randn(2, f.channels, 64 // f.stride, 64 // f.stride, requires_grad=True)
                for f in levels]
    head(features, (64, 64)).square().sum().backward()
    reached = [bool(f.grad is not None and f.grad.abs().sum() > 0) for f in features]
    assert reached == ([True, False, False, True] if name == "deeplabv3plus" else [True] * 4)


def test_deeplab_low_level_projection_reads_the_finest_level() -> None:
    head = build("deeplabv3plus", [L(24, 4), L(16, 8), L(40, 32)], channels=8)
    assert head.low_level[0].in_channels == 24 and head.low_level[0].out_channels == 48
    assert head.aspp.branches[0][0].in_channels == 40


def test_fpn_stages_per_level_follow_panoptic_fpn() -> None:
    # Kirillov et al. 2019: the level at stride 4 * 2**i gets max(1, i) conv stages.
    head = build("fpn", [L(4, 4), L(4, 8), L(4, 16), L(4, 32), L(4, 64)], channels=8)
    assert [len(branch) for branch in head.branches] == [1, 1, 2, 3, 4]


def test_projection_commutes_with_bilinear_resizing() -> None:
    # Why DPT's fusion blocks (and the linear head) may project before upsampling.
    conv = nn.Conv2d(6, 4, 1)
    x = torch.randn(2, 6, 5, 7)
    up_then_project = conv(F.interpolate(x, size=(13, 9), mode="bilinear", align_corners=False))
    project_then_up = F.interpolate(conv(x), size=(13, 9), mode="bilinear", align_corners=False)
    torch.testing.assert_close(up_then_project, project_then_up, rtol=1e-5, atol=1e-6)


def _conv_flops(run: Any) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.no_grad():
        run()
    return counter.get_total_flops()


def test_fpn_and_upernet_match_segmentation_models_pytorch() -> None:
    # The same layers as smp's FPN decoder (pyramid and segmentation widths both equal to
    # `channels`) and UPerNet decoder: equal parameter counts and convolution work.
    pytest.importorskip("segmentation_models_pytorch")
    from segmentation_models_pytorch.decoders.fpn.decoder import FPNDecoder
    from segmentation_models_pytorch.decoders.upernet.decoder import UPerNetDecoder

    channels = (3, 16, 16, 24, 40, 48)  # smp also lists the input and the stride-2 level
    levels = [L(c, 2 ** (i + 2)) for i, c in enumerate(channels[2:])]
    features = [torch.randn(1, c, 64 // 2**i, 64 // 2**i) for i, c in enumerate(channels)]
    width = 32  # smp's GroupNorm has 32 groups
    classifier = nn.Conv2d(width, 5, 1)  # smp's segmentation head (before upsampling)

    def params(*modules: nn.Module) -> int:
        return sum(p.numel() for m in modules for p in m.parameters())

    ours = build("fpn", levels, out_channels=5, channels=width).eval()
    theirs = FPNDecoder(list(channels), pyramid_channels=width, segmentation_channels=width,
                        dropout=0.0).eval()
    assert params(ours) == params(theirs, classifier)
    assert _conv_flops(lambda: ours(features[2:], (64, 64))) == _conv_flops(
        lambda: classifier(theirs(features))
    )

    ours_uper = build("upernet", levels, out_channels=5, channels=width).eval()
    theirs_uper = UPerNetDecoder(list(channels), decoder_channels=width).eval()
    assert _conv_flops(lambda: ours_uper(features[2:], (64, 64))) == _conv_flops(
        lambda: classifier(theirs_uper(list(features)))
    )


# --------------------------------------------------------------------------------------
# Single-stride features (plain ViTs): ViTDet's pyramid, DPT's reassemble, DINOv2's probe
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("count", "factors"), [
    (4, [4.0, 2.0, 1.0, 0.5]), (3, [2.0, 1.0, 0.5]), (2, [1.0, 0.5]), (1, [0.5]),
    (7, [4.0, 4.0, 2.0, 2.0, 1.0, 1.0, 0.5]),
])
def test_pyramid_factors(count: int, factors: list[float]) -> None:
    from pixcore.model._pyramid import pyramid_factors

    assert pyramid_factors(count) == factors


@pytest.mark.parametrize(("patch", "strides"), [(16, [4, 8, 16, 32]), (14, [4, 7, 14, 28])])
def test_simple_pyramid_follows_vitdet(patch: int, strides: list[int]) -> None:
    from pixcore.model import SimplePyramid

    neck = SimplePyramid([L(64, patch)] * 4)
    # ViTDet: channels halve per x2 step; max pooling keeps them.
    assert [(f.channels, f.stride) for f in neck.feature_info] == list(zip([16, 32, 64, 64], strides, strict=True))
    tokens = [torch.randn(2, 64, 5, 7) for _ in range(4)]
    out = neck(tokens)
    assert [tuple(o.shape[-2:]) for o in out] == [(20, 28), (10, 14), (5, 7), (3, 4)]
    assert out[2] is tokens[2]  # x1 is the level itself
    torch.testing.assert_close(out[3], F.max_pool2d(tokens[3], 2, ceil_mode=True))
    up = neck.resample[0]
    assert [type(m).__name__ for m in up] == ["ConvTranspose2d", "GroupNorm", "GELU", "ConvTranspose2d"]


def test_dpt_reassembles_single_stride_levels_to_four_strides() -> None:
    head = build("dpt", [L(12, 16)] * 4, channels=8)
    # DPT (Ranftl et al. 2021): x4 and x2 by transposed convs with kernel = stride, x1/2 by a
    # 3x3 stride-2 conv; a pyramid backbone's levels are only projected.
    kinds = [[type(m).__name__ for m in r] for r in head.reassemble]
    assert kinds == [["Conv2d", "ConvTranspose2d"], ["Conv2d", "ConvTranspose2d"], ["Conv2d"], ["Conv2d", "Conv2d"]]
    assert [r[1].stride for r in head.reassemble if len(r) > 1] == [(4, 4), (2, 2), (2, 2)]
    features = [torch.randn(1, 12, 6, 8) for _ in range(4)]
    sizes = [tuple(r(f).shape[-2:]) for r, f in zip(head.reassemble, features, strict=True)]
    assert sizes == [(24, 32), (12, 16), (6, 8), (3, 4)]
    assert head(features, (96, 128)).shape == (1, 3, 96, 128)
    pyramid = build("dpt", [L(12, 4), L(12, 8)], channels=8)
    assert [len(r) for r in pyramid.reassemble] == [1, 1]


def test_linear_head_with_batch_norm_is_dinov2s_bn_head() -> None:
    levels = [L(6, 14)] * 4  # lin.4: four blocks at one stride
    head = build("linear", levels, out_channels=2, batch_norm=True)
    with torch.no_grad():
        head.output.weight.normal_()
        for norm in head.norms:
            norm.running_mean.normal_()
            norm.running_var.uniform_(0.5, 2.0)
    head.eval()
    features = [torch.randn(2, 6, 5, 7) for _ in levels]
    # Reference: DINOv2's BNHead, concatenate, BatchNorm over the concatenation, 1x1 conv.
    stacked = torch.cat(features, dim=1)
    mean = torch.cat([n.running_mean for n in head.norms])
    var = torch.cat([n.running_var for n in head.norms])
    normed = (stacked - mean.view(1, -1, 1, 1)) / torch.sqrt(var.view(1, -1, 1, 1) + 1e-5)
    logits = torch.einsum("oc,bchw->bohw", head.output.weight[:, :, 0, 0], normed)
    expected = F.interpolate(logits + head.output.bias.view(1, -1, 1, 1), size=(70, 98), mode="bilinear")
    with torch.no_grad():
        torch.testing.assert_close(head(features, (70, 98)), expected, rtol=1e-4, atol=1e-5)


class _SingleStrideBackbone(pixcore.Backbone):
    """Four levels at stride 16, like a plain ViT."""

    def __init__(self) -> None:
        super().__init__()
        self.feature_info = [L(8, 16)] * 4
        self.proj = nn.Conv2d(3, 32, 16, stride=16)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return list(self.proj(x).chunk(4, dim=1))


class _SingleStridePlugin:
    @pixcore.hookimpl
    def pixcore_backbones(self) -> list[pixcore.Component]:
        return [pixcore.Component("single-stride", _SingleStrideBackbone)]


def test_pyramid_heads_get_the_simple_pyramid_and_the_others_the_levels() -> None:
    manager = isolated_manager(_SingleStridePlugin(), "pixcore_seg._plugin")
    tasks = {head: {"task": "segmentation", "params": {"num_classes": 3}, "head": {"name": head, "params": small(head)}}
             for head in HEADS}
    model = pixcore.build_model("single-stride", tasks=tasks, manager=manager)
    assert model.neck_heads == {"fpn", "deeplabv3plus", "upernet"}
    for name in ("fpn", "deeplabv3plus", "upernet"):
        assert [f.stride for f in model.heads[name].in_features] == [4, 8, 16, 32]
    for name in ("linear", "dpt"):
        assert [f.stride for f in model.heads[name].in_features] == [16] * 4
    calls: list[int] = []
    model.neck.register_forward_hook(lambda *_: calls.append(1))
    out = model(torch.randint(0, 256, (2, 3, 61, 83), dtype=torch.uint8))
    assert calls == [1]  # one pyramid for every head that reads it
    assert all(o.shape == (2, 3, 61, 83) for o in out.values())
    # A pyramid backbone gets no neck at all.
    cnn = pixcore.build_model(
        "testing/tiny", tasks={"s": {"task": "segmentation", "params": {"num_classes": 3}}},
        manager=isolated_manager("pixcore_seg._plugin", tiny_backbone=True),
    )
    assert cnn.neck is None and "neck" not in dict(cnn.named_children())
