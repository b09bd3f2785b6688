"""The experiment configs in configs/experiments/: they load, name components that exist,
and the commands docs/experiments.md gives for them validate (a sweep's plan; nothing is
trained)."""

from __future__ import annotations

import re
import shlex
import warnings
from pathlib import Path

import pixcore
import pytest
from pixcore._cli import main
from pixcore.sweep import load_plan
from pixcore.train._pretrained import pretrained_to_load

ROOT = Path(__file__).resolve().parents[2]
EXPERIMENTS = ROOT / "configs" / "experiments"
DOC = ROOT / "docs" / "experiments.md"


def _documented(prefix: str) -> list[list[str]]:
    """The commands of docs/experiments.md's bash blocks that start with ``prefix``, as arguments."""
    blocks = re.findall(r"```bash\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.DOTALL)
    commands = [line for block in blocks for line in block.replace("\\\n", " ").splitlines()]
    found = [shlex.split(command, comments=True) for command in commands if command.startswith(prefix)]
    assert found, f"docs/experiments.md gives no `{prefix} ...` command"
    return found


def _option(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


@pytest.mark.parametrize("name", ["transfer_pretrain", "transfer"])
def test_experiment_configs_load_and_name_existing_components(name: str) -> None:
    path = EXPERIMENTS / f"{name}.yaml"
    config = pixcore.load_config(path)
    assert config.data.val is not None
    pixcore.registry("backbones").validate(config.model.backbone.name, config.model.backbone.params)
    for where, data in (("data.train", config.data.train), ("data.val", config.data.val)):
        pixcore.registry("datasets").validate(data.name, data.params, path=f"{where}.params")
    assert f"configs/experiments/{path.name}" in path.read_text(encoding="utf-8"), "the header shows how to run it"


def test_the_transfer_starts_from_the_documented_pretraining() -> None:
    [pretrain_args] = _documented("pixcore train configs/experiments/transfer_pretrain.yaml")
    pretrain = pixcore.load_config(ROOT / pretrain_args[2])
    transfer = pixcore.load_config(EXPERIMENTS / "transfer.yaml")
    assert transfer.model.pretrained is not None
    assert transfer.model.pretrained.path == f"{_option(pretrain_args, '--out')}/checkpoint.safetensors"
    assert transfer.model.pretrained.part == "backbone"
    assert transfer.model.backbone == pretrain.model.backbone
    assert transfer.data.val is not None and pretrain.data.val is not None
    # One distribution for the pretraining, another for the transfer, held-out data of its own.
    assert {pretrain.data.train.params["style"], pretrain.data.val.params["style"]} == {"day"}
    assert {transfer.data.train.params["style"], transfer.data.val.params["style"]} == {"night"}
    assert (transfer.data.train.params["split"], transfer.data.val.params["split"]) == ("train", "val")


def test_the_documented_transfer_sweeps_validate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every member of the documented grids loads; scratch leaves the weights out, the other two load them."""
    sweeps = _documented("pixcore sweep configs/experiments/transfer.yaml")
    monkeypatch.chdir(ROOT)  # the config path and the weights' path are relative to the repository
    for i, args in enumerate(sweeps):
        args[args.index("--out") + 1] = str(tmp_path / f"sweep{i}")
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # e.g. a linear probe whose head is not linear
            assert main([*args[1:], "--plan"]) == 0, shlex.join(args)
        for member in load_plan(tmp_path / f"sweep{i}").members:  # the plan leaves data set parameters to the run
            train = pixcore.load_config(ROOT / args[2], member.overrides).data.train
            pixcore.registry("datasets").validate(train.name, train.params, path="data.train.params")
    plan = load_plan(tmp_path / "sweep0")  # the main grid: every recipe and size
    recipes = ("linear_probe", "finetune", "scratch")
    assert [(a.key, a.values) for a in plan.axes][0] == ("trainer.recipe", recipes)
    assert plan.axes[1].key == "data.train.params.length" and len(plan.seeds) == 3
    steps = set()
    for member in plan.members:
        config = pixcore.load_config(plan.config, member.overrides)
        weights = pretrained_to_load(config, verbose=False)
        assert (weights is None) == (config.trainer.recipe == "scratch"), member.name
        assert config.trainer.freeze_backbone == (config.trainer.recipe == "linear_probe"), member.name
        assert config.data.train.params["length"] == int(dict(member.setting)["data.train.params.length"])
        steps.add(config.trainer.steps)
    assert len(steps) == 1, "every member trains for the same number of steps"
