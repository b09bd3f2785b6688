"""The trainer adds nothing to the arithmetic: it ends where a plain PyTorch loop ends."""

from __future__ import annotations

import itertools

import pixcore
import torch
import train_toy
from pixcore.train import Callback, Trainer
from torch.utils.data import DataLoader


def _model() -> pixcore.MultiTaskModel:
    torch.manual_seed(0)
    return pixcore.build_model_from_config(train_toy.run_config()["model"], manager=train_toy.toy_manager())


def _loader() -> DataLoader[pixcore.Sample]:
    data = train_toy.Squares(12)
    return DataLoader([data[i] for i in range(len(data))], batch_size=4, shuffle=False, drop_last=True)


def test_trainer_and_a_plain_loop_give_bitwise_equal_weights() -> None:
    steps, lr, weight_decay = 5, 5e-3, 0.01  # 5 steps over 3 batches: crosses an epoch

    # The plain loop, written as in the PyTorch tutorials (AdamW, no decay on 1-d weights).
    model = _model()
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=lr
    )
    model.train()
    for batch in itertools.islice(itertools.cycle(list(_loader())), steps):
        predictions = model(batch["image"])
        loss, _ = model.compute_loss(predictions, batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    trained = _model()
    config = pixcore.TrainerConfig(steps=steps, lr=lr, weight_decay=weight_decay, schedule="constant",
                                   device="cpu", progress=False, log_every=2)
    trainer = Trainer(trained, config, _loader(), callbacks=[Callback() for _ in range(10)])
    trainer.fit()
    assert trainer.step == steps
    for (name, a), b in zip(model.state_dict().items(), trainer.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), f"{name}: max abs diff {(a.double() - b.double()).abs().max().item()}"
