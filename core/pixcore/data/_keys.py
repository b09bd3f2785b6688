"""Do the data sets carry what the tasks read? Checked when the loaders are built.

A task reads its target from ``task.target_key`` and, unless ``valid_key`` is None, a
validity mask from ``task.valid_key``. A data set declares its sample keys and their
kinds in ``target_kinds``; a mismatch is reported before the first step, naming both
sides and the fix, instead of as a ``KeyError`` in the middle of the first batch. A data
set that declares no ``target_kinds`` (an empty mapping, or none at all, such as a
``torch.utils.data.ConcatDataset``) is not checked.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping

from pixcore._errors import ConfigError
from pixcore._interfaces import Task
from pixcore._targets import TargetKind, ValidityMask

__all__ = ["check_data_keys"]


def check_data_keys(
    dataset: object, tasks: Mapping[str, Task], *, where: str, tasks_path: str = "model.tasks"
) -> None:
    """Raise :class:`ConfigError` unless ``dataset`` declares every key the ``tasks`` read.

    Each task's ``target_key`` must be declared with the task's ``target_kind`` (or a
    subclass), and its ``valid_key`` (unless None) with a
    :class:`~pixcore.targets.ValidityMask`. Every problem of every task is reported at once.

    Args:
        dataset: The data set; its ``target_kinds`` (key -> target kind) is compared.
        tasks: Output name -> task, as in ``model.tasks``.
        where: Config path of the data set (``"data.train"``), for the message.
        tasks_path: Config path of the tasks, for the message.

    """
    kinds = getattr(dataset, "target_kinds", None)
    if not isinstance(kinds, Mapping) or not kinds:
        return
    problems = [
        problem
        for name, task in tasks.items()
        for problem in _task_problems(kinds, task, f"{tasks_path}.{name}")
    ]
    if problems:
        raise ConfigError(
            f"{where}: the data set {type(dataset).__name__} does not carry what the tasks read "
            f"(its keys: {_listing(kinds)}):\n  " + "\n  ".join(problems)
        )


def _task_problems(kinds: Mapping[str, object], task: Task, path: str) -> list[str]:
    what = f"{path} ({type(task).__name__})"
    problems: list[str] = []
    target = _key_problem(kinds, task.target_key, task.target_kind, f"{what} reads its target")
    if target:
        hint = _suggestion(kinds, task.target_key, task.target_kind)
        problems.append(
            f"{target} Set the task's `target_key` ({path}.params.target_key{hint}) or rename "
            "the data set's key."
        )
    if task.valid_key is not None:
        valid = _key_problem(kinds, task.valid_key, ValidityMask, f"{what} reads its validity mask")
        if valid:
            hint = _suggestion(kinds, task.valid_key, ValidityMask)
            problems.append(
                f"{valid} Set the task's `valid_key` ({path}.params.valid_key{hint}, or null: "
                "every pixel with a target counts) or rename the data set's key."
            )
    return problems


def _key_problem(
    kinds: Mapping[str, object], key: str, wanted: type[TargetKind], reading: str
) -> str | None:
    """What is wrong with ``key`` (absent, or of another kind than ``wanted``); None if fine."""
    if key not in kinds:
        return f"{reading} from key {key!r}, which the data set does not have."
    declared = kinds[key]
    if isinstance(declared, type) and issubclass(declared, wanted):
        return None
    return (
        f"{reading} from key {key!r}, a {_kind_name(declared)} in the data set, but it needs a "
        f"{_kind_name(wanted)}."
    )


def _suggestion(kinds: Mapping[str, object], key: str, wanted: type[TargetKind]) -> str:
    """``": <key>"`` for the data set's key of the wanted kind closest to ``key``, or ``""``."""
    fitting = [k for k, v in kinds.items() if isinstance(v, type) and issubclass(v, wanted)]
    if not fitting:
        return ""
    close = difflib.get_close_matches(key, fitting, n=1, cutoff=0.0)
    return f": {close[0] if close else fitting[0]}"


def _kind_name(kind: object) -> str:
    return str(getattr(kind, "kind", kind))


def _listing(kinds: Mapping[str, object]) -> str:
    return ", ".join(f"{key} ({_kind_name(kind)})" for key, kind in sorted(kinds.items()))
