"""The typed specs: supervisor, agents, tools, limits, sandbox profiles, tasks, runs.

Every struct forbids unknown fields; values are validated when a spec is
built (from a config or from Python), and a :class:`ConfigError` names the
field (the loader prefixes the table's path).
"""

from __future__ import annotations

import functools
import grp
import pwd
import re
import typing
from typing import Any, ClassVar, Literal

import msgspec

from agentrt.config.units import (
    _MAX_SPIN,
    _PARSERS,
    MAX_ARGS_DEPTH,
    MAX_FRAME,
    MIN_FRAME,
    NAME_RE,
    Bytes,
    Grace,
    Seconds,
    _Parser,
    choices,
    say_choices,
)
from agentrt.errors import ConfigError

__all__ = [
    "AgentSpec",
    "ApprovalRule",
    "ApprovalsSpec",
    "Config",
    "FilesystemSpec",
    "Limits",
    "ModelSpec",
    "RunSpec",
    "SandboxLimits",
    "SandboxProfile",
    "SupervisorSpec",
    "TaskSpec",
    "ToolSpec",
]

RestartType = Literal["permanent", "transient", "temporary"]
Strategy = Literal["one_for_one", "one_for_all", "rest_for_one"]
StartMethod = Literal["zygote", "forkserver", "spawn", "fork"]
#: where replicas run: processes on this machine, or Ray actors (``agentrt[ray]``)
Backend = Literal["local", "ray"]
#: Ray's scheduling of replica actors: spread over the nodes, or Ray's default
RayStrategy = Literal["SPREAD", "DEFAULT"]
OnAgentFailure = Literal["stop", "continue"]
#: ``"required"``: every call waits for a person's (or the approver's) yes
Approval = Literal["none", "required"]
#: ``"auto"``: a standby from the first death of one of the agent's replicas on
Standby = bool | Literal["auto"]


@functools.cache
def _unit_fields(cls: type) -> tuple[tuple[str, _Parser], ...]:
    """``(field, parser)`` for each duration or size field of a spec class."""
    out: list[tuple[str, _Parser]] = []
    for f in msgspec.structs.fields(cls):
        for t in (f.type, *typing.get_args(f.type)):
            parse = _PARSERS.get(t) if isinstance(t, type) else None
            if parse is not None:
                out.append((f.name, parse))
                break
    return tuple(out)


@functools.cache
def _choice_fields(cls: type) -> tuple[tuple[str, frozenset[tuple[type, Any]], str], ...]:
    """``(field, {(type, value)}, "the values, as a config writes them")`` for
    each field of a spec class that is a choice (typed: ``1`` is not ``True``)."""
    out = []
    for f in msgspec.structs.fields(cls):
        values = choices(f.type)
        if values:
            out.append((f.name, frozenset((type(v), v) for v in values), say_choices(values)))
    return tuple(out)


class _Spec(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Base of every spec: durations and sizes hold plain numbers once built.

    Decoded from a config they arrive as marker instances and are made plain
    here; given as strings from Python (``Limits(memory="256MiB")``) they are
    parsed here, once.  Then :meth:`_check` validates the values.  A
    :class:`ConfigError` raised here names the field; the config loader
    prefixes the path of the table it was found in.
    """

    #: integer fields and their (least, greatest) values: a number past them is a mistake
    _BOUNDS: ClassVar[dict[str, tuple[int, int]]] = {}

    def __post_init__(self) -> None:
        for name, parse in _unit_fields(type(self)):
            v = getattr(self, name)
            if v is None or type(v) is float or type(v) is int:
                continue
            try:
                n = parse(v)
            except ValueError as exc:
                raise ConfigError(name, str(exc)) from None
            setattr(self, name, float(n) if isinstance(n, float) else int(n))
        for name, (lo, hi) in self._BOUNDS.items():
            _within(name, getattr(self, name), lo, hi)
        # (decoded from a config, the decoder checked these; built in Python, not)
        for name, allowed, said in _choice_fields(type(self)):
            v = getattr(self, name)
            try:
                # (a str subclass, an enum's member say, counts as its str)
                ok = (type(v), v) in allowed or (isinstance(v, str) and (str, v) in allowed)
            except TypeError:  # unhashable: not one of them
                ok = False
            if not ok:
                raise ConfigError(name, f"must be {said}, got {v!r}")
        self._check()

    def _check(self) -> None:
        """Validate the spec's values (durations and sizes are numbers by now)."""


def _within(field: str, v: Any, lo: int, hi: int) -> None:
    if v is None:
        return
    if isinstance(v, bool) or not isinstance(v, int):
        raise ConfigError(field, f"expected an integer, got {v!r}")
    if v < lo:
        raise ConfigError(field, f"must be at least {lo}, got {v}")
    if v > hi:
        raise ConfigError(field, f"must be at most {hi:,}, got {v:,}")


def _above_zero(spec: Any, field: str) -> None:
    v = getattr(spec, field)
    if v is not None and not v > 0:
        raise ConfigError(field, f"must be greater than 0, got {v:g}")


def _name(spec: Any) -> None:
    """Names become file, directory and cgroup names: no path tricks.

    ``tool:<name>`` is the pool of isolated tool ``<name>``.
    """
    if spec.name and not NAME_RE.match(spec.name.removeprefix("tool:")):
        raise ConfigError(
            "name",
            f"{spec.name!r} is not a valid name: use letters, digits, '_', '-' and '.', "
            "not starting with '.' (at most 128 characters)",
        )


def _depth(value: Any, limit: int = MAX_ARGS_DEPTH) -> int:
    """How deeply ``value`` nests (lists and tables), counting no further than ``limit + 1``."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, dict | list | tuple):
            deepest = max(deepest, d)
            if d <= limit:
                stack.extend((x, d + 1) for x in (v.values() if isinstance(v, dict) else v))
    return deepest


def _check_user(spec: str) -> None:
    """``run_as``: ``"dynamic"``, ``"user[:group]"`` or ``"uid[:gid]"``, naming ones
    that exist here."""
    if spec == "dynamic":
        return
    name, _, group = spec.strip().partition(":")
    if not name:
        raise ConfigError("run_as", 'expected a user name or "uid[:gid]"')
    if name.isdigit():
        if not int(name) < 2**32 - 1:
            raise ConfigError("run_as", f"uid {name} is out of range")
    else:
        try:
            pwd.getpwnam(name)
        except KeyError:
            raise ConfigError("run_as", f"no user named {name!r} on this machine") from None
    if group and not group.isdigit():
        try:
            grp.getgrnam(group)
        except KeyError:
            raise ConfigError("run_as", f"no group named {group!r} on this machine") from None
    elif group and not int(group) < 2**32 - 1:
        raise ConfigError("run_as", f"gid {group} is out of range")


def _entry(spec: Any) -> None:
    mod, colon, attr = spec.entry.partition(":")
    if not (mod and colon and attr):
        raise ConfigError("entry", f'expected "module:attr", got {spec.entry!r}')


class Limits(_Spec, kw_only=True, forbid_unknown_fields=True):
    """Resource limits of one agent replica (applied in the child before user code).

    ``memory`` is bytes: RLIMIT_AS in the child plus an RSS watchdog in the
    supervisor.  ``cpu_time`` is seconds of CPU over the replica's life
    (RLIMIT_CPU).  Core dumps are always off.
    """

    memory: Bytes | None = None
    cpu_time: Seconds | None = None
    open_files: int | None = None
    processes: int | None = None
    file_size: Bytes | None = None

    _BOUNDS = {"open_files": (3, 1 << 20), "processes": (1, 1 << 22)}


class SandboxLimits(Limits, kw_only=True, forbid_unknown_fields=True):
    """A profile's limits: the core's (merged under the agent's own) plus ``cpu``.

    ``cpu`` is a share of one core (``0.5``), enforced as a cgroup CPU quota.
    """

    cpu: float | None = None

    def _check(self) -> None:
        super()._check()
        if self.cpu is not None and not (0 < self.cpu <= 1024):
            raise ConfigError(
                "cpu", f"must be a positive share of cores (at most 1024), got {self.cpu}"
            )


class FilesystemSpec(_Spec, kw_only=True, forbid_unknown_fields=True):
    """Paths the agent may read (and execute) and write; everything else is denied.

    The interpreter, its stdlib and site-packages, the agent's import path
    and its private working directory (writable) are always added.
    """

    read: list[str] = []
    write: list[str] = []


Enforce = Literal["strict", "warn"]
Network = Literal["host", "none"]


class SandboxProfile(_Spec, kw_only=True, forbid_unknown_fields=True):
    """How an agent's processes are confined (``agentrt/sandbox/profiles/<name>.toml``).

    * ``extends``: the profile this one starts from (its settings, overridden
      key by key; tables such as ``limits`` merge).
    * ``enforce``: ``"strict"`` (a setting this machine cannot enforce stops
      the agent from starting) or ``"warn"`` (a ``sandbox_unenforced`` warning).
    * ``network``: ``"host"``, or ``"none"`` (a fresh network namespace: only
      its own loopback).
    * ``filesystem``: ``read``/``write`` path lists, enforced with Landlock;
      absent = no filesystem confinement.
    * ``env``: names (``fnmatch`` patterns) of the supervisor's environment
      variables the agent sees; absent = all of them.  The agent's own
      ``env`` is always added.
    * ``run_as``: ``"user"`` or ``"uid[:gid]"`` to drop to, or ``"dynamic"``: a
      uid of its own per replica, from ``[supervisor] uid_range`` (needs root).
    * ``no_new_privs``: ``PR_SET_NO_NEW_PRIVS`` (always set under Landlock).
    * ``cgroup``: enforce ``limits.memory`` (real usage, OOM kill),
      ``limits.cpu`` and ``limits.processes`` with a cgroup per replica.
    * ``limits``: the core limits, the agent's explicit values winning.
    """

    name: str = ""
    extends: str | None = None
    enforce: Enforce = "warn"
    network: Network = "host"
    filesystem: FilesystemSpec | None = None
    env: list[str] | None = None
    run_as: str | None = None
    no_new_privs: bool = False
    cgroup: bool = False
    limits: SandboxLimits = msgspec.field(default_factory=SandboxLimits)

    def _check(self) -> None:
        if self.run_as is not None:
            _check_user(self.run_as)


class AgentSpec(_Spec, kw_only=True, forbid_unknown_fields=True):
    """One agent: its entry point, pool size, restart type, limits and deadlines.

    ``entry`` is ``"module:attr"``: a function (sync or async) or a class
    whose instance is created once per replica and whose methods are call
    targets.  ``concurrency`` calls run at once in a replica; ``queue`` more
    may wait in it, beyond which callers wait (backpressure).  ``spin``: how
    long a replica that has just answered polls for its next call before it
    sleeps (waking a sleeping process costs tens of microseconds on many
    machines); it spins only while calls keep arriving that fast, yielding
    the CPU to anything runnable, and only while it holds one of the
    supervisor's cores - 1 spinning slots (the last core is the
    supervisor's).  The supervisor polls for a replica's answer as long,
    when the last one came that fast and its loop has nothing else ready;
    ``0`` turns both off.  ``shutdown_timeout``
    is the grace after ``Shutdown`` before SIGTERM and SIGKILL, or
    :data:`BRUTAL_KILL` / :data:`INFINITY` (``"brutal_kill"`` /
    ``"infinity"`` in a config).  All durations are seconds.
    """

    name: str = ""
    entry: str
    replicas: int = 1
    restart: RestartType = "permanent"
    timeout: Seconds | None = None
    startup_timeout: Seconds = 10.0
    shutdown_timeout: Grace = 2.0
    cancel_grace: Seconds = 1.0
    concurrency: int = 1
    queue: int = 4
    spin: Seconds = 0.0002
    retries: int = 0
    limits: Limits = msgspec.field(default_factory=Limits)
    env: dict[str, str] = {}
    intensity: int | None = None
    period: Seconds | None = None
    #: a sandbox profile's name (shipped, a ``name.toml`` next to the
    #: config, or ``[sandboxes.name]``), or the profile itself
    sandbox: str | SandboxProfile = "default"
    #: ``"required"``: every call to it (a task, a subagent call) waits for approval
    approval: Approval = "none"
    #: keep one more process ready (confined, its entry imported) to take the
    #: place of the next replica that dies: served at once, not started then;
    #: ``"auto"``: from the first death of one of its replicas on
    standby: Standby = False

    _BOUNDS = {
        "replicas": (1, 10_000),
        "concurrency": (1, 10_000),
        "queue": (0, 1_000_000),
        "retries": (0, 1_000),
        "intensity": (0, 1_000_000),
    }

    def _check(self) -> None:
        _name(self)
        _entry(self)
        if self.spin > _MAX_SPIN:
            raise ConfigError("spin", f"must be at most {_MAX_SPIN * 1e3:g}ms, got {self.spin}s")
        _above_zero(self, "startup_timeout")
        _above_zero(self, "period")


class ToolSpec(_Spec, kw_only=True, forbid_unknown_fields=True):
    """A tool agents may call with ``ctx.tool(name, ...)``.

    In-process by default (the function runs in the calling agent); with
    ``isolated = true`` each call runs in a sandboxed process of a small warm
    pool (``replicas``), under its own ``limits`` and ``timeout``, so a tool
    that crashes or hangs fails only that call.
    """

    name: str = ""
    entry: str
    isolated: bool = False
    replicas: int = 1
    #: calls one of an isolated tool's processes runs at once (an async tool's
    #: calls overlap on its event loop): a model turn's parallel calls to it
    concurrency: int = 1
    timeout: Seconds | None = None
    limits: Limits = msgspec.field(default_factory=Limits)
    #: sandbox profile of an isolated tool's processes (see ``AgentSpec.sandbox``)
    sandbox: str | SandboxProfile = "default"
    #: ``"required"``: every call of it waits for approval
    approval: Approval = "none"

    _BOUNDS = {"replicas": (1, 10_000), "concurrency": (1, 10_000)}

    def _check(self) -> None:
        _name(self)
        _entry(self)


_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")


class ModelSpec(_Spec, kw_only=True, forbid_unknown_fields=True):
    """A language model agents may use: ``ctx.model(name)`` builds its client.

    ``kind`` is the API (``"openai"``: chat completions, any compatible
    server; ``"anthropic"``: Messages).  Empty fields fall back to the
    environment (``OPENAI_BASE_URL``, ``OPENAI_MODEL``, ...).  The key is never
    written in the config: ``api_key_env`` names the environment variable that
    holds it, read in the agent's process (the agent's sandbox profile must
    pass it: ``env``).
    """

    name: str = ""
    kind: Literal["openai", "anthropic"] = "openai"
    model: str = ""
    base_url: str = ""
    api_key_env: str = ""
    timeout: Seconds = 60.0
    max_retries: int = 3

    _BOUNDS = {"max_retries": (0, 100)}

    def _check(self) -> None:
        _name(self)
        _above_zero(self, "timeout")
        if self.base_url and not self.base_url.startswith(("http://", "https://")):
            raise ConfigError(
                "base_url", f"expected an http:// or https:// URL, got {self.base_url!r}"
            )
        if len(self.base_url) > 2048 or len(self.model) > 256:
            raise ConfigError("base_url" if len(self.base_url) > 2048 else "model", "too long")
        if self.api_key_env and not _ENV_NAME_RE.match(self.api_key_env):
            raise ConfigError(
                "api_key_env",
                f"expected the name of an environment variable, got {self.api_key_env!r}",
            )

    def client_config(self) -> dict[str, Any]:
        """What :func:`agentrt.llm.client_from_config` takes (empty fields left out)."""
        out: dict[str, Any] = {"kind": self.kind, "timeout": self.timeout}
        out["max_retries"] = self.max_retries
        for key in ("model", "base_url", "api_key_env"):
            if getattr(self, key):
                out[key] = getattr(self, key)
        return out


class SupervisorSpec(_Spec, kw_only=True, forbid_unknown_fields=True):
    """Supervisor-wide settings: start method, preloads, restart policy, budgets.

    Restart policy (Erlang/OTP): ``strategy``; at most ``intensity``
    restarts of an agent within ``period`` seconds, beyond which the agent
    has failed and ``on_agent_failure`` decides: ``"stop"`` (OTP: every
    agent is terminated and the supervisor stops) or ``"continue"`` (the
    others keep running).  Budgets are enforced by the supervisor:
    ``max_agents`` live replica processes (by default one per 8 MiB of the
    machine's memory, between 64 and 4,096), ``max_depth`` of subagent
    nesting, and per run ``max_tasks`` (tasks, spawns and submissions) and
    ``max_tool_calls``.
    """

    start_method: StartMethod = "zygote"
    #: ``"ray"``: every replica is a Ray actor (``pip install 'agentrt[ray]'``)
    backend: Backend = "local"
    #: the Ray cluster (backend ``"ray"``): ``"local"`` starts a Ray instance on
    #: this machine, ``"auto"`` joins the running one, ``"ray://host:port"`` or
    #: ``"host:port"`` names one
    address: str = "local"
    #: CPUs each replica actor asks Ray for (a profile's ``limits.cpu`` wins);
    #: Ray spreads only actors that ask for some (0.01: a hundred per CPU)
    ray_num_cpus: float = 0.01
    #: ``"SPREAD"``: replicas spread over the cluster's nodes
    ray_strategy: RayStrategy = "SPREAD"
    preload: list[str] = []
    #: at most this many processes the zygote forks ahead, while it is idle, to
    #: become replicas (Android's zygote pool): starting or replacing a replica
    #: then skips the fork and the move between cgroups (a spare waits in
    #: groups of its own and renames them); each serves one replica only.  The
    #: zygote keeps 4 at first, doubles that when a start finds none left,
    #: halves it after 30 s without starts, down to 4 (0: fork on demand)
    spares: int = 4
    #: spares kept from the start and never fewer, where more than 4 (at most
    #: ``spares``): a first burst of starts then finds them waiting
    spares_min: int = 0
    strategy: Strategy = "one_for_one"
    intensity: int = 5
    period: Seconds = 10.0
    backoff: Seconds = 0.05
    backoff_max: Seconds = 5.0
    on_agent_failure: OnAgentFailure = "stop"
    max_frame: Bytes = 64 * 1024 * 1024
    #: uids (and gids) handed to replicas of ``run_as = "dynamic"`` profiles, one per
    #: live replica: ``"first-last"`` (systemd's DynamicUser range by default)
    uid_range: str = "61184-65519"
    #: messages (and their bytes) an agent's mailbox holds before ctx.send fails
    mailbox: int = 1000
    mailbox_bytes: Bytes = 64 * 1024 * 1024
    sys_path: list[str] = []
    max_agents: int | None = None
    max_depth: int | None = None
    max_tasks: int | None = None
    max_tool_calls: int | None = None
    #: agents report each in-process tool call, for timelines (--trace, live view)
    trace_tools: bool = False
    #: serve ``agentrt ctl`` on a Unix socket in the run's directory
    control: bool = True
    #: also append the audit log (JSON lines) to this file
    audit_log: str | None = None

    _BOUNDS = {
        "spares": (0, 1_024),
        "spares_min": (0, 1_024),
        "intensity": (0, 1_000_000),
        "mailbox": (1, 1_000_000),
        "max_agents": (0, 100_000),
        "max_depth": (0, 1_000),
        "max_tasks": (0, 10**9),
        "max_tool_calls": (0, 10**9),
    }

    @property
    def uids(self) -> range:
        """:attr:`uid_range` as a range."""
        first, _, last = self.uid_range.partition("-")
        return range(int(first), int(last) + 1)

    def _check(self) -> None:
        _above_zero(self, "period")
        if self.spares_min > self.spares:
            raise ConfigError(
                "spares_min",
                f"must be at most spares ({self.spares}), got {self.spares_min}",
            )
        if not 0 <= self.ray_num_cpus <= 1024:
            raise ConfigError(
                "ray_num_cpus", f"must be between 0 and 1024, got {self.ray_num_cpus:g}"
            )
        if not _RAY_ADDRESS.fullmatch(self.address):
            raise ConfigError(
                "address",
                f'expected "local", "auto", "ray://host:port" or "host:port", got {self.address!r}',
            )
        m = re.fullmatch(r"(\d+)-(\d+)", self.uid_range)
        if m is None or not (1000 <= int(m[1]) <= int(m[2]) < 2**31):
            raise ConfigError(
                "uid_range",
                f'expected "first-last" uids, 1000 <= first <= last, got {self.uid_range!r}',
            )
        if self.backoff_max < self.backoff:
            raise ConfigError(
                "backoff_max",
                f"must be at least backoff ({self.backoff:g}s), got {self.backoff_max:g}s",
            )
        if not MIN_FRAME <= self.max_frame <= MAX_FRAME:
            raise ConfigError(
                "max_frame",
                f"must be between 64KiB and 1GiB ({MIN_FRAME} and {MAX_FRAME} bytes), "
                f"got {self.max_frame}",
            )


#: the forms ``[supervisor] address`` takes
_RAY_ADDRESS = re.compile(r"local|auto|(ray://)?[A-Za-z0-9._-]{1,253}:\d{1,5}")

OnError = Literal["fail_fast", "continue"]


class TaskSpec(_Spec, kw_only=True, forbid_unknown_fields=True):
    """One task of a graph: ``agent`` with keyword ``args``.

    Dependencies are ``after`` plus every ``${id...}`` reference in ``args``;
    ``for_each = "${plan.topics}"`` makes one task per item (``${item}``).
    """

    id: str
    agent: str
    args: dict[str, Any] = {}
    method: str = ""
    after: list[str] = []
    retries: int | None = None
    timeout: Seconds | None = None
    for_each: str | None = None
    min_success: int | None = None
    #: ``${id}`` of a fan-out, for items that did not succeed: dropped, or ``null``
    missing: Literal["drop", "null"] = "drop"
    on_error: OnError | None = None
    #: ``"required"``: the task waits for approval before its call is made
    approval: Approval = "none"

    _BOUNDS = {"retries": (0, 1_000), "min_success": (0, 10**9)}

    def _check(self) -> None:
        depth = _depth(self.args)
        if depth > MAX_ARGS_DEPTH:
            raise ConfigError("args", f"nested {depth} deep: at most {MAX_ARGS_DEPTH} levels")


class RunSpec(_Spec, kw_only=True, forbid_unknown_fields=True):
    """How a graph runs: failure policy, deadline, concurrency, retry backoff.

    ``on_error``: ``"continue"`` (the default: a failed task skips only its
    dependents, independent branches run on) or ``"fail_fast"`` (the first
    failure cancels everything in flight and skips the rest).
    """

    on_error: OnError = "continue"
    deadline: Seconds | None = None
    max_concurrency: int | None = None
    agent_concurrency: dict[str, int] = {}
    retry_backoff: Seconds = 0.1
    retry_backoff_max: Seconds = 5.0
    #: ``agentrt supervise`` records the run here (relative to the config's
    #: directory); ``""``: no journal, and no ``--resume``
    journal: str = ".agentrt/runs.db"

    _BOUNDS = {"max_concurrency": (1, 1_000_000)}

    def _check(self) -> None:
        for agent, n in self.agent_concurrency.items():
            _within(f"agent_concurrency.{agent}", n, 1, 1_000_000)


#: at most this many rules, arguments per rule, patterns per argument
_MAX_RULES, _MAX_RULE_ARGS, _MAX_PATTERNS = 1000, 32, 64


class ApprovalRule(_Spec, kw_only=True, forbid_unknown_fields=True):
    """One rule of ``[approvals]``: calls of ``tool`` (or to ``agent``) need
    approval when each argument named in ``args`` matches one of its
    patterns (``fnmatch``: ``*``, ``?``, ``[...]``; a value that is not a
    string is matched as its JSON text).  No ``args``: every call.
    ``args = { cmd = ["rm *", "*sudo*"] }``."""

    tool: str | None = None
    agent: str | None = None
    args: dict[str, str | list[str]] = {}

    def _check(self) -> None:
        if (self.tool is None) == (self.agent is None):
            raise ConfigError("", "a rule names either a tool or an agent")
        name = self.tool if self.tool is not None else self.agent
        if not name or not NAME_RE.match(name):
            raise ConfigError(
                "tool" if self.tool is not None else "agent", f"{name!r} is not a name"
            )
        if len(self.args) > _MAX_RULE_ARGS:
            raise ConfigError("args", f"at most {_MAX_RULE_ARGS} arguments per rule")
        for arg, pats in self.patterns().items():
            if not pats:
                raise ConfigError(f"args.{arg}", "expected a pattern or a list of patterns")
            if len(pats) > _MAX_PATTERNS:
                raise ConfigError(f"args.{arg}", f"at most {_MAX_PATTERNS} patterns")
            for p in pats:
                if not p or len(p) > 1000:
                    raise ConfigError(f"args.{arg}", "a pattern is 1 to 1,000 characters")

    def patterns(self) -> dict[str, list[str]]:
        """``args`` with each value a list of patterns."""
        return {k: [v] if isinstance(v, str) else list(v) for k, v in self.args.items()}


class ApprovalsSpec(_Spec, kw_only=True, forbid_unknown_fields=True):
    """``[approvals]``: which calls need a person's yes, and how long one waits.

    Besides ``approval = "required"`` on a task, an agent or a tool, each of
    ``rules`` (``[[approvals.rules]]``) names a tool or an agent and,
    optionally, argument patterns.  A request nobody answers within
    ``timeout`` seconds (the approval timeout) is denied.
    """

    timeout: Seconds = 600.0
    rules: list[ApprovalRule] = []

    def _check(self) -> None:
        _above_zero(self, "timeout")
        if len(self.rules) > _MAX_RULES:
            raise ConfigError("rules", f"at most {_MAX_RULES} rules")
        rules: list[Any] = self.rules
        for i, rule in enumerate(rules):  # given as tables from Python: made rules here
            if not isinstance(rule, ApprovalRule):
                try:
                    rules[i] = msgspec.convert(rule, ApprovalRule)
                except msgspec.ValidationError as exc:
                    raise ConfigError(f"rules.{i}", str(exc)) from None


class Config(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A whole ``config.toml``: supervisor, agents (in declaration order), tasks."""

    supervisor: SupervisorSpec = msgspec.field(default_factory=SupervisorSpec)
    agents: dict[str, AgentSpec] = {}
    tools: dict[str, ToolSpec] = {}
    #: language models agents may use (``[models.X]``)
    models: dict[str, ModelSpec] = {}
    run: RunSpec = msgspec.field(default_factory=RunSpec)
    tasks: list[TaskSpec] = []
    approvals: ApprovalsSpec = msgspec.field(default_factory=ApprovalsSpec)
    base_dir: str = ""
    #: the config's own sandbox profiles (``[sandboxes.X]``), resolved
    sandboxes: dict[str, SandboxProfile] = {}
