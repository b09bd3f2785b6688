"""pixcore's exceptions. Every message says what was wrong and how to fix it.

Each kind of user mistake has its own type, all subclasses of :class:`PixcoreError`:
the ``pixcore`` command prints them as one line (``pixcore: error: ...``, exit status 2)
and shows a traceback only for other exceptions, which are bugs.
"""

from __future__ import annotations

__all__ = [
    "CheckpointError",
    "ConfigError",
    "DeviceError",
    "DuplicateComponentError",
    "PixcoreError",
    "PluginLoadError",
    "UnknownComponentError",
]


class PixcoreError(Exception):
    """Base of every error pixcore raises on purpose."""


class UnknownComponentError(PixcoreError, LookupError):
    """A registry name that nothing provides."""

    def __init__(self, family: str, name: str, message: str) -> None:
        super().__init__(message)
        self.family = family
        self.name = name


class DuplicateComponentError(PixcoreError):
    """Two plugins register the same name in the same registry."""


class PluginLoadError(PixcoreError):
    """A plugin failed to import or to register (raised only in strict mode)."""


class ConfigError(PixcoreError, ValueError):
    """A configuration value is invalid; the message gives its path, e.g. ``model.tasks.depth``."""


class CheckpointError(PixcoreError):
    """A checkpoint or weights file is missing, damaged, of another format, or does not fit."""


class DeviceError(PixcoreError, ValueError):
    """A device name that is malformed (``gpu0``) or names a device this machine lacks."""
