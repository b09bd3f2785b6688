"""Plugin managers isolated from whatever is installed, for reproducible tests."""

from __future__ import annotations

import importlib
from types import ModuleType

from pixcore.plugin._manager import PluginManager
from pixcore.testing._backbone import TinyBackbonePlugin

__all__ = ["isolated_manager"]


def isolated_manager(
    *plugins: ModuleType | object | str,
    builtins: bool = True,
    tiny_backbone: bool = False,
) -> PluginManager:
    """A :class:`pixcore.PluginManager` that sees exactly the given plugins.

    Entry points are not loaded, so a test does not depend on what else is installed,
    and plugin failures raise instead of warning (strict mode).

    Args:
        plugins: Plugin modules or objects with ``@pixcore.hookimpl`` functions, or
            importable module names (``"pixcore_seg._plugin"``).
        builtins: Also register pixcore's own components (the ``fpn`` and ``linear``
            heads, the ``synthetic`` data set, ...).
        tiny_backbone: Also register :class:`pixcore.testing.TinyBackbone` as
            ``"testing/tiny"``.

    Example::

        import pixcore
        from pixcore.testing import isolated_manager
        import my_plugin

        manager = isolated_manager(my_plugin, tiny_backbone=True)
        model = pixcore.build_model("testing/tiny", tasks=["my_task"], manager=manager)

    """
    manager = PluginManager(autoload=False, strict=True, builtins=builtins)
    for plugin in plugins:
        if isinstance(plugin, str):
            plugin = importlib.import_module(plugin)
        name = plugin.__name__ if isinstance(plugin, ModuleType) else None
        manager.register(plugin, name=name)
    if tiny_backbone:
        manager.register(TinyBackbonePlugin(), name="pixcore.testing")
    return manager
