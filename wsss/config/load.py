"""The generic half of configuration: YAML in and out, values coerced to a dataclass field's type (with the
messages that name the key and the closest valid one), and every field checked against the range or rule declared
with it (:mod:`wsss.fields`). Nothing here knows which sections exist: :mod:`wsss.config.tree` assembles them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import math
import os
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from wsss.errors import ConfigError
from wsss.models.weights import is_weights_name


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def coerce(value: Any, tp: Any, where: str, meta: typing.Mapping[str, Any]) -> Any:
    """Check ``value`` against annotation ``tp`` (after ``get_type_hints``) and return the typed value."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        if len(arms := [a for a in args if a is not type(None)]) == 1:  # Optional[X]: X's own message
            return coerce(value, arms[0], where, meta)
        for a in args:
            if a is type(None):
                continue
            with contextlib.suppress(ConfigError):
                return coerce(value, a, where, meta)
        raise ConfigError(where, f"expected {_type_name(tp)}, got {value!r}", "fix the value's type")
    if origin is list:
        (item,) = typing.get_args(tp)
        if isinstance(value, (str, int, float)) and not isinstance(value, bool) and item is not str:
            value = [value]
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()] if "," in value else [value]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(where, f"expected a list, got {value!r}", "write a YAML list, e.g. [a, b]")
        return [coerce(v, item, f"{where}[{i}]", {}) for i, v in enumerate(value)]
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(where, f"expected true/false, got {value!r}", "write true or false")
    if tp is int:
        n = _number(value)
        if n is None:
            raise ConfigError(where, f"expected an integer, got {value!r}", "write a whole number")
        if not math.isfinite(n):
            raise ConfigError(where, f"expected a finite number, got {value!r}", "write a whole number")
        if isinstance(n, float) and not n.is_integer():
            raise ConfigError(where, f"expected an integer, got {value!r}", "write a whole number, e.g. 2 or 1.6e5")
        return int(n)
    if tp is float:
        n = _number(value)
        if n is None:
            raise ConfigError(where, f"expected a number, got {value!r}", "write a number such as 0.5 or 1e-3")
        if not math.isfinite(n):
            raise ConfigError(where, f"expected a finite number, got {value!r}", "write a number such as 0.5 or 1e-3")
        return float(n)
    if tp is str:
        if isinstance(value, (dict, list)) or value is None:
            raise ConfigError(where, f"expected a string, got {value!r}", "write a plain string")
        value = str(value)
        choices = meta.get("choices")
        if choices and value not in choices:
            close = difflib.get_close_matches(value, choices, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ConfigError(where, f"invalid value {value!r}", f"{hint}valid values: {', '.join(choices)}")
        return value
    raise TypeError(f"unsupported config type {tp!r} at {where}")


def _number(value: Any) -> int | float | None:
    """``value`` as an int or float, or None if it is not a number. Strings that spell a number count: YAML 1.1 (PyYAML)
    reads ``1e-3`` and ``1.6e5`` (an exponent without a dot or a sign) as strings."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, str):
        for parse in (int, float):
            with contextlib.suppress(ValueError):
                return parse(value.strip())
    return None


def closest_key(key: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    return f"did you mean {close[0]!r}? valid keys: {', '.join(valid)}" if close else f"valid keys: {', '.join(valid)}"


def build(cls: type, data: Any, section: str, source: str, base_dir: Path | None, base: Any = None) -> Any:
    """Build dataclass ``cls`` from mapping ``data``; ``section`` is the dotted path for messages.

    Keys the mapping leaves out keep ``base``'s values: a nested section starts from its field's own default (a
    segmenter's backbone defaults to output stride 32, not BackboneConfig's 16), not from the class defaults.
    """
    label = section or "top level"
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source}: {label}",
            f"expected a mapping of keys, got {type(data).__name__}",
            "indent the section's keys under its name",
        )
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        if key not in fields:
            raise ConfigError(source, f"unknown key {key!r} in section {label!r}", closest_key(str(key), list(fields)))
        f, tp = fields[key], hints[key]
        where = f"{source}: {section + '.' if section else ''}{key}"
        if dataclasses.is_dataclass(tp):
            sub = getattr(base, key) if base is not None else None
            if sub is None and f.default_factory is not dataclasses.MISSING:
                sub = f.default_factory()
            kwargs[key] = build(tp, value, f"{section}.{key}" if section else key, source, base_dir, sub)
            continue
        v = coerce(value, tp, where, f.metadata)
        if f.metadata.get("path") and v is not None and base_dir is not None and not is_weights_name(v):
            v = resolve_path(v, base_dir)
        kwargs[key] = v
    return dataclasses.replace(base, **kwargs) if base is not None else cls(**kwargs)


def resolve_path(value: str, base_dir: Path) -> str:
    p = Path(os.path.expandvars(os.path.expanduser(value)))
    return str(p if p.is_absolute() else (base_dir / p).resolve())


MAX_RECIPE_BYTES = 1 << 20  # a recipe is a page of settings; anything larger is not one


class _RecipeLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` without aliases: a recipe writes its values out, and a few bytes of nested aliases (the
    "billion laughs") would otherwise expand into gigabytes wherever the data is walked."""

    def compose_node(self, parent, index):  # type: ignore[no-untyped-def]
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None, None, f"found the alias *{event.anchor}: a recipe accepts no aliases", event.start_mark
            )
        return super().compose_node(parent, index)


def read_yaml(path: Path) -> Any:
    """A YAML file's data; a file that is not UTF-8 (or UTF-16 with its mark), not YAML, over
    :data:`MAX_RECIPE_BYTES` or holding aliases (``*name``) is a ConfigError."""
    size = path.stat().st_size
    if size > MAX_RECIPE_BYTES:
        raise ConfigError(
            path, f"{size} bytes, over the {MAX_RECIPE_BYTES} a recipe may have", "pass a recipe file (YAML settings)"
        )
    try:
        return yaml.load(path.read_bytes(), Loader=_RecipeLoader)  # noqa: S506 (a SafeLoader without aliases)
    except yaml.composer.ComposerError as e:
        raise ConfigError(path, f"not a plain recipe: {e}", "write each value out instead of an alias") from None
    except yaml.reader.ReaderError as e:
        raise ConfigError(
            path,
            f"not UTF-8 (byte 0x{e.character:02x} at position {e.position})"
            if isinstance(e.character, int)
            else f"not readable text: {e}",
            "save the file as UTF-8",
        ) from None
    except yaml.YAMLError as e:
        raise ConfigError(path, f"not valid YAML: {e}", "fix the syntax at the line shown") from None


def check_fields(obj: Any, prefix: str = "") -> None:
    """Check each field of dataclass ``obj`` and its nested sections against the :class:`Range` or :class:`Rule`
    declared with it (``metadata["check"]``); the first violation is a ConfigError naming its dotted key."""
    for f in dataclasses.fields(obj):
        key = f"{prefix}.{f.name}" if prefix else f.name
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            check_fields(value, key)
            continue
        check = f.metadata.get("check")
        if check is not None and not check.accepts(value):
            raise ConfigError(key, f"invalid value {value!r}", check.fix)


def dump_yaml(data: dict[str, Any]) -> str:
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False)
