"""The task of benchmarks/bench_llm.py and the scripted model's side of it.

The task, "compare N items": N independent ``lookup`` calls, then a
``compare`` that needs every lookup's value, then a ``summarize`` that needs
the comparison.  It is written once, as a plan (a DAG of steps whose
arguments reference earlier steps' results, ``${lookup_0.value}``), and
:func:`reply` (the script of :class:`agentrt.llm.ScriptedModel`) plays a
model that works through it one of three ways:

- ``sequential`` (ReAct): one tool call per model turn, the steps in order;
- ``parallel``: one turn per level of the DAG, every call of a level at once;
- ``plan`` (LLMCompiler style): one ``run_plan`` call holding the whole DAG.

Then a final answer, read from the last tool answer.  A dependent step's
arguments are taken from the tool answers in the conversation (by call id),
as a model would read them, so a client that loses or garbles an answer ends
with a wrong one.  Which task and way a request belongs to is in the prompt
(``#task {...}``); nothing else is shared between the benchmark and the
server.  Stdlib, msgspec and agentrt only (the peers' clients go through it too).
"""

from __future__ import annotations

import json
from typing import Any, Literal

import msgspec
from llm_agents import ISOLATED, summary_text, value_of

from agentrt.graph import find_refs, resolve
from agentrt.llm.scripted import Reply, Request, ScriptedCall

Way = Literal["sequential", "parallel", "plan"]
WAYS: tuple[Way, ...] = ("sequential", "parallel", "plan")
TAG = "#task "


class Task(msgspec.Struct, kw_only=True, frozen=True):
    """One run of the task: its size, way, tools' latency and names."""

    way: Way
    n: int
    tool_ms: float
    isolated: bool = False
    #: model calls and tools without latency (the warm-up runs)
    warmup: bool = False

    def tool(self, name: str) -> str:
        return name + ISOLATED if self.isolated else name

    def items(self) -> list[str]:
        return [f"item-{i}" for i in range(self.n)]

    def prompt(self) -> str:
        """The user's prompt, carrying the task for the script."""
        return (
            f"Compare these {self.n} items and tell me which is best: "
            f"{', '.join(self.items())}.\n{TAG}{msgspec.json.encode(self).decode()}"
        )

    @staticmethod
    def of(text: str) -> Task:
        _, sep, tag = text.rpartition(TAG)
        if not sep:
            raise ValueError("the prompt carries no #task")
        return msgspec.json.decode(tag.strip(), type=Task)

    def steps(self) -> list[dict[str, Any]]:
        """The task as a plan: steps ``{id, tool, args}``, in a topological order."""
        ms = 0.0 if self.warmup else self.tool_ms
        items = self.items()
        steps = [
            {"id": f"lookup_{i}", "tool": self.tool("lookup"), "args": {"item": it, "ms": ms}}
            for i, it in enumerate(items)
        ]
        values = [f"${{lookup_{i}.value}}" for i in range(self.n)]
        steps.append(
            {
                "id": "compare",
                "tool": self.tool("compare"),
                "args": {"items": items, "values": values, "ms": ms},
            }
        )
        steps.append(
            {
                "id": "summarize",
                "tool": self.tool("summarize"),
                "args": {"best": "${compare.best}", "value": "${compare.value}", "ms": ms},
            }
        )
        return steps

    def turns(self) -> list[list[dict[str, Any]]]:
        """The steps each tool-calling model turn issues (``plan``: none, see :func:`reply`)."""
        steps = self.steps()
        if self.way == "sequential":
            return [[s] for s in steps]
        if self.way == "parallel":
            return levels(steps)
        return []

    def expected(self) -> str:
        """The final answer a faithful run ends with."""
        best = max(self.items(), key=lambda it: (value_of(it), it))
        return summary_text(best, value_of(best))

    def shape(self) -> dict[str, int]:
        """What the way costs on the critical path: model turns, tool calls the model
        makes, tool functions that run, and the dependent depth of the tool calls."""
        steps = self.steps()
        depth = len(levels(steps))
        if self.way == "plan":
            return {"turns": 2, "tool_calls": 1, "tool_runs": len(steps), "depth": depth}
        turns = self.turns()
        return {
            "turns": len(turns) + 1,
            "tool_calls": len(steps),
            "tool_runs": len(steps),
            "depth": len(turns),
        }


def levels(steps: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """The steps grouped by their depth in the DAG (a level needs only earlier levels)."""
    level: dict[str, int] = {}
    for s in steps:
        level[s["id"]] = 1 + max((level[d] for d in find_refs(s["args"])), default=0)
    out: list[list[dict[str, Any]]] = [[] for _ in range(max(level.values(), default=0))]
    for s in steps:
        out[level[s["id"]] - 1].append(s)
    return out


def _answers(messages: list[dict[str, Any]]) -> dict[str, Any]:
    """The tool answers of the conversation so far, by step id (``call_<step>``)."""
    out: dict[str, Any] = {}
    for m in messages:
        cid = str(m.get("tool_call_id", ""))
        if m.get("role") != "tool" or not cid.startswith("call_"):
            continue
        content = m.get("content")
        if isinstance(content, list):  # content parts, as some clients send them
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        try:
            out[cid.removeprefix("call_")] = json.loads(content or "null")
        except ValueError:
            out[cid.removeprefix("call_")] = content
    return out


def _call(step: dict[str, Any], results: dict[str, Any]) -> ScriptedCall:
    args = resolve(step["args"], results, where=f"steps.{step['id']}.args")
    return ScriptedCall(step["tool"], args, id=f"call_{step['id']}")


def reply(req: Request) -> Reply:
    """The scripted model: the next turn of the request's task, in its way."""
    task = Task.of(req.last_user_text())
    delay = 0.0 if task.warmup else None
    answers = _answers(req.messages)
    turn = req.turn()
    if task.way == "plan":
        if turn == 0:
            call = ScriptedCall("run_plan", {"steps": task.steps()}, id="call_plan")
            return Reply(tool_calls=[call], delay=delay)
        plan = answers.get("plan")
        got = plan.get("steps", {}).get("summarize", {}) if isinstance(plan, dict) else {}
        result = got.get("result")
    else:
        turns = task.turns()
        if turn < len(turns):
            try:
                calls = [_call(s, answers) for s in turns[turn]]
            except Exception as exc:  # a lost or garbled answer: say so and stop
                return Reply(text=f"FAILED: {exc}", delay=delay)
            return Reply(tool_calls=calls, delay=delay)
        result = answers.get("summarize")
    if isinstance(result, dict) and isinstance(result.get("summary"), str):
        return Reply(text=result["summary"], delay=delay)
    return Reply(text=f"FAILED: no summary in the answers ({str(answers)[:200]})", delay=delay)
