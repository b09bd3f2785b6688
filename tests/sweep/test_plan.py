"""The plan: one member per setting and seed, validated before anything starts; a folder holds one grid."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
from pixcore import ConfigError
from pixcore._cli import main
from pixcore.sweep import PLAN_FILE, load_plan, plan_sweep


def _sweep(config: Path, out: Path, *args: str) -> list[str]:
    return ["sweep", str(config), "--out", str(out), *args]


def test_plan_writes_the_grid_and_one_train_command_per_member(
    tiny_config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "sweep"
    code = main(_sweep(tiny_config, out, "--set", "trainer.lr=0.01,0.001", "--set", "model.mean=[0.5,0.5,0.5],"
                       "[0.4,0.4,0.4]", "--seeds", "2", "--plan"))
    assert code == 0
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 8 and (out / "commands.txt").read_text().splitlines() == printed
    first = shlex.split(printed[0])
    assert first == ["pixcore", "train", str(tiny_config.resolve()), "--out",
                     str(out / "trainer.lr=0.01__model.mean=0.5-0.5-0.5__seed=0"),
                     "--set", "trainer.lr=0.01", "--set", "model.mean=[0.5,0.5,0.5]", "--set", "trainer.seed=0"]
    plan = json.loads((out / PLAN_FILE).read_text())
    assert plan["seed_key"] == "trainer.seed" and plan["seeds"] == [0, 1]
    assert plan["axes"] == [{"key": "trainer.lr", "values": ["0.01", "0.001"]},
                            {"key": "model.mean", "values": ["[0.5,0.5,0.5]", "[0.4,0.4,0.4]"]}]
    settings = [(m["setting"]["trainer.lr"], m["setting"]["model.mean"], m["seed"]) for m in plan["members"]]
    assert settings == [(lr, mean, seed) for lr in ("0.01", "0.001") for mean in ("[0.5,0.5,0.5]", "[0.4,0.4,0.4]")
                        for seed in (0, 1)]
    assert [m["index"] for m in plan["members"]] == list(range(8))
    assert not [p for p in out.iterdir() if p.is_dir()]  # nothing trained


@pytest.mark.parametrize(("args", "expected"), [
    (["--set", "trainer.lrr=0.1,0.2"], "sweep member trainer.lrr=0.1__seed=0 (--set trainer.lrr=0.1): invalid "
                                       "configuration in "),
    (["--set", "trainer.lr=0.1,-1"], "trainer.lr: Input should be greater than 0 (got -1)"),
    (["--set", "model.tasks.depth.loss=silog,l2"], "model.tasks.depth.loss: unknown loss 'l2'"),
    (["--set", "model.backbone=timm/test_resnet,timm/resnet181"], "Did you mean 'timm/resnet18'"),
    (["--set", "model.tasks.semseg.params.num_clases=3"], "num_clases: Extra inputs are not permitted"),
    (["--set", "trainer.recipe=scratch,finetune"], "trainer.recipe='finetune' starts from pretrained weights"),
    (["--set", "trainer.lr=0.1,,0.2"], "--set 'trainer.lr=0.1,,0.2': an empty value"),
    (["--set", "trainer.lr=0.1", "--seeds", "0"], "--seeds 0: give the number of seeds, at least 1"),
    (["--set", "trainer.lr=0.1,0.2", "--baseline", "trainer.lr=0.3"], "--baseline trainer.lr=0.3 matches no setting"),
    (["--set", "trainer.lr=0.1,0.2", "--baseline", "trainer.steps=3"], "trainer.steps is not swept"),
    (["--set", "trainer.lr=0.1", "--metric", "dept/abs_rel"], "the config has no task 'dept'"),
    (["--set", "trainer.lr=0.1", "--jobs", "0"], "--jobs 0: run at least 1 member at a time"),
])
def test_a_mistake_in_any_member_stops_the_sweep_before_anything_starts(
    tiny_config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], expected: str
) -> None:
    out = tmp_path / "sweep"
    assert main(_sweep(tiny_config, out, *args)) == 2  # the run mode, not --plan
    error = capsys.readouterr().err
    assert error.startswith("pixcore: error: ") and expected in error and "Traceback" not in error
    assert not out.exists()  # checked before the plan is written


def test_a_config_without_held_out_data_is_refused(tmp_path: Path, tiny_config: Path) -> None:
    no_val = tmp_path / "no_val.yaml"
    no_val.write_text(tiny_config.read_text().replace("  val: {name: synthetic", "  # val: {name: synthetic"))
    with pytest.raises(ConfigError, match="data.val is not set, so the members would have no metrics"):
        plan_sweep(no_val, ["trainer.lr=0.1"], out=tmp_path / "sweep")


def test_another_grid_in_the_same_folder_is_refused_naming_the_difference(
    tiny_config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "sweep"
    assert main(_sweep(tiny_config, out, "--set", "trainer.lr=0.01,0.001", "--seeds", "2", "--plan")) == 0
    before = (out / PLAN_FILE).read_text()
    capsys.readouterr()
    cases = [
        (["--set", "trainer.lr=0.01"], "trainer.lr: the plan has 0.001, which this command leaves out"),
        (["--set", "trainer.lr=0.01,0.001", "--set", "trainer.steps=3,4"],
         "the plan sweeps trainer.lr; this command sweeps trainer.lr, trainer.steps"),
        (["--set", "trainer.lr=0.01,0.001", "--seeds", "1"], "the plan has seeds 0, 1; this command has 0"),
    ]
    for args, expected in cases:
        assert main(_sweep(tiny_config, out, *args)) == 2
        error = capsys.readouterr().err
        assert expected in error, error
        assert "--set trainer.lr=0.01,0.001 --seeds 2 --out" in error  # the command of the plan in the folder
    tiny_config.write_text(tiny_config.read_text().replace("steps: 40", "steps: 41"))
    assert main(_sweep(tiny_config, out, "--set", "trainer.lr=0.01,0.001", "--seeds", "2")) == 2
    assert "the config differs" in capsys.readouterr().err
    assert (out / PLAN_FILE).read_text() == before


def test_a_grid_may_grow_and_keeps_its_members_indices(tiny_config: Path, tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    first = plan_sweep(tiny_config, ["trainer.lr=0.01,0.001"], seeds=2, out=out)
    grown = plan_sweep(tiny_config, {"trainer.lr": [0.1, "0.01", "0.001"]}, seeds=3, out=out)
    assert grown.members[: len(first.members)] == first.members
    assert [(m.setting, m.seed) for m in grown.members[4:]] == [
        ((("trainer.lr", "0.01"),), 2), ((("trainer.lr", "0.001"),), 2),
        ((("trainer.lr", "0.1"),), 0), ((("trainer.lr", "0.1"),), 1), ((("trainer.lr", "0.1"),), 2)]
    assert load_plan(out) == grown and grown.axes[0].values == ("0.01", "0.001", "0.1")
