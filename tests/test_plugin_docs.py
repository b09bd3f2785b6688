"""docs/plugins.md states every contract a plugin author must meet, and the test helpers.

* every member of the component interfaces (abstract ones and the optional ones they
  define), of target kinds and of the geometries a rule receives is in the "Interface
  reference", and every abstract one is marked *must*;
* every public name of ``pixcore.testing`` is in "Testing a plugin", and the signatures
  written there are the real ones.
"""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path
from typing import Any

import pixcore
import pixcore.testing
import pytest
from pixcore import augment
from pixcore._interfaces import FeatureLevel, LossOutput
from pixcore.targets import TargetKind

PLUGINS_MD = Path(__file__).resolve().parents[1] / "docs" / "plugins.md"

#: What a plugin author implements or is handed, in the order of the reference.
INTERFACES: tuple[type, ...] = (
    pixcore.Backbone, FeatureLevel, pixcore.Head, pixcore.Loss, LossOutput, pixcore.Metric,
    pixcore.Dataset, pixcore.Augmentation, augment.Transform, pixcore.Task,
    pixcore.TaskWeighting, TargetKind, augment.Geometry, augment.Flip, augment.Rotate90,
    augment.Crop, augment.Warp,
)
#: Members set in ``__init__`` rather than in the class body.
INSTANCE_MEMBERS: dict[type, set[str]] = {pixcore.Task: {"target_key", "valid_key"}}
#: Private names that are part of a contract.
HOOKS = {"_check", "_compute"}


def docs_text() -> str:
    return PLUGINS_MD.read_text(encoding="utf-8")


def section(text: str, heading: str) -> str:
    """The text under the first heading line that starts with ``heading``, to the next one of
    the same or a higher level."""
    level = len(heading) - len(heading.lstrip("#"))
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith(heading)]
    assert starts, f"docs/plugins.md has no heading {heading!r}"
    out: list[str] = []
    fenced = False
    for line in lines[starts[0] + 1:]:
        fenced ^= line.startswith("```")
        hashes = len(line) - len(line.lstrip("#"))
        if not fenced and line.startswith("#") and hashes <= level and line[hashes:hashes + 1] == " ":
            break
        out.append(line)
    return "\n".join(out)


def _defined(cls: type) -> set[str]:
    own = vars(cls)
    return set(own) | set(own.get("__annotations__", {}))


def members(cls: type) -> set[str]:
    """Public names ``cls`` itself defines (not those of an interface it derives from),
    its abstract members, and the private names that are part of a contract."""
    abstract = set(getattr(cls, "__abstractmethods__", ()))
    inherited = set().union(*(_defined(base) for base in cls.__mro__[1:] if base in INTERFACES))
    names = {
        name for name in _defined(cls) | abstract | INSTANCE_MEMBERS.get(cls, set())
        if not name.startswith("_") or name in abstract or name in HOOKS
    }
    return names - (inherited - abstract)


def documentation_of(cls: type) -> str:
    """The reference subsection of ``cls``, or the table of a geometry."""
    reference = section(docs_text(), "## Interface reference")
    name = f"`{cls.__name__}`"
    lines = reference.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("### ") and name in line:
            return section("\n".join(lines[i:]), line)
        if line.startswith(f"| {name}"):
            block = []
            for row in lines[i:]:
                if not row.startswith("|"):
                    break
                block.append(row)
            return "\n".join(block)
    raise AssertionError(f"the interface reference of docs/plugins.md has no part on {name}")


def mentions(text: str, name: str) -> bool:
    return re.search(rf"`{re.escape(name)}\b", text) is not None


@pytest.mark.parametrize("cls", INTERFACES, ids=lambda cls: cls.__name__)
def test_every_member_of_an_interface_is_documented(cls: type) -> None:
    documented = documentation_of(cls)
    missing = sorted(name for name in members(cls) if not mentions(documented, name))
    assert not missing, f"docs/plugins.md, reference of {cls.__name__}, lacks {missing}"


@pytest.mark.parametrize("cls", INTERFACES, ids=lambda cls: cls.__name__)
def test_abstract_members_are_marked_must(cls: type) -> None:
    rows = documentation_of(cls).splitlines()
    for name in sorted(getattr(cls, "__abstractmethods__", ())):
        row = next((r for r in rows if r.startswith(f"| `{name}")), None)
        assert row is not None, f"{cls.__name__}.{name} has no row of its own"
        assert "| must |" in row, f"{cls.__name__}.{name} is abstract but not marked must: {row}"


def test_the_member_lists_are_not_empty() -> None:
    # The meta-test guards nothing if it finds no member.
    assert {"forward", "feature_info", "stride", "layer_groups"} <= members(pixcore.Backbone)
    assert {"_compute", "update", "protocol", "higher_is_better"} <= members(pixcore.Metric)
    assert {"_check", "kind", "spatial"} <= members(TargetKind)
    assert {"dim", "axis"} == members(augment.Flip)
    assert {"target_key", "out_channels", "__init__"} - members(pixcore.Task) == {"__init__"}


# -- pixcore.testing ---------------------------------------------------------------------


def section_on_testing() -> str:
    return section(docs_text(), "## Testing a plugin")


def stubs() -> dict[str, ast.AST]:
    """Top-level ``def``, ``class`` and assignments of the section's Python blocks."""
    found: dict[str, ast.AST] = {}
    for code in re.findall(r"^```python\n(.*?)^```$", section_on_testing(), flags=re.M | re.S):
        for node in ast.parse(code).body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                found[node.name] = node
            elif isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
                found[node.targets[0].id] = node
    return found


def documented_parameters(node: ast.FunctionDef) -> list[tuple[str, str]]:
    args = node.args
    out = [(a.arg, "POSITIONAL_ONLY") for a in args.posonlyargs]
    out += [(a.arg, "POSITIONAL_OR_KEYWORD") for a in args.args]
    if args.vararg is not None:
        out.append((args.vararg.arg, "VAR_POSITIONAL"))
    out += [(a.arg, "KEYWORD_ONLY") for a in args.kwonlyargs]
    if args.kwarg is not None:
        out.append((args.kwarg.arg, "VAR_KEYWORD"))
    return [(name, kind) for name, kind in out if name != "self"]


def real_parameters(function: Any) -> list[tuple[str, str]]:
    return [
        (p.name, p.kind.name) for p in inspect.signature(function).parameters.values()
        if p.name != "self"
    ]


@pytest.mark.parametrize("name", pixcore.testing.__all__)
def test_every_name_of_pixcore_testing_is_documented(name: str) -> None:
    assert re.search(rf"\b{re.escape(name)}\b", section_on_testing()), (
        f"pixcore.testing.{name} is not in the 'Testing a plugin' section of docs/plugins.md"
    )
    assert name in stubs(), f"pixcore.testing.{name} has no stub in the section's signature block"


@pytest.mark.parametrize("name", pixcore.testing.__all__)
def test_documented_signatures_are_the_real_ones(name: str) -> None:
    value = getattr(pixcore.testing, name)
    stub = stubs().get(name)
    if isinstance(stub, ast.FunctionDef):
        assert documented_parameters(stub) == real_parameters(value), name
    elif isinstance(stub, ast.ClassDef):
        init = next((n for n in stub.body if isinstance(n, ast.FunctionDef) and n.name == "__init__"), None)
        if init is not None:
            assert documented_parameters(init) == real_parameters(value.__init__), name
    elif isinstance(stub, ast.Assign) and isinstance(value, str):
        assert ast.literal_eval(stub.value) == value, name


def test_check_target_kind_is_documented_with_its_new_checks() -> None:
    text = section_on_testing()
    assert "mask_fill" in text and "`[B, C, H, W]`" in text and "negative dimensions" in text
