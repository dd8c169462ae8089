"""The package's import structure: no circles among its modules' imports, and a CLI that starts without torch.

Every import counts, those inside functions and those under ``if TYPE_CHECKING`` too: a circle hidden in a function
or behind a type annotation is still a circle in the design, and a reader follows both.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "wsss"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement of a module, wherever it sits."""
    return [n for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom)]


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """module -> the package's modules it imports (``from a import b`` counts ``a.b`` when b is one)."""
    paths = {_module_name(p): p for p in package.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        own_package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in _imports(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets |= {a.name for a in node.names}
                continue
            base = node.module or ""
            if node.level:
                anchor = own_package.split(".")[: len(own_package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            targets |= {base} | {f"{base}.{a.name}" for a in node.names}
        resolved = set()
        for t in targets:
            while t and t not in paths:  # wsss.x.func -> wsss.x
                t = t.rpartition(".")[0]
            if t and t != name:
                resolved.add(t)
        graph[name] = resolved
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle (its modules in order, the first repeated at the end), or None."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(v: str) -> list[str] | None:
        state[v] = 1
        path.append(v)
        for w in sorted(graph.get(v, ())):
            if state.get(w) == 1:
                return [*path[path.index(w) :], w]
            if w not in state and (found := visit(w)):
                return found
        state[v] = 2
        path.pop()
        return None

    for v in sorted(graph):
        if v not in state and (found := visit(v)):
            return found
    return None


def test_find_cycle_on_toy_graphs():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_import_graph_sees_the_package():
    graph = import_graph()
    assert "wsss.cli" in graph and "wsss.config" in graph
    assert "wsss.errors" in graph["wsss.config.tree"]  # a plain module-level import is an edge
    assert "wsss.config.tree" in graph["wsss.config"]  # so is a package's import of its own module


def test_no_import_cycles():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle or [])


def package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """The module graph seen from above: each top-level package of wsss (``wsss.train``, ...) or top-level module
    (``wsss.runs``) one node, an edge where any of its modules imports one of the other's."""

    def top(module: str) -> str:
        return ".".join(module.split(".")[:2])

    out: dict[str, set[str]] = {}
    for a, targets in graph.items():
        out.setdefault(top(a), set()).update(top(b) for b in targets if top(b) != top(a))
    return out


def test_packages_stand_in_layers():
    """No circle between packages either: each package (its config module included) can be laid out above all that
    it imports, so no import runs back up from a lower layer to a higher one."""
    assert find_cycle(package_graph({"wsss.a.x": {"wsss.b.y"}, "wsss.b.y": {"wsss.a.z"}})) is not None
    cycle = find_cycle(package_graph(import_graph()))
    assert cycle is None, "packages importing each other: " + " -> ".join(cycle or [])


@pytest.mark.parametrize("module", ["wsss.cli", "wsss.config"])
def test_startup_does_not_import_torch(module):
    """`wsss --help` and config checks stay fast: torch (and OpenCV) load only in the commands that use them."""
    code = f"import sys, {module}; print(sorted(m for m in ('torch', 'cv2', 'timm') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def _all_imports(path: Path) -> set[str]:
    """Every module a file imports, at load time or inside functions."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return names


def test_no_stage_imports_another_stage():
    """Stages hand each other files, never code: what two stages share lives below them (wsss.refine, wsss.models...)."""
    stages = {f"wsss.stages.{p.stem}" for p in (PACKAGE / "stages").glob("*.py") if p.stem != "__init__"}
    for path in (PACKAGE / "stages").glob("*.py"):
        own = f"wsss.stages.{path.stem}"
        others = {m for m in _all_imports(path) if m in stages and m != own}
        assert not others, f"{path.name} imports {sorted(others)}"


def lazy_imports(path: Path) -> list[tuple[int, str | None]]:
    """Each import inside a function of ``path``: its line and its reason, the comment right above its block of
    imports (blank lines and a ``try:`` line between them allowed), or None where it has none."""
    lines = path.read_text(encoding="utf-8").splitlines()
    out = []
    for fn in ast.walk(ast.parse("\n".join(lines))):
        if not isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for node in ast.walk(fn):
            if isinstance(node, ast.Import | ast.ImportFrom):
                i = node.lineno - 2
                while i >= 0 and (not lines[i].strip() or lines[i].strip().startswith(("import ", "from ", "try:"))):
                    i -= 1
                above = lines[i].strip() if i >= 0 else ""
                out.append((node.lineno, above.lstrip("# ") if above.startswith("#") else None))
    return out


def test_lazy_import_probe_reads_reasons(tmp_path: Path):
    mod = tmp_path / "m.py"
    mod.write_text("def f():\n    # heavy: only here\n    import a\n    import b\n\n\ndef g():\n    import c\n")
    assert lazy_imports(mod) == [(3, "heavy: only here"), (4, "heavy: only here"), (8, None)]


def test_every_import_inside_a_function_says_why():
    """Imports sit at the top of their module; one inside a function is kept only for a dependency that is optional,
    platform-bound or too heavy for the place that imports the module (`wsss --help`, the config checks), and says
    so in a comment above it."""
    bare = [
        f"{p.relative_to(PACKAGE.parent)}:{line}"
        for p in sorted(PACKAGE.rglob("*.py"))
        for line, reason in lazy_imports(p)
        if not reason
    ]
    assert not bare, f"imports inside functions without a reason: {bare}"
    assert sum(len(lazy_imports(p)) for p in PACKAGE.rglob("*.py")) <= 30  # the exception, not the habit


def test_no_module_over_400_lines():
    long = {
        str(p.relative_to(PACKAGE.parent)): n
        for p in PACKAGE.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > 400
    }
    assert not long, f"split these modules: {long}"
