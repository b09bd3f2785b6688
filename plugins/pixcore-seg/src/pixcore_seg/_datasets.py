"""Readers of the standard segmentation data sets: Pascal VOC 2012, Cityscapes, ADE20K.

Each reads a local copy in its official layout (nothing is downloaded), checks it when
opened (see :class:`pixcore.data.FileDataset`) and yields samples ``{"image": Image uint8
[3, H, W], "semseg": ClassMask int64 [H, W]}`` with 255 as the ignore index. The layouts,
parameters and configs are documented in docs/datasets.md.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import pixcore
from pixcore.data import (
    ClassMaskFile,
    DatasetError,
    DatasetRoot,
    DatasetValidation,
    FileDataset,
    ImageFile,
    Record,
)
from pixcore.targets import DEFAULT_IGNORE_INDEX, ClassMask, Image, TargetKind

__all__ = [
    "ADE20K",
    "ADE20K_CLASSES",
    "CITYSCAPES_CLASSES",
    "CITYSCAPES_LABEL_TO_TRAIN",
    "VOC_CLASSES",
    "Cityscapes",
    "VOCSegmentation",
    "pixcore_datasets",
]

Sample = pixcore.Sample

#: The keys of every segmentation sample.
_KEYS: dict[str, type[TargetKind]] = {"image": Image, "semseg": ClassMask}


# --------------------------------------------------------------------------------------
# Pascal VOC 2012
# --------------------------------------------------------------------------------------

#: The 21 classes of Pascal VOC 2012 segmentation, in id order (0 is the background).
VOC_CLASSES: tuple[str, ...] = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
    "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
    "sheep", "sofa", "train", "tvmonitor",
)

VOC_LAYOUT = """\
VOC2012/                               (root; VOCdevkit/ or its parent also work)
  JPEGImages/<id>.jpg
  SegmentationClass/<id>.png           palette PNG: pixel index = class id 0-20, 255 = ignore
  ImageSets/Segmentation/<split>.txt   one <id> per line: train.txt, val.txt, trainval.txt"""


def _voc_root(root: Path) -> Path:
    for candidate in (root, root / "VOC2012", root / "VOCdevkit" / "VOC2012"):
        if (candidate / "JPEGImages").is_dir():
            return candidate
    raise DatasetError(
        f"voc: no JPEGImages/ folder in {root} (nor in {root / 'VOC2012'} or "
        f"{root / 'VOCdevkit' / 'VOC2012'}). Set `root` to the VOC2012 folder, laid out as:\n"
        f"{VOC_LAYOUT}"
    )


def _subfolders(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []


def _read_ids(path: Path) -> list[str]:
    ids = []
    for line in path.read_text(encoding="utf-8").splitlines():
        tokens = line.split()
        if tokens:
            ids.append(Path(tokens[0]).stem)
    return ids


class VOCSegmentation(FileDataset):
    """Pascal VOC 2012 semantic segmentation (21 classes, 255 = ignore).

    Reads ``JPEGImages/<id>.jpg`` and the palette PNG ``SegmentationClass/<id>.png`` for
    each id of ``ImageSets/Segmentation/<split>.txt``. Label pixels are the palette
    *indices* (the class ids), not the colours; 255 marks object borders and difficult
    regions. See docs/datasets.md#voc.

    Parameters: ``root`` and ``validate`` as every reader (:data:`pixcore.data.DatasetRoot`,
    :data:`pixcore.data.DatasetValidation`), and

    Args:
        split: ImageSets/Segmentation/<split>.txt to read: ``'train'``, ``'val'`` or
            ``'trainval'``.
        label_dir: Folder of the label PNGs under the root; ``'SegmentationClassAug'`` for
            the augmented (SBD) labels.
        split_file: A list of ids to read instead of the split's file (e.g.
            train_aug.txt); relative to the root or absolute. Lines may also be
            ``'<image path> <label path>'``.
        transform: Applied to every sample (Python only).

    """

    name = "voc"
    target_kinds: ClassVar[dict[str, type[TargetKind]]] = _KEYS
    class_names = VOC_CLASSES
    ignore_index = DEFAULT_IGNORE_INDEX

    def __init__(
        self,
        root: DatasetRoot,
        split: str = "train",
        label_dir: str = "SegmentationClass",
        split_file: str | Path | None = None,
        validate: DatasetValidation = "full",
        transform: Callable[[Sample], Sample] | None = None,
    ) -> None:
        base = _voc_root(Path(root).expanduser())
        labels = base / label_dir
        if not labels.is_dir():
            raise DatasetError(
                f"voc: label folder {labels} does not exist. Expected layout:\n{VOC_LAYOUT}\n"
                "For the augmented labels set label_dir: SegmentationClassAug."
            )
        if split_file is not None:
            list_file = base / split_file  # an absolute split_file replaces base
        else:
            list_file = base / "ImageSets" / "Segmentation" / f"{split}.txt"
        if not list_file.is_file():
            folder = list_file.parent
            existing = sorted(p.stem for p in folder.glob("*.txt")) if folder.is_dir() else []
            raise DatasetError(
                f"voc: split list {list_file} does not exist"
                + (f"; lists in {folder}: {', '.join(existing)}" if existing else "")
                + f". Expected layout:\n{VOC_LAYOUT}"
            )
        ids = _read_ids(list_file)
        if not ids:
            raise DatasetError(f"voc: split list {list_file} lists no image ids; one id per line")
        records = [
            Record(i, {"image": base / "JPEGImages" / f"{i}.jpg", "semseg": labels / f"{i}.png"})
            for i in ids
        ]
        self._list_file = list_file
        fields = {
            "image": ImageFile(),
            "semseg": ClassMaskFile(
                num_classes=len(VOC_CLASSES),
                fix="VOC labels are palette PNGs whose index is the class id (0-20) and 255 for "
                "borders; check that the file is a label of SegmentationClass, not a colour "
                "rendering",
            ),
        }
        super().__init__(
            records, fields, roots=[base], validate=validate, transform=transform,
            description=f"voc at {base} (split {list_file.stem})",
        )

    def missing_message(self, field_name: str, record: Record) -> str:
        listed = self.relative(self._list_file)
        what = "image" if field_name == "image" else "label"
        return (
            f"missing {what} of id {record.name!r} (listed in {listed}); restore the file or "
            "remove the id from the list"
        )


# --------------------------------------------------------------------------------------
# Cityscapes
# --------------------------------------------------------------------------------------

#: The 19 evaluation classes of Cityscapes, in train id order.
CITYSCAPES_CLASSES: tuple[str, ...] = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light",
    "traffic sign", "vegetation", "terrain", "sky", "person", "rider", "car", "truck",
    "bus", "train", "motorcycle", "bicycle",
)

#: labelId -> trainId, from the official table (cityscapesscripts/helpers/labels.py);
#: every labelId without a train id maps to 255 (ignored).
CITYSCAPES_LABEL_TO_TRAIN: dict[int, int] = {
    0: 255,  # unlabeled
    1: 255,  # ego vehicle
    2: 255,  # rectification border
    3: 255,  # out of roi
    4: 255,  # static
    5: 255,  # dynamic
    6: 255,  # ground
    7: 0,  # road
    8: 1,  # sidewalk
    9: 255,  # parking
    10: 255,  # rail track
    11: 2,  # building
    12: 3,  # wall
    13: 4,  # fence
    14: 255,  # guard rail
    15: 255,  # bridge
    16: 255,  # tunnel
    17: 5,  # pole
    18: 255,  # polegroup
    19: 6,  # traffic light
    20: 7,  # traffic sign
    21: 8,  # vegetation
    22: 9,  # terrain
    23: 10,  # sky
    24: 11,  # person
    25: 12,  # rider
    26: 13,  # car
    27: 14,  # truck
    28: 15,  # bus
    29: 255,  # caravan
    30: 255,  # trailer
    31: 16,  # train
    32: 17,  # motorcycle
    33: 18,  # bicycle
}

CITYSCAPES_LAYOUT = """\
cityscapes/                            (root)
  leftImg8bit/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png
  gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png
                                       or ..._gtFine_labelTrainIds.png (label_type: labelTrainIds)
  splits: train, val, test"""


class Cityscapes(FileDataset):
    """Cityscapes fine annotations, 19 classes (the official train ids), 255 = ignore.

    Reads ``leftImg8bit/<split>/<city>/*_leftImg8bit.png`` and the matching
    ``gtFine/<split>/<city>/*_gtFine_labelIds.png``; label ids are mapped to train ids by
    :data:`CITYSCAPES_LABEL_TO_TRAIN` (road 7 -> 0, car 26 -> 13, every id without a
    train id -> 255). See docs/datasets.md#cityscapes.

    Parameters: ``root`` and ``validate`` as every reader (:data:`pixcore.data.DatasetRoot`,
    :data:`pixcore.data.DatasetValidation`), and

    Args:
        split: ``'train'``, ``'val'`` or ``'test'`` (gtFine).
        label_type: ``'labelIds'``: the official *_gtFine_labelIds.png, mapped to the 19
            train ids here; ``'labelTrainIds'``: files already holding train ids (0-18,
            255), as written by cityscapesscripts' createTrainIdLabelImgs.
        transform: Applied to every sample (Python only).

    """

    name = "cityscapes"
    target_kinds: ClassVar[dict[str, type[TargetKind]]] = _KEYS
    class_names = CITYSCAPES_CLASSES
    ignore_index = DEFAULT_IGNORE_INDEX

    def __init__(
        self,
        root: DatasetRoot,
        split: str = "train",
        label_type: Literal["labelIds", "labelTrainIds"] = "labelIds",
        validate: DatasetValidation = "full",
        transform: Callable[[Sample], Sample] | None = None,
    ) -> None:
        base = Path(root).expanduser()
        images_dir = base / "leftImg8bit" / split
        labels_dir = base / "gtFine" / split
        for folder in (images_dir, labels_dir):
            if not folder.is_dir():
                parent = folder.parent
                existing = _subfolders(parent)
                raise DatasetError(
                    f"cityscapes: folder {folder} does not exist"
                    + (f" (splits in {parent}: {', '.join(existing)})" if existing else "")
                    + ". Set `root` to the folder holding leftImg8bit/ and gtFine/:\n"
                    + CITYSCAPES_LAYOUT
                )
        suffix = f"_gtFine_{label_type}.png"
        records = []
        for city in sorted(e.name for e in os.scandir(images_dir) if e.is_dir()):
            for name in sorted(os.listdir(images_dir / city)):
                if not name.endswith("_leftImg8bit.png"):
                    continue
                stem = name[: -len("_leftImg8bit.png")]
                files = {
                    "image": images_dir / city / name,
                    "semseg": labels_dir / city / (stem + suffix),
                }
                records.append(Record(stem, files))
        if not records:
            raise DatasetError(
                f"cityscapes: no *_leftImg8bit.png image in {images_dir}/<city>/. Expected "
                f"layout:\n{CITYSCAPES_LAYOUT}"
            )
        if label_type == "labelIds":
            lut = np.full(34, -1, dtype=np.int64)
            for label_id, train_id in CITYSCAPES_LABEL_TO_TRAIN.items():
                lut[label_id] = train_id
            label = ClassMaskFile(
                num_classes=19, lut=lut,
                expected="not a Cityscapes labelId (0-33)",
                fix="use the official *_gtFine_labelIds.png files; for files holding train ids "
                "(0-18, 255) set label_type: labelTrainIds",
            )
        else:
            label = ClassMaskFile(
                num_classes=19,
                expected="outside the 19 train ids (0-18) and not the ignore index 255",
                fix="labelTrainIds files hold train ids; for the official *_gtFine_labelIds.png "
                "set label_type: labelIds",
            )
        super().__init__(
            records, {"image": ImageFile(), "semseg": label}, roots=[base],
            validate=validate, transform=transform,
            description=f"cityscapes at {base} (split {split})",
        )


# --------------------------------------------------------------------------------------
# ADE20K (MIT Scene Parsing, ADEChallengeData2016)
# --------------------------------------------------------------------------------------

#: The 150 classes of the Scene Parsing benchmark (objectInfo150), in id order: stored id
#: ``c`` (1-150) is ``ADE20K_CLASSES[c - 1]``; stored 0 is "other" (unlabelled).
ADE20K_CLASSES: tuple[str, ...] = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane",
    "grass", "cabinet", "sidewalk", "person", "earth", "door", "table", "mountain", "plant",
    "curtain", "chair", "car", "water", "painting", "sofa", "shelf", "house", "sea",
    "mirror", "rug", "field", "armchair", "seat", "fence", "desk", "rock", "wardrobe",
    "lamp", "bathtub", "railing", "cushion", "base", "box", "column", "signboard",
    "chest of drawers", "counter", "sand", "sink", "skyscraper", "fireplace",
    "refrigerator", "grandstand", "path", "stairs", "runway", "case", "pool table",
    "pillow", "screen door", "stairway", "river", "bridge", "bookcase", "blind",
    "coffee table", "toilet", "flower", "book", "hill", "bench", "countertop", "stove",
    "palm", "kitchen island", "computer", "swivel chair", "boat", "bar", "arcade machine",
    "hovel", "bus", "towel", "light", "truck", "tower", "chandelier", "awning",
    "streetlight", "booth", "television receiver", "airplane", "dirt track", "apparel",
    "pole", "land", "bannister", "escalator", "ottoman", "bottle", "buffet", "poster",
    "stage", "van", "ship", "fountain", "conveyer belt", "canopy", "washer", "plaything",
    "swimming pool", "stool", "barrel", "basket", "waterfall", "tent", "bag", "minibike",
    "cradle", "oven", "ball", "food", "step", "tank", "trade name", "microwave", "pot",
    "animal", "bicycle", "lake", "dishwasher", "screen", "blanket", "sculpture", "hood",
    "sconce", "vase", "traffic light", "tray", "ashcan", "fan", "pier", "crt screen",
    "plate", "monitor", "bulletin board", "shower", "radiator", "glass", "clock", "flag",
)

ADE20K_LAYOUT = """\
ADEChallengeData2016/                  (root; its parent also works)
  images/training/ADE_train_<n>.jpg    images/validation/ADE_val_<n>.jpg
  annotations/training/ADE_train_<n>.png
  annotations/validation/ADE_val_<n>.png
                                       8-bit PNG: 0 = other (unlabelled), 1-150 = classes"""

_ADE_SPLITS = {
    "training": "training", "train": "training", "validation": "validation", "val": "validation"
}


class ADE20K(FileDataset):
    """ADE20K scene parsing (SceneParsing / ADEChallengeData2016), 150 classes.

    ``reduce_zero_label=True`` (the default) is the benchmark protocol: the stored id 0
    ("other objects", unlabelled) is ignored (255) and classes 1-150 become 0-149, as in
    the official evaluation and mmsegmentation. With False, 0 stays a class named
    ``"other"`` (151 classes). See docs/datasets.md#ade20k.

    Parameters: ``root`` and ``validate`` as every reader (:data:`pixcore.data.DatasetRoot`,
    :data:`pixcore.data.DatasetValidation`), and

    Args:
        split: ``'training'`` or ``'validation'`` (``'train'`` and ``'val'`` are accepted
            too).
        reduce_zero_label: True (the benchmark's 150-class protocol): stored 0 (``'other'``)
            -> 255 (ignored) and class c -> c - 1. False: 151 classes, 0 = ``'other'`` is a
            class.
        transform: Applied to every sample (Python only).

    """

    name = "ade20k"
    target_kinds: ClassVar[dict[str, type[TargetKind]]] = _KEYS
    ignore_index = DEFAULT_IGNORE_INDEX

    def __init__(
        self,
        root: DatasetRoot,
        split: Literal["training", "validation", "train", "val"] = "training",
        reduce_zero_label: bool = True,
        validate: DatasetValidation = "full",
        transform: Callable[[Sample], Sample] | None = None,
    ) -> None:
        folder = _ADE_SPLITS[split]  # 'train' -> 'training'
        base = Path(root).expanduser()
        if not (base / "images").is_dir() and (base / "ADEChallengeData2016" / "images").is_dir():
            base = base / "ADEChallengeData2016"
        images_dir = base / "images" / folder
        labels_dir = base / "annotations" / folder
        for directory in (images_dir, labels_dir):
            if not directory.is_dir():
                raise DatasetError(
                    f"ade20k: folder {directory} does not exist. Set `root` to the "
                    f"ADEChallengeData2016 folder, laid out as:\n{ADE20K_LAYOUT}"
                )
        records = [
            Record(stem, {"image": images_dir / name, "semseg": labels_dir / f"{stem}.png"})
            for name in sorted(os.listdir(images_dir))
            if name.lower().endswith(".jpg")
            for stem in [name[:-4]]
        ]
        if not records:
            raise DatasetError(
                f"ade20k: no .jpg image in {images_dir}. Expected layout:\n{ADE20K_LAYOUT}"
            )
        if reduce_zero_label:
            lut = np.arange(-1, 150, dtype=np.int64)
            lut[0] = DEFAULT_IGNORE_INDEX
            self.class_names = ADE20K_CLASSES
            label = ClassMaskFile(
                num_classes=150, lut=lut,
                expected="outside the ADE20K ids (0 = other, 1-150 = classes)",
                fix="use the annotation PNGs of ADEChallengeData2016 (8-bit, one id per pixel)",
            )
        else:
            self.class_names = ("other", *ADE20K_CLASSES)
            label = ClassMaskFile(
                num_classes=151,
                expected="outside the ADE20K ids (0 = other, 1-150 = classes) and not the "
                "ignore index 255",
                fix="use the annotation PNGs of ADEChallengeData2016 (8-bit, one id per pixel)",
            )
        super().__init__(
            records, {"image": ImageFile(), "semseg": label}, roots=[base],
            validate=validate, transform=transform,
            description=f"ade20k at {base} (split {folder})",
        )


# --------------------------------------------------------------------------------------
# Registration
# --------------------------------------------------------------------------------------


@pixcore.hookimpl
def pixcore_datasets() -> Iterator[pixcore.Component]:
    yield pixcore.Component(
        "voc", VOCSegmentation,
        description="Pascal VOC 2012 segmentation, 21 classes (local copy)",
    )
    yield pixcore.Component(
        "cityscapes", Cityscapes,
        description="Cityscapes fine annotations, 19 train-id classes (local copy)",
    )
    yield pixcore.Component(
        "ade20k", ADE20K,
        description="ADE20K SceneParsing, 150 classes (local copy)",
    )
