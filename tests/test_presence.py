"""Per-sample task presence: ``pixcore.data.collate`` and ``Task.target_and_valid``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from types import SimpleNamespace

import numpy as np
import pixcore
import pytest
import torch
from pixcore.data import collate
from pixcore.targets import ClassMask, Image, Intrinsics, ScalarField, ValidityMask
from pixcore.train import evaluate
from torch import Tensor
from torch.utils.data import DataLoader, default_collate


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def typed_sample(seed: int, height: int = 8, width: int = 8) -> dict[str, object]:
    g = torch.Generator().manual_seed(seed)
    return {
        "image": Image(torch.randint(0, 256, (3, height, width), generator=g, dtype=torch.uint8)),
        "height": ScalarField(torch.rand(1, height, width, generator=g) + 0.5),
        "valid": ValidityMask(torch.rand(height, width, generator=g) > 0.3),
        "classes": ClassMask(torch.randint(0, 3, (height, width), generator=g)),
        "intrinsics": Intrinsics(torch.eye(3) * (seed + 1)),
        "index": seed,
        "scale": 0.5 * seed,
        "name": f"sample-{seed}",
        "array": np.full((2,), seed, dtype=np.int16),
    }


def assert_same_batch(actual: dict[str, object], expected: dict[str, object]) -> None:
    assert list(actual) == list(expected)
    for key, value in expected.items():
        assert type(actual[key]) is type(value), key
        if isinstance(value, Tensor):
            assert actual[key].dtype == value.dtype and torch.equal(actual[key], value), key
        else:
            assert actual[key] == value, key


# -- collate ---------------------------------------------------------------------------


def test_collate_equals_default_collate_when_nothing_is_missing() -> None:
    samples = [typed_sample(0), typed_sample(1), typed_sample(2)]
    expected = default_collate(samples)
    batch = collate(samples)
    assert_same_batch(batch, expected)
    # default_collate turns typed targets into plain tensors; so does collate.
    assert type(batch["height"]) is torch.Tensor and not any(k.startswith("present/") for k in batch)
    # Through a DataLoader as well (what the trainer does).
    loaded = next(iter(DataLoader(samples, batch_size=3, collate_fn=collate)))
    assert_same_batch(loaded, next(iter(DataLoader(samples, batch_size=3))))


def test_collate_fills_missing_keys_and_marks_presence() -> None:
    first, second, third = typed_sample(0), typed_sample(1), typed_sample(2)
    del second["height"], second["array"], third["name"]
    batch = collate([first, second, third])

    assert batch["present/height"].dtype == torch.bool
    assert batch["present/height"].tolist() == [True, False, True]
    assert batch["present/array"].tolist() == [True, False, True]
    assert batch["present/name"].tolist() == [True, True, False]
    assert "present/image" not in batch and "present/valid" not in batch  # never missing

    # The missing value is zeros of the same shape and dtype; the others are untouched.
    assert batch["height"].shape == (3, 1, 8, 8) and batch["height"].dtype == torch.float32
    assert torch.equal(batch["height"][1], torch.zeros(1, 8, 8))
    assert torch.equal(batch["height"][0], first["height"]) and torch.equal(batch["height"][2], third["height"])
    assert torch.equal(batch["array"], torch.tensor([[0, 0], [0, 0], [2, 2]], dtype=torch.int16))
    assert batch["name"] == ["sample-0", "sample-1", ""]
    # The same types as default_collate gives for complete samples.
    complete = default_collate([typed_sample(0), typed_sample(1), typed_sample(2)])
    for key, value in complete.items():
        assert type(batch[key]) is type(value), key


def test_collate_fills_from_whichever_sample_has_the_key() -> None:
    first, second = typed_sample(0), typed_sample(1)
    del first["classes"]
    batch = collate([first, second])
    assert batch["classes"].dtype == torch.int64
    assert torch.equal(batch["classes"][0], torch.zeros(8, 8, dtype=torch.int64))
    assert batch["present/classes"].tolist() == [False, True]


def test_collate_in_loader_workers() -> None:
    samples = [typed_sample(0), typed_sample(1)]
    del samples[0]["height"]
    loader = DataLoader(samples, batch_size=2, collate_fn=collate, num_workers=1)
    batch = next(iter(loader))
    assert batch["present/height"].tolist() == [False, True]
    assert torch.equal(batch["height"][1], samples[1]["height"])


def test_collate_errors_name_the_key() -> None:
    first, second = typed_sample(0), typed_sample(1)
    first["meta"] = {"camera": "a"}
    with pytest.raises(TypeError, match="'meta'"):
        collate([first, second])
    first, second = typed_sample(0), typed_sample(1)
    del first["height"]
    second["present/height"] = torch.tensor(True)
    with pytest.raises(KeyError, match="present/height"):
        collate([first, second])


# -- target_and_valid ------------------------------------------------------------------


def test_target_and_valid_ands_presence(components: SimpleNamespace) -> None:
    first, second = typed_sample(0), typed_sample(1)
    del second["height"]
    batch = collate([first, second])

    height = components.HeightTask()  # valid_key "valid"
    target, valid = height.target_and_valid(batch)
    assert torch.equal(valid[0], first["valid"])  # by hand: the mask of sample 0 ...
    assert not valid[1].any()  # ... and nothing of the sample without the label

    classes = components.ClassesTask(target_key="classes")  # no valid key: all pixels
    _, valid = classes.target_and_valid(batch)
    assert valid.all()  # every sample carries classes: no present/classes, nothing masked
    batch["present/classes"] = torch.tensor([False, True])
    _, valid = classes.target_and_valid(batch)
    assert valid.tolist() == [[[False] * 8] * 8, [[True] * 8] * 8]


# -- loss, gradients and metrics ignore a sample without the label ---------------------


def two_samples(height: int = 32, width: int = 32) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    g = torch.Generator().manual_seed(3)

    def sample() -> dict[str, Tensor]:
        return {
            "image": Image(torch.randint(0, 256, (3, height, width), generator=g, dtype=torch.uint8)),
            "height": ScalarField(torch.rand(1, height, width, generator=g) * 3),
            "valid": ValidityMask(torch.rand(height, width, generator=g) > 0.2),
            "classes": ClassMask(torch.randint(0, 3, (height, width), generator=g)),
        }

    first, second = sample(), sample()
    del second["height"]  # its validity mask stays (as for a sample labelled for normals only)
    assert second["valid"].any()
    return first, second


def test_a_sample_without_depth_changes_neither_loss_nor_gradients(
    manager: pixcore.PluginManager, components: SimpleNamespace
) -> None:
    torch.manual_seed(0)
    model = pixcore.build_model(
        "test_tiny", {"height": {"task": "test_height", "head": "linear"}}, manager=manager
    ).eval()  # eval: BatchNorm must not couple the samples of a batch
    first, second = two_samples()
    batch = collate([first, second])
    predictions = model(batch["image"])
    total, parts = model.compute_loss(predictions, batch)

    # Reference: the test's own L1 on the first sample alone, written out here.
    alone = predictions["height"][:1]
    mask = first["valid"].unsqueeze(0).unsqueeze(0)
    reference = (alone - first["height"].unsqueeze(0)).abs()[mask].mean()
    assert torch.equal(total, reference) and torch.equal(parts["height/loss"], reference)

    # Gradients with respect to the predictions: sample 2 gets exactly zero.
    (grad,) = torch.autograd.grad(total, predictions["height"], retain_graph=True)
    (grad_alone,) = torch.autograd.grad(reference, predictions["height"], retain_graph=True)
    assert torch.equal(grad, grad_alone)
    assert torch.count_nonzero(grad[1]) == 0

    # And with respect to the weights: the same as a batch of the first sample alone.
    params = [p for p in model.parameters() if p.requires_grad]
    grads = torch.autograd.grad(total, params)
    one = default_collate([first])
    single_total, _ = model.compute_loss(model(one["image"]), one)
    single_grads = torch.autograd.grad(single_total, params)
    torch.testing.assert_close(single_total, total, rtol=1e-6, atol=1e-7)
    for a, b in zip(grads, single_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def test_metrics_ignore_a_sample_without_the_label(
    manager: pixcore.PluginManager, components: SimpleNamespace
) -> None:
    torch.manual_seed(0)
    model = pixcore.build_model(
        "test_tiny", {"height": {"task": "test_height", "head": "linear"}}, manager=manager
    ).eval()
    first, second = two_samples()
    with torch.no_grad():
        batch = collate([first, second])
        prediction = model(batch["image"])["height"]
        target, valid = model.tasks["height"].target_and_valid(batch)
        metric = components.MeanAbsoluteError()
        metric.update(prediction, target, valid)
    # By hand: the mean absolute error over the first sample's valid pixels only.
    mask = first["valid"].numpy()
    expected = np.abs(prediction[0, 0].numpy() - first["height"][0].numpy())[mask].mean()
    assert metric.compute()["mae"] == pytest.approx(float(expected), rel=1e-6)
    assert metric.state["count"].item() == mask.sum()

    # pixcore.train.evaluate over a loader with the trainer's collate does the same.
    loader = DataLoader([first, second], batch_size=2, collate_fn=collate)
    results = evaluate(model, loader, torch.device("cpu"), manager)
    assert results["height"]["mae"] == pytest.approx(float(expected), rel=1e-5)


def test_an_absent_task_gets_no_weight_and_no_statistics(
    manager: pixcore.PluginManager, make_batch: Callable[..., dict[str, Tensor]]
) -> None:
    torch.manual_seed(0)
    model = pixcore.build_model(
        "test_tiny",
        {"height": {"task": "test_height", "head": "linear"},
         "classes": {"task": "test_classes", "head": "linear"}},
        manager=manager, weighting="uncertainty",
    )
    batch = make_batch(batch=2, height=32, width=32)
    batch["present/height"] = torch.tensor([False, False])  # no sample has a height label
    total, parts = model.compute_loss(model(batch["image"]), batch)
    assert parts["height/loss"].item() == 0.0
    assert parts["weight/height"].item() == 0.0 and parts["weight/classes"].item() == 1.0
    total.backward()
    grad = model.weighting.log_variance.grad
    assert grad is not None
    # s_height untouched; s_classes: 1 - exp(0) * L_classes.
    assert grad.tolist() == pytest.approx([0.0, 1.0 - parts["classes/loss"].item()], rel=1e-5)
