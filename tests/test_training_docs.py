"""docs/training.md lists every trainer setting with the default the code has."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pixcore
import pytest
import yaml

TRAINING_MD = Path(__file__).resolve().parents[1] / "docs" / "training.md"


def documented_trainer_settings(text: str) -> dict[str, Any]:
    """The ``trainer:`` mapping of the YAML block under the heading "Trainer settings"."""
    section = re.search(r"^## Trainer settings\n(.*?)(?=^## )", text, flags=re.M | re.S)
    assert section, f"{TRAINING_MD} has no '## Trainer settings' section"
    block = re.search(r"^```yaml\n(.*?)^```$", section.group(1), flags=re.M | re.S)
    assert block, f"the 'Trainer settings' section of {TRAINING_MD} has no ```yaml block"
    settings = yaml.safe_load(block.group(1))["trainer"]
    assert isinstance(settings, dict)
    return settings


def code_default(name: str) -> Any:
    default = pixcore.TrainerConfig.model_fields[name].default
    return list(default) if isinstance(default, tuple) else default  # YAML has lists, not tuples


@pytest.fixture(scope="module")
def documented() -> dict[str, Any]:
    return documented_trainer_settings(TRAINING_MD.read_text(encoding="utf-8"))


def test_every_trainer_setting_is_documented(documented: dict[str, Any]) -> None:
    fields = list(pixcore.TrainerConfig.model_fields)
    assert [f for f in fields if f not in documented] == [], "settings missing from docs/training.md"
    assert [k for k in documented if k not in fields] == [], "docs/training.md lists settings that do not exist"
    assert list(documented) == fields, "list them in the order of pixcore.TrainerConfig"


@pytest.mark.parametrize("name", list(pixcore.TrainerConfig.model_fields))
def test_documented_default_is_the_code_default(documented: dict[str, Any], name: str) -> None:
    if name not in documented:
        pytest.fail(f"trainer.{name} is missing from docs/training.md")
    value, default = documented[name], code_default(name)
    assert (type(value), value) == (type(default), default), (
        f"docs/training.md says trainer.{name}: {value!r}, the code's default is {default!r}"
    )


def test_the_documented_block_is_a_valid_config_equal_to_the_defaults(documented: dict[str, Any]) -> None:
    assert pixcore.TrainerConfig.model_validate(documented) == pixcore.TrainerConfig()

