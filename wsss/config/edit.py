"""Changing a few settings of a recipe file while keeping everything else of its text: its comments (the figures
`wsss init` writes beside each setting), its order, its flow-style sections.

:func:`edit_recipe_text` rewrites only the lines of the keys it changes: a block key's value in place, a key inside a
flow mapping (``crf: {bilateral_sxy: auto, bilateral_compat: 40}``) by re-writing that mapping on its line, a key the
recipe does not have yet at the end of its section (or of the file). The result is checked by loading it: when it does
not read back as exactly the changed recipe (YAML this line editor does not follow: anchors, multi-line strings,
documents), it returns None and the caller writes the recipe from the data instead.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import yaml


@dataclass
class _Key:
    line: int  # index of the key's line
    indent: int
    end: int  # index one past the key's block (its nested lines)
    value: str  # the value written on the key's line ('' for a block mapping or list)
    comment: str  # the line's trailing comment, without '#', or ''


def flow(value: Any) -> str:
    """``value`` as one line of YAML flow style (a scalar without the document end marker PyYAML adds to it)."""
    text = yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=float("inf"), allow_unicode=True)
    lines = text.rstrip("\n").split("\n")
    return "\n".join(lines[:-1] if len(lines) > 1 and lines[-1] == "..." else lines).strip()


def _split_comment(rest: str) -> tuple[str, str]:
    """A key line's text after ``key:`` split into (value, comment): the first `` #`` at which the value before it
    still reads as YAML (a ``#`` inside a quoted string is part of the value)."""
    start = 0
    while (i := rest.find(" #", start)) >= 0:
        value = rest[:i].strip()
        try:
            yaml.safe_load(f"k: {value}")
        except yaml.YAMLError:
            start = i + 2
            continue
        return value, rest[i + 2 :].strip()
    if rest.strip().startswith("#"):
        return "", rest.strip()[1:].strip()
    return rest.strip(), ""


def _keys(lines: list[str]) -> dict[str, _Key]:
    """Every block-style key of ``lines``, by dotted path."""
    keys: dict[str, _Key] = {}
    stack: list[tuple[int, str]] = []
    for n, line in enumerate(lines):
        stripped = line.lstrip(" ")
        if not stripped or stripped.startswith("#"):
            continue
        indent = len(line) - len(stripped)
        while stack and stack[-1][0] >= indent:
            stack.pop()
        if stripped.startswith("- ") or ":" not in stripped:
            continue  # a list item or a continuation: part of the key above
        name, _, rest = stripped.partition(":")
        name = name.strip().strip("'\"")
        stack.append((indent, name))
        value, comment = _split_comment(rest)
        keys[".".join(k for _, k in stack)] = _Key(n, indent, n + 1, value, comment)
    # a key's block ends before the next line, not a comment or blank, at its indent or less
    for key in keys.values():
        end = key.line + 1
        for m in range(key.line + 1, len(lines)):
            stripped = lines[m].lstrip(" ")
            if not stripped or stripped.startswith("#"):
                continue
            if len(lines[m]) - len(stripped) <= key.indent and not (
                stripped.startswith("- ") and len(lines[m]) - len(stripped) == key.indent and not key.value
            ):
                break
            end = m + 1
        key.end = end
    return keys


def _nested(path: list[str], value: Any) -> Any:
    for part in reversed(path):
        value = {part: value}
    return value


def set_dotted(data: dict, dotted: str, value: Any) -> None:
    """``data[a][b][c] = value`` for ``dotted`` ``a.b.c``, making (or replacing a non-mapping with) the sections on
    the way."""
    *path, last = dotted.split(".")
    node = data
    for part in path:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[last] = value


def _key_line(line: str, value: Any, comment: str) -> str:
    """``line`` (``key: ...``) with ``value`` as its value, in flow style, and ``comment`` as its comment."""
    return _with_comment(line.split(":", 1)[0] + ": " + flow(value), comment)


def _with_comment(text: str, comment: str) -> str:
    return f"{text}  # {comment}" if comment else text


def _edit_one(lines: list[str], dotted: str, value: Any, note: str | None) -> list[str]:
    keys = _keys(lines)
    parts = dotted.split(".")
    # the longest prefix of the key that the text has as a block key
    depth = next((d for d in range(len(parts), 0, -1) if ".".join(parts[:d]) in keys), 0)
    if depth == len(parts):  # the key itself: its value replaced on its line, its nested lines dropped
        key = keys[dotted]
        return [*lines[: key.line], _key_line(lines[key.line], value, note or key.comment), *lines[key.end :]]
    if depth > 0:
        owner = keys[".".join(parts[:depth])]
        rest = parts[depth:]
        if owner.value:  # a flow mapping (or a scalar) on the owner's line: re-written there
            try:
                current = yaml.safe_load(owner.value)
            except yaml.YAMLError:
                current = None
            current = copy.deepcopy(current) if isinstance(current, dict) else {}
            set_dotted(current, ".".join(rest), value)
            comment = "; ".join(c for c in (owner.comment, note) if c)
            return [*lines[: owner.line], _key_line(lines[owner.line], current, comment), *lines[owner.end :]]
        # a block mapping: the new key after its last nested line, at its children's indent
        children = [k for k in keys.values() if owner.line < k.line < owner.end and k.indent > owner.indent]
        indent = min((k.indent for k in children), default=owner.indent + 2)
        new = " " * indent + f"{rest[0]}: " + flow(_nested(rest[1:], value))
        at = owner.end
        while at > owner.line + 1 and not lines[at - 1].strip():  # before the blank lines that end the section
            at -= 1
        return [*lines[:at], _with_comment(new, note or ""), *lines[at:]]
    new = f"{parts[0]}: " + flow(_nested(parts[1:], value))
    body = list(lines)
    while body and not body[-1].strip():
        body.pop()
    return [*body, _with_comment(new, note or "")]


def edit_recipe_text(text: str, changes: dict[str, Any], notes: dict[str, str] | None = None) -> str | None:
    """``text`` (a recipe) with each dotted key of ``changes`` set to its value, ``notes[key]`` as that line's comment
    (in place of the comment it had); None when the edited text does not load as the recipe with those changes."""

    notes = notes or {}
    expected = yaml.safe_load(text) or {}
    if not isinstance(expected, dict):
        return None
    lines = text.splitlines()
    try:
        for dotted, value in changes.items():
            set_dotted(expected, dotted, value)
            lines = _edit_one(lines, dotted, value, notes.get(dotted))
        out = "\n".join(lines) + "\n"
        return out if yaml.safe_load(out) == expected else None
    except (yaml.YAMLError, ValueError, TypeError, AttributeError):
        return None


def changed_recipe_text(text: str, original: dict, data: dict, notes: dict[str, str]) -> str:
    """The recipe ``text`` (which loads as ``original``) changed to load as ``data``: its own lines edited where they
    can be (:func:`edit_recipe_text`), else ``data`` written out whole; ``notes[key]`` as the comment of a changed
    dotted key either way."""
    old = _leaves(original)
    changes = {k: v for k, v in _leaves(data).items() if k not in old or old[k] != v}
    edited = edit_recipe_text(text, changes, notes)
    if edited is not None:
        return edited
    return _comment_keys(yaml.safe_dump(data, sort_keys=False, default_flow_style=False, allow_unicode=True), notes)


def _leaves(data: Any, prefix: str = "") -> dict[str, Any]:
    """The recipe ``data``'s settings by dotted key (a list is one setting)."""
    if not isinstance(data, dict):
        return {prefix: data}
    out: dict[str, Any] = {}
    for key, value in data.items():
        out |= _leaves(value, f"{prefix}.{key}" if prefix else str(key))
    return out


def _comment_keys(text: str, notes: dict[str, str]) -> str:
    """``text`` (block-style YAML) with ``# note`` after the line of each dotted key in ``notes``."""
    lines = text.splitlines()
    for dotted, key in _keys(lines).items():
        if dotted in notes:
            lines[key.line] = f"{lines[key.line]}  # {notes[dotted]}"
    return "\n".join(lines) + "\n"
