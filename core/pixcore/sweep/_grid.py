"""The grid of a sweep: ``--set key=a,b,c`` axes, their values, and readable folder names.

A value is kept as the text the user wrote, exactly as ``pixcore train --set key=value``
would receive it (parsed as YAML by :func:`pixcore.load_config`). Commas separate values
only at the top level: a comma inside brackets, braces or quotes belongs to the value, so
``--set model.mean=[0.5,0.5,0.5],[0.4,0.4,0.4]`` has two values, each a list.

The splitter is written here rather than taken from a library because neither ``csv``
nor ``shlex`` knows about YAML's brackets and braces, and YAML itself cannot be used to
split: it would re-write each value (``1e-3`` is a string to PyYAML, ``1.0e-3`` a float)
instead of passing on what the user typed.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from pixcore._errors import ConfigError

__all__ = [
    "SEED_KEY",
    "Axis",
    "folder_name",
    "numeric_value",
    "parse_assignments",
    "parse_axes",
    "parse_axis",
    "setting_label",
    "split_values",
]

#: The config key each member's seed goes to (see ``trainer.seed`` in docs/training.md).
SEED_KEY = "trainer.seed"

_CLOSING = {"[": "]", "{": "}", "(": ")"}
_MAX_NAME = 160  # characters of a member's folder name before it is shortened with a hash


@dataclass(frozen=True)
class Axis:
    """One swept config key and its values, in the order given."""

    key: str
    values: tuple[str, ...]


def split_values(text: str, where: str) -> list[str]:
    """Split ``text`` at top-level commas; brackets, braces and quotes keep their commas.

    ``where`` names the option in error messages (e.g. ``--set 'trainer.lr=...'``).
    """
    values, depth, quote, start = [], [], "", 0
    for position, char in enumerate(text):
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in _CLOSING:
            depth.append(_CLOSING[char])
        elif char in _CLOSING.values():
            if not depth or depth.pop() != char:
                raise ConfigError(f"{where}: unmatched {char!r} at position {position + 1} of {text!r}")
        elif char == "," and not depth:
            values.append(text[start:position].strip())
            start = position + 1
    if quote or depth:
        missing = quote or depth[-1]
        raise ConfigError(f"{where}: {text!r} lacks a closing {missing!r}; a value that holds commas "
                          "must be written whole, e.g. [1,2] or '\"a,b\"'")
    values.append(text[start:].strip())
    return values


def _key_and_values(item: str, where: str, example: str) -> tuple[str, list[str]]:
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key or " " in key:
        raise ConfigError(f"{where}: expected KEY=VALUE[,VALUE...], e.g. {example}")
    values = split_values(text, where)
    if any(not value for value in values):
        raise ConfigError(f"{where}: an empty value (two commas in a row, or nothing after '='); write "
                          f"each value, e.g. {example}; an empty string is '\"\"'")
    return key, values


def parse_axis(item: str) -> Axis:
    """One ``--set KEY=A,B,C`` option as an :class:`Axis`; raises :class:`ConfigError` on bad syntax."""
    where = f"--set {item!r}"
    key, values = _key_and_values(item, where, "--set trainer.lr=0.01,0.001")
    if key == SEED_KEY:
        raise ConfigError(f"{where}: the seed is not a setting of a sweep; use --seeds N (seeds 0 to N-1 go to "
                          f"{SEED_KEY} of each member)")
    repeated = sorted({value for value in values if values.count(value) > 1})
    if repeated:
        raise ConfigError(f"{where}: {', '.join(repeated)} given more than once; give each value once")
    return Axis(key, tuple(values))


def parse_axes(items: Sequence[str]) -> tuple[Axis, ...]:
    """Every ``--set`` option of a sweep; a key may be swept by one option only."""
    axes = tuple(parse_axis(item) for item in items)
    keys = [axis.key for axis in axes]
    repeated = sorted({key for key in keys if keys.count(key) > 1})
    if repeated:
        raise ConfigError(f"--set: {', '.join(repeated)} is swept by more than one --set; give all its values "
                          "in one, e.g. --set trainer.lr=0.01,0.001")
    return axes


def parse_assignments(text: str, where: str) -> dict[str, str]:
    """``key=value[,key2=value2]`` (``--baseline``) as ``{key: value}``; values as written."""
    found: dict[str, str] = {}
    for part in split_values(text, where):
        key, sep, value = part.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ConfigError(f"{where}: expected KEY=VALUE[,KEY2=VALUE2], e.g. --baseline trainer.lr=0.001")
        if key.strip() in found:
            raise ConfigError(f"{where}: {key.strip()} is given twice")
        found[key.strip()] = value.strip()
    return found


def setting_label(setting: Sequence[tuple[str, str]]) -> str:
    """``key=value, key2=value2``: a setting as people read it (``(config)`` without swept keys)."""
    return ", ".join(f"{key}={value}" for key, value in setting) or "(config)"


_UNSAFE = re.compile(r"[^A-Za-z0-9._=+-]+")


def _sanitise(text: str) -> str:
    """Keep letters, digits and ``. _ = + -``; any run of other characters becomes one ``-``, none at the ends
    (``[0.5, 0.5]`` gives ``0.5-0.5``; a minus sign of the value stays: ``-1``)."""
    cleaned = _UNSAFE.sub("-", text)
    if _UNSAFE.match(text):
        cleaned = cleaned[1:]
    if text and _UNSAFE.match(text[-1]):
        cleaned = cleaned[:-1]
    return cleaned or "-"


def folder_name(setting: Sequence[tuple[str, str]], seed: int, taken: frozenset[str] = frozenset()) -> str:
    """A member's folder name, e.g. ``model.backbone.name=timm-resnet18__seed=1``.

    Characters a file name should not hold become ``-``. A name already in ``taken`` (two
    settings that differ only in such characters) or longer than 160 characters gets a
    short hash of the exact setting, so that names stay unique and portable.
    """
    parts = [f"{_sanitise(key)}={_sanitise(value)}" for key, value in setting] + [f"seed={seed}"]
    name = "__".join(parts)
    if name in taken or len(name) > _MAX_NAME:
        digest = hashlib.sha1(repr((tuple(setting), seed)).encode()).hexdigest()[:8]
        name = f"{name[:_MAX_NAME]}-{digest}"
    return name


def numeric_value(text: str) -> float | None:
    """The finite number ``text`` writes (``0.01``, ``1e-3``, ``64``), else None (``true`` is not one)."""
    try:
        value = float(text.strip().strip("'\""))
    except ValueError:
        return None
    return value if math.isfinite(value) else None
