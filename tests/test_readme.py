"""The README and docs/ stay a user's manual: short, every command real, every link inside the repository and alive.

Each check is a plain function over text, tested here on the real files and on a broken example, so none of them
can pass by finding nothing to check.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from wsss.cli import cli

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").rglob("*.md"))  # the lab notes too
MAX_README_BYTES = 15_000

FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.M | re.S)
INLINE_CODE = re.compile(r"(`+)(?:(?!\1).)+?\1", re.S)
# [text](target "title"), ![alt](target), reference definitions [id]: target, and raw HTML href / src
INLINE_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REF_DEF = re.compile(r"^[ \t]{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)", re.M)
HTML_LINK = re.compile(r"""(?:href|src)\s*=\s*["']([^"']+)["']""", re.I)
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
WSSS_COMMAND = re.compile(r"(?<![\w./-])wsss[ \t]+([a-z][a-z0-9-]*)(?:[ \t]+([a-z][a-z0-9-]*))?")


def code_blocks(text: str) -> list[str]:
    """The contents of the fenced code blocks of a markdown text."""
    return [m.group(0) for m in FENCE.finditer(text)]


def prose(text: str) -> str:
    """The text without fenced code blocks and inline code spans (where link syntax means nothing)."""
    return INLINE_CODE.sub("", FENCE.sub("", text))


def links(text: str) -> list[str]:
    """Every link target of a markdown text, outside code."""
    body = prose(text)
    return [m.group(1) for pattern in (INLINE_LINK, REF_DEF, HTML_LINK) for m in pattern.finditer(body)]


def wsss_commands(text: str) -> set[tuple[str, ...]]:
    """The `wsss` commands used in the fenced code blocks: (command,) or, for a group such as `export`,
    (group, subcommand)."""
    groups = {name for name, command in cli.commands.items() if hasattr(command, "commands")}
    found: set[tuple[str, ...]] = set()
    for block in code_blocks(text):
        for line in block.splitlines():
            line = line.split("#", 1)[0]  # shell comments are prose
            for m in WSSS_COMMAND.finditer(line):
                name, sub = m.group(1), m.group(2)
                found.add((name, sub) if name in groups and sub else (name,))
    return found


def missing_commands(commands: set[tuple[str, ...]]) -> list[str]:
    """The commands whose `--help` does not exit 0 (an unknown command or subcommand exits 2)."""
    runner = CliRunner()
    bad = []
    for command in sorted(commands):
        result = runner.invoke(cli, [*command, "--help"])
        if result.exit_code != 0:
            bad.append(f"wsss {' '.join(command)} (exit {result.exit_code})")
    return bad


def resolve(path: Path, rel: str, root: Path) -> Path:
    """Where the link ``rel`` (no anchor) in the file ``path`` points: ``path`` itself when empty, from ``root``
    when it starts with ``/``, else from ``path``'s folder."""
    rel = rel.split("?", 1)[0]
    if not rel:
        return path
    return root / rel.lstrip("/") if rel.startswith("/") else path.parent / rel


def anchors(text: str) -> set[str]:
    """The heading anchors of a markdown text, as GitHub makes them: lower case, punctuation dropped, spaces to
    hyphens, a repeated heading numbered -1, -2, ..."""
    seen: dict[str, int] = {}
    out = set()
    for m in re.finditer(r"^#{1,6}[ \t]+(.+?)[ \t#]*$", FENCE.sub("", text), re.M):
        slug = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def dead_links(path: Path, text: str, root: Path = ROOT) -> list[str]:
    """Relative link targets of ``path`` that name no existing file or folder, or a heading the markdown file they
    name does not have."""
    bad = []
    for target in links(text):
        if SCHEME.match(target):
            continue
        rel, _, anchor = target.partition("#")
        resolved = resolve(path, rel, root)
        found = resolved.exists()
        if found and anchor and resolved.suffix == ".md":
            found = anchor in anchors(resolved.read_text(encoding="utf-8"))
        if not found:
            bad.append(target)
    return bad


def outside_links(path: Path, text: str, root: Path = ROOT) -> list[str]:
    """Link targets of ``path`` that leave the repository: URLs of any scheme, paths that resolve outside ``root``,
    and anything under a ``shared/docs`` folder."""
    bad = []
    for target in links(text):
        if target.startswith("#"):
            continue
        if SCHEME.match(target) or target.startswith("//") or "shared/docs" in target:
            bad.append(target)
            continue
        if not resolve(path, target.split("#", 1)[0], root).resolve().is_relative_to(root.resolve()):
            bad.append(target)
    return bad


MARKDOWN = [README, *DOCS]


def test_docs_exist():
    names = {p.name for p in DOCS}
    for page in ("usage.md", "configuration.md", "run-folders.md", "datasets.md", "architecture.md", "method.md"):
        assert page in names, f"docs/{page} is missing"


def test_readme_is_short():
    size = len(README.read_bytes())
    assert size <= MAX_README_BYTES, (
        f"README.md is {size} bytes, over {MAX_README_BYTES}: move detail into docs/ and link to it"
    )


def test_readme_commands_exist():
    commands = wsss_commands(README.read_text(encoding="utf-8"))
    assert ("demo",) in commands, "README.md's code blocks name no `wsss demo` (is the parser broken?)"
    assert missing_commands(commands) == [], "README.md's code blocks use commands that `wsss` does not have"


@pytest.mark.parametrize("path", MARKDOWN, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(path):
    assert dead_links(path, path.read_text(encoding="utf-8")) == []


@pytest.mark.parametrize("path", MARKDOWN, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_links_outside_the_repository(path):
    assert outside_links(path, path.read_text(encoding="utf-8")) == []


def test_readme_and_docs_have_links():
    """The link checks above see the README's links into docs/ (a parser that finds nothing would pass them)."""
    targets = links(README.read_text(encoding="utf-8"))
    assert "docs/usage.md" in targets and "docs/benchmarks.md" in targets


def test_checks_catch_bad_input(tmp_path):
    """Each check fails on a broken example."""
    text = (
        "See [the method](../shared/docs/METHOD.md), [a page](https://example.com/x), [gone](docs/nope.md),\n"
        "[fine](README.md) and `[not a link](nowhere.md)`.\n\n"
        "```bash\nwsss frobnicate --config x.yaml   # wsss notacommand in a comment\nwsss export nosuch --out y\n"
        "pip install -e . && wsss demo\n```\n"
    )
    page = tmp_path / "README.md"
    page.write_text(text)
    assert dead_links(page, text, root=tmp_path) == ["../shared/docs/METHOD.md", "docs/nope.md"]
    heading = "# Title\n\n## Run `wsss init`: step 1\n\n[ok](#run-wsss-init-step-1) [bad](#run-wsss-init)\n"
    page.write_text(heading)
    assert dead_links(page, heading, root=tmp_path) == ["#run-wsss-init"]
    assert outside_links(page, text, root=tmp_path) == ["../shared/docs/METHOD.md", "https://example.com/x"]
    assert outside_links(page, "[up](../x.md)", root=tmp_path) == ["../x.md"]
    commands = wsss_commands(text)
    assert commands == {("frobnicate",), ("export", "nosuch"), ("demo",)}
    assert missing_commands(commands) == ["wsss export nosuch (exit 2)", "wsss frobnicate (exit 2)"]
