"""The error every contract check raises, and small assertion helpers."""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor

__all__ = ["ContractError", "require", "require_finite", "same_results"]


class ContractError(AssertionError):
    """A component breaks a pixcore interface contract; the message says which rule.

    It derives from ``AssertionError`` so that test runners report it as a failure.
    """


def require(condition: bool, message: str) -> None:
    """Raise :class:`ContractError` with ``message`` unless ``condition`` holds."""
    if not condition:
        raise ContractError(message)


def require_finite(value: Tensor, what: str) -> None:
    """Raise unless every element of ``value`` is finite."""
    if not bool(torch.isfinite(value).all()):
        bad = int((~torch.isfinite(value)).sum())
        raise ContractError(f"{what} has {bad} non-finite value(s) (shape {tuple(value.shape)})")


def _close(a: float, b: float, rtol: float, atol: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return math.isclose(a, b, rel_tol=rtol, abs_tol=atol)


def same_results(
    first: Mapping[str, float], second: Mapping[str, float], what: str,
    *, rtol: float = 1e-6, atol: float = 1e-9,
) -> None:
    """Raise unless two metric result dicts have the same keys and (NaN-aware) close values."""
    require(
        set(first) == set(second),
        f"{what}: result keys differ: {sorted(set(first) ^ set(second))}",
    )
    for key in first:
        require(
            _close(float(first[key]), float(second[key]), rtol, atol),
            f"{what}: {key!r} is {first[key]!r} vs {second[key]!r}",
        )
