"""Registry: register/get/list/create/validate, namespaces, errors, parameter validation."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

import pixcore
import pytest
from pixcore import Component, ComponentNamespace, Registry
from pydantic import BaseModel, ConfigDict


class Widget:
    """A factory with typed parameters (a signature-derived params model)."""

    def __init__(self, size: int, ratio: float = 0.5, label: str = "w") -> None:
        self.size, self.ratio, self.label = size, ratio, label


class ContextHungry:
    """Declares two context facts (``num_classes``, ``in_features``) and one own parameter."""

    def __init__(self, num_classes: int, in_features: list[int] | None = None, depth: int = 1) -> None:
        self.num_classes, self.in_features, self.depth = num_classes, in_features, depth


def make_widget(size: int = 3) -> Widget:
    return Widget(size)


def registry_with(*records: Component | ComponentNamespace, family: str = "heads") -> Registry:
    reg: Registry = Registry(family)
    for record in records:
        reg.register(record)
    return reg


# -- register / get / list / create ----------------------------------------------------


def test_register_get_create() -> None:
    reg = registry_with(Component("widget", Widget, distribution="dist-a"))
    assert reg.get("widget").factory is Widget
    assert reg.get("widget").distribution == "dist-a"
    made = reg.create("widget", {"size": 4})
    assert isinstance(made, Widget)
    assert (made.size, made.ratio, made.label) == (4, 0.5, "w")
    assert "widget" in reg and "other" not in reg and 3 not in reg
    assert len(reg) == 1


def test_function_factory() -> None:
    reg = registry_with(Component("w", make_widget))
    assert reg.create("w").size == 3
    assert reg.create("w", {"size": 9}).size == 9


def test_validate_returns_factory_kwargs_with_defaults_and_coercion() -> None:
    reg = registry_with(Component("widget", Widget))
    assert reg.validate("widget", {"size": "7"}) == {"size": 7, "ratio": 0.5, "label": "w"}


def test_list_glob_is_sorted_and_case_insensitive() -> None:
    reg = registry_with(
        Component("fpn_small", Widget), Component("fpn", Widget), Component("linear", Widget)
    )
    assert reg.list() == ["fpn", "fpn_small", "linear"]
    assert reg.list("fpn*") == ["fpn", "fpn_small"]
    assert reg.list("FPN_*") == ["fpn_small"]
    assert reg.list("?inear") == ["linear"]
    assert reg.list("nothing*") == []


def test_names_are_case_insensitive() -> None:
    reg = registry_with(Component("MyWidget", Widget))
    assert reg.get("mywidget").name == "mywidget"
    assert reg.get("MYWIDGET") is reg.get(" MyWidget ")
    assert reg.list() == ["mywidget"]
    with pytest.raises(pixcore.DuplicateComponentError):
        reg.register(Component("MYWIDGET", Widget))


def test_invalid_names_are_refused() -> None:
    with pytest.raises(ValueError, match="invalid component name"):
        Component("bad name!", Widget)
    with pytest.raises(ValueError, match="ends with '/'"):
        ComponentNamespace("ns", lambda p: [], lambda n: None)


def test_register_refuses_non_records() -> None:
    reg: Registry = Registry("heads")
    with pytest.raises(TypeError, match="pixcore.Component"):
        reg.register(Widget)  # type: ignore[arg-type]


# -- namespaces --------------------------------------------------------------------------


class FakeZoo:
    """A lazily resolved namespace that records every call."""

    names = ("zoo/alpha", "zoo/alpine", "zoo/beta")

    def __init__(self) -> None:
        self.resolved: list[str] = []
        self.listed: list[str] = []

    def list_names(self, pattern: str) -> Iterable[str]:
        self.listed.append(pattern)
        return list(self.names)  # deliberately unfiltered: the registry must filter

    def resolve(self, name: str) -> Component | None:
        self.resolved.append(name)
        if name not in self.names:
            return None
        return Component(name, Widget, description=f"zoo model {name}")

    def namespace(self) -> ComponentNamespace:
        return ComponentNamespace("zoo/", self.list_names, self.resolve, distribution="zoo-dist")


def test_namespace_resolves_lazily_and_on_demand() -> None:
    zoo = FakeZoo()
    reg = registry_with(Component("local", Widget), zoo.namespace(), family="backbones")
    assert zoo.resolved == [] and zoo.listed == []  # registering asks nothing
    reg.get("local")
    assert zoo.resolved == []  # an eager name never touches the namespace
    component = reg.get("ZOO/Alpha")
    assert zoo.resolved == ["zoo/alpha"]
    assert component.name == "zoo/alpha"
    assert component.distribution == "zoo-dist"  # the namespace's provider is reported
    assert reg.create("zoo/beta", {"size": 2}).size == 2


def test_namespace_listing() -> None:
    zoo = FakeZoo()
    reg = registry_with(Component("local", Widget), zoo.namespace(), family="backbones")
    assert reg.list("zoo/alp*") == ["zoo/alpha", "zoo/alpine"]
    assert reg.list() == ["local", "zoo/alpha", "zoo/alpine", "zoo/beta"]
    calls = len(zoo.listed)
    assert reg.list("loc*") == ["local"]
    assert len(zoo.listed) == calls  # a pattern outside the namespace does not ask it
    assert zoo.resolved == []  # listing never resolves


def test_unknown_name_inside_namespace() -> None:
    zoo = FakeZoo()
    reg = registry_with(zoo.namespace(), family="backbones")
    with pytest.raises(pixcore.UnknownComponentError, match="Did you mean 'zoo/alpha'"):
        reg.get("zoo/alpah")


def test_a_name_without_its_namespace_suggests_the_namespaced_one() -> None:
    zoo = FakeZoo()
    reg = registry_with(Component("local", Widget), Component("other/gamma", Widget), zoo.namespace(),
                        family="backbones")
    expected = r"unknown backbone 'Alpha'\. Did you mean 'zoo/alpha'\?"
    with pytest.raises(pixcore.UnknownComponentError, match=expected):
        reg.get("Alpha")
    with pytest.raises(pixcore.UnknownComponentError, match=r"Did you mean 'other/gamma'\?"):
        reg.get("gamma")  # an eager name under a prefix counts too
    with pytest.raises(pixcore.UnknownComponentError) as info:
        reg.get("delta")
    assert "Did you mean" not in str(info.value)


def test_duplicate_namespace() -> None:
    reg = registry_with(FakeZoo().namespace(), family="backbones")
    other = ComponentNamespace("zoo/", lambda p: [], lambda n: None, distribution="other-zoo")
    with pytest.raises(pixcore.DuplicateComponentError, match="zoo-dist.*other-zoo"):
        reg.register(other)


# -- errors ------------------------------------------------------------------------------


def test_unknown_name_suggests_close_matches() -> None:
    reg = registry_with(Component("linear", Widget), Component("fpn", Widget))
    with pytest.raises(pixcore.UnknownComponentError) as info:
        reg.get("lineer")
    message = str(info.value)
    assert "unknown head 'lineer'" in message
    assert "Did you mean 'linear'" in message
    assert "fpn" in message  # lists what is available
    assert info.value.family == "heads" and info.value.name == "lineer"
    assert isinstance(info.value, LookupError)  # usable as a KeyError-like lookup failure


def test_unknown_name_without_close_match_has_no_suggestion() -> None:
    reg = registry_with(Component("linear", Widget))
    with pytest.raises(pixcore.UnknownComponentError) as info:
        reg.get("zzzzzz")
    assert "Did you mean" not in str(info.value)


@pytest.mark.parametrize(
    ("family", "name", "distribution"),
    [
        ("backbones", "timm/resnet18", "pixcore-timm"),
        ("backbones", "TIMM/ResNet18", "pixcore-timm"),
        ("losses", "edges/balanced_bce", "pixcore-edges"),
    ],
)
def test_unknown_namespaced_name_says_what_to_install(
    family: str, name: str, distribution: str
) -> None:
    reg = registry_with(Component("local", Widget), family=family)
    with pytest.raises(pixcore.UnknownComponentError, match=f"pip install {distribution}\\."):
        reg.get(name)


def test_no_install_hint_when_the_namespace_is_registered() -> None:
    lazy = registry_with(FakeZoo().namespace(), family="backbones")
    eager = registry_with(Component("zoo/alpha", Widget), family="backbones")
    for reg in (lazy, eager):
        with pytest.raises(pixcore.UnknownComponentError) as info:
            reg.get("zoo/omega")
        assert "pip install" not in str(info.value)


@pytest.mark.parametrize(
    ("family", "name"), [("tasks", "depth"), ("losses", "silog"), ("tasks", "my_task")]
)
def test_unknown_plain_name_points_to_plugins(family: str, name: str) -> None:
    with pytest.raises(pixcore.UnknownComponentError) as info:
        Registry(family).get(name)
    message = str(info.value)
    assert f"If a plugin provides {name!r}" in message
    assert "`pixcore plugins`" in message and "docs/plugins.md" in message
    assert "pip install" not in message  # core names no plugin distribution


def test_a_close_match_replaces_the_plugin_hint() -> None:
    reg = registry_with(Component("linear", Widget))
    with pytest.raises(pixcore.UnknownComponentError) as info:
        reg.get("lineer")
    assert "Did you mean 'linear'" in str(info.value) and "pixcore plugins" not in str(info.value)


def test_core_names_no_plugin_component() -> None:
    import pixcore.plugin._registry as registry_module

    assert not hasattr(registry_module, "KNOWN_PROVIDERS")
    source = Path(registry_module.__file__).read_text(encoding="utf-8")
    assert not re.search(r"pixcore-[a-z]", source)  # only the rule pixcore-{namespace}
    for named in ("timm", "depth", "segmentation", "normals", "silog", "cross_entropy"):
        assert named not in source, named


def test_malformed_name_is_unknown_not_a_crash() -> None:
    with pytest.raises(pixcore.UnknownComponentError, match="invalid component name"):
        Registry("heads").get("no spaces allowed")


def test_duplicate_names_both_distributions() -> None:
    reg = registry_with(Component("fpn", Widget, distribution="first-dist 1.0"))
    with pytest.raises(pixcore.DuplicateComponentError) as info:
        reg.register(Component("fpn", make_widget, distribution="second-dist 2.0"))
    message = str(info.value)
    assert "first-dist 1.0" in message and "second-dist 2.0" in message
    assert "'fpn'" in message and "PIXCORE_BLOCK_PLUGINS" in message
    assert reg.get("fpn").factory is Widget  # the first registration is kept


# -- parameter validation --------------------------------------------------------------


def test_signature_params_reject_unknown_keys_with_path() -> None:
    reg = registry_with(Component("widget", Widget, distribution="dist-a"))
    with pytest.raises(pixcore.ConfigError) as info:
        reg.create("widget", {"size": 1, "colour": "red"}, path="model.tasks.t.head.params")
    message = str(info.value)
    assert "model.tasks.t.head.params.colour" in message
    assert "'widget'" in message and "dist-a" in message
    assert "Accepted parameters: label, ratio, size" in message


def test_signature_params_reject_wrong_types_with_path() -> None:
    reg = registry_with(Component("widget", Widget))
    with pytest.raises(pixcore.ConfigError) as info:
        reg.validate("widget", {"size": "big"}, path="model.backbone.params")
    assert "model.backbone.params.size" in str(info.value)
    assert "'big'" in str(info.value)


def test_signature_params_report_missing_required() -> None:
    reg = registry_with(Component("widget", Widget))
    with pytest.raises(pixcore.ConfigError, match=r"x\.params\.size: Field required"):
        reg.validate("widget", {}, path="x.params")


def test_explicit_params_model_is_used() -> None:
    class WidgetParams(BaseModel):
        model_config = ConfigDict(extra="forbid")
        size: int = 11

    reg = registry_with(Component("widget", Widget, params=WidgetParams))
    assert reg.validate("widget") == {"size": 11}  # fields of the model, not the signature
    with pytest.raises(pixcore.ConfigError, match="ratio"):
        reg.validate("widget", {"ratio": 0.1})


def test_context_facts_reach_only_factories_that_declare_them() -> None:
    reg = registry_with(Component("widget", Widget), Component("hungry", ContextHungry))
    context = {"num_classes": 7, "in_features": [1, 2], "ignore_index": 255}
    hungry = reg.create("hungry", {}, context=context)
    assert (hungry.num_classes, hungry.in_features) == (7, [1, 2])
    # Widget declares none of them: no "unexpected keyword" error, no extra argument.
    assert reg.validate("widget", {"size": 1}, context=context) == {"size": 1, "ratio": 0.5, "label": "w"}


def test_user_params_win_over_context() -> None:
    reg = registry_with(Component("hungry", ContextHungry))
    hungry = reg.create("hungry", {"num_classes": 3}, context={"num_classes": 7})
    assert hungry.num_classes == 3


def test_context_facts_are_not_offered_as_accepted_parameters() -> None:
    reg = registry_with(Component("hungry", ContextHungry))
    with pytest.raises(pixcore.ConfigError) as info:
        reg.validate("hungry", {"bogus": 1}, context={"num_classes": 7, "in_features": []})
    assert "Accepted parameters: depth." in str(info.value)


@pytest.mark.parametrize(
    ("family", "singular"),
    [("losses", "loss"), ("metrics", "metric"), ("heads", "head"), ("augmentations", "augmentation")],
)
def test_messages_use_the_singular(family: str, singular: str) -> None:
    reg = registry_with(Component("widget", Widget, distribution="a"), family=family)
    with pytest.raises(pixcore.UnknownComponentError, match=f"^unknown {singular} 'nothing'"):
        reg.get("nothing")
    with pytest.raises(pixcore.DuplicateComponentError, match=f"^{singular} 'widget'"):
        reg.register(Component("widget", Widget, distribution="b"))
    with pytest.raises(pixcore.ConfigError, match=f"^invalid parameters for {singular} 'widget'"):
        reg.validate("widget", {})
