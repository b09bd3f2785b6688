"""Test-time augmentation and sliding windows around a model, with the model's interface.

A :class:`Predictor` wraps a :class:`~pixcore.MultiTaskModel` and is called like it
(``image -> {task: prediction}``, with ``bindings``), so everything that evaluates a
model (:func:`pixcore.train.evaluate`) evaluates a predictor unchanged.

Merging predictions (over flips, scales and windows) depends on what they are, which the
task's target kind says (:mod:`pixcore.targets`):

========================  ===================================  ===========================
target kind               averaged as                          returned
========================  ===================================  ===========================
``ClassMask``             softmax probabilities (not logits)   log of the mean probability
``UnitVectorField``       vectors                              the mean, renormalised
``ScalarField``, others   values                               the mean
========================  ===================================  ===========================

A class-mask task's prediction is logits; a merged one is log-probabilities, which are
logits too: ``softmax`` of them gives the averaged probabilities back, and argmax,
cross-entropy and the metrics work on them unchanged.

Geometry is undone with the augmentation rule table: the prediction on a mirrored image
is mirrored back by the ``flip`` rule of the task's target kind
(:func:`pixcore.augment.rule_for`), exactly as training data are mirrored. For normals
that negates x, so a model that says "facing right" on the mirrored image contributes
"facing left". A task whose kind has no ``flip`` rule cannot use flip TTA (the error
says how to register one). Multi-scale TTA resizes the image bilinearly, and the
averaged quantities back to the input size bilinearly (normals are renormalised at the
end); depth values are not rescaled with the image.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pixcore._errors import PixcoreError
from pixcore._targets import ClassMask, Image, TargetKind, UnitVectorField
from pixcore.augment import Flip, UnsupportedKindError, rule_for
from pixcore.infer._window import Weighting, check_window, sliding_window

__all__ = ["Predictor", "merge_mode"]


def merge_mode(kind: type[TargetKind]) -> str:
    """How predictions of ``kind`` are averaged: ``"probabilities"``, ``"unit_vectors"`` or ``"mean"``."""
    if issubclass(kind, ClassMask):
        return "probabilities"
    if issubclass(kind, UnitVectorField):
        return "unit_vectors"
    return "mean"


def _to_average(value: Tensor, mode: str) -> Tensor:
    """A prediction -> the quantity that is averaged (probabilities for logits)."""
    value = value.float()
    return value.softmax(dim=1) if mode == "probabilities" else value


def _from_average(value: Tensor, mode: str) -> Tensor:
    """The averaged quantity -> a prediction of the task's form."""
    if mode == "probabilities":
        return value.clamp_min(torch.finfo(value.dtype).tiny).log()
    if mode == "unit_vectors":
        return F.normalize(value, dim=1, eps=1e-12)
    return value


def _flip_rule(kind: type[TargetKind], what: str) -> Any:
    rule = rule_for("flip", kind)
    if rule is None:
        raise UnsupportedKindError(
            f"flip test-time augmentation: {what} has target kind {kind.kind!r}, which has no "
            "'flip' rule, so its prediction on a mirrored image cannot be mirrored back. "
            f"Register one with pixcore.augment.register_rule('flip', {kind.__qualname__}, rule) "
            "(see docs/augmentations.md), or evaluate without --tta."
        )
    return rule


class Predictor(nn.Module):
    """A model plus test-time augmentation and/or sliding-window inference.

    Args:
        model: A :class:`~pixcore.MultiTaskModel` (anything with ``bindings`` whose
            ``task.target_kind`` says the kind of each output, and
            ``model(image) -> {name: [B, C, H, W]}``).
        hflip: Also predict on the horizontally mirrored image and average (the
            prediction mirrored back by its kind's flip rule).
        scales: Image scale factors to predict at and average (``(1.0,)``: the input
            size only). Each scaled prediction is resized back to the input size.
        window: ``(h, w)``: predict in overlapping windows of this size and stitch them
            (:func:`pixcore.infer.sliding_window`); None: the whole image at once.
        overlap: Fraction of a window shared with its neighbour, in ``[0, 1)``.
        weighting: ``"gaussian"`` (default) or ``"uniform"`` weights within a window.

    Without any option the predictor returns ``model(image)`` unchanged. Otherwise it
    returns merged predictions (see the module docstring for class masks).

    Example::

        model = pixcore.infer.load_model("runs/a/checkpoint.safetensors")
        predictor = pixcore.infer.Predictor(model, hflip=True, window=(512, 512), overlap=0.5)
        predictions = predictor(images)   # same keys and shapes as model(images)

    """

    def __init__(
        self,
        model: nn.Module,
        *,
        hflip: bool = False,
        scales: Sequence[float] = (1.0,),
        window: tuple[int, int] | None = None,
        overlap: float = 0.5,
        weighting: Weighting = "gaussian",
    ) -> None:
        super().__init__()
        bindings = getattr(model, "bindings", None)
        if not isinstance(bindings, Mapping) or not bindings:
            raise PixcoreError(
                f"Predictor wraps a model with task bindings (a pixcore.MultiTaskModel); got "
                f"{type(model).__name__}"
            )
        self.model = model
        self.hflip = bool(hflip)
        self.scales = tuple(float(s) for s in scales)
        if not self.scales or any(not (s > 0) for s in self.scales):
            raise PixcoreError(
                f"scales={tuple(scales)!r}: give one or more positive scale factors, e.g. 0.75 1.0 1.25"
            )
        self.window = None if window is None else check_window(window, overlap, weighting)
        self.overlap = float(overlap)
        self.weighting: Weighting = weighting
        self.modes = {name: merge_mode(binding.task.target_kind) for name, binding in bindings.items()}
        if self.hflip:
            self._flip_rules = {
                name: _flip_rule(binding.task.target_kind, f"task {name!r}")
                for name, binding in bindings.items()
            }
            self._image_flip = _flip_rule(Image, "the input image")

    @property
    def bindings(self) -> Mapping[str, Any]:
        """The wrapped model's task bindings (what the evaluation reads)."""
        return cast("Mapping[str, Any]", self.model.bindings)  # the wrapped MultiTaskModel's

    @property
    def plain(self) -> bool:
        """True when the predictor adds nothing to the model (no TTA, no windows)."""
        return not self.hflip and self.scales == (1.0,) and self.window is None

    def describe(self) -> dict[str, Any]:
        """The settings as plain data (recorded next to evaluation results)."""
        return {
            "hflip": self.hflip,
            "scales": list(self.scales),
            "window": None if self.window is None else list(self.window),
            "overlap": self.overlap if self.window is not None else None,
            "weighting": self.weighting if self.window is not None else None,
        }

    def _averaged(self, image: Tensor) -> dict[str, Tensor]:
        """The model's predictions on ``image`` as the quantities that are averaged."""

        def predict(x: Tensor) -> dict[str, Tensor]:
            return {name: _to_average(value, self.modes[name]) for name, value in self.model(x).items()}

        if self.window is None:
            return predict(image)
        return sliding_window(predict, image, self.window, self.overlap, self.weighting)

    def forward(self, image: Tensor) -> dict[str, Tensor]:
        if self.plain:
            return self.model(image)  # type: ignore[no-any-return]
        size = (int(image.shape[-2]), int(image.shape[-1]))
        sums: dict[str, Tensor] = {}
        count = 0
        for scale in self.scales:
            scaled = image if scale == 1.0 else _resize_image(image, scale)
            scaled_size = (int(scaled.shape[-2]), int(scaled.shape[-1]))
            for mirrored in (False, True) if self.hflip else (False,):
                geometry = Flip(scaled_size, axis="horizontal")
                x = self._image_flip(scaled, geometry) if mirrored else scaled
                for name, value in self._averaged(x).items():
                    if mirrored:  # back to the input's orientation, by the kind's rule
                        value = self._flip_rules[name](value, geometry)
                    if scaled_size != size:
                        value = F.interpolate(value, size=size, mode="bilinear", align_corners=False)
                    sums[name] = value if name not in sums else sums[name] + value
                count += 1
        return {name: _from_average(value / count, self.modes[name]) for name, value in sums.items()}


def _resize_image(image: Tensor, scale: float) -> Tensor:
    height, width = image.shape[-2:]
    size = (max(1, round(height * scale)), max(1, round(width * scale)))
    resized = F.interpolate(image.float(), size=size, mode="bilinear", align_corners=False,
                            antialias=scale < 1.0)
    if image.is_floating_point():
        return resized.to(image.dtype)
    info = torch.iinfo(image.dtype)
    return resized.round().clamp(info.min, info.max).to(image.dtype)
