"""The README's module map names exactly the modules in the tree, and the packaging lists every
package."""

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("spd_core", "spd_mcp")


def _map_paths() -> set[str]:
    text = (ROOT / "README.md").read_text()
    block = text.split("## Module map", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\s*[-*]\s+`([^`]+)`", block, flags=re.M))


def _tree_modules() -> set[str]:
    out = set()
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            if path.name != "__init__.py":
                out.add(str(path.relative_to(ROOT)))
    return out


def test_readme_module_map_matches_tree() -> None:
    named = {p for p in _map_paths() if p.endswith(".py")}
    tree = _tree_modules()
    assert not named - tree, f"README names modules that do not exist: {sorted(named - tree)}"
    assert not tree - named, f"modules missing from the README module map: {sorted(tree - named)}"


def test_readme_paths_exist() -> None:
    missing = [p for p in _map_paths() if not (ROOT / p).exists()]
    assert not missing, f"README module map names missing paths: {missing}"


def test_pyproject_lists_every_package() -> None:
    listed = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    found = {
        ".".join(p.parent.relative_to(ROOT).parts)
        for pkg in PACKAGES
        for p in (ROOT / pkg).rglob("__init__.py")
    } | {"spd_mcp.prompts"}
    assert listed == found, f"pyproject packages {sorted(listed)} != tree {sorted(found)}"
