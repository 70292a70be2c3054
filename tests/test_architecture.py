"""Imports flow one way: launcher -> nothing of ours but spd_mcp.contract and
spd_mcp.common; server -> spd_core, spd_mcp.contract and spd_mcp.common; spd_mcp.contract (the tool
contract) -> the standard library and pydantic; spd_mcp.common -> the standard library;
spd_core -> torch/einops/transformers only. Nothing imports tests."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

FORBIDDEN = {
    "spd_core": {"mcp", "submitit", "spd_mcp", "anthropic", "tests"},
    "spd_mcp/server": {"submitit", "spd_mcp.launcher", "tests"},
    "spd_mcp/launcher": {"torch", "spd_core", "spd_mcp.server", "transformers", "einops", "tests"},
    # the tool contract both sides import: the standard library and pydantic
    "spd_mcp/contract": {
        "torch",
        "spd_core",
        "spd_mcp.server",
        "spd_mcp.launcher",
        "spd_mcp.common",
        "mcp",
        "submitit",
        "transformers",
        "einops",
        "anyio",
        "anthropic",
        "tests",
    },
    # what both sides share: the standard library only
    "spd_mcp/common": {
        "torch",
        "spd_core",
        "spd_mcp.server",
        "spd_mcp.launcher",
        "mcp",
        "submitit",
        "transformers",
        "einops",
        "pydantic",
        "anyio",
        "tests",
    },
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _violations(package: str, banned: set[str]) -> list[str]:
    out = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for name in _imports(path):
            if any(name == b or name.startswith(b + ".") for b in banned):
                out.append(f"{path.relative_to(ROOT)} imports {name}")
    return out


def test_imports_flow_one_way() -> None:
    problems = [v for pkg, banned in FORBIDDEN.items() for v in _violations(pkg, banned)]
    assert not problems, "import direction broken (see this file's docstring):\n" + "\n".join(
        problems
    )


def test_the_checker_sees_a_violation(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import submitit\nfrom mcp.server import Server\n")
    assert _imports(bad) == {"submitit", "mcp.server"}


def test_the_contract_loads_no_torch() -> None:
    """Importing the contract (every tool's models) in a fresh interpreter loads neither torch nor
    anything of the server, the core or the MCP SDK."""
    code = (
        "import sys\nimport spd_mcp.contract\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('torch', 'spd_core', 'mcp', 'transformers', 'einops', 'numpy') "
        "or m.startswith(('spd_mcp.server', 'spd_mcp.launcher'))))\n"
        "print(len(spd_mcp.contract.TOOLS))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    loaded, n_tools = out.stdout.split("\n")[:2]
    assert loaded == "[]", f"importing spd_mcp.contract loaded {loaded}"
    assert int(n_tools) >= 20
