"""The plan of a sweep (``DIR/sweep.json``): its config, grid, seeds and members.

The plan is what makes a sweep resumable and safe to re-run. It is written before the
first member starts; the same command run again finds it and goes on. A command whose
grid differs is refused, naming the difference, unless it only adds to the grid (more
values of a swept key, more seeds): then the new members are appended, and the folders
and indices of the existing ones stay as they were (``--member I`` of a job array keeps
meaning the same run).

Every member's config is validated before the plan is written: the structure with
:func:`pixcore.load_config` (unknown keys, bad values), then the registry names of its
components and its tasks' parameters, so that a typo fails the command at once and not
hours later in one member.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pixcore._errors import ConfigError, PixcoreError
from pixcore.sweep._grid import SEED_KEY, Axis, folder_name, parse_axes

if TYPE_CHECKING:
    from pixcore._config import RunConfig
    from pixcore.plugin._manager import PluginManager

__all__ = ["PLAN_FILE", "Member", "Setting", "SweepPlan", "load_plan", "plan_sweep"]

#: The plan's file name inside a sweep folder.
PLAN_FILE = "sweep.json"
_FORMAT = 1

#: A setting: ``((key, value), ...)`` in the order of the plan's axes, values as written.
Setting = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Member:
    """One run of a sweep: a setting and a seed, trained in ``DIR/<name>``."""

    index: int
    name: str
    setting: Setting
    seed: int

    @property
    def overrides(self) -> list[str]:
        """The ``--set`` values of its ``pixcore train`` command, the seed last."""
        return [f"{key}={value}" for key, value in self.setting] + [f"{SEED_KEY}={self.seed}"]


@dataclass(frozen=True)
class SweepPlan:
    """A sweep's config, grid and members; :meth:`save` writes it to ``out/sweep.json``.

    ``baseline`` and ``metrics`` are the comparison's defaults (``--baseline``,
    ``--metric``), kept so that ``pixcore sweep --compare DIR`` repeats the same table.
    """

    out: Path
    config: Path
    config_sha256: str
    axes: tuple[Axis, ...]
    seeds: tuple[int, ...]
    members: tuple[Member, ...]
    baseline: dict[str, str] | None = field(default=None, compare=False)
    metrics: tuple[str, ...] | None = field(default=None, compare=False)

    def folder(self, member: Member) -> Path:
        """The member's run folder."""
        return self.out / member.name

    def settings(self) -> list[Setting]:
        """The distinct settings, in the order of the members."""
        return list(dict.fromkeys(member.setting for member in self.members))

    def member(self, index: int) -> Member:
        """Member ``index`` (``--member``); raises :class:`ConfigError` if there is none."""
        if not 0 <= index < len(self.members):
            raise ConfigError(f"--member {index}: the sweep in {self.out} has members 0 to {len(self.members) - 1} "
                              f"(`pixcore sweep ... --plan` lists them)")
        return self.members[index]

    def train_command(self, member: Member, executable: Sequence[str] = ("pixcore",)) -> list[str]:
        """The ``pixcore train`` command of a new run of ``member``."""
        sets = [arg for override in member.overrides for arg in ("--set", override)]
        return [*executable, "train", str(self.config), "--out", str(self.folder(member)), *sets]

    def command_line(self) -> str:
        """The ``pixcore sweep`` command that makes this plan (for messages and docs)."""
        sets = " ".join("--set " + shlex.quote(f"{axis.key}={','.join(axis.values)}") for axis in self.axes)
        seeds = f"--seeds {len(self.seeds)}" if self.seeds == tuple(range(len(self.seeds))) else (
            f"(seeds {', '.join(map(str, self.seeds))})")
        return " ".join(part for part in ("pixcore sweep", shlex.quote(str(self.config)), sets, seeds,
                                          "--out", shlex.quote(str(self.out))) if part)

    def to_json(self) -> dict[str, Any]:
        """The content of ``sweep.json``."""
        return {
            "format": _FORMAT,
            "config": str(self.config),
            "config_sha256": self.config_sha256,
            "seed_key": SEED_KEY,
            "axes": [{"key": axis.key, "values": list(axis.values)} for axis in self.axes],
            "seeds": list(self.seeds),
            "members": [
                {"index": m.index, "folder": m.name, "setting": dict(m.setting), "seed": m.seed,
                 "overrides": m.overrides}
                for m in self.members
            ],
            "compare": {"baseline": self.baseline, "metrics": None if self.metrics is None else list(self.metrics)},
        }

    def save(self) -> Path:
        """Write ``out/sweep.json`` atomically (a killed write leaves the previous plan)."""
        self.out.mkdir(parents=True, exist_ok=True)
        path = self.out / PLAN_FILE
        temporary = path.with_name(f".{PLAN_FILE}.tmp-{os.getpid()}")
        temporary.write_text(json.dumps(self.to_json(), indent=2) + "\n", encoding="utf-8")
        os.replace(temporary, path)
        return path


def load_plan(out: str | Path) -> SweepPlan:
    """Read the plan of the sweep in ``out``; raises :class:`PixcoreError` if it has none or it is damaged."""
    out = Path(out)
    path = out / PLAN_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PixcoreError(f"{out} holds no sweep ({PLAN_FILE} is missing); `pixcore sweep CONFIG --set KEY=A,B "
                           f"--out {out}` makes one") from None
    except (OSError, ValueError) as error:
        raise PixcoreError(f"cannot read {path}: {error}. It is written by `pixcore sweep`; restore it, or start "
                           "the sweep in another --out folder") from None
    try:
        return _from_json(data, out)
    except (KeyError, TypeError, ValueError) as error:
        raise PixcoreError(f"{path} is not a plan this version of pixcore reads ({type(error).__name__}: {error}); "
                           "start the sweep in another --out folder") from None


def _from_json(data: Mapping[str, Any], out: Path) -> SweepPlan:
    if data["format"] != _FORMAT or data["seed_key"] != SEED_KEY:
        raise ValueError(f"format {data['format']}, seed key {data['seed_key']}")
    axes = tuple(Axis(axis["key"], tuple(str(v) for v in axis["values"])) for axis in data["axes"])
    members = tuple(
        Member(int(m["index"]), str(m["folder"]), tuple((str(k), str(v)) for k, v in m["setting"].items()),
               int(m["seed"]))
        for m in data["members"]
    )
    compare = data.get("compare") or {}
    metrics = compare.get("metrics")
    return SweepPlan(out, Path(data["config"]), str(data["config_sha256"]), axes, tuple(int(s) for s in data["seeds"]),
                     members, compare.get("baseline"), None if metrics is None else tuple(metrics))


def _as_axes(settings: Sequence[str] | Mapping[str, Sequence[Any]]) -> tuple[Axis, ...]:
    """``["key=a,b", ...]`` (the command line) or ``{key: [a, b]}`` (Python; non-text values as JSON)."""
    if isinstance(settings, str):
        settings = [settings]
    if isinstance(settings, Mapping):
        items = []
        for key, values in settings.items():
            if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
                raise ConfigError(f"settings[{key!r}]: expected a list of values, got {values!r}")
            texts = [value if isinstance(value, str) else json.dumps(value) for value in values]
            if any("," in text and not text.startswith(("[", "{", "'", '"')) for text in texts):
                raise ConfigError(f"settings[{key!r}]: a text value holds a comma; quote it, e.g. '\"a,b\"'")
            items.append(f"{key}={','.join(texts)}")
        settings = items
    return parse_axes(list(settings))


def _as_seeds(seeds: int | Sequence[int]) -> tuple[int, ...]:
    if isinstance(seeds, int):
        if seeds < 1:
            raise ConfigError(f"--seeds {seeds}: give the number of seeds, at least 1 (seeds 0 to N-1 are run)")
        return tuple(range(seeds))
    found = tuple(int(seed) for seed in seeds)
    if not found or len(set(found)) != len(found) or min(found) < 0:
        raise ConfigError(f"seeds {list(seeds)}: give distinct seeds >= 0, at least one")
    return found


def _grow(axes: Sequence[Axis], seeds: Sequence[int], existing: Sequence[Member]) -> tuple[Member, ...]:
    """``existing`` members, then the grid's other members in grid order (a setting's seeds together)."""
    members = list(existing)
    have = {(m.setting, m.seed) for m in members}
    taken = {m.name for m in members}
    for values in itertools.product(*(axis.values for axis in axes)):
        setting = tuple(zip((axis.key for axis in axes), values, strict=True))
        for seed in seeds:
            if (setting, seed) not in have:
                name = folder_name(setting, seed, frozenset(taken))
                taken.add(name)
                members.append(Member(len(members), name, setting, seed))
    return tuple(members)


def _merge(old: SweepPlan, new: SweepPlan) -> tuple[SweepPlan, list[str]]:
    """The plan in the folder grown by ``new``'s additions; raises if ``new`` changes or drops anything."""
    problems: list[str] = []
    if old.config_sha256 != new.config_sha256:
        problems.append(f"the config differs: {new.config} (sha256 {new.config_sha256[:12]}) is not the file the plan "
                        f"was made from, {old.config} (sha256 {old.config_sha256[:12]})")
    old_keys, new_keys = [a.key for a in old.axes], [a.key for a in new.axes]
    if set(old_keys) != set(new_keys):
        problems.append(f"the plan sweeps {', '.join(old_keys) or 'no key'}; this command sweeps "
                        f"{', '.join(new_keys) or 'no key'}")
    requested = {axis.key: axis.values for axis in new.axes}
    for axis in old.axes:
        dropped = [value for value in axis.values if value not in requested.get(axis.key, axis.values)]
        if dropped:
            problems.append(f"{axis.key}: the plan has {', '.join(dropped)}, which this command leaves out")
    dropped_seeds = [seed for seed in old.seeds if seed not in new.seeds]
    if dropped_seeds:
        problems.append(f"the plan has seeds {', '.join(map(str, old.seeds))}; this command has "
                        f"{', '.join(map(str, new.seeds))}")
    if problems:
        raise ConfigError(
            f"{old.out} holds another sweep ({PLAN_FILE}): " + "; ".join(problems) + ". A sweep folder holds one "
            f"grid, which may only grow (more values of its keys, more seeds): run its command "
            f"(`{old.command_line()}`) or one that adds to it, or choose another --out"
        )
    axes = tuple(Axis(a.key, a.values + tuple(v for v in requested[a.key] if v not in a.values)) for a in old.axes)
    seeds = old.seeds + tuple(seed for seed in new.seeds if seed not in old.seeds)
    grown = replace(old, config=new.config, axes=axes, seeds=seeds, members=_grow(axes, seeds, old.members))
    changes = [f"{a.key} + {', '.join(a.values[len(b.values):])}" for a, b in zip(axes, old.axes, strict=True)
               if len(a.values) > len(b.values)]
    if len(seeds) > len(old.seeds):
        changes.append(f"seeds + {', '.join(map(str, seeds[len(old.seeds):]))}")
    return grown, changes


def _component_names(config: RunConfig) -> list[tuple[str, str, str]]:
    """``(family, name, config path)`` of every component a run config names, tasks aside."""
    found = [("backbones", config.model.backbone.name, "model.backbone"),
             ("weightings", config.model.weighting.name, "model.weighting"),
             ("datasets", config.data.train.name, "data.train")]
    if config.data.val is not None:
        found.append(("datasets", config.data.val.name, "data.val"))
    found += [("augmentations", a.name, f"data.augmentations.{i}") for i, a in enumerate(config.data.augmentations)]
    for key, task in config.model.tasks.items():
        where = f"model.tasks.{key}"
        if task.head is not None:
            found.append(("heads", task.head.name, f"{where}.head"))
        if task.loss is not None:
            found.append(("losses", task.loss.name, f"{where}.loss"))
        found += [("metrics", m.name, f"{where}.metrics.{i}") for i, m in enumerate(task.metrics or [])]
    return found


def _check_components(config: RunConfig, manager: PluginManager | None) -> None:
    """Registry names resolve, tasks accept their parameters (nothing is built but the tasks) and the
    recipe fits the pretrained weights (``pixcore train`` checks that before building anything)."""
    from pixcore._errors import UnknownComponentError
    from pixcore.model._compose import build_tasks
    from pixcore.plugin._manager import get_plugin_manager
    from pixcore.train._pretrained import check_recipe

    check_recipe(config)

    manager = manager or get_plugin_manager()
    for family, name, where in _component_names(config):
        try:
            manager.registry(family).get(name)
        except UnknownComponentError as error:
            raise UnknownComponentError(family, name, f"{where}: {error}") from None
    build_tasks(config.model, manager=manager)


def _prefixed(error: PixcoreError, prefix: str) -> PixcoreError:
    """The same error, its message prefixed (which member it is about)."""
    from pixcore._errors import UnknownComponentError

    if isinstance(error, UnknownComponentError):
        return UnknownComponentError(error.family, error.name, f"{prefix}{error}")
    try:
        return type(error)(f"{prefix}{error}")
    except TypeError:  # an error type with other arguments
        return ConfigError(f"{prefix}{error}")


def _validate(config: Path, members: Sequence[Member], manager: PluginManager | None) -> RunConfig:
    """Load every member's config and check each distinct setting's components once; the first member's config."""
    from pixcore._config import load_config

    checked: set[Setting] = set()
    first: RunConfig | None = None
    for member in members:
        try:
            run = load_config(config, member.overrides)
            if run.data.val is None:
                raise ConfigError(f"{config}: data.val is not set, so the members would have no metrics to "
                                  "compare; add held-out data (data.val) to the config")
            if member.setting not in checked:
                _check_components(run, manager)
                checked.add(member.setting)
        except PixcoreError as error:
            sets = " ".join(f"--set {shlex.quote(o)}" for o in member.overrides[:-1]) or "no --set"
            raise _prefixed(error, f"sweep member {member.name} ({sets}): ") from None
        first = first or run
    assert first is not None  # a grid has at least one member
    return first


def plan_sweep(
    config: str | Path,
    settings: Sequence[str] | Mapping[str, Sequence[Any]] = (),
    *,
    seeds: int | Sequence[int] = 1,
    out: str | Path,
    baseline: Mapping[str, str] | None = None,
    metrics: Sequence[str] | None = None,
    manager: PluginManager | None = None,
) -> SweepPlan:
    """Validate a sweep and write (or grow) its plan, ``out/sweep.json``; nothing is trained.

    Args:
        config: The run config every member starts from (YAML or JSON).
        settings: ``["trainer.lr=0.01,0.001", ...]`` as on the command line, or
            ``{"trainer.lr": [0.01, 0.001]}``; every combination is a setting.
        seeds: How many seeds (0 to N-1) or which seeds each setting runs with; they go
            to ``trainer.seed``.
        out: The sweep folder; each member trains in ``out/<member name>``.
        baseline: The comparison's default baseline setting, ``{key: value}``.
        metrics: The comparison's default metrics, ``["task/key", ...]``.
        manager: The plugin manager whose registries check component names.

    Raises:
        ConfigError: Bad ``settings`` syntax, a member config that does not validate, or
            a folder that holds another sweep (the message names the difference).

    """
    from pixcore.sweep._compare import baseline_setting, check_metric_names

    config = Path(config)
    try:
        text = config.read_bytes()
    except OSError as error:
        raise ConfigError(f"cannot read config file {config}: {error.strerror}") from None
    axes, seed_list, out = _as_axes(settings), _as_seeds(seeds), Path(out)
    requested = SweepPlan(out, config.resolve(), hashlib.sha256(text).hexdigest(), axes, seed_list,
                          _grow(axes, seed_list, ()))
    old = load_plan(out) if (out / PLAN_FILE).exists() else None
    plan, changes = (requested, []) if old is None else _merge(old, requested)
    first = _validate(config, requested.members, manager)
    if baseline is not None:
        baseline_setting(plan, baseline)  # names a setting of the grid, or raises
    if metrics is not None:
        check_metric_names(metrics, list(first.model.tasks))
    plan = replace(plan, baseline=plan.baseline if baseline is None else dict(baseline),
                   metrics=plan.metrics if metrics is None else tuple(metrics))
    if old is not None and changes:
        print(f"pixcore sweep: the grid in {out} grows ({'; '.join(changes)}): "
              f"{len(plan.members) - len(old.members)} new members", flush=True)
    if old is None or plan.to_json() != old.to_json():
        plan.save()
    return plan
