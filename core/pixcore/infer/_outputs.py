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

Existing files are not overwritten unless asked (``overwrite=True``, ``--overwrite``), and
input images never are. Every output name is checked, and every image decoded, before
the first file is written: a bad name or a bad image stops the run before it writes
anything.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from PIL import Image as PILImage
from torch import Tensor, nn

from pixcore._errors import PixcoreError
from pixcore._imagefiles import IMAGE_SUFFIXES, SCALAR_PNG_SCALE, find_images
from pixcore._targets import ClassMask, ScalarField, TargetKind, UnitVectorField
from pixcore.data._files import ImageTooLargeError, _reason, pillow_accepts, verify_image
from pixcore.data._files import read_image as read_rgb

__all__ = [
    "IMAGE_SUFFIXES",
    "SCALAR_PNG_SCALE",
    "find_images",
    "output_files",
    "predict_images",
    "read_image_tensor",
]


#: What decoding an image file may raise for a bad file (a bug raises something else).
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, struct.error)


def _unreadable(path: Path, error: BaseException, checking: bool = False) -> PixcoreError:
    """The error for an image file that cannot be read, naming it and the way on."""
    written = " Nothing was written." if checking else ""
    if isinstance(error, ImageTooLargeError):
        wanted = f" {error.pixels}" if error.pixels is not None else " N"
        return PixcoreError(
            f"image {path} {error.extent()}.{written} If the file is genuine, raise the limit: "
            f"--max-pixels{wanted} (predict_images(max_pixels=...)), or set "
            "PIL.Image.MAX_IMAGE_PIXELS in Python. An image this large needs much memory: add "
            "--window 1024 1024 to run the model on one window at a time, or downscale it."
        )
    return PixcoreError(
        f"image {path} {_reason(error)}.{written} Give PNG or JPEG files: replace this one or "
        "leave it out."
    )


def read_image_tensor(path: str | Path, max_pixels: int | None = None) -> Tensor:
    """An image file -> uint8 ``[3, H, W]`` RGB tensor (grey, palette, RGBA are converted).

    Decoded as the data sets decode images (:func:`pixcore.data.read_image`, which gives
    the ``[H, W, 3]`` numpy array). More than
    ``max_pixels`` pixels (None: Pillow's limit, ``2 * PIL.Image.MAX_IMAGE_PIXELS``), an
    unreadable or truncated file raise :class:`~pixcore.PixcoreError` naming the file.
    """
    path = Path(path)
    try:
        array = read_rgb(path, max_pixels)
    except _DECODE_ERRORS as error:
        raise _unreadable(path, error) from None
    return torch.from_numpy(array.transpose(2, 0, 1).copy())  # a writable, contiguous copy


def _check_decodes(path: Path, max_pixels: int | None) -> None:
    """Decode every byte of ``path`` (JPEGs cheaply, at 1/8 scale), as full data set
    validation does, so that a truncated file is found before anything is written."""
    try:
        verify_image(path, max_pixels)
    except _DECODE_ERRORS as error:
        raise _unreadable(path, error, checking=True) from None


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


def _plan(files: Sequence[Path], out: Path, bindings: Mapping[str, Any]) -> dict[Path, Path]:
    """Every output file, in writing order, with the input image it comes from.

    Refuses two inputs with one name, and two outputs with one name (an image ``a`` with a
    task ``x_y`` and an image ``a_x`` with a task ``y``).
    """
    stems: dict[str, Path] = {}
    planned: dict[Path, tuple[Path, str]] = {}
    for path in files:
        if path.stem in stems:
            raise PixcoreError(
                f"{stems[path.stem]} and {path} have the same name, so their outputs would collide "
                f"in {out}; predict them into different --out folders"
            )
        stems[path.stem] = path
        outputs = [(out / f, name) for name, binding in bindings.items()
                   for f in output_files(path.stem, name, type(binding.task).target_kind)]
        for output, task in [*outputs, (out / f"{path.stem}_grid.png", "the grid")]:
            if output in planned:
                raise PixcoreError(_collision(output, planned[output], (path, task)))
            planned[output] = (path, task)
    return {output: source for output, (source, _) in planned.items()}


def _collision(output: Path, first: tuple[Path, str], second: tuple[Path, str]) -> str:
    if first[0] == second[0]:
        return (
            f"two outputs of {first[0]} would both be {output}: the task names {first[1]!r} and "
            f"{second[1]!r} run together with the file suffixes; pixcore predict cannot write "
            "this model's outputs side by side (predict_images would lose one)"
        )
    return (
        f"{output} would be written twice, for {first[0]} (task {first[1]!r}) and for "
        f"{second[0]} (task {second[1]!r}): image and task names run together; rename one "
        "of the images, or predict them into different --out folders"
    )


def _identity(path: Path) -> tuple[int, int]:
    """What makes two paths one file: (device, inode); links and letter case included."""
    status = path.stat()
    return status.st_dev, status.st_ino


def _refuse_replacing_inputs(planned: Mapping[Path, Path], files: Sequence[Path]) -> None:
    """Refuse, whatever ``overwrite`` says, an output file that is one of the input images."""
    inputs = {_identity(path): path for path in files}
    existing = [(output, source) for output, source in planned.items() if output.exists()]
    clashes = [(output, inputs[key], source) for output, source in existing
               if (key := _identity(output)) in inputs]
    if not clashes:
        return
    output, victim, source = clashes[0]
    more = f" (and {len(clashes) - 1} more input(s) likewise)" if len(clashes) > 1 else ""
    folder = output.parent.resolve()
    elsewhere = folder.parent / f"{folder.name}_predictions"
    raise PixcoreError(
        f"the input image {victim} would be overwritten by {output.name}, an output of {source}"
        f"{more}; --overwrite replaces earlier outputs, never input images. Write the outputs "
        f"to a folder that holds no input, e.g. --out {elsewhere}"
    )


def _refuse_existing(planned: Iterable[Path], overwrite: bool) -> None:
    existing = [p for p in planned if p.exists()]
    if existing and not overwrite:
        shown = ", ".join(str(p) for p in existing[:3]) + (" ..." if len(existing) > 3 else "")
        raise PixcoreError(
            f"{len(existing)} output file(s) exist already ({shown}); pass --overwrite "
            "(overwrite=True) to replace them, or choose another --out folder"
        )


@torch.no_grad()
def predict_images(
    model: nn.Module,
    images: Sequence[str | Path],
    out: str | Path,
    *,
    overwrite: bool = False,
    device: str | torch.device = "cpu",
    max_pixels: int | None = None,
) -> list[Path]:
    """Predict every image and write each task's outputs (see the module docstring).

    Nothing is written until every check passed: the output names (no two alike, none an
    input image, none existing unless ``overwrite``), then every image decoded in full (a
    truncated or too large file is named). The check decodes each image once more, which is
    little next to predicting and writing it (JPEGs are checked at 1/8 scale: about 1 ms
    for 640x480, a PNG about 9 ms; under 1% of the time per image on a CPU even with a
    model that took no time).

    Args:
        model: A :class:`~pixcore.MultiTaskModel` or a :class:`~pixcore.infer.Predictor`.
        images: Image files or folders of images (``.png``, ``.jpg``).
        out: Output folder (created).
        overwrite: Replace existing output files; without it an existing file is an error
            raised before anything is written. An input image is never replaced, even
            with it.
        device: Where ``model`` runs (it is moved there).
        max_pixels: Largest image accepted, in pixels (width x height); None: Pillow's limit
            against decompression bombs (``2 * PIL.Image.MAX_IMAGE_PIXELS``, about 179
            million). A larger value raises Pillow's limit while the images are read.

    Returns:
        The files written, in order.

    """
    files = find_images(images)
    out = Path(out)
    bindings = cast("Mapping[str, Any]", model.bindings)  # a MultiTaskModel's task bindings
    planned = _plan(files, out, bindings)
    _refuse_replacing_inputs(planned, files)
    _refuse_existing(planned, overwrite)
    with pillow_accepts(max_pixels):  # the pictures written are as large as the images
        for path in files:
            _check_decodes(path, max_pixels)
        out.mkdir(parents=True, exist_ok=True)
        model = model.to(device).eval()
        for path in files:
            _predict_one(model, path, out, max_pixels, device)
    return list(planned)


def _predict_one(
    model: nn.Module, path: Path, out: Path, max_pixels: int | None, device: str | torch.device
) -> None:
    """Predict one image and write its files (see the module docstring)."""
    from pixcore.viz import image_to_rgb, make_grid

    bindings = cast("Mapping[str, Any]", model.bindings)  # a MultiTaskModel's task bindings
    image = read_image_tensor(path, max_pixels)
    predictions = model(image.unsqueeze(0).to(device))
    panels = [image_to_rgb(image.numpy())]
    for name, binding in bindings.items():
        panels.append(_write_task(out, path.stem, name, binding.task, predictions[name][0]))
    make_grid([panels], ["input", *bindings], scale=1).save(out / f"{path.stem}_grid.png")
