"""The example configs in configs/: they load, name components that exist with valid
parameters, and the synthetic ones train for a couple of steps."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pixcore
import pytest
import torch
from pixcore.train import train

ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = ROOT / "configs"
CONFIGS = sorted(CONFIG_DIR.glob("*.yaml"))
SYNTHETIC = [path for path in CONFIGS if path.name.startswith("synthetic_")]
DATASETS = [path for path in CONFIGS if not path.name.startswith("synthetic_")]

#: Feature levels of a typical CNN backbone, to validate head parameters without building one.
CNN_LEVELS = [pixcore.FeatureLevel(c, s) for c, s in ((256, 4), (512, 8), (1024, 16), (2048, 32))]


def _ids(paths: list[Path]) -> list[str]:
    return [path.stem for path in paths]


@pytest.fixture
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_the_example_configs_are_there() -> None:
    assert {path.stem for path in CONFIGS} == {
        "synthetic_segmentation", "synthetic_depth", "synthetic_normals", "synthetic_multitask",
        "synthetic_dinov2_linear_probe", "synthetic_dinov2_dpt",
        "voc_segmentation", "cityscapes_segmentation", "ade20k_segmentation",
        "nyu_multitask", "nyu_depth", "kitti_depth", "middlebury_depth",
    }


@pytest.mark.parametrize("path", CONFIGS, ids=_ids(CONFIGS))
def test_config_loads_and_explains_itself(path: Path) -> None:
    config = pixcore.load_config(path)
    assert isinstance(config, pixcore.RunConfig)
    assert config.data.val is not None, "every example evaluates on held-out data"
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0].startswith("# ") and sum(line.lstrip().startswith("#") for line in lines) >= 3
    assert f"configs/{path.name}" in path.read_text(encoding="utf-8"), "the header shows how to run it"


@pytest.mark.parametrize("path", CONFIGS, ids=_ids(CONFIGS))
def test_components_exist_and_accept_their_parameters(path: Path) -> None:
    config = pixcore.load_config(path)
    model = config.model
    pixcore.registry("backbones").validate(
        model.backbone.name, model.backbone.params, path="model.backbone.params"
    )
    weights = {key: task.weight for key, task in model.tasks.items()}
    pixcore.registry("weightings").validate(
        model.weighting.name, model.weighting.params, path="model.weighting.params",
        context={"tasks": list(model.tasks), "weights": weights},
    )
    for key, task_config in model.tasks.items():
        where = f"model.tasks.{key}"
        task = pixcore.registry("tasks").create(
            task_config.task or key, task_config.params, path=f"{where}.params"
        )
        context = task.context()
        if task_config.head is not None:
            pixcore.registry("heads").validate(
                task_config.head.name, task_config.head.params, path=f"{where}.head.params",
                context={**context, "in_features": CNN_LEVELS, "out_channels": task.out_channels},
            )
        if task_config.loss is not None:
            pixcore.registry("losses").create(
                task_config.loss.name, task_config.loss.params, path=f"{where}.loss.params", context=context
            )
        for i, metric in enumerate(task_config.metrics or []):
            pixcore.registry("metrics").create(
                metric.name, metric.params, path=f"{where}.metrics.{i}.params", context=context
            )
    for i, augmentation in enumerate(config.data.augmentations):
        pixcore.registry("augmentations").create(augmentation.name, augmentation.params,
                                                 path=f"data.augmentations.{i}.params")


@pytest.mark.parametrize("path", DATASETS, ids=_ids(DATASETS))
def test_dataset_parameters_validate_against_the_reader(path: Path, tmp_path: Path) -> None:
    config = pixcore.load_config(path)
    datasets = pixcore.registry("datasets")
    for split in ("train", "val"):
        entry: Any = getattr(config.data, split)
        if entry.name not in datasets:
            pytest.skip(f"the {entry.name!r} reader is not registered (its plugin is not installed)")
        assert set(entry.params) >= {"root", "split"}, f"data.{split}.params: root and split"
        params = {**entry.params, "root": str(tmp_path)}  # a real path: nothing is opened here
        datasets.validate(entry.name, params, path=f"data.{split}.params")


@pytest.mark.slow
@pytest.mark.parametrize("path", SYNTHETIC, ids=_ids(SYNTHETIC))
def test_synthetic_config_trains_two_steps(path: Path, one_thread: None) -> None:
    overrides = [
        "trainer.steps=2", "trainer.warmup_steps=0", "trainer.progress=false", "trainer.device=cpu",
        "trainer.log_every=1", "data.batch_size=2", "data.num_workers=0",
        "data.train.params.height=40", "data.train.params.width=40", "data.train.params.length=4",
        "data.val.params.height=40", "data.val.params.width=40", "data.val.params.length=2",
    ]
    config = pixcore.load_config(path, overrides)
    for augmentation in config.data.augmentations:  # crops to the small size too
        if "size" in augmentation.params:
            augmentation.params["size"] = 40
    _, result = train(config)  # no out_dir: nothing written (the CLI tests cover checkpoints)
    assert result.steps == 2
    assert set(result.metrics) == set(config.model.tasks)
    assert len(result.history) == 2
    assert all(torch.isfinite(torch.tensor(row["loss"])) for row in result.history)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["synthetic_dinov2_linear_probe", "synthetic_dinov2_dpt"])
def test_dinov2_configs_train_then_eval_and_predict_at_new_sizes(
    name: str, tmp_path: Path, one_thread: None
) -> None:
    import json

    import numpy as np
    from PIL import Image
    from pixcore._cli import main

    path = CONFIG_DIR / f"{name}.yaml"
    small = [
        "trainer.steps=3", "trainer.warmup_steps=0", "trainer.progress=false", "trainer.device=cpu",
        "data.batch_size=2", "data.num_workers=0", "data.train.params.length=6", "data.val.params.length=2",
        "data.train.params.height=42", "data.train.params.width=42", "data.augmentations=[]",
    ]
    run = tmp_path / "run"
    assert main(["train", str(path), "--out", str(run), *sum((["--set", s] for s in small), [])]) == 0
    checkpoint = run / "checkpoint.safetensors"
    # Evaluated at 61 x 90 (trained at 42 x 42; neither a multiple of 14).
    other_size = ["data.val.params.height=61", "data.val.params.width=90", "data.val.params.length=2"]
    out = tmp_path / "eval.json"
    assert main(["eval", str(path), "--checkpoint", str(checkpoint), "--out", str(out),
                 *sum((["--set", s] for s in other_size), [])]) == 0
    results = json.loads(out.read_text())
    metrics = results.get("metrics", results)
    assert {"semseg", "depth"} <= set(metrics)
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (75, 101, 3), dtype=np.uint8)).save(images / "a.png")
    assert main(["predict", str(images), "--checkpoint", str(checkpoint), "--out", str(tmp_path / "pred"),
                 "--device", "cpu"]) == 0
    assert np.asarray(Image.open(tmp_path / "pred" / "a_semseg.png")).shape == (75, 101)
    assert np.load(tmp_path / "pred" / "a_depth.npy").shape == (75, 101)
