"""The data sets' declared keys are checked against what the tasks read, before any step."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pixcore
import pytest
import train_toy
from pixcore import RunConfig
from pixcore.data._keys import check_data_keys
from pixcore.targets import ClassMask, Image, ScalarField, ValidityMask
from pixcore.train import make_loaders, train


class GreySquares(train_toy.Squares):
    """The toy data, declared under other keys (its samples do not matter here)."""

    target_kinds = {"image": Image, "grey": ScalarField, "mask": ValidityMask}


class Undeclared(train_toy.Squares):
    """The toy data without declared keys: not checked."""

    target_kinds = {}


class KeysPlugin:
    @pixcore.hookimpl
    def pixcore_datasets(self) -> Iterator[pixcore.Component]:
        yield pixcore.Component("grey_squares", GreySquares)
        yield pixcore.Component("undeclared", Undeclared)


@pytest.fixture
def manager() -> pixcore.PluginManager:
    manager = train_toy.toy_manager()
    manager.register(KeysPlugin(), name="keys")
    return manager


@pytest.fixture
def no_sample_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self: object, index: int) -> pixcore.Sample:
        raise AssertionError("a sample was read: the check came after the first step")

    monkeypatch.setattr(train_toy.Squares, "__getitem__", refuse)


def _config(task_params: dict[str, Any] | None = None, **data: Any) -> RunConfig:
    config = train_toy.run_config(steps=1)
    config["model"]["tasks"]["brightness"]["params"] = task_params or {}
    config["data"].update(data)
    return RunConfig.model_validate(config)


def _train(config: RunConfig, out: Path, manager: pixcore.PluginManager) -> None:
    train(config, out, manager)


def test_a_target_key_the_data_set_lacks_fails_before_any_step(
    tmp_path: Path, manager: pixcore.PluginManager, no_sample_is_read: None
) -> None:
    config = _config({"target_key": "grey"})
    with pytest.raises(pixcore.ConfigError) as caught:
        _train(config, tmp_path / "run", manager)
    message = str(caught.value)
    assert message.startswith("data.train: the data set Squares does not carry what the tasks read "
                              "(its keys: brightness (scalar_field), image (image), valid (validity_mask))")
    assert ("model.tasks.brightness (Brightness) reads its target from key 'grey', which the data "
            "set does not have. Set the task's `target_key` (model.tasks.brightness.params."
            "target_key: brightness) or rename the data set's key.") in message
    assert not (tmp_path / "run").exists(), "nothing is written before the check"


def test_a_target_of_the_wrong_kind_is_named(manager: pixcore.PluginManager, no_sample_is_read: None) -> None:
    with pytest.raises(pixcore.ConfigError, match=r"reads its target from key 'valid', a validity_mask "
                                                   r"in the data set, but it needs a scalar_field\."):
        make_loaders(_config({"target_key": "valid"}), manager)


def test_a_missing_validity_mask_is_named_with_its_fix(
    manager: pixcore.PluginManager, no_sample_is_read: None
) -> None:
    with pytest.raises(pixcore.ConfigError, match=(
        r"reads its validity mask from key 'valid_mask', which the data set does not have\. Set the "
        r"task's `valid_key` \(model\.tasks\.brightness\.params\.valid_key: valid, or null: every "
        r"pixel with a target counts\)"
    )):
        make_loaders(_config({"valid_key": "valid_mask"}), manager)
    make_loaders(_config({"valid_key": None}), manager)  # no validity mask read: nothing to check


def test_the_validation_set_is_checked_too(manager: pixcore.PluginManager, no_sample_is_read: None) -> None:
    config = _config(val={"name": "grey_squares", "params": {"length": 4}})
    with pytest.raises(pixcore.ConfigError) as caught:
        make_loaders(config, manager)
    message = str(caught.value)
    assert message.startswith("data.val: the data set GreySquares")
    assert "key 'brightness', which the data set does not have" in message
    assert "target_key: grey)" in message
    assert "key 'valid', which the data set does not have" in message and "valid_key: mask," in message


def test_a_data_set_without_declared_keys_is_not_checked(
    manager: pixcore.PluginManager, no_sample_is_read: None
) -> None:
    make_loaders(_config({"target_key": "grey"}, train={"name": "undeclared", "params": {}}, val=None), manager)


def test_matching_keys_train(tmp_path: Path, manager: pixcore.PluginManager) -> None:
    _, result = train(_config(), tmp_path, manager)
    assert result.steps == 1


def test_every_task_is_named_with_its_own_problem() -> None:
    class Segmentation(train_toy.Brightness):
        target_kind = ClassMask

    tasks = {"depth": train_toy.Brightness("depth"), "semseg": Segmentation("semseg", None)}
    with pytest.raises(pixcore.ConfigError) as caught:
        check_data_keys(GreySquares(), tasks, where="data.train")
    lines = str(caught.value).splitlines()
    assert len(lines) == 4
    assert lines[1].startswith("  model.tasks.depth (Brightness) reads its target from key 'depth'")
    assert lines[1].endswith("(model.tasks.depth.params.target_key: grey) or rename the data set's key.")
    assert lines[2].startswith("  model.tasks.depth (Brightness) reads its validity mask from key 'valid'")
    # No class mask in the data set: nothing to suggest.
    assert "(model.tasks.semseg.params.target_key) or rename" in lines[3]
