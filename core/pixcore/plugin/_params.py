"""Component parameters, declared once: in the factory's signature.

The signature is the schema. Each parameter's annotation is its type, and
``Annotated[int, Field(ge=1)]`` adds constraints; its default stays the default and a
parameter without one is required; the ``Args:`` section of the docstring describes it
(a ``Field(description=...)`` in the annotation takes precedence). :func:`params_model`
derives the pydantic model from that; a record's explicit ``params`` model, kept for
factories whose signature cannot be the schema, replaces the derived one.

Context facts (a head's ``in_features``, a task's ``num_classes``) reach every factory
whose signature declares a parameter of that name, whichever model validates the user's
parameters (:func:`context_facts`). Rules that involve several parameters live in an
optional ``check_params`` static method of the factory; pixcore calls it after the types
are validated (:func:`run_checks`), so that its ``ValueError`` is reported with the
parameters' config path, and ``__init__`` calls it too for direct construction::

    class MyLoss(pixcore.Loss):
        def __init__(self, num_classes: int | None = None,
                     weights: list[float] | None = None) -> None:
            super().__init__()
            self.check_params(num_classes, weights)
            ...

        @staticmethod
        def check_params(num_classes: int | None, weights: list[float] | None) -> None:
            if num_classes is not None and weights is not None and len(weights) != num_classes:
                raise ValueError(f"weights has {len(weights)} entries for {num_classes} classes")
"""

from __future__ import annotations

import functools
import inspect
import re
import typing
import warnings
from collections.abc import Callable, Mapping
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, create_model
from pydantic.fields import FieldInfo

from pixcore.plugin._records import Component

__all__ = ["context_facts", "declared_parameters", "params_model", "run_checks"]

_BY_NAME = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
_ARGS_HEADERS = ("Args:", "Arguments:", "Parameters:")
_ARG_ENTRY = re.compile(r"^\*{0,2}(\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)$")
_CONFIG = ConfigDict(extra="forbid", arbitrary_types_allowed=True, protected_namespaces=())


def _unwrap(factory: Callable[..., Any]) -> Callable[..., Any]:
    """The class or function behind any ``functools.partial`` layers."""
    while isinstance(factory, functools.partial):
        factory = factory.func
    return factory


def declared_parameters(factory: Callable[..., Any]) -> list[inspect.Parameter]:
    """The parameters of ``factory`` that a caller can pass by name."""
    named = _by_name(factory)
    if not named and inspect.isclass(factory):
        # A class whose ``__new__(cls, *args, **kwargs)`` picks a subclass hides the
        # parameters of ``__init__`` from inspect.signature: read them there.
        named = _by_name(functools.partial(factory.__init__, None))  # type: ignore[misc]
    return named


def _by_name(function: Callable[..., Any]) -> list[inspect.Parameter]:
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):  # a callable without a signature declares nothing
        return []
    return [p for p in parameters if p.kind in _BY_NAME]


# --------------------------------------------------------------------------------------
# Reading the signature
# --------------------------------------------------------------------------------------


def _type_hints(factory: Callable[..., Any]) -> dict[str, Any]:
    """The factory's annotations, resolved, with ``Annotated`` metadata kept."""
    target = _unwrap(factory)
    function = target.__init__ if inspect.isclass(target) else target  # type: ignore[misc]
    try:
        return typing.get_type_hints(function, include_extras=True)
    except Exception:  # one unresolvable annotation must not drop the others' constraints
        return _hints_one_by_one(function)


def _hints_one_by_one(function: Callable[..., Any]) -> dict[str, Any]:
    """Each annotation resolved on its own; one that cannot be resolved validates as Any."""
    namespace = dict(getattr(function, "__globals__", {}))
    hints: dict[str, Any] = {}
    for name, annotation in getattr(function, "__annotations__", {}).items():
        try:
            # What typing.get_type_hints does for a string annotation, one at a time.
            hints[name] = eval(annotation, namespace) if isinstance(annotation, str) else annotation
        except Exception:
            hints[name] = Any
    return hints


def _docstring_descriptions(factory: Callable[..., Any]) -> dict[str, str]:
    """``name -> description`` from the ``Args:`` sections of the class and ``__init__``."""
    target = _unwrap(factory)
    found: dict[str, str] = {}
    if inspect.isclass(target):
        found.update(_args_section(inspect.getdoc(target.__init__) or ""))
    found.update(_args_section(inspect.getdoc(target) or ""))
    return found


def _args_section(doc: str) -> dict[str, str]:
    """The entries of a Google-style ``Args:`` section, continuation lines joined."""
    lines = iter(doc.splitlines())
    if not any(line.strip() in _ARGS_HEADERS for line in lines):
        return {}
    found: dict[str, str] = {}
    entry_indent: int | None = None
    current: str | None = None
    for line in lines:  # the rest of the section: up to a blank line or a dedent
        indent = len(line) - len(line.lstrip())
        entry_indent = indent if entry_indent is None else entry_indent
        if not line.strip() or indent < entry_indent:
            break
        match = _ARG_ENTRY.match(line.strip())
        if indent == entry_indent and match:
            current = match.group(1)
            found[current] = match.group(2).strip()
        elif current is not None:
            found[current] = f"{found[current]} {line.strip()}".strip()
    return found


def _described(annotation: Any) -> bool:
    """Whether ``Annotated[..., Field(description=...)]`` describes the parameter itself."""
    return typing.get_origin(annotation) is Annotated and any(
        isinstance(meta, FieldInfo) and meta.description for meta in annotation.__metadata__
    )


def _field(
    parameter: inspect.Parameter, annotation: Any, description: str | None
) -> tuple[Any, Any]:
    default = ... if parameter.default is inspect.Parameter.empty else parameter.default
    if description is None or _described(annotation):
        return annotation, default
    return annotation, Field(default, description=description)


# --------------------------------------------------------------------------------------
# The model, the facts, the checks
# --------------------------------------------------------------------------------------


def params_model(component: Component) -> type[BaseModel]:
    """The pydantic model that validates ``component``'s parameters.

    The record's own ``params`` model when it has one; otherwise the model derived from
    the factory's signature (see the module docstring): unknown keys are refused.
    """
    if component.params is not None:
        return component.params
    hints = _type_hints(component.factory)
    descriptions = _docstring_descriptions(component.factory)
    fields = {
        p.name: _field(p, hints.get(p.name, Any), descriptions.get(p.name))
        for p in declared_parameters(component.factory)
    }
    title = "".join(part.capitalize() for part in re.split(r"[/_.\-]", component.name))
    with warnings.catch_warnings():
        # A parameter may share its name with a BaseModel method (a data set's
        # `validate`); the field shadows the method on this model only, which is fine.
        warnings.filterwarnings("ignore", message="Field name .* shadows", category=UserWarning)
        return create_model(  # type: ignore[call-overload, no-any-return]
            f"{title}Params", __config__=_CONFIG, **fields
        )


def context_facts(
    component: Component, model: type[BaseModel], context: Mapping[str, Any]
) -> dict[str, Any]:
    """The facts of ``context`` that ``component`` declares: a parameter of its factory,
    or a field of its explicit ``params`` model."""
    wanted = set(model.model_fields) | {p.name for p in declared_parameters(component.factory)}
    return {name: value for name, value in context.items() if name in wanted}


def run_checks(factory: Callable[..., Any], arguments: Mapping[str, Any]) -> None:
    """Call the factory's ``check_params``, if any, with the arguments it names.

    Raises whatever it raises (a ``ValueError`` that names the parameters at fault).
    """
    check = getattr(_unwrap(factory), "check_params", None)
    if not callable(check):
        return
    try:
        parameters = inspect.signature(check).parameters.values()
    except (TypeError, ValueError):
        parameters = []  # type: ignore[assignment]
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        check(**arguments)
        return
    named = {p.name for p in parameters if p.kind in _BY_NAME}
    check(**{name: value for name, value in arguments.items() if name in named})
