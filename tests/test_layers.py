"""The house's import rules (DESIGN section 2), read from the source with `ast`.

The floor (`worldloom/`) imports no stage; a stage imports the floor and what lies upstream of
it; the roof (`pipeline/`: the CLI, the main job, the report) imports anything and nothing
imports it. Imports inside functions count too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# package -> folder in the repository (pyproject.toml's package-dir)
FOLDERS = {"worldloom": "worldloom", "envs": "envs", "datasets": "datasets", "capture": "capture",
           "idm": "idm", "pretrain": "pretrain", "agent": "agent", "pipeline": "pipeline"}

# what each part may import besides itself; the floor is allowed everywhere
ALLOWED = {
    "worldloom": set(),
    "envs": set(),
    "datasets": set(),
    "capture": {"envs", "datasets"},
    "idm": {"datasets"},
    "pretrain": {"datasets", "idm"},
    "agent": {"envs", "datasets", "idm", "pretrain"},
    "pipeline": {"envs", "datasets", "capture", "idm", "pretrain", "agent"},
}


def _part_of(module: str) -> str | None:
    """`worldloom.idm.train` -> "idm"; `worldloom.io` -> "worldloom" (the floor); others None."""
    parts = module.split(".")
    if parts[0] != "worldloom":
        return None
    if len(parts) > 1 and parts[1] in FOLDERS and parts[1] != "worldloom":
        return parts[1]
    return "worldloom"


def _imports(path: Path, package: str) -> list[tuple[int, str]]:
    """(line, absolute module) of every import in a file, relative ones resolved."""
    tree = ast.parse(path.read_text(), filename=str(path))
    rel = path.relative_to(ROOT / FOLDERS[package]).with_suffix("")
    here = (["worldloom"] if package == "worldloom" else ["worldloom", package]) + list(rel.parts)
    if here[-1] == "__init__":
        here = here[:-1]
    else:
        here = here[:-1]  # the module's package
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.append((node.lineno, module))
            found += [(node.lineno, f"{module}.{alias.name}") for alias in node.names]
    return found


def violations() -> list[str]:
    """One line per import statement that breaks a rule."""
    bad: dict[tuple[str, int], str] = {}
    for package, folder in FOLDERS.items():
        for path in sorted((ROOT / folder).rglob("*.py")) if (ROOT / folder).is_dir() else []:
            for line, module in _imports(path, package):
                target = _part_of(module)
                if target is None or target == package or target == "worldloom":
                    continue
                if target not in ALLOWED[package]:
                    kind = ("the floor imports a stage" if package == "worldloom" else
                            "imports the roof" if target == "pipeline" else "imports sideways or upstream")
                    where = str(path.relative_to(ROOT))
                    bad.setdefault((where, line), f"{where}:{line}: {package} -> {module} ({kind})")
    return [bad[k] for k in sorted(bad)]


def test_every_import_follows_the_house_rules():
    bad = violations()
    assert not bad, "import rules broken (DESIGN section 2):\n" + "\n".join(bad)


def test_the_checker_sees_a_broken_rule(tmp_path, monkeypatch):
    """The rule check itself can fail: a stage module that imports the roof is reported."""
    fake_root = tmp_path / "repo"
    (fake_root / "idm").mkdir(parents=True)
    (fake_root / "idm" / "x.py").write_text("def f():\n    from worldloom.pipeline import cli\n"
                                            "from ..capture import driver\n")
    monkeypatch.setattr(__import__(__name__), "ROOT", fake_root)
    bad = violations()
    assert any("idm -> worldloom.pipeline" in b and "roof" in b for b in bad), bad
    assert any("idm -> worldloom.capture" in b and "sideways" in b for b in bad), bad


def test_pyproject_lists_every_folder_it_installs_so_an_install_is_quiet():
    """setuptools warns at every install (30 lines each) about a folder inside a package that its
    `packages` does not list, and about a `license` table; both would bury a real warning."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert isinstance(config["project"]["license"], str)  # an SPDX expression
    tool = config["tool"]["setuptools"]
    listed, folders = set(tool["packages"]), tool["package-dir"]
    for package, folder in folders.items():
        for sub in (ROOT / folder).rglob("*"):
            if sub.is_dir() and sub.name != "__pycache__" and any(f.is_file() for f in sub.iterdir()):
                name = ".".join([package, *sub.relative_to(ROOT / folder).parts])
                assert name in listed, f"{sub.relative_to(ROOT)} is installed but not in pyproject's packages as {name}"


if __name__ == "__main__":
    print("\n".join(violations()) or "every import follows the house rules")
