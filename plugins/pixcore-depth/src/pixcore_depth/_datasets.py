"""Readers of the standard depth data sets: NYU Depth V2 (folder layout) and KITTI depth.

The Middlebury stereo reader lives in :mod:`pixcore_depth._middlebury` and is registered
here with the others.

Each reads a local copy (nothing is downloaded), checks it when opened (see
:class:`pixcore.data.FileDataset`) and yields samples with ``"image"`` (Image uint8
``[3, H, W]``), ``"depth"`` (ScalarField float32 ``[1, H, W]``, metric z-depth in metres,
0 where there is no measurement) and ``"valid"`` (ValidityMask, ``depth > 0``). NYU adds
optional ``"semseg"``, ``"normals"``/``"normals_valid"`` and ``"intrinsics"``. The
layouts, parameters and configs are documented in docs/datasets.md.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
import pixcore
import torch
from pixcore.data import (
    ClassMaskFile,
    DatasetError,
    DatasetRoot,
    DatasetValidation,
    DirectoryIndex,
    FileDataset,
    FileField,
    ImageFile,
    Record,
    ScalarFile,
    VectorFile,
)
from pixcore.targets import (
    DEFAULT_IGNORE_INDEX,
    Image,
    Intrinsics,
    ScalarField,
    TargetKind,
    ValidityMask,
)
from pydantic import BeforeValidator, Field

from pixcore_depth._middlebury import MiddleburyStereo

__all__ = [
    "KITTI_DEPTH_SCALE",
    "NYU40_CLASSES",
    "NYU13_CLASSES",
    "NYU_INTRINSICS",
    "KITTIDepth",
    "NYUDepthV2",
    "pixcore_datasets",
]

Sample = pixcore.Sample


def _subfolders(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []


# --------------------------------------------------------------------------------------
# NYU Depth V2
# --------------------------------------------------------------------------------------

#: The 40 classes of Gupta et al. (CVPR 2013) for NYU Depth V2, in id order (stored id
#: ``c`` in 1-40 is class ``c - 1``; stored 0 is unlabelled).
NYU40_CLASSES: tuple[str, ...] = (
    "wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window",
    "bookshelf", "picture", "counter", "blinds", "desk", "shelves", "curtain", "dresser",
    "pillow", "mirror", "floor mat", "clothes", "ceiling", "books", "refrigerator",
    "television", "paper", "towel", "shower curtain", "box", "whiteboard", "person",
    "night stand", "toilet", "sink", "lamp", "bathtub", "bag", "otherstructure",
    "otherfurniture", "otherprop",
)

#: The 13 classes of Couprie et al. (ICLR 2013) for NYU Depth V2, in id order.
NYU13_CLASSES: tuple[str, ...] = (
    "bed", "books", "ceiling", "chair", "floor", "furniture", "objects", "picture", "sofa",
    "table", "tv", "wall", "window",
)

#: (fx, fy, cx, cy) of the NYU Depth V2 RGB camera at 640x480, from the data set's
#: toolbox (camera_params.m).
NYU_INTRINSICS: tuple[float, float, float, float] = (
    518.8579, 519.4696, 325.5824, 253.7362
)

NYU_LAYOUT = """\
<root>/<split>/                        split: e.g. train, test
  rgb/<name>.png|.jpg|.jpeg
  depth/<name>.png                     16-bit PNG, millimetres (0 = no measurement)
       or <name>.npy|.tif|.tiff        float, metres
  labels40/<name>.png                  optional (labels: 40): 0 = unlabelled, 1-40 = classes
  labels13/<name>.png                  optional (labels: 13): 0 = unlabelled, 1-13 = classes
  normals/<name>.png|.npy              optional (normals: true): RGB (n + 1) / 2 * 255, or
                                       float [H, W, 3]; camera frame x right, y down, z forward"""

_RGB_SUFFIXES = (".png", ".jpg", ".jpeg")
_DEPTH_SUFFIXES = (".png", ".npy", ".tiff", ".tif")
_NORMAL_SUFFIXES = (".png", ".npy")


def _labels_as_text(value: Any) -> Any:
    """``40`` -> ``"40"``, None -> ``"none"``: the label set names the folder labels<n>/."""
    if value is None:
        return "none"
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


#: The NYU label set to read; configs may write it as a number (``labels: 40``).
LabelSet = Annotated[Literal["none", "40", "13"], BeforeValidator(_labels_as_text)]


class NYUDepthV2(FileDataset):
    """NYU Depth V2 in a plain folder layout (see docs/datasets.md#nyu_depth_v2).

    Keys: ``image``, ``depth`` (metres), ``valid`` (``depth > 0``); with ``labels`` 40 or
    13 also ``semseg`` (ids 0-39 or 0-12, 255 = unlabelled); with ``normals`` also
    ``normals`` and ``normals_valid`` (where the stored normal is defined, independent of
    depth: point the normals task's ``valid_key`` at it); with ``intrinsics`` also
    ``intrinsics``.

    Parameters: ``root`` and ``validate`` as every reader (:data:`pixcore.data.DatasetRoot`,
    :data:`pixcore.data.DatasetValidation`), and

    Args:
        split: Folder under the root: ``'train'``, ``'test'``...
        depth_scale: Metres per stored depth unit (positive). None: 0.001 for integer files
            (16-bit PNG millimetres), 1 for float files (.npy, .tif: metres).
        labels: Semantic labels to read into ``'semseg'``: ``'none'``, ``'40'``
            (labels40/) or ``'13'`` (labels13/); 40 and 13 as numbers work too. Stored 0
            (unlabelled) -> 255, class c -> c - 1.
        normals: Read normals/ into ``'normals'`` with their own validity
            ``'normals_valid'``.
        normals_flip: Normal components to negate after decoding, to convert the files'
            camera frame to pixcore's (x right, y down, z forward), e.g. ``[y, z]``.
        intrinsics: Add ``'intrinsics'`` (3x3) to every sample: ``'nyu'`` (the standard
            camera, 640x480 images only) or ``[fx, fy, cx, cy]`` in pixels.
        transform: Applied to every sample (Python only).

    """

    name = "nyu_depth_v2"
    ignore_index = DEFAULT_IGNORE_INDEX

    def __init__(
        self,
        root: DatasetRoot,
        split: str = "train",
        depth_scale: Annotated[float, Field(gt=0)] | None = None,
        labels: LabelSet = "none",
        normals: bool = False,
        normals_flip: tuple[Literal["x", "y", "z"], ...] = (),
        intrinsics: Literal["none", "nyu"] | tuple[float, float, float, float] = "none",
        validate: DatasetValidation = "full",
        transform: Callable[[Sample], Sample] | None = None,
    ) -> None:
        labels = _labels_as_text(labels)
        self._intrinsics = intrinsics
        base = Path(root).expanduser() / split
        description = f"nyu_depth_v2 at {base.parent} (split {split})"
        folders = {"image": base / "rgb", "depth": base / "depth"}
        if labels != "none":
            folders["semseg"] = base / f"labels{labels}"
        if normals:
            folders["normals"] = base / "normals"
        for key, folder in folders.items():
            if not folder.is_dir():
                parent = base.parent
                splits = _subfolders(parent)
                hint = ""
                if key == "semseg":
                    hint = " (set labels: none to read no labels)"
                elif key == "normals":
                    hint = " (set normals: false to read no normals)"
                raise DatasetError(
                    f"{description}: folder {folder} does not exist{hint}"
                    + (f"; folders in {parent}: {', '.join(splits)}" if splits else "")
                    + f". Expected layout:\n{NYU_LAYOUT}"
                )
        index = DirectoryIndex()
        self._suffixes = {"image": _RGB_SUFFIXES, "depth": _DEPTH_SUFFIXES, "semseg": (".png",),
                          "normals": _NORMAL_SUFFIXES}
        stems = sorted(
            name[: name.rfind(".")]
            for name in index.names(folders["image"])
            if name.lower().endswith(_RGB_SUFFIXES)
        )
        if not stems:
            raise DatasetError(
                f"{description}: no .png/.jpg image in {folders['image']}. Expected layout:\n"
                f"{NYU_LAYOUT}"
            )
        records = []
        for stem in stems:
            files: dict[str, Path] = {}
            for key, folder in folders.items():
                suffixes = self._suffixes[key]
                found = index.find(folder, stem, suffixes)
                files[key] = found if found is not None else folder / (stem + suffixes[0])
            records.append(Record(stem, files))

        fields: dict[str, FileField] = {
            "image": ImageFile(),
            "depth": ScalarFile(
                integer_scale=depth_scale or 0.001,
                float_scale=depth_scale or 1.0,
            ),
        }
        if labels != "none":
            n = int(labels)
            lut = np.full(256, -1, dtype=np.int64)
            lut[0] = DEFAULT_IGNORE_INDEX
            lut[1 : n + 1] = np.arange(n)
            lut[DEFAULT_IGNORE_INDEX] = DEFAULT_IGNORE_INDEX
            fields["semseg"] = ClassMaskFile(
                num_classes=n, lut=lut,
                expected=f"outside the NYU-{n} ids (0 = unlabelled, 1-{n} = classes, 255 = ignore)",
                fix=f"labels{n}/ files hold the {n}-class ids; check that they belong to this "
                f"label set (labels: {n} reads labels{n}/), or fix the file",
            )
            self.class_names = NYU40_CLASSES if n == 40 else NYU13_CLASSES
        if normals:
            fields["normals"] = VectorFile(flip=tuple(normals_flip))
        constants = {}
        self._camera: tuple[float, float, float, float] | None = None
        if intrinsics != "none":
            fx, fy, cx, cy = NYU_INTRINSICS if intrinsics == "nyu" else intrinsics
            self._camera = (fx, fy, cx, cy)
            constants["intrinsics"] = Intrinsics(
                torch.tensor([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]], dtype=torch.float32)
            )
        super().__init__(
            records, fields, roots=[base], validate=validate, description=description,
            constants=constants, transform=transform,
        )

    def missing_message(self, field_name: str, record: Record) -> str:
        folder = record.files[field_name].parent.name
        options = "|".join(s.lstrip(".") for s in self._suffixes[field_name])
        what = self.fields[field_name].what
        return (
            f"missing {what} of {self.relative(record.files['image'])}: expected "
            f"{folder}/{record.name}.{options}; restore the file or remove the image"
        )

    def sample_problems(
        self, record: Record, sizes: Any
    ) -> list[tuple[Path | None, str]]:
        size = sizes.get("image")
        if self._intrinsics == "nyu" and size is not None and size != (480, 640):
            return [
                (record.files["image"],
                 f"is {size[0]}x{size[1]} but intrinsics: nyu describes the full 480x640 "
                 "(height x width) frame; give [fx, fy, cx, cy] for your crop or resize")
            ]
        return []


# --------------------------------------------------------------------------------------
# KITTI depth (annotated depth maps of the KITTI depth prediction benchmark)
# --------------------------------------------------------------------------------------

#: KITTI ground truth: depth in metres = stored 16-bit value / 256; 0 = no measurement.
KITTI_DEPTH_SCALE = 1.0 / 256.0

KITTI_LAYOUT = """\
<root>/                                data_depth_annotated
  train/<drive>/proj_depth/groundtruth/image_02/<frame>.png
  val/<drive>/proj_depth/groundtruth/image_03/<frame>.png
                                       16-bit PNG: depth = value / 256 m, 0 = invalid
<raw_root>/                            KITTI raw data (synced + rectified)
  <date>/<drive>/image_02/data/<frame>.png
  <date>/<drive>/image_03/data/<frame>.png
                                       <date> = first 10 characters of <drive>"""

_KITTI_ENTRY = re.compile(
    r"(?P<drive>\d{4}_\d{2}_\d{2}_drive_\d{4}_sync)/(?:proj_depth/groundtruth/)?"
    r"(?P<camera>image_0[23])/(?:data/)?(?P<frame>\d+)\.png"
)


class KITTIDepth(FileDataset):
    """KITTI depth: annotated depth maps (data_depth_annotated) with raw RGB frames.

    Keys: ``image`` (the raw frame of the camera), ``depth`` (stored value / 256, metres)
    and ``valid`` (``depth > 0``: the annotated maps are sparse). See
    docs/datasets.md#kitti_depth.

    Parameters: ``root`` (the folder of data_depth_annotated, or its parent) and
    ``validate`` as every reader (:data:`pixcore.data.DatasetRoot`,
    :data:`pixcore.data.DatasetValidation`), and

    Args:
        raw_root: Folder of the KITTI raw data (<date>/<drive>/image_02/data/<frame>.png).
        split: Folder under the root: ``'train'`` or ``'val'``.
        cameras: Cameras to read, at least one: image_02 (left colour), image_03 (right
            colour).
        split_file: Optional list of frames (e.g. the Eigen split), one per line, each
            naming <drive>/proj_depth/groundtruth/<camera>/<frame>.png or
            <date>/<drive>/<camera>/data/<frame>.png (first match on the line). Its frames
            are looked up in every split folder of the root.
        transform: Applied to every sample (Python only).

    """

    name = "kitti_depth"
    target_kinds: ClassVar[dict[str, type[TargetKind]]] = {
        "image": Image, "depth": ScalarField, "valid": ValidityMask
    }

    def __init__(
        self,
        root: DatasetRoot,
        raw_root: str | Path,
        split: str = "train",
        cameras: Annotated[tuple[Literal["image_02", "image_03"], ...], Field(min_length=1)] = (
            "image_02", "image_03"
        ),
        split_file: str | Path | None = None,
        validate: DatasetValidation = "full",
        transform: Callable[[Sample], Sample] | None = None,
    ) -> None:
        annotated = Path(root).expanduser()
        nested = annotated / "data_depth_annotated"
        if not (annotated / split).is_dir() and nested.is_dir():
            annotated = nested
        raw = Path(raw_root).expanduser()
        description = f"kitti_depth at {annotated} (split {split})"
        if not raw.is_dir():
            raise DatasetError(
                f"{description}: raw_root {raw} is not a folder. Expected layout:\n{KITTI_LAYOUT}"
            )
        index = DirectoryIndex()
        if split_file is None:
            frames = self._list_split(annotated, split, list(cameras), description, index)
        else:
            frames = self._read_split_file(
                annotated, Path(split_file), list(cameras), description, index
            )
        records = [
            Record(
                f"{drive}/{camera}/{frame}",
                {"image": raw / drive[:10] / drive / camera / "data" / f"{frame}.png", "depth": gt},
            )
            for drive, camera, frame, gt in frames
        ]
        if not records:
            raise DatasetError(
                f"{description}: no ground-truth frame found for cameras "
                f"{', '.join(cameras)}. Expected layout:\n{KITTI_LAYOUT}"
            )
        fields = {
            "image": ImageFile(),
            "depth": ScalarFile(integer_scale=KITTI_DEPTH_SCALE, float_scale=1.0),
        }
        super().__init__(
            records, fields, roots=[annotated, raw], validate=validate,
            description=description, transform=transform,
        )

    @staticmethod
    def _list_split(
        annotated: Path, split: str, cameras: list[str], description: str, index: DirectoryIndex
    ) -> list[tuple[str, str, str, Path]]:
        split_dir = annotated / split
        if not split_dir.is_dir():
            existing = _subfolders(annotated)
            raise DatasetError(
                f"{description}: folder {split_dir} does not exist"
                + (f" (folders in {annotated}: {', '.join(existing)})" if existing else "")
                + f". Set `root` to data_depth_annotated, laid out as:\n{KITTI_LAYOUT}"
            )
        frames = []
        for drive in sorted(e.name for e in os.scandir(split_dir) if e.is_dir()):
            for camera in cameras:
                folder = split_dir / drive / "proj_depth" / "groundtruth" / camera
                for name in sorted(index.names(folder)):
                    if name.endswith(".png"):
                        frames.append((drive, camera, name[:-4], folder / name))
        return frames

    @staticmethod
    def _read_split_file(
        annotated: Path, split_file: Path, cameras: list[str], description: str,
        index: DirectoryIndex,
    ) -> list[tuple[str, str, str, Path]]:
        path = split_file if split_file.is_file() else annotated / split_file
        if not path.is_file():
            raise DatasetError(f"{description}: split_file {split_file} does not exist")
        splits = _subfolders(annotated)
        frames, unparsed = [], []
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            match = _KITTI_ENTRY.search(line)
            if match is None:
                unparsed.append(f"  line {number}: {line.strip()[:100]}")
                continue
            drive, camera, frame = match["drive"], match["camera"], match["frame"]
            if camera not in cameras:
                continue
            candidates = [
                annotated / s / drive / "proj_depth" / "groundtruth" / camera / f"{frame}.png"
                for s in splits
            ]
            gt = next((c for c in candidates if index.exists(c)), None)
            if gt is None:  # reported as missing by validation, under the first split folder
                gt = candidates[0] if candidates else annotated / drive / f"{frame}.png"
            frames.append((drive, camera, frame, gt))
        if unparsed:
            shown = "\n".join(unparsed[:10])
            if len(unparsed) > 10:
                shown += f"\n  ... and {len(unparsed) - 10} more"
            raise DatasetError(
                f"{description}: {len(unparsed)} line(s) of {path} name no KITTI frame; each line "
                "needs <drive>/proj_depth/groundtruth/image_0X/<frame>.png or "
                f"<date>/<drive>/image_0X/data/<frame>.png:\n{shown}"
            )
        return frames

    def missing_message(self, field_name: str, record: Record) -> str:
        if field_name == "image":
            return (
                f"missing RGB frame of {self.relative(record.files['depth'])}: download the raw "
                "drive (synced + rectified) into raw_root/<date>/<drive>/, or check raw_root"
            )
        return (
            f"missing ground truth for frame {record.name}: it is not in any split folder of "
            "data_depth_annotated; remove the line from split_file (the official annotated maps "
            "skip the first and last 5 frames of each drive)"
        )


# --------------------------------------------------------------------------------------
# Registration
# --------------------------------------------------------------------------------------


@pixcore.hookimpl
def pixcore_datasets() -> Iterator[pixcore.Component]:
    yield pixcore.Component(
        "nyu_depth_v2", NYUDepthV2,
        description="NYU Depth V2 in a folder layout: depth, optional labels and normals",
    )
    yield pixcore.Component(
        "kitti_depth", KITTIDepth,
        description="KITTI annotated depth maps with raw RGB frames (local copy)",
    )
    yield pixcore.Component(
        "middlebury", MiddleburyStereo,
        description="Middlebury stereo scenes (2014, MiddEval3): depth from disparity and calib.txt",
    )
