"""Plugin loading through real entry points of fake installed distributions.

Each test writes a plugin module and a ``<name>-<version>.dist-info/`` folder (METADATA and
entry_points.txt) into ``tmp_path`` and puts ``tmp_path`` on ``sys.path``: that is exactly
what an installed distribution looks like to :mod:`importlib.metadata`. Entry points of
distributions installed in the environment (the real plugins) are filtered out, so the
tests see only their own fakes while still going through real entry-point discovery.
"""

from __future__ import annotations

import importlib.metadata
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pixcore
import pluggy
import pytest
from pixcore.plugin import _manager as _plugins

HEAD_PLUGIN = """
import pixcore

class {cls}(pixcore.Head):
    def __init__(self, in_features: list, out_channels: int, width: int = 4) -> None:
        super().__init__()
        self.width = width

    def forward(self, features, size):
        raise NotImplementedError

@pixcore.hookimpl
def pixcore_heads():
    yield pixcore.Component({name!r}, {cls}, description="a fake head")
"""

BROKEN_PLUGIN = """
raise ImportError("needs libfoo.so, which is not installed")
"""


class FakeSite:
    """Writes fake installed distributions into one directory on ``sys.path``."""

    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.root = root
        self.modules: list[str] = []
        monkeypatch.syspath_prepend(str(root))
        real = importlib.metadata.entry_points

        def only_fakes(**selection: str) -> importlib.metadata.EntryPoints:
            found = real(**selection)
            return importlib.metadata.EntryPoints(
                ep for ep in found if ep.dist is not None and self._is_fake(ep.dist)
            )

        monkeypatch.setattr(_plugins.importlib.metadata, "entry_points", only_fakes)

    def _is_fake(self, dist: importlib.metadata.Distribution) -> bool:
        return Path(str(dist.locate_file(""))).resolve() == self.root.resolve()

    def add(
        self, dist_name: str, version: str, entry_points: dict[str, str], modules: dict[str, str]
    ) -> None:
        for module, source in modules.items():
            (self.root / f"{module}.py").write_text(textwrap.dedent(source), encoding="utf-8")
            self.modules.append(module)
        info = self.root / f"{dist_name.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: {dist_name}\nVersion: {version}\n", encoding="utf-8"
        )
        lines = "".join(f"{name} = {target}\n" for name, target in entry_points.items())
        (info / "entry_points.txt").write_text(f"[pixcore]\n{lines}", encoding="utf-8")

    def add_head_plugin(self, dist_name: str, module: str, head: str, version: str = "1.0") -> None:
        source = HEAD_PLUGIN.format(cls="FakeHead", name=head)
        self.add(dist_name, version, {module: module}, {module: source})


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeSite]:
    fake = FakeSite(tmp_path, monkeypatch)
    yield fake
    for module in fake.modules:
        sys.modules.pop(module, None)


def info_of(manager: pixcore.PluginManager, name: str) -> pixcore.PluginInfo:
    matches = [p for p in manager.plugins() if p.name == name]
    assert len(matches) == 1, [p.name for p in manager.plugins()]
    return matches[0]


# -- autoload ----------------------------------------------------------------------------


def test_fake_distribution_is_autoloaded(site: FakeSite) -> None:
    site.add_head_plugin("pixcore-fakehead", "fakehead_plugin", "fake_head", version="1.2.3")
    manager = pixcore.PluginManager()
    head = manager.registry("heads").get("fake_head")
    assert head.distribution == "pixcore-fakehead 1.2.3"
    info = info_of(manager, "fakehead_plugin")
    assert (info.distribution, info.version, info.status) == ("pixcore-fakehead", "1.2.3", "loaded")
    assert info.error is None
    assert info.registered == {"heads": ["fake_head"]}
    # The plugin's own parameters are validated from its signature.
    with pytest.raises(pixcore.ConfigError, match="p.width"):
        manager.registry("heads").validate("fake_head", {"width": "wide"}, path="p")


def test_entry_point_can_name_an_object_in_a_module(site: FakeSite) -> None:
    source = """
    import pixcore

    class Plugin:
        @pixcore.hookimpl
        def pixcore_augmentations(self):
            yield pixcore.Component("fake_aug", dict)

    plugin = Plugin()
    """
    site.add("pixcore-objplugin", "0.1", {"objplug": "objplug_mod:plugin"}, {"objplug_mod": source})
    manager = pixcore.PluginManager()
    assert "fake_aug" in manager.registry("augmentations")
    assert info_of(manager, "objplug").registered == {"augmentations": ["fake_aug"]}


def test_autoload_can_be_disabled_by_env(site: FakeSite, monkeypatch: pytest.MonkeyPatch) -> None:
    site.add_head_plugin("pixcore-fakehead", "fakehead_plugin", "fake_head")
    monkeypatch.setenv("PIXCORE_DISABLE_PLUGIN_AUTOLOAD", "1")
    manager = pixcore.PluginManager()
    assert "fake_head" not in manager.registry("heads")
    assert [p.name for p in manager.plugins()] == ["pixcore"]
    assert "fpn" in manager.registry("heads")  # built-ins still load
    # An explicit argument beats the environment.
    assert "fake_head" in pixcore.PluginManager(autoload=True).registry("heads")


def test_autoload_false_loads_no_entry_points(site: FakeSite) -> None:
    site.add_head_plugin("pixcore-fakehead", "fakehead_plugin", "fake_head")
    manager = pixcore.PluginManager(autoload=False)
    assert "fake_head" not in manager.registry("heads")
    manager.load_entrypoints()  # explicit loading later still works
    assert "fake_head" in manager.registry("heads")


def test_block_env_blocks_one_plugin(site: FakeSite, monkeypatch: pytest.MonkeyPatch) -> None:
    site.add_head_plugin("pixcore-fake-a", "fake_a_plugin", "head_a")
    site.add_head_plugin("pixcore-fake-b", "fake_b_plugin", "head_b")
    monkeypatch.setenv("PIXCORE_BLOCK_PLUGINS", " fake_a_plugin , unrelated")
    manager = pixcore.PluginManager()
    heads = manager.registry("heads")
    assert "head_a" not in heads and "head_b" in heads
    blocked = info_of(manager, "fake_a_plugin")
    assert blocked.status == "blocked" and blocked.registered == {}
    assert "fake_a_plugin" not in sys.modules  # a blocked plugin is not even imported
    assert info_of(manager, "fake_b_plugin").status == "loaded"


# -- failing plugins ---------------------------------------------------------------------


def test_broken_plugin_is_warned_about_by_name_and_skipped(site: FakeSite) -> None:
    site.add("pixcore-broken", "0.3", {"broken_plugin": "broken_mod"}, {"broken_mod": BROKEN_PLUGIN})
    site.add_head_plugin("pixcore-fakehead", "fakehead_plugin", "fake_head")
    with pytest.warns(pixcore.PluginLoadWarning) as record:
        manager = pixcore.PluginManager()
    assert len(record) == 1
    message = str(record[0].message)
    assert "'broken_plugin'" in message and "pixcore-broken" in message
    assert "ImportError: needs libfoo.so" in message
    assert "PIXCORE_BLOCK_PLUGINS=broken_plugin" in message  # says how to get rid of it
    info = info_of(manager, "broken_plugin")
    assert info.status == "failed" and "libfoo" in (info.error or "")
    assert "fake_head" in manager.registry("heads")  # the others still load


def test_broken_plugin_raises_in_strict_mode(site: FakeSite) -> None:
    site.add("pixcore-broken", "0.3", {"broken_plugin": "broken_mod"}, {"broken_mod": BROKEN_PLUGIN})
    with pytest.raises(pixcore.PluginLoadError, match="broken_plugin.*libfoo") as info:
        pixcore.PluginManager(strict=True)
    assert isinstance(info.value.__cause__, ImportError)
    message = str(info.value)
    assert "pixcore plugin 'broken_plugin' (distribution pixcore-broken 0.3) failed to load: " in message
    assert "was skipped" not in message  # it raised: nothing was skipped
    assert "PIXCORE_BLOCK_PLUGINS=broken_plugin" in message
    assert "unset PIXCORE_STRICT_PLUGINS to skip a plugin that fails" in message


def test_strict_mode_from_env(site: FakeSite, monkeypatch: pytest.MonkeyPatch) -> None:
    site.add("pixcore-broken", "0.3", {"broken_plugin": "broken_mod"}, {"broken_mod": BROKEN_PLUGIN})
    monkeypatch.setenv("PIXCORE_STRICT_PLUGINS", "1")
    with pytest.raises(pixcore.PluginLoadError, match="broken_plugin"):
        pixcore.PluginManager()
    # An explicit argument beats the environment.
    with pytest.warns(pixcore.PluginLoadWarning, match="broken_plugin"):
        pixcore.PluginManager(strict=False)


def test_duplicate_across_distributions_names_both(site: FakeSite) -> None:
    site.add_head_plugin("pixcore-fake-a", "fake_a_plugin", "same_head", version="1.0")
    site.add_head_plugin("pixcore-fake-b", "fake_b_plugin", "same_head", version="2.0")
    manager = pixcore.PluginManager()
    with pytest.raises(pixcore.DuplicateComponentError) as info:
        manager.registry("heads")
    message = str(info.value)
    assert "'same_head'" in message
    assert "pixcore-fake-a 1.0" in message and "pixcore-fake-b 2.0" in message


def test_listing_shows_clashing_plugins_with_their_own_status(site: FakeSite) -> None:
    site.add_head_plugin("pixcore-fake-a", "fake_a_plugin", "same_head", version="1.0")
    site.add_head_plugin("pixcore-fake-b", "fake_b_plugin", "same_head", version="2.0")
    site.add_head_plugin("pixcore-fake-c", "fake_c_plugin", "own_head", version="3.0")
    manager = pixcore.PluginManager()
    first, second = info_of(manager, "fake_a_plugin"), info_of(manager, "fake_b_plugin")
    assert (first.status, second.status) == ("clash", "clash")
    for info in (first, second):
        error = info.error or ""
        assert "'same_head'" in error and "pixcore-fake-a 1.0" in error and "pixcore-fake-b 2.0" in error
    assert first.registered == {"heads": ["same_head"]} and second.registered == {}
    # Plugins not involved (the built-ins included, whose name is part of every other's) stay loaded.
    for name in ("fake_c_plugin", "pixcore"):
        assert (info_of(manager, name).status, info_of(manager, name).error) == ("loaded", None)
    assert info_of(manager, "fake_c_plugin").registered == {"heads": ["own_head"]}
    with pytest.raises(pixcore.DuplicateComponentError):
        manager.registry("heads")  # using the registries still fails


def test_a_resolved_clash_is_listed_as_loaded_again(site: FakeSite) -> None:
    site.add_head_plugin("pixcore-fake-a", "fake_a_plugin", "same_head")
    site.add_head_plugin("pixcore-fake-b", "fake_b_plugin", "same_head")
    manager = pixcore.PluginManager()
    assert info_of(manager, "fake_b_plugin").status == "clash"
    manager.unregister("fake_b_plugin")
    assert (info_of(manager, "fake_a_plugin").status, info_of(manager, "fake_a_plugin").error) == ("loaded", None)
    assert "same_head" in manager.registry("heads")


def test_duplicate_of_a_builtin_names_pixcore(site: FakeSite) -> None:
    site.add_head_plugin("pixcore-fake-a", "fake_a_plugin", "fpn")
    with pytest.raises(pixcore.DuplicateComponentError, match=r"by pixcore \d[^ ]* and by pixcore-fake-a 1.0"):
        pixcore.PluginManager().registry("heads")


# -- in-process plugins ----------------------------------------------------------------


class InProcess:
    @pixcore.hookimpl
    def pixcore_losses(self) -> object:
        yield pixcore.Component("inproc_loss", dict)


def test_register_plugin_in_process(global_manager: pixcore.PluginManager) -> None:
    assert "inproc_loss" not in pixcore.registry("losses")
    name = pixcore.register_plugin(InProcess(), name="my-inproc")
    assert name == "my-inproc"
    assert pixcore.registry("losses").get("inproc_loss").distribution == "<in-process my-inproc>"
    assert pixcore.get_plugin_manager() is global_manager
    assert info_of(global_manager, "my-inproc").registered == {"losses": ["inproc_loss"]}
    global_manager.unregister("my-inproc")
    assert "inproc_loss" not in pixcore.registry("losses")


def test_reset_global_manager_recreates_lazily(
    reset_global_manager: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PIXCORE_DISABLE_PLUGIN_AUTOLOAD", "1")  # installed plugins are not our business
    first = pixcore.get_plugin_manager()
    assert pixcore.get_plugin_manager() is first
    _plugins.reset_plugin_manager(None)
    assert pixcore.get_plugin_manager() is not first


def test_register_with_explicit_distribution() -> None:
    manager = pixcore.PluginManager(autoload=False)
    manager.register(InProcess(), name="x", distribution="my-dist", version="0.9")
    assert manager.registry("losses").get("inproc_loss").distribution == "my-dist 0.9"


class Misspelled:
    @pixcore.hookimpl
    def pixcore_head(self) -> object:  # should be pixcore_heads
        yield pixcore.Component("never", dict)

    @pixcore.hookimpl
    def pixcore_losses(self) -> object:
        yield pixcore.Component("misspelled_loss", dict)


def test_misspelled_hook_is_rejected() -> None:
    manager = pixcore.PluginManager(autoload=False)
    with pytest.raises((pixcore.PluginLoadError, pluggy.PluginValidationError), match="pixcore_head"):
        manager.register(Misspelled(), name="typo")


def test_misspelled_hook_error_is_pixcore_and_leaves_manager_usable() -> None:
    manager = pixcore.PluginManager(autoload=False)
    with pytest.raises(pixcore.PluginLoadError, match="pixcore_head.*pixcore_heads"):
        manager.register(Misspelled(), name="typo")
    assert "misspelled_loss" not in manager.registry("losses")
    assert "typo" not in [p.name for p in manager.plugins()]


def test_installed_plugin_with_misspelled_hook_is_skipped(site: FakeSite) -> None:
    source = """
    import pixcore

    @pixcore.hookimpl
    def pixcore_head():
        yield pixcore.Component("never", dict)
    """
    site.add("pixcore-typo", "0.1", {"typo_plugin": "typo_mod"}, {"typo_mod": source})
    site.add_head_plugin("pixcore-fakehead", "fakehead_plugin", "fake_head")
    with pytest.warns(pixcore.PluginLoadWarning, match="typo_plugin.*pixcore_head"):
        manager = pixcore.PluginManager()
    assert info_of(manager, "typo_plugin").status == "failed"
    assert "fake_head" in manager.registry("heads")


class Raising:
    @pixcore.hookimpl
    def pixcore_heads(self) -> object:
        raise RuntimeError("head table is corrupt")

    @pixcore.hookimpl
    def pixcore_losses(self) -> object:
        yield pixcore.Component("raising_loss", dict)


def test_hook_that_raises_is_reported_and_skipped() -> None:
    manager = pixcore.PluginManager(autoload=False)
    manager.register(Raising(), name="raiser", distribution="pixcore-raiser")
    with pytest.warns(pixcore.PluginLoadWarning) as record:
        heads = manager.registry("heads")
    message = str(record[0].message)
    assert "'raiser'" in message and "pixcore-raiser" in message
    assert "pixcore_heads" in message and "RuntimeError: head table is corrupt" in message
    assert "fpn" in heads  # other plugins' heads are still there
    assert "raising_loss" in manager.registry("losses")  # its other hooks still count
    info = info_of(manager, "raiser")
    assert info.status == "failed" and "corrupt" in (info.error or "")


def test_hook_that_raises_in_strict_mode() -> None:
    manager = pixcore.PluginManager(autoload=False, strict=True)
    manager.register(Raising(), name="raiser")
    with pytest.raises(pixcore.PluginLoadError, match="raiser.*pixcore_heads.*corrupt"):
        manager.registry("heads")


class YieldsNonRecord:
    @pixcore.hookimpl
    def pixcore_heads(self) -> object:
        yield "fpn2"


def test_hook_yielding_a_non_record_is_reported() -> None:
    manager = pixcore.PluginManager(autoload=False, strict=True)
    manager.register(YieldsNonRecord(), name="wrong")
    with pytest.raises(pixcore.PluginLoadError, match="wrong.*pixcore_heads.*pixcore.Component"):
        manager.registry("heads")


# -- built-ins ---------------------------------------------------------------------------


@pytest.mark.parametrize(("family", "name"), [("heads", "fpn"), ("heads", "linear"), ("augmentations", "hflip")])
def test_builtins_come_from_pixcore(family: str, name: str) -> None:
    manager = pixcore.PluginManager(autoload=False)
    assert manager.registry(family).get(name).distribution == f"pixcore {pixcore.__version__}"
    builtin = info_of(manager, "pixcore")
    assert builtin.distribution == "pixcore" and builtin.status == "loaded"
    assert name in builtin.registered[family]


def test_builtin_synthetic_dataset() -> None:
    manager = pixcore.PluginManager(autoload=False)
    assert manager.registry("datasets").get("synthetic").distribution == f"pixcore {pixcore.__version__}"


def test_builtins_can_be_left_out() -> None:
    manager = pixcore.PluginManager(autoload=False, builtins=False)
    assert manager.registry("heads").list() == []
    assert manager.plugins() == []


def test_unknown_family() -> None:
    with pytest.raises(KeyError, match="families are backbones"):
        pixcore.PluginManager(autoload=False).registry("head")


def test_registries_are_rebuilt_after_registering(manager: pixcore.PluginManager) -> None:
    before = manager.registry("losses")
    assert manager.registry("losses") is before  # cached
    manager.register(InProcess(), name="late")
    assert "inproc_loss" in manager.registry("losses")

