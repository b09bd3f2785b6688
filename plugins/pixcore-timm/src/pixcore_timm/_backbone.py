"""A timm model as a pixcore backbone."""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Callable, Iterator
from typing import Annotated, Any, Literal, cast

import pixcore
import timm
import torch
import torch.nn.functional as F
from pydantic import Field
from timm.models import FeatureInfo, group_parameters
from timm.models._features import FeatureGetterNet
from torch import Tensor, nn

from pixcore_timm._families import (
    SIZE_POLICIES,
    Architecture,
    SizePolicy,
    architecture,
    family_exports_dynamic,
    family_maps_exact,
    family_min_size,
    family_policy,
)
from pixcore_timm._hub import Pretrained, Weights, resolve_weights

__all__ = ["DEFAULT_OUT_INDICES", "PROBES", "TimmBackbone"]

#: The last four feature levels: strides 4, 8, 16 and 32 for CNNs.
DEFAULT_OUT_INDICES = (-4, -3, -2, -1)


class _MissingKeys(logging.Handler):
    """Collects timm's report of model weights that a pretrained file did not provide."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.keys: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("Missing keys (") and ")" in message:
            listed = message[len("Missing keys ("):message.index(")")]
            self.keys.extend(key.strip() for key in listed.split(",") if key.strip())

    def used_by(self, model: nn.Module) -> list[str]:
        """The missing weights that ``model`` (the final feature extractor) does use.

        Weights of the classifier, which the feature extractor drops, may be missing.
        Feature extractors built by hooks or getters keep the model under ``model.``.
        """
        names = set(model.state_dict())
        return [k for k in self.keys if k in names or f"model.{k}" in names]


@contextlib.contextmanager
def _missing_keys() -> Iterator[_MissingKeys]:
    # timm loads weights into a feature extractor non-strictly (its classifier is gone)
    # and only logs the weights it could not find; catch that report so that a file of
    # the wrong architecture is an error rather than a silently random backbone.
    logger = logging.getLogger("timm.models._builder")
    handler, level = _MissingKeys(), logger.level
    logger.addHandler(handler)
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


class TimmBackbone(pixcore.Backbone):
    """Any timm model that timm can build as a feature extractor, at any input size.

    Hierarchical models (CNNs, Swin, ConvNeXt...) are built with ``features_only=True`` and
    return the last four levels by default (strides 4 to 32 for most). Plain transformers
    (ViT, DeiT, EVA-02, DINOv2/v3, SigLIP, SAM's ViT...), whose blocks all work at the patch
    stride, are read through timm's intermediate-feature API (``forward_intermediates``):
    four evenly spaced blocks by default, as DPT takes them (blocks 2, 5, 8 and 11 of 12),
    after the model's final norm, as DINOv2's dense evaluations take them. Channels-last
    outputs (Swin, MambaOut...) are returned NCHW. ``feature_info`` is each level's true
    channels and stride.

    Input sizes (``size_policy``; see docs/backbones.md): ``auto`` picks what the model's
    family needs. ``stride``: any multiple of the coarsest stride (pixcore pads to it);
    families with ``dynamic_img_size`` (ViTs, EVA, Swin) are built with it, so their
    position embeddings are interpolated to the size at hand. ``native_multiple``: the image
    is padded to a multiple of the model's native size, as window-partitioned models
    (HaloNet) need, and the features cropped back.
    ``resize``: the image is resized to the native size and every feature map to the size
    the contract promises (models with position tables of one size: BEiT, CaiT, LeViT,
    Hiera, MViTv2, MaxViT, GCViT...).

    Pretrained weights never come from the network: ``pretrained`` is a local file, or
    True / a tag for weights already in the local Hugging Face hub cache or timm's cache
    (see :func:`pixcore_timm._hub.resolve_weights`). Every weight the extractor uses must
    come from the file: timm loads feature extractors non-strictly and only logs what is
    missing, so that report is turned into a :class:`pixcore.ConfigError` instead of
    leaving layers silently random.

    Args:
        model_name: A timm model name, optionally with a pretrained tag
            (``"resnet18"``, ``"vit_small_patch14_dinov2.lvd142m"``).
        pretrained: False: random initialisation. True: the weights of the name's tag (or
            timm's default tag) from the local caches. A tag (``"lvd142m"``): that tag's
            weights from the caches. A path: a local .safetensors file or torch checkpoint.
        out_indices: Feature levels (hierarchical models) or blocks (plain transformers) to
            return; negative counts from the end. None: the last four levels, or four evenly
            spaced blocks.
        drop_path_rate: Stochastic depth rate in ``[0, 1)`` (only passed to timm when
            non-zero).
        in_chans: Input channels.
        freeze: No gradients to the backbone, and it stays in eval mode (frozen norm
            statistics).
        size_policy: ``auto``, ``stride``, ``native_multiple`` or ``resize`` (above).
        class_token: Plain transformers: concatenate the class token to every patch token
            of each level (DINOv2's linear probes); doubles the channels. Register and
            distillation tokens are always dropped.
        final_norm: Plain transformers: apply the model's final norm to each returned block
            (DINOv2 and Depth Anything do; the original DPT does not).
        probe: A dense-probing protocol of DINOv2 (Oquab et al. 2023, section 7): ``lin.1``
            (the last block, with the class token) or ``lin.4`` (the last four blocks, each
            with the class token); pair it with the ``linear`` head and ``batch_norm: true``.
            Sets ``out_indices`` and ``class_token``; plain transformers only.

    """

    def __init__(
        self,
        model_name: str,
        pretrained: Pretrained = False,
        out_indices: tuple[int, ...] | None = None,
        drop_path_rate: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0,
        in_chans: Annotated[int, Field(ge=1)] = 3,
        freeze: bool = False,
        size_policy: Literal["auto", "stride", "native_multiple", "resize"] = "auto",
        class_token: bool = False,
        final_norm: bool = True,
        probe: Literal["lin.1", "lin.4"] | None = None,
    ) -> None:
        super().__init__()
        self.model_name = model_name
        self.freeze = freeze
        self.probe = probe
        if probe is not None:
            out_indices, class_token = PROBES[probe], True
        weights = resolve_weights(model_name, pretrained)
        timm_name = weights.model_name if weights is not None else model_name
        arch = _architecture(timm_name)
        self.tokens = arch.single_stride and arch.intermediates
        _check_token_options(model_name, arch, self.tokens, class_token, probe)
        self.class_token = class_token
        indices = _default_indices(arch) if out_indices is None else tuple(out_indices)
        kwargs: dict[str, Any] = {"in_chans": in_chans}
        if drop_path_rate > 0:
            kwargs["drop_path_rate"] = drop_path_rate
        if arch.dynamic_size:
            kwargs["dynamic_img_size"] = True
        self.model = _build(timm_name, weights, indices, kwargs, self.tokens, final_norm, out_indices)
        info = cast(FeatureInfo, self.model.feature_info)
        channels = [int(c) * (2 if class_token else 1) for c in info.channels()]
        self.feature_info = [
            pixcore.FeatureLevel(channels=c, stride=int(r))
            for c, r in zip(channels, info.reduction(), strict=True)
        ]
        self.channels_last = str(getattr(self.model, "output_fmt", "NCHW")).endswith("NHWC")
        self.size_policy: SizePolicy = (
            family_policy(arch.family, arch.dynamic_size) if size_policy == "auto" else size_policy
        )
        self.native_size = arch.native_size
        self.min_size = family_min_size(arch.family)
        self.maps_exact = family_maps_exact(arch.family) and self.size_policy != "resize"
        self.dynamic_export = family_exports_dynamic(arch.family) or self.size_policy == "resize"
        if not self.dynamic_export:
            self.fixed_export_reason = (
                f"its shifted-window attention ({arch.family}) builds masks and window counts from the input "
                "size, which the exporter fixes at the example's size"
            )
        self.protocol = _protocol(probe, cast(FeatureGetterNet, self.model)) if probe else ""
        if self.freeze:
            self.model.requires_grad_(False)
            self.model.eval()

    @staticmethod
    def check_params(probe: str | None, out_indices: tuple[int, ...] | None, class_token: bool) -> None:
        """``probe`` sets ``out_indices`` and ``class_token``: give one or the other."""
        if probe is not None and (out_indices is not None or class_token):
            raise ValueError(
                f"`probe: {probe}` sets out_indices {PROBES[probe]} and class_token true; "
                "leave out `out_indices` and `class_token`, or drop `probe`"
            )

    def train(self, mode: bool = True) -> TimmBackbone:
        """Switch train/eval mode; a frozen backbone always stays in eval mode."""
        super().train(mode)
        if self.freeze:
            self.model.eval()
        return self

    def forward(self, x: Tensor) -> list[Tensor]:
        height, width = x.shape[-2:]
        fitted = self._fit(x)
        try:
            features = self._features(fitted)
        except (RuntimeError, AssertionError, IndexError) as error:
            if not self._about_size(error, height, width):
                raise
            raise pixcore.ConfigError(self._size_error(height, width, error)) from error
        if self.channels_last:
            features = [f.permute(0, 3, 1, 2) for f in features]
        if self.class_token:
            features = [torch.cat([f, token[:, 0, :, None, None].expand(-1, -1, *f.shape[-2:])], dim=1)
                        for f, token in cast(list[tuple[Tensor, Tensor]], features)]
        size = (fitted.shape[-2], fitted.shape[-1])
        return [self._to_contract(f, level.stride, height, width, size) for f, level in zip(
            features, self.feature_info, strict=True)]

    def _fit(self, x: Tensor) -> Tensor:
        """The image as the size policy gives it to the model.

        While exporting, sizes are symbolic: every step of the policy runs (padding by 0,
        resizing to the same size), so the graph holds for every input size.
        """
        height, width = x.shape[-2:]
        native_h, native_w = self.native_size
        exporting = torch.compiler.is_exporting()
        if self.size_policy == "resize":
            if not exporting and (height, width) == (native_h, native_w):
                return x
            return F.interpolate(x, size=(native_h, native_w), mode="bilinear", align_corners=False)
        pad_h: Any
        pad_w: Any
        if self.size_policy == "native_multiple":
            pad_h, pad_w = (-height) % native_h, (-width) % native_w
        else:  # stride: a multiple already; at least the family's minimum
            pad_h, pad_w = torch.sym_max(0, self.min_size - height), torch.sym_max(0, self.min_size - width)
        if exporting and (self.size_policy == "native_multiple" or self.min_size > 1):
            return F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
        if not exporting and (pad_h or pad_w):
            mode = "reflect" if pad_h < height and pad_w < width else "replicate"
            return F.pad(x, (0, pad_w, 0, pad_h), mode=mode)
        return x

    def _features(self, x: Tensor) -> list[Any]:
        if not self.class_token:
            return list(self.model(x))
        getter = cast(FeatureGetterNet, self.model)
        intermediates = cast(Callable[..., list[Any]], getter.model.forward_intermediates)
        return list(intermediates(
            x, indices=getter.out_indices, norm=getter.norm, output_fmt="NCHW",
            intermediates_only=True, return_prefix_tokens=True,
        ))

    def _to_contract(self, feature: Tensor, stride: int, height: int, width: int, fitted: tuple[int, int]) -> Tensor:
        """A feature map at the contract's size ``ceil(H / stride)``.

        Padding added by the policy is cropped away (the input's share of the ``fitted``
        image). A map of another size is then resized: ``resize`` maps come at the native
        size, and a few families' maps are a pixel or more short of the contract at any
        size (Inception and Xception convolve without padding; CrossViT resizes every input).
        While exporting, the policy decides each step, not the (symbolic) sizes.
        """
        size = (-(-height // stride), -(-width // stride))
        exporting = torch.compiler.is_exporting()
        padded = self.size_policy == "native_multiple" or (self.size_policy == "stride" and self.min_size > 1)
        if padded and (exporting or fitted != (height, width)):
            keep_h = -(-feature.shape[-2] * height // fitted[0])
            keep_w = -(-feature.shape[-1] * width // fitted[1])
            feature = feature[..., :keep_h, :keep_w]
        if exporting:
            if self.maps_exact:
                return feature[..., : size[0], : size[1]]
            return F.interpolate(feature, size=size, mode="bilinear", align_corners=False)
        if tuple(feature.shape[-2:]) != size:
            return F.interpolate(feature, size=size, mode="bilinear", align_corners=False)
        return feature

    def _about_size(self, error: BaseException, height: int, width: int) -> bool:
        """Whether a failure inside timm is (likely) the model refusing this input size.

        timm's size checks are assertions; shape errors deeper in are RuntimeErrors or
        IndexErrors, which only count when the model ran at another size than its native
        one (then they are almost always tables of the native size meeting other sizes).
        """
        if isinstance(error, torch.OutOfMemoryError):
            return False
        if isinstance(error, AssertionError):
            return True
        fitted = self.native_size if self.size_policy == "resize" else (height, width)
        return tuple(fitted) != tuple(self.native_size)

    def _size_error(self, height: int, width: int, error: BaseException) -> str:
        alternatives = [p for p in SIZE_POLICIES if p != self.size_policy]
        return (
            f"timm/{self.model_name} cannot run on a {height}x{width} input with size_policy "
            f"{self.size_policy!r} ({type(error).__name__}: {str(error)[:300]}). Its native size "
            f"is {self.native_size[0]}x{self.native_size[1]}; set the backbone parameter "
            f"`size_policy` to {' or '.join(repr(p) for p in alternatives)} (docs/backbones.md, "
            "'Input sizes'), or train at the native size."
        )

    def layer_groups(self) -> list[list[str]]:
        """One group per block, shallow to deep: timm's ``group_matcher(coarse=False)``.

        The grouping ``timm.optim.param_groups_layer_decay`` uses, read from the full
        classifier (built on the meta device: no memory, no initialisation) and mapped
        onto the feature extractor's parameter names. A model without a
        ``group_matcher``, or whose names cannot be mapped, is grouped by feature level
        (:meth:`pixcore.Backbone.layer_groups`).
        """
        groups = _timm_groups(self.model_name, self.model)
        if groups is None:
            return super().layer_groups()
        return [[f"model.{name}" for name in group] for group in groups]

    def extra_repr(self) -> str:
        return f"model_name={self.model_name!r}, size_policy={self.size_policy!r}, freeze={self.freeze}"


#: ``probe`` -> the blocks it reads (DINOv2's linear evaluation).
PROBES: dict[str, tuple[int, ...]] = {"lin.1": (-1,), "lin.4": (-4, -3, -2, -1)}


def _protocol(probe: str, getter: FeatureGetterNet) -> str:
    """``"DINOv2 lin.4 (blocks 8-11 of 12, ...)"``: recorded with every evaluation result."""
    blocks = [int(i) for i in cast(list[int], getter.out_indices)]
    count = len(getattr(getter.model, "blocks", [])) or max(blocks) + 1
    which = f"block {blocks[0]}" if len(blocks) == 1 else f"blocks {blocks[0]}-{blocks[-1]}"
    norm = ", final norm" if getter.norm else ""
    return f"DINOv2 {probe} ({which} of {count}, patch tokens + class token{norm})"


def _architecture(model_name: str) -> Architecture:
    try:
        return architecture(model_name)
    except Exception as error:  # timm's own error for a model it cannot build
        raise pixcore.ConfigError(
            f"timm/{model_name}: timm could not build this model ({type(error).__name__}: {error})."
        ) from error


def _default_indices(arch: Architecture) -> tuple[int, ...]:
    """Four evenly spaced blocks of a plain transformer, else the last four levels (or all)."""
    count = len(arch.reductions)
    if arch.single_stride and count > 4:
        return tuple(round(count * (k + 1) / 4) - 1 for k in range(4))
    return DEFAULT_OUT_INDICES[-min(4, count):] if count else DEFAULT_OUT_INDICES


def _check_token_options(
    model_name: str, arch: Architecture, tokens: bool, class_token: bool, probe: str | None
) -> None:
    if (class_token or probe) and not (tokens and arch.prefix_tokens > 0):
        what = f"`probe: {probe}`" if probe else "`class_token: true`"
        kind = "has no class token" if tokens else "is not a plain transformer (its features are multi-scale)"
        raise pixcore.ConfigError(
            f"timm/{model_name}: {what} needs a plain transformer with a class token (ViT, DeiT, "
            f"EVA, DINOv2...), but this model {kind}. Leave it out, or pick such a model."
        )


def _build(
    timm_name: str, weights: Weights | None, indices: tuple[int, ...], kwargs: dict[str, Any],
    tokens: bool, final_norm: bool, out_indices: tuple[int, ...] | None,
) -> nn.Module:
    """The feature extractor, with the weights loaded and every used weight checked."""
    if weights is not None:
        kwargs = {**kwargs, "pretrained": True, "pretrained_cfg_overlay": weights.pretrained_cfg_overlay}
    try:
        with _missing_keys() as missing, warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # timm's notices of renamed models
            if tokens:
                # The full model loads the file strictly (its classifier included); the getter
                # then drops the classifier and, unless the final norm is wanted, the norm.
                full = timm.create_model(timm_name, **kwargs)
                model: nn.Module = FeatureGetterNet(full, out_indices=indices, norm=final_norm)
            else:
                model = timm.create_model(timm_name, features_only=True, out_indices=indices, **kwargs)
    except (IndexError, AssertionError, ValueError) as error:
        hint = (f"check `out_indices` {indices}" if out_indices is not None
                else f"by default {indices} are taken; set `out_indices`")
        raise pixcore.ConfigError(
            f"timm/{timm_name}: timm could not build the feature extractor "
            f"({type(error).__name__}: {error}); {hint}."
        ) from error
    except (RuntimeError, KeyError, FileNotFoundError) as error:
        if weights is None:
            raise
        raise pixcore.ConfigError(
            f"timm/{timm_name}: cannot load pretrained weights from {str(weights.file)!r} "
            f"({type(error).__name__}: {error}). The file must hold a state dict of this "
            "architecture (.safetensors, or a torch checkpoint readable with weights_only=True)."
        ) from error
    absent = missing.used_by(model)
    if absent and weights is not None:
        shown = ", ".join(absent[:8]) + (f" and {len(absent) - 8} more" if len(absent) > 8 else "")
        raise pixcore.ConfigError(
            f"timm/{timm_name}: the weights file {str(weights.file)!r} does not fit this "
            f"architecture: it lacks {len(absent)} weight(s) of the backbone ({shown}). Save "
            "the state dict of the same timm model (`model.state_dict()`), or set `pretrained: false`."
        )
    return model


def _timm_groups(model_name: str, extractor: nn.Module) -> list[list[str]] | None:
    """The extractor's parameter names in timm's block groups, shallow to deep; None if unknown."""
    try:
        with torch.device("meta"):
            full = timm.create_model(model_name, pretrained=False)
        group_matcher = getattr(full, "group_matcher", None)
        if group_matcher is None:
            return None
        by_name: dict[str, int] = group_parameters(full, group_matcher(coarse=False), reverse=True)
    except Exception:  # an unknown name, a model that cannot be built on meta: fall back
        return None
    own = [name for name, _ in extractor.named_parameters()]
    for translate in _name_translations(full):
        mapped = {name: translate(name) for name in own}
        if all(original in by_name for original in mapped.values()):
            groups: dict[int, list[str]] = {}
            for name, original in mapped.items():
                groups.setdefault(by_name[original], []).append(name)
            return [groups[index] for index in sorted(groups)]
    return None


def _name_translations(full: nn.Module) -> list[Callable[[str], str]]:
    """Ways timm's feature extractors rename the parameters of the model they wrap.

    ``FeatureListNet`` flattens first-level ``nn.Sequential`` children (``stem.0`` becomes
    ``stem_0``); ``FeatureGetterNet`` keeps the model under ``model.``; models with their
    own feature class keep the names.
    """
    flattened: dict[str, str] = {}
    for name, child in full.named_children():
        if isinstance(child, nn.Sequential):
            for sub, _ in child.named_children():
                flattened[f"{name}_{sub}"] = f"{name}.{sub}"

    def unflatten(name: str) -> str:
        head, dot, rest = name.partition(".")
        return flattened.get(head, head) + dot + rest

    def unwrap(name: str) -> str:
        return name[len("model."):] if name.startswith("model.") else name

    def same(name: str) -> str:
        return name

    return [same, unflatten, unwrap]
