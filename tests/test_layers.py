"""The layers run one way: cure_cli -> cure_pipelines (pipelines/) -> cure_components (components/) -> cure.

Read from the sources (every import, at module level or inside a function): the library imports none of the layers
above it and never edits ``sys.path``; the components import no pipeline and no command; the pipelines no command.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# folder -> the top-level packages its code must not import
FORBIDDEN = {
    "src/cure": {"cure_cli", "cure_pipelines", "cure_components", "pipelines", "components"},
    "components": {"cure_cli", "cure_pipelines", "pipelines"},
    "pipelines": {"cure_cli"},
}


def imported_packages(path: Path) -> list[tuple[int, str]]:
    """(line, top-level package) of every absolute import in ``path``."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name.split(".")[0]) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append((node.lineno, node.module.split(".")[0]))
    return out


def sys_path_edits(path: Path) -> list[int]:
    """Lines that change ``sys.path`` (``sys.path.insert/append/extend``, assignments to it)."""
    lines = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        target = node.func.value if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) else None
        if isinstance(node, (ast.Assign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            target = next((t for t in targets if ast.unparse(t).startswith("sys.path")), None)
        if target is not None and ast.unparse(target) == "sys.path":
            lines.append(node.lineno)
    return lines


@pytest.mark.parametrize("folder", sorted(FORBIDDEN))
def test_no_upward_imports(folder: str) -> None:
    found = [f"{p.relative_to(ROOT)}:{line} imports {pkg}" for p in sorted((ROOT / folder).rglob("*.py"))
             for line, pkg in imported_packages(p) if pkg in FORBIDDEN[folder]]
    assert not found, "imports against the layers:\n" + "\n".join(found)


def test_the_library_never_edits_sys_path() -> None:
    found = [f"{p.relative_to(ROOT)}:{line}" for p in sorted((ROOT / "src" / "cure").rglob("*.py"))
             for line in sys_path_edits(p)]
    assert not found, "sys.path edited in the library: " + ", ".join(found)


def test_the_checks_see_what_they_look_for(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import sys\n\ndef f():\n    sys.path.insert(0, 'x')\n    import pipelines.training\n"
                   "    from cure_cli import main\n")
    assert [pkg for _, pkg in imported_packages(bad)] == ["sys", "pipelines", "cure_cli"]
    assert sys_path_edits(bad) == [4]
