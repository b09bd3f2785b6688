"""A generic data set of images and per-pixel targets in folders, matched by file name."""

from __future__ import annotations

import glob
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pixcore._interfaces import Sample
from pixcore._targets import DEFAULT_IGNORE_INDEX
from pixcore.data._files import (
    ClassMaskFile,
    DatasetError,
    DatasetRoot,
    DatasetValidation,
    FileDataset,
    FileField,
    ImageFile,
    Record,
    ScalarFile,
    ValidityFile,
    VectorFile,
)

__all__ = ["FolderDataset", "FolderTarget"]

TargetKindName = Literal["class_mask", "scalar", "unit_vector", "validity"]

#: Options that only make sense for some kinds (the others are accepted by every kind).
_KIND_OPTIONS: dict[str, set[str]] = {
    "class_mask": {"num_classes", "ignore_index", "class_names"},
    "scalar": {"scale", "valid_key", "invalid_value", "min_value"},
    "unit_vector": {"valid_key", "flip"},
    "validity": set(),
}
_COMMON_OPTIONS = {"pattern", "kind", "required"}


class FolderTarget(BaseModel):
    """One target of a :class:`FolderDataset`: where its files are and what they hold."""

    model_config = ConfigDict(extra="forbid")

    pattern: str = Field(
        description="Glob pattern relative to the root, e.g. 'labels/*.png' or "
        "'depth/**/*.npy'. A file belongs to the image with the same relative stem."
    )
    kind: TargetKindName = Field(
        description="'class_mask' (label map of class ids), 'scalar' (depth or another "
        "value per pixel), 'unit_vector' (normal map) or 'validity' (boolean mask)."
    )
    required: bool = Field(
        default=True,
        description="False: an image without a file for this target is kept, and its sample "
        "lacks the key (and its valid_key); pixcore.data.collate then marks the batch with "
        "present/<key>. True: a missing file is a validation problem.",
    )
    num_classes: int | None = Field(
        default=None, gt=0, description="class_mask: number of classes (ids 0..num_classes-1)."
    )
    ignore_index: int = Field(
        default=DEFAULT_IGNORE_INDEX, description="class_mask: id of unlabelled pixels."
    )
    class_names: list[str] | None = Field(
        default=None, description="class_mask: class names in id order (num_classes of them)."
    )
    scale: float = Field(
        default=1.0,
        description="scalar: value = stored value * scale (0.001 for 16-bit millimetre PNGs).",
    )
    valid_key: str | None = Field(
        default=None,
        description="scalar, unit_vector: also produce a validity mask under this sample key.",
    )
    invalid_value: float | None = Field(
        default=0.0,
        description="scalar: stored value that means 'no measurement' (invalid); null: none.",
    )
    min_value: float | None = Field(
        default=0.0,
        description="scalar: smallest legal value (after scaling); full validation refuses "
        "smaller ones. null for signed quantities.",
    )
    flip: list[Literal["x", "y", "z"]] = Field(
        default_factory=list,
        description="unit_vector: components to negate after decoding, to convert to "
        "pixcore's camera frame (x right, y down, z forward).",
    )

    @model_validator(mode="after")
    def _options_fit_the_kind(self) -> FolderTarget:
        allowed = _KIND_OPTIONS[self.kind] | _COMMON_OPTIONS
        foreign = sorted(self.model_fields_set - allowed)
        if foreign:
            raise ValueError(
                f"option(s) {', '.join(foreign)} do not apply to kind {self.kind!r}; options of "
                f"{self.kind!r}: {', '.join(sorted(_KIND_OPTIONS[self.kind])) or '(none)'}"
            )
        if self.kind == "class_mask":
            if self.num_classes is None:
                raise ValueError(
                    "a class_mask target needs num_classes, e.g. "
                    "{pattern: 'labels/*.png', kind: class_mask, num_classes: 5}"
                )
            if self.class_names is not None and len(self.class_names) != self.num_classes:
                raise ValueError(
                    f"class_names has {len(self.class_names)} names but num_classes is "
                    f"{self.num_classes}"
                )
        return self


_GLOB_CHARS = set("*?[")


def _split_pattern(pattern: str) -> tuple[str, str]:
    """``"labels/**/*_gt.png"`` -> (base folder ``"labels"``, literal tail ``"_gt.png"``)."""
    parts = pattern.strip("/").split("/")
    fixed: list[str] = []
    for part in parts:
        if _GLOB_CHARS & set(part):
            break
        fixed.append(part)
    if len(fixed) == len(parts):
        raise ValueError(
            f"pattern {pattern!r} has no wildcard; use one such as 'images/*.jpg' that "
            "matches every file of the target"
        )
    last = parts[-1]
    ends = [last.rfind("*"), last.rfind("?"), last.rfind("]") if "[" in last else -1]
    return "/".join(fixed), last[max(ends) + 1 :]


def _stem(relative: str, tail: str) -> str:
    """The matching key of a file: its path below the base folder without the literal
    tail of the pattern (and without its extension when the tail does not hold one)."""
    if tail and relative.endswith(tail):
        relative = relative[: -len(tail)]
    if "." not in tail:
        head, _, name = relative.rpartition("/")
        if "." in name:
            name = name[: name.rfind(".")]
        relative = f"{head}/{name}" if head else name
    return relative


class _Matched:
    """Files of one pattern, by stem, plus the duplicate stems found."""

    def __init__(self, root: Path, pattern: str) -> None:
        self.pattern = pattern
        base, self.tail = _split_pattern(pattern)
        self.base = root / base
        self.files: dict[str, Path] = {}
        self.duplicates: list[tuple[Path, Path]] = []
        for name in sorted(glob.glob(pattern, root_dir=root, recursive=True)):
            path = root / name
            if not path.is_file():
                continue
            stem = _stem(path.relative_to(self.base).as_posix(), self.tail)
            if stem in self.files:
                self.duplicates.append((path, self.files[stem]))
            else:
                self.files[stem] = path

    def expected(self, stem: str) -> Path:
        """Where the file of ``stem`` would be (for a message about a missing one)."""
        return self.base / (stem + (self.tail if "." in self.tail else self.tail + ".*"))


class FolderDataset(FileDataset):
    """Images and targets in folders, matched by relative file stem.

    The image pattern lists the samples; every target pattern must have a file with the
    same *relative stem* for each image: the path below the pattern's fixed folder, less
    the literal text after its last wildcard (or less the extension). With
    ``image='images/*.jpg'`` and ``pattern='labels/*.png'``, ``images/a/0001.jpg`` would not
    match (use ``images/**/*.jpg`` and ``labels/**/*.png``); ``images/0001.jpg`` matches
    ``labels/0001.png``; with ``pattern='gt/*_mask.png'`` it matches ``gt/0001_mask.png``.

    Target kinds: ``class_mask`` (:class:`~pixcore.targets.ClassMask`), ``scalar``
    (:class:`~pixcore.targets.ScalarField`, optionally with a validity key), ``unit_vector``
    (:class:`~pixcore.targets.UnitVectorField`, optionally with a validity key),
    ``validity`` (:class:`~pixcore.targets.ValidityMask`). ``class_names`` and
    ``ignore_index`` come from the first class_mask target. See docs/datasets.md#folder.

    Parameters: ``root`` and ``validate`` as every reader (:data:`~pixcore.data.DatasetRoot`,
    :data:`~pixcore.data.DatasetValidation`), and

    Args:
        image: Glob pattern of the images relative to the root, e.g. ``'images/*.jpg'``.
        targets: Sample key -> target, e.g. ``{semseg: {pattern: 'labels/*.png', kind:
            class_mask, num_classes: 5}}`` (plain mappings are validated into
            :class:`FolderTarget`).
        split: Optional split name: replaces ``'{split}'`` in the patterns; patterns without
            ``'{split}'`` are then relative to ``<root>/<split>``.
        transform: Applied to every sample (Python only).

    """

    name = "folder"

    def __init__(
        self,
        root: DatasetRoot,
        image: str = "images/*",
        targets: Mapping[str, FolderTarget] | None = None,
        split: str | None = None,
        validate: DatasetValidation = "full",
        transform: Callable[[Sample], Sample] | None = None,
    ) -> None:
        targets = _as_targets(targets or {})
        self.check_params(image, targets, split)
        root_path = Path(root).expanduser()
        if not root_path.is_dir():
            raise DatasetError(
                f"folder data set: root {root_path} is not a folder; set `root` to the folder "
                f"that holds the pattern {image!r}"
            )
        patterns = {"image": image, **{k: t.pattern for k, t in targets.items()}}
        if split is not None:
            if any("{split}" in p for p in patterns.values()):
                patterns = {k: p.replace("{split}", split) for k, p in patterns.items()}
            else:
                root_path = root_path / split
                if not root_path.is_dir():
                    raise DatasetError(
                        f"folder data set: split folder {root_path} does not exist; the patterns "
                        "have no '{split}', so they are read below <root>/<split>. Existing "
                        f"folders: {_listing(root_path.parent)}"
                    )
        try:
            matched = {k: _Matched(root_path, p) for k, p in patterns.items()}
        except ValueError as error:
            raise DatasetError(f"folder data set at {root_path}: {error}") from None
        images = matched["image"]
        description = f"folder data set at {root_path}"
        if not images.files:
            raise DatasetError(
                f"{description}: no file matches the image pattern {patterns['image']!r}. "
                f"Entries of {images.base}: {_listing(images.base)}. Set `image` to a glob "
                "pattern relative to the root, e.g. 'images/*.jpg'."
            )

        fields: dict[str, FileField] = {"image": ImageFile()}
        for key, target in targets.items():
            fields[key] = _field(key, target)
        records = []
        for stem, path in images.files.items():
            files = {"image": path}
            for key, target in targets.items():
                found = matched[key].files.get(stem)
                if found is not None:
                    files[key] = found
                elif target.required:  # reported as missing by validation
                    files[key] = matched[key].expected(stem)
            records.append(Record(stem, files))
        self._matched = matched
        first_mask = next((t for t in targets.values() if t.kind == "class_mask"), None)
        if first_mask is not None:
            assert first_mask.num_classes is not None
            self.class_names = tuple(
                first_mask.class_names or [f"class_{i}" for i in range(first_mask.num_classes)]
            )
            self.ignore_index = first_mask.ignore_index
        super().__init__(
            records,
            fields,
            roots=[root_path],
            validate=validate,
            description=description,
            transform=transform,
        )

    @staticmethod
    def check_params(
        image: str, targets: Mapping[str, FolderTarget] | None, split: str | None
    ) -> None:
        """Every sample key is produced once, and a ``'{split}'`` pattern has a split."""
        produced: dict[str, str] = {"image": "the image"}
        for key, target in (targets or {}).items():
            extra = target.valid_key if target.kind in ("scalar", "unit_vector") else None
            for out in (key, extra):
                if out is None:
                    continue
                if out in produced:
                    raise ValueError(
                        f"sample key {out!r} (from target {key!r}) is also produced by "
                        f"{produced[out]}; give every key its own name"
                    )
                produced[out] = f"target {key!r}"
        patterns = [image, *(t.pattern for t in (targets or {}).values())]
        if split is None and any("{split}" in p for p in patterns):
            raise ValueError("a pattern contains '{split}' but no split is given; set `split`")

    def missing_message(self, field_name: str, record: Record) -> str:
        pattern = self._matched[field_name].pattern
        return (
            f"missing: image {self.relative(record.files['image'])} has no file matching "
            f"{pattern!r} with stem {record.name!r}; add it, or fix the pattern"
        )

    def layout_problems(self) -> list[tuple[Path | None, str]]:
        out: list[tuple[Path | None, str]] = []
        images = self._matched["image"].files
        for key, match in self._matched.items():
            for path, first in match.duplicates:
                out.append(
                    (path, f"has the same stem as {self.relative(first)} (both match "
                     f"{match.pattern!r}); rename one, or narrow the pattern")
                )
            if key == "image":
                continue
            for stem, path in match.files.items():
                if stem not in images:
                    out.append(
                        (path, f"matches the {key!r} pattern {match.pattern!r} but no image has "
                         f"the stem {stem!r}; rename it to match its image, or narrow the pattern")
                    )
        return out


def _as_targets(targets: Mapping[str, FolderTarget | Mapping[str, Any]]) -> dict[str, FolderTarget]:
    """The targets as :class:`FolderTarget` (a Python caller may pass plain mappings)."""
    try:
        return {
            key: value if isinstance(value, FolderTarget) else FolderTarget.model_validate(value)
            for key, value in targets.items()
        }
    except ValidationError as error:
        raise ValueError(f"invalid folder data set parameters:\n{error}") from None


def _field(key: str, target: FolderTarget) -> FileField:
    if target.kind == "class_mask":
        assert target.num_classes is not None
        n, ignore = target.num_classes, target.ignore_index
        return ClassMaskFile(
            key=key, num_classes=n, ignore_index=ignore,
            fix=f"fix the mask (class ids 0-{n - 1}, {ignore} for unlabelled pixels), or set "
            f"targets.{key}.num_classes and targets.{key}.ignore_index to what the files hold",
        )
    if target.kind == "scalar":
        return ScalarFile(
            key=key, valid_key=target.valid_key, integer_scale=target.scale,
            float_scale=target.scale, invalid_value=target.invalid_value,
            min_value=target.min_value, allow_8bit=True, what=f"{key} map",
        )
    if target.kind == "unit_vector":
        return VectorFile(key=key, valid_key=target.valid_key, flip=tuple(target.flip))
    return ValidityFile(key=key)


def _listing(folder: Path, limit: int = 10) -> str:
    try:
        names = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir())
    except OSError:
        return f"(cannot list {folder}: it does not exist)"
    if not names:
        return "(empty)"
    more = f", ... ({len(names) - limit} more)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more
