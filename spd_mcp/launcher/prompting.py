"""Render the agent's prompts from the templates in prompts/ (named `{{placeholders}}`)."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path

from spd_mcp.contract import TOOL_GROUPS
from spd_mcp.contract.model import ModelInfo
from spd_mcp.launcher.mcp_link import ToolInfo

PLACEHOLDER = re.compile(r"\{\{([a-z_]+)\}\}")
MAX_LOG_CHARS = 30_000
MAX_FACTS_CHARS = 4_000


def prompts_dir() -> Path:
    """The prompts/ of this source tree when present, else the installed `spd_mcp.prompts`."""
    tree = Path(__file__).resolve().parents[2] / "prompts"
    if (tree / "system.md").is_file():
        return tree
    return Path(str(resources.files("spd_mcp.prompts")))


def template(name: str) -> str:
    return (prompts_dir() / f"{name}.md").read_text()


def fill(text: str, values: Mapping[str, str]) -> str:
    """Replace every `{{name}}`; every placeholder must have a value and every value a
    placeholder."""
    used = set(PLACEHOLDER.findall(text))
    missing = used - set(values)
    assert not missing, f"no value for placeholders {sorted(missing)}; given {sorted(values)}"
    unused = set(values) - used
    assert not unused, (
        f"values {sorted(unused)} match no placeholder; placeholders are {sorted(used)}"
    )
    return PLACEHOLDER.sub(lambda m: values[m.group(1)], text)


def render_tool_groups(tools: Sequence[ToolInfo]) -> str:
    """The live tools as markdown, grouped as the contract groups them; unknown tools under
    'other'."""
    by_name = {t.name: t for t in tools}
    lines: list[str] = []
    seen: set[str] = set()
    for group, names in [*TOOL_GROUPS.items(), ("other", tuple(sorted(by_name)))]:
        present = [n for n in names if n in by_name and n not in seen]
        if not present:
            continue
        lines.append(f"**{group.capitalize()}**")
        for n in present:
            seen.add(n)
            first = (by_name[n].description.strip().splitlines() or [""])[0]
            lines.append(f"- `{n}`: {first}" if first else f"- `{n}`")
        lines.append("")
    return "\n".join(lines).rstrip()


def render_model_facts(info: ModelInfo | None) -> str:
    """get_model_info's answer as a short markdown block (its summary first)."""
    if info is None:
        return "(get_model_info could not be read before the start: call it first.)"
    summary = info.summary
    rest = info.model_dump(mode="json", exclude={"summary"})
    body = json.dumps(rest, indent=1, default=str)
    if len(body) > MAX_FACTS_CHARS:
        body = body[:MAX_FACTS_CHARS] + "\n... (truncated: call get_model_info for everything)"
    head = f"{summary}\n\n" if summary else ""
    return f"{head}```json\n{body}\n```"


def render_system_prompt(
    *,
    question: str,
    model_info: ModelInfo | None,
    tools: Sequence[ToolInfo],
    max_turns: int,
    inv_id: str,
    run: str,
    agent: str,
    started: str,
    swarm_context: str = "",
) -> str:
    return fill(
        template("system"),
        {
            "question": question.strip(),
            "swarm_context": swarm_context,
            "model_facts": render_model_facts(model_info),
            "tool_groups": render_tool_groups(tools),
            "methodology": template("methodology").strip(),
            "max_turns": str(max_turns),
            "inv_id": inv_id,
            "run": run,
            "agent": agent,
            "started": started,
        },
    )


def render_swarm_context(
    *, swarm_id: str | None, task_index: int | None, hypothesis: str | None, strategy: str | None
) -> str:
    """The swarm task's starting point for the system prompt ('' outside a swarm)."""
    if swarm_id is None:
        return ""
    from spd_mcp.launcher.strategies import strategy_named

    described = f"{strategy_named(strategy).description}" if strategy else "your own choice"
    return (
        fill(
            template("swarm_task"),
            {
                "swarm_id": swarm_id,
                "task_index": str(task_index),
                "hypothesis": hypothesis or "none given: start from the strategy below",
                "strategy": described,
            },
        ).rstrip()
        + "\n"
    )


def render_kickoff(research_log: str | None) -> str:
    """The first user message; on a restart it carries the research log so far (its tail if
    long)."""
    resume = ""
    if research_log is not None:
        log = research_log.strip() or "(the log is empty)"
        if len(log) > MAX_LOG_CHARS:
            log = "... (earlier entries cut)\n" + log[-MAX_LOG_CHARS:]
        resume = fill(template("resume"), {"research_log": log})
    return fill(template("kickoff"), {"resume_context": resume}).strip() + "\n"
