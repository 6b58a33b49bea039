"""Typed specs for supervisors, agents, limits and tasks; TOML loading.

Every struct forbids unknown fields, so a typo fails at load time with the
key's dotted path (``agents.echo.limits.memry: unknown key; did you mean
'memory'?``).  Durations are ``float`` seconds and sizes ``int`` bytes once a
spec is built: a config may write ``"500ms"``, ``"30s"``, ``"2m"`` or
``"256MiB"``, which the decoder turns into numbers once (see
:class:`Seconds`, :class:`Bytes`); nothing downstream parses or casts them.
"""

from __future__ import annotations

import difflib
import functools
import grp
import importlib.resources
import math
import pwd
import re
import tomllib
import typing
from collections.abc import Callable, Sequence
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Final, Literal

import msgspec

from agentrt.errors import ConfigError

__all__ = [
    "BRUTAL_KILL",
    "INFINITY",
    "AgentSpec",
    "Bytes",
    "Config",
    "Limits",
    "RunSpec",
    "SandboxProfile",
    "Seconds",
    "SupervisorSpec",
    "TaskSpec",
    "ToolSpec",
    "check_entries",
    "convert_spec",
    "load_config",
    "load_sandbox",
    "parse_config",
    "parse_duration",
    "parse_size",
    "read_toml",
]

RestartType = Literal["permanent", "transient", "temporary"]
Strategy = Literal["one_for_one", "one_for_all", "rest_for_one"]
StartMethod = Literal["zygote", "forkserver", "spawn", "fork"]
OnAgentFailure = Literal["stop", "continue"]
_T = typing.TypeVar("_T")

_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "m": 1000**2,
    "mb": 1000**2,
    "g": 1000**3,
    "gb": 1000**3,
    "t": 1000**4,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}
_DURATION_UNITS = {"us": 1e-6, "ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "": 1.0}
#: the longest ``spin`` accepted (beyond it, polling costs more CPU than a wake-up)
_MAX_SPIN = 0.01
_NUM_UNIT = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*$")
#: the longest duration accepted (about 31 years): a larger one is a mistake
MAX_SECONDS: Final = 1e9
#: the largest size accepted (1 PiB)
MAX_BYTES: Final = 2**50
#: frames: at least this (a Call with its arguments must fit), at most 1 GiB
MIN_FRAME: Final = 64 * 1024
MAX_FRAME: Final = 2**30
#: how deeply task arguments may nest
MAX_ARGS_DEPTH: Final = 64
#: agent and tool names become file and cgroup names: letters, digits, _ - .
NAME_RE: Final = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}$")


def parse_size(value: int | str) -> int:
    """``"256MiB"`` -> ``268435456``; an int is bytes already."""
    if isinstance(value, bool):
        raise ValueError('expected a size like "256MiB"')
    if isinstance(value, int):
        n = int(value)
    elif isinstance(value, str):
        m = _NUM_UNIT.match(value)
        unit = m.group(2).lower() if m else None
        if m is None or unit not in _SIZE_UNITS:
            raise ValueError(f'expected a size like "256MiB", got {value!r}')
        n = int(float(m.group(1)) * _SIZE_UNITS[unit])
    else:
        raise ValueError(f'expected a size like "256MiB", got a {type(value).__name__}')
    if n < 0:
        raise ValueError("a size cannot be negative")
    if n > MAX_BYTES:
        raise ValueError(f"a size must be at most 1PiB ({MAX_BYTES} bytes), got {n}")
    return n


def parse_duration(value: float | int | str) -> float:
    """``"500ms"`` -> ``0.5``; ``"2m"`` -> ``120.0``; a number is seconds."""
    if isinstance(value, bool):
        raise ValueError('expected a duration like "30s"')
    if isinstance(value, int | float):
        try:
            t = float(value)
        except OverflowError:  # an int too large for a float
            t = math.inf
    elif isinstance(value, str):
        m = _NUM_UNIT.match(value)
        unit = m.group(2).lower() if m else None
        if m is None or unit not in _DURATION_UNITS:
            raise ValueError(f'expected a duration like "500ms", "30s" or "2m", got {value!r}')
        t = float(m.group(1)) * _DURATION_UNITS[unit]
    else:
        raise ValueError(f'expected a duration like "30s", got a {type(value).__name__}')
    if math.isnan(t) or t < 0:
        raise ValueError("a duration cannot be negative")
    if t > MAX_SECONDS:
        raise ValueError(
            f"a duration must be at most {MAX_SECONDS:g}s (about 31 years), got {value}"
        )
    return t


#: ``shutdown_timeout = "brutal_kill"`` (or 0): SIGKILL at once, as OTP's ``brutal_kill``
BRUTAL_KILL: Final = 0.0
#: ``shutdown_timeout = "infinity"``: wait for the replica however long it takes
INFINITY: Final = math.inf


def parse_grace(value: float | int | str) -> float:
    """A ``shutdown_timeout``: a duration, ``"brutal_kill"`` (0.0) or ``"infinity"``."""
    if value == "brutal_kill":
        return BRUTAL_KILL
    if value == "infinity" or (isinstance(value, float) and value == INFINITY):
        return INFINITY
    try:
        return parse_duration(value)
    except ValueError:
        raise ValueError(
            f'expected a duration like "2s", "brutal_kill" or "infinity", got {value!r}'
        ) from None


# Static checkers see plain float / int.  At run time each name is a marker
# class that tells the decoder (_dec_hook) which parser a config value needs;
# _Spec turns the decoded marker back into a plain number.
if TYPE_CHECKING:
    Seconds = float
    Bytes = int
    Grace = float
else:

    class Seconds(float):
        """A duration: seconds, or ``"200us"``, ``"500ms"``, ``"30s"``, ``"2m"``, ``"1h"``."""

    class Bytes(int):
        """A size: bytes, or ``"512KiB"``, ``"256MiB"``, ``"1GB"``."""

    class Grace(float):
        """A ``shutdown_timeout``: a duration, ``"brutal_kill"`` or ``"infinity"``."""


_Parser = Callable[[Any], float | int]
_PARSERS: dict[type, _Parser] = {Seconds: parse_duration, Bytes: parse_size, Grace: parse_grace}


def _dec_hook(tp: type, obj: Any) -> Any:
    """msgspec's decoding hook: a config's duration or size becomes its number."""
    parse = _PARSERS.get(tp)
    if parse is None:
        raise NotImplementedError(f"no decoder for {tp!r}")
    return tp(parse(obj))


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


#: the profiles shipped with agentrt (``default``, ``strict``, ``untrusted``): package
#: data in ``agentrt/sandbox/profiles/`` (the checkout's ``sandboxes/`` links to it),
#: found through :mod:`importlib.resources` so that an installed wheel has them too
SHIPPED_SANDBOXES: Final[Traversable] = importlib.resources.files("agentrt").joinpath(
    "sandbox", "profiles"
)


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def _sandbox_sources(inline: dict[str, Any] | None, dirs: list[Path]) -> list[tuple[str, Any]]:
    """Where profiles are looked up, first match wins: inline tables, files, shipped.

    Each source is a table of profiles (a ``dict``) or a directory of
    ``<name>.toml`` files (a :class:`Traversable`: a ``Path``, or the shipped
    package data).
    """
    sources: list[tuple[str, Any]] = []
    if inline:
        sources.append(("", inline))
    for d in dirs:
        sources.append((str(d), Path(d)))
    sources.append((str(SHIPPED_SANDBOXES), SHIPPED_SANDBOXES))
    return sources


def _find_raw(
    name: str, sources: list[tuple[str, Any]], start: int, where: str
) -> tuple[dict[str, Any], int, str]:
    for i in range(start, len(sources)):
        _label, src = sources[i]
        if isinstance(src, dict):
            if name in src:
                raw = src[name]
                if not isinstance(raw, dict):
                    raise ConfigError(f"sandboxes.{name}", "expected a table")
                return raw, i, ""
            continue
        path: Traversable = src.joinpath(f"{name}.toml")
        if path.is_file():
            try:
                raw = tomllib.loads(path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
                raise ConfigError(f"sandboxes.{name}", f"cannot load {path}: {exc}") from None
            return raw, i, str(path)
    known = sorted(sandbox_names([s for _, s in sources if isinstance(s, dict)][:1], []))
    raise ConfigError(
        where, f"no sandbox profile named {name!r} (known: {', '.join(known) or 'none'})"
    )


def sandbox_names(inline: list[dict[str, Any]], dirs: list[Path]) -> set[str]:
    """Names of the profiles found in ``inline`` tables, ``dirs`` and the shipped set."""
    names: set[str] = set()
    for t in inline:
        names |= set(t)
    found: list[Traversable] = [Path(d) for d in dirs]
    for d in [*found, SHIPPED_SANDBOXES]:
        if d.is_dir():
            names |= {
                f.name.removesuffix(".toml")
                for f in d.iterdir()
                if f.name.endswith(".toml") and f.is_file()
            }
    return names


def load_sandbox(
    name: str,
    *,
    inline: dict[str, Any] | None = None,
    dirs: Sequence[str | Path] = (),
    where: str = "sandbox",
) -> tuple[SandboxProfile, bool]:
    """Resolve profile ``name`` (following ``extends``); ``(profile, shipped)``.

    Looked up in ``inline`` (a config's ``[sandboxes]`` table), then
    ``<dir>/<name>.toml`` for each of ``dirs``, then the shipped profiles.
    A profile that extends its own name continues the search below itself
    (a config's ``strict.toml`` may extend the shipped ``strict``).
    ``shipped`` is true when the profile itself came from the shipped set.
    Errors are :class:`ConfigError` with the key path (``sandboxes.mine.network``).
    """
    if not NAME_RE.match(name):
        raise ConfigError(where, f"{name!r} is not a valid sandbox profile name")
    sources = _sandbox_sources(inline, [Path(d) for d in dirs])
    chain: list[tuple[dict[str, Any], str, str]] = []
    seen: set[tuple[str, int]] = set()
    cur, start, first_index = name, 0, -1
    while True:
        raw, index, path = _find_raw(
            cur, sources, start, where if not chain else f"sandboxes.{chain[-1][1]}.extends"
        )
        if first_index < 0:
            first_index = index
        if (cur, index) in seen:
            raise ConfigError(f"sandboxes.{cur}.extends", f"extends cycle through {cur!r}")
        seen.add((cur, index))
        if "name" in raw:
            raise ConfigError(
                f"sandboxes.{cur}.name", "unknown key (the profile's name is its table's or file's)"
            )
        chain.append((raw, cur, path))
        parent = raw.get("extends")
        if parent is None:
            break
        if not isinstance(parent, str) or not NAME_RE.match(parent):
            raise ConfigError(f"sandboxes.{cur}.extends", "expected a profile name")
        start = index + 1 if parent == cur else 0
        cur = parent
    merged: dict[str, Any] = {}
    for raw, pname, path in reversed(chain):
        try:
            # each link is validated on its own, so an error names its profile
            _convert(dict(raw), SandboxProfile, f"sandboxes.{pname}")
        except ConfigError as exc:
            if path:
                raise ConfigError(exc.path, f"{exc.message} (in {path})") from None
            raise
        merged = _merge(merged, raw)
    merged["name"] = name
    merged["extends"] = chain[0][0].get("extends")
    profile = _convert(merged, SandboxProfile, f"sandboxes.{name}")
    return profile, sources[first_index][1] == SHIPPED_SANDBOXES


class AgentSpec(_Spec, kw_only=True, forbid_unknown_fields=True):
    """One agent: its entry point, pool size, restart type, limits and deadlines.

    ``entry`` is ``"module:attr"``: a function (sync or async) or a class
    whose instance is created once per replica and whose methods are call
    targets.  ``concurrency`` calls run at once in a replica; ``queue`` more
    may wait in it, beyond which callers wait (backpressure).  ``spin``: how
    long a replica that has just answered polls for its next call before it
    sleeps (waking a sleeping process costs tens of microseconds on many
    machines); it spins only while calls keep arriving that fast, yielding
    the CPU to anything runnable; ``0`` turns it off.  ``shutdown_timeout``
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
    timeout: Seconds | None = None
    limits: Limits = msgspec.field(default_factory=Limits)
    #: sandbox profile of an isolated tool's processes (see ``AgentSpec.sandbox``)
    sandbox: str | SandboxProfile = "default"

    _BOUNDS = {"replicas": (1, 10_000)}

    def _check(self) -> None:
        _name(self)
        _entry(self)


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
    preload: list[str] = []
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

    _BOUNDS = {
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

    _BOUNDS = {"max_concurrency": (1, 1_000_000)}

    def _check(self) -> None:
        for agent, n in self.agent_concurrency.items():
            _within(f"agent_concurrency.{agent}", n, 1, 1_000_000)


class Config(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A whole ``config.toml``: supervisor, agents (in declaration order), tasks."""

    supervisor: SupervisorSpec = msgspec.field(default_factory=SupervisorSpec)
    agents: dict[str, AgentSpec] = {}
    tools: dict[str, ToolSpec] = {}
    run: RunSpec = msgspec.field(default_factory=RunSpec)
    tasks: list[TaskSpec] = []
    base_dir: str = ""
    #: the config's own sandbox profiles (``[sandboxes.X]``), resolved
    sandboxes: dict[str, SandboxProfile] = {}


def _fields(tp: Any) -> tuple[str, ...]:
    return tuple(f.name for f in msgspec.structs.fields(tp))


def _convert_error(exc: msgspec.ValidationError, prefix: str, tp: Any) -> ConfigError:
    """A decoding error as a :class:`ConfigError` with the key's full dotted path.

    msgspec says where (`` - at `$.limits.memory` ``) in its message; what
    went wrong comes structured from a spec's own check (the ConfigError
    that is the error's cause) or from msgspec's message.
    """
    text = str(exc)
    path = ""
    m = re.search(r" - at `\$(.*)`$", text)
    if m:
        text = text[: m.start()]
        path = m.group(1)
    path = re.sub(r"\[(\d+)\]", r".\1", path).lstrip(".")
    cause = exc.__cause__
    if isinstance(cause, ConfigError):
        path = ".".join(p for p in (path, cause.path) if p)
        text = cause.message
    m3 = re.match(r"^Object contains unknown field `(.*)`$", text)
    if m3:
        key = m3.group(1)
        owner = _struct_at(tp, path)
        path = f"{path}.{key}" if path else key
        text = "unknown key"
        if owner is not None:
            close = difflib.get_close_matches(key, _fields(owner), n=1)
            if close:
                text += f"; did you mean {close[0]!r}?"
    m4 = re.match(r"^Object missing required field `(.*)`$", text)
    if m4:
        path = f"{path}.{m4.group(1)}" if path else m4.group(1)
        text = "required key is missing"
    full = ".".join(p for p in (prefix, path) if p)
    return ConfigError(full, text[:1].lower() + text[1:])


def _struct_at(tp: Any, path: str) -> Any:
    """The struct type found by following ``path`` from ``tp`` (for suggestions)."""
    for part in [p for p in path.split(".") if p]:
        if part.isdigit():
            continue
        hints = {f.name: f.type for f in msgspec.structs.fields(tp)}
        sub = hints.get(part)
        if sub is None:
            return None
        for cand in getattr(sub, "__args__", (sub,)):
            if isinstance(cand, type) and issubclass(cand, msgspec.Struct):
                sub = cand
                break
        else:
            return None
        tp = sub
    return tp


def _convert(obj: Any, tp: Any, prefix: str) -> Any:
    try:
        return msgspec.convert(obj, tp, dec_hook=_dec_hook)
    except msgspec.ValidationError as exc:
        raise _convert_error(exc, prefix, tp) from None


def convert_spec(obj: Any, tp: type[_T], where: str = "") -> _T:
    """``obj`` (a mapping of config values, as TOML has them) as the spec ``tp``.

    Durations and sizes may be strings (``"30s"``, ``"256MiB"``); errors are
    :class:`ConfigError` naming the key under ``where``.
    """
    result: _T = _convert(obj, tp, where)
    return result


def _table_name(section: str, name: str) -> None:
    if not NAME_RE.match(name):
        raise ConfigError(
            f"{section}.{name}",
            "not a valid name: use letters, digits, '_', '-' and '.', not starting with '.' "
            "(at most 128 characters)",
        )


def parse_config(data: dict[str, Any], base_dir: str | Path = ".") -> Config:
    """Validate a decoded TOML document; raise :class:`ConfigError` naming the key."""
    if not isinstance(data, dict):
        raise ConfigError("", "expected a table at the top level")
    known = ("supervisor", "agents", "tools", "run", "tasks", "sandboxes")
    for key in data:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(key, f"unknown key{hint}")
    sup = _convert(data.get("supervisor", {}), SupervisorSpec, "supervisor")
    raw_sandboxes = data.get("sandboxes", {})
    if not isinstance(raw_sandboxes, dict):
        raise ConfigError("sandboxes", "expected a table of sandbox profiles")
    sb_dirs: list[str | Path] = [Path(base_dir).resolve()]
    sandboxes = {
        n: load_sandbox(n, inline=raw_sandboxes, dirs=sb_dirs, where=f"sandboxes.{n}")[0]
        for n in raw_sandboxes
    }

    def resolve(spec: Any, label: str) -> Any:
        if not isinstance(spec.sandbox, str):
            return spec
        prof, shipped = load_sandbox(
            spec.sandbox, inline=raw_sandboxes, dirs=sb_dirs, where=f"{label}.sandbox"
        )
        return spec if shipped else msgspec.structs.replace(spec, sandbox=prof)

    raw_agents = data.get("agents", {})
    if not isinstance(raw_agents, dict):
        raise ConfigError("agents", "expected a table of agents")
    agents: dict[str, AgentSpec] = {}
    for name, raw in raw_agents.items():
        if not isinstance(raw, dict):
            raise ConfigError(f"agents.{name}", "expected a table")
        if "name" in raw:
            raise ConfigError(
                f"agents.{name}.name", "unknown key (the table's name is the agent's)"
            )
        _table_name("agents", name)
        spec = _convert({**raw, "name": name}, AgentSpec, f"agents.{name}")
        agents[name] = resolve(spec, f"agents.{name}")
    raw_tools = data.get("tools", {})
    if not isinstance(raw_tools, dict):
        raise ConfigError("tools", "expected a table of tools")
    tools: dict[str, ToolSpec] = {}
    for name, raw in raw_tools.items():
        if not isinstance(raw, dict):
            raise ConfigError(f"tools.{name}", "expected a table")
        if "name" in raw:
            raise ConfigError(f"tools.{name}.name", "unknown key (the table's name is the tool's)")
        _table_name("tools", name)
        tool = _convert({**raw, "name": name}, ToolSpec, f"tools.{name}")
        tools[name] = resolve(tool, f"tools.{name}")
    run = _convert(data.get("run", {}), RunSpec, "run")
    raw_tasks = data.get("tasks", [])
    if not isinstance(raw_tasks, list):
        raise ConfigError("tasks", "expected an array of tables ([[tasks]])")
    tasks: list[TaskSpec] = []
    seen: set[str] = set()
    for i, raw in enumerate(raw_tasks):
        label = f"tasks.{raw.get('id', i)}" if isinstance(raw, dict) else f"tasks.{i}"
        task = _convert(raw, TaskSpec, label)
        if task.id in seen:
            raise ConfigError(f"{label}.id", f"duplicate task id {task.id!r}")
        seen.add(task.id)
        if task.agent not in agents:
            close = difflib.get_close_matches(task.agent, list(agents), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"{label}.agent", f"no agent named {task.agent!r}{hint}")
        tasks.append(task)
    return Config(
        supervisor=sup,
        agents=agents,
        tools=tools,
        run=run,
        tasks=tasks,
        base_dir=str(Path(base_dir).resolve()),
        sandboxes=sandboxes,
    )


def load_config(path: str | Path) -> Config:
    """Read and validate a TOML file; its directory goes on the agents' import path."""
    p = Path(path)
    return parse_config(read_toml(p), p.parent)


def read_toml(path: Path) -> dict[str, Any]:
    """A TOML file's document; :class:`ConfigError` for anything but a readable,
    UTF-8, valid and reasonably nested TOML document."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError("", f"cannot read {path}: {exc.strerror}") from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError("", f"{path}: not UTF-8 (byte {exc.start}, line {line})") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("", f"{path}: invalid TOML: {exc}") from exc
    except RecursionError:
        raise ConfigError("", f"{path}: values nested too deeply") from None


_ENTRY_CHECK = r"""
import importlib, inspect, json, sys
out = []
for path, entry, methods in json.loads(sys.stdin.read()):
    mod_name, _, attr = entry.partition(":")
    try:
        obj = importlib.import_module(mod_name)
    except BaseException as exc:
        out.append([path, f"cannot import {mod_name!r}: {type(exc).__name__}: {exc}"])
        continue
    try:
        for part in attr.split("."):
            obj = getattr(obj, part)
    except AttributeError:
        out.append([path, f"module {mod_name!r} has no attribute {attr!r}"])
        continue
    if inspect.isclass(obj):
        own = lambda name: any(name in vars(k) for k in obj.__mro__ if k is not object)
        for where, method in methods:
            if method == "":
                if not (own("__call__") or callable(getattr(obj, "run", None))):
                    out.append([where, f"{entry!r} is a class with no __call__ or run method to "
                                       "call by default: name a method"])
            elif method.startswith("_") or not callable(getattr(obj, method, None)):
                names = sorted(n for n in dir(obj) if not n.startswith("_")
                               and callable(getattr(obj, n, None)))
                out.append([where, f"{entry!r} has no method {method!r} "
                                   f"(methods: {', '.join(names) or 'none'})"])
    elif not callable(obj):
        out.append([path, f"{entry!r} is a {type(obj).__name__}, not a function or class"])
print(json.dumps(out))
"""


def check_entries(cfg: Config, timeout: float = 60.0) -> list[ConfigError]:
    """Every agent and tool entry imports, exists and can be called as the tasks call it.

    The modules are imported in a throwaway interpreter (with the config's
    directory and ``sys_path`` first on its import path), so nothing they do
    at import time touches this process.  Errors name the key: ``agents.X.entry``,
    ``tools.X.entry``, or ``tasks.T.method`` for a method the agent lacks.
    """
    import json
    import os
    import subprocess
    import sys

    methods: dict[str, list[tuple[str, str]]] = {name: [] for name in cfg.agents}
    for t in cfg.tasks:
        where = f"tasks.{t.id}.method" if t.method else f"agents.{t.agent}.entry"
        methods.setdefault(t.agent, []).append((where, t.method))
    todo = [
        (f"agents.{n}.entry", a.entry, sorted(set(methods.get(n, []))))
        for n, a in cfg.agents.items()
    ] + [(f"tools.{n}.entry", t.entry, []) for n, t in cfg.tools.items()]
    if not todo:
        return []
    paths = [p for p in (cfg.base_dir, *cfg.supervisor.sys_path) if p]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([*paths, *filter(None, [env.get("PYTHONPATH")])])
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _ENTRY_CHECK],
            input=json.dumps(todo),
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=cfg.base_dir or None,
            env=env,
        )
        found = json.loads(proc.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.TimeoutExpired, ValueError, IndexError) as exc:
        return [ConfigError("agents", f"could not check the entries: {exc}")]
    return [ConfigError(path, message) for path, message in found]
