"""`pixcore new-plugin`: names, refusals, rendering, and a plugin that installs and passes.

The slow test installs freshly written plugins into a fresh virtual environment and runs
their own tests there. Dependencies (torch, pydantic, pytest, pixcore and its plugins)
are borrowed from the running environment through a ``.pth`` file that calls
``site.addsitedir`` on its site-packages (so that its editable installs work too), and
the plugins are installed with ``--no-deps --no-build-isolation --no-index``: nothing is
downloaded and nothing large is installed twice.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import subprocess
import sys
import sysconfig
import textwrap
from importlib.resources import files
from pathlib import Path

import pixcore
import pytest
import tomllib
import yaml
from pixcore._cli import main
from pixcore._scaffold import ScaffoldError, plugin_names, render_plugin, write_plugin

ROOT = Path(__file__).resolve().parents[1]
TEMPLATES = Path(str(files("pixcore") / "scaffold_templates"))


# --------------------------------------------------------------------------------------
# Names
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "package", "plugin", "title"),
    [
        ("pixcore-edges", "pixcore_edges", "edges", "Edges"),
        ("pixcore_optical-flow", "pixcore_optical_flow", "optical_flow", "OpticalFlow"),
        ("acme-seg2", "acme_seg2", "acme_seg2", "AcmeSeg2"),
    ],
)
def test_names_derive_from_the_distribution_name(
    name: str, package: str, plugin: str, title: str
) -> None:
    names = plugin_names(name)
    assert (names.distribution, names.package, names.plugin, names.title) == (
        name, package, plugin, title,
    )


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("Pixcore-Edges", "e.g. 'pixcore-edges'"),
        ("pixcore edges", "e.g. 'pixcore-edges'"),
        ("pixcore--edges", "not a usable plugin name"),
        ("edges-", "not a usable plugin name"),
        ("3d-flow", "e.g. 'my-3d-flow'"),
        ("pixcore.edges", "not a usable plugin name"),
        ("pixcore-depth", "a distribution that pixcore ships"),
        ("pixcore_timm", "a distribution that pixcore ships"),
        ("pixcore", "a distribution that pixcore ships"),
        ("pixcore-3d", "must start with a letter; e.g. 'pixcore-my-3d'"),
        ("lambda", "a Python keyword"),
    ],
)
def test_unusable_names_are_refused_with_a_suggestion(name: str, message: str) -> None:
    with pytest.raises(ScaffoldError, match=message.replace(".", r"\.")):
        plugin_names(name)


# --------------------------------------------------------------------------------------
# Rendering and writing
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("task", [False, True], ids=["minimal", "task"])
def test_rendered_files_are_complete(task: bool) -> None:
    rendered = render_plugin("pixcore-edges", task=task)
    for path, text in rendered.items():
        assert "${" not in text, path
        if path.endswith(".py"):
            ast.parse(text, filename=path)
    project = tomllib.loads(rendered["pyproject.toml"])["project"]
    assert project["name"] == "pixcore-edges"
    assert project["entry-points"]["pixcore"] == {"edges": "pixcore_edges._plugin"}
    assert project["dependencies"] == ["pixcore>=0.1"]
    assert "src/pixcore_edges/py.typed" in rendered
    if task:
        config = yaml.safe_load(rendered["configs/train.yaml"])
        assert config["model"]["tasks"]["edges"]["task"] == "edges"
        assert config["data"]["train"]["name"] == "edges_synthetic"


def test_the_plugin_module_imports_its_components_inside_the_hooks() -> None:
    """Start-up imports ``_plugin``: at module level it may import pixcore only."""
    for task in (False, True):
        source = render_plugin("pixcore-edges", task=task)["src/pixcore_edges/_plugin.py"]
        top_level = [
            node for node in ast.parse(source).body
            if isinstance(node, ast.Import | ast.ImportFrom)
        ]
        modules = {
            alias.name if isinstance(node, ast.Import) else str(node.module)
            for node in top_level for alias in node.names
        }
        assert modules <= {"__future__", "collections.abc", "pixcore"}, modules


def test_every_template_is_used_and_shipped_as_package_data() -> None:
    used = {
        template for task in (False, True) for template in _templates_of(task)
    }
    on_disk = {path.name for path in TEMPLATES.iterdir() if path.is_file()}
    assert used == on_disk
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"
    ]["pixcore"]
    assert "scaffold_templates/*.tmpl" in package_data
    assert all(name.endswith(".tmpl") for name in on_disk)


def _templates_of(task: bool) -> list[str]:
    from pixcore import _scaffold

    return list((_scaffold._TASK_FILES if task else _scaffold._MINIMAL_FILES).values())


def test_write_refuses_a_non_empty_folder_and_writes_nothing(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ScaffoldError, match="already exists and is not empty"):
        write_plugin("pixcore-edges", tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]
    (tmp_path / "file").write_text("")
    with pytest.raises(ScaffoldError, match="is not a folder"):
        write_plugin("pixcore-edges", tmp_path / "file")


def test_write_fills_an_empty_folder(tmp_path: Path) -> None:
    scaffold = write_plugin("pixcore-edges", tmp_path, task=True)
    assert scaffold.registered == {
        "tasks": ["edges"], "heads": ["edges_head"], "losses": ["edges_l1"],
        "metrics": ["edges_errors"], "datasets": ["edges_synthetic"],
    }
    written = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert written == sorted(render_plugin("pixcore-edges", task=True))


def test_cli_writes_a_plugin_and_says_what_next(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "deep" / "pixcore-edges"
    assert main(["new-plugin", "pixcore-edges", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "heads: edges_head" in printed and "pip install -e ." in printed
    assert (out / "src" / "pixcore_edges" / "_head.py").is_file()
    assert not (out / "src" / "pixcore_edges" / "_task.py").exists()


def test_cli_refusals_are_one_line_and_status_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["new-plugin", "Edges!", "--out", str(tmp_path / "a")]) == 2
    assert capsys.readouterr().err.startswith("pixcore: error: 'Edges!' is not a usable")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "x").write_text("")
    assert main(["new-plugin", "pixcore-edges", "--task", "--out", str(tmp_path / "b")]) == 2
    assert "already exists and is not empty" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()


# --------------------------------------------------------------------------------------
# Installed into a fresh virtual environment, the plugins pass their own tests
# --------------------------------------------------------------------------------------


def _run(args: list[str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {
        k: v for k, v in os.environ.items()
        if k not in {"PYTHONPATH", "PYTHONHOME", "PIP_CONSTRAINT"} and not k.startswith("PIXCORE_")
    }
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    result = subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, (
        f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
    )
    return result


def _fresh_venv(path: Path) -> Path:
    """A venv without pip that sees this environment's site-packages after its own."""
    _run([sys.executable, "-m", "venv", "--without-pip", str(path)], cwd=path.parent)
    python = path / "bin" / "python"
    code = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    own = Path(_run([str(python), "-c", code], cwd=path.parent).stdout.strip())
    borrowed = sysconfig.get_paths()["purelib"]
    (own / "_pixcore_borrowed.pth").write_text(f"import site; site.addsitedir({borrowed!r})\n")
    return python


@pytest.mark.slow
def test_new_plugins_install_into_a_fresh_venv_and_pass_their_own_tests(tmp_path: Path) -> None:
    for needed in ("pip", "setuptools"):  # pip builds the plugins with this environment's
        if importlib.util.find_spec(needed) is None:
            pytest.skip(f"{needed} is not installed here: python -m pip install {needed}")
    task_plugin = write_plugin("pixcore-scaffolded", tmp_path / "task", task=True).root
    head_plugin = write_plugin("scaffolded-head", tmp_path / "head").root
    python = _fresh_venv(tmp_path / "venv")
    _run(
        [str(python), "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--no-index", str(task_plugin), str(head_plugin)],
        cwd=tmp_path,
    )
    for plugin in (task_plugin, head_plugin):
        _run([str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=plugin)

    check = textwrap.dedent(
        """
        import json, pixcore
        infos = {i.name: i for i in pixcore.get_plugin_manager().plugins()}
        print(json.dumps({"pixcore": pixcore.__file__, "plugins": {
            n: [i.distribution, i.status, i.registered]
            for n, i in infos.items() if n.startswith("scaffolded")
        }}))
        """
    )
    report = json.loads(_run([str(python), "-c", check], cwd=tmp_path).stdout.splitlines()[-1])
    assert report["pixcore"] == pixcore.__file__, "the venv borrows this environment's pixcore"
    assert report["plugins"] == {
        "scaffolded": [
            "pixcore-scaffolded", "loaded",
            {"tasks": ["scaffolded"], "heads": ["scaffolded_head"], "losses": ["scaffolded_l1"],
             "metrics": ["scaffolded_errors"], "datasets": ["scaffolded_synthetic"]},
        ],
        "scaffolded_head": ["scaffolded-head", "loaded", {"heads": ["scaffolded_head_head"]}],
    }
