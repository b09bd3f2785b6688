"""The grid's syntax: values split at top-level commas only, errors that say the fix, folder names, axes."""

from __future__ import annotations

import pytest
from pixcore import ConfigError
from pixcore.sweep._grid import Axis, folder_name, parse_assignments, parse_axes, parse_axis
from pixcore.sweep._plots import axis_positions


@pytest.mark.parametrize(("item", "values"), [
    ("trainer.lr=0.01,0.001,1e-4", ("0.01", "0.001", "1e-4")),
    ("model.mean=[0.5,0.5,0.5],[0.4, 0.4, 0.4]", ("[0.5,0.5,0.5]", "[0.4, 0.4, 0.4]")),
    ("model.backbone={name: timm/resnet18, params: {a: 1}},timm/test_resnet",
     ("{name: timm/resnet18, params: {a: 1}}", "timm/test_resnet")),
    ("data.train.params.split='a,b',\"c,d\",e", ("'a,b'", '"c,d"', "e")),
    ("trainer.steps=5", ("5",)),
])
def test_values_split_at_top_level_commas_only(item: str, values: tuple[str, ...]) -> None:
    assert parse_axis(item) == Axis(item.partition("=")[0], values)


@pytest.mark.parametrize(("items", "expected"), [
    (["trainer.lr"], "expected KEY=VALUE[,VALUE...], e.g. --set trainer.lr=0.01,0.001"),
    (["=1,2"], "expected KEY=VALUE"),
    (["trainer.lr=0.1,,0.2"], "an empty value (two commas in a row, or nothing after '=')"),
    (["trainer.lr="], "an empty value"),
    (["model.mean=[0.5,0.5],[0.4,0.4"], "lacks a closing ']'"),
    (["model.mean=[0.5,0.5]],[0.4]"], "unmatched ']' at position 10 of '[0.5,0.5]],[0.4]'"),
    (["data.train.name='a,b"], "lacks a closing \"'\""),
    (["trainer.lr=0.1,0.2,0.1"], "0.1 given more than once"),
    (["trainer.seed=1,2"], "use --seeds N"),
    (["trainer.lr=0.1", "trainer.lr=0.2"], "trainer.lr is swept by more than one --set"),
])
def test_bad_syntax_is_one_clear_error(items: list[str], expected: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_axes(items)
    assert expected in str(error.value)


def test_baseline_names_keys_and_values() -> None:
    assert parse_assignments("trainer.lr=0.01,model.mean=[1,2,3]", "--baseline") == {
        "trainer.lr": "0.01", "model.mean": "[1,2,3]"}
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        parse_assignments("trainer.lr", "--baseline")


def test_folder_names_are_readable_portable_and_unique() -> None:
    setting = (("model.backbone", "timm/resnet18"), ("model.mean", "[0.5, 0.5, 0.5]"))
    assert folder_name(setting, 1) == "model.backbone=timm-resnet18__model.mean=0.5-0.5-0.5__seed=1"
    assert folder_name((("trainer.lr", "-1"), ("k", "[-2]")), 0) == "trainer.lr=-1__k=-2__seed=0"
    # Two settings that differ only in characters a file name drops: the second gets a hash.
    first = folder_name((("k", "a/b"),), 0)
    second = folder_name((("k", "a:b"),), 0, frozenset({first}))
    assert first == "k=a-b__seed=0" and second.startswith("k=a-b__seed=0-") and len(second) == len(first) + 9
    long = folder_name((("k", "x" * 300),), 0)
    assert len(long) <= 170 and long != folder_name((("k", "x" * 301),), 0)


@pytest.mark.parametrize(("values", "scale"), [
    (["0.01", "0.001"], "linear"),        # one decade
    (["1e-4", "1e-3", "1e-2"], "log"),    # two decades
    (["8", "16", "1024"], "log"),
    (["0", "1", "100"], "linear"),        # zero: no logarithmic axis
    (["timm/resnet18", "timm/test_resnet"], "categorical"),
    (["true", "false"], "categorical"),
])
def test_numeric_settings_get_a_numeric_axis_log_over_two_decades(values: list[str], scale: str) -> None:
    positions, found = axis_positions(values)
    assert found == scale
    if scale == "categorical":
        assert positions == [0.0, 1.0]
    else:
        assert positions == [float(v) for v in values]
