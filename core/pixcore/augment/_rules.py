"""The rule table: for every geometric operation, one kernel per target kind.

A geometric transform (a flip, a crop, a warp, ...) samples its parameters once per call
and describes them as a *geometry* (see :mod:`pixcore.augment._geometry`); every value of
the sample is then mapped by the rule registered for its target kind under the
geometry's operation. A kind without a rule is refused: silently passing it through would
leave it unmoved while the image moves (torchvision's v2 transforms do exactly that for
tensor subclasses they do not know).

The built-in rules live in :mod:`pixcore.augment._builtin_rules`; this module depends on
the geometries (to probe new rules), never the other way round.

Rules are looked up along the kind's class hierarchy (stopping before
:class:`~pixcore.targets.TargetKind`), so a subclass of a built-in kind inherits its
rules until it registers its own.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal, overload

import torch
from torch import Tensor

from pixcore._errors import PixcoreError
from pixcore._targets import TargetKind, UnitVectorField
from pixcore.augment._geometry import Crop, Flip, Geometry, Rotate90, Warp, probe_geometries

__all__ = [
    "OPS",
    "Rule",
    "RuleError",
    "UnsupportedKindError",
    "register_rule",
    "registered_rules",
    "rule_for",
    "unregister_rule",
]

#: The geometric operations that have a rule table. Every geometric transform is one of
#: them (or a sequence of them): ``flip`` (mirror an axis), ``rotate90`` (a quarter turn),
#: ``crop`` (an integer window, padded where it leaves the image) and ``warp`` (affine
#: resampling: resize, scale, resized crop, rotation).
OPS: tuple[str, ...] = ("flip", "rotate90", "crop", "warp")

#: A rule: ``(value, geometry) -> value``. ``value`` is the target as a plain tensor (the
#: caller re-wraps the result in the target's kind); ``geometry`` is the operation's
#: parameters and helpers (:class:`~pixcore.augment.Flip`, ``Rotate90``, ``Crop``,
#: ``Warp``). A rule must not modify ``value`` in place.
Rule = Callable[[Tensor, "Geometry"], Tensor]

_RULES: dict[str, dict[type[TargetKind], Rule]] = {op: {} for op in OPS}
#: ``(op, kind) -> rule or None`` after the class-hierarchy walk; cleared on every change.
_LOOKUP: dict[tuple[str, type], Rule | None] = {}
#: ``(ops, kinds)`` where every kind has a rule for every op; cleared on every change.
_COVERED: set[tuple[tuple[str, ...], tuple[type, ...]]] = set()


class UnsupportedKindError(PixcoreError, TypeError):
    """A transform was asked to move a target kind it has no rule for (or a plain tensor)."""


class RuleError(PixcoreError, ValueError):
    """A rule cannot be registered (unknown operation, duplicate, or it breaks its kind)."""


def _check_op(op: str) -> None:
    if op not in _RULES:
        raise RuleError(f"unknown geometric operation {op!r}; the operations are {', '.join(OPS)}")


def _check_kind(kind: Any) -> None:
    if not (isinstance(kind, type) and issubclass(kind, TargetKind)) or kind is TargetKind:
        raise RuleError(
            f"rules are registered for subclasses of pixcore.targets.TargetKind, got {kind!r}"
        )


# Typed per operation: a rule may take the operation's own geometry class.
@overload
def register_rule(
    op: Literal["flip"], kind: type[TargetKind], rule: Callable[[Tensor, Flip], Tensor], *, replace: bool = False
) -> None: ...
@overload
def register_rule(
    op: Literal["rotate90"], kind: type[TargetKind], rule: Callable[[Tensor, Rotate90], Tensor], *,
    replace: bool = False,
) -> None: ...
@overload
def register_rule(
    op: Literal["crop"], kind: type[TargetKind], rule: Callable[[Tensor, Crop], Tensor], *, replace: bool = False
) -> None: ...
@overload
def register_rule(
    op: Literal["warp"], kind: type[TargetKind], rule: Callable[[Tensor, Warp], Tensor], *, replace: bool = False
) -> None: ...
@overload
def register_rule(op: str, kind: type[TargetKind], rule: Rule, *, replace: bool = False) -> None: ...
def register_rule(
    op: str, kind: type[TargetKind], rule: Callable[[Tensor, Any], Tensor], *, replace: bool = False
) -> None:
    """Teach the geometric operation ``op`` how to move values of ``kind``.

    Args:
        op: One of :data:`OPS`: ``"flip"``, ``"rotate90"``, ``"crop"`` or ``"warp"``.
        kind: The target kind (a :class:`~pixcore.targets.TargetKind` subclass).
            Subclasses of ``kind`` inherit the rule unless they register their own.
        rule: ``(value, geometry) -> value`` on plain tensors; see :data:`Rule`.
        replace: Allow replacing an existing rule for exactly this kind.

    Raises:
        RuleError: ``op`` is unknown, ``kind`` already has a rule (and not ``replace``),
            or the rule breaks an invariant of its kind. Rules for unit-vector kinds are
            probed on a random unit field under the operation and refused unless every
            output vector is unit length or exactly zero (a fill): bilinear blending of
            unit vectors without renormalisation is rejected here.

    Register rules when the module that defines the kind is imported, so that data
    loader worker processes (which import it too) have them.

    """
    _check_op(op)
    _check_kind(kind)
    if not callable(rule):
        raise RuleError(f"a rule is a callable (value, geometry) -> value, got {rule!r}")
    if kind in _RULES[op] and not replace:
        raise RuleError(
            f"target kind {kind.kind!r} ({kind.__qualname__}) already has a {op!r} rule; "
            "pass replace=True to replace it"
        )
    if issubclass(kind, UnitVectorField):
        _probe_unit_vectors(op, kind, rule)
    _RULES[op][kind] = rule
    _LOOKUP.clear()
    _COVERED.clear()


def unregister_rule(op: str, kind: type[TargetKind]) -> None:
    """Remove the rule registered for exactly ``kind`` under ``op`` (KeyError if none)."""
    _check_op(op)
    try:
        del _RULES[op][kind]
    except KeyError:
        raise KeyError(f"no {op!r} rule is registered for {kind.__qualname__}") from None
    _LOOKUP.clear()
    _COVERED.clear()


def rule_for(op: str, kind: type[TargetKind]) -> Rule | None:
    """The rule that moves ``kind`` under ``op``: its own or its nearest base's; else None."""
    key = (op, kind)
    try:
        return _LOOKUP[key]
    except KeyError:
        pass
    _check_op(op)
    table = _RULES[op]
    found: Rule | None = None
    for cls in kind.__mro__:
        if cls is TargetKind or not (isinstance(cls, type) and issubclass(cls, TargetKind)):
            break
        found = table.get(cls)
        if found is not None:
            break
    _LOOKUP[key] = found
    return found


def covered(ops: tuple[str, ...], kinds: tuple[type, ...]) -> bool:
    """Whether every one of ``kinds`` is a target kind with a rule for every one of ``ops``.

    Remembered until the next (un)registration: a pipeline sees the same few kinds in
    every sample, and its transforms check them before each call.
    """
    key = (ops, kinds)
    if key in _COVERED:
        return True
    every = all(
        issubclass(kind, TargetKind) and all(rule_for(op, kind) is not None for op in ops)
        for kind in kinds
    )
    if every:
        _COVERED.add(key)
    return every


def registered_rules() -> dict[str, list[str]]:
    """For each operation, the kind names that have a rule of their own (for listings)."""
    return {op: sorted(kind.kind for kind in table) for op, table in _RULES.items()}


def _probe_unit_vectors(op: str, kind: type[TargetKind], rule: Rule) -> None:
    """Refuse a unit-vector rule whose output is not unit length (or zero) on a probe."""
    g = torch.Generator().manual_seed(0)
    vectors = torch.randn(3, 9, 11, generator=g, dtype=torch.float64)
    vectors[2] = -vectors[2].abs()
    vectors = vectors / vectors.norm(dim=0, keepdim=True)
    for geometry in probe_geometries(op, (9, 11)):
        out = rule(vectors.clone(), geometry)
        if not isinstance(out, Tensor) or out.ndim != 3 or out.shape[0] != 3:
            raise RuleError(
                f"the {op!r} rule for {kind.__qualname__} returned "
                f"{type(out).__name__} {tuple(getattr(out, 'shape', ()))}, not a [3, H, W] "
                "unit-vector field"
            )
        norms = out.double().norm(dim=0)
        bad = ~(((norms - 1.0).abs() <= 1e-4) | (norms == 0))
        if not torch.isfinite(out).all() or bad.any():
            worst = float((norms - 1.0).abs().max()) if torch.isfinite(norms).all() else math.nan
            raise RuleError(
                f"the {op!r} rule for {kind.__qualname__} produces vectors that are not unit "
                f"length (worst |norm - 1| = {worst:.3g} on a probe {geometry!r}): a "
                "resampling rule for unit vectors must use nearest neighbour, or average only "
                "valid neighbours and renormalise. Fill outside pixels with zeros."
            )
