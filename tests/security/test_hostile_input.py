"""Hostile input: nothing unbounded, and bad input is a clear error, never a traceback.

Agents that flood, forge raw frames or hit their limits; configs that are
not UTF-8, nest too deeply or hold absurd numbers (fixed cases and a
hypothesis fuzz over the TOML schema); results that JSON cannot hold.
"""

from __future__ import annotations

import asyncio
import json
import math
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil
import pytest
from clitools import ROOT, run_cli, write_project
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentrt import (
    AgentSpec,
    ConfigError,
    EncodeError,
    LimitExceeded,
    Limits,
    Supervisor,
    parse_config,
)

# --- limits are typed, the replica recycled, the calls behind it served -------------------


@pytest.mark.parametrize(
    ("entry", "args", "limits", "limit"),
    [
        ("agents:blow_memory", {"mb": 2048}, {"memory": 256 * 2**20}, "memory"),
        ("agents:map_big", {"mb": 2048}, {"memory": 256 * 2**20}, "memory"),
        ("agents:open_many", {"n": 10_000}, {"open_files": 64}, "open_files"),
        ("agents:write_big", {"mb": 8}, {"file_size": 2**20}, "file_size"),
    ],
)
async def test_a_limit_breach_is_limit_exceeded_and_the_next_call_is_served(
    entry, args, limits, limit, make_supervisor, agent_spec, logs
):
    async with make_supervisor() as sup:
        await sup.start(agent_spec("hog", entry, limits=Limits(**limits), queue=4))
        [before] = await sup.status()
        breach = sup.submit("hog", args)
        behind = sup.submit("hog", {**args, **{k: 1 for k in args}})  # queued in the replica
        with pytest.raises(LimitExceeded) as info:
            await breach
        assert info.value.limit == limit
        assert info.value.value == limits[limit]
        # recycled, and the call queued behind the breach is the fresh replica's
        assert await behind == 1
        await logs.wait_for("replica_ready", agent="hog", generation=1)
        [after] = await sup.status()
        assert after.pid != before.pid


# --- requests are charged to the call being served -----------------------------------------


async def test_raw_spawn_frames_naming_no_call_are_refused(make_supervisor, agent_spec):
    async with make_supervisor(max_tasks=5) as sup:
        await sup.start(agent_spec("echo", "agents:echo"))
        await sup.start(agent_spec("forger", "agents:raw_spawns"))
        assert await sup.call("forger", {"n": 50}) == 0
        [echo] = [s for s in await sup.status() if s.agent == "echo"]
        assert echo.restarts == 0


# --- mailboxes are bounded --------------------------------------------------------------------


async def test_a_message_flood_fills_the_mailbox_and_the_supervisor_stays_small(
    make_supervisor, agent_spec
):
    me = psutil.Process()
    async with make_supervisor(mailbox_bytes=64 * 2**20) as sup:
        await sup.start(agent_spec("busy", "agents:sleep"))
        await sup.start(agent_spec("flooder", "agents:flood"))
        rss_before = me.memory_info().rss
        got = await sup.call("flooder", {"to": "busy", "n": 300, "mb": 8})
        grown = me.memory_info().rss - rss_before
    assert got["error"] == "MailboxFull" and got["limit"] == "mailbox_bytes"
    assert got["sent"] == 7  # 8 MiB bodies (and their few bytes of framing): 7 fit in 64 MiB
    assert grown < 256 * 2**20, f"the supervisor grew by {grown >> 20} MiB"


# --- encoding errors are the caller's, at once -------------------------------------------------


async def test_arguments_too_deep_to_encode_fail_the_caller_and_stall_nothing(
    make_supervisor, agent_spec
):
    deep: Any = 0
    for _ in range(2000):
        deep = [deep]
    async with make_supervisor() as sup:
        await sup.start(agent_spec("echo", "agents:echo", concurrency=1, queue=0))
        behind = [sup.submit("echo", {"i": i}) for i in range(3)]
        with pytest.raises(EncodeError, match="args"):
            sup.submit("echo", {"deep": deep})
        assert await asyncio.gather(*behind) == [{"i": 0}, {"i": 1}, {"i": 2}]


async def test_absurd_pool_sizes_are_refused_before_anything_starts(make_supervisor):
    with pytest.raises(ConfigError, match="replicas: must be at most"):
        AgentSpec(name="x", entry="m:f", replicas=9223372036854775807)
    async with make_supervisor(max_agents=4) as sup:
        from agentrt import BudgetExceeded

        with pytest.raises(BudgetExceeded):
            await sup.start(AgentSpec(name="x", entry="agents:echo", replicas=5))
        assert sup.agents == []


# --- configs: clear errors with the key path, exit 2, never a traceback ------------------------

AGENTS = """

def echo(**kw):
    return kw

CONSTANT = 3

class NoDefault:
    def method(self):
        return 1

def slow(seconds=30):
    import time
    time.sleep(seconds)
"""


def _nested(depth: int) -> str:
    return "[" * depth + "1" + "]" * depth


@pytest.mark.parametrize(
    ("config", "path", "fragment"),
    [
        (b'[agents.a]\nentry = "agents:echo"\n# caf\xe9\n', "", "not UTF-8"),
        (
            b'[agents.a]\nentry = "agents:echo"\n[[tasks]]\nid = "t"\nagent = "a"\nargs = { x = '
            + _nested(5000).encode()
            + b" }\n",
            "",
            "nested",
        ),
        (
            b'[[tasks]]\nid = "t"\nagent = "a"\nargs = { x = '
            + _nested(80).encode()
            + b' }\n[agents.a]\nentry = "agents:echo"\n',
            "tasks.t.args",
            "deep",
        ),
        (b'[agents.a]\nentry = "agents:echo"\ntimeout = inf\n', "agents.a.timeout", "at most"),
        (b'[agents.a]\nentry = "agents:echo"\ntimeout = 1e308\n', "agents.a.timeout", "at most"),
        (
            b'[agents.a]\nentry = "agents:echo"\ntimeout = 99999999999999999999\n',
            "agents.a.timeout",
            "at most",
        ),
        (
            b'[agents.a]\nentry = "agents:echo"\n'
            b"[agents.a.limits]\nmemory = 99999999999999999999\n",
            "agents.a.limits.memory",
            "at most",
        ),
        (
            b'[agents.a]\nentry = "agents:echo"\nreplicas = 9223372036854775807\n',
            "agents.a.replicas",
            "at most",
        ),
        (b"[supervisor]\nmax_frame = 1\n", "supervisor.max_frame", "between"),
        (
            b'[sandboxes.mine]\nrun_as = "no-such-user-agentrt"\n',
            "sandboxes.mine.run_as",
            "no user",
        ),
        (b'[agents.a]\nentry = "nosuchmodule_agentrt:f"\n', "agents.a.entry", "cannot import"),
        (b'[agents.a]\nentry = "agents:missing"\n', "agents.a.entry", "no attribute"),
        (b'[agents.a]\nentry = "agents:CONSTANT"\n', "agents.a.entry", "not a function"),
        (
            b'[agents.a]\nentry = "agents:NoDefault"\n[[tasks]]\nid = "t"\nagent = "a"\n',
            "agents.a.entry",
            "no __call__ or run",
        ),
        (
            b'[agents.a]\nentry = "agents:NoDefault"\n[[tasks]]\nid = "t"\nagent = "a"\n'
            b'method = "nope"\n',
            "tasks.t.method",
            "no method 'nope'",
        ),
        (b'[agents."../x"]\nentry = "agents:echo"\n', "agents.../x", "not a valid name"),
        (
            b'[agents.a]\nentry = "agents:echo"\nsandbox = "../../etc/x"\n',
            "agents.a.sandbox",
            "not a valid sandbox profile name",
        ),
    ],
)
@pytest.mark.parametrize("command", ["validate", "supervise"])
def test_a_bad_config_exits_2_naming_the_key_never_a_traceback(
    command: str, config: bytes, path: str, fragment: str, tmp_path: Path
) -> None:
    cfg = write_project(tmp_path, AGENTS, "")
    cfg.write_bytes(config)
    proc = run_cli(command, str(cfg))
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    assert "Traceback" not in out
    assert fragment in out
    if path:
        assert f"{path}: " in out


def test_the_results_file_survives_a_result_json_cannot_hold(tmp_path: Path) -> None:
    cfg = write_project(
        tmp_path,
        AGENTS + "\ndef tuple_keys():\n    return {(1, 2): 'pair'}\n",
        """
[agents.echo]
entry = "agents:echo"
[agents.odd]
entry = "agents:tuple_keys"
[run]
on_error = "continue"
[[tasks]]
id = "odd"
agent = "odd"
[[tasks]]
id = "fine"
agent = "echo"
args = { n = 1 }
""",
    )
    out = tmp_path / "results.json"
    proc = run_cli("supervise", str(cfg), "--output", str(out))
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    doc = json.loads(out.read_text())
    assert doc["tasks"]["fine"]["result"] == {"n": 1}
    assert doc["tasks"]["odd"]["status"] == "failed"
    assert doc["tasks"]["odd"]["error"]["type"] == "ResultNotJSON"


@pytest.mark.parametrize("where", ["a directory", "inside a file"])
def test_an_unwritable_output_is_refused_before_anything_runs(where: str, tmp_path: Path) -> None:
    cfg = write_project(tmp_path, AGENTS, '[agents.a]\nentry = "agents:echo"\n')
    if where == "a directory":
        out = tmp_path / "out"
        out.mkdir()
    else:
        (tmp_path / "plain").write_text("x")
        out = tmp_path / "plain" / "results.json"
    proc = run_cli("supervise", str(cfg), "--output", str(out))
    assert proc.returncode == 2
    assert "--output" in proc.stderr and "Traceback" not in proc.stderr
    assert "supervisor_started" not in proc.stderr


def test_a_failed_first_start_still_writes_the_results_file(tmp_path: Path) -> None:
    cfg = write_project(
        tmp_path,
        AGENTS + "\nclass Broken:\n    def __init__(self):\n        raise RuntimeError('no')\n"
        "    def __call__(self):\n        return 1\n",
        """
[agents.broken]
entry = "agents:Broken"
[[tasks]]
id = "t"
agent = "broken"
""",
    )
    out = tmp_path / "results.json"
    proc = run_cli("supervise", str(cfg), "--output", str(out))
    assert proc.returncode == 1
    doc = json.loads(out.read_text())
    assert doc["status"] == "failed"
    assert doc["failed_agents"]["broken"]["type"] == "StartupError"
    assert doc["tasks"]["t"]["status"] == "skipped"
    assert "broken" in doc["tasks"]["t"]["reason"]


def test_sigint_in_the_middle_of_a_run_exits_130(tmp_path: Path) -> None:
    cfg = write_project(
        tmp_path,
        AGENTS,
        '[agents.slow]\nentry = "agents:slow"\n[[tasks]]\nid = "t"\nagent = "slow"\n',
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "agentrt.cli", "supervise", str(cfg), "--log-format", "json"],
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert proc.stderr is not None
        for line in proc.stderr:  # the real log stream: no polling
            if '"task_started"' in line or '"replica_ready"' in line:
                break
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()


# --- a fuzz over the TOML schema: whatever the values, exit 0 or 2 and no traceback ---------

_KEYS = {
    "supervisor": [
        "start_method",
        "strategy",
        "intensity",
        "period",
        "backoff",
        "backoff_max",
        "on_agent_failure",
        "max_frame",
        "max_agents",
        "max_depth",
        "max_tasks",
        "mailbox",
        "mailbox_bytes",
        "uid_range",
        "preload",
        "sys_path",
        "trace_tools",
        "nonsense",
    ],
    "agent": [
        "entry",
        "replicas",
        "restart",
        "timeout",
        "startup_timeout",
        "shutdown_timeout",
        "cancel_grace",
        "concurrency",
        "queue",
        "spin",
        "retries",
        "intensity",
        "period",
        "sandbox",
        "env",
        "limits",
        "typo",
    ],
    "limits": ["memory", "cpu_time", "open_files", "processes", "file_size", "cpu", "what"],
    "task": [
        "id",
        "agent",
        "args",
        "after",
        "retries",
        "timeout",
        "for_each",
        "min_success",
        "on_error",
        "method",
    ],
}

_scalars = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(
        [
            "10s",
            "-1s",
            "1e308s",
            "256MiB",
            "inf",
            "brutal_kill",
            "agents:echo",
            "${t}",
            "${nope.x}",
            "../x",
            "one_for_all",
            "continue",
            "",
        ]
    ),
    st.booleans(),
)
_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)


def _table(keys: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    return st.dictionaries(st.sampled_from(keys), _values, max_size=6)


_docs = st.fixed_dictionaries(
    {},
    optional={
        "supervisor": _table(_KEYS["supervisor"]),
        "agents": st.dictionaries(
            st.sampled_from(["a", "b", "../x", "tool:x", ".hidden"]),
            st.one_of(
                _table(_KEYS["agent"]),
                _table(_KEYS["agent"]).map(lambda d: {**d, "limits": {"memory": "1e400"}}),
            ),
            max_size=2,
        ),
        "tasks": st.lists(_table(_KEYS["task"]), max_size=3),
        "run": _table(["on_error", "deadline", "max_concurrency", "agent_concurrency"]),
    },
)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return "{" + ", ".join(f"{json.dumps(k)} = {_toml_value(x)}" for k, x in v.items()) + "}"


def _toml(doc: dict[str, Any]) -> str:
    lines: list[str] = []
    for section in ("supervisor", "run"):
        if section in doc:
            lines.append(f"[{section}]")
            lines += [f"{json.dumps(k)} = {_toml_value(v)}" for k, v in doc[section].items()]
    for name, table in doc.get("agents", {}).items():
        lines.append(f"[agents.{json.dumps(name)}]")
        lines += [f"{json.dumps(k)} = {_toml_value(v)}" for k, v in table.items()]
    for task in doc.get("tasks", []):
        lines.append("[[tasks]]")
        lines += [f"{json.dumps(k)} = {_toml_value(v)}" for k, v in task.items()]
    return "\n".join(lines) + "\n"


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(doc=_docs)
def test_any_config_is_valid_or_refused_with_a_key_path_never_a_traceback(
    doc: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from agentrt.cli import main

    cfg = tmp_path / "fuzz.toml"
    cfg.write_text(_toml(doc))
    (tmp_path / "agents.py").write_text(AGENTS)
    try:
        parse_config(doc, tmp_path)
    except ConfigError as exc:
        assert exc.path is not None  # a ConfigError, nothing else
    code = main(["validate", str(cfg)])
    out = capsys.readouterr().out
    assert code in (0, 2), out
    if code == 2:
        assert "error" in out


def test_supervisor_settings_from_python_are_validated_too() -> None:
    with pytest.raises(ConfigError, match=r"supervisor\.period"):
        Supervisor(period=0)
    with pytest.raises(ConfigError, match=r"supervisor\.max_frame"):
        Supervisor(max_frame=1)
