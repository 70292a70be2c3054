"""Bad tool arguments reach the agent as one-line tool errors naming what is valid, also when the
server runs under ``python -O``, which strips every ``assert``: checks on input raise
``spd_core.errors.InvalidInput`` (or another ValueError), never assert.

Each bad call goes to the real server CLI serving the tiny language-model run
(``tests.server.serve_tiny``) over stdio through the real MCP SDK client, once under ``python -O``
and once without (the second route): both must answer isError with the same one-line message.
"""

import ast
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from mcp import Client, StdioServerParameters

pytestmark = pytest.mark.slow  # starts two server processes (torch import: seconds)

ROOT = Path(__file__).resolve().parents[2]
TEXT = "the cat sat on the"  # 5 tokens in the tiny run's word tokenizer

# (tool, arguments, words the message must hold: what was wrong and what is valid)
BAD_CALLS: list[tuple[str, dict[str, Any], tuple[str, ...]]] = [
    (
        "ablate",
        {"text": TEXT, "components": ["0.mlp.up:0"], "position": 99},
        ("position 99 out of range", "valid: -5..4"),
    ),
    ("get_component_info", {"component": "9.mlp.up:0"}, ("9.mlp.up", "valid", "0.mlp.up")),
    ("probe_component", {"component": "0.mlp.up:99", "text": TEXT}, ("99", "0..7")),
    (
        "ablate",
        {"text": TEXT, "components": ["0.mlp.up:0"], "regime": "bogus"},
        ("regime", "deterministic", "stochastic", "adversarial"),
    ),
    (
        "ablate",
        {"text": TEXT, "components": ["0.mlp.up:0"], "regime": []},
        ("at least one regime", "valid: deterministic, stochastic, adversarial"),
    ),
    ("get_ci", {"text": TEXT, "top_k": 0}, ("top_k", "greater than or equal to 1")),
    ("run_prompt", {"text": TEXT, "edit_id": "e99"}, ("unknown edit_id 'e99'", "known edit ids")),
    # reaches spd_core.analysis.validation.held_out's check (an assert before: under -O the agent
    # was told instead that no example was left once the excluded prompts were removed)
    (
        "validate_claim",
        {"components": ["0.mlp.up:0"], "mechanism": "nonesuch", "wait_s": 0},
        ("no probe has mechanism 'nonesuch'", "valid: copying, ioi, recall"),
    ),
]


def _params(ws: Path, optimize: bool) -> StdioServerParameters:
    flags = ["-O"] if optimize else []
    return StdioServerParameters(
        command=sys.executable,
        args=[
            *flags,
            "-m",
            "tests.server.serve_tiny",
            "lm",
            "--workspace",
            str(ws),
            "--device",
            "cpu",
        ],
        cwd=str(ROOT),
    )


async def _messages(ws: Path, optimize: bool) -> list[str]:
    out = []
    async with Client(_params(ws, optimize)) as c:
        for tool, args, _ in BAD_CALLS:
            r = await c.call_tool(tool, args)
            assert r.is_error, (
                f"{tool}({args}) should fail (-O: {optimize}): {r.structured_content}"
            )
            out.append(r.content[0].text)
    return out


def test_the_flag_strips_asserts() -> None:
    """``python -O`` is what the test claims it is: asserts are gone."""
    code = "assert False, 'not stripped'; import sys; print(sys.flags.optimize)"
    res = subprocess.run(
        [sys.executable, "-O", "-c", code], capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 0 and res.stdout.strip() == "1", res.stderr


@pytest.mark.anyio
async def test_bad_arguments_give_the_same_one_line_errors_with_and_without_O(
    tmp_path: Path,
) -> None:
    optimized = await _messages(tmp_path / "O", optimize=True)
    plain = await _messages(tmp_path / "plain", optimize=False)
    for (tool, args, words), msg, ref in zip(BAD_CALLS, optimized, plain, strict=True):
        assert "\n" not in msg.strip(), f"{tool}({args}): not one line: {msg!r}"
        assert all(w in msg for w in words), f"{tool}({args}): {msg!r} lacks {words}"
        assert "internal error" not in msg and "AssertionError" not in msg, msg
        assert msg == ref, f"{tool}({args}) under -O: {msg!r}; without: {ref!r}"


def test_no_assert_in_the_analyses_or_the_server_names_what_is_valid() -> None:
    """A message naming what is valid is written for the agent, so its check must be a ``require``
    (it would vanish under -O as an assert); asserts left there are internal invariants."""
    found = []
    for package in ("spd_core/analysis", "spd_mcp/server"):
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if not isinstance(node, ast.Assert) or node.msg is None:
                    continue
                if "valid" in ast.unparse(node.msg):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not found, f"asserts that guard input (use spd_core.errors.require): {found}"
