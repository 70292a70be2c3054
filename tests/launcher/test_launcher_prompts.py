"""The agent prompt: every tool it names exists, placeholders are all filled, the method is
there."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from spd_mcp.contract import TOOL_GROUPS, TOOL_NAMES
from spd_mcp.contract.model import ModelInfo
from spd_mcp.launcher.mcp_link import ToolInfo
from spd_mcp.launcher.prompting import (
    MAX_LOG_CHARS,
    PLACEHOLDER,
    fill,
    prompts_dir,
    render_kickoff,
    render_system_prompt,
)

ROOT = Path(__file__).resolve().parents[2]
TOOLS_MD = next(
    (
        p
        for p in (
            ROOT.parent / "shared" / "design" / "TOOLS.md",
            ROOT.parents[1] / "shared" / "design" / "TOOLS.md",
        )
        if p.exists()
    ),
    ROOT.parent / "shared" / "design" / "TOOLS.md",
)
TOOLISH = re.compile(
    r"\b(?:get|run|set|save|record|update|list|search|probe|find|optimize|cancel|"
    r"server|edit)_[a-z_]+\b"
)


def _templates() -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(prompts_dir().glob("*.md"))}


def test_prompts_come_from_this_tree() -> None:
    assert prompts_dir() == ROOT / "prompts"
    assert {"system.md", "methodology.md", "kickoff.md", "resume.md"} <= set(_templates())


def test_every_tool_the_prompt_names_exists() -> None:
    for name, text in _templates().items():
        backticked = {
            m for m in re.findall(r"`([^`]+)`", text) if re.fullmatch(r"[a-z]+(?:_[a-z]+)+", m)
        }
        unknown = (backticked | set(TOOLISH.findall(text))) - set(TOOL_NAMES)
        assert not unknown, f"{name} names tools that are not in the contract: {sorted(unknown)}"


def test_tool_names_match_tools_md() -> None:
    if not TOOLS_MD.exists():
        pytest.skip(f"{TOOLS_MD} not present")
    table_names = re.findall(r"^\| `([a-z_]+)` \|", TOOLS_MD.read_text(), flags=re.M)
    # validate_claim (the findings issue, #20) and export_edit came after TOOLS.md was written
    later = {"validate_claim", "export_edit"}
    assert sorted(table_names) == sorted(set(TOOL_NAMES) - later)
    assert len(set(TOOL_NAMES)) == len(TOOL_NAMES) == sum(len(g) for g in TOOL_GROUPS.values())


MODEL_INFO = ModelInfo(
    summary="A 2-layer LM.",
    run="tiny",
    description="",
    architecture="llama",
    is_language_model=True,
    dtype="float32",
    device="cpu",
    vocab_size=20,
    context_length=16,
    input_dim=None,
    n_params_target=100,
    n_components_total=2,
    layers=[],
    alive_source="none",
    weight_delta="negligible",
    metrics={},
    has_harvest=False,
    has_probe_suite=False,
    n_probe_prompts=0,
)


def _render(**kw) -> str:
    tools = [
        ToolInfo("get_ci", "Which components matter on this input?\nMore.", {}),
        ToolInfo("ablate", "Is this set necessary? Is it sufficient?", {}),
        ToolInfo("update_research_log", "Append markdown.", {}),
        ToolInfo("brand_new_tool", "Something new.", {}),
    ]
    args = dict(
        question="How does the model choose between he and she?",
        model_info=MODEL_INFO,
        tools=tools,
        max_turns=37,
        inv_id="inv-1",
        run="demo",
        agent="anthropic_api",
        started="2026-01-01T00:00:00",
    )
    args.update(kw)
    return render_system_prompt(**args)


def test_system_prompt_renders_everything() -> None:
    text = _render()
    assert not PLACEHOLDER.search(text), "unfilled placeholder left in the prompt"
    assert "How does the model choose between he and she?" in text
    assert "A 2-layer LM." in text and '"n_components_total": 2' in text
    assert "- `get_ci`: Which components matter on this input?" in text
    assert "**Other**\n- `brand_new_tool`: Something new." in text  # unknown tools still listed
    assert (
        text.index("**Components**") < text.index("**Interventions**") < text.index("**Records**")
    )
    assert "at most 37 turns" in text and "inv-1" in text
    for phrase in (
        "Sanity checks first",
        "Discarded hypotheses",
        "necessary",
        "sufficient",
        "optimistic",
        "Remaining questions",
        "next steps",
        "stochastic",
    ):
        assert phrase in text, f"methodology lost {phrase!r}"


def test_prompt_without_model_info_says_so() -> None:
    assert "call it first" in _render(model_info=None)


def test_kickoff_fresh_and_resumed() -> None:
    fresh = render_kickoff(None)
    assert "Begin the investigation" in fresh and "<research_log>" not in fresh
    resumed = render_kickoff("## 2026-01-01\n\nFound 1.mlp.up:3 necessary.")
    assert "interrupted" in resumed and "Found 1.mlp.up:3 necessary." in resumed
    long = render_kickoff("x" * (MAX_LOG_CHARS + 500) + "THE END")
    assert "earlier entries cut" in long and long.rstrip().endswith("</research_log>")
    assert "THE END" in long


def test_fill_checks_both_directions() -> None:
    assert fill("a {{x}} b", {"x": "1"}) == "a 1 b"
    with pytest.raises(AssertionError, match="no value"):
        fill("{{x}} {{y}}", {"x": "1"})
    with pytest.raises(AssertionError, match="match no placeholder"):
        fill("{{x}}", {"x": "1", "z": "2"})
