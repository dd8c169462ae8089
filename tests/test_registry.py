"""The one registry helper behind stages, dataset adapters and review formats."""

from __future__ import annotations

import pytest

from wsss.data.base import ADAPTERS
from wsss.errors import ConfigError
from wsss.export.formats import FORMATS
from wsss.registry import Registry
from wsss.stages import STAGES


def test_register_lookup_and_errors():
    table: Registry[int] = Registry("widget", "widgets")
    assert table.register("a", 1) == 1 and table.register("b", 2) == 2
    assert table.names() == ["a", "b"] and table.lookup("b") == 2
    with pytest.raises(ValueError, match="registered twice"):
        table.register("a", 3)
    with pytest.raises(ValueError, match="empty"):
        table.register("", 3)
    with pytest.raises(ConfigError) as e:
        table.lookup("c", "thing.kind")
    assert (
        "thing.kind" in str(e.value)
        and "unknown widget 'c'" in str(e.value)
        and "available widgets: a, b" in str(e.value)
    )


def test_order_does_not_depend_on_registration_order():
    table: Registry[int] = Registry("widget", "widgets")
    table.register("b", 1)
    table.register("a", 2)
    assert table.names() == ["a", "b"]  # by name unless the table says otherwise
    by_value: Registry[int] = Registry("widget", "widgets", order=lambda name, value: value)
    by_value.register("a", 2)
    by_value.register("b", 1)
    assert by_value.names() == ["b", "a"]


def test_load_imports_the_registering_modules():
    built_in = [name for name, s in STAGES.load().items() if s.run.__module__.startswith("wsss.stages.")]
    assert built_in[:3] == ["prepare", "pretrain", "train-classifier"]  # pipeline order, whatever was imported first
    assert {"csv", "folder", "ksdd", "mtd", "synthetic"} <= set(ADAPTERS.load())
    assert FORMATS.names() == ["coco", "cvat", "labelstudio", "png"]  # alphabetical, whatever was imported first


def test_the_three_tables_refuse_unknown_names_the_same_way():
    from wsss.export.formats import get_format
    from wsss.stages import get_stage

    for call, words in ((lambda: get_stage("nope"), "stages"), (lambda: get_format("nope"), "formats")):
        with pytest.raises(ConfigError, match=f"available {words}: "):
            call()
