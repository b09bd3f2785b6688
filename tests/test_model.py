"""Model composition with the test backbone and tasks (see conftest)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pixcore
import pytest
import torch
from torch import Tensor

Batch = Callable[..., dict[str, Tensor]]

#: A narrow FPN keeps the tests fast on a CPU.
SMALL_FPN = {"name": "fpn", "params": {"channels": 16}}


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def test_build_from_names(manager: pixcore.PluginManager, components: SimpleNamespace) -> None:
    model = pixcore.build_model("test_tiny", ["test_height"], manager=manager)
    assert isinstance(model, pixcore.MultiTaskModel)
    assert isinstance(model.backbone, components.TinyTestBackbone)
    assert isinstance(model.tasks["test_height"], components.HeightTask)
    assert type(model.heads["test_height"]).__name__ == "FPNHead"  # the task's default head
    assert isinstance(model.losses["test_height"], components.MaskedL1)  # and default loss
    binding = model.bindings["test_height"]
    assert [m.name for m in binding.metric_configs] == ["test_mae"]
    assert isinstance(binding.new_metrics(manager)["test_mae"], components.MeanAbsoluteError)


def test_build_from_mapping_with_options(manager: pixcore.PluginManager, components: SimpleNamespace) -> None:
    model = pixcore.build_model(
        {"name": "test_tiny", "params": {"width": 4}},
        {
            "up": "test_height",
            "cls": {"task": "test_classes", "params": {"num_classes": 5}, "head": "linear",
                    "loss": {"name": "test_ce", "params": {"label_smoothing": 0.1}}, "weight": 0.5},
        },
        manager=manager,
        normalize=False,
    )
    assert model.backbone.feature_info[0].channels == 4
    assert type(model.heads["cls"]).__name__ == "LinearHead"
    assert model.heads["cls"].output.out_channels == 5  # out_channels from the task
    loss = model.losses["cls"]
    assert isinstance(loss, components.CrossEntropy) and loss.label_smoothing == 0.1
    assert model.bindings["cls"].weight == 0.5 and model.normalize is False
    # num_classes reaches the metric from the task's context, not from the config.
    metric = model.bindings["cls"].new_metrics(manager)["test_acc"]
    assert metric.num_classes == 5


def test_build_from_config_dict_and_file(manager: pixcore.PluginManager, tmp_path: Path) -> None:
    model_section = {"backbone": "test_tiny", "tasks": {"h": {"task": "test_height", "weight": 2.0}}}
    from_dict = pixcore.build_model_from_config(model_section, manager=manager)
    assert list(from_dict.heads) == ["h"] and from_dict.bindings["h"].weight == 2.0
    path = tmp_path / "run.yaml"
    path.write_text(
        "model:\n  backbone: test_tiny\n  tasks:\n    h: {task: test_height, weight: 2.0}\n"
        "data:\n  train: synthetic\n",
        encoding="utf-8",
    )
    config = pixcore.load_config(path)
    from_file = pixcore.build_model_from_config(config.model, manager=manager)
    assert from_file.config == from_dict.config
    assert from_file.state_dict().keys() == from_dict.state_dict().keys()


@pytest.mark.parametrize(("height", "width"), [(61, 83), (64, 64), (33, 31), (5, 7)])
def test_forward_at_input_size(manager: pixcore.PluginManager, make_batch: Batch, height: int, width: int) -> None:
    model = pixcore.build_model(
        "test_tiny",
        {"h": {"task": "test_height", "head": SMALL_FPN},
         "c": {"task": "test_classes", "params": {"num_classes": 4}, "head": SMALL_FPN}},
        manager=manager,
    ).eval()
    image = make_batch(2, height, width)["image"]
    assert image.dtype == torch.uint8
    with torch.no_grad():
        out = model(image)
    assert set(out) == {"h", "c"}
    assert out["h"].shape == (2, 1, height, width)
    assert out["c"].shape == (2, 4, height, width)
    assert (out["h"] >= 0).all()  # decoded by the task (softplus)
    assert all(torch.isfinite(v).all() for v in out.values())


def test_uint8_and_float_input_agree(manager: pixcore.PluginManager, make_batch: Batch) -> None:
    model = pixcore.build_model(
        "test_tiny", {"h": {"task": "test_height", "head": SMALL_FPN}}, manager=manager
    ).eval()
    image = make_batch(1, 40, 56)["image"]
    with torch.no_grad():
        from_uint8 = model(image)["h"]
        from_float = model(image.float() / 255.0)["h"]
    torch.testing.assert_close(from_uint8, from_float)


def test_compute_loss_weighted_total_and_parts(manager: pixcore.PluginManager, make_batch: Batch) -> None:
    model = pixcore.build_model(
        "test_tiny",
        {"h": {"task": "test_height", "weight": 2.0, "head": SMALL_FPN},
         "c": {"task": "test_classes", "weight": 0.25, "head": SMALL_FPN}},
        manager=manager,
    )
    batch = make_batch(2, 61, 83)
    predictions = model(batch["image"])
    total, parts = model.compute_loss(predictions, batch)
    assert set(parts) == {"h/loss", "h/l1", "c/loss", "c/ce"}
    assert total.ndim == 0
    expected = 2.0 * parts["h/loss"] + 0.25 * parts["c/loss"]
    torch.testing.assert_close(total, expected)
    # The height loss honours the validity mask: recompute it by hand.
    valid = batch["valid"].unsqueeze(1)
    by_hand = (predictions["h"] - batch["height"]).abs()[valid].mean()
    torch.testing.assert_close(parts["h/loss"], by_hand)


def test_backward_gives_finite_gradients(manager: pixcore.PluginManager, make_batch: Batch) -> None:
    model = pixcore.build_model(
        "test_tiny",
        {"h": {"task": "test_height", "head": SMALL_FPN}, "c": {"task": "test_classes", "head": SMALL_FPN}},
        manager=manager,
    )
    batch = make_batch(2, 61, 83)
    total, _ = model.compute_loss(model(batch["image"]), batch)
    total.backward()
    grads = {name: p.grad for name, p in model.named_parameters() if p.requires_grad}
    assert all(g is not None for g in grads.values()), [n for n, g in grads.items() if g is None]
    assert all(torch.isfinite(g).all() for g in grads.values() if g is not None)
    assert any(g.abs().sum() > 0 for n, g in grads.items() if n.startswith("backbone.") and g is not None)


def test_missing_target_key_says_how_to_fix(manager: pixcore.PluginManager, make_batch: Batch) -> None:
    model = pixcore.build_model(
        "test_tiny", {"h": {"task": "test_height", "params": {"target_key": "elevation"}, "head": SMALL_FPN}},
        manager=manager,
    ).eval()
    batch = make_batch(2, 32, 32)
    with pytest.raises(KeyError, match="'elevation'.*target_key"):
        model.compute_loss(model(batch["image"]), batch)


# -- errors ----------------------------------------------------------------------------


def test_unknown_backbone(manager: pixcore.PluginManager) -> None:
    with pytest.raises(pixcore.UnknownComponentError, match="Did you mean 'test_tiny'"):
        pixcore.build_model("test_tiyn", ["test_height"], manager=manager)


def test_unknown_task_suggests_and_hints(manager: pixcore.PluginManager) -> None:
    with pytest.raises(pixcore.UnknownComponentError, match="Did you mean 'test_height'"):
        pixcore.build_model("test_tiny", ["test_hieght"], manager=manager)
    with pytest.raises(pixcore.UnknownComponentError, match="If a plugin provides .depth.*`pixcore plugins`"):
        pixcore.build_model("test_tiny", ["depth"], manager=manager)


@pytest.mark.parametrize(
    ("tasks", "path"),
    [
        ({"t": {"task": "test_hieght"}}, "model.tasks.t"),
        ({"t": {"task": "test_height", "head": "fnp"}}, "model.tasks.t.head"),
        ({"t": {"task": "test_height", "loss": "test_l2"}}, "model.tasks.t.loss"),
        ({"t": {"task": "test_height", "metrics": ["test_mae", "test_rmse"]}}, "model.tasks.t.metrics.1"),
    ],
)
def test_unknown_names_name_the_config_path(
    manager: pixcore.PluginManager, tasks: dict[str, object], path: str
) -> None:
    config = {"backbone": "test_tiny", "tasks": tasks}
    with pytest.raises(pixcore.UnknownComponentError, match=path.replace(".", r"\.")):
        pixcore.build_model_from_config(config, manager=manager, path="model")


def test_bad_params_name_the_config_path(manager: pixcore.PluginManager) -> None:
    with pytest.raises(pixcore.ConfigError, match=r"build_model\.tasks\.h\.head\.params\.dropout"):
        pixcore.build_model(
            "test_tiny", {"h": {"task": "test_height", "head": {"name": "fpn", "params": {"dropout": "x"}}}},
            manager=manager,
        )


def test_structural_errors_name_the_path(manager: pixcore.PluginManager) -> None:
    with pytest.raises(pixcore.ConfigError, match=r"tasks\.h\.wieght"):
        pixcore.build_model("test_tiny", {"h": {"task": "test_height", "wieght": 2}}, manager=manager)
    with pytest.raises(pixcore.ConfigError, match="tasks"):
        pixcore.build_model("test_tiny", [], manager=manager)


def test_build_tasks_gives_the_models_tasks_without_the_model(manager: pixcore.PluginManager) -> None:
    from pixcore.model._compose import build_tasks

    config = {"backbone": "test_tiny",
              "tasks": {"up": {"task": "test_height", "params": {"target_key": "z"}},
                        "cls": {"task": "test_classes", "params": {"num_classes": 5}}}}
    tasks = build_tasks(config, manager=manager)
    model = pixcore.build_model_from_config(config, manager=manager)
    assert list(tasks) == list(model.tasks) == ["up", "cls"]
    for name, task in tasks.items():
        assert type(task) is type(model.tasks[name])
        assert (task.target_key, task.valid_key) == (model.tasks[name].target_key, model.tasks[name].valid_key)
    assert tasks["up"].target_key == "z"
    config["tasks"]["up"]["params"] = {"target_kye": "z"}
    with pytest.raises(pixcore.ConfigError, match=r"model\.tasks\.up\.params\.target_kye"):
        build_tasks(config, manager=manager)


def test_non_backbone_factory_is_refused(manager: pixcore.PluginManager) -> None:
    class NotABackbone:
        @pixcore.hookimpl
        def pixcore_backbones(self) -> object:
            yield pixcore.Component("not_a_backbone", torch.nn.Identity)

    manager.register(NotABackbone(), name="nab")
    with pytest.raises(pixcore.ConfigError, match=r"model\.backbone.*not a pixcore\.Backbone"):
        pixcore.build_model_from_config(
            {"backbone": "not_a_backbone", "tasks": ["test_height"]}, manager=manager, path="model"
        )


def test_uses_process_wide_manager_by_default(
    global_manager: pixcore.PluginManager, components: SimpleNamespace
) -> None:
    global_manager.register(components.plugin_class(), name="tests")
    model = pixcore.build_model("test_tiny", ["test_height"])
    assert isinstance(model.backbone, components.TinyTestBackbone)
