"""What each timm model family needs to run at any input size, and the facts read from timm.

timm groups its architectures by module (``timm.models.resnet``, ``...swin_transformer``):
a *family*. Families differ in what sizes their models accept:

- most CNNs and the hierarchical transformers that pad their own windows take any multiple
  of their coarsest stride (pixcore pads to it);
- families whose constructor takes ``dynamic_img_size`` (plain ViTs, DeiT, EVA, DINOv2/v3,
  Swin v1/v2) interpolate their position embeddings or build their attention masks for
  the size at hand, so they take any multiple of their stride too;
- families whose windows or blocks must tile the feature maps exactly, at every stage,
  take multiples of their native input size (a HaloNet at 256 splits stride-32 maps
  into 8x8 blocks): pixcore pads the image up to such a multiple and crops the features
  back;
- a few families convolve without padding (Inception): images smaller than 75 pixels on a
  side are padded up to that and the features cropped back;
- families with position tables of one size (absolute embeddings without interpolation,
  relative-position biases of a fixed window) take only their native size: pixcore
  resizes the image to it and each feature map back to the size the contract promises.

The table below was measured by ``benchmarks/bench_backbone_coverage.py`` (one model per
family, four input sizes); a family not in it gets ``stride`` and, if that fails at some
size, an error naming the setting that fixes it.
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass
from typing import Any, Literal

import timm
import torch
from timm.models import _registry

__all__ = ["SIZE_POLICIES", "Architecture", "SizePolicy", "architecture", "family_maps_exact",
           "family_min_size", "family_policy"]

#: How a backbone meets its model's size rule (see the module docstring).
SizePolicy = Literal["stride", "native_multiple", "resize"]
SIZE_POLICIES: tuple[SizePolicy, ...] = ("stride", "native_multiple", "resize")

#: Families whose models take only multiples of their native size.
_NATIVE_MULTIPLE = frozenset({"byoanet"})

#: Families whose models take only their native size.
_RESIZE = frozenset({
    "beit", "cait", "coat", "convit", "crossvit", "efficientformer", "efficientformer_v2", "gcvit", "hiera",
    "levit", "maxxvit", "mlp_mixer", "mvitv2", "nest", "pit", "tnt", "visformer", "vision_transformer_relpos",
    "volo",
})


#: Families whose convolutions do not pad ("valid"): the smallest input their stem and
#: stride-32 stage can take (torchvision documents 75 x 75 for Inception v3).
_MIN_SIZE = {"inception_v3": 75, "inception_v4": 75, "inception_resnet_v2": 75}


#: Families whose feature maps can miss the contract's size ``ceil(H / stride)`` at sizes
#: that are multiples of the stride (convolutions without padding).
_SHORT_MAPS = frozenset({"inception_v3", "inception_v4", "inception_resnet_v2", "xception"})


#: Shifted-window attention: the attention masks and window counts are built from the
#: input size in Python; torch.export keeps those of the example size (the graph then fails
#: at other sizes in ONNX Runtime) and its shape reasoning over them takes over 10 minutes.
_FIXED_SIZE_EXPORT = frozenset({"swin_transformer", "swin_transformer_v2", "swin_transformer_v2_cr"})


def family_exports_dynamic(family: str) -> bool:
    """Whether a family's models export with dynamic height and width (unless resized)."""
    return family not in _FIXED_SIZE_EXPORT


def family_maps_exact(family: str) -> bool:
    """Whether a family's maps are ``ceil(H / stride)`` for inputs that are stride multiples."""
    return family not in _SHORT_MAPS


def family_min_size(family: str) -> int:
    """The smallest side a family's models take (1: no minimum beyond the stride)."""
    return _MIN_SIZE.get(family, 1)


@dataclass(frozen=True)
class Architecture:
    """Facts about a timm architecture, read from a model built on the meta device."""

    #: The timm module the architecture is defined in (its family).
    family: str
    #: Whether the constructor takes ``dynamic_img_size`` (any multiple of the patch size).
    dynamic_size: bool
    #: Channels and reduction of every feature timm can return (``model.feature_info``).
    channels: tuple[int, ...]
    reductions: tuple[int, ...]
    #: The pretrained configuration's input size ``(height, width)``.
    native_size: tuple[int, int]
    #: Prefix tokens (class, distillation, registers) in front of the patch tokens.
    prefix_tokens: int
    #: Whether the model has ``forward_intermediates`` (timm's intermediate-feature API).
    intermediates: bool

    @property
    def single_stride(self) -> bool:
        """Every feature at one stride: a plain (non-hierarchical) transformer or mixer."""
        return len(set(self.reductions)) == 1 and len(self.reductions) > 1


def family_policy(family: str, dynamic_size: bool) -> SizePolicy:
    """The size policy ``size_policy: auto`` picks for a family."""
    if dynamic_size:
        return "stride"
    if family in _NATIVE_MULTIPLE:
        return "native_multiple"
    if family in _RESIZE:
        return "resize"
    return "stride"


@functools.lru_cache(maxsize=256)
def architecture(model_name: str) -> Architecture:
    """The :class:`Architecture` of a timm model name (with or without a pretrained tag).

    The model is built on the meta device: no memory, no initialisation, a few
    milliseconds; the result is cached per name.
    """
    arch = _registry.get_arch_name(model_name)
    family = _registry._model_to_module.get(arch, "")
    dynamic = True
    with warnings.catch_warnings(), torch.device("meta"):
        warnings.simplefilter("ignore")  # deprecation notices of renamed models
        try:
            model = timm.create_model(model_name, dynamic_img_size=True)
        except TypeError as error:
            if "dynamic_img_size" not in str(error):
                raise
            dynamic = False
            model = timm.create_model(model_name)
    info = list(getattr(model, "feature_info", None) or [])
    config: dict[str, Any] = getattr(model, "pretrained_cfg", None) or {}
    input_size = tuple(config.get("input_size") or (3, 224, 224))
    return Architecture(
        family=family,
        dynamic_size=dynamic,
        channels=tuple(int(level["num_chs"]) for level in info),
        reductions=tuple(int(level["reduction"]) for level in info),
        native_size=(int(input_size[-2]), int(input_size[-1])),
        prefix_tokens=int(getattr(model, "num_prefix_tokens", 0) or 0),
        intermediates=callable(getattr(model, "forward_intermediates", None)),
    )
