"""EMA of the weights: the formula, checkpoints, resume and evaluation with the average."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pixcore
import pytest
import torch
import train_toy
from pixcore import RunConfig
from pixcore.train import Callback, CheckpointError, Trainer, evaluate, load_checkpoint, train
from safetensors import safe_open
from torch import Tensor


def _config(**trainer: Any) -> RunConfig:
    return RunConfig.model_validate(train_toy.run_config(length=12, **trainer))


class Record(Callback):
    """The model's float weights (as float64 numpy) before the first step and after each one."""

    def __init__(self) -> None:
        self.states: list[dict[str, np.ndarray]] = []

    def _take(self, trainer: Trainer) -> None:
        state = trainer.model.state_dict()
        self.states.append({k: v.detach().double().numpy().copy() for k, v in state.items() if v.is_floating_point()})

    def on_fit_start(self, trainer: Trainer) -> None:
        self._take(trainer)

    def on_step_end(self, trainer: Trainer, loss: Tensor) -> None:
        self._take(trainer)


def test_ema_matches_a_hand_computed_average_over_three_steps() -> None:
    decay = 0.75
    record = Record()
    trainer, _ = train(_config(steps=3, ema_decay=decay, dropout=0.2), None, train_toy.toy_manager(),
                       callbacks=[record])
    assert len(record.states) == 4  # w0, w1, w2, w3
    averaged = trainer.ema.module.state_dict()  # type: ignore[union-attr]
    for key in record.states[0]:
        # e0 = w0; e_t = decay * e_(t-1) + (1 - decay) * w_t, written out as a loop.
        expected = record.states[0][key]
        for state in record.states[1:]:
            expected = decay * expected + (1 - decay) * state[key]
        actual = averaged[key].double().numpy()
        np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-6, err_msg=key)
    assert "backbone.a.1.running_mean" in record.states[0], "buffers are averaged too"
    counter = "backbone.a.1.num_batches_tracked"
    assert torch.equal(averaged[counter], trainer.model.state_dict()[counter]), "integer buffers are copied"
    assert not any(p.requires_grad for p in trainer.ema.module.parameters())  # type: ignore[union-attr]


class Killed(Exception):
    pass


class KillAfter(Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, trainer: Trainer, loss: Tensor) -> None:
        if trainer.step == self.step:
            raise Killed


def test_ema_is_checkpointed_and_resumed_exactly(tmp_path: Path) -> None:
    manager = train_toy.toy_manager()
    settings = {"steps": 5, "ema_decay": 0.9, "checkpoint_every": 2}
    whole, _ = train(_config(**settings), tmp_path / "whole", manager)
    with pytest.raises(Killed):
        train(_config(**settings), tmp_path / "cut", manager, callbacks=[KillAfter(3)])
    checkpoint = tmp_path / "cut" / "checkpoint.safetensors"
    with safe_open(str(checkpoint), framework="pt") as handle:
        keys = list(handle.keys())  # noqa: SIM118
    assert "ema.n_averaged" in keys and "ema.module.backbone.a.0.weight" in keys
    resumed, _ = train(_config(**settings), tmp_path / "cut", manager, resume=checkpoint)
    assert whole.ema is not None and resumed.ema is not None
    for trained, again in ((whole.model, resumed.model), (whole.ema.averaged, resumed.ema.averaged)):
        for (name, a), b in zip(trained.state_dict().items(), again.state_dict().values(), strict=True):
            assert torch.equal(a, b), name

    # The average, loaded for inference: equal to the trainer's.
    model = pixcore.build_model_from_config(_config().model, manager=manager)
    load_checkpoint(tmp_path / "whole" / "checkpoint.safetensors", model, use_ema=True)
    for (name, a), b in zip(whole.ema.module.state_dict().items(), model.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    without = tmp_path / "plain"
    train(_config(steps=1), without, manager)
    with pytest.raises(CheckpointError, match="no moving average"):
        load_checkpoint(without / "checkpoint.safetensors", model, use_ema=True)


@pytest.mark.parametrize("ema_eval", [True, False])
def test_evaluation_uses_the_ema_weights_when_asked(ema_eval: bool) -> None:
    manager = train_toy.toy_manager()
    trainer, result = train(_config(steps=4, ema_decay=0.5, ema_eval=ema_eval), None, manager)
    assert trainer.val_loader is not None and trainer.ema is not None
    averaged: pixcore.MultiTaskModel = trainer.ema.module  # type: ignore[assignment]
    with_ema = evaluate(averaged, trainer.val_loader, torch.device("cpu"), manager)
    raw = evaluate(trainer.model, trainer.val_loader, torch.device("cpu"), manager)
    assert with_ema["brightness"]["mae"] != raw["brightness"]["mae"]
    expected = with_ema if ema_eval else raw
    assert result.metrics["brightness"]["mae"] == expected["brightness"]["mae"]
