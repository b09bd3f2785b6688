"""Registries: one per component family, filled from the plugins' registration hooks."""

from __future__ import annotations

import builtins
import difflib
import fnmatch
from collections.abc import Iterable, Mapping
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ValidationError

from pixcore._errors import ConfigError, DuplicateComponentError, UnknownComponentError
from pixcore.plugin._params import context_facts, params_model, run_checks
from pixcore.plugin._records import Component, ComponentNamespace, normalize_name

__all__ = ["FAMILIES", "Registry", "params_model"]

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

#: A plugin distribution that provides the names ``NS/...`` is called ``pixcore-NS``: the
#: one rule an unknown namespaced name is answered with (see docs/plugins.md). Core code
#: names no plugin and no plugin component.
DISTRIBUTION_OF_NAMESPACE = "pixcore-{namespace}"


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
    raises :class:`~pixcore.UnknownComponentError` with close matches and where it may
    come from: ``pixcore-NS`` for a name ``NS/...`` whose namespace nothing registers
    (:data:`DISTRIBUTION_OF_NAMESPACE`), some plugin for a plain name.
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
        """Registered names that are ``key`` inside a namespace ('zoo/alpha' for 'alpha')."""
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
        message += self._install_hint(name, suggested=bool(close))
        available = sorted(self._components)[:30]
        available += [ns + "*" for ns in self._namespaces]
        message += (
            f" Available {self.family}: {', '.join(available) or '(none)'}"
            f" (`pixcore list {self.family}` shows all)."
        )
        return UnknownComponentError(self.family, name, message)

    def _install_hint(self, name: str, *, suggested: bool) -> str:
        """Where an unknown name may come from: for ``NS/...``, ``pixcore-NS`` unless a
        namespace ``NS/`` is registered; for a plain name, some plugin."""
        namespace, slash, _ = name.strip().lower().partition("/")
        if slash:
            prefix = namespace + "/"
            if prefix in self._namespaces or any(n.startswith(prefix) for n in self._components):
                return ""
            distribution = DISTRIBUTION_OF_NAMESPACE.format(namespace=namespace)
            return (
                f" No installed plugin registers names under {prefix!r}; by convention the "
                f"plugin distribution {distribution} does: pip install {distribution}."
            )
        if suggested:
            return ""
        return (
            f" If a plugin provides {name!r}, install it: `pixcore plugins` lists the "
            "installed plugins and what they register (see docs/plugins.md)."
        )

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

    def records(self) -> builtins.list[Component | ComponentNamespace]:
        """Every record, eager components first; for listings."""
        return [*self._components.values(), *self._namespaces.values()]

    # -- creation ---------------------------------------------------------------------

    def validate(
        self, name: str, params: Mapping[str, Any] | None = None, *, path: str = "",
        context: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Validate ``params`` for ``name`` and return the keyword arguments of its factory.

        ``context`` holds facts that pixcore supplies (a head's ``in_features``, a task's
        ``num_classes``); each reaches the factory only if its signature (or its explicit
        params model) declares a parameter of that name, and an explicit user parameter
        wins. Errors name the config ``path``.
        """
        return self._arguments(self._component(name, path), params, path, context or {})

    def create(
        self, name: str, params: Mapping[str, Any] | None = None, *, path: str = "",
        context: Mapping[str, Any] | None = None,
    ) -> T:
        """Validate ``params`` and call the factory of ``name``."""
        component = self._component(name, path)
        kwargs = self._arguments(component, params, path, context or {})
        return component.factory(**kwargs)  # type: ignore[no-any-return]

    def _component(self, name: str, path: str) -> Component:
        try:
            return self.get(name)
        except UnknownComponentError as error:
            if not path:
                raise
            where = path.removesuffix(".params")  # the component's place in the config
            raise UnknownComponentError(self.family, name, f"{where}: {error}") from None

    def _arguments(
        self, component: Component, params: Mapping[str, Any] | None, path: str,
        context: Mapping[str, Any],
    ) -> dict[str, Any]:
        """Validate once: the facts it declares, overridden by the user's parameters,
        against its model; then its ``check_params`` rules."""
        model = params_model(component)
        facts = context_facts(component, model, context)
        given = {k: v for k, v in facts.items() if k in model.model_fields}
        given.update(params or {})
        try:
            validated = model.model_validate(given)
        except ValidationError as error:
            lines = _format_validation_error(error, path)
            raise self._invalid(component, model, context, lines) from None
        # Facts the factory declares but an explicit model lacks go to the factory as given.
        kwargs = {**facts, **{k: getattr(validated, k) for k in model.model_fields}}
        try:
            run_checks(component.factory, kwargs)
        except ValueError as error:
            lines = f"  {path or '(parameters)'}: {error}"
            raise self._invalid(component, model, context, lines) from None
        return kwargs

    def _invalid(
        self, component: Component, model: type[BaseModel], context: Mapping[str, Any], lines: str
    ) -> ConfigError:
        accepted = sorted(set(model.model_fields) - set(context)) or ["(none)"]
        return ConfigError(
            f"invalid parameters for {self.singular} {component.name!r}"
            f" (from {component.distribution or 'unknown'}):\n{lines}"
            f"\nAccepted parameters: {', '.join(accepted)}."
        )
