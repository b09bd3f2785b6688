"""What the trainer writes for the run report: eval/step_*.npz snapshots and run.jsonl."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pixcore
import pytest
import torch
from pixcore import RunConfig
from pixcore._runfiles import RUN_FILE, read_snapshot, snapshot_paths
from pixcore.targets import ClassMask, Image, ScalarField, ValidityMask
from pixcore.train import Callback, Trainer, train
from pixcore.train._record import RunRecord
from torch import Tensor

CLASSES = 3


class Bands(pixcore.Dataset):
    """Random images; ``classes``: the grey level in three bands; ``height``: the grey level."""

    target_kinds = {"image": Image, "classes": ClassMask, "height": ScalarField, "valid": ValidityMask}
    class_names = ("dark", "middle", "bright")

    def __init__(self, length: int = 8, size: int = 16, seed: int = 0) -> None:
        self.length, self.size, self.seed = length, size, seed

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> pixcore.Sample:
        g = torch.Generator().manual_seed(self.seed * 1000 + index)
        image = torch.randint(0, 256, (3, self.size, self.size), generator=g, dtype=torch.uint8)
        grey = image.float().mean(0, keepdim=True) / 255.0
        classes = (grey[0] * CLASSES).long().clamp(max=CLASSES - 1)
        classes[0, :3] = 255  # a few ignored pixels
        valid = torch.ones(self.size, self.size, dtype=torch.bool)
        valid[-2:] = False  # and a few invalid ones
        return {"image": Image(image), "classes": ClassMask(classes), "height": ScalarField(grey),
                "valid": ValidityMask(valid)}


class _BandsPlugin:
    @pixcore.hookimpl
    def pixcore_datasets(self) -> Iterator[pixcore.Component]:
        yield pixcore.Component("test_bands", Bands)


@pytest.fixture
def bands_manager(manager: pixcore.PluginManager) -> pixcore.PluginManager:
    """The core test components (test_tiny, test_classes, test_height) and the Bands data set."""
    manager.register(_BandsPlugin(), name="test-bands")
    return manager


def _config(steps: int = 2, val_length: int = 4, **trainer: Any) -> RunConfig:
    return RunConfig.model_validate({
        "model": {
            "backbone": {"name": "test_tiny", "params": {"width": 4}},
            "tasks": {
                "classes": {"task": "test_classes", "params": {"num_classes": CLASSES, "valid_key": "valid"},
                            "head": {"name": "fpn", "params": {"channels": 8}}},
                "height": {"task": "test_height", "head": {"name": "fpn", "params": {"channels": 8}}},
            },
        },
        "data": {"train": {"name": "test_bands", "params": {"length": 8}},
                 "val": {"name": "test_bands", "params": {"length": val_length, "seed": 1}},
                 "batch_size": 2, "num_workers": 0},
        "trainer": {"steps": steps, "lr": 1e-2, "progress": False, "log_every": 1, "eval_every": 1,
                    "device": "cpu", **trainer},
    })


def _eval_records(folder: Path) -> dict[int, dict[str, Any]]:
    lines = [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines()]
    return {r["step"]: r["metrics"] for r in lines if r["kind"] == "eval"}


def test_the_confusion_matrix_is_the_bincount_of_the_stored_predictions(
    tmp_path: Path, bands_manager: pixcore.PluginManager
) -> None:
    # Four validation samples in batches of two: the snapshot keeps all of them (over two
    # batches), so its confusion matrix must be the counts of its own pairs.
    trainer, _ = train(_config(steps=2), tmp_path, bands_manager)
    snapshot = read_snapshot(snapshot_paths(tmp_path)[-1][1])
    target = snapshot.arrays["classes/target"]
    predicted = snapshot.arrays["classes/prediction"]
    valid = snapshot.arrays["classes/valid"]
    assert target.shape == predicted.shape == valid.shape == (4, 16, 16)

    # The stored predictions are the model's: argmax of its logits on the same samples.
    val_set = Bands(length=4, seed=1)
    trainer.model.eval()
    with torch.no_grad():
        logits = trainer.model(torch.stack([val_set[i]["image"] for i in range(4)]))["classes"]
    np.testing.assert_array_equal(predicted, logits.argmax(1).numpy())
    np.testing.assert_array_equal(target, np.stack([val_set[i]["classes"].numpy() for i in range(4)]))

    keep = valid & (target != 255)
    expected = np.bincount(target[keep] * CLASSES + predicted[keep], minlength=CLASSES * CLASSES)
    confusion = snapshot.arrays["classes/confusion"]
    np.testing.assert_array_equal(confusion, expected.reshape(CLASSES, CLASSES))
    assert confusion.sum() == keep.sum() == 4 * (14 * 16 - 3)  # invalid rows and ignored pixels left out

    # The pixel accuracy of the test metric (its own implementation) agrees with the matrix.
    accuracy = _eval_records(tmp_path)[2]["classes"]["acc"]
    assert np.trace(confusion) / confusion.sum() == pytest.approx(accuracy, abs=1e-12)
    meta = snapshot.tasks["classes"]
    assert meta["class_names"] == ["dark", "middle", "bright"] and meta["role"] == "segmentation"
    assert snapshot.tasks["height"]["role"] == "other"  # no unit: pictures and curves only


def test_every_evaluation_keeps_the_same_samples(tmp_path: Path, bands_manager: pixcore.PluginManager) -> None:
    train(_config(steps=3, val_length=6), tmp_path, bands_manager)
    found = snapshot_paths(tmp_path)
    assert [step for step, _ in found] == [1, 2, 3]
    val_set = Bands(length=6, seed=1)
    images = np.stack([val_set[i]["image"].permute(1, 2, 0).numpy() for i in range(4)])
    for _, path in found:
        snapshot = read_snapshot(path)
        assert snapshot.meta["indices"] == [0, 1, 2, 3]
        np.testing.assert_array_equal(snapshot.arrays["image"], images)
        for key in ("image", "classes/picture_target", "classes/picture_prediction", "height/picture_target"):
            assert snapshot.arrays[key].shape == (4, 16, 16, 3) and snapshot.arrays[key].dtype == np.uint8
        # Over the whole validation set (6 samples), not only the 4 kept ones.
        assert snapshot.arrays["classes/confusion"].sum() == 6 * (14 * 16 - 3)


class Killed(Exception):
    """Stands for the process dying: nothing after it runs, not on_fit_end nor the final checkpoint."""


class _KillAfter(Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, trainer: Trainer, loss: Tensor) -> None:
        if trainer.step == self.step:
            raise Killed


def test_run_record_and_snapshots_survive_a_resume(tmp_path: Path, bands_manager: pixcore.PluginManager) -> None:
    with pytest.raises(Killed):
        train(_config(steps=4, checkpoint_every=2), tmp_path, bands_manager, callbacks=[_KillAfter(3)])
    # Step 3 is lost with the process (the checkpoint is from step 2); so is anything it recorded.
    assert [s for s, _ in snapshot_paths(tmp_path)] == [1, 2, 3]
    with (tmp_path / RUN_FILE).open("a") as handle:
        handle.write(json.dumps({"kind": "end", "step": 3}) + "\n")

    # Resumed with evaluations every 2 steps: step 3 is not evaluated again, so its snapshot must go.
    config = _config(steps=4, checkpoint_every=2, eval_every=2)
    train(config, tmp_path, bands_manager, resume=tmp_path / "checkpoint.safetensors")
    assert [s for s, _ in snapshot_paths(tmp_path)] == [1, 2, 4]
    records = [json.loads(line) for line in (tmp_path / RUN_FILE).read_text().splitlines()]
    assert [(r["kind"], r["step"]) for r in records] == [("start", 0), ("start", 2), ("end", 4)]
    start, end = records[1], records[2]
    assert start["resumed"] and start["config"]["trainer"]["eval_every"] == 2
    assert start["device"]["device"] == "cpu" and start["world_size"] == 1
    assert start["versions"]["torch"] == torch.__version__ and start["versions"]["pixcore"] == pixcore.__version__
    assert end["segment_steps"] == 2 and end["steps_per_second"] == pytest.approx(2 / end["segment_seconds"])


def test_a_new_run_starts_its_record_afresh(tmp_path: Path, bands_manager: pixcore.PluginManager) -> None:
    train(_config(steps=3), tmp_path, bands_manager)
    train(_config(steps=1), tmp_path, bands_manager, overwrite=True)
    assert [s for s, _ in snapshot_paths(tmp_path)] == [1]
    records = [json.loads(line) for line in (tmp_path / RUN_FILE).read_text().splitlines()]
    assert [(r["kind"], r["step"]) for r in records] == [("start", 0), ("end", 1)]


def test_only_rank_zero_writes_the_run_record(tmp_path: Path) -> None:
    other_rank = SimpleNamespace(is_main_process=False, step=0)
    record = RunRecord(tmp_path)
    record.on_fit_start(other_rank)  # type: ignore[arg-type]
    record.on_fit_end(other_rank, SimpleNamespace())  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


def test_class_ids_are_torch_argmax_with_ties_and_nan() -> None:
    from pixcore.train._record import _class_ids

    g = torch.Generator().manual_seed(0)
    logits = torch.randint(0, 3, (2, 5, 7, 9), generator=g).float()  # many ties: the first maximum wins
    np.testing.assert_array_equal(_class_ids(logits).numpy(), logits.argmax(1).numpy())
    logits[1, 3, 2, 2] = float("nan")  # a NaN is the maximum, as in torch.argmax
    np.testing.assert_array_equal(_class_ids(logits).numpy(), logits.argmax(1).numpy())
    ids = torch.randint(0, 5, (2, 1, 7, 9), generator=g)
    assert torch.equal(_class_ids(ids), ids[:, 0])
