"""Wire messages and the frame codec (leaf module: msgspec and stdlib only, no I/O).

A frame is a 4-byte big-endian length followed by a MessagePack body.  The
body is one message of a tagged union of frozen :class:`msgspec.Struct`
types.  Each direction has its own union, so a message sent the wrong way
(an agent sending ``Call``) is refused by the decoder like any garbage.

This module is the one place that knows the byte format: bytes in,
messages out.  It raises only :class:`FrameError`.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterator, Mapping, Sequence
from typing import Annotated, Any, Final, Literal

import msgspec

__all__ = [
    "CONTROL_MAX_FRAME",
    "DEFAULT_MAX_FRAME",
    "EXIT_INTERNAL",
    "EXIT_MEMORY",
    "EXIT_PROTOCOL",
    "EXIT_STARTUP",
    "HEADER",
    "AgentMessage",
    "Approve",
    "Become",
    "Boot",
    "Call",
    "CallMany",
    "Cancel",
    "ControlReply",
    "ControlRequest",
    "Count",
    "CtlAgents",
    "CtlApprove",
    "CtlAudit",
    "CtlCancel",
    "CtlDeny",
    "CtlEvent",
    "CtlFailed",
    "CtlOk",
    "CtlPause",
    "CtlResume",
    "CtlStatus",
    "CtlStop",
    "CtlTail",
    "CtlTasks",
    "Failure",
    "Fork",
    "ForkFailed",
    "Forked",
    "FrameDecoder",
    "FrameEncoder",
    "FrameError",
    "Heartbeat",
    "Held",
    "Log",
    "Part",
    "Ready",
    "Reaped",
    "Receive",
    "Reply",
    "ReplyError",
    "Rest",
    "Result",
    "Send",
    "Shutdown",
    "Spawn",
    "StartupFailed",
    "Submit",
    "SupervisorMessage",
    "ToolCall",
    "ToolSpan",
    "ZygoteHello",
    "ZygoteReply",
    "ZygoteRequest",
    "args_match",
    "describe_unencodable",
    "rule_text",
    "summarize",
]

#: exit status of a replica whose entry could not be imported (or confined)
EXIT_STARTUP: Final = 71
#: exit status of a replica that ran out of memory outside any call
EXIT_MEMORY: Final = 72
#: exit status of a replica that received a frame it could not decode
EXIT_PROTOCOL: Final = 73
#: exit status of a replica whose serve loop raised (a bug, not the agent's call)
EXIT_INTERNAL: Final = 70

#: bytes in the length prefix
HEADER: Final = 4
#: frames larger than this are refused from the prefix, before any allocation
DEFAULT_MAX_FRAME: Final = 64 * 1024 * 1024
_MAX_HEADER_VALUE: Final = (1 << 32) - 1


class FrameError(ValueError):
    """A frame is oversized, truncated, malformed, or of the wrong type."""


class _Msg(msgspec.Struct, frozen=True, array_like=True, tag=True, tag_field="op"):
    pass


# --- supervisor -> agent ----------------------------------------------------


class Call(_Msg, frozen=True, tag="call"):
    """Run ``target`` (``""``: the agent's entry) with keyword ``args``.

    ``deadline`` is a ``time.monotonic()`` instant (the clock is shared by
    every process of the machine); ``0.0`` means none.
    """

    id: int
    target: str
    args: dict[str, Any]
    deadline: float = 0.0


class CallMany(_Msg, frozen=True, tag="call_many"):
    """Run ``target`` once per item of ``items`` (keyword arguments), in order:
    one frame for many small calls of a ``Supervisor.map``.

    Each item is answered by a :class:`Part` (or a :class:`Failure` naming
    its ``part``), written before the next item starts; the whole by a
    :class:`Result` whose value is the seconds the items took (a float),
    by a :class:`Rest` (a replica that runs calls side by side ended it
    after a long item: the items not answered did not run), or by a
    :class:`Failure` with ``part = -1`` (its deadline passed, or it was
    cancelled: the items not answered did not run to their end).
    """

    id: int
    target: str
    items: list[dict[str, Any]]
    deadline: float = 0.0


class Cancel(_Msg, frozen=True, tag="cancel"):
    """Cancel call ``id`` if it is still running."""

    id: int


class Shutdown(_Msg, frozen=True, tag="shutdown"):
    """Finish what is running, then exit 0."""


class Held(_Msg, frozen=True, tag="held"):
    """The replica was paused for ``seconds``: every call it has received so
    far (running or waiting) gets its deadline moved that much later, and so
    do the timeouts of the tool calls they are making.  Sent before the
    replica is resumed, so it is read before any call sent after."""

    seconds: float


class Become(_Msg, frozen=True, tag="become"):
    """To a standby (``Boot.standby``), its first frame: it is replica
    ``replica`` of its agent now, in ``generation``, and serves the calls
    that follow."""

    replica: int
    generation: int


# --- agent -> supervisor ----------------------------------------------------


class Ready(_Msg, frozen=True, tag="ready"):
    """The agent imported its entry and serves calls."""

    pid: int


class StartupFailed(_Msg, frozen=True, tag="startup_failed"):
    """The agent could not import or build its entry."""

    type: str
    message: str
    traceback: str


class Result(_Msg, frozen=True, tag="result"):
    """Call ``id`` returned ``value``."""

    id: int
    value: Any


class Part(_Msg, frozen=True, tag="part"):
    """Item ``index`` of :class:`CallMany` ``id`` returned ``value``."""

    id: int
    index: int
    value: Any


class Rest(_Msg, frozen=True, tag="rest"):
    """:class:`CallMany` ``id`` ends before its remaining items: one took long,
    and the replica runs calls side by side (``concurrency > 1``), so the
    rest go back to be spread as calls of their own would be.  ``seconds``:
    what the items answered took.  At least one item must have been answered."""

    id: int
    seconds: float


class Failure(_Msg, frozen=True, tag="failure"):
    """Call ``id`` failed.

    ``kind`` is ``"error"`` (the code raised), ``"cancelled"``, ``"timeout"``,
    or the limit the call hit: ``"memory"`` (``MemoryError`` or a refused
    mmap under a memory limit), ``"open_files"`` (EMFILE), ``"file_size"``
    (EFBIG).
    """

    id: int
    type: str
    message: str
    traceback: str = ""
    kind: str = "error"
    #: a typed agentrt error the agent let through (a failed subagent or tool
    #: call it did not handle), as ``to_dict()``: re-raised typed, not wrapped
    error: dict[str, Any] | None = None
    #: the item of a :class:`CallMany` that failed; ``-1``: the call as a whole
    part: int = -1


class Log(_Msg, frozen=True, tag="log"):
    """A structured log event from the agent."""

    level: str
    event: str
    fields: dict[str, Any] = {}


class Heartbeat(_Msg, frozen=True, tag="heartbeat"):
    """Liveness ping (either direction may ignore it)."""

    t: float = 0.0


# --- agent -> supervisor: requests made through ``ctx`` ------------------
#
# ``req`` numbers a request within one replica; ``parent`` is the call id the
# agent is serving when it asks (0: none), which gives the supervisor the
# depth, the deadline and the run the request belongs to.


class Spawn(_Msg, frozen=True, tag="spawn"):
    """Run a task on a subagent (``agent``) and reply with its result.

    ``timeout``: the caller's own for this call (0: the subagent's); either
    way the call ends with the call it is made for (its deadline).
    """

    req: int
    parent: int
    agent: str
    args: dict[str, Any]
    method: str = ""
    timeout: float = 0.0


class ToolCall(_Msg, frozen=True, tag="tool"):
    """Run an isolated tool in its own sandboxed process and reply.

    ``timeout``: the caller's own for this call (0: the tool's), bounded by
    the deadline of the call it is made for.
    """

    req: int
    parent: int
    tool: str
    args: dict[str, Any]
    timeout: float = 0.0


class Send(_Msg, frozen=True, tag="send"):
    """Put ``body`` in agent ``to``'s mailbox; replies once it is there.

    The supervisor never decodes ``body`` (it stays ``Raw`` bytes): it only
    counts them against the mailbox's bounds and passes them on.
    """

    req: int
    parent: int
    to: str
    body: msgspec.Raw


class Receive(_Msg, frozen=True, tag="receive"):
    """Take the next message from this agent's mailbox; replies ``[sender, body]``,
    waiting up to ``timeout`` seconds (0: the parent call's deadline)."""

    req: int
    parent: int
    timeout: float = 0.0


class Submit(_Msg, frozen=True, tag="submit"):
    """Add a task to the run the parent call belongs to; replies with its id."""

    req: int
    parent: int
    task: dict[str, Any]


class Approve(_Msg, frozen=True, tag="approve"):
    """An in-process tool call needs a person's approval (``why``: the rule);
    replies with the arguments to call it with (a person may have edited
    them), or an ``ApprovalDenied`` error."""

    req: int
    parent: int
    tool: str
    args: dict[str, Any]
    why: Annotated[str, msgspec.Meta(max_length=1000)] = ""


class Count(_Msg, frozen=True, tag="count"):
    """An in-process tool call was made (for the run's ``max_tool_calls`` budget)."""

    req: int
    parent: int
    tool: str


class ToolSpan(_Msg, frozen=True, tag="tool_span"):
    """An in-process tool call ran from ``start`` to ``end`` (wall clock); sent
    only when the supervisor asks for timelines (``Boot.trace_tools``).
    ``summary``: its arguments, short (:func:`summarize`)."""

    parent: int
    tool: str
    start: float
    end: float
    status: str = "ok"
    summary: str = ""
    #: when it failed: the error, as ``Type: message``
    error: str = ""
    #: ``"model"``: a model call (``tool`` is the model's name)
    kind: Literal["tool", "model"] = "tool"


# --- supervisor -> agent: answers to requests, and messages ---------------


class Reply(_Msg, frozen=True, tag="reply"):
    req: int
    value: Any = None


class ReplyError(_Msg, frozen=True, tag="reply_error"):
    """A request failed; ``error`` is the typed error's ``to_dict()``."""

    req: int
    error: dict[str, Any]


SupervisorMessage = (
    Call | CallMany | Cancel | Shutdown | Heartbeat | Reply | ReplyError | Held | Become
)
#: messages with a ``msgspec.Raw`` field (decoded from a buffer of their own)
_KEEPS_RAW: frozenset[type] = frozenset({Send})
AgentMessage = (
    Ready
    | StartupFailed
    | Part
    | Rest
    | Result
    | Failure
    | Log
    | Heartbeat
    | Spawn
    | ToolCall
    | Send
    | Receive
    | Submit
    | Count
    | ToolSpan
    | Approve
)


# --- supervisor <-> zygote (one message per SOCK_SEQPACKET datagram) -------


class Boot(msgspec.Struct, frozen=True, kw_only=True):
    """Everything a new replica needs before it imports user code."""

    agent: str
    replica: int
    generation: int
    entry: str
    workdir: str
    sys_path: list[str] = []
    env: dict[str, str] = {}
    memory: int | None = None
    cpu_time: float | None = None
    open_files: int | None = None
    processes: int | None = None
    file_size: int | None = None
    max_frame: int = DEFAULT_MAX_FRAME
    concurrency: int = 1
    #: seconds to poll for the next frame after answering (0: sleep at once)
    spin: float = 0.0
    #: the spinning slots, files ``<spin_lock>.0`` to ``.<spin_slots - 1>``: a
    #: replica spins only while it holds a lock (flock) on one, so at most
    #: that many spin at once; "" = no bound
    spin_lock: str = ""
    spin_slots: int = 0
    supervisor_pid: int = 0
    #: the supervisor's working directory (AGENTRT_LAUNCH_DIR in the agent)
    launch_dir: str = ""
    #: tools this agent may call: name -> "module:attr" (in-process) or "" (isolated)
    tools: dict[str, str] = {}
    #: language models the agent may use (``ctx.model(name)``): name -> client config
    models: dict[str, dict[str, Any]] = {}
    #: isolated tools' entries ("module:attr"): read for their signatures only
    #: (tool schemas for models), never called in the agent
    isolated_entries: dict[str, str] = {}
    #: the tools' own timeouts (seconds), where they have one
    tool_timeouts: dict[str, float] = {}
    #: in-process tools whose calls need approval: name -> rules, each rule
    #: ``{argument: [fnmatch patterns]}`` (any pattern of every argument must
    #: match; an empty rule matches every call)
    approvals: dict[str, list[dict[str, list[str]]]] = {}
    #: report in-process tool calls (a ``max_tool_calls`` budget is set)
    count_tools: bool = False
    #: report each in-process tool call's span (for --trace / the live view)
    trace_tools: bool = False
    # --- sandbox (see agentrt.sandbox; applied in the child before user code)
    #: the profile's ``enforce = "strict"``: a remote replica's node that cannot
    #: hold a setting fails its start (else the setting is dropped, with a warning)
    strict: bool = False
    #: CPUs the profile allots (a cgroup quota here; a Ray request on the ``ray`` backend)
    cpu: float | None = None
    #: apply ``memory`` as RLIMIT_AS (off when a cgroup limits real usage)
    memory_rlimit: bool = True
    #: cgroup directories to join (one per v1 controller, or one v2 group)
    cgroups: list[str] = []
    #: the limit files to write in each of them, ``(file, value, required)``.
    #: The replica makes its groups: a zygote's spare, already in groups of its
    #: own, renames those (no slow move between groups); any other replica
    #: makes them and moves in
    cgroup_writes: list[list[tuple[str, str, bool]]] = []
    #: a group that cannot be made or joined fails the start (else: a warning)
    cgroup_required: bool = False
    #: ``"none"``: a fresh network namespace before user code
    network: str = "host"
    #: Landlock: paths readable/executable and writable; None = unconfined
    fs_read: list[str] | None = None
    fs_write: list[str] = []
    #: names (fnmatch patterns) of inherited environment variables kept; None = all
    env_allow: list[str] | None = None
    #: drop to this uid/gid (setgroups([]), setgid, setuid) after the above
    run_uid: int | None = None
    run_gid: int | None = None
    no_new_privs: bool = False
    #: a Landlock domain of its own (no ptrace or /proc/<pid>/fd of anything outside
    #: its tree), even without filesystem rules
    ptrace_isolation: bool = False
    #: Landlock scoping (ABI >= 6): signals and abstract unix sockets stay in its tree
    scope: bool = False
    #: False: PR_SET_DUMPABLE 0 (its /proc entries owned by root, no core dumps)
    dumpable: bool = True
    #: a standby (``[agents.X] standby``): confined and its entry imported, it
    #: says Ready, then waits for ``Become`` (its replica and generation; their
    #: variables are unset until then) before it serves
    standby: bool = False


class ZygoteHello(_Msg, frozen=True, tag="hello"):
    """The zygote is up (``error`` empty) or could not preload a module."""

    pid: int
    error: str = ""


class Fork(_Msg, frozen=True, tag="fork"):
    """Fork one replica; its three pipe ends travel with this datagram."""

    req: int
    boot: Boot


class Forked(_Msg, frozen=True, tag="forked"):
    """Replica forked; its pidfd travels with this datagram."""

    req: int
    pid: int


class ForkFailed(_Msg, frozen=True, tag="fork_failed"):
    req: int
    message: str


class Reaped(_Msg, frozen=True, tag="reaped"):
    """A child of the zygote was reaped: raw wait status and CPU seconds used."""

    pid: int
    status: int
    cpu: float


class Spares(_Msg, frozen=True, tag="spares"):
    """How many spares the zygote keeps now (said when it changes)."""

    target: int


class SpareForked(_Msg, frozen=True, tag="spare"):
    """A spare waits: its pidfd and its end of the spare's socket travel with
    this datagram.  The supervisor sends it a ``Fork`` when it needs a replica."""

    pid: int


class SpareTaken(_Msg, frozen=True, tag="spare_taken"):
    """The supervisor gave spare ``pid`` a replica to become (whose cgroups are
    ``cgroups``: the zygote sweeps and thaws them if it must go down)."""

    pid: int
    cgroups: list[str] = []


ZygoteRequest = Fork | SpareTaken
ZygoteReply = ZygoteHello | Forked | ForkFailed | Reaped | Spares | SpareForked


# --- control client <-> supervisor (the run's control socket) --------------
#
# Requests from ``agentrt ctl`` (or any client of the socket) and their
# replies, one frame each; ``tail`` answers with a stream of ``CtlEvent``
# frames.  Fields are bounded here, so the decoder refuses an oversized
# string before the supervisor sees it.

#: the largest control frame, either way
CONTROL_MAX_FRAME: Final = 1 << 20
_Target = Annotated[str, msgspec.Meta(max_length=300)]
_Id = Annotated[str, msgspec.Meta(max_length=64)]
_Reason = Annotated[str, msgspec.Meta(max_length=2000)]


class _Ctl(msgspec.Struct, frozen=True, tag=True, tag_field="op", forbid_unknown_fields=True):
    pass


class CtlStatus(_Ctl, frozen=True, tag="status"):
    """The run: id, state, counts of agents, tasks and pending approvals."""


class CtlAgents(_Ctl, frozen=True, tag="agents"):
    """Each agent and its replicas: state (``paused`` too), pid, calls, restarts."""


class CtlTasks(_Ctl, frozen=True, tag="tasks"):
    """Tasks of the graph runs, calls in flight, and approvals pending."""


class CtlPause(_Ctl, frozen=True, tag="pause"):
    """Pause ``target``: ``""`` the whole run, ``NAME`` an agent, ``NAME#N`` one replica."""

    target: _Target = ""


class CtlResume(_Ctl, frozen=True, tag="resume"):
    """Resume what :class:`CtlPause` paused (same targets)."""

    target: _Target = ""


class CtlCancel(_Ctl, frozen=True, tag="cancel"):
    """Cancel a task (``scope="task"``: a graph task id or a call id), everything
    an agent has queued or running (``"agent"``), or the graph run (``"run"``)."""

    target: _Target = ""
    scope: Literal["task", "agent", "run"] = "task"
    reason: _Reason = ""


class CtlApprove(_Ctl, frozen=True, tag="approve"):
    """Approve pending request ``id``; ``args``: the arguments to use instead."""

    id: _Id
    reason: _Reason = ""
    args: dict[str, Any] | None = None


class CtlDeny(_Ctl, frozen=True, tag="deny"):
    """Deny pending request ``id``: the caller gets ``ApprovalDenied``."""

    id: _Id
    reason: _Reason = ""


class CtlStop(_Ctl, frozen=True, tag="stop"):
    """Stop the run: gracefully (reverse start order), or ``now``: kill every
    agent process at once."""

    now: bool = False
    reason: _Reason = ""


class CtlTail(_Ctl, frozen=True, tag="tail"):
    """The last ``last`` events, then (``follow``) each new one as it happens."""

    last: Annotated[int, msgspec.Meta(ge=0, le=10_000)] = 20
    follow: bool = True


class CtlAudit(_Ctl, frozen=True, tag="audit"):
    """The run's audit log."""


class CtlOk(_Ctl, frozen=True, tag="ok"):
    value: Any = None


class CtlFailed(_Ctl, frozen=True, tag="failed"):
    """A request refused: ``type`` names the error, ``message`` says why."""

    type: str
    message: str


class CtlEvent(_Ctl, frozen=True, tag="event"):
    """One event of a ``tail``."""

    event: dict[str, Any]


ControlRequest = (
    CtlStatus
    | CtlAgents
    | CtlTasks
    | CtlPause
    | CtlResume
    | CtlCancel
    | CtlApprove
    | CtlDeny
    | CtlStop
    | CtlTail
    | CtlAudit
)
ControlReply = CtlOk | CtlFailed | CtlEvent


def _enc_hook(obj: Any) -> Any:
    raise TypeError(f"cannot encode objects of type {type(obj).__qualname__}")


_DECODERS: dict[Any, msgspec.msgpack.Decoder[Any]] = {}


def _decoder_for(message_type: Any) -> msgspec.msgpack.Decoder[Any]:
    """One typed decoder per message type, shared (decoders are stateless)."""
    dec = _DECODERS.get(message_type)
    if dec is None:
        dec = _DECODERS[message_type] = msgspec.msgpack.Decoder(message_type)
    return dec


class FrameEncoder:
    """Encodes messages into length-prefixed frames, reusing one encoder."""

    __slots__ = ("_encoder", "max_frame")

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self._encoder = msgspec.msgpack.Encoder(enc_hook=_enc_hook)
        self.max_frame = max_frame

    def encode(self, msg: msgspec.Struct) -> bytearray:
        """One frame for ``msg``; a fresh buffer the caller may keep.

        Raises :class:`TypeError` naming the type that cannot be encoded
        (:class:`OverflowError` for an int outside 64 bits) and
        :class:`FrameError` when the body exceeds ``max_frame``.
        """
        buf = bytearray(HEADER)
        self._encoder.encode_into(msg, buf, HEADER)
        n = len(buf) - HEADER
        if n > self.max_frame:
            raise FrameError(f"frame of {n} bytes exceeds max_frame={self.max_frame}")
        buf[:HEADER] = n.to_bytes(HEADER, "big")
        return buf

    def encode_many(self, msgs: list[msgspec.Struct]) -> bytearray:
        """Several frames concatenated into one buffer (one write)."""
        buf = bytearray()
        enc = self._encoder
        for msg in msgs:
            start = len(buf)
            enc.encode_into(msg, buf, start + HEADER)
            n = len(buf) - start - HEADER
            if n > self.max_frame:
                raise FrameError(f"frame of {n} bytes exceeds max_frame={self.max_frame}")
            buf[start : start + HEADER] = n.to_bytes(HEADER, "big")
        return buf


class FrameDecoder:
    """Incremental decoder: feed arbitrary chunks, get whole messages.

    The length prefix is checked against ``max_frame`` as soon as its four
    bytes are in, so a hostile prefix fails before anything is allocated for
    the body.  After a :class:`FrameError` the stream must not be trusted
    again: every later :meth:`feed` raises too.
    """

    __slots__ = ("_broken", "_decoder", "_pending", "max_frame")

    def __init__(self, message_type: Any, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self._decoder = _decoder_for(message_type)
        self._pending = bytearray()
        self._broken: str | None = None
        self.max_frame = max_frame

    @property
    def buffered(self) -> int:
        """Bytes held back waiting for the rest of a frame."""
        return len(self._pending)

    def feed(self, data: bytes | bytearray | memoryview) -> list[Any]:
        """Consume ``data``; return the messages it completed, in order."""
        if self._broken is not None:
            raise FrameError(f"stream already broken: {self._broken}")
        pending = self._pending
        if pending:
            pending += data
            with memoryview(pending) as view:
                out, used = self._parse(view)
            del pending[:used]
            return out
        with memoryview(data) as view:
            out, used = self._parse(view)
            if used < len(view):
                pending += view[used:]
        return out

    def _parse(self, view: memoryview) -> tuple[list[Any], int]:
        out: list[Any] = []
        pos = 0
        end = len(view)
        decode = self._decoder.decode
        while end - pos >= HEADER:
            n = int.from_bytes(view[pos : pos + HEADER], "big")
            if n > self.max_frame:
                self._broken = f"frame of {n} bytes exceeds max_frame={self.max_frame}"
                raise FrameError(self._broken)
            if n == 0:
                self._broken = "empty frame"
                raise FrameError(self._broken)
            stop = pos + HEADER + n
            if stop > end:
                break
            try:
                msg = decode(view[pos + HEADER : stop])
                if type(msg) in _KEEPS_RAW:
                    # Its Raw part would point into a buffer that is reused or
                    # resized: decode it again from a copy of its own.
                    msg = decode(bytes(view[pos + HEADER : stop]))
                out.append(msg)
            except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
                self._broken = f"undecodable frame: {exc}"
                raise FrameError(self._broken) from exc
            pos = stop
        return out, pos

    def close(self) -> None:
        """Declare end of stream; raises if a partial frame was left over."""
        if self._pending:
            n = len(self._pending)
            self._pending.clear()
            raise FrameError(f"stream ended inside a frame ({n} bytes pending)")


def describe_unencodable(value: Any, path: str = "") -> str:
    """Name the first part of ``value`` msgpack cannot encode, with its path.

    Only for error messages: ``"args['items'][2]: cannot encode objects of
    type Foo"``.  Walks dicts, lists and tuples; returns ``""`` when it finds
    nothing wrong.
    """
    enc = msgspec.msgpack.Encoder(enc_hook=_enc_hook)
    stack: list[tuple[str, Any]] = [(path, value)]
    while stack:
        where, obj = stack.pop()
        if isinstance(obj, dict):
            stack.extend((f"{where}[{k!r}]", v) for k, v in reversed(list(obj.items())))
            bad_keys = [k for k in obj if not isinstance(k, str | int | float | bool | bytes)]
            if bad_keys:
                return f"{where}: cannot encode a key of type {type(bad_keys[0]).__qualname__}"
            continue
        if isinstance(obj, list | tuple):
            stack.extend((f"{where}[{i}]", v) for i, v in reversed(list(enumerate(obj))))
            continue
        try:
            enc.encode(obj)
        except (TypeError, ValueError, OverflowError) as exc:
            return f"{where}: {exc}"
    return ""


def iter_frames(data: bytes, message_type: Any = AgentMessage) -> Iterator[Any]:
    """Decode a complete byte string of frames (a convenience for tests and tools)."""
    dec = FrameDecoder(message_type)
    yield from dec.feed(data)
    dec.close()


#: of an argument matched against approval patterns, this much text is looked at
_MATCH_CHARS: Final = 65536


def args_match(rule: Mapping[str, Sequence[str]], args: Mapping[str, Any]) -> bool:
    """Whether a call's ``args`` match an approval rule: each argument the rule
    names is present and matches one of its ``fnmatch`` patterns (a value that
    is not a string as its JSON text, its first 64 KiB).  An empty rule
    matches every call.  Linear time: ``fnmatch`` does not backtrack."""
    for name, patterns in rule.items():
        if name not in args:
            return False
        value = args[name]
        if isinstance(value, str):
            text = value[:_MATCH_CHARS]
        else:
            try:
                text = msgspec.json.encode(value).decode()[:_MATCH_CHARS]
            except (TypeError, ValueError, OverflowError, RecursionError):
                text = repr(value)[:_MATCH_CHARS]
        if not any(fnmatch.fnmatchcase(text, p) for p in patterns):
            return False
    return True


def rule_text(tool: str, rule: Mapping[str, Sequence[str]]) -> str:
    """Why a call of ``tool`` matching ``rule`` needs approval, in words."""
    if not rule:
        return f"every call of {tool!r} needs approval"
    parts = [f"{k} matches {' | '.join(repr(p) for p in v)}" for k, v in rule.items()]
    return f"{tool!r} called with {', '.join(parts)}"


def summarize(args: Any, width: int = 80) -> str:
    """``args`` shown short, for timelines and views: ``query='who', n=3``."""
    if isinstance(args, dict):
        text = ", ".join(f"{k}={_short(v)}" for k, v in args.items())
    else:
        text = _short(args)
    return text if len(text) <= width else text[: width - 1] + "\u2026"


def _short(v: Any) -> str:
    if isinstance(v, str | int | float | bool) or v is None:
        r = repr(v)
    elif isinstance(v, bytes | bytearray):
        r = f"<{len(v)} bytes>"
    elif isinstance(v, list | tuple):
        r = f"[{len(v)} items]"
    elif isinstance(v, dict):
        r = f"{{{len(v)} keys}}"
    else:
        r = f"<{type(v).__name__}>"
    return r if len(r) <= 40 else r[:39] + "\u2026"
