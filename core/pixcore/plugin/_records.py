"""Typed records that registration hooks yield.

A plugin does not mutate global state: its ``pixcore_<family>`` hook yields
:class:`Component` (one name) or :class:`ComponentNamespace` (a lazily resolved family of
names such as ``timm/*``) records, and pixcore builds the registries from them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

__all__ = ["Component", "ComponentNamespace", "normalize_name"]

_NAME = re.compile(r"^[a-z0-9][a-z0-9_.\-]*(/[a-z0-9_.\-]+)*$")


def normalize_name(name: str) -> str:
    """Lower-case and strip a component name; raise if it has characters we reserve."""
    normal = name.strip().lower()
    if not _NAME.match(normal):
        raise ValueError(
            f"invalid component name {name!r}: use lower-case letters, digits, '_', '-', '.' "
            "and '/' as a namespace separator, e.g. 'my_head' or 'timm/resnet18'"
        )
    return normal


@dataclass(frozen=True)
class Component:
    """One registrable component.

    Attributes:
        name: Registry name, normalised to lower case (``"fpn"``, ``"timm/resnet18"``).
        factory: Called with the validated parameters (plus the context facts its signature
            declares, such as ``in_features`` for heads) to create the component; usually
            the class itself. Its signature is the one declaration of the parameters:
            annotations (``Annotated[int, Field(ge=1)]`` for constraints), defaults and the
            docstring's ``Args:`` give the model pixcore validates against, and an optional
            static method ``check_params`` holds rules between parameters (see
            docs/plugins.md#parameter-validation).
        params: Leave it None. For a factory whose signature cannot be the schema (one
            taking ``**kwargs``), an explicit pydantic model of the user-settable
            parameters; it replaces the derived model, and context facts the factory's
            signature declares still reach the factory.
        description: One line shown by ``pixcore list``.
        distribution: Filled in by pixcore: the distribution (or in-process plugin) that
            provided the record.

    """

    name: str
    factory: Callable[..., Any]
    params: type[BaseModel] | None = None
    description: str = ""
    distribution: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", normalize_name(self.name))


@dataclass(frozen=True)
class ComponentNamespace:
    """A family of names resolved on demand, e.g. every timm model under ``timm/``.

    Use it when there are too many names to register eagerly. ``list_names(pattern)``
    returns full names (with the prefix) matching a glob pattern; ``resolve(name)``
    returns the :class:`Component` for one full name, or None if it does not exist.
    """

    prefix: str
    list_names: Callable[[str], Iterable[str]]
    resolve: Callable[[str], Component | None]
    description: str = ""
    distribution: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        prefix = self.prefix.strip().lower()
        if not prefix.endswith("/"):
            raise ValueError(f"a namespace prefix ends with '/', got {self.prefix!r}")
        object.__setattr__(self, "prefix", prefix)
