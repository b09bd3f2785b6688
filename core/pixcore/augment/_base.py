"""The transform base class, composition, and parameter validation helpers."""

from __future__ import annotations

import abc
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor

import pixcore.augment._builtin_rules  # noqa: F401  (registers the built-in rules)
from pixcore._config import ComponentConfig
from pixcore._errors import ConfigError
from pixcore._interfaces import Augmentation, Sample
from pixcore._targets import ScalarField, TargetKind, UnitVectorField, ValidityMask
from pixcore.augment._geometry import Geometry, Size
from pixcore.augment._rules import UnsupportedKindError, covered, rule_for

__all__ = [
    "Compose",
    "OneOf",
    "Transform",
    "apply_geometry",
    "sample_size",
]


# --------------------------------------------------------------------------------------
# Random draws (all from the caller's generator)
# --------------------------------------------------------------------------------------


def uniform(generator: torch.Generator | None, low: float, high: float) -> float:
    """A float drawn uniformly from ``[low, high)`` (``low`` when the range is empty)."""
    if high <= low:
        return float(low)
    u = float(torch.rand((), generator=generator, dtype=torch.float64))
    return low + (high - low) * u


def randint(generator: torch.Generator | None, low: int, high: int) -> int:
    """An integer drawn uniformly from ``[low, high]`` (inclusive)."""
    if high <= low:
        return int(low)
    return int(torch.randint(low, high + 1, (), generator=generator))


# --------------------------------------------------------------------------------------
# Parameter validation: errors name the transform, the parameter, its value and the range
# --------------------------------------------------------------------------------------


def _fail(owner: str, name: str, value: Any, allowed: str) -> ConfigError:
    return ConfigError(f"{owner}: {name}={value!r} is out of range; allowed: {allowed}")


def check_probability(owner: str, value: float, name: str = "p") -> float:
    """``value`` as a float in ``[0, 1]``."""
    if not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
        raise _fail(owner, name, value, f"0 <= {name} <= 1")
    return float(value)


def check_number(
    owner: str, name: str, value: float, *, low: float = -math.inf, high: float = math.inf,
    low_open: bool = False,
) -> float:
    """``value`` as a finite float in ``[low, high]`` (``(low, high]`` with ``low_open``)."""
    ok = isinstance(value, (int, float)) and math.isfinite(value)
    ok = ok and (value > low if low_open else value >= low) and value <= high
    if not ok:
        left = f"{low:g} < " if low_open else (f"{low:g} <= " if math.isfinite(low) else "")
        right = f" <= {high:g}" if math.isfinite(high) else ""
        raise _fail(owner, name, value, f"a finite number, {left}{name}{right}".rstrip(", "))
    return float(value)


def check_range(
    owner: str, name: str, value: float | Sequence[float], *, low: float = -math.inf,
    high: float = math.inf, symmetric_about: float | None = None, low_open: bool = False,
) -> tuple[float, float]:
    """A ``(lo, hi)`` range within ``[low, high]``.

    A single number ``x`` stands for ``(centre - x, centre + x)`` when ``symmetric_about``
    is given (clipped at ``low``), else for ``(x, x)``.
    """
    if isinstance(value, (int, float)):
        if symmetric_about is not None:
            check_number(owner, name, value, low=0.0)
            lo, hi = max(symmetric_about - value, low), symmetric_about + value
        else:
            lo = hi = float(value)
    else:
        pair = tuple(value)
        if len(pair) != 2 or not all(isinstance(v, (int, float)) for v in pair):
            raise _fail(owner, name, value, "a number or a pair (lo, hi)")
        lo, hi = float(pair[0]), float(pair[1])
        if lo > hi:
            raise _fail(owner, name, value, "a pair (lo, hi) with lo <= hi")
    for bound in (lo, hi):
        check_number(owner, name, bound, low=low, high=high, low_open=low_open)
    return lo, hi


def check_size(owner: str, name: str, value: int | Sequence[int]) -> Size:
    """``(height, width)`` from an int (square) or a pair; both positive."""
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in pair):
        raise _fail(owner, name, value, "a positive int or a pair (height, width) of positive ints")
    return int(pair[0]), int(pair[1])


# --------------------------------------------------------------------------------------
# Sample helpers
# --------------------------------------------------------------------------------------


def sample_size(sample: Mapping[str, Any]) -> Size | None:
    """``(H, W)`` shared by the pixel-aligned values of ``sample``; None if there are none."""
    size: Size | None = None
    first = ""
    for key, value in sample.items():
        if isinstance(value, TargetKind) and value.spatial:
            shape = value.shape
            this = (int(shape[-2]), int(shape[-1]))
            if size is None:
                size, first = this, key
            elif this != size:
                raise ValueError(
                    f"sample values disagree on the image size: {first!r} is {size[0]}x{size[1]} "
                    f"but {key!r} is {this[0]}x{this[1]}; every pixel-aligned value of a "
                    "sample must have the same height and width"
                )
    return size


def apply_geometry(geometry: Geometry, sample: Sample) -> Sample:
    """Map every typed value of ``sample`` by its kind's rule for ``geometry.op``."""
    out: Sample = {}
    for key, value in sample.items():
        if not isinstance(value, TargetKind):
            out[key] = value
            continue
        kind = type(value)
        rule = rule_for(geometry.op, kind)
        if rule is None:  # checked before; a rule may have been unregistered since
            raise UnsupportedKindError(
                f"no {geometry.op!r} rule for target kind {kind.kind!r} (key {key!r})"
            )
        out[key] = rule(value.as_subclass(Tensor), geometry).as_subclass(kind)
    return out


# --------------------------------------------------------------------------------------
# Base class
# --------------------------------------------------------------------------------------


class Transform(Augmentation):
    """Base of pixcore's transforms: checks the sample, flips the coin, applies.

    Subclasses declare the geometric operations they may apply (``ops``; empty for
    photometric transforms) and implement :meth:`apply`. Every call first checks the
    whole sample, whatever the coin says, so a problem shows on the first call:

    * a plain tensor (not a target kind) is refused;
    * a kind without a rule for one of ``ops`` is refused, naming the transform and the
      kind (see :func:`pixcore.augment.register_rule`);
    * a transform that can fill areas (rotation, padding) refuses a sample with depth or
      normals but no :class:`~pixcore.targets.ValidityMask` to mark the filled areas.

    Then, with probability ``p``, :meth:`apply` draws its parameters once from
    ``generator`` and applies the same geometry to every value.
    """

    #: Geometric operations (rule tables) this transform may apply.
    ops: ClassVar[tuple[str, ...]] = ()
    #: Whether it changes image values (colour, blur, noise).
    photometric: ClassVar[bool] = False

    p: float

    def __init__(self, p: float = 1.0) -> None:
        self.p = check_probability(type(self).__name__, p)

    # -- the call ---------------------------------------------------------------------

    def __call__(self, sample: Sample, generator: torch.Generator | None = None) -> Sample:
        size = self.check(sample)
        if not self.coin(generator):
            return self.skip(sample, size)
        return self.apply(sample, size, generator)

    def coin(self, generator: torch.Generator | None) -> bool:
        """Whether to apply, with probability ``p`` (draws only when ``0 < p < 1``)."""
        return not (self.p < 1.0 and (self.p == 0.0 or uniform(generator, 0.0, 1.0) >= self.p))

    def skip(self, sample: Sample, size: Size | None) -> Sample:
        """The result when the coin says no: the sample unchanged (a new dict)."""
        return dict(sample)

    @abc.abstractmethod
    def apply(self, sample: Sample, size: Size | None, generator: torch.Generator | None) -> Sample:
        """Draw the parameters once and transform every value (the coin said yes)."""

    def may_fill(self, size: Size | None) -> bool:
        """Whether this transform can fill areas of an input of ``size`` (default: no)."""
        return False

    def then(self, following: Augmentation) -> Transform | None:
        """One transform doing this and then ``following``, where that is faster; else None.

        :class:`Compose` asks each child about the next. The result must draw from the
        generator exactly what the two draw one after the other, in the same order, and
        give the same values.
        """
        return None

    # -- checks -----------------------------------------------------------------------

    def check(self, sample: Mapping[str, Any]) -> Size | None:
        """Refuse what this transform cannot handle; return the sample's ``(H, W)``."""
        self.check_kinds(sample)
        size = sample_size(sample)
        if self.ops and self.may_fill(size):
            _require_validity(type(self).__name__, sample)
        return size

    def check_kinds(self, sample: Mapping[str, Any]) -> None:
        """Refuse plain tensors and kinds without a rule for one of ``ops``."""
        if covered(tuple(self.ops), tuple(type(v) for v in sample.values() if isinstance(v, Tensor))):
            return
        name = type(self).__name__
        for key, value in sample.items():
            if not isinstance(value, Tensor):
                continue
            if not isinstance(value, TargetKind):
                raise UnsupportedKindError(
                    f"{name}: sample key {key!r} is a plain tensor; wrap it in a pixcore "
                    "target kind (pixcore.targets.Image, ClassMask, ScalarField, "
                    "UnitVectorField, ValidityMask, Intrinsics) so the transform knows its rule"
                )
            for op in self.ops:
                if rule_for(op, type(value)) is None:
                    raise UnsupportedKindError(
                        f"{name} has no rule for target kind {value.kind!r} (key {key!r}, "
                        f"operation {op!r}); applying it would leave that target untransformed "
                        "while the image moves. Register one with "
                        f"pixcore.augment.register_rule({op!r}, {type(value).__qualname__}, rule) "
                        "(see docs/augmentations.md), or drop the key before augmenting."
                    )

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({params})"


def _require_validity(name: str, sample: Mapping[str, Any]) -> None:
    needs = [
        f"{key!r} ({value.kind})"
        for key, value in sample.items()
        if isinstance(value, (ScalarField, UnitVectorField))
    ]
    if needs and not any(isinstance(v, ValidityMask) for v in sample.values()):
        raise UnsupportedKindError(
            f"{name} fills areas outside the input, but the sample has {', '.join(needs)} and "
            "no ValidityMask to mark the filled pixels invalid. Add one, e.g. "
            "sample['valid'] = ValidityMask(torch.ones(H, W, dtype=torch.bool))."
        )


def _check_children(transforms: Iterable[Augmentation], sample: Mapping[str, Any]) -> Size | None:
    """Every child's kind check, up front (sizes change along a chain: each child checks
    the rest, such as the need for a validity mask, when it is called)."""
    size = sample_size(sample)
    for transform in transforms:
        check = getattr(transform, "check_kinds", None)
        if callable(check):
            check(sample)
    return size


def _check_list(owner: str, transforms: Any) -> None:
    if isinstance(transforms, (str, Mapping)) or not isinstance(transforms, Iterable):
        raise _fail(owner, "transforms", transforms, "a list of augmentations or config entries")


def _build(entry: Any, owner: str, index: int) -> Augmentation:
    if isinstance(entry, Augmentation):
        return entry
    if callable(entry) and not isinstance(entry, (str, Mapping, ComponentConfig)):
        return entry  # type: ignore[no-any-return]
    from pixcore.plugin._manager import registry

    config = entry if isinstance(entry, ComponentConfig) else ComponentConfig.model_validate(entry)
    return registry("augmentations").create(  # type: ignore[no-any-return]
        config.name, config.params, path=f"{owner}.transforms.{index}.params"
    )


class Compose(Transform):
    """Apply transforms in order, sharing one generator; the whole chain with probability ``p``.

    Entries are augmentations, or config entries (``{name, params}`` or a name) built
    through the process-wide registry. Every child checks the sample before anything
    is applied, so a kind one of them cannot handle is refused even when it would not
    have been drawn.
    """

    def __init__(self, transforms: list[Any], p: float = 1.0) -> None:
        super().__init__(p)
        _check_list(type(self).__name__, transforms)
        self.transforms: list[Augmentation] = [
            _build(t, "compose", i) for i, t in enumerate(transforms)
        ]
        self._chain: tuple[tuple[Augmentation, ...], list[Augmentation]] = ((), [])

    @property
    def augmentations(self) -> list[Augmentation]:
        """The children (alias of ``transforms``)."""
        return self.transforms

    @property
    def ops(self) -> tuple[str, ...]:  # type: ignore[override]
        return tuple(dict.fromkeys(op for t in self.transforms for op in getattr(t, "ops", ())))

    @property
    def photometric(self) -> bool:  # type: ignore[override]
        return any(getattr(t, "photometric", True) for t in self.transforms)

    def check(self, sample: Mapping[str, Any]) -> Size | None:
        return _check_children(self.transforms, sample)

    def apply(self, sample: Sample, size: Size | None, generator: torch.Generator | None) -> Sample:
        for transform in self._fused():
            sample = transform(sample, generator)
        return sample

    def _fused(self) -> list[Augmentation]:
        """The children, with each pair that :meth:`Transform.then` joins run as one.

        A joined pair draws what the two draw, in the same order, and gives the same
        values in one pass over each target (a resized crop and a flip: each output is
        mirrored while it is still in cache). Rebuilt when ``transforms`` changes.
        """
        children = tuple(self.transforms)
        built_for = self._chain[0]
        if len(built_for) != len(children) or any(a is not b for a, b in zip(built_for, children, strict=True)):
            chain: list[Augmentation] = []
            for child in children:
                joined = chain[-1].then(child) if chain and isinstance(chain[-1], Transform) else None
                if joined is None:
                    chain.append(child)
                else:
                    chain[-1] = joined
            self._chain = (children, chain)
        return self._chain[1]


class OneOf(Transform):
    """Apply one of ``transforms``, drawn with ``weights`` (uniform by default), with probability ``p``."""

    def __init__(
        self, transforms: list[Any], weights: list[float] | None = None, p: float = 1.0
    ) -> None:
        super().__init__(p)
        name = type(self).__name__
        _check_list(name, transforms)
        self.transforms: list[Augmentation] = [
            _build(t, "one_of", i) for i, t in enumerate(transforms)
        ]
        if not self.transforms:
            raise ConfigError(f"{name}: transforms is empty; give at least one transform")
        if weights is None:
            weights = [1.0] * len(self.transforms)
        if len(weights) != len(self.transforms):
            raise _fail(name, "weights", weights, f"one weight per transform ({len(self.transforms)})")
        for w in weights:
            check_number(name, "weights", w, low=0.0)
        if sum(weights) <= 0:
            raise _fail(name, "weights", weights, "non-negative weights with a positive sum")
        total = float(sum(weights))
        self.weights = [float(w) / total for w in weights]

    @property
    def ops(self) -> tuple[str, ...]:  # type: ignore[override]
        return tuple(dict.fromkeys(op for t in self.transforms for op in getattr(t, "ops", ())))

    @property
    def photometric(self) -> bool:  # type: ignore[override]
        return any(getattr(t, "photometric", True) for t in self.transforms)

    def check(self, sample: Mapping[str, Any]) -> Size | None:
        return _check_children(self.transforms, sample)

    def apply(self, sample: Sample, size: Size | None, generator: torch.Generator | None) -> Sample:
        u = uniform(generator, 0.0, 1.0)
        cumulative = 0.0
        chosen = self.transforms[-1]
        for transform, weight in zip(self.transforms, self.weights, strict=True):
            cumulative += weight
            if u < cumulative:
                chosen = transform
                break
        return chosen(sample, generator)

