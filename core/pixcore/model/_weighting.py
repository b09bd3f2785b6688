r"""Multi-task loss weightings: how the task losses become the one scalar to minimise.

Three are built in, registered in the ``weightings`` family and chosen with
``model.weighting`` in the config:

* ``fixed`` (default): :math:`\sum_i w_i L_i` with each task's configured ``weight``;
* ``uncertainty``: learned homoscedastic uncertainty (Kendall, Gal and Cipolla 2018);
* ``dwa``: Dynamic Weight Average (Liu, Johns and Davison 2019).

Every weighting gives a task that is absent from a batch (no valid pixel) weight 0 for
that step and keeps it out of its statistics. The losses of all tasks still enter the
graph (multiplied by a zero weight through ``torch.where``), so that every parameter
receives a gradient each step, as DistributedDataParallel requires.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Annotated

import torch
import torch.distributed as dist
from pydantic import Field
from torch import Tensor, nn

from pixcore._interfaces import LossOutput, TaskWeighting

__all__ = ["DynamicWeightAverage", "FixedWeighting", "UncertaintyWeighting"]

#: The task names, in the model's order (given by pixcore: the context fact ``tasks``).
TaskNames = Sequence[str]
#: Each task's configured ``weight`` (given by pixcore: the context fact ``weights``).
TaskWeights = Mapping[str, float]


def _check_tasks(tasks: Sequence[str], what: str) -> list[str]:
    names = list(tasks)
    if not names:
        raise ValueError(f"the {what} weighting needs at least one task; got tasks=[]")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"the {what} weighting got duplicate task names {duplicates}")
    return names


def _check_losses(losses: Mapping[str, Tensor], tasks: Sequence[str], what: str) -> None:
    if set(losses) != set(tasks):
        missing = sorted(set(tasks) - set(losses))
        extra = sorted(set(losses) - set(tasks))
        raise KeyError(
            f"the {what} weighting was built for tasks {list(tasks)} but got losses for "
            f"{list(losses)} (missing: {missing}, unknown: {extra}); build the weighting with "
            "the model's task names (pixcore.build_model_from_config does)."
        )


def _stack(losses: Mapping[str, Tensor], tasks: Sequence[str]) -> Tensor:
    """The losses as one float32 vector ``[T]`` in ``tasks`` order (keeps the graph)."""
    return torch.stack([losses[name].float().reshape(()) for name in tasks])


def _warn_ignored_weights(weights: Mapping[str, float] | None, what: str) -> None:
    changed = {k: v for k, v in (weights or {}).items() if v != 1.0}
    if changed:
        warnings.warn(
            f"the {what} weighting sets the task weights itself; the configured `weight` of "
            f"{changed} is ignored. Remove it, or use model.weighting: fixed.",
            UserWarning,
            stacklevel=4,
        )


# --------------------------------------------------------------------------------------
# fixed
# --------------------------------------------------------------------------------------


class FixedWeighting(TaskWeighting):
    r"""Constant weights: :math:`L = \sum_i w_i L_i`, :math:`w_i` = the task's ``weight``.

    The classic multi-task objective (e.g. Caruana 1997); a task absent from a batch
    (no valid pixel) adds 0. When every task is present the total is bitwise what a
    hand-written ``w_1 * L_1 + w_2 * L_2 + ...`` in the task order gives. Logs no parts
    (the weights do not change).

    Args:
        weights: Non-negative weight per task name; default: each task's ``weight`` in the
            model config (given by pixcore).
        tasks: The task names (given by pixcore); when given, ``weights`` must name each of
            them.

    """

    def __init__(
        self,
        weights: Mapping[str, Annotated[float, Field(ge=0.0)]] | None = None,
        tasks: TaskNames | None = None,
    ) -> None:
        super().__init__()
        weights = weights or {}
        if tasks is not None:
            missing = [t for t in tasks if t not in weights]
            extra = [k for k in weights if k not in tasks]
            if missing or extra:
                raise ValueError(
                    f"fixed weighting: `weights` must name exactly the tasks {list(tasks)}; "
                    f"missing {missing}, unknown {extra}"
                )
        self.weights = {str(k): float(v) for k, v in weights.items()}

    def forward(
        self, losses: Mapping[str, Tensor], present: Mapping[str, bool | Tensor] | None = None
    ) -> LossOutput:
        total: Tensor | None = None
        for name, loss in losses.items():
            if name not in self.weights:
                raise KeyError(
                    f"fixed weighting has no weight for task {name!r}; it knows "
                    f"{sorted(self.weights)}. Give every task a weight."
                )
            weighted = self.weights[name] * loss
            flag = None if present is None else present.get(name)
            if isinstance(flag, Tensor):
                # torch.where keeps the value bitwise (and the graph) when present.
                weighted = torch.where(flag.to(torch.bool), weighted, torch.zeros_like(weighted))
            elif flag is not None and not flag:
                weighted = weighted * 0.0
            total = weighted if total is None else total + weighted
        if total is None:
            raise ValueError("fixed weighting: no task losses to combine")
        return LossOutput(total)


# --------------------------------------------------------------------------------------
# uncertainty
# --------------------------------------------------------------------------------------


class UncertaintyWeighting(TaskWeighting):
    r"""Homoscedastic-uncertainty weighting (Kendall, Gal and Cipolla, CVPR 2018).

    Each task has a learnable :math:`s_i = \log \sigma_i^2` (initialised to 0) and

    .. math::
        L = \sum_i e^{-s_i} L_i + s_i ,

    so the effective weight of task :math:`i` is :math:`e^{-s_i}`, and
    :math:`\partial L / \partial s_i = 1 - e^{-s_i} L_i`: for a constant loss the optimum
    is :math:`s_i = \log L_i`. Learning :math:`s_i` rather than :math:`\sigma_i` keeps it
    unconstrained and numerically stable (as the paper recommends).

    Convention: one form for every task, without the paper's factors 1/2. The paper's
    regression term :math:`\frac{1}{2\sigma^2} L + \log\sigma` equals half of ours (same
    optimum :math:`s_i = \log L_i`, half the gradient: the same as halving the learning
    rate), and its classification term :math:`\frac{1}{\sigma^2} L + \log\sigma` puts the
    1/2 on :math:`s_i` alone, which moves the optimum to :math:`\log 2L_i`. A single form
    keeps the weighting independent of what kind of task it weighs (this is also the form
    of most re-implementations).

    :math:`s` is a parameter of the model, so the optimiser trains it (with no weight
    decay: it is one-dimensional) and checkpoints hold it. A task absent from a batch
    contributes 0, and its :math:`s_i` gets no gradient that step. Parts logged:
    ``weight/<task>`` (:math:`e^{-s_i}`, 0 when absent) and ``log_variance/<task>``.

    Args:
        tasks: The task names, in the model's order (given by pixcore).
        init_log_variance: Initial :math:`s_i = \log \sigma_i^2` of every task (0: weight 1).
        weights: The tasks' configured weights (given by pixcore; unused, a warning says so).

    """

    def __init__(
        self, tasks: TaskNames, init_log_variance: float = 0.0,
        weights: TaskWeights | None = None,
    ) -> None:
        super().__init__()
        self.tasks = _check_tasks(tasks, "uncertainty")
        _warn_ignored_weights(weights, "uncertainty")
        self.log_variance = nn.Parameter(torch.full((len(self.tasks),), float(init_log_variance)))

    def forward(
        self, losses: Mapping[str, Tensor], present: Mapping[str, bool | Tensor] | None = None
    ) -> LossOutput:
        _check_losses(losses, self.tasks, "uncertainty")
        stacked = _stack(losses, self.tasks)
        flags = self.presence({n: losses[n] for n in self.tasks}, present)
        s = self.log_variance.to(stacked.device)
        precision = torch.exp(-s)
        terms = precision * stacked + s
        terms = torch.where(flags, terms, torch.zeros_like(terms))
        weights = torch.where(flags, precision, torch.zeros_like(precision)).detach()
        parts: dict[str, Tensor] = {}
        for i, name in enumerate(self.tasks):
            parts[f"weight/{name}"] = weights[i]
            parts[f"log_variance/{name}"] = s[i].detach()
        return LossOutput(terms.sum(), parts)


# --------------------------------------------------------------------------------------
# dwa
# --------------------------------------------------------------------------------------


class DynamicWeightAverage(TaskWeighting):
    r"""Dynamic Weight Average (Liu, Johns and Davison, "End-to-End Multi-Task Learning
    with Attention", CVPR 2019).

    With :math:`K` tasks and :math:`\bar L_k(t)` the average loss of task :math:`k` over
    period :math:`t`:

    .. math::
        w_k(t) = \frac{K \exp(r_k(t-1) / T)}{\sum_i \exp(r_i(t-1) / T)}, \qquad
        r_k(t-1) = \frac{\bar L_k(t-1)}{\bar L_k(t-2)},

    and :math:`w_k = 1` for the first two periods; :math:`L = \sum_k w_k L_k`. A task
    whose loss falls more slowly gets more weight; the weights sum to :math:`K`.

    Periods instead of epochs: pixcore's trainer counts optimiser steps, so ``period``
    steps replace the paper's epoch. Set it to the number of steps in an epoch
    (``len(data set) // batch_size``) to follow the paper. Precisely, a step is one call
    in training mode: with ``trainer.accumulate_grad_batches = k`` each optimiser step
    makes k calls, so use k times the number of optimiser steps.

    Statistics: in training mode each call adds every present task's (detached) loss to
    its period sum; a task absent from a batch is not counted, and gets weight 0 for that
    step (the other weights are not rescaled). A period's average is over the steps in
    which the task was present; a task with no such step in either of the two last
    periods, or with a zero average, gets :math:`r_k = 1`. Under ``torch.distributed``
    the sums are added over all processes every step, so all ranks use the same weights.
    The state (period sums and counts, the last two averages, the step counter) lives in
    buffers: a checkpoint holds it and a resumed run continues exactly. Nothing changes
    in evaluation mode. Parts logged: ``weight/<task>``.

    Args:
        tasks: The task names, in the model's order (given by pixcore).
        period: Steps per averaging period (``>= 1``; the paper's epoch), e.g. the steps
            per epoch.
        temperature: Softmax temperature :math:`T` (``> 0``; the paper uses 2); larger is
            closer to equal weights.
        weights: The tasks' configured weights (given by pixcore; unused, a warning says so).

    """

    loss_sum: Tensor
    loss_count: Tensor
    history: Tensor
    step: Tensor
    periods: Tensor

    def __init__(
        self,
        tasks: TaskNames,
        period: Annotated[int, Field(ge=1)] = 100,
        temperature: Annotated[float, Field(gt=0.0)] = 2.0,
        weights: TaskWeights | None = None,
    ) -> None:
        super().__init__()
        self.tasks = _check_tasks(tasks, "dwa")
        _warn_ignored_weights(weights, "dwa")
        self.period = period
        self.temperature = temperature
        k = len(self.tasks)
        # float32 buffers, so that the module works on every device (MPS has no float64).
        self.register_buffer("loss_sum", torch.zeros(k))
        self.register_buffer("loss_count", torch.zeros(k))
        #: Row 0: average loss of period t-2; row 1: of period t-1.
        self.register_buffer("history", torch.full((2, k), float("nan")))
        self.register_buffer("step", torch.zeros((), dtype=torch.long))
        self.register_buffer("periods", torch.zeros((), dtype=torch.long))

    def current_weights(self) -> Tensor:
        """:math:`w_k` for the current period, ``[K]`` in task order (sums to K)."""
        previous, last = self.history[0], self.history[1]
        ratio = last / previous
        ratio = torch.where(torch.isfinite(ratio) & (previous > 0), ratio, torch.ones_like(ratio))
        weights = len(self.tasks) * torch.softmax(ratio / self.temperature, dim=0)
        return torch.where(self.periods >= 2, weights, torch.ones_like(weights))

    @torch.no_grad()
    def _update(self, stacked: Tensor, flags: Tensor) -> None:
        # Branch-free on tensors: no host synchronisation per step.
        values = torch.where(flags, stacked.detach(), torch.zeros_like(stacked))
        counts = flags.to(values.dtype)
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            packed = torch.stack([values, counts])
            dist.all_reduce(packed, op=dist.ReduceOp.SUM)
            values, counts = packed[0], packed[1]
        self.loss_sum.add_(values.to(self.loss_sum.device))
        self.loss_count.add_(counts.to(self.loss_count.device))
        self.step.add_(1)
        close = self.step % self.period == 0
        average = torch.where(
            self.loss_count > 0,
            self.loss_sum / self.loss_count.clamp(min=1.0),
            torch.full_like(self.loss_sum, float("nan")),
        )
        shifted = torch.stack([self.history[1], average])
        self.history.copy_(torch.where(close, shifted, self.history))
        self.periods.add_(close.to(self.periods.dtype))
        for buffer in (self.loss_sum, self.loss_count):
            buffer.copy_(torch.where(close, torch.zeros_like(buffer), buffer))

    def forward(
        self, losses: Mapping[str, Tensor], present: Mapping[str, bool | Tensor] | None = None
    ) -> LossOutput:
        _check_losses(losses, self.tasks, "dwa")
        stacked = _stack(losses, self.tasks)
        flags = self.presence({n: losses[n] for n in self.tasks}, present)
        weights = self.current_weights().to(stacked.device)
        weights = torch.where(flags, weights, torch.zeros_like(weights))
        terms = torch.where(flags, weights * stacked, torch.zeros_like(stacked))
        if self.training:
            self._update(stacked, flags)  # after the weights: period t uses t-1 and t-2
        parts = {f"weight/{name}": weights[i] for i, name in enumerate(self.tasks)}
        return LossOutput(terms.sum(), parts)
