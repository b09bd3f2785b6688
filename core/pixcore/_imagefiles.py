"""Image files in, prediction files out: the names and formats both predict paths share.

Torch-free (pathlib and the errors only): ``pixcore predict --checkpoint`` and the ONNX
Runtime path (``--model``) import it.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from pixcore._errors import PixcoreError

__all__ = ["IMAGE_SUFFIXES", "SCALAR_PNG_SCALE", "find_images"]

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
