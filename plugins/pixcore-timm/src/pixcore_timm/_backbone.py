"""A timm model as a pixcore backbone."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, cast

import pixcore
import timm
import torch
from pydantic import BeforeValidator, Field
from timm.models import FeatureInfo, group_parameters
from torch import Tensor, nn

__all__ = ["DEFAULT_OUT_INDICES", "TimmBackbone"]

#: The last four feature levels: strides 4, 8, 16 and 32 for CNNs.
DEFAULT_OUT_INDICES = (-4, -3, -2, -1)


def _path_to_str(value: object) -> object:
    return os.fspath(value) if isinstance(value, os.PathLike) else value


#: ``pretrained``: False, or a local weights file (a path object is taken as its string).
Pretrained = Annotated[bool | str, BeforeValidator(_path_to_str)]


def _weights_file(model_name: str, pretrained: bool | str) -> Path | None:
    if pretrained is False:
        return None
    if pretrained is True:
        raise pixcore.ConfigError(
            f"timm/{model_name}: pretrained=True would download weights, and pixcore never "
            "downloads anything. Fetch the weights once yourself (for example "
            f"`timm.create_model({model_name!r}, pretrained=True)` on a machine with network "
            "access, then `safetensors.torch.save_file(model.state_dict(), "
            f"'{model_name}.safetensors')`), and pass the local file as the backbone parameter "
            f"`pretrained`: {{name: timm/{model_name}, params: {{pretrained: "
            f"/path/to/{model_name}.safetensors}}}}."
        )
    path = Path(pretrained).expanduser()
    if not path.is_file():
        raise pixcore.ConfigError(
            f"timm/{model_name}: pretrained weights file {str(path)!r} does not exist (or is not a "
            "file). `pretrained` takes a local .safetensors file or torch checkpoint, or false."
        )
    _check_readable(model_name, path)
    return path


def _check_readable(model_name: str, path: Path) -> None:
    """Read ``path`` with the reader of ``model.pretrained`` before timm reads it.

    That reader names the file and what is wrong with it (empty, truncated, not safetensors,
    a pickle that would run code); timm's own would fail with a parser's traceback.
    """
    from pixcore.train import read_state_dict  # lazy: listing must stay fast

    try:
        read_state_dict(path)
    except pixcore.CheckpointError as error:
        raise pixcore.CheckpointError(
            f"timm/{model_name}: cannot use the `pretrained` weights file: {error}. Give a "
            ".safetensors file or torch checkpoint of this architecture, or `pretrained: false`."
        ) from None


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
    """Any timm model, built with ``features_only=True``, as a multi-scale backbone.

    ``feature_info`` comes from timm's own feature metadata (``channels()`` and
    ``reduction()``). Pretrained weights are loaded only from a local file. pixcore's
    reader of ``model.pretrained`` reads it first, so that a damaged file is named and
    described; then timm loads it through its file override
    (``pretrained_cfg_overlay={"file": ...}``), which reads ``.safetensors`` with
    safetensors and anything else with ``torch.load(..., weights_only=True)``; a
    checkpoint of the full classifier or of the feature extractor both work, and
    ``in_chans`` other than 3 adapts the stem as timm does.
    Every weight of the feature extractor must come from the file: timm loads feature
    extractors non-strictly and only logs what is missing, so that report is turned
    into a :class:`pixcore.ConfigError` instead of leaving layers silently random.

    Args:
        model_name: A timm model name, optionally with a pretrained tag
            (``"resnet18"``, ``"convnext_atto.d2_in1k"``).
        pretrained: False: random initialisation. A path: load weights from that local
            file (.safetensors, or a torch checkpoint loaded with weights_only). True is
            refused: pixcore never downloads.
        out_indices: timm feature levels to return; None: the last four (strides 4..32 for
            CNNs).
        drop_path_rate: Stochastic depth rate in ``[0, 1)`` (only passed to timm when
            non-zero).
        in_chans: Input channels.
        freeze: No gradients to the backbone, and it stays in eval mode (frozen norm
            statistics).

    """

    def __init__(
        self,
        model_name: str,
        pretrained: Pretrained = False,
        out_indices: tuple[int, ...] | None = None,
        drop_path_rate: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0,
        in_chans: Annotated[int, Field(ge=1)] = 3,
        freeze: bool = False,
    ) -> None:
        super().__init__()
        self.model_name = model_name
        self.freeze = freeze
        weights = _weights_file(model_name, pretrained)
        indices = DEFAULT_OUT_INDICES if out_indices is None else tuple(out_indices)
        kwargs: dict[str, Any] = {
            "features_only": True,
            "out_indices": indices,
            "in_chans": in_chans,
            "pretrained": weights is not None,
        }
        if drop_path_rate > 0:
            kwargs["drop_path_rate"] = drop_path_rate
        if weights is not None:
            kwargs["pretrained_cfg_overlay"] = {"file": str(weights)}
        try:
            with _missing_keys() as missing:
                self.model = timm.create_model(model_name, **kwargs)
        except (IndexError, AssertionError, ValueError) as error:
            if out_indices is None:
                hint = (
                    f"by default the last four feature levels {DEFAULT_OUT_INDICES} are taken; "
                    "set `out_indices` for models with fewer levels"
                )
            else:
                hint = f"check `out_indices` {indices}"
            raise pixcore.ConfigError(
                f"timm/{model_name}: timm could not build the feature extractor "
                f"({type(error).__name__}: {error}); {hint}."
            ) from error
        except (RuntimeError, KeyError, FileNotFoundError) as error:
            if weights is None:
                raise
            raise pixcore.ConfigError(
                f"timm/{model_name}: cannot load pretrained weights from {str(weights)!r} "
                f"({type(error).__name__}: {error}). The file must hold a state dict of this "
                "architecture (.safetensors, or a torch checkpoint readable with "
                "weights_only=True)."
            ) from error
        absent = missing.used_by(self.model)
        if absent:
            shown = ", ".join(absent[:8])
            if len(absent) > 8:
                shown += f" and {len(absent) - 8} more"
            raise pixcore.ConfigError(
                f"timm/{model_name}: the weights file {str(weights)!r} does not fit this "
                f"architecture: it lacks {len(absent)} weight(s) of the backbone ({shown}). Save "
                "the state dict of the same timm model (`model.state_dict()`), or set "
                "`pretrained: false`."
            )
        # A features_only timm model carries a FeatureInfo (nn.Module types attributes loosely).
        info = cast(FeatureInfo, self.model.feature_info)
        self.feature_info = [
            pixcore.FeatureLevel(channels=int(c), stride=int(r))
            for c, r in zip(info.channels(), info.reduction(), strict=True)
        ]
        if self.freeze:
            self.model.requires_grad_(False)
            self.model.eval()

    def train(self, mode: bool = True) -> TimmBackbone:
        """Switch train/eval mode; a frozen backbone always stays in eval mode."""
        super().train(mode)
        if self.freeze:
            self.model.eval()
        return self

    def forward(self, x: Tensor) -> list[Tensor]:
        return list(self.model(x))

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
        return f"model_name={self.model_name!r}, freeze={self.freeze}"


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
