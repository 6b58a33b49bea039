"""Starting agents: failures at startup, the four start methods, agent output in the log."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from structlog.testing import capture_logs

from agentrt import BudgetExceeded, ConfigError, StartupError, SupervisorClosed


def _not_own_session(p: psutil.Process) -> bool:
    return os.getsid(p.pid) != p.pid


def _descendants() -> set[int]:
    """Our descendants, less the zygote's idle spares (its children that have not
    become replicas yet: named ``agentrt-spare`` while they wait, or not yet
    in a session of their own)."""
    me = psutil.Process()
    zygotes = {p.pid for p in me.children()}
    out: set[int] = set()
    for p in me.children(recursive=True):
        try:
            if p.ppid() in zygotes and (p.name() == "agentrt-spare" or _not_own_session(p)):
                continue  # a spare: the zygote's, forked ahead and replaced as used
        except (psutil.Error, ProcessLookupError):
            continue
        out.add(p.pid)
    return out


# --- startup failures ----------------------------------------------------------------


async def _assert_failed_start_left_nothing(sup, name: str, before: set[int], healthy) -> None:
    assert name not in sup.agents
    assert [s.agent for s in await sup.status()] == ["echo"]
    # The failed replicas are reaped by the time start() raises.
    assert _descendants() == before
    await healthy(sup)


async def test_missing_entry_module_raises_startup_error_and_leaves_nothing(
    make_supervisor, agent_spec, healthy
):
    async with make_supervisor() as sup:
        await sup.start(agent_spec("echo", "agents:echo"))
        before = _descendants()
        with pytest.raises(StartupError) as info:
            await sup.start(agent_spec("bad", "no_such_module_for_agentrt:entry", replicas=2))
        assert "ModuleNotFoundError" in str(info.value)
        assert info.value.agent == "bad"
        await _assert_failed_start_left_nothing(sup, "bad", before, healthy)


async def test_missing_entry_attribute_raises_startup_error(make_supervisor, agent_spec, healthy):
    async with make_supervisor() as sup:
        await sup.start(agent_spec("echo", "agents:echo"))
        before = _descendants()
        with pytest.raises(StartupError, match="AttributeError"):
            await sup.start(agent_spec("bad", "agents:no_such_function"))
        await _assert_failed_start_left_nothing(sup, "bad", before, healthy)


async def test_entry_raising_import_error_at_import_raises_startup_error(
    make_supervisor, agent_spec, healthy
):
    async with make_supervisor() as sup:
        await sup.start(agent_spec("echo", "agents:echo"))
        before = _descendants()
        with pytest.raises(StartupError) as info:
            await sup.start(
                agent_spec(
                    "bad",
                    "agents:echo",
                    replicas=2,
                    env={"AGENTRT_TEST_RAISE_ON_IMPORT": "refusing to import"},
                )
            )
        assert "ImportError: refusing to import" in str(info.value)
        # the remote traceback comes along as a note
        assert any("refusing to import" in n for n in getattr(info.value, "__notes__", []))
        await _assert_failed_start_left_nothing(sup, "bad", before, healthy)
        # the name can be used again once the cause is gone
        await sup.start(agent_spec("bad", "agents:echo"))
        assert await sup.call("bad", {"ok": 1}) == {"ok": 1}


async def test_import_that_blocks_past_startup_timeout_raises_startup_error(
    make_supervisor, agent_spec, healthy
):
    async with make_supervisor() as sup:
        await sup.start(agent_spec("echo", "agents:echo"))
        before = _descendants()
        with pytest.raises(StartupError, match="no Ready within"):
            await sup.start(
                agent_spec(
                    "slow",
                    "agents:echo",
                    startup_timeout=0.5,
                    env={"AGENTRT_TEST_BLOCK_ON_IMPORT": "1"},
                )
            )
        await _assert_failed_start_left_nothing(sup, "slow", before, healthy)


async def test_a_replica_killed_for_what_it_sent_before_ready_is_a_startup_error(
    make_supervisor, agent_spec, logs
):
    async with make_supervisor() as sup:
        with pytest.raises(StartupError, match="ProtocolViolation") as err:
            await sup.start(agent_spec("g", "agents:Garbled"))
        assert type(err.value.__cause__).__name__ == "ProtocolViolation"
        assert not logs.find("replica_loop_failed")


async def test_starting_an_agent_twice_is_a_config_error(make_supervisor, agent_spec):
    async with make_supervisor() as sup:
        await sup.start(agent_spec("echo", "agents:echo"))
        with pytest.raises(ConfigError):
            await sup.start(agent_spec("echo", "agents:echo"))
        assert await sup.call("echo", {"a": 1}) == {"a": 1}


async def test_start_and_submit_after_close_raise_supervisor_closed(make_supervisor, agent_spec):
    sup = make_supervisor()
    async with sup:
        await sup.start(agent_spec("echo", "agents:echo"))
    with pytest.raises(SupervisorClosed):
        await sup.start(agent_spec("other", "agents:echo"))
    with pytest.raises(SupervisorClosed):
        sup.submit("echo")


async def test_agents_started_together_before_any_open_share_one_open(make_supervisor, agent_spec):
    # start() opens the supervisor: several at once wait for the same open
    # (one zygote), and every agent answers
    sup = make_supervisor()
    try:
        await asyncio.gather(
            *(sup.start(agent_spec(f"e{i}", "agents:echo", replicas=2)) for i in range(3))
        )
        got = await asyncio.gather(*(sup.call(f"e{i}", {"i": i}) for i in range(3)))
        assert got == [{"i": 0}, {"i": 1}, {"i": 2}]
        assert len(psutil.Process().children()) == 1  # the zygote
    finally:
        await sup.close()


async def test_starts_side_by_side_before_any_open_are_checked_one_after_another(
    make_supervisor, agent_spec
):
    # the name and max_agents checks see the agents the starts before added
    sup = make_supervisor(max_agents=3)
    try:
        got = await asyncio.gather(
            sup.start(agent_spec("e", "agents:echo", replicas=2)),
            sup.start(agent_spec("e", "agents:echo", replicas=1)),
            sup.start(agent_spec("f", "agents:echo", replicas=2)),
            return_exceptions=True,
        )
        assert got[0] is None
        assert isinstance(got[1], ConfigError) and "already running" in str(got[1])
        assert isinstance(got[2], BudgetExceeded)
        assert [(st.agent, st.replica) for st in await sup.status()] == [("e", 0), ("e", 1)]
    finally:
        await sup.close()


def _exists(path: str) -> bool:
    return Path(path).exists()


async def test_an_open_whose_callers_are_all_cancelled_undoes_what_it_started(make_supervisor):
    sup = make_supervisor(control=True)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):  # (the zygote takes longer to boot)
            async with sup:
                pass
    # no zygote left (the leak check), no run directory, no control socket
    assert sup._boots.rundir and not _exists(sup._boots.rundir)
    assert sup.control_path is None
    # and a later open starts afresh
    async with sup:
        assert sup.control_path is not None and _exists(sup.control_path)


@pytest.mark.parametrize("turns", [0, 1, 2, 4])
async def test_a_close_while_the_supervisor_opens_stops_what_the_open_started(
    turns, make_supervisor, agent_spec
):
    # closed at some point of the open that a start began (before the zygote
    # was asked for, or while it boots): the start is refused, nothing is
    # left running (the leak check), and open() after close refuses too
    sup = make_supervisor()
    start = asyncio.ensure_future(sup.start(agent_spec("echo", "agents:echo")))
    for _ in range(turns):
        await asyncio.sleep(0)
    await sup.close()
    with pytest.raises(SupervisorClosed):
        await start
    assert "echo" not in sup.agents
    with pytest.raises(SupervisorClosed):
        await sup.open()


# --- start methods --------------------------------------------------------------------


def _stop_multiprocess_helpers() -> None:
    """Safety net: stop the process-wide helpers of ``multiprocess`` if close() did not."""
    from multiprocess import forkserver, resource_tracker

    with contextlib.suppress(Exception):
        forkserver._forkserver._stop()
    with contextlib.suppress(Exception):
        resource_tracker._resource_tracker._stop()


@pytest.mark.parametrize("method", ["zygote", "forkserver", "spawn", "fork"])
async def test_every_start_method_starts_an_agent_that_answers(method, make_supervisor, agent_spec):
    async with make_supervisor(start_method=method) as sup:
        await sup.start(agent_spec("who", "agents:whoami", replicas=2))
        await sup.start(agent_spec("counter", "agents:Counter"))
        infos = await asyncio.gather(sup.submit("who"), sup.submit("who"))
        assert len({i["pid"] for i in infos}) == 2
        for info in infos:
            assert info["pid"] != os.getpid()
            assert info["sid"] == info["pid"]
        assert await sup.call("counter", method="incr") == 1
        assert await sup.call("counter", method="incr") == 2
        procs = [psutil.Process(s.pid) for s in await sup.status()]
    _gone, alive = await asyncio.to_thread(psutil.wait_procs, procs, 2)
    assert not alive


@pytest.mark.parametrize("method", ["forkserver"])
async def test_close_stops_the_helper_processes_of_multiprocess_start_methods(
    method, make_supervisor, agent_spec
):
    try:
        before = _descendants()
        async with make_supervisor(start_method=method) as sup:
            await sup.start(agent_spec("echo", "agents:echo"))
            assert await sup.call("echo", {"a": 1}) == {"a": 1}
            helpers = _descendants() - before - {s.pid for s in await sup.status()}
            assert helpers  # the forkserver and/or the resource tracker
        left = [p for p in psutil.Process().children(recursive=True) if p.pid not in before]
        _gone, alive = await asyncio.to_thread(psutil.wait_procs, left, 0.5)
        assert not alive, [p.cmdline() for p in alive]
    finally:
        _stop_multiprocess_helpers()


_SPAWNED_SCRIPT = """\
import asyncio, os, sys
from agentrt import AgentSpec, Supervisor

with open(os.environ["RUNS"], "a") as f:  # each time this file runs, and as what
    f.write(__name__ + "\\n")

def agent(x):
    return {"pid": os.getpid(), "ppid": os.getppid(), "x": x}

async def main():
    async with Supervisor(start_method="spawn") as sup:
        await sup.start(AgentSpec(name="a", entry="spawned:agent", replicas=2))
        got = await asyncio.gather(sup.call("a", {"x": 1}), sup.call("a", {"x": 2}))
        print(sorted(r["x"] for r in got), len({r["pid"] for r in got}),
              all(r["ppid"] == os.getpid() for r in got))

if __name__ == "__main__":
    asyncio.run(main())
"""


def test_spawn_starts_fresh_interpreters_that_import_the_entry_and_not_main(
    tmp_path: Path,
) -> None:
    """``start_method = "spawn"``: each replica is a fresh interpreter, a child
    of the supervisor, that imports its entry's module and nothing of the
    supervisor's ``__main__`` (a multiprocess spawn child ran the script
    again as ``__mp_main__``); no helper process is left behind."""
    (tmp_path / "spawned.py").write_text(_SPAWNED_SCRIPT)
    runs = tmp_path / "runs.txt"
    env = {**os.environ, "RUNS": str(runs)}
    proc = subprocess.run(
        [sys.executable, "spawned.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[0] == "[1, 2] 2 True"
    # the script as the program, then as the entry's module in each replica
    assert sorted(runs.read_text().split()) == ["__main__", "spawned", "spawned"]


@pytest.mark.parametrize("method", ["zygote", "spawn"])
async def test_an_entry_in_main_says_to_name_the_programs_module(
    method, make_supervisor, agent_spec
):
    # (a replica's __main__ is its own interpreter's, not the supervisor's program)
    async with make_supervisor(start_method=method) as sup:
        with pytest.raises(StartupError, match="name the module that defines it"):
            await sup.start(agent_spec("main", "__main__:agent"))


# --- agent output ------------------------------------------------------------------------


async def test_agent_stdout_and_stderr_lines_are_logged_as_agent_output(
    make_supervisor, agent_spec
):
    with capture_logs() as entries:
        async with make_supervisor() as sup:
            await sup.start(agent_spec("talker", "agents:say"))
            [st] = await sup.status()
            n = await sup.call(
                "talker", {"lines": ["hello world", "second line"], "err_lines": ["to stderr"]}
            )
            assert n == 3
            # Stopping drains what the replica wrote before it exits.
            await sup.stop("talker")
    output = [e for e in entries if e["event"] == "agent_output"]
    assert [e["line"] for e in output] == ["hello world", "second line", "to stderr"]
    for e in output:
        assert e["agent"] == "talker"
        assert e["pid"] == st.pid
        assert e["log_level"] == "info"


async def test_overlong_output_line_is_cut(make_supervisor, agent_spec):
    with capture_logs() as entries:
        async with make_supervisor() as sup:
            await sup.start(agent_spec("talker", "agents:say"))
            await sup.call("talker", {"lines": ["y" * 20000, "short"]})
            await sup.stop("talker")
    lines = [e["line"] for e in entries if e["event"] == "agent_output"]
    assert lines[-1] == "short"
    assert all(len(line) < 9000 for line in lines)
    assert any("bytes cut" in line for line in lines)


def test_the_zygotes_rehearsal_serves_sync_and_async_calls_and_leaves_nothing_open() -> None:
    # prepare() rehearses serving calls before replicas are forked: it must
    # answer every call, close its pipes, leave SIGALRM and the event loop as
    # they were, whatever the entry kind.
    code = """
import asyncio, os, signal, sys
from agentrt import worker
before = sorted(os.listdir("/proc/self/fd"))
answered = []
real_write = worker._Channel.write_bytes
def spy(self, data):
    answered.append(len(data))
    real_write(self, data)
worker._Channel.write_bytes = spy
worker._rehearse()
after = sorted(os.listdir("/proc/self/fd"))
assert before == after, (before, after)
assert signal.getsignal(signal.SIGALRM) == signal.SIG_DFL
try:
    asyncio.get_running_loop()
except RuntimeError:
    pass
else:
    raise AssertionError("a loop is still running")
# sync rounds: Ready, then one Result per call; async rounds: Ready and at
# least one Result (calls still queued when Shutdown is read are dropped)
n = worker._REHEARSALS
assert len(answered) >= n * (1 + n) + n * 2, len(answered)
print("ok")
"""
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


def test_a_supervisor_run_among_another_agentrt_forks_replicas_of_its_own(tmp_path) -> None:
    """Run from a directory that holds another ``agentrt`` (a checkout, an older
    version), as a console script is: the zygote imports the supervisor's
    agentrt, not the one in the working directory."""
    here = tmp_path / "project"
    (here / "agentrt").mkdir(parents=True)
    (here / "agentrt" / "__init__.py").write_text('raise ImportError("the other agentrt")\n')
    script = tmp_path / "bin" / "run.py"
    script.parent.mkdir()
    script.write_text(
        """
import asyncio, os, agentrt
from agentrt import AgentSpec, Supervisor
async def main():
    async with Supervisor(spares=0) as sup:
        await sup.start(AgentSpec(name="w", entry="os:getpid"))
        pid = await sup.call("w")
        print(pid != os.getpid(), os.path.dirname(agentrt.__file__) != os.path.abspath("agentrt"))
asyncio.run(main())
"""
    )
    proc = subprocess.run(
        [sys.executable, str(script)],
        cwd=here,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["True", "True"]


async def test_an_agent_may_log_while_it_starts(make_supervisor, agent_spec, logs):
    async with make_supervisor() as sup:
        await sup.start(agent_spec("warm", "agents:LogsWhileStarting"))
        assert await sup.call("warm", {}, method="ping") is True
    (entry,) = logs.find("warming_up")
    assert entry["source"] == "agent" and entry["cache"] == "cold" and entry["agent"] == "warm"
    (odd,) = logs.find("odd_fields")
    assert odd["source"] == "agent" and odd.get("pid") != 1  # its own fields cannot pose


# --- how the zygote forks ------------------------------------------------------------


@pytest.mark.parametrize("preload", ["fork_hooks", "fork_hooks_threaded"])
async def test_replicas_run_preloaded_at_fork_hooks_and_get_their_own_random_state(
    preload, make_supervisor, agent_spec
):
    # The zygote forks without the interpreter's own at-fork work where it is
    # alone in its process, and with os.fork where a preloaded module left a
    # thread: either way a user's hooks run, random is reseeded in each
    # replica, and the replica's threading is that of a single thread.
    async with make_supervisor(preload=[preload], spares=0) as sup:
        await sup.start(agent_spec("f", f"{preload}:state", replicas=4))
        states = await asyncio.gather(*(sup.call("f") for _ in range(16)))
        pids = {s["pid"] for s in states}
        assert len(pids) == 4
        for s in states:
            assert s["hook_ran_in"] == s["pid"]  # after_in_child, in the replica itself
            assert s["before_forks"] >= 1  # before, in the zygote ahead of each fork
            assert s["threads"] == 1
            assert s["main"] and s["ident"]
        # (each replica's sequence its own: inherited unseeded, every replica
        # would give the same numbers)
        randoms = [s["random"] for s in states]
        assert len(set(randoms)) == len(randoms), randoms
