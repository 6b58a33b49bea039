"""The agent's side of orchestration: ``ctx`` and the ``@tool`` registry.

An agent function whose first parameter is named ``ctx`` receives a
:class:`Context` (async agents) or :class:`SyncContext` (sync agents).  Through
it the agent, from inside its own process, calls tools, spawns subagents,
gathers many of those at once, exchanges messages with other agents and adds
tasks to its run.  Everything that crosses the process boundary goes to the
supervisor as a request frame and comes back as a reply; failures come back
as the typed errors of :mod:`agentrt.errors`, never as a crash of the caller.

Tools are plain functions registered with :func:`tool` (or declared in the
config).  An in-process tool runs in the agent's process; an ``isolated``
tool runs in a sandboxed process of its own, started by the supervisor.
"""

from __future__ import annotations

import asyncio
import copy
import importlib
import inspect
import signal
import threading
import time
import types
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Self, TypeVar

from agentrt.errors import AgentrtError, CallTimeout, UnknownTool, from_dict
from agentrt.protocol import (
    Approve,
    Count,
    Receive,
    Reply,
    ReplyError,
    Send,
    Spawn,
    Submit,
    ToolCall,
    ToolSpan,
    args_match,
    rule_text,
    summarize,
)

if TYPE_CHECKING:
    from agentrt.llm.clients import ModelClient
    from agentrt.llm.plan import PlanResult
    from agentrt.llm.schema import Toolbox

__all__ = [
    "AgentIO",
    "Context",
    "Op",
    "SyncContext",
    "spawn_call",
    "takes_ctx",
    "tool",
    "tool_call",
]

F = TypeVar("F", bound=Callable[..., Any])

#: tools registered with @tool in this process: name -> function
_REGISTRY: dict[str, Callable[..., Any]] = {}


def tool(fn: F | None = None, *, name: str | None = None) -> Any:
    """Register a function as a tool callable with ``ctx.tool(name, ...)``.

    ``@tool`` or ``@tool(name="search")``.  The function runs in the calling
    agent's process; declare a tool ``isolated = true`` in the config to run
    it in a sandboxed process of its own instead.
    """

    def register(f: F) -> F:
        _REGISTRY[name or f.__name__] = f
        return f

    return register(fn) if fn is not None else register


@dataclass(frozen=True, slots=True)
class Op:
    """A deferred tool or subagent call, for :meth:`SyncContext.gather`."""

    kind: str  # "tool" | "spawn"
    name: str
    args: dict[str, Any] = field(default_factory=dict)
    method: str = ""


def tool_call(name: str, /, **args: Any) -> Op:
    """A tool call to pass to ``ctx.gather``."""
    return Op("tool", name, args)


def spawn_call(agent: str, /, **args: Any) -> Op:
    """A subagent call to pass to ``ctx.gather``."""
    return Op("spawn", agent, args)


class AgentIO:
    """What the contexts of one replica share: the channel and pending requests.

    Set up by the worker; ``write`` sends one message to the supervisor.
    """

    def __init__(
        self,
        agent: str,
        replica: int,
        write: Callable[[Any], None],
        tools: dict[str, str],
        count_tools: bool,
        trace_tools: bool = False,
        tool_timeouts: dict[str, float] | None = None,
        approvals: dict[str, list[dict[str, list[str]]]] | None = None,
        isolated_entries: dict[str, str] | None = None,
        models: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        self.agent = agent
        self.replica = replica
        self.write = write
        self.tools = tools
        self.count_tools = count_tools
        self.trace_tools = trace_tools
        #: each declared tool's own timeout (seconds)
        self.tool_timeouts = tool_timeouts or {}
        self.next_req = 0
        self.futures: dict[int, asyncio.Future[Any]] = {}
        self.replies: dict[int, Reply | ReplyError] = {}
        #: sync mode: reads and routes the next frames, waiting at most
        #: ``timeout`` seconds (None: until some arrive); set by the worker
        self.pump: Callable[[float | None], None] | None = None
        #: in-process tools whose calls may need approval, and their rules
        self.approvals = approvals or {}
        #: isolated tools' entries, for their signatures (never called here)
        self.isolated_entries = isolated_entries or {}
        #: ``[models.X]``: name -> client config (``ctx.model(name)``)
        self.models = models or {}
        #: the tools offered to a model by default (built on first use)
        self.toolbox: Any = None
        #: seconds this replica has been paused, in all (``Held`` frames): a
        #: deadline set when this was ``base`` is ``held - base`` later now
        self.held = 0.0
        #: async timeouts to move when the replica was paused (deadlines, tools')
        self.timeouts: set[asyncio.Timeout] = set()
        #: sync mode: route the frames already in the pipe, if that can be done
        #: now (False: a read is in progress; try again soon); set by the worker
        self.catch_up: Callable[[], bool] | None = None
        #: sync mode: the end of a SIGALRM handler that did not raise
        self.after_alarm: Callable[[], None] | None = None

    def on_held(self, seconds: float) -> None:
        """The replica was paused ``seconds``: every deadline moves that much later."""
        self.held += seconds
        for t in list(self.timeouts):
            when = t.when()
            if when is not None and not t.expired():
                t.reschedule(when + seconds)

    def alarm_left(self, deadline: float, base: float) -> float | None:
        """Sync mode, in a SIGALRM handler: seconds left before ``deadline``
        (set when :attr:`held` was ``base``), pauses told so far counted;
        None when frames could not be read yet (look again soon)."""
        if self.catch_up is not None and not self.catch_up():
            return None
        return deadline + (self.held - base) - time.monotonic()

    def approval_why(self, name: str, args: dict[str, Any]) -> str | None:
        """Why a call of in-process tool ``name`` needs approval (None: it does not)."""
        rules = self.approvals.get(name)
        if not rules:
            return None
        for rule in rules:
            if args_match(rule, args):
                return rule_text(name, rule)
        return None

    def new_req(self) -> int:
        self.next_req += 1
        return self.next_req

    def resolve_tool(self, name: str) -> Callable[..., Any] | None:
        """The in-process function for ``name``; ``None`` for an isolated tool."""
        entry = self.tools.get(name)
        if entry == "":
            return None
        fn = _REGISTRY.get(name)
        if fn is None and entry:
            fn = _REGISTRY.setdefault(name, _load(entry))
        if fn is None:
            raise UnknownTool(name, self.tool_names())
        return fn

    def tool_names(self) -> list[str]:
        """Every tool this agent may call: declared ones and ``@tool`` functions here."""
        return sorted({*_REGISTRY, *self.tools})

    def tool_function(self, name: str) -> Callable[..., Any]:
        """The function of tool ``name``, to read its signature: an isolated
        tool's module is imported for that, its function never called here."""
        if self.tools.get(name) == "":
            entry = self.isolated_entries.get(name)
            if not entry:
                raise UnknownTool(name, self.tool_names())
            loaded: Callable[..., Any] = _load(entry)
            return loaded
        fn = self.resolve_tool(name)
        assert fn is not None
        return fn

    # --- async side -------------------------------------------------------

    def on_reply(self, msg: Reply | ReplyError) -> None:
        fut = self.futures.pop(msg.req, None)
        if fut is not None:
            if not fut.done():
                if isinstance(msg, Reply):
                    fut.set_result(msg.value)
                else:
                    fut.set_exception(from_dict(msg.error))
        else:
            self.replies[msg.req] = msg


def _load(entry: str) -> Any:
    mod, _, attr = entry.partition(":")
    obj: Any = importlib.import_module(mod)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def _takes_ctx(fn: Callable[..., Any]) -> bool:
    first = _first_parameter(fn)
    if first is None:  # not a plain function or method: ask inspect
        try:
            params = list(inspect.signature(fn).parameters.values())
        except (TypeError, ValueError):
            return False
        return bool(params) and params[0].name == "ctx"
    return first == "ctx"


def _first_parameter(fn: Callable[..., Any]) -> str | None:
    """The name of the first parameter of a plain function or bound method, read
    from its code object ("" if it has none), as ``inspect.signature`` would
    give it; None for any other callable (or one that says its signature
    itself).  inspect is slow, and in a forked replica writes to some 80
    pages it would otherwise share."""
    skip = 0
    if isinstance(fn, types.MethodType):
        fn, skip = fn.__func__, 1
    if not isinstance(fn, types.FunctionType) or "__wrapped__" in fn.__dict__:
        return None
    if {"__signature__", "_partialmethod", "__partialmethod__"} & fn.__dict__.keys():
        return None
    code = fn.__code__
    names, positional, kwonly = code.co_varnames, code.co_argcount, code.co_kwonlyargcount
    if positional > skip:
        return names[skip]
    if skip and not positional:
        return None  # a method without self: let inspect say what binding does
    if code.co_flags & inspect.CO_VARARGS:  # f(*args, ...): *args comes first
        return names[positional + kwonly]
    if kwonly:
        return names[positional]
    if code.co_flags & inspect.CO_VARKEYWORDS:
        return names[positional + kwonly]
    return ""


def _reply_value(msg: Reply | ReplyError) -> Any:
    if isinstance(msg, ReplyError):
        raise from_dict(msg.error)
    return msg.value


def _model(io: AgentIO, name: str | None) -> ModelClient:
    from agentrt.llm.clients import OpenAIChat, client_from_config

    if name is None:
        if not io.models:
            return OpenAIChat()  # OPENAI_BASE_URL, OPENAI_API_KEY, OPENAI_MODEL
        if len(io.models) > 1:
            raise ValueError(
                f"several models are declared ({', '.join(sorted(io.models))}): name one"
            )
        (name,) = io.models
    spec = io.models.get(name)
    if spec is None:
        known = ", ".join(sorted(io.models)) or "none"
        raise LookupError(f"no model named {name!r} ([models] declares: {known})")
    return client_from_config(spec, path=f"models.{name}")


class _Base:
    def __init__(
        self, io: AgentIO, call_id: int, deadline: float | None, base: float = 0.0
    ) -> None:
        self._io = io
        self.call_id = call_id
        self._deadline = deadline
        self._base = base  # ``io.held`` when the call arrived
        #: ``ctx.timeout(s)``: this timeout, instead of each tool's or subagent's own
        self._override: float | None = None

    @property
    def deadline(self) -> float | None:
        """``time.monotonic()`` instant this task must finish by, or None (moved
        later by the time the replica was paused since the call arrived)."""
        if self._deadline is None:
            return None
        return self._deadline + (self._io.held - self._base)

    def timeout(self, seconds: float) -> Self:
        """This context, with ``seconds`` as the timeout of the tool and subagent
        calls made through it (instead of each one's own; never past this
        call's deadline): ``await ctx.timeout(5).tool("search", q=...)``."""
        if not (seconds > 0):
            raise ValueError(f"a timeout must be positive, got {seconds!r}")
        other = copy.copy(self)
        other._override = float(seconds)
        return other

    def _tool_timeout(self, name: str) -> float | None:
        """An in-process tool call's timeout: the override or the tool's own,
        and never past this call's deadline (None: no bound at all)."""
        own = self._override if self._override is not None else self._io.tool_timeouts.get(name)
        left = self.remaining()
        if own is None:
            return left
        return own if left is None else min(own, left)

    @property
    def agent(self) -> str:
        return self._io.agent

    def model(self, name: str | None = None) -> ModelClient:
        """A client of the model ``[models.<name>]`` declares (``pip install
        'agentrt[llm]'``); without a name, the one declared, or else the
        OpenAI-compatible endpoint of ``OPENAI_BASE_URL`` / ``OPENAI_MODEL``.
        Use it as ``async with ctx.model() as m:`` (it holds connections)."""
        return _model(self._io, name)

    @property
    def replica(self) -> int:
        return self._io.replica

    def remaining(self) -> float | None:
        """Seconds left before the deadline (every call made inherits it)."""
        return None if self.deadline is None else max(0.0, self.deadline - time.monotonic())

    def _timeout(self, timeout: float | None) -> float:
        left = self.remaining()
        if timeout is None:
            return left or 0.0
        return min(timeout, left) if left is not None else timeout

    def _request(self, op: Op, timeout: float | None = None) -> tuple[int, Any]:
        # The supervisor bounds the call by this one's deadline itself; what
        # goes along is only a timeout of the caller's own (0: the target's).
        io = self._io
        req = io.new_req()
        own = timeout if timeout is not None else (self._override or 0.0)
        if op.kind == "spawn":
            msg: Any = Spawn(req, self.call_id, op.name, op.args, op.method, own)
        else:
            msg = ToolCall(req, self.call_id, op.name, op.args, own)
        return req, msg


class Context(_Base):
    """``ctx`` of an async agent: every method is a coroutine."""

    async def _ask(self, msg: Any, req: int) -> Any:
        io = self._io
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        io.futures[req] = fut
        io.write(msg)
        try:
            return await fut
        except asyncio.CancelledError:
            io.futures.pop(req, None)
            raise

    async def tool(self, name: str, /, **args: Any) -> Any:
        """Call a tool; an isolated one runs in its own sandboxed process.

        A call that needs approval waits for it (the other calls made
        meanwhile go on); a denial raises :class:`ApprovalDenied`.
        """
        fn = self._io.resolve_tool(name)
        if fn is None:
            req, msg = self._request(Op("tool", name, args))
            return await self._ask(msg, req)
        io = self._io
        why = io.approval_why(name, args)
        if why is not None:
            req = io.new_req()
            args = dict(await self._ask(Approve(req, self.call_id, name, args, why), req))
        if io.count_tools:
            req = io.new_req()
            await self._ask(Count(req, self.call_id, name), req)
        start = time.time()
        status = "failed"
        error = ""
        limit = self._tool_timeout(name)
        bound = asyncio.timeout(limit)
        io.timeouts.add(bound)
        try:
            # An async tool is cancelled at its timeout; a sync one runs in a
            # thread, which nothing can stop: its caller gets CallTimeout at
            # the timeout and the thread runs on (declare it isolated instead).
            async with bound:
                if inspect.iscoroutinefunction(fn):
                    result = await fn(**args)
                else:
                    result = await asyncio.to_thread(fn, **args)
                    if inspect.isawaitable(result):
                        result = await result
            status = "ok"
            return result
        except TimeoutError:
            if limit is None or not bound.expired():
                raise  # the tool's own TimeoutError, not ours
            status = "timeout"
            raise CallTimeout(
                f"tool {name!r} timed out after {limit:g}s", timeout=limit, agent=io.agent
            ) from None
        except asyncio.CancelledError:
            status = "cancelled"
            raise
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            io.timeouts.discard(bound)
            if io.trace_tools:
                span = ToolSpan(
                    self.call_id, name, start, time.time(), status, summarize(args), error
                )
                io.write(span)

    async def spawn(self, agent: str, /, **args: Any) -> Any:
        """Run a task on a subagent (its own process) and return its result."""
        req, msg = self._request(Op("spawn", agent, args))
        return await self._ask(msg, req)

    async def spawn_method(
        self,
        agent: str,
        method: str,
        args: dict[str, Any] | None = None,
        *,
        timeout: float | None = None,
    ) -> Any:
        """Like :meth:`spawn`, for a method of a class agent, with its own timeout."""
        req, msg = self._request(Op("spawn", agent, dict(args or {}), method), timeout)
        return await self._ask(msg, req)

    async def gather(
        self, *calls: Awaitable[Any] | Op, return_exceptions: bool = False
    ) -> list[Any]:
        """Run many tool/subagent calls concurrently; results in order.

        A failure is a typed error: raised (the others are cancelled, and so
        are their processes' work) or, with ``return_exceptions``, returned
        in its place.
        """
        aws = [self._run_op(c) if isinstance(c, Op) else c for c in calls]
        return await asyncio.gather(*aws, return_exceptions=return_exceptions)

    async def _run_op(self, op: Op) -> Any:
        if op.kind == "tool":
            return await self.tool(op.name, **op.args)
        if op.method:
            return await self.spawn_method(op.name, op.method, op.args)
        return await self.spawn(op.name, **op.args)

    def toolbox(self, agents: dict[str, Any] | None = None) -> Toolbox:
        """The tools this agent may call, with their schemas, to offer a model; plus
        ``agents``: subagents offered as tools (name -> the agent's function)."""
        from agentrt.llm.calls import toolbox

        return toolbox(self, agents)

    async def run_tool_calls(
        self,
        calls: Any,
        *,
        tools: Toolbox | None = None,
        raise_errors: bool = False,
        max_answer_chars: int | None = None,
    ) -> list[dict[str, Any]]:
        """Run a model turn's tool calls concurrently; their answers in the same shape.

        ``calls``: OpenAI chat ``tool_calls``, Responses ``function_call``
        items or Anthropic ``tool_use`` blocks (or the message holding them).
        A failed call is an error answer the model can read, unless
        ``raise_errors``.  See :mod:`agentrt.llm.calls`.
        """
        from agentrt.llm.calls import run_tool_calls

        return await run_tool_calls(
            self,
            calls,
            tools=tools,
            raise_errors=raise_errors,
            max_answer_chars=max_answer_chars,
        )

    async def run_plan(
        self, plan: Any, *, tools: Toolbox | None = None, raise_errors: bool = False
    ) -> PlanResult:
        """Run a planned DAG of tool calls, each step as soon as its inputs exist.

        Steps ``{"id", "tool", "args", "after"}``; an argument may reference
        an earlier step's result as ``${step}`` / ``${step.field}``.  See
        :mod:`agentrt.llm.plan`.
        """
        from agentrt.llm.plan import run_plan

        return await run_plan(self, plan, tools=tools, raise_errors=raise_errors)

    async def send(self, agent: str, message: Any) -> None:
        """Put ``message`` in ``agent``'s mailbox (any of its replicas takes it).

        Returns once it is there; a full mailbox is :class:`MailboxFull`.
        """
        req = self._io.new_req()
        await self._ask(Send(req, self.call_id, agent, message), req)

    async def receive(self, timeout: float | None = None) -> tuple[str, Any]:
        """The next message sent to this agent: ``(sender, body)``.

        Waits up to ``timeout`` seconds (and never past this call's
        deadline); then :class:`CallTimeout`.
        """
        req = self._io.new_req()
        sender, body = await self._ask(Receive(req, self.call_id, self._timeout(timeout)), req)
        return str(sender), body

    async def submit(self, agent: str, /, args: dict[str, Any] | None = None, **task: Any) -> str:
        """Add a task to this run's graph (planners that find work as they go).

        ``task`` may hold ``id``, ``after``, ``retries``, ``timeout``,
        ``method``; returns the task's id.
        """
        req = self._io.new_req()
        spec = {"agent": agent, "args": dict(args or {}), **task}
        return str(await self._ask(Submit(req, self.call_id, spec), req))


class SyncContext(_Base):
    """``ctx`` of a sync agent: the same API, blocking.

    ``gather`` takes :class:`Op` values (:func:`tool_call`,
    :func:`spawn_call`): their requests all go out before any reply is
    awaited, so they run concurrently.
    """

    def _wait(self, req: int) -> Any:
        io = self._io
        while req not in io.replies:
            assert io.pump is not None
            io.pump(None)
        return io.replies.pop(req)

    def tool(self, name: str, /, **args: Any) -> Any:
        return self.gather(tool_call(name, **args))[0]

    def spawn(self, agent: str, /, **args: Any) -> Any:
        return self.gather(spawn_call(agent, **args))[0]

    def gather(self, *calls: Op, return_exceptions: bool = False) -> list[Any]:
        io = self._io
        sent: list[tuple[int, Op | None, Any]] = []
        local: list[tuple[int, Op, Callable[..., Any]]] = []
        for i, op in enumerate(calls):
            if not isinstance(op, Op):
                raise TypeError(
                    "SyncContext.gather takes tool_call(...)/spawn_call(...) values, "
                    f"got {type(op).__name__}"
                )
            fn = io.resolve_tool(op.name) if op.kind == "tool" else None
            if fn is not None:
                local.append((i, op, fn))
                continue
            req, msg = self._request(op)
            io.write(msg)
            sent.append((i, op, req))
        out: list[Any] = [None] * len(calls)
        errors: list[tuple[int, BaseException]] = []
        for i, op, fn in local:
            try:
                why = io.approval_why(op.name, op.args)
                if why is not None:
                    req = io.new_req()
                    io.write(Approve(req, self.call_id, op.name, op.args, why))
                    op = Op(op.kind, op.name, dict(_reply_value(self._wait(req))), op.method)
                if io.count_tools:
                    req = io.new_req()
                    io.write(Count(req, self.call_id, op.name))
                    _reply_value(self._wait(req))
                start = time.time()
                status = "failed"
                error = ""
                try:
                    value = _run_bounded(fn, op.args, self._tool_timeout(op.name), op.name, io)
                    status = "ok"
                except CallTimeout:
                    status = "timeout"
                    raise
                except Exception as exc:
                    error = f"{type(exc).__name__}: {exc}"
                    raise
                finally:
                    if io.trace_tools:
                        io.write(
                            ToolSpan(
                                self.call_id,
                                op.name,
                                start,
                                time.time(),
                                status,
                                summarize(op.args),
                                error,
                            )
                        )
                out[i] = value
            except Exception as exc:
                errors.append((i, exc))
        for i, _op, req in sent:
            try:
                out[i] = _reply_value(self._wait(req))
            except AgentrtError as exc:
                errors.append((i, exc))
        if errors:
            if not return_exceptions:
                errors.sort(key=lambda e: e[0])
                raise errors[0][1]
            for i, err in errors:
                out[i] = err
        return out

    def toolbox(self, agents: dict[str, Any] | None = None) -> Toolbox:
        """The tools this agent may call, with their schemas (see :meth:`Context.toolbox`)."""
        from agentrt.llm.calls import toolbox

        return toolbox(self, agents)

    def run_tool_calls(
        self,
        calls: Any,
        *,
        tools: Toolbox | None = None,
        raise_errors: bool = False,
        max_answer_chars: int | None = None,
    ) -> list[dict[str, Any]]:
        """A model turn's tool calls (see :meth:`Context.run_tool_calls`): isolated
        tools and subagents all at once, in-process tools one after another."""
        from agentrt.llm.calls import run_tool_calls_sync

        return run_tool_calls_sync(
            self,
            calls,
            tools=tools,
            raise_errors=raise_errors,
            max_answer_chars=max_answer_chars,
        )

    def send(self, agent: str, message: Any) -> None:
        io = self._io
        req = io.new_req()
        io.write(Send(req, self.call_id, agent, message))
        _reply_value(self._wait(req))

    def receive(self, timeout: float | None = None) -> tuple[str, Any]:
        io = self._io
        req = io.new_req()
        io.write(Receive(req, self.call_id, self._timeout(timeout)))
        sender, body = _reply_value(self._wait(req))
        return str(sender), body

    def submit(self, agent: str, /, args: dict[str, Any] | None = None, **task: Any) -> str:
        io = self._io
        req = io.new_req()
        io.write(Submit(req, self.call_id, {"agent": agent, "args": dict(args or {}), **task}))
        return str(_reply_value(self._wait(req)))


async def _await(aw: Awaitable[Any]) -> Any:
    return await aw


class _ToolDeadline(BaseException):
    """Raised by SIGALRM inside a sync in-process tool whose timeout passed (a
    BaseException, so that ``except Exception`` in the tool does not swallow it)."""


def _run_bounded(
    fn: Callable[..., Any],
    args: dict[str, Any],
    limit: float | None,
    name: str,
    io: AgentIO | None = None,
) -> Any:
    """A sync agent's in-process tool, interrupted at ``limit`` seconds.

    The interval timer is the call's (its deadline): the tool gets a shorter
    one of its own for a while, with a handler of its own, and the call's
    is put back after, as much as it had left.  Time the replica spent
    paused does not count (``io.held``).
    """
    if limit is None or threading.current_thread() is not threading.main_thread():
        value = fn(**args)
        return asyncio.run(_await(value)) if inspect.isawaitable(value) else value
    call_left, _ = signal.getitimer(signal.ITIMER_REAL)
    if call_left and call_left <= limit:  # the call's deadline comes first: it rules
        value = fn(**args)
        return asyncio.run(_await(value)) if inspect.isawaitable(value) else value

    start = time.monotonic()
    base = io.held if io is not None else 0.0

    def on_alarm(signum: int, frame: Any) -> None:
        left = io.alarm_left(start + limit, base) if io is not None else 0.0
        if left is None or left > 0:  # not yet read what the supervisor said, or paused
            signal.setitimer(signal.ITIMER_REAL, 0.01 if left is None else left)
            if io is not None and io.after_alarm is not None:
                io.after_alarm()
            return
        raise _ToolDeadline

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, max(limit, 1e-6))
    try:
        value = fn(**args)
        if inspect.isawaitable(value):
            value = asyncio.run(_await(value))
        return value
    except _ToolDeadline:
        raise CallTimeout(f"tool {name!r} timed out after {limit:g}s", timeout=limit) from None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        if call_left:
            paused = (io.held - base) if io is not None else 0.0
            used = time.monotonic() - start - paused
            signal.setitimer(signal.ITIMER_REAL, max(1e-6, call_left - used))


def takes_ctx(fn: Callable[..., Any]) -> bool:
    """Whether ``fn``'s first parameter is the context (it is named ``ctx``)."""
    return _takes_ctx(fn)
