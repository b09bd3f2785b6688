"""Registries: one per component family, filled from the plugins' registration hooks."""

from __future__ import annotations

import difflib
import fnmatch
import inspect
import typing
from collections.abc import Iterable, Mapping
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from pixcore._errors import ConfigError, DuplicateComponentError, UnknownComponentError
from pixcore._records import Component, ComponentNamespace, normalize_name

__all__ = ["FAMILIES", "KNOWN_PROVIDERS", "Registry", "params_model"]

T = TypeVar("T")

#: The component families, in the order ``pixcore list`` shows them.
FAMILIES: tuple[str, ...] = (
    "backbones",
    "heads",
    "losses",
    "metrics",
    "datasets",
    "augmentations",
    "tasks",
    "weightings",
)

#: Names that a first-party plugin provides, so that an unknown-name error can say what
#: to install. Glob patterns per family.
KNOWN_PROVIDERS: dict[str, dict[str, str]] = {
    "backbones": {"timm/*": "pixcore-timm"},
    "tasks": {
        "segmentation": "pixcore-seg",
        "depth": "pixcore-depth",
        "normals": "pixcore-normals",
    },
    "losses": {
        "cross_entropy": "pixcore-seg",
        "silog": "pixcore-depth",
        "angular": "pixcore-normals",
        "cosine": "pixcore-normals",
        "l1": "pixcore-depth",
        "berhu": "pixcore-depth",
        "ssi": "pixcore-depth",
        "gradient_matching": "pixcore-depth",
        "dice": "pixcore-seg",
        "focal": "pixcore-seg",
        "lovasz": "pixcore-seg",
        "ohem_cross_entropy": "pixcore-seg",
        "normals_l1": "pixcore-normals",
    },
    "metrics": {
        "miou": "pixcore-seg",
        "depth_errors": "pixcore-depth",
        "angular_error": "pixcore-normals",
    },
    "datasets": {
        "voc": "pixcore-seg",
        "cityscapes": "pixcore-seg",
        "ade20k": "pixcore-seg",
        "nyu_depth_v2": "pixcore-depth",
        "kitti_depth": "pixcore-depth",
    },
}


def _settable_parameters(factory: Any) -> list[inspect.Parameter]:
    skip = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    return [p for p in inspect.signature(factory).parameters.values() if p.kind not in skip]


def params_model(component: Component) -> type[BaseModel]:
    """The pydantic model that validates ``component``'s parameters.

    The record's own ``params`` model when it has one; otherwise one derived from the
    factory's signature, so that a plugin author gets validation by writing type hints.
    """
    if component.params is not None:
        return component.params
    target = component.factory
    init = target.__init__ if inspect.isclass(target) else target
    try:
        hints = typing.get_type_hints(init)
    except Exception:  # unresolvable forward references: validate loosely
        hints = {}
    fields: dict[str, Any] = {}
    for parameter in _settable_parameters(target):
        annotation = hints.get(parameter.name, Any)
        default = ... if parameter.default is inspect.Parameter.empty else parameter.default
        fields[parameter.name] = (annotation, default)
    title = "".join(part.capitalize() for part in component.name.replace("/", "_").split("_"))
    return create_model(  # type: ignore[call-overload, no-any-return]
        f"{title}Params",
        __config__=ConfigDict(extra="forbid", arbitrary_types_allowed=True),
        **fields,
    )


def _format_validation_error(error: ValidationError, path: str) -> str:
    lines = []
    for item in error.errors():
        loc = ".".join(str(part) for part in item["loc"])
        where = f"{path}.{loc}" if path and loc else (path or loc)
        value = f" (got {item['input']!r})" if item["type"] != "missing" else ""
        lines.append(f"  {where}: {item['msg']}{value}")
    return "\n".join(lines)


class Registry(Generic[T]):
    """Named components of one family: register, get, list (glob), create.

    Names are case-insensitive. A name registered twice raises
    :class:`~pixcore.DuplicateComponentError` naming both providers; an unknown name
    raises :class:`~pixcore.UnknownComponentError` with close matches and, where known,
    the distribution to install.
    """

    def __init__(self, family: str) -> None:
        self.family = family
        self.singular = family[:-2] if family.endswith("sses") else family[:-1]  # "losses" -> "loss"
        self._components: dict[str, Component] = {}
        self._namespaces: dict[str, ComponentNamespace] = {}

    # -- filling ----------------------------------------------------------------------

    def register(self, record: Component | ComponentNamespace) -> None:
        """Add a record; raise :class:`DuplicateComponentError` on a name clash."""
        if isinstance(record, ComponentNamespace):
            first = self._namespaces.get(record.prefix)
            if first is not None:
                raise self._duplicate(record.prefix + "*", first.distribution, record.distribution)
            self._namespaces[record.prefix] = record
            return
        if not isinstance(record, Component):
            raise TypeError(
                f"a {self.family} hook yielded {record!r}; yield pixcore.Component or "
                "pixcore.ComponentNamespace records"
            )
        first_component = self._components.get(record.name)
        if first_component is not None:
            raise self._duplicate(
                record.name, first_component.distribution, record.distribution
            )
        self._components[record.name] = record

    def _duplicate(self, name: str, first: str | None, second: str | None) -> DuplicateComponentError:
        return DuplicateComponentError(
            f"{self.singular} {name!r} is registered twice: by {first or '<unknown>'} and by "
            f"{second or '<unknown>'}. Uninstall one of them, or block one with "
            "PIXCORE_BLOCK_PLUGINS=<plugin name> (see `pixcore plugins`)."
        )

    # -- lookup -----------------------------------------------------------------------

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        try:
            self.get(name)
        except UnknownComponentError:
            return False
        return True

    def __len__(self) -> int:
        return len(self._components)

    def get(self, name: str) -> Component:
        """Return the record for ``name`` (resolving namespaces lazily)."""
        try:
            key = normalize_name(name)
        except ValueError as error:
            raise UnknownComponentError(self.family, name, str(error)) from None
        component = self._components.get(key)
        if component is not None:
            return component
        for prefix, namespace in self._namespaces.items():
            if key.startswith(prefix):
                resolved = namespace.resolve(key)
                if resolved is not None:
                    return Component(
                        name=resolved.name,
                        factory=resolved.factory,
                        params=resolved.params,
                        description=resolved.description,
                        distribution=namespace.distribution,
                    )
                raise self._unknown(name, candidates=namespace.list_names(prefix + "*"))
        raise self._unknown(name, candidates=self._components)

    def _namespaced(self, key: str) -> list[str]:
        """Registered names that are ``key`` inside a namespace, e.g. 'timm/resnet18' for 'resnet18'."""
        found = [name for name in self._components if name.endswith("/" + key)]
        found += [p + key for p, ns in self._namespaces.items() if ns.resolve(p + key) is not None]
        return sorted(found)

    def _unknown(self, name: str, candidates: Iterable[str]) -> UnknownComponentError:
        candidates = list(candidates)
        singular = self.singular
        message = f"unknown {singular} {name!r}."
        close = self._namespaced(name.strip().lower()) or difflib.get_close_matches(
            name.lower(), candidates, n=3, cutoff=0.6
        )
        if close:
            message += " Did you mean " + " or ".join(repr(c) for c in close) + "?"
        covered = any(name.lower().startswith(prefix) for prefix in self._namespaces)
        for pattern, distribution in KNOWN_PROVIDERS.get(self.family, {}).items():
            if not covered and fnmatch.fnmatchcase(name.lower(), pattern):
                message += (
                    f" {name!r} is provided by the plugin distribution {distribution}: "
                    f"pip install {distribution}."
                )
                break
        available = sorted(self._components)[:30]
        available += [ns + "*" for ns in self._namespaces]
        message += (
            f" Available {self.family}: {', '.join(available) or '(none)'}"
            f" (`pixcore list {self.family}` shows all)."
        )
        return UnknownComponentError(self.family, name, message)

    def list(self, pattern: str = "*") -> list[str]:
        """Sorted names matching a glob ``pattern``, namespaced names included."""
        pattern = pattern.lower()
        names = [n for n in self._components if fnmatch.fnmatchcase(n, pattern)]
        for prefix, namespace in self._namespaces.items():
            # Only ask a namespace when the pattern can match inside it.
            head = pattern.split("*", 1)[0].split("?", 1)[0].split("[", 1)[0]
            if prefix.startswith(head) or head.startswith(prefix):
                names.extend(n for n in namespace.list_names(pattern) if fnmatch.fnmatchcase(n, pattern))
        return sorted(set(names))

    def records(self) -> list[Component | ComponentNamespace]:
        """Every record, eager components first; for listings."""
        return [*self._components.values(), *self._namespaces.values()]

    # -- creation ---------------------------------------------------------------------

    def validate(
        self, name: str, params: Mapping[str, Any] | None = None, *, path: str = "",
        context: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Validate ``params`` for ``name`` and return the keyword arguments of its factory.

        ``context`` holds facts that pixcore supplies (a head's ``in_features``, a task's
        ``num_classes``); each reaches the factory only if it declares a parameter of that
        name, and an explicit user parameter wins. Errors name the config ``path``.
        """
        try:
            component = self.get(name)
        except UnknownComponentError as error:
            if not path:
                raise
            where = path.removesuffix(".params")  # the component's place in the config
            raise UnknownComponentError(self.family, name, f"{where}: {error}") from None
        model = params_model(component)
        accepted = set(model.model_fields)
        merged = {k: v for k, v in (context or {}).items() if k in accepted}
        merged.update(params or {})
        try:
            validated = model.model_validate(merged)
        except ValidationError as error:
            raise ConfigError(
                f"invalid parameters for {self.singular} {component.name!r}"
                f" (from {component.distribution or 'unknown'}):\n"
                + _format_validation_error(error, path)
                + f"\nAccepted parameters: {', '.join(sorted(accepted - set(context or {}))) or '(none)'}."
            ) from None
        return {k: getattr(validated, k) for k in model.model_fields}

    def create(
        self, name: str, params: Mapping[str, Any] | None = None, *, path: str = "",
        context: Mapping[str, Any] | None = None,
    ) -> T:
        """Validate ``params`` and call the factory of ``name``."""
        kwargs = self.validate(name, params, path=path, context=context)
        return self.get(name).factory(**kwargs)  # type: ignore[no-any-return]
