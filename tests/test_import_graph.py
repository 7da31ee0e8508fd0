"""The library's layers (docs/architecture.md): no import circles between its modules, counting imports inside
functions, and imports inside functions only where they keep a heavy optional package (torch, transformers, vllm,
...) out of a light module. ``lint-imports`` (pyproject's ``[tool.importlinter]``, run by ``make test``) checks the
package-level contract; this checks the same graph module by module, and that both checkers can fail."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import textwrap
from collections import defaultdict
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "cure"
#: Packages a module may import inside a function to keep its import light.
HEAVY = {"torch", "transformers", "vllm", "kfp", "matplotlib", "deepspeed", "datasets", "huggingface_hub"}
#: What the sandbox image imports, with the standard library alone (it installs cure without its dependencies):
#: these modules may import inside a function any module that needs a third-party package.
POD = ("cure.sandbox.shard",)


def module_files(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for the package at ``root``."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def imports(root: Path) -> list[tuple[str, str, int, str]]:
    """Every import of a module of the package by a module of it: (importer, imported, line, the function it is
    written in or "" at module level).
    ``from pkg import name`` imports the submodule ``pkg.name`` when there is one, else ``pkg``."""
    mods = module_files(root)
    top = root.name

    def resolve(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    found = []
    for mod, path in mods.items():
        tree = ast.parse(path.read_text(), str(path))
        in_function: dict[int, str] = {}  # import node -> the outermost function it sits in
        for f in ast.walk(tree):
            if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for n in ast.walk(f):
                    if isinstance(n, (ast.Import, ast.ImportFrom)):
                        in_function.setdefault(id(n), f.name)
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([base] if base else []))
                subs = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in mods]
                names = subs if len(subs) == len(node.names) else [*subs, base]
            else:
                continue
            for name in names:
                target = resolve(name) if name.split(".")[0] == top else None
                if target and target != mod:
                    found.append((mod, target, node.lineno, in_function.get(id(node), "")))
    return found


def circles(edges: list[tuple[str, str, int, str]], leave_out: set[str] = frozenset()) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), sorted."""
    graph: dict[str, set[str]] = defaultdict(set)
    for a, b, _, _ in edges:
        if a not in leave_out and b not in leave_out:
            graph[a].add(b)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def heavy_modules(root: Path, heavy_packages: set[str] | None = None) -> set[str]:
    """Modules that import a heavy package at import time, directly or through another module of the package;
    ``heavy_packages`` None: every package outside the standard library and the package itself."""
    mods = module_files(root)

    def is_heavy(name: str) -> bool:
        top = name.split(".")[0]
        if heavy_packages is None:
            return bool(top) and top not in sys.stdlib_module_names and top not in (root.name, "__future__")
        return top in heavy_packages

    direct, deps = set(), defaultdict(set)
    for mod, path in mods.items():
        for node in ast.parse(path.read_text()).body:
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
            if any(is_heavy(n) for n in names):
                direct.add(mod)
    for a, b, _, lazy in imports(root):
        if not lazy:
            deps[a].add(b)
    heavy, grew = set(direct), True
    while grew:
        grew = False
        for mod in mods:
            if mod not in heavy and deps[mod] & heavy:
                heavy.add(mod)
                grew = True
    return heavy


def test_the_library_has_no_import_circles_counting_imports_inside_functions() -> None:
    found = circles(imports(SRC))
    assert found == [], f"import circles in src/cure (an import inside a function counts): {found}"


def import_closure(edges: list[tuple[str, str, int, str]], start: tuple[str, ...]) -> set[str]:
    """The modules importing ``start`` imports at import time (not inside functions)."""
    seen, todo = set(start), list(start)
    while todo:
        mod = todo.pop()
        for a, b, _, inside in edges:
            if a == mod and not inside and b not in seen:
                seen.add(b)
                todo.append(b)
    return seen


def test_imports_inside_functions_only_keep_heavy_packages_out() -> None:
    edges = imports(SRC)
    heavy, pod = heavy_modules(SRC, HEAVY), import_closure(edges, POD)
    not_stdlib = heavy_modules(SRC)
    lazy = [(a, b, line) for a, b, line, inside in edges if inside
            and b not in (not_stdlib if a in pod else heavy)]
    assert lazy == [], ("imports of light cure modules inside functions (move them to the module's top; an import "
                        f"that would make a circle means a module is in the wrong layer): {lazy}")


def _package(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


CIRCLE = {  # a circle closed by an import inside a function, as the library had them
    "pkg/__init__.py": "",
    "pkg/low.py": "def run():\n    from pkg.high import stage\n    return stage\n",
    "pkg/high.py": "from pkg.low import run\n\ndef stage():\n    return run\n",
    "pkg/other.py": "import pkg.low\n",
}


def test_the_checkers_find_a_circle_closed_inside_a_function(tmp_path: Path) -> None:
    root = _package(tmp_path, CIRCLE) / "pkg"
    edges = imports(root)
    assert ("pkg.low", "pkg.high", 2, "run") in edges
    assert circles(edges) == [["pkg.high", "pkg.low"]]
    assert circles(edges, leave_out={"pkg.high"}) == []
    assert [(a, b) for a, b, _, inside in edges if inside] == [("pkg.low", "pkg.high")]


@pytest.mark.skipif(shutil.which("lint-imports", path=str(Path(sys.executable).parent)) is None,
                    reason="import-linter is in the dev extra: make install")
def test_the_layer_contract_fails_on_a_circle_and_on_an_upward_import(tmp_path: Path) -> None:
    """The contract types pyproject uses, on a throwaway package: broken by a circle and by an import of the
    pipelines, kept once both are gone."""
    _package(tmp_path, {**CIRCLE, "pkg/stage.py": "import pipelines.training\n", "pipelines/__init__.py": "",
                        "pipelines/training.py": "", "components/__init__.py": ""})
    config = tmp_path / "contracts.toml"
    config.write_text(textwrap.dedent("""
        [tool.importlinter]
        root_packages = ["pkg"]
        include_external_packages = true

        [[tool.importlinter.contracts]]
        name = "below the pipelines"
        type = "forbidden"
        source_modules = ["pkg"]
        forbidden_modules = ["pipelines", "components"]

        [[tool.importlinter.contracts]]
        name = "no circles"
        type = "acyclic_siblings"
        ancestors = ["pkg"]
    """))
    lint = [str(Path(sys.executable).parent / "lint-imports"), "--config", str(config), "--no-cache"]
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    broken = subprocess.run(lint, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert broken.returncode == 1, broken.stdout + broken.stderr
    assert "0 kept, 2 broken" in broken.stdout
    assert "pkg.stage -> pipelines" in broken.stdout
    (tmp_path / "pkg/stage.py").write_text("")
    (tmp_path / "pkg/low.py").write_text("def run():\n    return None\n")
    kept = subprocess.run(lint, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert kept.returncode == 0, kept.stdout + kept.stderr
