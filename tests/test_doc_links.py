"""The documentation stays true: relative links resolve, and its config snippets validate.

* every relative link ``[text](path#anchor)`` in the Markdown files points at a file that
  exists and, with an anchor into a Markdown file, at one of its headings (GitHub's
  slug rules: lower case, punctuation dropped, spaces to dashes);
* every YAML block of the task and data set pages that holds a whole run config
  (``model`` and ``data``) loads as a :class:`pixcore.RunConfig`, and every block holding a
  ``model`` builds its components' parameters against the registries.
"""

from __future__ import annotations

import re
from pathlib import Path

import pixcore
import pytest
import yaml
from pixcore._config import validate_config

ROOT = Path(__file__).resolve().parents[1]
MARKDOWN = sorted(
    [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *(ROOT / "docs").rglob("*.md"),
     *(ROOT / "plugins").glob("*/README.md")]
)
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)


def slug(heading: str) -> str:
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = FENCE.sub("", path.read_text(encoding="utf-8"))
    return {slug(line.lstrip("#")) for line in text.splitlines() if line.startswith("#")}


def links() -> list[tuple[Path, str]]:
    found = []
    for path in MARKDOWN:
        text = FENCE.sub("", path.read_text(encoding="utf-8"))
        for target in LINK.findall(text):
            if not re.match(r"^[a-z]+:", target):  # http:, https:, mailto:
                found.append((path, target))
    return found


@pytest.mark.parametrize(("source", "target"), links(), ids=lambda v: str(v).replace(str(ROOT), ""))
def test_relative_link_resolves(source: Path, target: str) -> None:
    file_part, _, anchor = target.partition("#")
    destination = (source.parent / file_part).resolve() if file_part else source
    assert destination.exists(), f"{source.relative_to(ROOT)}: link to missing {target}"
    if anchor and destination.suffix == ".md":
        assert anchor in anchors(destination), (
            f"{source.relative_to(ROOT)}: no heading for #{anchor} in {destination.relative_to(ROOT)}"
        )


def yaml_blocks() -> list[tuple[str, dict]]:
    pages = [*(ROOT / "docs" / "tasks").glob("*.md"), ROOT / "docs" / "datasets.md"]
    blocks = []
    for page in sorted(pages):
        for i, (lang, code) in enumerate(FENCE.findall(page.read_text(encoding="utf-8"))):
            if lang in {"yaml", "yml"}:
                data = yaml.safe_load(code)
                if isinstance(data, dict) and "model" in data:
                    blocks.append((f"{page.name}:{i}", data))
    return blocks


def test_the_pages_have_config_examples() -> None:
    names = {name.split(":")[0] for name, _ in yaml_blocks()}
    assert {"segmentation.md", "depth.md", "normals.md"} <= names


@pytest.mark.parametrize(("where", "data"), yaml_blocks(), ids=lambda v: v if isinstance(v, str) else "")
def test_config_example_validates(where: str, data: dict) -> None:
    if "data" in data:
        validate_config(pixcore.RunConfig, data, source=where)
    model = validate_config(pixcore.ModelConfig, data["model"], source=where)
    manager = pixcore.get_plugin_manager()
    for key, task_config in model.tasks.items():
        task = manager.registry("tasks").create(task_config.task or key, task_config.params, path=where)
        context = task.context()
        if task_config.loss is not None:
            manager.registry("losses").validate(task_config.loss.name, task_config.loss.params,
                                                path=where, context=context)
        for metric in task_config.metrics or []:
            manager.registry("metrics").validate(metric.name, metric.params, path=where, context=context)
