"""The plugin manager: loads plugins, calls their registration hooks, builds the registries.

Nothing else in pixcore touches pluggy's ``hook`` attribute: this module wraps it with one
typed method per use.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import os
import threading
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Literal, cast

import pluggy

from pixcore import hookspecs
from pixcore._errors import DuplicateComponentError, PluginLoadError
from pixcore.plugin._records import Component, ComponentNamespace
from pixcore.plugin._registry import FAMILIES, Registry

__all__ = [
    "ENTRY_POINT_GROUP",
    "PluginInfo",
    "PluginLoadWarning",
    "PluginManager",
    "get_plugin_manager",
    "register_plugin",
    "registry",
    "reset_plugin_manager",
]

ENTRY_POINT_GROUP = "pixcore"
#: Set to 1 to load no plugin through entry points (built-ins and in-process ones still load).
DISABLE_AUTOLOAD_ENV = "PIXCORE_DISABLE_PLUGIN_AUTOLOAD"
#: Set to 1 to make a plugin that fails to load an error instead of a warning.
STRICT_ENV = "PIXCORE_STRICT_PLUGINS"
#: Comma-separated entry-point names not to load.
BLOCK_ENV = "PIXCORE_BLOCK_PLUGINS"

BUILTIN_NAME = "pixcore"


class PluginLoadWarning(UserWarning):
    """A plugin failed to load and was skipped (set PIXCORE_STRICT_PLUGINS=1 to fail)."""


@dataclass
class PluginInfo:
    """What ``pixcore plugins`` shows for one plugin.

    ``status``: "loaded"; "failed" (it did not import, or a hook raised; ``error`` says
    why); "blocked" (by ``PIXCORE_BLOCK_PLUGINS``); "clash" (it registers a name that another
    plugin registers too; ``error`` names both and the name).
    """

    name: str
    distribution: str
    version: str | None
    status: Literal["loaded", "failed", "blocked", "clash"]
    error: str | None = None
    registered: dict[str, list[str]] = field(default_factory=dict)


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


class PluginManager:
    """Loads plugins and serves one :class:`Registry` per component family.

    Args:
        autoload: Load entry points of group ``pixcore``. Default: on, unless the
            environment sets ``PIXCORE_DISABLE_PLUGIN_AUTOLOAD=1``.
        strict: Raise :class:`PluginLoadError` when a plugin fails to load, instead of
            warning and skipping it. Default: ``PIXCORE_STRICT_PLUGINS``.
        builtins: Register pixcore's own components (through the same hooks).

    """

    def __init__(
        self, *, autoload: bool | None = None, strict: bool | None = None, builtins: bool = True
    ) -> None:
        self.strict = _env_flag(STRICT_ENV) if strict is None else strict
        self._pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self._pm.add_hookspecs(hookspecs)
        self._infos: dict[str, PluginInfo] = {}
        self._registries: dict[str, Registry[Any]] | None = None
        self._lock = threading.RLock()
        if builtins:
            from pixcore import __version__
            from pixcore.plugin import _builtin

            self.register(_builtin, name=BUILTIN_NAME, distribution="pixcore", version=__version__)
        if (not _env_flag(DISABLE_AUTOLOAD_ENV)) if autoload is None else autoload:
            self.load_entrypoints()

    # -- loading ----------------------------------------------------------------------

    def load_entrypoints(self, entry_points: Iterable[importlib.metadata.EntryPoint] | None = None) -> None:
        """Load every entry point of group ``pixcore`` (or the given ones).

        A plugin that fails to import is reported with its name, distribution and error,
        then skipped; in strict mode the failure raises :class:`PluginLoadError`.
        """
        blocked = {n.strip() for n in os.environ.get(BLOCK_ENV, "").split(",") if n.strip()}
        if entry_points is None:
            entry_points = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
        for ep in entry_points:
            dist_name = ep.dist.name if ep.dist is not None else "<unknown distribution>"
            version = ep.dist.version if ep.dist is not None else None
            if ep.name in self._infos:
                continue
            if ep.name in blocked:
                self._infos[ep.name] = PluginInfo(ep.name, dist_name, version, "blocked")
                continue
            try:
                plugin = ep.load()
            except Exception as error:  # any import-time failure of third-party code
                self._fail(ep.name, dist_name, version, f"{type(error).__name__}: {error}", error)
                continue
            try:
                self.register(plugin, name=ep.name, distribution=dist_name, version=version)
            except PluginLoadError as error:  # e.g. a misspelled hook name
                self._fail(ep.name, dist_name, version, str(error), error)

    def _fail(self, name: str, dist: str, version: str | None, error: str, cause: BaseException) -> None:
        self._infos[name] = PluginInfo(name, dist, version, "failed", error=error)
        plugin = f"pixcore plugin {name!r} (distribution {dist}{f' {version}' if version else ''})"
        fix = f"Fix or uninstall it (pip uninstall {dist}), or block it with {BLOCK_ENV}={name}"
        if self.strict:
            raise PluginLoadError(
                f"{plugin} failed to load: {error}. {fix}; or unset {STRICT_ENV} to skip a "
                "plugin that fails, with a warning."
            ) from cause
        warnings.warn(f"{plugin} failed to load and was skipped: {error}. {fix}.", PluginLoadWarning,
                      stacklevel=3)

    def register(
        self,
        plugin: ModuleType | object,
        name: str | None = None,
        *,
        distribution: str | None = None,
        version: str | None = None,
    ) -> str:
        """Register a plugin object (a module or instance with ``@hookimpl`` functions).

        Use this to add components in-process, without packaging. Returns the plugin's
        name. A misspelled hook name raises at once.
        """
        with self._lock:
            try:
                registered = self._pm.register(plugin, name=name)
            except ValueError as error:  # pluggy: this name or object is already registered
                raise PluginLoadError(f"cannot register plugin {name or plugin!r}: {error}") from None
            if registered is None:
                raise PluginLoadError(f"plugin {name or plugin!r} is blocked")
            try:
                self._pm.check_pending()
            except pluggy.PluginValidationError as error:
                self._pm.unregister(name=registered)  # leave the manager as it was
                hooks = ", ".join(f"pixcore_{family}" for family in FAMILIES)
                raise PluginLoadError(
                    f"plugin {registered!r} was not registered: {error}. "
                    f"The registration hooks are: {hooks}."
                ) from None
            dist = distribution or f"<in-process {registered}>"
            self._infos[registered] = PluginInfo(registered, dist, version, "loaded")
            self._registries = None
            return registered

    def unregister(self, name: str) -> None:
        """Remove a registered plugin by name."""
        with self._lock:
            self._pm.unregister(name=name)
            self._infos.pop(name, None)
            self._registries = None

    # -- registries -------------------------------------------------------------------

    def registry(self, family: str) -> Registry[Any]:
        """The registry of one family (``"backbones"``, ``"heads"``, ...)."""
        if family not in FAMILIES:
            raise KeyError(f"unknown component family {family!r}; families are {', '.join(FAMILIES)}")
        return self._build()[family]

    def _build(self) -> dict[str, Registry[Any]]:
        with self._lock:
            if self._registries is not None:
                return self._registries
            registries, clashes = self._collect()
            if clashes:
                raise clashes[0]
            self._registries = registries
            return registries

    def _collect(self) -> tuple[dict[str, Registry[Any]], list[DuplicateComponentError]]:
        """Call every registration hook; a name registered twice is recorded, not raised."""
        registries: dict[str, Registry[Any]] = {family: Registry(family) for family in FAMILIES}
        clashes: list[DuplicateComponentError] = []
        for name, info in self._infos.items():
            info.registered = {}
            if self._pm.has_plugin(name):  # loaded: its status is worked out again below
                info.status, info.error = "loaded", None
        for family in FAMILIES:
            owners: dict[str, PluginInfo] = {}
            hook = getattr(self._pm.hook, f"pixcore_{family}")
            # pluggy calls the newest plugin first; register in load order instead so
            # that built-ins come first and a duplicate is blamed on the later plugin.
            for impl in hook.get_hookimpls():
                info = self._infos[impl.plugin_name]
                for record in self._call(impl, family, info):
                    record = dataclasses.replace(record, distribution=self._label(info))
                    label = record.prefix + "*" if isinstance(record, ComponentNamespace) else record.name
                    try:
                        registries[family].register(record)
                    except DuplicateComponentError as error:
                        clashes.append(error)
                        self._clash(str(error), owners[label], info)
                        continue
                    owners[label] = info
                    info.registered.setdefault(family, []).append(label)
        return registries, clashes

    @staticmethod
    def _clash(message: str, *infos: PluginInfo) -> None:
        for info in infos:
            info.status = "clash"
            info.error = message if info.error is None else f"{info.error}\n{message}"

    def _call(self, impl: pluggy.HookImpl, family: str, info: PluginInfo) -> list[Component | ComponentNamespace]:
        try:
            # pluggy types a hook's result as object; a registration hook returns an iterable.
            yielded = list(cast("Iterable[object]", impl.function() or ()))
            records: list[Component | ComponentNamespace] = []
            for record in yielded:
                if not isinstance(record, (Component, ComponentNamespace)):
                    raise TypeError(
                        f"yielded {record!r}; yield pixcore.Component or "
                        "pixcore.ComponentNamespace records"
                    )
                records.append(record)
            return records
        except Exception as error:
            message = (
                f"pixcore plugin {info.name!r} ({info.distribution}) raised in "
                f"pixcore_{family}: {type(error).__name__}: {error}"
            )
            if self.strict:
                raise PluginLoadError(message) from error
            info.status, info.error = "failed", message
            warnings.warn(message, PluginLoadWarning, stacklevel=4)
            return []

    @staticmethod
    def _label(info: PluginInfo) -> str:
        return f"{info.distribution} {info.version}" if info.version else info.distribution

    def plugins(self) -> list[PluginInfo]:
        """Every known plugin (loaded, failed, blocked or clashing) with what it registered.

        A duplicate name does not stop the listing (it is what one runs to find the
        clash): the plugins involved get the status "clash" and the error instead.
        """
        try:
            self._build()
        except DuplicateComponentError:
            pass  # recorded on both plugins involved by _collect
        return list(self._infos.values())


_default: PluginManager | None = None
_default_lock = threading.Lock()


def get_plugin_manager() -> PluginManager:
    """The process-wide plugin manager, created (and plugins loaded) on first use."""
    global _default
    with _default_lock:
        if _default is None:
            _default = PluginManager()
        return _default


def reset_plugin_manager(manager: PluginManager | None = None) -> PluginManager | None:
    """Replace the process-wide manager (tests); None re-creates it lazily. Returns the old one."""
    global _default
    with _default_lock:
        old, _default = _default, manager
        return old


def register_plugin(plugin: ModuleType | object, name: str | None = None) -> str:
    """Register ``plugin`` in-process with the process-wide manager."""
    return get_plugin_manager().register(plugin, name=name)


def registry(family: str) -> Registry[Any]:
    """The process-wide registry of ``family``: ``pixcore.registry("heads").list()``."""
    return get_plugin_manager().registry(family)
