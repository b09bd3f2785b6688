"""Reader of the Middlebury stereo data sets (2014 scenes, MiddEval3): depth from disparity.

Every scene folder holds the left view, its disparity map (PFM, ``inf`` where unknown)
and ``calib.txt``. Depth follows from the calibration: ``Z = f * B / (d + doffs)``. The
calibration differs per scene, so ``intrinsics`` is added per sample (not as a constant of
the data set) and the disparity field looks each scene's calibration up by file.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import numpy as np
import pixcore
import torch
from pixcore.data import (
    DatasetError,
    DatasetRoot,
    DatasetValidation,
    DirectoryIndex,
    FileDataset,
    FileField,
    FileFormatError,
    ImageFile,
    Record,
    file_size,
    read_scalar,
)
from pixcore.targets import Intrinsics, ScalarField, TargetKind, ValidityMask
from pydantic import Field
from torch import Tensor

__all__ = ["MIDDLEBURY_LAYOUT", "MiddleburyCalibration", "MiddleburyStereo", "read_calibration", "read_disparity"]

Sample = pixcore.Sample

MIDDLEBURY_LAYOUT = """\
<root>/[<split>/]                      split: all (scenes right under the root) or a folder, e.g.
                                       MiddEval3's trainingQ
  <scene>/                             e.g. Motorcycle-perfect
    im0.png                            left view (the image)
    disp0.pfm                          left disparity, PFM (Pf), pixels; inf = unknown
                                       (MiddEval3: disp0GT.pfm, set disparity_file)
    calib.txt                          cam0=[f 0 cx; 0 f cy; 0 0 1], doffs=, baseline= (mm),
                                       width=, height=, ..."""

_IMAGE = "im0.png"
_CALIB = "calib.txt"
_MATRIX_EXAMPLE = "cam0=[f 0 cx; 0 f cy; 0 0 1]"


# --------------------------------------------------------------------------------------
# Files: disparity (PFM) and calibration
# --------------------------------------------------------------------------------------


def _check_pfm_header(path: Path) -> None:
    with open(path, "rb") as handle:
        magic = handle.read(2)
    if magic == b"PF":
        raise FileFormatError(
            "is a 3-channel PFM (header PF); a disparity map has one channel (header Pf): "
            "check that this is the scene's disparity file"
        )
    if magic != b"Pf":
        raise FileFormatError(
            f"is not a single-channel PFM file (it starts with {magic!r}, not b'Pf'); Middlebury "
            "disparities are PFM files: re-extract the scene"
        )


def read_disparity(path: Path) -> np.ndarray:
    """A single-channel PFM file -> ``[H, W]`` float32 disparities, top row first.

    PFM stores rows bottom to top, little-endian when the header's scale is negative and
    big-endian when positive. Pillow (>= 10.3) decodes exactly that, through
    :func:`pixcore.data.read_scalar` (which also applies the decompression-bomb limit), so
    there is no hand-written parser here. 3-channel PFM (``PF``), which Pillow does not
    read, is refused with its own message: a disparity map has one channel.
    """
    _check_pfm_header(path)
    return np.asarray(read_scalar(path), dtype=np.float32)


@dataclass(frozen=True)
class MiddleburyCalibration:
    """The part of a scene's ``calib.txt`` that depth needs.

    ``matrix`` is ``cam0`` (the left camera, pixels); ``doffs`` the x-difference of the
    principal points (pixels); ``baseline_mm`` the camera distance in millimetres;
    ``width``/``height`` the image size the calibration describes, when the file says.
    """

    matrix: tuple[tuple[float, float, float], ...]
    doffs: float
    baseline_mm: float
    width: int | None = None
    height: int | None = None

    @property
    def focal(self) -> float:
        """``f`` of ``Z = f * B / (d + doffs)``: the left camera's fx in pixels."""
        return self.matrix[0][0]

    def depth(self, disparity: np.ndarray) -> np.ndarray:
        """Metric z-depth (float32 metres) of a disparity map; 0 where it has none.

        A pixel has depth where its disparity is finite and positive and ``d + doffs``
        is positive (a smaller sum puts the point at or beyond infinity).
        """
        scale = self.focal * self.baseline_mm / 1000.0  # f * B, B in metres
        shifted = disparity.astype(np.float64) + self.doffs
        valid = np.isfinite(disparity) & (disparity > 0) & (shifted > 0)
        depth = np.divide(scale, shifted, out=np.zeros(disparity.shape), where=valid)
        return depth.astype(np.float32)


_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"


def _number(entries: Mapping[str, str], key: str, *, positive: bool = False) -> float:
    if key not in entries:
        raise FileFormatError(
            f"has no `{key}=` line; a Middlebury calib.txt holds {_MATRIX_EXAMPLE}, doffs=, "
            "baseline= (mm), width=, height=...: restore the file from the scene's archive"
        )
    text = entries[key]
    if not re.fullmatch(_NUMBER, text):
        raise FileFormatError(f"`{key}={text}`: {text!r} is not a number; fix the line")
    value = float(text)
    if positive and value <= 0:
        raise FileFormatError(f"`{key}={text}`: {key} must be positive; fix the line")
    return value


def _matrix(entries: Mapping[str, str], key: str) -> tuple[tuple[float, float, float], ...]:
    text = entries.get(key)
    if text is None:
        raise FileFormatError(
            f"has no `{key}=` line; the left camera's matrix is written {_MATRIX_EXAMPLE} (pixels)"
        )
    rows = [row.split() for row in text.strip().removeprefix("[").removesuffix("]").split(";")]
    if len(rows) != 3 or any(len(row) != 3 for row in rows) or not all(
        re.fullmatch(_NUMBER, v) for row in rows for v in row
    ):
        raise FileFormatError(
            f"`{key}={text}`: not a 3x3 matrix; expected {_MATRIX_EXAMPLE} (rows separated by ';')"
        )
    matrix = tuple((float(r[0]), float(r[1]), float(r[2])) for r in rows)
    if matrix[0][0] <= 0 or matrix[1][1] <= 0 or matrix[2] != (0.0, 0.0, 1.0):
        raise FileFormatError(
            f"`{key}={text}`: not a pinhole camera matrix; expected {_MATRIX_EXAMPLE} with f > 0"
        )
    return matrix


def read_calibration(path: Path) -> MiddleburyCalibration:
    """Parse a Middlebury ``calib.txt`` (``key=value`` lines; unused keys are ignored).

    Raises :class:`~pixcore.data.FileFormatError` naming the key that is missing or
    malformed.
    """
    entries: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        key, sep, value = line.partition("=")
        if sep:
            entries[key.strip()] = value.strip()
    return MiddleburyCalibration(
        matrix=_matrix(entries, "cam0"),
        doffs=_number(entries, "doffs"),
        baseline_mm=_number(entries, "baseline", positive=True),
        width=_pixels(entries, "width"),
        height=_pixels(entries, "height"),
    )


def _pixels(entries: Mapping[str, str], key: str) -> int | None:
    """An optional image size (``width=``, ``height=``): a whole, positive number."""
    if key not in entries:
        return None
    value = _number(entries, key, positive=True)
    if not value.is_integer():
        raise FileFormatError(f"`{key}={entries[key]}`: {key} is a whole number of pixels; fix the line")
    return int(value)


def _disparity_problems(disparity: np.ndarray, calibration: MiddleburyCalibration | None) -> list[str]:
    """Values a left-view disparity map must not hold (inf, NaN and 0 mean "unknown")."""
    problems = []
    finite = np.isfinite(disparity)
    negative = finite & (disparity < 0)
    if negative.any():
        problems.append(
            f"{int(negative.sum())} negative disparities (minimum {float(disparity[negative].min()):g}); a "
            "left-view disparity is >= 0 (inf where unknown): check that this is the scene's left map"
        )
    if calibration is not None:
        behind = finite & (disparity > 0) & (disparity + calibration.doffs <= 0)
        if behind.any():
            problems.append(
                f"{int(behind.sum())} disparities with d + doffs <= 0 (doffs={calibration.doffs:g}): "
                "no finite depth; check that calib.txt belongs to this scene"
            )
    return problems


@dataclass(frozen=True, eq=False)
class _DepthFromDisparity(FileField):
    """A disparity PFM -> ``depth`` (metres, 0 where unknown) and ``valid``, by its scene's calibration."""

    calibrations: Mapping[Path, MiddleburyCalibration]
    what: str = "disparity map"

    def read(self, path: Path) -> np.ndarray:
        calibration = self.calibrations.get(path)
        if calibration is None:  # the data set reports the calib.txt problem first
            raise FileFormatError("has no usable calib.txt next to it")
        return calibration.depth(read_disparity(path))

    def header(self, path: Path) -> tuple[int, int]:
        _check_pfm_header(path)
        return file_size(path)

    def verify(self, path: Path) -> tuple[tuple[int, int], list[str]]:
        disparity = read_disparity(path)
        size = (int(disparity.shape[0]), int(disparity.shape[1]))
        return size, _disparity_problems(disparity, self.calibrations.get(path))

    def convert(self, array: np.ndarray) -> dict[str, Tensor]:
        depth = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
        return {"depth": ScalarField(depth[None]), "valid": ValidityMask(depth > 0)}

    def keys(self) -> dict[str, type[TargetKind]]:
        return {"depth": ScalarField, "valid": ValidityMask}


# --------------------------------------------------------------------------------------
# The data set
# --------------------------------------------------------------------------------------


def _folders(path: Path) -> list[str]:
    if not path.is_dir():
        return []
    return sorted(p.name for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))


class MiddleburyStereo(FileDataset):
    """Middlebury stereo scenes as depth data: left view, metric depth, camera matrix.

    Keys: ``image`` (``im0.png``), ``depth`` (metres, ``f * B / (d + doffs)`` from the
    disparity and ``calib.txt``; 0 where the disparity is unknown), ``valid`` (``depth >
    0``) and ``intrinsics`` (``cam0``, per scene). See docs/datasets.md#middlebury.

    Parameters: ``root`` and ``validate`` as every reader (:data:`pixcore.data.DatasetRoot`,
    :data:`pixcore.data.DatasetValidation`), and

    Args:
        split: ``'all'``: the scene folders right under the root; otherwise a folder under
            the root that holds them (MiddEval3: ``'trainingQ'``, ``'trainingH'``,
            ``'trainingF'``).
        scenes: Only these scene folders, in this order; None: every folder that holds
            a scene file (im0.png, the disparity file or calib.txt).
        disparity_file: The left disparity's file name in each scene folder:
            ``disp0.pfm`` (2014 scenes) or ``disp0GT.pfm`` (MiddEval3 training sets).
        transform: Applied to every sample, intrinsics included (Python only).

    """

    name = "middlebury"

    def __init__(
        self,
        root: DatasetRoot,
        split: Annotated[str, Field(min_length=1)] = "all",
        scenes: Annotated[tuple[str, ...], Field(min_length=1)] | None = None,
        disparity_file: Annotated[str, Field(min_length=1)] = "disp0.pfm",
        validate: DatasetValidation = "full",
        transform: Callable[[Sample], Sample] | None = None,
    ) -> None:
        root_path = Path(root).expanduser()
        base = root_path if split == "all" else root_path / split
        description = f"middlebury at {root_path}" + ("" if split == "all" else f" (split {split})")
        self._disparity_file = disparity_file
        self._listing = DirectoryIndex()
        names = self._scene_names(base, scenes, description)
        self._scene_index = {n: i for i, n in enumerate(names)}
        records = [Record(n, {"image": base / n / _IMAGE, "depth": base / n / disparity_file}) for n in names]
        self._calibration_files = [base / n / _CALIB for n in names]
        self._calibrations: list[MiddleburyCalibration | str] = [self._calibrate(p) for p in self._calibration_files]
        usable = {
            r.files["depth"]: c
            for r, c in zip(records, self._calibrations, strict=True)
            if isinstance(c, MiddleburyCalibration)
        }
        fields = {"image": ImageFile(), "depth": _DepthFromDisparity(usable)}
        super().__init__(records, fields, roots=[base], validate=validate, description=description)
        # Added per sample after the files are read, so the transform runs here, last.
        self._transform = transform
        self.target_kinds = {**self.target_kinds, "intrinsics": Intrinsics}  # type: ignore[misc]

    # -- listing ----------------------------------------------------------------------

    def _scene_names(self, base: Path, scenes: Sequence[str] | None, description: str) -> list[str]:
        if not base.is_dir():
            parent = base.parent
            present = _folders(parent)
            raise DatasetError(
                f"{description}: folder {base} does not exist"
                + (f"; folders in {parent}: {', '.join(present)}" if present else "")
                + f". Expected layout:\n{MIDDLEBURY_LAYOUT}"
            )
        present = [n for n in _folders(base) if self._is_scene(base / n)]
        if scenes is None:
            if not present:
                raise DatasetError(self._no_scene_message(base, description))
            return present
        return self._chosen(base, list(scenes), present, description)

    def _is_scene(self, folder: Path) -> bool:
        names = self._listing.names(folder)
        return any(n in names for n in (_IMAGE, self._disparity_file, _CALIB))

    def _no_scene_message(self, base: Path, description: str) -> str:
        nested = [n for n in _folders(base) if any(self._is_scene(base / n / s) for s in _folders(base / n))]
        hint = f"; {', '.join(nested)} hold scene folders: set split to one of them" if nested else ""
        return (
            f"{description}: no scene folder (one holding {_IMAGE}, {self._disparity_file} or "
            f"{_CALIB}) in {base}{hint}. Expected layout:\n{MIDDLEBURY_LAYOUT}"
        )

    @staticmethod
    def _chosen(base: Path, scenes: list[str], present: list[str], description: str) -> list[str]:
        repeated = sorted({s for s in scenes if scenes.count(s) > 1})
        if repeated:
            raise DatasetError(f"{description}: scenes lists {', '.join(repeated)} more than once")
        unknown = [s for s in scenes if not (base / s).is_dir()]
        if unknown:
            close = difflib.get_close_matches(unknown[0], present, n=1)
            raise DatasetError(
                f"{description}: scenes names {', '.join(unknown)}, not a folder in {base}"
                + (f" (did you mean {close[0]!r}?)" if close else "")
                + f"; scene folders there: {', '.join(present) if present else 'none'}"
            )
        return scenes

    # -- calibration ------------------------------------------------------------------

    def _calibrate(self, path: Path) -> MiddleburyCalibration | str:
        """The scene's calibration, or the problem (a sentence) that keeps it from use."""
        if not self._listing.exists(path):
            return (
                f"missing calibration of scene {path.parent.name} (calib.txt: {_MATRIX_EXAMPLE}, "
                "doffs=, baseline=...); restore the file from the scene's archive"
            )
        try:
            return read_calibration(path)
        except FileFormatError as error:
            return str(error)
        except OSError as error:
            return f"cannot be read ({error}); check the file and its permissions"

    def calibration(self, index: int) -> MiddleburyCalibration:
        """The calibration of sample ``index``'s scene; :class:`DatasetError` if unusable."""
        calibration = self._calibrations[index]
        if isinstance(calibration, str):
            path = self._calibration_files[index]
            raise DatasetError(f"{self.description}: {self.relative(path)}: {calibration}")
        return calibration

    # -- checks and messages ----------------------------------------------------------

    def layout_problems(self) -> list[tuple[Path | None, str]]:
        return [
            (path, c) for path, c in zip(self._calibration_files, self._calibrations, strict=True)
            if isinstance(c, str)
        ]

    def sample_problems(
        self, record: Record, sizes: Mapping[str, tuple[int, int]]
    ) -> list[tuple[Path | None, str]]:
        index = self._scene_index[record.name]
        calibration, size = self._calibrations[index], sizes.get("image")
        if not isinstance(calibration, MiddleburyCalibration) or size is None:
            return []
        if calibration.width is None or calibration.height is None or (calibration.height, calibration.width) == size:
            return []
        return [(
            self._calibration_files[index],
            f"says width={calibration.width} height={calibration.height} but {record.name}/{_IMAGE} is "
            f"{size[1]}x{size[0]} (width x height): the calibration must describe the images next to it "
            "(scale f, cx, cy and doffs with the images when resizing them)",
        )]

    def missing_message(self, field_name: str, record: Record) -> str:
        folder = record.files[field_name].parent
        if field_name == "image":
            return f"missing left view of scene {record.name}: expected {record.name}/{_IMAGE}; restore the file"
        hint = ""
        for other in ("disp0.pfm", "disp0GT.pfm"):
            if other != self._disparity_file and self._listing.exists(folder / other):
                hint = f" (the folder has {other}: set disparity_file: {other})"
        return (
            f"missing left disparity of scene {record.name}: expected {record.name}/{self._disparity_file}"
            f"{hint}; restore the file or leave the scene out with `scenes`"
        )

    # -- access -----------------------------------------------------------------------

    def __getitem__(self, index: int) -> Sample:
        calibration = self.calibration(index)
        sample = super().__getitem__(index)
        sample["intrinsics"] = Intrinsics(torch.tensor(calibration.matrix, dtype=torch.float32))
        return sample if self._transform is None else self._transform(sample)
