"""`pip install pixcore pixcore-depth` gives depth and nothing else.

Installs the core and the depth plugin (plus pixcore-timm, which it depends on) into a
fresh virtual environment. Third-party dependencies (torch, timm, ...) are borrowed
from the running environment through a ``.pth`` file pointing at a folder of links that
leaves out every pixcore distribution, so nothing large is installed twice.
"""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def _borrowed_site_packages(target: Path) -> Path:
    """Link every entry of this environment's site-packages except pixcore's own."""
    target.mkdir()
    for source_dir in {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}:
        for entry in Path(source_dir).iterdir():
            name = entry.name.lower()
            if name.startswith(("pixcore", "__editable__", "_pixcore")) or name.endswith(".pth"):
                continue
            link = target / entry.name
            if not link.exists():
                link.symlink_to(entry)
    return target


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "PIP_CONSTRAINT"}}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result


def test_depth_plugin_alone(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=tmp_path)
    python = venv / "bin" / "python"
    purelib = _run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=tmp_path
    ).stdout.strip()
    borrowed = _borrowed_site_packages(tmp_path / "borrowed")
    Path(purelib, "borrowed.pth").write_text(f"{borrowed}\n")

    _run(
        [str(python), "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--no-index", str(ROOT), str(ROOT / "plugins/pixcore-timm"),
         str(ROOT / "plugins/pixcore-depth")],
        cwd=tmp_path,
    )
    check = textwrap.dedent(
        """
        import importlib.metadata, json, pixcore
        manager = pixcore.PluginManager(strict=True)
        tasks = manager.registry("tasks").list()
        try:
            manager.registry("tasks").get("segmentation")
            missing = ""
        except pixcore.UnknownComponentError as error:
            missing = str(error)
        model = pixcore.build_model("timm/resnet18", tasks=["depth"], manager=manager)
        print(json.dumps({
            "file": pixcore.__file__,
            "tasks": tasks,
            "missing": missing,
            "outputs": list(model(__import__("torch").zeros(1, 3, 64, 64, dtype=__import__("torch").uint8))),
            "distributions": sorted(
                d.metadata["Name"] for d in importlib.metadata.distributions()
                if d.metadata["Name"].startswith("pixcore")
            ),
        }))
        """
    )
    result = _run([str(python), "-c", check], cwd=tmp_path)
    import json

    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["file"].startswith(str(venv)), "pixcore must come from the isolated install"
    assert report["distributions"] == ["pixcore", "pixcore-depth", "pixcore-timm"]
    assert "depth" in report["tasks"]
    assert "segmentation" not in report["tasks"]
    assert "`pixcore plugins`" in report["missing"]  # core names no plugin; a hint where to look
    assert report["outputs"] == ["depth"]


def test_task_plugins_declare_their_dependencies() -> None:
    for plugin in ("pixcore-seg", "pixcore-depth", "pixcore-normals"):
        requirements = importlib.metadata.requires(plugin) or []
        names = {r.split(";")[0].split(">")[0].split("=")[0].split("<")[0].strip() for r in requirements}
        assert {"pixcore", "pixcore-timm"} <= names, f"{plugin} requires {requirements}"
