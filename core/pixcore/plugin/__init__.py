"""The plugin system: registries, the records hooks yield, parameters and the manager.

* ``_records``: :class:`~pixcore.Component` and :class:`~pixcore.ComponentNamespace`,
  what registration hooks yield;
* ``_params``: the parameter model derived from a factory's signature, and the task
  facts passed to factories that declare them;
* ``_registry``: one :class:`~pixcore.Registry` per component family;
* ``_manager``: the pluggy plugin manager that loads entry points and fills the
  registries;
* ``_builtin``: the components the core registers itself (heads, weightings, the
  folder reader, augmentations).

The hook specifications are the public module :mod:`pixcore.hookspecs`; the public
names are re-exported by :mod:`pixcore`.
"""
