"""The exported graph: uint8 images in, one named, decoded output per task out."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from pixcore._targets import ClassMask
from pixcore.model._compose import MultiTaskModel

__all__ = ["ExportOutput", "ExportedGraph", "export_outputs"]


@dataclass(frozen=True)
class ExportOutput:
    """One named output of the exported graph."""

    name: str
    task: str
    #: ``ids`` (class ids, int64 ``[B, H, W]``), ``probabilities`` (float32 ``[B, C, H, W]``)
    #: or ``value`` (the task's decoded prediction, float32 ``[B, C, H, W]``).
    role: str


def export_outputs(model: MultiTaskModel, probabilities: bool = True) -> list[ExportOutput]:
    """The graph's outputs, in order: per task, class ids (+ probabilities) or its value.

    Class-mask tasks (segmentation) give the argmax as ``<task>`` and, with
    ``probabilities``, the softmax as ``<task>_probabilities``; every other task gives its
    decoded prediction (depth in metres, unit normals, or whatever a third-party task's
    ``decode`` returns) as ``<task>``.
    """
    outputs: list[ExportOutput] = []
    for name, task in model.tasks.items():
        if issubclass(type(task).target_kind, ClassMask):
            outputs.append(ExportOutput(name, name, "ids"))
            if probabilities:
                outputs.append(ExportOutput(f"{name}_probabilities", name, "probabilities"))
        else:
            outputs.append(ExportOutput(name, name, "value"))
    return outputs


class ExportedGraph(nn.Module):
    """``MultiTaskModel`` with its outputs flattened to a tuple of named, decoded tensors.

    The model's own forward does the rest: normalisation of the uint8 image, padding to
    the backbone's stride, cropping back, decoding.
    """

    def __init__(self, model: MultiTaskModel, outputs: list[ExportOutput]) -> None:
        super().__init__()
        self.model = model
        self.outputs = outputs

    def forward(self, image: Tensor) -> tuple[Tensor, ...]:
        predictions = self.model(image)
        flat: list[Tensor] = []
        for output in self.outputs:
            value = predictions[output.task].float()
            if output.role == "ids":
                flat.append(value.argmax(dim=1))
            elif output.role == "probabilities":
                flat.append(torch.softmax(value, dim=1))
            else:
                flat.append(value)
        return tuple(flat)
