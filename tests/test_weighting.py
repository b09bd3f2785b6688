"""Multi-task loss weightings: fixed, uncertainty (Kendall et al. 2018), dwa (Liu et al. 2019).

Every expected value is computed here by hand (plain Python / numpy formulas), not by
the weighting under test.
"""

from __future__ import annotations

import inspect
import math
import sys
import textwrap
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pixcore
import pytest
import torch
from pixcore import hookspecs
from pixcore.testing import ContractError, check_weighting
from torch import Tensor


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Tiny models run fastest on one thread (and leave the other cores to other tests)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def weightings(manager: pixcore.PluginManager) -> pixcore.Registry[Any]:
    return manager.registry("weightings")


def two_task_config(**model: Any) -> dict[str, Any]:
    return {
        "backbone": "test_tiny",
        "tasks": {
            "height": {"task": "test_height", "head": "linear", "weight": 0.7},
            "classes": {"task": "test_classes", "head": "linear", "weight": 1.3},
        },
        **model,
    }


# -- registration and configuration ---------------------------------------------------


def test_the_builtins_are_registered_by_pixcore(manager: pixcore.PluginManager) -> None:
    assert weightings(manager).list() == ["dwa", "fixed", "uncertainty"]
    for name in ("fixed", "uncertainty", "dwa"):
        assert weightings(manager).get(name).distribution.startswith("pixcore")


def test_the_default_weighting_is_fixed_with_the_task_weights(manager: pixcore.PluginManager) -> None:
    model = pixcore.build_model_from_config(two_task_config(), manager=manager)
    assert model.config.weighting.name == "fixed"
    assert type(model.weighting).__name__ == "FixedWeighting"
    assert model.weighting.weights == {"height": 0.7, "classes": 1.3}
    assert not any(k.startswith("weighting.") for k in model.state_dict())  # old checkpoints load


def test_config_selects_uncertainty(manager: pixcore.PluginManager) -> None:
    config = two_task_config(weighting={"name": "uncertainty"})
    config["tasks"]["height"]["weight"] = config["tasks"]["classes"]["weight"] = 1.0
    model = pixcore.build_model_from_config(config, manager=manager)
    assert isinstance(model.weighting, pixcore.TaskWeighting)
    log_variance = model.state_dict()["weighting.log_variance"]
    assert torch.equal(log_variance, torch.zeros(2))
    # A parameter of the model: the trainer's optimiser sees it.
    assert any(p is model.weighting.log_variance for p in model.parameters())
    # The shorthand string form and build_model's keyword work as well.
    model = pixcore.build_model("test_tiny", {"h": "test_height"}, manager=manager, weighting="dwa")
    assert model.config.weighting.name == "dwa"


def test_an_unknown_weighting_gives_the_registry_error(manager: pixcore.PluginManager) -> None:
    with pytest.raises(pixcore.UnknownComponentError) as error:
        pixcore.build_model_from_config(two_task_config(weighting="dwaa"), manager=manager)
    message = str(error.value)
    assert "model.weighting" in message and "'dwaa'" in message
    assert "Did you mean 'dwa'" in message
    assert "Available weightings: dwa, fixed, uncertainty" in message


def test_bad_weighting_params_name_their_config_path(manager: pixcore.PluginManager) -> None:
    config = two_task_config(weighting={"name": "dwa", "params": {"period": 0}})
    with pytest.raises(pixcore.ConfigError, match=r"model\.weighting\.params\.period"):
        pixcore.build_model_from_config(config, manager=manager)
    config = two_task_config(weighting={"name": "uncertainty", "params": {"temprature": 2}})
    with pytest.raises(pixcore.ConfigError, match="temprature"):
        pixcore.build_model_from_config(config, manager=manager)


def test_uncertainty_and_dwa_warn_that_task_weights_are_ignored(manager: pixcore.PluginManager) -> None:
    with pytest.warns(UserWarning, match="ignored"):
        pixcore.build_model_from_config(two_task_config(weighting="uncertainty"), manager=manager)


def test_a_weighting_rejects_losses_of_other_tasks(manager: pixcore.PluginManager) -> None:
    dwa = weightings(manager).create("dwa", context={"tasks": ["a", "b"]})
    with pytest.raises(KeyError, match=r"missing: \['b'\]"):
        dwa({"a": torch.tensor(1.0)})


# -- fixed -----------------------------------------------------------------------------


def test_fixed_is_bitwise_the_hand_written_weighted_sum(
    manager: pixcore.PluginManager, make_batch: Callable[..., dict[str, Tensor]], components: SimpleNamespace
) -> None:
    torch.manual_seed(0)
    model = pixcore.build_model_from_config(two_task_config(), manager=manager)
    batch = make_batch(batch=2, height=32, width=32)
    predictions = model(batch["image"])
    total, parts = model.compute_loss(predictions, batch)

    # The reference: each loss by hand (the test components), then 0.7 * L1 + 1.3 * L2.
    l1 = components.MaskedL1()(predictions["height"], batch["height"], batch["valid"]).total
    l2 = components.CrossEntropy()(
        predictions["classes"], batch["classes"], torch.ones_like(batch["valid"])
    ).total
    expected = 0.7 * l1 + 1.3 * l2
    assert torch.equal(total, expected)
    assert set(parts) == {"height/loss", "height/l1", "classes/loss", "classes/ce"}

    # Gradients agree bitwise too.
    grads = torch.autograd.grad(total, list(model.parameters()), retain_graph=True, allow_unused=True)
    reference = torch.autograd.grad(expected, list(model.parameters()), allow_unused=True)
    for a, b in zip(grads, reference, strict=True):
        assert (a is None and b is None) or torch.equal(a, b)


def test_fixed_gives_an_absent_task_weight_zero(manager: pixcore.PluginManager) -> None:
    fixed = weightings(manager).create("fixed", context={"weights": {"a": 2.0, "b": 3.0}})
    a = torch.tensor(1.5, requires_grad=True)
    b = torch.tensor(4.0, requires_grad=True)
    out = fixed({"a": a, "b": b}, {"a": torch.tensor(True), "b": torch.tensor(False)})
    assert out.total.item() == 3.0  # 2 * 1.5 + 0
    out.total.backward()
    assert a.grad is not None and a.grad.item() == 2.0
    assert b.grad is not None and b.grad.item() == 0.0  # connected, but no gradient
    assert fixed({"a": a, "b": b}, {"a": False, "b": True}).total.item() == 12.0


def test_fixed_checks_its_weights(manager: pixcore.PluginManager) -> None:
    with pytest.raises(ValueError, match=r"missing \['b'\]"):
        weightings(manager).create("fixed", {"weights": {"a": 1.0}}, context={"tasks": ["a", "b"]})


# -- uncertainty -----------------------------------------------------------------------


def test_uncertainty_total_and_gradient_match_the_closed_form(manager: pixcore.PluginManager) -> None:
    weighting = weightings(manager).create("uncertainty", context={"tasks": ["a", "b", "c"]})
    s = np.array([0.3, -0.5, 1.2])
    losses = np.array([2.0, 0.5, 0.8])
    with torch.no_grad():
        weighting.log_variance.copy_(torch.tensor(s, dtype=torch.float32))
    inputs = {n: torch.tensor(v, dtype=torch.float32, requires_grad=True) for n, v in zip("abc", losses, strict=True)}
    out = weighting(inputs)

    expected_total = sum(math.exp(-si) * li + si for si, li in zip(s, losses, strict=True))
    assert out.total.item() == pytest.approx(expected_total, rel=1e-6)
    out.total.backward()
    # d/ds_i [exp(-s_i) L_i + s_i] = 1 - exp(-s_i) L_i ;  d/dL_i = exp(-s_i)
    expected_grad = [1.0 - math.exp(-si) * li for si, li in zip(s, losses, strict=True)]
    np.testing.assert_allclose(weighting.log_variance.grad.numpy(), expected_grad, rtol=1e-5, atol=1e-6)
    for name, si in zip("abc", s, strict=True):
        assert inputs[name].grad.item() == pytest.approx(math.exp(-si), rel=1e-6)
        assert out.parts[f"weight/{name}"].item() == pytest.approx(math.exp(-si), rel=1e-6)
        assert out.parts[f"log_variance/{name}"].item() == pytest.approx(si, rel=1e-6)


def test_uncertainty_learns_the_log_of_each_loss(manager: pixcore.PluginManager) -> None:
    weighting = weightings(manager).create("uncertainty", context={"tasks": ["seg", "depth"]})
    losses = {"seg": torch.tensor(3.0), "depth": torch.tensor(0.25)}
    optimizer = torch.optim.SGD(weighting.parameters(), lr=0.2)
    for _ in range(300):
        optimizer.zero_grad()
        weighting(losses).total.backward()
        optimizer.step()
    # The minimum of exp(-s) L + s is at s = log L.
    np.testing.assert_allclose(weighting.log_variance.detach().numpy(), [math.log(3.0), math.log(0.25)], atol=1e-3)


def test_uncertainty_leaves_an_absent_task_alone(manager: pixcore.PluginManager) -> None:
    weighting = weightings(manager).create("uncertainty", context={"tasks": ["a", "b"]})
    out = weighting({"a": torch.tensor(2.0), "b": torch.tensor(5.0)}, {"a": True, "b": torch.tensor(False)})
    assert out.total.item() == pytest.approx(2.0)  # exp(0) * 2 + 0; b adds nothing
    out.total.backward()
    assert weighting.log_variance.grad.tolist() == pytest.approx([1.0 - 2.0, 0.0])
    assert out.parts["weight/b"].item() == 0.0


def test_uncertainty_through_compute_loss_trains_the_log_variances(
    manager: pixcore.PluginManager, make_batch: Callable[..., dict[str, Tensor]]
) -> None:
    torch.manual_seed(0)
    config = two_task_config(weighting="uncertainty")
    config["tasks"]["height"]["weight"] = config["tasks"]["classes"]["weight"] = 1.0
    model = pixcore.build_model_from_config(config, manager=manager)
    batch = make_batch(batch=2, height=32, width=32)
    total, parts = model.compute_loss(model(batch["image"]), batch)
    expected = parts["height/loss"] + parts["classes/loss"]  # s = 0: weights 1, plus 0
    assert total.item() == pytest.approx(expected.item(), rel=1e-6)
    assert parts["weight/height"].item() == 1.0 and not parts["weight/height"].requires_grad
    total.backward()
    grad = model.weighting.log_variance.grad
    assert grad is not None
    np.testing.assert_allclose(
        grad.numpy(), [1.0 - parts["height/loss"].item(), 1.0 - parts["classes/loss"].item()], rtol=1e-5
    )


# -- dwa -------------------------------------------------------------------------------


def dwa_reference(history: list[list[float]], temperature: float) -> list[float]:
    """w_k = K exp(r_k / T) / sum_i exp(r_i / T), r_k = L_k(t-1) / L_k(t-2), by hand."""
    previous, last = history[-2], history[-1]
    ratios = [b / a for a, b in zip(previous, last, strict=True)]
    exps = [math.exp(r / temperature) for r in ratios]
    return [len(exps) * e / sum(exps) for e in exps]


LOSSES = [  # steps of three tasks; period 2, so the averages below are over pairs of steps
    [1.0, 4.0, 0.5], [3.0, 2.0, 0.7],   # period 1 averages: 2.0, 3.0, 0.6
    [1.0, 3.0, 0.3], [2.0, 1.5, 0.5],   # period 2 averages: 1.5, 2.25, 0.4
    [0.5, 2.0, 0.2], [0.5, 1.0, 0.2],   # period 3 averages: 0.5, 1.5, 0.2
]


def feed(weighting: torch.nn.Module, rows: list[list[float]], tasks: str = "abc") -> list[dict[str, float]]:
    """Run the rows as training steps; return the weights each step used."""
    used = []
    for row in rows:
        out = weighting({n: torch.tensor(v) for n, v in zip(tasks, row, strict=True)})
        used.append({n: out.parts[f"weight/{n}"].item() for n in tasks})
    return used


def test_dwa_weights_follow_the_formula(manager: pixcore.PluginManager) -> None:
    dwa = weightings(manager).create("dwa", {"period": 2, "temperature": 2.0}, context={"tasks": list("abc")})
    dwa.train()
    used = feed(dwa, LOSSES)
    # Weights are 1 during the first two periods.
    for step in range(4):
        assert used[step] == {"a": 1.0, "b": 1.0, "c": 1.0}
    # Period 3 uses the averages of periods 1 and 2.
    expected = dwa_reference([[2.0, 3.0, 0.6], [1.5, 2.25, 0.4]], 2.0)
    for step in (4, 5):
        assert [used[step][n] for n in "abc"] == pytest.approx(expected, rel=1e-6)
    # Period 4 uses periods 2 and 3; the weights sum to K = 3.
    weights = dwa.current_weights()
    assert weights.tolist() == pytest.approx(dwa_reference([[1.5, 2.25, 0.4], [0.5, 1.5, 0.2]], 2.0), rel=1e-6)
    assert weights.sum().item() == pytest.approx(3.0, rel=1e-6)
    # And the total is the weighted sum.
    out = dwa({"a": torch.tensor(1.0), "b": torch.tensor(2.0), "c": torch.tensor(3.0)})
    assert out.total.item() == pytest.approx(float(weights @ torch.tensor([1.0, 2.0, 3.0])), rel=1e-6)


def test_dwa_temperature_changes_the_weights(manager: pixcore.PluginManager) -> None:
    dwa = weightings(manager).create("dwa", {"period": 2, "temperature": 0.5}, context={"tasks": list("abc")})
    feed(dwa.train(), LOSSES[:4])
    expected = dwa_reference([[2.0, 3.0, 0.6], [1.5, 2.25, 0.4]], 0.5)
    assert dwa.current_weights().tolist() == pytest.approx(expected, rel=1e-6)


def test_dwa_keeps_absent_tasks_out_of_its_statistics(manager: pixcore.PluginManager) -> None:
    dwa = weightings(manager).create("dwa", {"period": 2}, context={"tasks": ["a", "b"]})
    dwa.train()
    rows = [[1.0, 1.0], [1.0, 1.0], [2.0, 4.0], [2.0, 100.0]]
    for i, row in enumerate(rows):
        present = {"a": True, "b": torch.tensor(i != 3)}  # b's 100.0 has no valid pixel
        out = dwa({"a": torch.tensor(row[0]), "b": torch.tensor(row[1])}, present)
    assert out.parts["weight/b"].item() == 0.0  # absent: weight 0 that step
    # b's second average is 4.0 (one present step), not (4 + 100) / 2.
    assert dwa.current_weights().tolist() == pytest.approx(dwa_reference([[1.0, 1.0], [2.0, 4.0]], 2.0), rel=1e-6)


def test_dwa_changes_nothing_in_evaluation_mode(manager: pixcore.PluginManager) -> None:
    dwa = weightings(manager).create("dwa", {"period": 1}, context={"tasks": ["a", "b"]})
    dwa.eval()
    before = {k: v.clone() for k, v in dwa.state_dict().items()}
    feed(dwa, [[1.0, 2.0]] * 3, "ab")
    for key, value in dwa.state_dict().items():
        assert torch.equal(value.nan_to_num(), before[key].nan_to_num()), key


def test_dwa_state_survives_a_state_dict_round_trip(manager: pixcore.PluginManager, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    def create() -> torch.nn.Module:
        return weightings(manager).create("dwa", {"period": 2}, context={"tasks": list("abc")}).train()

    original = create()
    feed(original, LOSSES[:5])  # mid-period: a half-filled sum must be restored as well
    state = original.state_dict()
    assert {"loss_sum", "loss_count", "history", "step", "periods"} <= set(state)
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "dwa.safetensors"))

    restored = create()
    restored.load_state_dict(load_file(str(tmp_path / "dwa.safetensors")))
    more = [[0.4, 1.0, 0.1], [0.3, 0.9, 0.1], [0.3, 0.8, 0.1]]
    fresh = feed(create(), more)  # no history: all weights 1
    continued = feed(original, more)
    assert feed(restored, more) == continued  # bitwise the same weights
    assert fresh != continued  # so the state mattered


# -- a weighting inside a trained model: exact resume ----------------------------------


def test_dwa_resumes_exactly_from_a_checkpoint(tmp_path: Path, manager: pixcore.PluginManager) -> None:
    from pixcore.train import Callback, train

    class Killed(Exception):
        pass

    class KillAfter(Callback):
        def on_step_end(self, trainer: Any, loss: Tensor) -> None:
            if trainer.step == 3:
                raise Killed

    config = pixcore.RunConfig.model_validate({
        "model": {
            "backbone": "test_tiny",
            "tasks": {
                "height": {"task": "test_height", "params": {"target_key": "depth"}, "head": "linear"},
                "classes": {"task": "test_classes", "params": {"num_classes": 7, "target_key": "semseg"},
                            "head": "linear"},
            },
            "weighting": {"name": "dwa", "params": {"period": 1}},
        },
        "data": {"train": {"name": "synthetic", "params": {"length": 8, "height": 32, "width": 32}},
                 "batch_size": 2},
        "trainer": {"steps": 5, "checkpoint_every": 2, "progress": False, "device": "cpu", "log_every": 1},
    })
    whole, _ = train(config, tmp_path / "whole", manager)
    assert whole.model.weighting.periods.item() == 5
    assert not torch.equal(whole.model.weighting.current_weights(), torch.ones(2))
    with pytest.raises(Killed):
        train(config, tmp_path / "cut", manager, callbacks=[KillAfter()])
    resumed, _ = train(config, tmp_path / "cut", manager, resume=tmp_path / "cut" / "checkpoint.safetensors")
    for (name, a), b in zip(whole.model.state_dict().items(), resumed.model.state_dict().values(), strict=True):
        assert torch.equal(a.nan_to_num(), b.nan_to_num()), f"{name} differs after resuming"


# -- the hookspec example combines a model's losses ------------------------------------


def test_the_hookspec_example_weighting_works_in_a_model(
    manager: pixcore.PluginManager, make_batch: Callable[..., dict[str, Tensor]], monkeypatch: pytest.MonkeyPatch
) -> None:
    doc = inspect.getdoc(hookspecs.pixcore_weightings) or ""
    code = textwrap.dedent(doc.partition("Example::\n")[2])
    module = types.ModuleType("pixcore_weighting_example")
    monkeypatch.setitem(sys.modules, module.__name__, module)
    exec(compile(code, "<pixcore_weightings example>", "exec"), module.__dict__)
    manager.register(module, name="weighting-example")
    torch.manual_seed(0)
    config = two_task_config(weighting="equal")
    model = pixcore.build_model_from_config(config, manager=manager)
    batch = make_batch(batch=2, height=32, width=32)
    total, parts = model.compute_loss(model(batch["image"]), batch)
    expected = (parts["height/loss"] + parts["classes/loss"]) / 2
    assert total.item() == pytest.approx(expected.item(), rel=1e-6)
    assert parts["weight/height"].item() == 0.5


def test_presence_helper_orders_and_defaults(manager: pixcore.PluginManager) -> None:
    losses = {"a": torch.tensor(1.0), "b": torch.tensor(2.0), "c": torch.tensor(3.0)}
    flags = pixcore.TaskWeighting.presence(losses, {"c": torch.tensor(False), "a": True})
    assert flags.tolist() == [True, True, False]
    assert pixcore.TaskWeighting.presence(losses, None).tolist() == [True] * 3


# -- the contract check shipped for plugin authors --------------------------------------


@pytest.mark.parametrize(
    ("name", "params"), [("fixed", None), ("uncertainty", None), ("dwa", {"period": 2})]
)
def test_the_builtins_pass_the_contract_check(
    manager: pixcore.PluginManager, name: str, params: dict[str, Any] | None
) -> None:
    check_weighting(name, params, manager=manager)


class _CountsAbsentTasks(pixcore.TaskWeighting):
    """Averages over steps, but counts a task's loss even when it is absent."""

    def __init__(self, tasks: list[str]) -> None:
        super().__init__()
        self.tasks = list(tasks)
        self.register_buffer("mean", torch.ones(len(self.tasks)))

    def forward(self, losses: Any, present: Any = None) -> pixcore.LossOutput:
        stacked = torch.stack([losses[t] for t in self.tasks])
        flags = self.presence(losses, present)
        if self.training:
            self.mean.mul_(0.5).add_(0.5 * stacked.detach())  # absent tasks included: wrong
        terms = torch.where(flags, stacked / self.mean, torch.zeros_like(stacked))
        return pixcore.LossOutput(terms.sum())


class _StateInAPythonAttribute(pixcore.TaskWeighting):
    """Keeps its running statistic in a plain attribute, which state_dict does not hold."""

    def __init__(self, tasks: list[str]) -> None:
        super().__init__()
        self.tasks = list(tasks)
        self.steps = 0

    def forward(self, losses: Any, present: Any = None) -> pixcore.LossOutput:
        flags = self.presence(losses, present)
        if self.training:
            self.steps += 1
        stacked = torch.stack([losses[t] for t in self.tasks])
        terms = torch.where(flags, stacked * self.steps, torch.zeros_like(stacked))
        return pixcore.LossOutput(terms.sum())


@pytest.mark.parametrize(
    ("cls", "message"),
    [(_CountsAbsentTasks, "loss of an absent task"), (_StateInAPythonAttribute, "register_buffer")],
)
def test_the_contract_check_catches_broken_weightings(cls: type, message: str) -> None:
    with pytest.raises(ContractError, match=message):
        check_weighting(lambda: cls(["a", "b", "c"]))
