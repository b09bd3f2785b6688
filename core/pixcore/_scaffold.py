"""``pixcore new-plugin``: write a complete, installable plugin package to start from.

Like the cookiecutter templates of napari and datasette, the package it writes installs
with pip, registers its components through an entry point of group ``pixcore``, and
passes its own tests (the contract checks of :mod:`pixcore.testing`) the moment it is
written. Two variants:

* minimal: one head, its parameter model and its tests;
* ``task=True``: a task with its own head, loss, metric and synthetic data set, a run
  config, and tests of each.

The templates are files of ``pixcore/scaffold_templates`` (package data), filled in with
:class:`string.Template` (``${name}`` placeholders; ``$$`` is a literal ``$``).

Example::

    from pixcore._scaffold import write_plugin

    scaffold = write_plugin("pixcore-edges", task=True)   # into ./pixcore-edges
"""

from __future__ import annotations

import keyword
import re
import string
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

from pixcore._errors import PixcoreError

__all__ = ["PluginNames", "Scaffold", "ScaffoldError", "plugin_names", "render_plugin",
           "write_plugin"]

#: The distributions pixcore ships: a new plugin must not take their names.
RESERVED = frozenset({"pixcore", "pixcore-timm", "pixcore-seg", "pixcore-depth", "pixcore-normals"})

#: Lower-case letters and digits, words joined by single '-' or '_', starting with a letter:
#: a valid distribution name whose package name ('-' -> '_') is a valid identifier.
_NAME = re.compile(r"^[a-z][a-z0-9]*(?:[-_][a-z0-9]+)*$")

_TEMPLATES = "scaffold_templates"


class ScaffoldError(PixcoreError):
    """A plugin cannot be written: its name is not usable, or its folder is taken."""


@dataclass(frozen=True)
class PluginNames:
    """The names of one plugin, all derived from its distribution name.

    Attributes:
        distribution: What pip installs: ``"pixcore-edges"``.
        package: The import name: the distribution name with '-' -> '_' (``pixcore_edges``).
        plugin: The entry-point name, which ``pixcore plugins`` shows, and the prefix of
            every component name: the distribution name without a leading ``pixcore-``,
            with '-' -> '_' (``edges``).
        title: The prefix of every class name (``Edges``).

    """

    distribution: str
    package: str
    plugin: str
    title: str


@dataclass(frozen=True)
class _Part:
    """One registered component: its family, registry name, module and public names.

    ``{plugin}`` and ``{title}`` in ``name`` and ``exports`` stand for the plugin's names.
    """

    family: str
    name: str
    module: str
    exports: tuple[str, ...]


_HEAD = _Part("heads", "{plugin}_head", "_head", ("{title}Head",))
_TASK_PARTS = (
    _Part("tasks", "{plugin}", "_task", ("{title}Task",)),
    _HEAD,
    _Part("losses", "{plugin}_l1", "_loss", ("{title}L1",)),
    _Part("metrics", "{plugin}_errors", "_metric", ("{title}Errors",)),
    _Part("datasets", "{plugin}_synthetic", "_dataset", ("{title}Synthetic",)),
)

#: Output path -> template, common to both variants ("{package}" stands for the package).
_COMMON_FILES = {
    "pyproject.toml": "pyproject.toml.tmpl",
    ".gitignore": "gitignore.tmpl",
    "src/{package}/__init__.py": "__init__.py.tmpl",
    "src/{package}/py.typed": "py.typed.tmpl",
    "src/{package}/_head.py": "head.py.tmpl",
    "tests/test_plugin.py": "test_plugin.py.tmpl",
    "tests/test_head.py": "test_head.py.tmpl",
}
_MINIMAL_FILES = {
    **_COMMON_FILES,
    "README.md": "README_minimal.md.tmpl",
    "src/{package}/_plugin.py": "plugin_minimal.py.tmpl",
}
_TASK_FILES = {
    **_COMMON_FILES,
    "README.md": "README_task.md.tmpl",
    "src/{package}/_plugin.py": "plugin_task.py.tmpl",
    "src/{package}/_task.py": "task.py.tmpl",
    "src/{package}/_loss.py": "loss.py.tmpl",
    "src/{package}/_metric.py": "metric.py.tmpl",
    "src/{package}/_dataset.py": "dataset.py.tmpl",
    "tests/test_task.py": "test_task.py.tmpl",
    "tests/test_dataset.py": "test_dataset.py.tmpl",
    "configs/train.yaml": "train.yaml.tmpl",
}


@dataclass(frozen=True)
class Scaffold:
    """A plugin written to disk: where, its names, its files and what it registers."""

    root: Path
    names: PluginNames
    files: tuple[Path, ...]
    registered: dict[str, list[str]]


def plugin_names(name: str) -> PluginNames:
    """Validate a distribution name and derive the plugin's other names from it.

    Raises:
        ScaffoldError: saying what is wrong with ``name`` and suggesting a usable one.

    """
    if not _NAME.match(name):
        raise ScaffoldError(
            f"{name!r} is not a usable plugin name: use lower-case letters and digits, words "
            f"joined by '-' or '_', starting with a letter ({_suggest(name)})"
        )
    if re.sub(r"[-_]", "-", name) in RESERVED:
        raise ScaffoldError(
            f"{name!r} is the name of a distribution that pixcore ships; choose another name, "
            "e.g. 'pixcore-edges'"
        )
    package = name.replace("-", "_")
    plugin = re.sub(r"^pixcore[-_]", "", name).replace("-", "_")
    if keyword.iskeyword(package):
        raise ScaffoldError(
            f"{name!r} would give the package {package!r}, a Python keyword; e.g. "
            f"{'pixcore-' + name!r}"
        )
    if not plugin[0].isalpha():
        raise ScaffoldError(
            f"{name!r} gives the plugin name {plugin!r} (the name without 'pixcore-'), which "
            "prefixes class names and must start with a letter; e.g. "
            f"{'pixcore-my-' + plugin.replace('_', '-')!r}"
        )
    title = "".join(word.capitalize() for word in plugin.split("_"))
    return PluginNames(distribution=name, package=package, plugin=plugin, title=title)


def _suggest(name: str) -> str:
    words = [w for w in re.split(r"[^a-z0-9]+", name.lower()) if w]
    if not words or not words[0][0].isalpha():
        words = ["my", *words]
    return f"e.g. {'-'.join(words)!r}"


def render_plugin(name: str, *, task: bool = False) -> dict[str, str]:
    """The files of a new plugin: relative POSIX path -> content. Writes nothing."""
    names = plugin_names(name)
    templates = _TASK_FILES if task else _MINIMAL_FILES
    values = _values(names, _parts(task), task=task)
    root = files("pixcore") / _TEMPLATES
    return {
        path.format(package=names.package): string.Template(
            (root / template).read_text(encoding="utf-8")
        ).substitute(values)
        for path, template in templates.items()
    }


def write_plugin(name: str, out: Path | str | None = None, *, task: bool = False) -> Scaffold:
    """Write a new plugin package into ``out`` (default: ``./<name>``).

    Raises:
        ScaffoldError: for an unusable name, or when ``out`` exists and is not an empty
            folder (nothing is overwritten).

    """
    names = plugin_names(name)
    root = Path(out) if out is not None else Path(name)
    _check_free(root)
    written = []
    for relative, content in render_plugin(name, task=task).items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content, encoding="utf-8")
        written.append(path)
    return Scaffold(root, names, tuple(written), _registered(names, _parts(task)))


def _parts(task: bool) -> tuple[_Part, ...]:
    return _TASK_PARTS if task else (_HEAD,)


def _check_free(root: Path) -> None:
    if root.is_dir() and any(root.iterdir()):
        raise ScaffoldError(
            f"{root} already exists and is not empty; nothing was written. Pass another folder "
            "with --out, or remove this one"
        )
    if root.exists() and not root.is_dir():
        raise ScaffoldError(f"{root} exists and is not a folder; pass another folder with --out")


def _registered(names: PluginNames, parts: tuple[_Part, ...]) -> dict[str, list[str]]:
    registered: dict[str, list[str]] = {}
    for part in parts:
        registered.setdefault(part.family, []).append(_fill(part.name, names))
    return registered


def _fill(text: str, names: PluginNames) -> str:
    return text.format(plugin=names.plugin, title=names.title)


def _values(names: PluginNames, parts: tuple[_Part, ...], *, task: bool) -> dict[str, str]:
    """The template placeholders and their values."""
    from pixcore import __version__

    registered = _registered(names, parts)
    exports = {_fill(e, names): part.module for part in parts for e in part.exports}
    description = (
        f"The pixcore task '{names.plugin}', with its head, loss, metric and data set"
        if task else f"The pixcore head '{names.plugin}_head'"
    )
    by_module = sorted(exports.items(), key=lambda item: (item[1], item[0]))
    return {
        "distribution": names.distribution,
        "package": names.package,
        "plugin": names.plugin,
        "title": names.title,
        "description": description,
        "pixcore_requirement": f"pixcore>={'.'.join(__version__.split('.')[:2])}",
        "registered": _literal({f: repr(n).replace("'", '"') for f, n in registered.items()}),
        "registered_doc": "\n".join(
            f"- {family}: {', '.join(f'``{n}``' for n in found)}"
            for family, found in registered.items()
        ),
        "exports": _literal({name: f'"{module}"' for name, module in sorted(exports.items())}),
        "all_names": "[\n" + "".join(f'    "{n}",\n' for n in sorted(exports)) + "]",
        "type_checking_imports": "\n".join(
            f"    from {names.package}.{module} import {name} as {name}"
            for name, module in by_module
        ),
    }


def _literal(items: dict[str, str]) -> str:
    """A dict literal, one item a line: keys quoted, values already Python source."""
    lines = [f'    "{key}": {value},' for key, value in items.items()]
    return "{\n" + "\n".join(lines) + "\n}"
