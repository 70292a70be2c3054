"""Re-test claimed circuits with the server's tools, recording every call and its full result.

For each claim: find its subject prompt among the run's probe prompts (its mechanism and target),
take the subject plus the next `PROMPTS_PER_CLAIM - 1` probe prompts of that mechanism, and ablate
the claimed components on each: mode `remove` (necessity) and `keep_only` (sufficiency), both in
the deterministic and the stochastic regime. Every number kept is read from a recorded result and
names the call it came from (`call`: its line in tool_calls.jsonl).

necessity[regime]   = mean over prompts of 1 - p_after / p_before   (mode remove)
sufficiency[regime] = mean over prompts of min(p_after / p_before, 1) (mode keep_only)
verified_effect     = mean of the four (ranks the claims)

The verdicts come from one `validate_claim` call per claim whose mechanism is known: the claimed set
on up to `HELD_OUT` held-out probes of its mechanism (the subject excluded) and the other
mechanisms' probes, the same measurement the built-in protocol and the grader use; each property is
supported (holds), refuted (fails) or inconclusive. A claim whose subject is no probe prompt keeps
the verdicts of the ablations above (at least `VERDICT_MIN` in both regimes).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spd_mcp.contract.interventions import AblateResult
from spd_mcp.contract.model import ProbeList, ProbeRow, RunPromptResult
from spd_mcp.contract.validation import ValidationResult
from spd_mcp.contract.wire import JobView
from spd_mcp.launcher.agents.builtin_read import top_tokens
from spd_mcp.launcher.swarm_claims import Claim

PROMPTS_PER_CLAIM = 4
REGIMES = ("deterministic", "stochastic")
MODES = {"remove": "necessity", "keep_only": "sufficiency"}
STOCHASTIC_SAMPLES = 8
SEED = 0
# A verdict of the re-test without a mechanism: necessity (sufficiency) at least this in both
# regimes.
VERDICT_MIN = 0.5
HELD_OUT = 40
STATUS = {"holds": "supported", "fails": "refuted", "inconclusive": "inconclusive"}
JOB_POLL_S = 30


class Recorder:
    """Calls tools through an MCP client and appends {call, tool, arguments, result} to a JSONL
    file."""

    def __init__(self, client: Any, path: Path) -> None:
        self.client, self.path = client, path
        self.n = sum(1 for _ in path.open()) if path.exists() else 0

    def record(self, tool: str, arguments: dict[str, Any], result: Any, is_error: bool) -> int:
        self.n += 1
        with self.path.open("a") as f:
            f.write(
                json.dumps(
                    {
                        "call": self.n,
                        "tool": tool,
                        "arguments": arguments,
                        "is_error": is_error,
                        "result": result,
                        "t": round(time.time(), 3),
                    },
                    default=str,
                )
                + "\n"
            )
        return self.n

    async def call(self, tool: str, arguments: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """(call id, structured result); RuntimeError (after recording) when the tool errs."""
        res = await self.client.call_tool(tool, arguments)
        data = res.structured_content
        if data is None:
            text = "\n".join(getattr(c, "text", "") for c in res.content)
            try:
                data = json.loads(text)
            except json.JSONDecodeError:
                data = {"text": text}
        call = self.record(tool, arguments, data, bool(res.is_error))
        if res.is_error:
            raise RuntimeError(f"{tool} (call {call}) failed: {json.dumps(data)[:400]}")
        return call, data


@dataclass
class Retest:
    claim_id: str
    mechanism: str | None
    target: str | None
    prompts: list[dict[str, Any]] = field(default_factory=list)  # {text, target, probe_index}
    measurements: list[dict[str, Any]] = field(default_factory=list)
    scores: dict[str, float | None] = field(default_factory=dict)
    verdicts: dict[str, str] = field(default_factory=dict)
    validation: dict[str, Any] = field(
        default_factory=dict
    )  # {call, validation_id, summary, verdicts}
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


async def all_probe_prompts(rec: Recorder) -> list[ProbeRow]:
    """Every probe prompt of the run, following list_probe_prompts' pages."""
    out: list[ProbeRow] = []
    while True:
        _, data = await rec.call("list_probe_prompts", {"limit": 200, "offset": len(out)})
        page = ProbeList.model_validate(data)
        out += page.prompts
        if not page.prompts or len(out) >= page.total:
            return out


def choose_prompts(claim: Claim, probes: list[ProbeRow]) -> tuple[str | None, list[ProbeRow]]:
    """The claim's mechanism (None if its subject is no probe prompt) and the prompts to re-test
    on."""
    subject = next((p for p in probes if p.text == claim.subject_prompt), None)
    if subject is None:
        return None, []
    mech = subject.mechanism
    same = [p for p in probes if p.mechanism == mech and p.text != claim.subject_prompt]
    return mech, [subject, *same[: PROMPTS_PER_CLAIM - 1]]


def _mean(xs: list[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def score(measurements: list[dict[str, Any]]) -> tuple[dict[str, float | None], dict[str, str]]:
    """necessity_/sufficiency_<regime>, verified_effect, and the verdicts, from the measurements."""
    scores: dict[str, float | None] = {}
    for mode, name in MODES.items():
        for regime in REGIMES:
            ratios = [
                m["p_after"] / m["p_before"]
                for m in measurements
                if m["mode"] == mode and m["regime"] == regime and m["p_before"] > 0
            ]
            vals = [1.0 - r for r in ratios] if mode == "remove" else [min(r, 1.0) for r in ratios]
            scores[f"{name}_{regime}"] = _mean(vals)
    parts = [v for v in scores.values() if v is not None]
    scores["verified_effect"] = _mean(parts) if len(parts) == len(MODES) * len(REGIMES) else None
    verdicts = {}
    for name, kind in (("necessity", "necessary"), ("sufficiency", "sufficient")):
        vals = [scores[f"{name}_{r}"] for r in REGIMES]
        if any(v is None for v in vals):
            verdicts[kind] = "not measured"
        else:
            verdicts[kind] = "supported" if all(v >= VERDICT_MIN for v in vals) else "refuted"  # type: ignore[operator]
    return scores, verdicts


async def retest_claim(rec: Recorder, claim: Claim, probes: list[ProbeRow]) -> Retest:
    mech, chosen = choose_prompts(claim, probes)
    prompts = [(p.text, p.target_token, p.index) for p in chosen]  # (text, target, probe index)
    if not prompts:  # not a probe prompt: re-test on the subject alone, for the model's own top-1
        call, data = await rec.call("run_prompt", {"text": claim.subject_prompt, "top_k": 1})
        top = top_tokens(RunPromptResult.model_validate(data))
        if not top:
            return Retest(
                claim.claim_id, None, None, error=f"run_prompt (call {call}) gave no prediction"
            )
        prompts = [(claim.subject_prompt, top[0][0], None)]
    out = Retest(claim.claim_id, mech, prompts[0][1])
    for text, target, index in prompts:
        out.prompts.append({"text": text, "target": target, "probe_index": index})
        for mode in MODES:
            args = {
                "text": text,
                "components": list(claim.components),
                "mode": mode,
                "regime": list(REGIMES),
                "position": -1,
                "token": target,
                "top_k": 3,
                "n_samples": STOCHASTIC_SAMPLES,
                "seed": SEED,
            }
            call, data = await rec.call("ablate", args)
            res = AblateResult.model_validate(data)
            before = res.token_prob_before
            for r in res.regimes:
                if r.regime in REGIMES and before is not None and r.token_prob_after is not None:
                    out.measurements.append(
                        {
                            "prompt": len(out.prompts) - 1,
                            "mode": mode,
                            "regime": r.regime,
                            "p_before": before,
                            "p_after": r.token_prob_after,
                            "call": call,
                        }
                    )
    out.scores, out.verdicts = score(out.measurements)
    if mech is not None:
        await validate(rec, out, claim)
    return out


async def validate(rec: Recorder, out: Retest, claim: Claim) -> None:
    """The claim's verdicts from validate_claim on held-out probes of its mechanism (polled as a
    job)."""
    call, data = await rec.call(
        "validate_claim",
        {
            "components": list(claim.components),
            "mechanism": out.mechanism,
            "exclude": [claim.subject_prompt],
            "n_examples": HELD_OUT,
            "wait_s": 30,
        },
    )
    view = JobView.model_validate(data)
    while view.status in ("queued", "running"):
        call, data = await rec.call("get_job", {"job_id": view.job_id, "wait_s": JOB_POLL_S})
        view = JobView.model_validate(data)
    if view.status != "done" or view.result is None:
        out.error = f"validate_claim (call {call}) ended {view.status}: {view.error}"
        return
    v = ValidationResult.model_validate(view.result)
    out.verdicts = {
        "necessary": STATUS[v.necessity],
        "sufficient": STATUS[v.sufficiency],
        "specific": STATUS[v.specificity],
    }
    out.validation = {
        "call": call,
        "validation_id": v.validation_id,
        "summary": v.summary,
        "n_examples": v.n_examples,
    }
