"""The built-in protocol agent: a fixed investigation through MCP alone, with no language model.

Steps, in order: model info, the run's probe prompts of the mechanism the question names,
predictions, CI, an optimized circuit (polled through get_job when it becomes a job), ablation
(necessity = remove, sufficiency = keep_only; deterministic and stochastic), steering, hypotheses
judged by the measured effects against the thresholds below, a graph artifact, an explanation and
the summary. A step whose tool is missing or fails is recorded (research log, events.jsonl,
transcript) and the protocol carries on with what it has; the summary lists what was not done.

In a swarm the task's hypothesis picks the mechanism (when its words name one; else the question
does) and its strategy (strategies.py) picks the subject prompt and where the candidate circuit
comes from: optimize_circuit (with the strategy's arguments), the top CI components, or
find_components over several prompts. A single investigation uses the first strategy.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import anyio

from spd_mcp.launcher.agents import AgentContext, AgentResult, is_model_tool
from spd_mcp.launcher.agents import builtin_read as rd
from spd_mcp.launcher.mcp_link import connect, result_text
from spd_mcp.launcher.strategies import STRATEGIES, strategy_named

# Removing the circuit is "necessary" when p(target) falls to at most this fraction of its value.
NECESSITY_MAX_KEPT = 0.5
# Keeping only the circuit is "sufficient" when p(target) stays at least this fraction of its value.
SUFFICIENCY_MIN_KEPT = 0.5
# The model "does the behaviour" when the expected token is top-1 on at least this share of prompts.
BEHAVIOUR_MIN_TOP1 = 0.5
MAX_PROMPTS = 3
FIND_COMPONENTS_EXAMPLES = 4
CIRCUIT_STEPS = 200
JOB_POLL_S = 20.0
JOB_DEADLINE_S = 900.0
NO_LLM = ("No language model was used: this investigation is the built-in protocol of spd-investigate, "
          "a fixed sequence of tool calls whose conclusions follow from the measured numbers and the "
          "thresholds stated with them.")


class StepFailed(Exception):
    """A step that could not be done; the message says why."""


@dataclass
class Step:
    name: str
    ok: bool
    note: str


@dataclass
class Findings:
    mechanism: str | None = None
    prompts: list[dict[str, Any]] = field(default_factory=list)
    predictions: list[dict[str, Any]] = field(default_factory=list)
    ci_components: list[str] = field(default_factory=list)
    circuit: list[str] = field(default_factory=list)
    circuit_source: str = ""
    graph_id: int | None = None
    ablations: dict[str, tuple[float | None, float | None, float | None]] = field(default_factory=dict)
    steering: dict[str, Any] = field(default_factory=dict)
    hypotheses: list[dict[str, Any]] = field(default_factory=list)
    artifact: str | None = None


def run_builtin(ctx: AgentContext) -> AgentResult:
    ctx.events.emit("agent_started", agent="builtin", model="none", tools=len(ctx.tools),
                    note="built-in protocol: no language model")
    return anyio.run(_run, ctx)


async def _run(ctx: AgentContext) -> AgentResult:
    result = AgentResult(status="completed", cost_usd=0.0)
    try:
        async with connect(ctx.url, ctx.token) as mcp:
            await Protocol(ctx, mcp, result).run()
    except Exception as exc:  # the connection itself failed: nothing else can be done
        result.status, result.error = "failed", f"{type(exc).__name__}: {exc}"[:1000]
    return result


class Protocol:
    def __init__(self, ctx: AgentContext, mcp: Any, result: AgentResult) -> None:
        self.ctx, self.mcp, self.result = ctx, mcp, result
        self.offered = {t.name for t in ctx.tools}
        self.steps: list[Step] = []
        self.f = Findings()
        self.info: dict[str, Any] = {}
        self.strategy = strategy_named(ctx.spec.strategy) if ctx.spec.strategy else STRATEGIES[0]
        self.mech_prompts: list[dict[str, Any]] = []

    # --- plumbing ---------------------------------------------------------------------------------

    async def call(self, tool: str, args: dict[str, Any]) -> dict[str, Any]:
        """The tool's structured result; StepFailed when it is not offered, errs or cannot be called."""
        if tool not in self.offered:
            raise StepFailed(f"the server does not offer the tool {tool}")
        self.result.tool_calls += 1
        self.result.turns += 1
        self.result.model_tool_calls += is_model_tool(tool)
        self.ctx.transcript.write({"type": "tool_call", "tool": tool, "arguments": args, "t": time.time()})
        try:
            res = await self.mcp.call_tool(tool, args)
        except Exception as exc:
            text, is_error, data = f"MCP call failed: {type(exc).__name__}: {exc}", True, None
        else:
            text, is_error, data = result_text(res), bool(res.is_error), res.structured_content
        self.ctx.transcript.write({"type": "tool_result", "tool": tool, "is_error": is_error,
                                   "content": text[:20_000], "t": time.time()})
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

    async def until_done(self, tool: str, res: dict[str, Any]) -> dict[str, Any]:
        """A long tool's result: polls get_job while the answer is `{job_id, status: running}`."""
        deadline = time.monotonic() + JOB_DEADLINE_S
        if res.get("job_id") and res.get("status") == "done" and "tool" in res:
            res = {"job_id": res["job_id"], "status": "running"}  # finished while answering: fetch its result
        while res.get("job_id") and res.get("status") in ("queued", "running"):
            if time.monotonic() > deadline:
                raise StepFailed(f"{tool} job {res['job_id']} did not finish within {JOB_DEADLINE_S:g} s")
            job = await self.call("get_job", {"job_id": res["job_id"], "wait_s": JOB_POLL_S})
            if job.get("status") == "done":
                return job.get("result") or {}
            if job.get("status") in ("failed", "cancelled", "error"):
                raise StepFailed(f"{tool} job {res['job_id']} ended {job.get('status')}: {job.get('error')}")
            res = {"job_id": res["job_id"], "status": job.get("status")}
        return res

    def record(self, name: str, ok: bool, note: str) -> None:
        self.steps.append(Step(name, ok, note))
        self.ctx.events.emit("protocol_step", step=name, outcome="ok" if ok else "failed", note=note[:1000])

    async def log(self, heading: str, markdown: str) -> None:
        """A research-log entry (the server dates it); a failure to log is recorded, not raised."""
        try:
            await self.call("update_research_log", {"heading": heading, "markdown": markdown})
        except StepFailed as exc:
            self.ctx.events.emit("protocol_step", step="log", outcome="failed", note=str(exc)[:1000])

    async def step(self, name: str, fn: Any) -> None:
        """Run one step: its own log entry on success, a failure entry otherwise; never raises."""
        try:
            note = await fn()
        except StepFailed as exc:
            self.record(name, False, str(exc))
            await self.log(f"{name}: not done", f"This step failed and was skipped: {exc}")
        except Exception as exc:  # a bug or an unexpected result shape: still an honest outcome
            self.record(name, False, f"{type(exc).__name__}: {exc}")
            await self.log(f"{name}: not done", f"This step failed unexpectedly: {type(exc).__name__}: {exc}")
        else:
            self.record(name, True, note)
            await self.log(name, note)

    # --- the protocol -----------------------------------------------------------------------------

    async def run(self) -> None:
        q, spec = self.ctx.spec.question, self.ctx.spec
        start = f"{NO_LLM}\n\nQuestion: {q}"
        if spec.swarm_id is not None:
            start += (f"\n\nTask {spec.task_index} of swarm {spec.swarm_id}. Hypothesis: "
                      f"{spec.hypothesis or '(none: the strategy sets the starting point)'}. Strategy "
                      f"'{self.strategy.name}': {self.strategy.description}")
        await self.log("built-in protocol started", start)
        circuit_step = ("optimized circuit" if self.strategy.circuit_source == "optimize_circuit"
                        else "candidate circuit")
        for name, fn in [("model info", self.model_info), ("probe prompts", self.probe_prompts),
                         ("predictions", self.predictions), ("causal importance", self.causal_importance),
                         (circuit_step, self.circuit), ("ablation", self.ablation),
                         ("steering", self.steer), ("hypotheses", self.hypotheses),
                         ("graph artifact", self.graph_artifact), ("explanation", self.explanation)]:
            await self.step(name, fn)
        await self.finish()

    async def model_info(self) -> str:
        self.info = await self.call("get_model_info", {})
        layers = self.info.get("layers") or []
        if not self.info.get("is_language_model", True):
            raise StepFailed("the run is not a language model; the built-in protocol investigates text "
                             "prompts only")
        rows = "\n".join(f"| {r.get('layer')} | {r.get('d_in')} | {r.get('d_out')} | {r.get('C')} |"
                         for r in layers)
        return (f"Model: {self.info.get('architecture')} ({self.info.get('run')}), "
                f"{self.info.get('n_components_total')} components in {len(layers)} layers.\n\n"
                f"| layer | d_in | d_out | C |\n| --- | --- | --- | --- |\n{rows}")

    async def probe_prompts(self) -> str:
        listing = await self.call("list_probe_prompts", {"limit": 200})
        prompts = [p for p in listing.get("prompts") or [] if isinstance(p, dict)]
        for tag in listing.get("mechanisms") or {}:  # a page may hold only the first mechanisms
            if not any(p.get("mechanism") == tag for p in prompts):
                more = await self.call("list_probe_prompts", {"mechanism": tag, "limit": 20})
                prompts += [p for p in more.get("prompts") or [] if isinstance(p, dict)]
        hypothesis = self.ctx.spec.hypothesis
        mech, why = rd.choose_mechanism(hypothesis, prompts) if hypothesis else (None, "")
        if mech is None or not rd.mechanism_scores(hypothesis or "", prompts).get(mech):
            mech, why = rd.choose_mechanism(self.ctx.spec.question, prompts)
        else:
            why = f"{why}, in the task's hypothesis"
        if mech is None:
            raise StepFailed(why)
        self.f.mechanism = mech
        self.mech_prompts = [p for p in prompts if p.get("mechanism") == mech]
        first = min(self.strategy.prompt_index, len(self.mech_prompts) - 1)
        self.f.prompts = self.mech_prompts[first:first + MAX_PROMPTS]
        shown = "\n".join(f"- `{p.get('text')}` -> `{p.get('target_token')}`" for p in self.f.prompts)
        return f"Chose {why}. Subject: probe prompt {first + 1} of the mechanism. Prompts studied:\n{shown}"

    async def predictions(self) -> str:
        if not self.f.prompts:
            raise StepFailed("no probe prompts were chosen")
        lines = []
        for p in self.f.prompts:
            res = await self.call("run_prompt", {"text": p["text"], "top_k": 20})
            top = rd.top_tokens(res)
            target = str(p.get("target_token") or "")
            entry = {"text": p["text"], "target": target, "top1": top[0][0] if top else None,
                     "top1_prob": top[0][1] if top else None, "p_target": rd.prob_of(top, target)}
            self.f.predictions.append(entry)
            lines.append(f"| `{p['text']}` | `{target}` | `{entry['top1']}` {rd.fmt(entry['top1_prob'])} | "
                         f"{rd.fmt(entry['p_target'])} |")
        return ("| prompt | expected | top-1 (p) | p(expected) (n/a: not in top 20) |\n"
                "| --- | --- | --- | --- |\n" + "\n".join(lines))

    @property
    def subject(self) -> dict[str, Any]:
        if not self.f.prompts:
            raise StepFailed("no subject prompt (the probe-prompt step did not succeed)")
        return self.f.prompts[0]

    async def causal_importance(self) -> str:
        res = await self.call("get_ci", {"text": self.subject["text"], "position": -1, "threshold": 0.1,
                                         "top_k": 5})
        self.f.ci_components = rd.components_from_ci(res)
        if not self.f.ci_components:
            return f"No component has CI above 0.1 at the last position. {res.get('summary', '')}"
        return (f"Components with the largest CI at the last position: {', '.join(self.f.ci_components)}. "
                f"{res.get('summary', '')}")

    async def circuit(self) -> str:
        """The candidate circuit from the strategy's source."""
        source = self.strategy.circuit_source
        if source == "get_ci":
            if not self.f.ci_components:
                raise StepFailed("the strategy takes the top CI components, but get_ci measured none")
            self.f.circuit, self.f.circuit_source = list(self.f.ci_components), "get_ci (top CI)"
            return (f"Strategy '{self.strategy.name}': the candidate circuit is the {len(self.f.circuit)} "
                    f"components of largest CI: {', '.join(self.f.circuit)}.")
        if source == "find_components":
            return await self.found_components()
        return await self.optimized_circuit()

    async def found_components(self) -> str:
        first = self.mech_prompts.index(self.subject)
        examples = [{"text": p["text"], "target_token": p["target_token"]}
                    for p in self.mech_prompts[first:first + FIND_COMPONENTS_EXAMPLES]]
        res = await self.call("find_components", {"examples": examples, "limit": 12,
                                                  **self.strategy.circuit_args})
        res = await self.until_done("find_components", res)
        self.f.circuit = [str(r["component"]) for r in res.get("components") or [] if isinstance(r, dict)]
        self.f.circuit_source = f"find_components over {len(examples)} prompts"
        if not self.f.circuit:
            raise StepFailed(f"find_components found no component shared by the prompts: {str(res)[:300]}")
        return (f"Strategy '{self.strategy.name}': components needed on most of {len(examples)} prompts: "
                f"{', '.join(self.f.circuit)}. {res.get('summary', '')}")

    async def optimized_circuit(self) -> str:
        p = self.subject
        res = await self.call("optimize_circuit", {"text": p["text"], "target_token": p["target_token"],
                                                   "position": -1, "steps": CIRCUIT_STEPS,
                                                   **self.strategy.circuit_args})
        res = await self.until_done("optimize_circuit", res)
        self.f.circuit = rd.circuit_components(res)
        self.f.graph_id = rd.graph_id_of(res)
        self.f.circuit_source = "optimize_circuit"
        if not self.f.circuit:
            raise StepFailed(f"optimize_circuit returned no circuit components: {str(res)[:300]}")
        return (f"Optimized circuit for `{p['target_token']}` ({len(self.f.circuit)} components, graph "
                f"{self.f.graph_id}): {', '.join(self.f.circuit)}. {res.get('summary', '')}")

    def components_under_test(self) -> list[str]:
        if not self.f.circuit and self.f.ci_components:
            self.f.circuit, self.f.circuit_source = list(self.f.ci_components), "get_ci (top CI)"
        if not self.f.circuit:
            raise StepFailed("no components to test: neither the optimized circuit nor CI was measured")
        return self.f.circuit

    async def ablation(self) -> str:
        comps, p = self.components_under_test(), self.subject
        lines, failures = [], []
        for mode in ("remove", "keep_only"):
            for regime in ("deterministic", "stochastic"):
                try:
                    res = await self.call("ablate", {"text": p["text"], "components": comps, "mode": mode,
                                                     "regime": regime, "position": -1,
                                                     "token": p["target_token"], "top_k": 5})
                except StepFailed as exc:
                    failures.append(f"{mode}/{regime}: {exc}")
                    continue
                before, after, kl = rd.probability_change(res)
                self.f.ablations[f"{mode}/{regime}"] = (before, after, kl)
                lines.append(f"| {mode} | {regime} | {rd.fmt(before)} | {rd.fmt(after)} | {rd.fmt(kl)} |")
        if not lines:
            raise StepFailed("; ".join(failures))
        table = ("| mode | regime | p(target) before | after | KL(before‖after) |\n"
                 "| --- | --- | --- | --- | --- |\n" + "\n".join(lines))
        return (f"Ablating {len(comps)} components from {self.f.circuit_source} on `{p['text']}` "
                f"(target `{p['target_token']}`):\n\n{table}"
                + (f"\n\nNot measured: {'; '.join(failures)}" if failures else ""))

    async def steer(self) -> str:
        comps, p = self.components_under_test(), self.subject
        scales = {c: 0.0 for c in comps}
        res = await self.call("steer", {"text": p["text"], "scales": scales, "max_new_tokens": 5,
                                        "n_samples": 1, "temperature": 0.0, "seed": 0})
        base, steered = rd.steering_text(res)
        self.f.steering = {"baseline": base, "steered": steered}
        return (f"Scaling the {len(comps)} components to 0: baseline continuation `{base}`, steered "
                f"`{steered}`. {res.get('summary', '')}")

    async def hypotheses(self) -> str:
        target = self.f.prompts[0]["target_token"] if self.f.prompts else "the expected token"
        hyps = []
        if self.f.predictions:
            hits = sum(1 for e in self.f.predictions if e["top1"] is not None
                       and rd.norm_token(e["top1"]) == rd.norm_token(e["target"]))
            share = hits / len(self.f.predictions)
            hyps.append(("h_behaviour",
                         f"The model predicts the expected token of the '{self.f.mechanism}' prompts as its "
                         f"top-1 on at least {BEHAVIOUR_MIN_TOP1:.0%} of them.",
                         "supported" if share >= BEHAVIOUR_MIN_TOP1 else "refuted",
                         [f"run_prompt: expected token top-1 on {hits} of {len(self.f.predictions)} prompts "
                          f"({share:.0%}; threshold {BEHAVIOUR_MIN_TOP1:.0%})"]))
        comps = ", ".join(self.f.circuit) or "the circuit (none was measured)"
        for hid, mode, claim, thresh, test in [
            ("h_necessary", "remove", f"Removing {{{comps}}} lowers p({target}) to at most "
             f"{NECESSITY_MAX_KEPT:.0%} of its value", NECESSITY_MAX_KEPT, lambda r: r <= NECESSITY_MAX_KEPT),
            ("h_sufficient", "keep_only", f"Keeping only {{{comps}}} keeps p({target}) at least "
             f"{SUFFICIENCY_MIN_KEPT:.0%} of its value", SUFFICIENCY_MIN_KEPT,
             lambda r: r >= SUFFICIENCY_MIN_KEPT)]:
            evidence, verdicts = [], []
            for regime in ("deterministic", "stochastic"):
                before, after, _ = self.f.ablations.get(f"{mode}/{regime}", (None, None, None))
                if before is None or after is None or before <= 0:
                    evidence.append(f"ablate {mode}/{regime}: not measured")
                    continue
                ratio = after / before
                verdicts.append(test(ratio))
                evidence.append(f"ablate {mode}/{regime}: p({target}) {before:.4f} -> {after:.4f} "
                                f"(ratio {ratio:.3f}; threshold {thresh:.2f})")
            status = "inconclusive" if not verdicts else ("supported" if all(verdicts) else "refuted")
            hyps.append((hid, f"{claim} (deterministic and stochastic regimes).", status, evidence))
        lines = []
        for hid, statement, status, evidence in hyps:
            await self.call("record_hypothesis", {"hypothesis_id": hid, "statement": statement,
                                                  "status": status, "evidence": evidence})
            self.f.hypotheses.append({"id": hid, "status": status, "evidence": evidence})
            lines.append(f"- {hid}: **{status}** ({'; '.join(evidence)})")
        return "Hypotheses judged by the measured effects:\n" + "\n".join(lines)

    async def graph_artifact(self) -> str:
        if self.f.graph_id is None and self.strategy.circuit_source != "optimize_circuit":
            return (f"No graph artifact: the strategy '{self.strategy.name}' takes its circuit from "
                    f"{self.f.circuit_source or self.strategy.circuit_source}, which draws no attribution graph.")
        if self.f.graph_id is None:
            raise StepFailed("no graph to save: optimize_circuit did not produce a graph_id")
        res = await self.call("save_graph_artifact", {
            "graph_id": self.f.graph_id, "artifact_id": f"circuit_{self.f.graph_id}",
            "caption": f"optimized circuit for {self.subject['target_token']!r}"})
        self.f.artifact = res.get("artifact_id")
        return f"Saved {res.get('json_path')} and {res.get('svg_path')}.\n\n{res.get('markdown', '')}"

    async def explanation(self) -> str:
        comps, p = self.components_under_test(), self.subject
        by_id = {h["id"]: h for h in self.f.hypotheses}
        evidence = [{"kind": "ablation", "description": "; ".join(h["evidence"])[:2000],
                     "reference": f"hypothesis {hid}"}
                    for hid, h in by_id.items() if hid != "h_behaviour" and h["evidence"]]
        supported = [hid for hid, h in by_id.items() if h["status"] == "supported"]
        confidence = "medium" if {"h_necessary", "h_sufficient"} <= set(supported) else "low"
        res = await self.call("save_explanation", {
            "subject_prompt": p["text"],
            "behaviour": f"predicts {p['target_token']!r} ({self.f.mechanism})",
            "explanation": (f"The components {', '.join(comps)} (from {self.f.circuit_source}) were tested as "
                            f"the circuit for this prediction. Supported hypotheses: "
                            f"{', '.join(supported) or 'none'}. {NO_LLM}"),
            "components": [{"component": c, "role": f"member of the circuit found by {self.f.circuit_source}"}
                           for c in comps],
            "evidence": evidence, "confidence": confidence,
            "limitations": ["a fixed protocol on at most three prompts; roles of single components untested",
                            "no language model interpreted the results"]})
        return f"Saved explanation #{res.get('explanation_index')} ({confidence} confidence)."

    async def finish(self) -> None:
        failed = [s for s in self.steps if not s.ok]
        done = [s.name for s in self.steps if s.ok]
        verdicts = ", ".join(f"{h['id']} {h['status']}" for h in self.f.hypotheses) or "none recorded"
        not_done = "; ".join(f"{s.name} ({s.note[:200]})" for s in failed)
        text = (f"Built-in protocol on mechanism '{self.f.mechanism}'. Done: {', '.join(done) or 'nothing'}. "
                f"Hypotheses: {verdicts}. " + (f"NOT done: {not_done}. " if failed else "") + NO_LLM)
        await self.log("built-in protocol finished", text)
        try:
            await self.call("set_investigation_summary", {
                "title": self.ctx.spec.question.splitlines()[0][:200],
                "summary": text[:20_000], "status": "inconclusive" if failed else "completed"})
        except StepFailed as exc:
            self.record("summary", False, str(exc))
            failed = [s for s in self.steps if not s.ok]
        self.result.final_text = text
        if failed:
            self.result.status = "incomplete"
            self.result.error = f"{len(failed)} step(s) not done: " + ", ".join(s.name for s in failed)
