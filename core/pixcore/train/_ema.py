r"""An exponential moving average (EMA) of the model's weights.

After every optimiser step, with decay :math:`d`,

.. math::  W^{EMA}_t = d \, W^{EMA}_{t-1} + (1 - d) \, W_t, \qquad W^{EMA}_0 = W_0

(Polyak and Juditsky 1992; as ``torch.optim.swa_utils.get_ema_multi_avg_fn``). The
average starts from the weights the run starts with (the pretrained ones when
fine-tuning), so early on it is dominated by them: with decay 0.999 the first weights
still count ``0.999 ** 1000 = 37%`` after 1000 steps. Floating-point buffers (BatchNorm
statistics) are averaged the same way; integer buffers (BatchNorm's batch counter) are
copied.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

__all__ = ["ModelEMA"]


class ModelEMA:
    """The EMA of a model's parameters and buffers, updated with :meth:`update`.

    ``averaged`` is a ``torch.optim.swa_utils.AveragedModel`` (its ``state_dict`` holds
    ``n_averaged`` and ``module.<name>``, which checkpoints store under ``ema.``);
    ``module`` is the averaged copy of the model, which evaluation can use directly.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        floating = get_ema_multi_avg_fn(decay)

        @torch.no_grad()
        def average(ema: Sequence[Tensor], current: Sequence[Tensor], n_averaged: Tensor | int) -> None:
            # AveragedModel groups tensors by dtype: integer groups (counters) are copied.
            if torch.is_floating_point(ema[0]) or torch.is_complex(ema[0]):
                floating(ema, current, n_averaged)
            else:
                torch._foreach_copy_(list(ema), list(current))

        self.averaged = AveragedModel(model, multi_avg_fn=average, use_buffers=True)
        self.averaged.requires_grad_(False)
        self.update(model)  # n_averaged 0 -> 1: the average starts at the current weights

    @property
    def module(self) -> nn.Module:
        """The averaged copy of the model."""
        return self.averaged.module

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average towards ``model``'s current weights (after an optimiser step)."""
        self.averaged.update_parameters(model)
