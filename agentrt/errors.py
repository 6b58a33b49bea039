"""The exception tree of agentrt (leaf module: stdlib only).

::

    AgentrtError
    ├── ConfigError (ValueError)            bad config; ``path`` names the key
    ├── SupervisorClosed (RuntimeError)     you closed it: the supervisor is stopping
    ├── UnknownAgent (LookupError)          no agent of that name is running
    ├── UnknownTool (LookupError)           no tool of that name (``known`` lists them)
    ├── ControlError                        a control request was refused (unknown id, ...)
    ├── AgentFailed                         the agent gave up (restart intensity)
    ├── EncodeError (TypeError)             a value cannot cross the process boundary
    └── CallError                           one call failed; ``call_id``, ``agent``, ``pid``
        ├── RemoteError                     the agent raised: type, message, traceback
        ├── CallTimeout (TimeoutError)      the call's deadline passed
        ├── CallCancelled                   the call was cancelled
        ├── BudgetExceeded                  a run's budget is spent: ``budget``, ``limit``
        ├── MailboxFull                     the receiving agent's mailbox is full: ``limit``
        ├── ApprovalDenied                  a person (or the approval timeout) said no
        └── AgentDied                       the replica serving the call died
            ├── AgentCrashed                exit code, or signal as -signum and name
            ├── LimitExceeded               which limit: memory, cpu_time, wall, ...
            ├── ProtocolViolation           garbage, oversized or out-of-order frames
            └── StartupError                import failed or no Ready in time

"You closed it" (:class:`SupervisorClosed`) and "the peer died"
(:class:`AgentDied`) are different errors.  Remote failures cross the wire as
strings, never as pickles.
"""

from __future__ import annotations

import signal as _signal
from typing import Any

__all__ = [
    "AgentCrashed",
    "AgentDied",
    "AgentFailed",
    "AgentrtError",
    "ApprovalDenied",
    "BudgetExceeded",
    "CallCancelled",
    "CallError",
    "CallTimeout",
    "ConfigError",
    "ControlError",
    "EncodeError",
    "LimitExceeded",
    "MailboxFull",
    "ProtocolViolation",
    "RemoteError",
    "StartupError",
    "SupervisorClosed",
    "UnknownAgent",
    "UnknownTool",
    "from_dict",
    "signal_name",
]


def signal_name(signum: int) -> str:
    """``9`` -> ``"SIGKILL"``; an unknown number -> ``"SIG<n>"``."""
    try:
        return _signal.Signals(signum).name
    except ValueError:
        return f"SIG{signum}"


class AgentrtError(Exception):
    """Base of every error agentrt raises."""

    #: short status word used in results files ("failed", "timeout", ...)
    status = "failed"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description: ``type``, ``message`` and typed details."""
        return {"type": type(self).__name__, "message": str(self)}

    def __reduce__(self) -> tuple[Any, ...]:
        # Rebuild without calling __init__ (whose keyword-only arguments are not
        # in ``args``), so copy.copy() and pickle keep every typed detail.
        return (_rebuild, (type(self), self.args, self.__dict__))


def _rebuild(cls: type[AgentrtError], args: tuple[Any, ...], state: dict[str, Any]) -> Any:
    err = cls.__new__(cls, *args)
    err.args = args
    err.__dict__.update(state)
    return err


class ConfigError(AgentrtError, ValueError):
    """A configuration is invalid; ``path`` is the dotted key path."""

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        self.message = message
        super().__init__(f"{path}: {message}" if path else message)


class SupervisorClosed(AgentrtError, RuntimeError):
    """The supervisor is stopping or stopped; no new work is accepted."""

    status = "cancelled"


class UnknownAgent(AgentrtError, LookupError):
    """No agent of that name has been started."""


class UnknownTool(AgentrtError, LookupError):
    """``ctx.tool`` named a tool nobody declared; ``known`` lists those that are."""

    def __init__(self, name: str, known: list[str] | None = None) -> None:
        self.name = name
        self.known = sorted(known or [])
        super().__init__(f"no tool named {name!r} (tools: {', '.join(self.known) or 'none'})")

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        d.update(tool=self.name, known=self.known)
        return d


class ControlError(AgentrtError):
    """A control request (``agentrt ctl``, the live view, the embedding API) was
    refused: an unknown approval, task or agent, a target that is not running."""


class AgentFailed(AgentrtError):
    """The agent exceeded its restart intensity (or has no replica left) and is
    marked failed; ``last`` is the death that made it give up, if any."""

    def __init__(self, agent: str, reason: str, *, last: AgentrtError | None = None) -> None:
        self.agent = agent
        self.reason = reason
        self.last = last
        super().__init__(f"agent {agent!r} failed: {reason}")

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        d.update(agent=self.agent, reason=self.reason)
        if self.last is not None:
            d["last_cause"] = self.last.to_dict()
        return d


class EncodeError(AgentrtError, TypeError):
    """A value cannot cross the process boundary (MessagePack cannot hold it, it
    nests too deeply, or its frame would pass ``max_frame``); raised where the
    call is made, naming the place (``args.items[3]: ...``)."""


class CallError(AgentrtError):
    """One call failed.  Subclasses say how."""

    def __init__(
        self,
        message: str,
        *,
        agent: str | None = None,
        call_id: int | None = None,
        pid: int | None = None,
    ) -> None:
        super().__init__(message)
        self.agent = agent
        self.call_id = call_id
        self.pid = pid

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        d["agent"] = self.agent
        d["pid"] = self.pid
        return d


class RemoteError(CallError):
    """The agent's code raised; type, message and traceback are strings."""

    def __init__(self, type_name: str, message: str, traceback: str, **kw: Any) -> None:
        super().__init__(f"{type_name}: {message}", **kw)
        self.type_name = type_name
        self.remote_message = message
        self.traceback = traceback

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        d.update(remote_type=self.type_name, traceback=self.traceback)
        return d


class CallTimeout(CallError, TimeoutError):
    """The call did not finish before its deadline."""

    status = "timeout"

    def __init__(self, message: str, *, timeout: float | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.timeout = timeout


class CallCancelled(CallError):
    """The call was cancelled before it finished."""

    status = "cancelled"


class BudgetExceeded(CallError):
    """A request past a budget (``max_agents``, ``max_depth``, ``max_tasks``,
    ``max_tool_calls``) was refused; nothing was started for it."""

    status = "limit"

    def __init__(self, message: str, *, budget: str, limit: int, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.budget = budget
        self.limit = limit

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        d.update(budget=self.budget, limit=self.limit)
        return d


class MailboxFull(CallError):
    """``ctx.send`` to an agent whose mailbox holds as many messages (or bytes)
    as it may: ``limit`` names which bound (``mailbox`` or ``mailbox_bytes``)."""

    status = "limit"

    def __init__(self, message: str, *, limit: str, value: int, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.limit = limit
        self.value = value

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        d.update(limit=self.limit, limit_value=self.value)
        return d


class ApprovalDenied(CallError):
    """A call that needed approval was denied: by a person (``by`` says who:
    uid, pid and command of the control client, or ``api``), by the
    approver callback, or because ``approval_timeout`` passed.  ``approval``
    is the request's id; ``reason`` what the person gave."""

    status = "denied"

    def __init__(
        self,
        message: str,
        *,
        approval: str = "",
        reason: str = "",
        by: str = "",
        **kw: Any,
    ) -> None:
        super().__init__(message, **kw)
        self.approval = approval
        self.reason = reason
        self.by = by

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        d.update(approval=self.approval, reason=self.reason, by=self.by)
        return d


class AgentDied(CallError):
    """The replica serving the call died before answering."""

    status = "crashed"

    def __init__(
        self,
        message: str,
        *,
        exit_code: int | None = None,
        signal: int | None = None,
        **kw: Any,
    ) -> None:
        super().__init__(message, **kw)
        self.exit_code = exit_code
        self.signal = signal

    @property
    def signal_name(self) -> str | None:
        return None if self.signal is None else signal_name(self.signal)

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        d.update(exit_code=self.exit_code, signal=self.signal, signal_name=self.signal_name)
        return d


class AgentCrashed(AgentDied):
    """The replica exited on its own (exit code) or was killed by a signal.

    A signal death is reported as ``exit_code = -signum``.
    """


class LimitExceeded(AgentDied):
    """The replica hit a resource limit: ``limit`` is memory, cpu_time, wall, ...

    The replica is always ended (killed, or recycled after a ``MemoryError``
    under its memory limit), which is why this is a kind of :class:`AgentDied`.
    """

    status = "limit"

    def __init__(self, message: str, *, limit: str, value: Any = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.limit = limit
        self.value = value

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        d.update(limit=self.limit, limit_value=self.value)
        return d


class ProtocolViolation(AgentDied):
    """The replica wrote a malformed, oversized or out-of-order frame."""


class StartupError(AgentDied):
    """The replica could not start: import failure, or no Ready in time."""


_ATTRS = {
    "agent": "agent",
    "pid": "pid",
    "exit_code": "exit_code",
    "signal": "signal",
    "limit": "limit",
    "limit_value": "value",
    "remote_type": "type_name",
    "traceback": "traceback",
    "budget": "budget",
    "reason": "reason",
    "approval": "approval",
    "by": "by",
}


def from_dict(d: dict[str, Any]) -> AgentrtError:
    """Rebuild a typed error from :meth:`AgentrtError.to_dict` (an agent receives
    the failures of its tool calls and subagents this way: as data, never pickles)."""
    cls = globals().get(str(d.get("type", "")))
    if not (isinstance(cls, type) and issubclass(cls, AgentrtError)):
        cls = CallError
    message = str(d.get("message", ""))
    err = cls.__new__(cls, message)
    err.args = (message,)
    for key, attr in _ATTRS.items():
        if key in d:
            setattr(err, attr, d[key])
    if isinstance(err, CallError):
        err.__dict__.setdefault("agent", None)
        err.__dict__.setdefault("pid", None)
        err.__dict__.setdefault("call_id", None)
    if isinstance(err, AgentDied):
        err.__dict__.setdefault("exit_code", None)
        err.__dict__.setdefault("signal", None)
    if isinstance(err, RemoteError):
        err.remote_message = message.partition(": ")[2]
        err.__dict__.setdefault("type_name", "Exception")
        err.__dict__.setdefault("traceback", "")
    if isinstance(err, CallTimeout):
        err.__dict__.setdefault("timeout", None)
    if isinstance(err, UnknownTool):
        err.name = str(d.get("tool", ""))
        known = d.get("known")
        err.known = [str(k) for k in known] if isinstance(known, list) else []
    if isinstance(err, ApprovalDenied):
        err.__dict__.setdefault("approval", "")
        err.__dict__.setdefault("reason", "")
        err.__dict__.setdefault("by", "")
    if isinstance(err, AgentFailed):
        err.__dict__.setdefault("agent", "")
        err.__dict__.setdefault("reason", "")
        last = d.get("last_cause")
        err.last = from_dict(last) if isinstance(last, dict) else None
    return err
