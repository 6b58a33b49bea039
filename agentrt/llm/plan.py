"""Planned tool calls (LLMCompiler style): a model writes a DAG, run step by step as inputs exist.

A plan is a list of steps ``{"id", "tool", "args", "after"}``.  A string in
``args`` may name an earlier step's result with the graph module's reference
syntax: ``"${search}"`` (the whole result, keeping its type),
``"${search.hits[0].url}"`` (a field), or ``"top: ${search.hits[0].title}"``
(interpolated).  The plan is checked whole before anything runs: its shape,
unknown tools, malformed or dangling references and cycles are one error the
model can read.  It then runs through the same graph engine as a config's
``[[tasks]]`` (:class:`~agentrt.graph.GraphState`): every step starts as
soon as the steps it references have succeeded, independent steps at once;
a failed step skips only its dependents, with the reason.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Final

import msgspec

from agentrt.errors import ConfigError, UnknownTool
from agentrt.graph import Graph, GraphState, Node, resolve
from agentrt.llm.calls import error_of, toolbox
from agentrt.llm.schema import ArgumentsError, Toolbox, ToolDef

if TYPE_CHECKING:
    from agentrt.context import Context

__all__ = ["MAX_STEPS", "PLAN_TOOL", "PlanError", "PlanResult", "Step", "plan_tool", "run_plan"]

#: the most steps one plan may hold
MAX_STEPS: Final = 1_000
#: the name a model calls to run a plan (see :func:`plan_tool`)
PLAN_TOOL: Final = "run_plan"


class Step(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """One step of a plan: call ``tool`` with ``args`` (references resolved)."""

    id: str
    tool: str
    args: dict[str, Any] = {}
    #: steps to wait for besides those ``args`` references
    after: list[str] = []


class PlanError(ConfigError):
    """The plan cannot run: bad shape, unknown tool, bad reference or a cycle;
    ``path`` is ``steps.<id>.<field>`` (or ``steps`` / ``steps[i]``)."""


class PlanResult(msgspec.Struct, kw_only=True):
    """What a plan did: each step's result, error (type and message) or skip reason.

    ``error`` is set when the plan was refused before anything ran.
    """

    results: dict[str, Any] = {}
    errors: dict[str, dict[str, str]] = {}
    skipped: dict[str, str] = {}
    #: steps in the order they finished
    order: list[str] = []
    #: every step, in the plan's order
    steps: list[str] = []
    error: dict[str, str] | None = None

    @property
    def ok(self) -> bool:
        """The plan ran and every step succeeded."""
        return self.error is None and not self.errors and not self.skipped

    def for_model(self) -> dict[str, Any]:
        """The plan's outcome as a model reads it: ``{"steps": {id: {"result": ...} |
        {"error": {...}} | {"skipped": why}}}``, or ``{"error": {...}}``."""
        if self.error is not None:
            return {"error": self.error}
        steps: dict[str, Any] = {}
        for sid in self.steps:
            if sid in self.results:
                steps[sid] = {"result": self.results[sid]}
            elif sid in self.errors:
                steps[sid] = {"error": self.errors[sid]}
            elif sid in self.skipped:
                steps[sid] = {"skipped": self.skipped[sid]}
        return {"steps": steps}


def _steps(plan: Any) -> list[Step]:
    if isinstance(plan, str | bytes):
        try:
            plan = msgspec.json.decode(plan)
        except msgspec.DecodeError as exc:
            raise PlanError("steps", f"not valid JSON ({exc})") from None
    if isinstance(plan, dict) and "steps" in plan:
        plan = plan["steps"]
    if isinstance(plan, list | tuple) and len(plan) > MAX_STEPS:
        raise PlanError("steps", f"{len(plan)} steps: at most {MAX_STEPS}")
    try:
        return msgspec.convert(plan, list[Step])
    except msgspec.ValidationError as exc:
        where = str(exc).rpartition(" - at `$")
        path = f"steps{where[2].rstrip('`')}" if where[1] else "steps"
        raise PlanError(path, where[0] or str(exc)) from None


def _graph(steps: list[Step], box: Toolbox) -> Graph:
    graph = Graph(on_error="continue")
    try:
        for s in steps:
            graph.add_node(Node(id=s.id, agent=s.tool, args=s.args, after=s.after))
        graph.validate()
    except ConfigError as exc:
        path = exc.path.replace("tasks.", "steps.", 1).replace(".agent", ".tool")
        msg = exc.message.replace("task ", "step ")
        raise PlanError(path, msg) from None
    for s in steps:
        if s.tool not in box or box[s.tool].kind == "plan":
            known = [n for n, d in box.items() if d.kind != "plan"]
            raise PlanError(f"steps.{s.id}.tool", str(UnknownTool(s.tool, known)))
    return graph


async def run_plan(
    ctx: Context, plan: Any, *, tools: Toolbox | None = None, raise_errors: bool = False
) -> PlanResult:
    """Run ``plan`` (steps, ``{"steps": [...]}`` or its JSON text) and return what it did.

    A plan that cannot run is returned with ``error`` set (raised as
    :class:`PlanError` with ``raise_errors``); a failed step is in
    ``errors`` (with ``raise_errors``, the first failure in plan order is
    raised once every started step has ended).
    """
    box = tools if tools is not None else toolbox(ctx)
    try:
        graph = _graph(_steps(plan), box)
    except PlanError as exc:
        if raise_errors:
            raise
        return PlanResult(error={"type": "PlanError", "message": str(exc)})
    state = GraphState(graph)
    out = PlanResult(steps=list(graph))
    failures: dict[str, BaseException] = {}
    running: dict[asyncio.Task[Any], str] = {}

    async def step(sid: str) -> Any:
        node = graph[sid]
        d: ToolDef = box[node.agent]
        args = d.validate(resolve(node.args, out.results, where=f"steps.{sid}.args"))
        if d.kind == "agent":
            if d.method:
                return await ctx.spawn_method(d.name, d.method, args)
            return await ctx.spawn(d.name, **args)
        return await ctx.tool(d.name, **args)

    try:
        while not state.done:
            for sid in state.ready():
                state.start(sid)
                running[asyncio.create_task(step(sid), name=f"plan step {sid}")] = sid
            if not running:
                break
            finished, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            for task in finished:
                sid = running.pop(task)
                failure = task.exception()
                out.order.append(sid)
                if failure is None:
                    out.results[sid] = task.result()
                    state.finish(sid, True)
                    continue
                failures[sid] = failure
                if isinstance(failure, ConfigError | ArgumentsError):
                    kind, message = type(failure).__name__, str(failure)
                else:
                    kind, message = error_of(failure)
                out.errors[sid] = {"type": kind, "message": message}
                state.finish(sid, False)
    finally:
        for task in running:
            task.cancel()
        if running:
            await asyncio.gather(*running, return_exceptions=True)
    out.skipped = {sid: why.replace("upstream", "step", 1) for sid, why in state.skipped.items()}
    if raise_errors:
        for sid in graph.order:
            if sid in failures:
                raise failures[sid]
    return out


def plan_tool(box: Toolbox) -> ToolDef:
    """A ``run_plan`` tool to offer a model beside ``box``'s tools: calling it runs
    the plan it writes (:func:`run_plan`), answered with :meth:`PlanResult.for_model`."""
    names = ", ".join(n for n, d in box.items() if d.kind != "plan") or "none"
    description = (
        "Run several tool calls as a plan: each step calls one tool; a string argument may "
        "use the result of an earlier step as ${step_id} (the whole result) or "
        "${step_id.field} / ${step_id[0]} (a part of it). Steps run as soon as the steps "
        f"they reference have finished, independent steps in parallel. Tools: {names}."
    )
    (steps,), defs = msgspec.json.schema_components([list[Step]], ref_template="#/$defs/{name}")
    params = {
        "type": "object",
        "properties": {"steps": steps},
        "required": ["steps"],
        "additionalProperties": False,
        "$defs": defs,
    }

    class _Args(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
        steps: list[dict[str, Any]]

    return ToolDef(PLAN_TOOL, description, params, _Args, kind="plan", runner=_run_planned)


async def _run_planned(ctx: Context, args: dict[str, Any], box: Toolbox) -> dict[str, Any]:
    """A model's ``run_plan`` call: the plan's outcome as the model reads it."""
    return (await run_plan(ctx, args["steps"], tools=box)).for_model()
