"""Predict image files and write each task's output in a format chosen by its target kind.

For an input ``NAME.png`` (or ``.jpg``), in the output folder:

==========================  ==================================================================
file                        content
==========================  ==================================================================
``NAME_<task>.png``         class-mask tasks: the predicted class id per pixel (the argmax),
                            8-bit grey; 16-bit when the task has more than 256 classes
``NAME_<task>_color.png``   class-mask tasks: the class ids in the task's colours
``NAME_<task>.png``         scalar-field tasks (depth): ``round(value * 1000)`` clipped to
                            ``[0, 65535]`` as a 16-bit grey PNG, i.e. **millimetres** for
                            depth in metres (65.535 m at most; read it back with
                            ``np.asarray(PIL.Image.open(f)) / 1000``)
``NAME_<task>.npy``         scalar fields: the exact values, float32 ``[H, W]``; unit-vector
                            fields (normals): float32 ``[H, W, 3]``; any other kind: the
                            prediction, float32 ``[H, W]`` for one channel, else ``[H, W, C]``
``NAME_<task>_rgb.png``     unit-vector fields: the task's picture (normals as ``(n + 1) / 2``)
``NAME_grid.png``           input | each task's picture, side by side
==========================  ==================================================================

Existing files are not overwritten unless asked (``overwrite=True``, ``--overwrite``):
every output name is checked before the first image is predicted.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image as PILImage
from PIL import UnidentifiedImageError
from torch import Tensor, nn

from pixcore._errors import PixcoreError
from pixcore._targets import ClassMask, ScalarField, TargetKind, UnitVectorField

__all__ = [
    "IMAGE_SUFFIXES",
    "SCALAR_PNG_SCALE",
    "find_images",
    "output_files",
    "predict_images",
    "read_image",
]

#: File suffixes picked up from a folder (case-insensitive).
IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg")
#: Scalar fields are stored in 16-bit PNGs as ``round(value * SCALAR_PNG_SCALE)``.
SCALAR_PNG_SCALE = 1000.0


def find_images(paths: Iterable[str | Path]) -> list[Path]:
    """Image files named by ``paths``: files as given, folders' ``.png``/``.jpg`` files sorted."""
    found: list[Path] = []
    for entry in paths:
        path = Path(entry)
        if path.is_dir():
            inside = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not inside:
                raise PixcoreError(
                    f"folder {path} holds no image file ({', '.join(IMAGE_SUFFIXES)}); sub-folders "
                    "are not searched: name them, or the files, on the command line"
                )
            found.extend(inside)
        elif path.is_file():
            found.append(path)
        else:
            raise PixcoreError(f"{path} does not exist; give image files or folders of images")
    if not found:
        raise PixcoreError("no image given; name image files (.png, .jpg) or folders of them")
    return found


def read_image(path: str | Path) -> Tensor:
    """An image file -> uint8 ``[3, H, W]`` RGB (grey and RGBA files are converted)."""
    path = Path(path)
    try:
        with PILImage.open(path) as handle:
            picture = handle.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError) as error:
        raise PixcoreError(
            f"cannot read image {path}: {error}. Give PNG or JPEG files, or remove this one."
        ) from None
    return torch.from_numpy(np.asarray(picture).copy()).permute(2, 0, 1).contiguous()


def _check_readable(path: Path) -> None:
    try:
        with PILImage.open(path) as handle:
            handle.verify()
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as error:
        raise PixcoreError(
            f"cannot read image {path}: {error}. Give PNG or JPEG files, or remove this one."
        ) from None


def output_files(stem: str, task: str, kind: type[TargetKind]) -> list[str]:
    """The file names written for one task of one image (see the module docstring)."""
    if issubclass(kind, ClassMask):
        return [f"{stem}_{task}.png", f"{stem}_{task}_color.png"]
    if issubclass(kind, ScalarField):
        return [f"{stem}_{task}.png", f"{stem}_{task}.npy"]
    if issubclass(kind, UnitVectorField):
        return [f"{stem}_{task}.npy", f"{stem}_{task}_rgb.png"]
    return [f"{stem}_{task}.npy"]


def _channels_last(value: np.ndarray) -> np.ndarray:
    return value[0] if value.shape[0] == 1 else np.moveaxis(value, 0, -1)


def _write_task(out: Path, stem: str, name: str, task: Any, prediction: Tensor) -> np.ndarray:
    """Write one task's files for one image; return its picture for the grid."""
    kind: type[TargetKind] = type(task).target_kind
    value = prediction.detach().float().cpu()
    picture = np.ascontiguousarray(task.visualize(value))
    if issubclass(kind, ClassMask):
        ids = value.argmax(0).numpy()
        dtype = np.uint8 if value.shape[0] <= 256 else np.uint16
        PILImage.fromarray(ids.astype(dtype)).save(out / f"{stem}_{name}.png")
        PILImage.fromarray(picture).save(out / f"{stem}_{name}_color.png")
        return picture
    array = _channels_last(value.numpy().astype(np.float32))
    np.save(out / f"{stem}_{name}.npy", array)
    if issubclass(kind, ScalarField):
        scaled = np.nan_to_num(array * SCALAR_PNG_SCALE, nan=0.0, posinf=65535.0, neginf=0.0)
        millimetres = np.clip(np.round(scaled), 0, 65535).astype(np.uint16)
        PILImage.fromarray(millimetres).save(out / f"{stem}_{name}.png")
    elif issubclass(kind, UnitVectorField):
        PILImage.fromarray(picture).save(out / f"{stem}_{name}_rgb.png")
    return picture


@torch.no_grad()
def predict_images(
    model: nn.Module,
    images: Sequence[str | Path],
    out: str | Path,
    *,
    overwrite: bool = False,
    device: str | torch.device = "cpu",
) -> list[Path]:
    """Predict every image and write each task's outputs (see the module docstring).

    Args:
        model: A :class:`~pixcore.MultiTaskModel` or a :class:`~pixcore.infer.Predictor`.
        images: Image files or folders of images (``.png``, ``.jpg``).
        out: Output folder (created).
        overwrite: Replace existing output files; without it an existing file is an error
            raised before anything is written.
        device: Where ``model`` runs (it is moved there).

    Returns:
        The files written, in order.
    """
    files = find_images(images)
    out = Path(out)
    bindings = model.bindings  # type: ignore[attr-defined]
    stems: dict[str, Path] = {}
    planned: list[Path] = []
    for path in files:
        if path.stem in stems:
            raise PixcoreError(
                f"{stems[path.stem]} and {path} have the same name, so their outputs would collide "
                f"in {out}; predict them into different --out folders"
            )
        stems[path.stem] = path
        _check_readable(path)
        for name, binding in bindings.items():
            planned += [out / f for f in output_files(path.stem, name, type(binding.task).target_kind)]
        planned.append(out / f"{path.stem}_grid.png")
    existing = [p for p in planned if p.exists()]
    if existing and not overwrite:
        shown = ", ".join(str(p) for p in existing[:3]) + (" ..." if len(existing) > 3 else "")
        raise PixcoreError(
            f"{len(existing)} output file(s) exist already ({shown}); pass --overwrite "
            "(overwrite=True) to replace them, or choose another --out folder"
        )

    from pixcore.viz import image_to_rgb, make_grid

    out.mkdir(parents=True, exist_ok=True)
    model = model.to(device).eval()
    for path in files:
        image = read_image(path)
        predictions = model(image.unsqueeze(0).to(device))
        panels = [image_to_rgb(image.numpy())]
        for name, binding in bindings.items():
            panels.append(_write_task(out, path.stem, name, binding.task, predictions[name][0]))
        make_grid([panels], ["input", *bindings], scale=1).save(out / f"{path.stem}_grid.png")
    return planned
