"""Meta-tests that keep the plugin documentation honest.

* every registration hook has an ``Example::`` in its docstring and a section in
  ``docs/plugins.md``;
* the hookspec examples run: each is executed, registered, and what it registers is
  created and used;
* the worked example of ``docs/plugins.md`` (the blocks whose first line is a file path)
  is written out as a package and its own tests are run;
* every name in ``pixcore.__all__`` is importable.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import re
import sys
import textwrap
import types
from collections.abc import Iterator
from pathlib import Path

import pixcore
import pytest
import torch
from pixcore import hookspecs
from pixcore.targets import ScalarField, ValidityMask

ROOT = Path(__file__).resolve().parents[1]
PLUGINS_MD = ROOT / "docs" / "plugins.md"

HOOKS = sorted(
    name for name, value in vars(hookspecs).items()
    if name.startswith("pixcore_") and inspect.isfunction(value)
)

BASES: dict[str, type] = {
    "backbones": pixcore.Backbone,
    "heads": pixcore.Head,
    "losses": pixcore.Loss,
    "metrics": pixcore.Metric,
    "datasets": pixcore.Dataset,
    "augmentations": pixcore.Augmentation,
    "tasks": pixcore.Task,
    "weightings": pixcore.TaskWeighting,
}


def docs_text() -> str:
    return PLUGINS_MD.read_text(encoding="utf-8")


def fenced_blocks(text: str) -> Iterator[tuple[str, str]]:
    """``(language, code)`` of every fenced block."""
    for match in re.finditer(r"^```(\w*)\n(.*?)^```$", text, flags=re.M | re.S):
        yield match.group(1), match.group(2)


def example_of(hook: str) -> str:
    """The code block after ``Example::`` in a hook's docstring, dedented."""
    doc = inspect.getdoc(getattr(hookspecs, hook)) or ""
    _, marker, rest = doc.partition("Example::\n")
    assert marker, f"{hook} has no Example:: block"
    lines = []
    for line in rest.splitlines():
        if line.strip() and not line.startswith((" ", "\t")):
            break  # back at docstring indentation: the block ended
        lines.append(line)
    return textwrap.dedent("\n".join(lines)).strip() + "\n"


def exec_example(hook: str, monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    module = types.ModuleType(f"pixcore_docs_example_{hook}")
    monkeypatch.setitem(sys.modules, module.__name__, module)
    exec(compile(example_of(hook), f"<{hook} docstring example>", "exec"), module.__dict__)
    return module


# -- the hooks are documented ---------------------------------------------------------


def test_there_is_one_hook_per_family() -> None:
    assert HOOKS == sorted(f"pixcore_{family}" for family in pixcore.FAMILIES)


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_has_a_docstring_example(hook: str) -> None:
    doc = inspect.getdoc(getattr(hookspecs, hook)) or ""
    assert "Example::" in doc
    assert f"def {hook}(" in example_of(hook)  # the example implements this very hook
    assert "@pixcore.hookimpl" in example_of(hook)


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_has_a_section_in_plugins_md(hook: str) -> None:
    headings = [line for line in docs_text().splitlines() if line.startswith("#")]
    assert any(re.search(rf"`{hook}`", h) for h in headings), f"no heading for {hook} in {PLUGINS_MD}"


def test_plugins_md_python_blocks_are_valid_python() -> None:
    blocks = [code for lang, code in fenced_blocks(docs_text()) if lang == "python"]
    assert len(blocks) >= 10
    for i, code in enumerate(blocks):
        compile(code, f"{PLUGINS_MD} (python block {i + 1})", "exec")


def test_plugins_md_mentions_the_essentials() -> None:
    text = docs_text()
    for needle in (
        "[project.entry-points.pixcore]", "_plugin.py", "@pixcore.hookimpl",
        "pixcore.Component", "pixcore.ComponentNamespace", "ValidityMask", "TargetKind",
        "check_task", "check_backbone", "isolated_manager", "TinyBackbone",
        "pip install -e .", "pixcore plugins", "PIXCORE_STRICT_PLUGINS",
        "PIXCORE_DISABLE_PLUGIN_AUTOLOAD", "PIXCORE_BLOCK_PLUGINS", "DuplicateComponentError",
        "UnknownComponentError", "PluginLoadError", "Did you mean",
    ):
        assert needle in text, needle


# -- the public API ---------------------------------------------------------------------


def test_all_is_importable_and_unique() -> None:
    assert len(pixcore.__all__) == len(set(pixcore.__all__))
    namespace: dict[str, object] = {}
    exec("from pixcore import *", namespace)
    for name in pixcore.__all__:
        assert hasattr(pixcore, name), name
        assert name in namespace, name


@pytest.mark.parametrize("module", ["pixcore.targets", "pixcore.hookspecs"])
def test_submodule_all_is_importable(module: str) -> None:
    imported = importlib.import_module(module)
    for name in getattr(imported, "__all__", []):
        assert hasattr(imported, name), f"{module}.{name}"


# -- the hookspec examples run ---------------------------------------------------------

CONTEXT = {
    "heads": {"in_features": [pixcore.FeatureLevel(8, 2), pixcore.FeatureLevel(16, 4)], "out_channels": 2},
    "losses": {"num_classes": 3, "ignore_index": 255},
    "metrics": {"num_classes": 3, "ignore_index": 255},
    "weightings": {"tasks": ["a", "b"], "weights": {"a": 1.0, "b": 1.0}},
}


@pytest.mark.parametrize("hook", HOOKS)
def test_hookspec_example_registers_a_creatable_component(hook: str, monkeypatch: pytest.MonkeyPatch) -> None:
    family = hook.removeprefix("pixcore_")
    module = exec_example(hook, monkeypatch)
    manager = pixcore.PluginManager(autoload=False, strict=True)
    manager.register(module, name=f"example-{family}")
    info = next(p for p in manager.plugins() if p.name == f"example-{family}")
    names = info.registered.get(family, [])
    assert names, f"the {hook} example registers nothing"
    for name in names:
        component = manager.registry(family).create(name, {}, context=CONTEXT.get(family))
        assert isinstance(component, BASES[family]), (name, type(component))


@pytest.fixture
def examples(monkeypatch: pytest.MonkeyPatch) -> pixcore.PluginManager:
    """One manager with every hookspec example registered (the task uses the loss)."""
    manager = pixcore.PluginManager(autoload=False, strict=True)
    for hook in HOOKS:
        manager.register(exec_example(hook, monkeypatch), name=f"example-{hook}")
    return manager


def test_hookspec_examples_work_together(examples: pixcore.PluginManager) -> None:
    torch.manual_seed(0)
    data = examples.registry("datasets").create("constant_depth", {"length": 2})
    sample = examples.registry("augmentations").create("identity")(data[0])
    assert set(sample) == set(type(data).target_kinds)
    batch = torch.utils.data.default_collate([sample, data[1]])
    batch["height"] = batch["depth"]  # the Height task reads "height"
    for head in ("fpn", "finest"):
        model = pixcore.build_model(
            "tiny", {"h": {"task": "height", "head": head}}, manager=examples
        )
        predictions = model(batch["image"])
        assert predictions["h"].shape == (2, 1, 32, 32)
        total, parts = model.compute_loss(predictions, batch)
        assert torch.isfinite(total) and set(parts) == {"h/loss", "h/l1"}
        total.backward()
    task = model.tasks["h"]
    picture = task.visualize(predictions["h"][0].detach())
    assert picture.shape == (32, 32, 3) and picture.dtype.name == "uint8"
    baseline = task.baseline(iter([task.target_and_valid(batch)]))
    torch.testing.assert_close(baseline, torch.ones(1))  # the data set's depth is 1 everywhere
    metric = examples.registry("metrics").create("pixel_acc")
    metric.update(
        torch.randn(2, 3, 4, 4), torch.zeros(2, 4, 4, dtype=torch.long), torch.ones(2, 4, 4, dtype=torch.bool)
    )
    assert 0.0 <= metric.compute()["pixel_acc"] <= 1.0


def test_masked_l1_example_ignores_invalid_pixels(examples: pixcore.PluginManager) -> None:
    loss = examples.registry("losses").create("masked_l1")
    prediction = torch.zeros(1, 1, 2, 2, requires_grad=True)
    target = ScalarField(torch.tensor([[[[1.0, float("nan")], [3.0, 100.0]]]]))
    valid = ValidityMask(torch.tensor([[[True, False], [True, False]]]))
    out = loss(prediction, target, valid)
    assert out.total.item() == pytest.approx(2.0)
    none = loss(prediction, target, torch.zeros_like(valid))
    assert none.total.item() == 0.0 and none.total.requires_grad


# -- the worked example of docs/plugins.md ---------------------------------------------


def worked_example_files() -> dict[str, str]:
    """Blocks whose first line is ``# <relative path>``: the files of the worked example."""
    files = {}
    for _, code in fenced_blocks(docs_text()):
        first, _, body = code.partition("\n")
        match = re.fullmatch(r"# ((?:src|tests)/[\w/]+\.py|pyproject\.toml)", first.strip())
        if match:
            files[match.group(1)] = code
    return files


def test_worked_example_is_complete() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    files = worked_example_files()
    assert "pyproject.toml" in files
    project = tomllib.loads(files["pyproject.toml"])
    entry_points = project["project"]["entry-points"]["pixcore"]
    assert len(entry_points) == 1
    (module,) = entry_points.values()
    assert f"src/{module.replace('.', '/')}.py" in files  # the entry point names a shipped module
    assert any(path.startswith("tests/") for path in files)


def test_worked_example_runs_its_own_tests(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files = worked_example_files()
    for path, code in files.items():
        target = tmp_path / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(code, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path / "src"))
    before = set(sys.modules)
    try:
        tests = [tmp_path / p for p in files if p.startswith("tests/")]
        ran = 0
        for test_file in tests:
            spec = importlib.util.spec_from_file_location(f"worked_{test_file.stem}", test_file)
            assert spec is not None and spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            for name, function in vars(module).items():
                if name.startswith("test_") and inspect.isfunction(function):
                    function()
                    ran += 1
        assert ran >= 2
    finally:
        for name in set(sys.modules) - before:
            del sys.modules[name]
