"""The built-in protocol agent: an investigation through MCP alone, with no language model.

Steps, in order: model info; the behaviour the question asks about (chosen from the run's probe
mechanisms by the question's words, quoted phrases and the model's own answers; none when nothing
matches, and then the investigation ends inconclusive after a short survey); the model's answers on
the prompts circuits are found on; candidate circuits found on those prompts only (components whose
CI is frequent on the behaviour's prompts and rare on the others'; the strategy's own candidate:
an optimized circuit, the top CI components or find_components; one circuit optimised over all of
those prompts at once under stochastic masks, and its part the other behaviours do not use); each
candidate validated with validate_claim on held-out probes of the behaviour and on the other
behaviours' (necessity, specificity and sufficiency in three regimes, with intervals); steering with
the best set removed; hypotheses whose status is the validation's verdict; a graph artifact; an
explanation that cites the validation, claiming only what held; and a summary that states the
answer.

A step whose tool is missing or fails is recorded (research log, events.jsonl, transcript) and the
protocol carries on with what it has; the summary lists what was not done. In a swarm the task's
hypothesis picks the behaviour (when its words name one; else the question does) and its strategy
(strategies.py) picks the subject prompts and the strategy's candidate.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, TypeVar

import anyio

from spd_mcp.contract import BY_NAME
from spd_mcp.contract.circuits import CircuitResult, SharedCircuitResult
from spd_mcp.contract.components import CIResult, FindComponentsResult
from spd_mcp.contract.data import ComponentInfo
from spd_mcp.contract.interventions import SteerResultWire
from spd_mcp.contract.model import ModelInfo, ProbeList, ProbeRow, RunPromptResult
from spd_mcp.contract.records import ExplanationResult, GraphArtifactResult
from spd_mcp.contract.validation import ValidationResult
from spd_mcp.contract.wire import JobView, LongInput, Wire
from spd_mcp.launcher.agents import AgentContext, AgentResult, builtin_prune, is_model_tool
from spd_mcp.launcher.agents import builtin_read as rd
from spd_mcp.launcher.agents.builtin_read import StepFailed
from spd_mcp.launcher.agents.builtin_toy import ToySteps
from spd_mcp.launcher.mcp_link import connect, result_text
from spd_mcp.launcher.strategies import STRATEGIES, strategy_named

# The model "does the behaviour" when the expected token is top-1 on at least this share of prompts.
BEHAVIOUR_MIN_TOP1 = 0.5
FOUND_ON = 8  # prompts of the behaviour that candidate circuits are found on (never validated on)
CONTRAST_OTHERS = 3  # prompts of each other behaviour used to subtract general-purpose components
CONTRAST_MIN = (
    0.25  # a component joins the contrast set when its frequency here minus there is at least this
)
CANDIDATE_MAX = 20
HELD_OUT = 40  # held-out examples per validation
CONTROLS = 45
CIRCUIT_STEPS = 200
SHARED_STEPS = 300  # optimize_circuit over all FOUND_ON prompts at once, under stochastic masks
# the shared circuit's specific part: components active on at most this share of other prompts
SHARED_OTHERS_MAX = 0.5
SPECIFIC_OTHERS = 6  # prompts of each other behaviour that share is measured on (at the prediction)
JOB_POLL_S = 20.0
JOB_DEADLINE_S = 900.0
NO_LLM = (
    "No language model was used: this investigation is the built-in protocol of spd-investigate, "
    "a fixed sequence of tool calls whose conclusions follow from the measured numbers and the "
    "thresholds stated with them."
)
STATUS_OF = {"holds": "supported", "fails": "refuted", "inconclusive": "inconclusive"}
W = TypeVar("W", bound=Wire)


@dataclass
class Step:
    name: str
    ok: bool
    note: str


@dataclass
class Candidate:
    name: str  # where it came from, in words
    components: list[str]
    graph_id: int | None = None
    validation: ValidationResult | None = None


@dataclass
class Findings:
    mechanism: str | None = None
    why: str = ""
    mechanisms: list[str] = field(default_factory=list)
    prompts: list[ProbeRow] = field(default_factory=list)  # the prompts circuits are found on
    predictions: list[dict[str, Any]] = field(default_factory=list)
    candidates: list[Candidate] = field(default_factory=list)
    best: Candidate | None = None
    tokens: dict[str, str] = field(default_factory=dict)  # component -> what it promotes (harvest)
    steering: dict[str, Any] = field(default_factory=dict)
    hypotheses: list[dict[str, Any]] = field(default_factory=list)
    artifact: str | None = None


def run_builtin(ctx: AgentContext) -> AgentResult:
    ctx.events.emit(
        "agent_started",
        agent="builtin",
        model="none",
        tools=len(ctx.tools),
        note="built-in protocol: no language model",
    )
    return anyio.run(_run, ctx)


async def _run(ctx: AgentContext) -> AgentResult:
    result = AgentResult(status="completed", cost_usd=0.0)
    try:
        async with connect(ctx.url, ctx.token) as mcp:
            await Protocol(ctx, mcp, result).run()
    except Exception as exc:  # the connection itself failed: nothing else can be done
        result.status, result.error = "failed", f"{type(exc).__name__}: {exc}"[:1000]
    return result


def validated(cand: Candidate) -> ValidationResult:
    if cand.validation is None:
        raise StepFailed(f"the {cand.name} was not validated")
    return cand.validation


class Protocol:
    def __init__(self, ctx: AgentContext, mcp: Any, result: AgentResult) -> None:
        self.ctx, self.mcp, self.result = ctx, mcp, result
        self.offered = {t.name for t in ctx.tools}
        self.steps: list[Step] = []
        self.f = Findings()
        self.info: ModelInfo | None = None
        self.strategy = strategy_named(ctx.spec.strategy) if ctx.spec.strategy else STRATEGIES[0]
        self.probes: list[ProbeRow] = []
        self.toy: ToySteps | None = None
        self.measured: dict[
            tuple[tuple[str, ...], str], dict[str, float]
        ] = {}  # frequencies() results

    # --- plumbing ---------------------------------------------------------------------------------

    async def call(self, tool: str, args: dict[str, Any]) -> dict[str, Any]:
        """The tool's structured result; StepFailed when it is not offered, errs or cannot be
        called."""
        if tool not in self.offered:
            raise StepFailed(f"the server does not offer the tool {tool}")
        self.result.tool_calls += 1
        self.result.turns += 1
        self.result.model_tool_calls += is_model_tool(tool)
        self.ctx.transcript.write(
            {"type": "tool_call", "tool": tool, "arguments": args, "t": time.time()}
        )
        try:
            res = await self.mcp.call_tool(tool, args)
        except Exception as exc:
            text, is_error, data = f"MCP call failed: {type(exc).__name__}: {exc}", True, None
        else:
            text, is_error, data = result_text(res), bool(res.is_error), res.structured_content
        self.ctx.transcript.write(
            {
                "type": "tool_result",
                "tool": tool,
                "is_error": is_error,
                "content": text[:20_000],
                "t": time.time(),
            }
        )
        if is_error:
            self.result.tool_errors += 1
            self.ctx.events.emit("tool_error", tool_name=tool, message=text[:500])
            raise StepFailed(f"{tool} failed: {text[:400]}")
        if data is None:
            try:
                data = json.loads(text)
            except json.JSONDecodeError:
                data = {"text": text}
        return data if isinstance(data, dict) else {"value": data}

    async def ask(self, model: type[W], tool: str, args: dict[str, Any]) -> W:
        """The tool's result as its contract model (a long tool's once its job is done); a result
        that does not fit the model fails the step with pydantic's message."""
        res = await self.call(tool, args)
        if issubclass(BY_NAME[tool].input_model, LongInput):
            res = await self.until_done(tool, res)
        return model.model_validate(res)

    async def until_done(self, tool: str, res: dict[str, Any]) -> dict[str, Any]:
        """A long tool's result: polls get_job while its job runs."""
        deadline = time.monotonic() + JOB_DEADLINE_S
        view = JobView.model_validate(res)
        while view.status != "done" or view.result is None:
            if view.status in ("error", "cancelled", "done"):
                raise StepFailed(f"{tool} job {view.job_id} ended {view.status}: {view.error}")
            if time.monotonic() > deadline:
                raise StepFailed(
                    f"{tool} job {view.job_id} did not finish within {JOB_DEADLINE_S:g} s"
                )
            view = JobView.model_validate(
                await self.call("get_job", {"job_id": view.job_id, "wait_s": JOB_POLL_S})
            )
        return view.result

    def record(self, name: str, ok: bool, note: str) -> None:
        self.steps.append(Step(name, ok, note))
        self.ctx.events.emit(
            "protocol_step", step=name, outcome="ok" if ok else "failed", note=note[:1000]
        )

    async def log(self, heading: str, markdown: str) -> None:
        """A research-log entry (the server dates it); a failure to log is recorded, not raised."""
        try:
            await self.call("update_research_log", {"heading": heading, "markdown": markdown})
        except StepFailed as exc:
            self.ctx.events.emit(
                "protocol_step", step="log", outcome="failed", note=str(exc)[:1000]
            )

    async def step(self, name: str, fn: Any) -> None:
        """Run one step: its own log entry on success, a failure entry otherwise; never raises."""
        try:
            note = await fn()
        except StepFailed as exc:
            self.record(name, False, str(exc))
            await self.log(f"{name}: not done", f"This step failed and was skipped: {exc}")
        except Exception as exc:  # a bug or an unexpected result shape: still an honest outcome
            self.record(name, False, f"{type(exc).__name__}: {exc}")
            await self.log(
                f"{name}: not done", f"This step failed unexpectedly: {type(exc).__name__}: {exc}"
            )
        else:
            self.record(name, True, note)
            await self.log(name, note)

    # --- the protocol -----------------------------------------------------------------------------

    async def run(self) -> None:
        q, spec = self.ctx.spec.question, self.ctx.spec
        start = f"{NO_LLM}\n\nQuestion: {q}"
        if spec.swarm_id is not None:
            start += (
                f"\n\nTask {spec.task_index} of swarm {spec.swarm_id}. Hypothesis: "
                f"{spec.hypothesis or '(none: the strategy sets the starting point)'}. Strategy "
                f"'{self.strategy.name}': {self.strategy.description}"
            )
        await self.log("Built-in protocol started", start)
        await self.step("model info", self.model_info)
        if self.info is not None and not self.info.is_language_model:
            self.toy = ToySteps(self)
            await self.toy.run()
            await self.finish()
            return
        await self.step("behaviour", self.behaviour)
        if self.f.mechanism is None:
            await self.step("survey", self.survey)
        else:
            for name, fn in [
                ("predictions", self.predictions),
                ("candidate circuits", self.candidates),
                ("validation", self.validation),
                ("specific set", self.prune),
                ("component readouts", self.readouts),
                ("steering", self.steer),
                ("hypotheses", self.hypotheses),
                ("graph artifact", self.graph_artifact),
                ("explanation", self.explanation),
            ]:
                await self.step(name, fn)
        await self.finish()

    async def model_info(self) -> str:
        info = self.info = await self.ask(ModelInfo, "get_model_info", {})
        rows = "\n".join(f"| {r.layer} | {r.d_in} | {r.d_out} | {r.C} |" for r in info.layers)
        kind = (
            "a language model"
            if info.is_language_model
            else f"a toy model of {info.input_dim} input features"
        )
        return (
            f"Model: {info.architecture} ({info.run}), {kind}, "
            f"{info.n_components_total} components in {len(info.layers)} layers.\n\n"
            f"| layer | d_in | d_out | C |\n| --- | --- | --- | --- |\n{rows}"
        )

    async def all_probes(self) -> list[ProbeRow]:
        prompts: list[ProbeRow] = []
        while True:
            page = await self.ask(
                ProbeList, "list_probe_prompts", {"limit": 200, "offset": len(prompts)}
            )
            prompts += page.prompts
            if not page.prompts or len(prompts) >= page.total:
                return prompts

    async def behaviour(self) -> str:
        prompts = await self.all_probes()
        self.probes = prompts
        self.f.mechanisms = list(dict.fromkeys(p.mechanism for p in prompts))
        hypothesis = self.ctx.spec.hypothesis
        tools = self.ctx.tools
        rows = [p.model_dump() for p in prompts]
        mech, why = (
            await rd.pick_behaviour(self.call, hypothesis, rows, tools)
            if hypothesis
            else (None, "")
        )
        if mech is not None:
            why = f"{why} (in the task's hypothesis)"
        else:
            mech, why = await rd.pick_behaviour(self.call, self.ctx.spec.question, rows, tools)
        self.f.mechanism, self.f.why = mech, why
        if mech is None:
            return (
                f"No behaviour of this run matches the question: {why}. The run's probe behaviours "
                f"are {', '.join(self.f.mechanisms) or 'none'}."
            )
        mine = [p for p in prompts if p.mechanism == mech]
        first = min(self.strategy.prompt_index, max(len(mine) - FOUND_ON, 0))
        self.f.prompts = mine[first : first + FOUND_ON]
        shown = "\n".join(f"- `{p.text}` -> `{p.target_token}`" for p in self.f.prompts[:3])
        return (
            f"The question is about '{mech}': {why}. Circuits are found on {len(self.f.prompts)} "
            f"of its {len(mine)} probe prompts and validated on the others. The first "
            f"three:\n{shown}"
        )

    async def survey(self) -> str:
        by_mech: dict[str, list[ProbeRow]] = {}
        for p in self.probes:
            by_mech.setdefault(p.mechanism, []).append(p)
        lines = []
        for mech, ps in by_mech.items():
            example = ps[0]
            res = await self.ask(RunPromptResult, "run_prompt", {"text": example.text, "top_k": 3})
            top = rd.top_tokens(res)
            lines.append(
                f"- '{mech}' ({len(ps)} probes), e.g. `{example.text[-60:]}` -> expected "
                f"`{example.target_token}`, the model says `{top[0][0] if top else 'n/a'}`"
            )
        return (
            "What the run can be asked about instead:\n" + "\n".join(lines)
            if lines
            else "The run ships no probe prompts, so there is nothing to compare the question with."
        )

    async def predictions(self) -> str:
        lines = []
        for p in self.f.prompts:
            res = await self.ask(RunPromptResult, "run_prompt", {"text": p.text, "top_k": 20})
            top = rd.top_tokens(res)
            target = p.target_token
            entry = {
                "text": p.text,
                "target": target,
                "top1": top[0][0] if top else None,
                "top1_prob": top[0][1] if top else None,
                "p_target": rd.prob_of(top, target),
            }
            self.f.predictions.append(entry)
            lines.append(
                f"| `{rd.clip(p.text, 70)}` | `{target}` | `{entry['top1']}` "
                f"{rd.fmt(entry['top1_prob'])} | {rd.fmt(entry['p_target'])} |"
            )
        return (
            "| prompt | expected | top-1 (p) | p(expected), n/a when not in the top 20 |\n"
            "| --- | --- | --- | --- |\n" + "\n".join(lines)
        )

    def examples(self, prompts: list[ProbeRow]) -> list[dict[str, Any]]:
        return [{"text": p.text, "target_token": p.target_token} for p in prompts]

    async def candidates(self) -> str:
        notes = []
        for make in (
            self.contrast_candidate,
            self.strategy_candidate,
            self.shared_candidate,
            self.specific_shared_candidate,
        ):
            try:
                cand = await make()
            except StepFailed as exc:
                notes.append(f"- not found: {exc}")
                continue
            if cand.components and all(c.components != cand.components for c in self.f.candidates):
                self.f.candidates.append(cand)
                notes.append(
                    f"- {cand.name}: {len(cand.components)} components "
                    f"({rd.clip(', '.join(cand.components), 300)})"
                )
        if not self.f.candidates:
            raise StepFailed("no candidate circuit could be found:\n" + "\n".join(notes))
        return "Candidate circuits, found on the prompts above only:\n" + "\n".join(notes)

    def other_prompts(self, per_behaviour: int) -> list[ProbeRow]:
        """The first ``per_behaviour`` probes of each behaviour but the one investigated."""
        return [
            p
            for m in self.f.mechanisms
            if m != self.f.mechanism
            for p in [q for q in self.probes if q.mechanism == m][:per_behaviour]
        ]

    async def frequencies(self, prompts: list[ProbeRow], scope: str = "any") -> dict[str, float]:
        """Each component's share of the prompts on which its CI is above 0.1 (at any position, or
        at the prediction); measured once per set of prompts and scope, none for no prompts."""
        key = (tuple(p.text for p in prompts), scope)
        if prompts and key not in self.measured:
            res = await self.ask(
                FindComponentsResult,
                "find_components",
                {
                    "examples": self.examples(prompts),
                    "method": "ci",
                    "scope": scope,
                    "ci_threshold": 0.1,
                    "min_frequency": 0.01,
                    "limit": 1000,
                },
            )
            self.measured[key] = {r.component: r.frequency for r in res.components}
        return self.measured.get(key, {})

    async def contrast_candidate(self) -> Candidate:
        mine = await self.frequencies(self.f.prompts)
        there = await self.frequencies(self.other_prompts(CONTRAST_OTHERS))
        diff = sorted(((f - there.get(c, 0.0), f, c) for c, f in mine.items()), reverse=True)
        comps = [c for d, _, c in diff if d >= CONTRAST_MIN][:CANDIDATE_MAX]
        if not comps:
            raise StepFailed(
                "no component is active on the behaviour's prompts much more often than on the "
                "others'"
            )
        return Candidate(
            f"CI contrast set (the {len(comps)} components most often above CI 0.1 on this "
            "behaviour's prompts compared with the other behaviours', by at least "
            f"{CONTRAST_MIN:.0%})",
            comps,
        )

    async def strategy_candidate(self) -> Candidate:
        source, p = self.strategy.circuit_source, self.f.prompts[0]
        if source == "get_ci":
            res = await self.ask(
                CIResult, "get_ci", {"text": p.text, "position": -1, "threshold": 0.1, "top_k": 5}
            )
            return Candidate(
                "the top CI components at the prediction (get_ci)", rd.components_from_ci(res, 12)
            )
        if source == "find_components":
            found = await self.ask(
                FindComponentsResult,
                "find_components",
                {
                    "examples": self.examples(self.f.prompts[:4]),
                    "limit": 24,
                    **self.strategy.circuit_args,
                },
            )
            comps = [r.component for r in found.components]
            return Candidate("components needed on most of four prompts (find_components)", comps)
        args = {
            "text": p.text,
            "target_token": p.target_token,
            "position": -1,
            "steps": CIRCUIT_STEPS,
            **self.strategy.circuit_args,
        }
        circuit = await self.ask(CircuitResult, "optimize_circuit", args)
        comps = rd.circuit_components(circuit)
        if not comps:
            raise StepFailed(
                f"optimize_circuit returned no components: {rd.clip(circuit.summary, 300)}"
            )
        mask = self.strategy.circuit_args.get("mask", "ci")
        return Candidate(
            f"the optimized circuit of one prompt (optimize_circuit, {mask} masks)",
            comps,
            circuit.graph_id,
        )

    async def shared_candidate(self) -> Candidate:
        args = {
            "prompts": self.examples(self.f.prompts),
            "mask": "stochastic",
            "steps": SHARED_STEPS,
            "limit": 1000,
            "wait_s": 30,
        }
        shared = await self.ask(SharedCircuitResult, "optimize_circuit", args)
        comps = rd.circuit_components(shared)
        if not comps:
            raise StepFailed(
                f"optimize_circuit returned no components: {rd.clip(shared.summary, 300)}"
            )
        return Candidate(
            f"one circuit shared by the {len(self.f.prompts)} prompts (optimize_circuit over all "
            "of them, stochastic masks)",
            comps,
        )

    async def specific_shared_candidate(self) -> Candidate:
        """The shared circuit less the components the other behaviours use too: what is left should
        be as necessary for this behaviour and touch the others less."""
        shared = next(
            (c for c in self.f.candidates if c.name.startswith("one circuit shared")), None
        )
        if shared is None:
            raise StepFailed("needs the shared circuit")
        others = self.other_prompts(SPECIFIC_OTHERS)
        elsewhere = await self.frequencies(others, scope="position")
        comps = [c for c in shared.components if elsewhere.get(c, 0.0) <= SHARED_OTHERS_MAX]
        if not comps or len(comps) == len(shared.components):
            raise StepFailed(
                "the shared circuit has no part used by the other behaviours to drop"
                if comps
                else "every component of the shared circuit is used by the other behaviours too"
            )
        return Candidate(
            f"the shared circuit's components active (CI > 0.1) at the prediction on at most "
            f"{SHARED_OTHERS_MAX:.0%} of {len(others)} other behaviours' prompts",
            comps,
        )

    async def validation(self) -> str:
        exclude = [p.text for p in self.f.prompts]
        parts = []
        for cand in self.f.candidates:
            v = cand.validation = await self.ask(
                ValidationResult,
                "validate_claim",
                {
                    "components": cand.components,
                    "mechanism": self.f.mechanism,
                    "exclude": exclude,
                    "n_examples": HELD_OUT,
                    "n_controls": CONTROLS,
                    "wait_s": 30,
                },
            )
            parts.append(
                f"**{cand.name}** ({len(cand.components)} components)\n\n" + rd.validation_table(v)
            )
        self.f.best = max(self.f.candidates, key=lambda c: rd.validation_score(validated(c)))
        return (
            "Each candidate measured on held-out probes of the behaviour (never the prompts it was "
            "found on) and on the other behaviours' probes; a property holds when the lower end of "
            "its 95% interval clears the bar.\n\n"
            + "\n\n".join(parts)
            + f"\n\nThe strongest is {rd.the(self.f.best.name)}."
        )

    async def prune(self) -> str:
        return await builtin_prune.prune(self)

    def best(self) -> Candidate:
        if self.f.best is None or self.f.best.validation is None:
            raise StepFailed("no validated candidate circuit")
        return self.f.best

    async def readouts(self) -> str:
        comps = self.best().components[:6]
        lines = []
        for comp in comps:
            try:
                info = await self.ask(ComponentInfo, "get_component_info", {"component": comp})
            except StepFailed as exc:
                lines.append(f"- `{comp}`: no readout ({rd.clip(str(exc), 120)})")
                continue
            promoted = rd.promoted_tokens(info)
            if promoted:
                self.f.tokens[comp] = ", ".join(f"`{t}`" for t in promoted[:4])
            lines.append(f"- `{comp}` promotes {self.f.tokens.get(comp, 'nothing recorded')}")
        return (
            "What the strongest candidate's first components write, read through the unembedding:\n"
            + "\n".join(lines)
        )

    async def steer(self) -> str:
        comps = self.best().components
        p = self.held_out_prompt()
        res = await self.ask(
            SteerResultWire,
            "steer",
            {
                "text": p.text,
                "scales": {c: 0.0 for c in comps},
                "max_new_tokens": 5,
                "n_samples": 1,
                "temperature": 0.0,
                "seed": 0,
            },
        )
        base, steered = rd.steering_text(res)
        self.f.steering = {"baseline": base, "steered": steered, "prompt": p.text}
        return (
            f"On a held-out prompt (`{rd.clip(p.text, 80)}`, expected `{p.target_token}`), with "
            f"the {len(comps)} components at 0 the model continues `{steered}` instead of `{base}`."
        )

    def held_out_prompt(self) -> ProbeRow:
        used = {p.text for p in self.f.prompts}
        rest = [p for p in self.probes if p.mechanism == self.f.mechanism and p.text not in used]
        return rest[0] if rest else self.f.prompts[0]

    async def hypotheses(self) -> str:
        hyps = []
        if self.f.predictions:
            hits = sum(
                1
                for e in self.f.predictions
                if e["top1"] is not None and rd.norm_token(e["top1"]) == rd.norm_token(e["target"])
            )
            share = hits / len(self.f.predictions)
            hyps.append(
                (
                    "h_behaviour",
                    f"The model answers the '{self.f.mechanism}' prompts with the expected token "
                    f"as its top-1 on at least {BEHAVIOUR_MIN_TOP1:.0%} of them.",
                    "supported" if share >= BEHAVIOUR_MIN_TOP1 else "refuted",
                    [
                        f"run_prompt: the expected token is top-1 on {hits} of "
                        f"{len(self.f.predictions)} prompts ({share:.0%}; threshold "
                        f"{BEHAVIOUR_MIN_TOP1:.0%})"
                    ],
                )
            )
        best = self.f.best
        if best is not None and best.validation is not None:
            v, n = best.validation, len(best.components)
            vid = v.validation_id
            for hid, prop, claim in [
                (
                    "h_necessary",
                    "necessity",
                    f"Removing these {n} components breaks '{self.f.mechanism}' on held-out "
                    "prompts.",
                ),
                ("h_specific", "specificity", "Removing them leaves the other behaviours intact."),
                (
                    "h_sufficient",
                    "sufficiency",
                    f"These {n} components alone (and with everything else random) still "
                    f"give each held-out prompt its own answer.",
                ),
            ]:
                hyps.append(
                    (
                        hid,
                        claim,
                        STATUS_OF[rd.verdict(v, prop)],
                        [f"validate_claim {vid}: {rd.property_evidence(v, prop)}"],
                    )
                )
        lines = []
        for hid, statement, status, evidence in hyps:
            await self.call(
                "record_hypothesis",
                {
                    "hypothesis_id": hid,
                    "statement": statement,
                    "status": status,
                    "evidence": evidence,
                },
            )
            self.f.hypotheses.append(
                {"id": hid, "status": status, "evidence": evidence, "statement": statement}
            )
            lines.append(f"- {hid}: **{status}**. {statement} ({'; '.join(evidence)})")
        return "Hypotheses, each judged by a measurement:\n" + "\n".join(lines)

    async def graph_artifact(self) -> str:
        with_graph = [c for c in self.f.candidates if c.graph_id is not None]
        if not with_graph:
            return "No graph artifact: no candidate came with an attribution graph."
        best = self.f.best
        cand = best if best is not None and best.graph_id is not None else with_graph[0]
        caption = f"{cand.name} on `{rd.clip(self.f.prompts[0].text, 60)}`"
        if cand is not best and best is not None:  # the explained set has no graph of its own
            caption += (
                f" (a candidate, not the explained {best.name.removeprefix('the ')}, which has no "
                "attribution graph)"
            )
        res = await self.ask(
            GraphArtifactResult,
            "save_graph_artifact",
            {
                "graph_id": cand.graph_id,
                "artifact_id": f"circuit_{cand.graph_id}",
                "caption": caption,
            },
        )
        self.f.artifact = res.artifact_id
        return f"Saved {res.json_path} and {res.svg_path}.\n\n{res.markdown}"

    def held(self) -> list[str]:
        return rd.claimable(validated(self.best()))

    async def explanation(self) -> str:
        best = self.best()
        v = validated(best)
        held = self.held()
        claims = held or ["necessary", "specific"]
        roles = {
            comp: (
                f"promotes {self.f.tokens[comp]}" if comp in self.f.tokens else "member of the set"
            )
            for comp in best.components
        }
        res = await self.ask(
            ExplanationResult,
            "save_explanation",
            {
                "subject_prompt": self.f.prompts[0].text,
                "behaviour": f"{self.f.mechanism}: the model predicts the expected token",
                "explanation": rd.answer_text(
                    self.f.mechanism or "", best.name, best.components, v, held
                ),
                "components": [{"component": c, "role": r} for c, r in roles.items()],
                "evidence": [
                    {
                        "kind": "ablation",
                        "description": rd.clip(v.summary, 2000),
                        "reference": f"validation {v.validation_id}",
                    }
                ],
                "validation_ids": [v.validation_id],
                "claims": claims,
                "limitations": rd.limitations(v, held),
            },
        )
        return (
            f"Saved explanation #{res.explanation_index}: {res.status}, confidence "
            f"{res.confidence} (claims: {', '.join(claims)})."
        )

    async def finish(self) -> None:
        failed = [s for s in self.steps if not s.ok]
        if self.toy is not None:
            answer, conclusive = self.toy.answer()
        else:
            best = self.f.best
            answer = rd.summary_text(
                self.f.mechanism,
                self.f.why,
                best.name if best else None,
                best.components if best else [],
                best.validation if best else None,
                self.f.tokens,
                self.held() if best and best.validation else None,
            )
            conclusive = best is not None and best.validation is not None and bool(self.held())
        if failed:
            answer += (
                " Not done: "
                + "; ".join(f"{s.name} ({rd.clip(s.note, 200)})" for s in failed)
                + "."
            )
        text = f"{answer} {NO_LLM}"
        await self.log("Built-in protocol finished", text)
        conclusive = conclusive and not failed
        try:
            await self.call(
                "set_investigation_summary",
                {
                    "title": self.ctx.spec.question.splitlines()[0][:200],
                    "summary": text[:20_000],
                    "status": "completed" if conclusive else "inconclusive",
                },
            )
        except StepFailed as exc:
            self.record("summary", False, str(exc))
            failed = [s for s in self.steps if not s.ok]
        self.result.final_text = text
        if failed:
            self.result.status = "incomplete"
            self.result.error = f"{len(failed)} step(s) not done: " + ", ".join(
                s.name for s in failed
            )
