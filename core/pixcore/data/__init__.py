"""Data sets shipped with pixcore."""

from pixcore.data._collate import collate as collate
from pixcore.data._files import MAX_REPORTED_PROBLEMS as MAX_REPORTED_PROBLEMS
from pixcore.data._files import ClassMaskFile as ClassMaskFile
from pixcore.data._files import DatasetError as DatasetError
from pixcore.data._files import DatasetRoot as DatasetRoot
from pixcore.data._files import DatasetValidation as DatasetValidation
from pixcore.data._files import DirectoryIndex as DirectoryIndex
from pixcore.data._files import FileDataset as FileDataset
from pixcore.data._files import FileField as FileField
from pixcore.data._files import FileFormatError as FileFormatError
from pixcore.data._files import ImageFile as ImageFile
from pixcore.data._files import ImageTooLargeError as ImageTooLargeError
from pixcore.data._files import Record as Record
from pixcore.data._files import ScalarFile as ScalarFile
from pixcore.data._files import ValidateMode as ValidateMode
from pixcore.data._files import ValidityFile as ValidityFile
from pixcore.data._files import VectorFile as VectorFile
from pixcore.data._files import class_id_problem as class_id_problem
from pixcore.data._files import file_size as file_size
from pixcore.data._files import illegal_class_ids as illegal_class_ids
from pixcore.data._files import pillow_accepts as pillow_accepts
from pixcore.data._files import pillow_max_pixels as pillow_max_pixels
from pixcore.data._files import read_image as read_image
from pixcore.data._files import read_label as read_label
from pixcore.data._files import read_scalar as read_scalar
from pixcore.data._files import read_vectors as read_vectors
from pixcore.data._files import verify_image as verify_image
from pixcore.data._folder import FolderDataset as FolderDataset
from pixcore.data._folder import FolderTarget as FolderTarget
from pixcore.data._shards import ShardDataset as ShardDataset
from pixcore.data._shardwrite import WrittenShards as WrittenShards
from pixcore.data._shardwrite import write_shards as write_shards
from pixcore.data._synthetic import CLASS_NAMES as CLASS_NAMES
from pixcore.data._synthetic import RenderedScene as RenderedScene
from pixcore.data._synthetic import SceneDescription as SceneDescription
from pixcore.data._synthetic import SyntheticScenes as SyntheticScenes
from pixcore.data._synthetic import render_scene as render_scene

__all__ = [
    "CLASS_NAMES",
    "ClassMaskFile",
    "DatasetError",
    "DatasetRoot",
    "DatasetValidation",
    "DirectoryIndex",
    "FileDataset",
    "FileField",
    "FileFormatError",
    "FolderDataset",
    "FolderTarget",
    "ImageFile",
    "ImageTooLargeError",
    "MAX_REPORTED_PROBLEMS",
    "Record",
    "RenderedScene",
    "ScalarFile",
    "SceneDescription",
    "ShardDataset",
    "SyntheticScenes",
    "ValidateMode",
    "ValidityFile",
    "VectorFile",
    "WrittenShards",
    "class_id_problem",
    "collate",
    "file_size",
    "illegal_class_ids",
    "pillow_accepts",
    "pillow_max_pixels",
    "read_image",
    "read_label",
    "read_scalar",
    "read_vectors",
    "render_scene",
    "verify_image",
    "write_shards",
]
