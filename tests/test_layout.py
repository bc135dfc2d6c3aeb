"""restore/ in four wings, held to the direction of their imports (docs/internals.md, "The library's layout").

Every import in every module of restore/ is read from its source (also those inside functions and under
TYPE_CHECKING: a lazy import is still a dependency), so a new module or a moved line that crosses a wing the wrong
way fails here, naming the file, the line and the rule.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

LIBRARY = Path(__file__).resolve().parents[1] / "restore"
WINGS = ("backups", "targets", "compare", "records")
# What each wing may import besides the shared helpers (restore/*.py that are not commands).
MAY_IMPORT: dict[str, set[str]] = {
    "backups": set(),  # a backup is what it is, wherever it is restored, however it is compared
    "targets": {"backups"},  # a target restores a source
    "compare": {"backups"},  # a dump's listing and header; never the server that holds the copy
    "records": set(),  # what a run leaves; it never restores or compares
    "helpers": set(),
}
# The commands at the top: they put the wings together, and nothing below imports them.
COMMANDS = {"__main__", "run", "session", "config", "take_backup"}
LONGEST = 600


def _place(module: str) -> str | None:
    """The wing (or "helpers", or "commands") of a module named ``restore.…``; None outside the library."""
    parts = module.split(".")
    if parts[0] != "restore":
        return None
    if len(parts) == 1:
        return "helpers"  # ``restore`` itself: its version
    if parts[1] in WINGS:
        return parts[1]
    return "commands" if parts[1] in COMMANDS else "helpers"


def _module_of(path: Path) -> str:
    rel = path.relative_to(LIBRARY.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import of the library in the file, wherever it stands."""
    tree = ast.parse(path.read_text(), str(path))
    package = _module_of(path) if path.name == "__init__.py" else _module_of(path).rpartition(".")[0]
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            # ``from restore.compare import manifest`` imports restore.compare.manifest: name the module itself
            found += [(node.lineno, f"{module}.{alias.name}" if module in ("restore", *(f"restore.{w}" for w in WINGS))
                       else module) for alias in node.names]
    return [(line, module) for line, module in found if module == "restore" or module.startswith("restore.")]


def _wrong_crossings() -> list[str]:
    wrong = []
    for path in sorted(LIBRARY.rglob("*.py")):
        here = _place(_module_of(path))
        assert here is not None
        for line, module in _imports(path):
            there = _place(module)
            if there is None or there == here or here == "commands" or there == "helpers":
                continue
            if there == "commands":
                wrong.append(f"{path.relative_to(LIBRARY.parent)}:{line} imports {module}: nothing in the library "
                             "imports the commands (run, session, config, __main__, take_backup)")
            elif there not in MAY_IMPORT[here]:
                allowed = ", ".join(sorted(MAY_IMPORT[here])) or "no other wing"
                wrong.append(f"{path.relative_to(LIBRARY.parent)}:{line} imports {module}: {here} may import "
                             f"the shared helpers and {allowed}, never {there}")
    return wrong


def test_no_import_crosses_a_wing_the_wrong_way() -> None:
    wrong = _wrong_crossings()
    assert not wrong, "\n".join(wrong)


def test_helpers_are_leaves_of_the_library() -> None:
    """The shared helpers at restore/'s top level import no wing: every wing may use them without a circle."""
    wrong = []
    for path in sorted(LIBRARY.glob("*.py")):
        if _place(_module_of(path)) != "helpers":
            continue
        wrong += [f"{path.name}:{line} imports {module}" for line, module in _imports(path)
                  if _place(module) not in ("helpers", None)]
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("wing", WINGS)
def test_each_wing_says_what_belongs_there_and_what_it_may_import(wing: str) -> None:
    doc = ast.get_docstring(ast.parse((LIBRARY / wing / "__init__.py").read_text()))
    assert doc, f"restore/{wing}/__init__.py has no docstring saying what belongs there"
    assert "May import" in doc, f"restore/{wing}/__init__.py: its docstring says what it may import"


def test_no_module_is_longer_than_600_lines() -> None:
    long = {str(p.relative_to(LIBRARY.parent)): n for p in LIBRARY.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > LONGEST}
    assert not long, f"split these (their concerns apart, as restore/compare/ was): {long}"


def test_the_walk_sees_a_wrong_crossing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The walk is not vacuous: a records module importing a target, and a compare module importing one lazily
    inside a function, are both named."""
    library = tmp_path / "restore"
    for wing in WINGS:
        (library / wing).mkdir(parents=True)
        (library / wing / "__init__.py").write_text('"""May import: nothing."""\n')
    (library / "__init__.py").write_text("")
    (library / "records" / "bad.py").write_text("from restore.targets.embedded import EmbeddedServer\n")
    (library / "compare" / "lazy.py").write_text("def f():\n    from restore.targets import rds\n")
    (library / "compare" / "fine.py").write_text("from restore.backups import toc\nfrom restore import errors\n")
    monkeypatch.setattr(sys.modules[__name__], "LIBRARY", library)
    wrong = _wrong_crossings()
    assert len(wrong) == 2, wrong
    assert any("records/bad.py:1" in w and "never targets" in w for w in wrong)
    assert any("compare/lazy.py:2" in w and "restore.targets.rds" in w for w in wrong)
