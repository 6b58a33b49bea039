"""Sandbox profiles, proved from inside real agents (no mocks).

Each test starts real replicas under a profile and has the agent try the
thing the profile forbids: connect to a server the test opens, read or write
outside its paths, fork past its process limit, read a secret of the
supervisor's environment, run as root, use more memory than its cgroup.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import socket
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from agentrt import LimitExceeded, StartupError, ToolSpec
from agentrt import sandbox as sb
from agentrt.config import FilesystemSpec, SandboxLimits, SandboxProfile

CAPS = sb.probe()
CGROUP = CAPS["cgroup"]["controllers"]

needs_netns = pytest.mark.skipif(not CAPS["net_ns"], reason="no network namespaces here")
needs_landlock = pytest.mark.skipif(not CAPS["landlock_abi"], reason="no Landlock here")
needs_root = pytest.mark.skipif(not CAPS["root"], reason="run_as needs root")


def needs_cgroup(ctrl: str) -> pytest.MarkDecorator:
    return pytest.mark.skipif(ctrl not in CGROUP, reason=f"no writable {ctrl} cgroup here")


@pytest.fixture
def server() -> Iterator[int]:
    """A TCP server listening on the host's 127.0.0.1; yields its port."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    s.listen(16)
    try:
        yield s.getsockname()[1]
    finally:
        s.close()


def _leaf_dirs(name: str) -> list[Path]:
    """The replica cgroup directories of agent ``name`` (replica 0, generation 0)."""
    return [Path(base) / f"agentrt-{os.getpid()}" / f"{name}.0.0" for base in CGROUP.values()]


def test_the_probes_checks_run_side_by_side_each_answering_for_itself() -> None:
    from agentrt.sandbox.probe import _fork_checks

    r, w = os.pipe()

    def waits_for_the_next() -> None:  # answered only if the next check runs meanwhile
        import select

        if not select.select([r], [], [], 10)[0]:
            raise TimeoutError("the checks ran one after another")

    def refused() -> None:
        raise PermissionError(1, "refused here")

    try:
        got = _fork_checks(waits_for_the_next, lambda: os.write(w, b"x"), refused)
    finally:
        os.close(r)
        os.close(w)
    assert got == ["", "", "[Errno 1] refused here"]


# --- network -----------------------------------------------------------------------


@needs_netns
async def test_network_none_cannot_reach_the_hosts_loopback(make_supervisor, agent_spec, server):
    async with make_supervisor() as sup:
        await sup.start(agent_spec("host", "sandboxed:connect"))
        await sup.start(
            agent_spec("none", "sandboxed:connect", sandbox=SandboxProfile(network="none"))
        )
        assert await sup.call("host", {"port": server}) == "ok"
        assert await sup.call("none", {"port": server}) != "ok"


@needs_netns
@needs_landlock
async def test_shipped_strict_profile_confines_and_still_serves(
    make_supervisor, agent_spec, server, healthy
):
    async with make_supervisor() as sup:
        await sup.start(agent_spec("echo", "agents:echo", sandbox="strict"))
        await sup.start(agent_spec("c", "sandboxed:connect", sandbox="strict"))
        await healthy(sup)
        assert await sup.call("c", {"port": server}) != "ok"


# --- filesystem ---------------------------------------------------------------------


@needs_landlock
async def test_filesystem_reads_and_writes_only_the_allowed_paths(
    make_supervisor, agent_spec, tmp_path
):
    allowed = tmp_path / "allowed"
    secret = tmp_path / "secret"
    allowed.mkdir()
    secret.mkdir()
    (allowed / "data.txt").write_text("public")
    (secret / "key.txt").write_text("hunter2")
    out = tmp_path / "out"
    out.mkdir()
    prof = SandboxProfile(filesystem=FilesystemSpec(read=[str(allowed)], write=[str(out)]))
    async with make_supervisor() as sup:
        await sup.start(agent_spec("fs", "sandboxed:read", sandbox=prof))
        await sup.start(agent_spec("w", "sandboxed:write", sandbox=prof))
        await sup.start(agent_spec("wd", "sandboxed:write_workdir", sandbox=prof))
        assert await sup.call("fs", {"path": str(allowed / "data.txt")}) == "public"
        assert await sup.call("fs", {"path": str(secret / "key.txt")}) == "PermissionError"
        assert await sup.call("fs", {"path": "/etc/hostname"}) == "PermissionError"
        assert await sup.call("w", {"path": str(allowed / "new.txt")}) == "PermissionError"
        assert await sup.call("w", {"path": str(tmp_path / "x.txt")}) == "PermissionError"
        assert await sup.call("w", {"path": str(out / "ok.txt"), "text": "y"}) == "ok"
        assert await sup.call("wd", {"text": "scratch"}) == "scratch"
    assert (out / "ok.txt").read_text() == "y"
    assert not (allowed / "new.txt").exists()
    assert not (tmp_path / "x.txt").exists()


# --- environment and identity ---------------------------------------------------------


async def test_env_allowlist_hides_the_supervisors_secrets(
    make_supervisor, agent_spec, monkeypatch
):
    monkeypatch.setenv("AGENTRT_TEST_SECRET", "sk-hunter2")
    prof = SandboxProfile(env=["PATH"])
    async with make_supervisor() as sup:
        await sup.start(agent_spec("open", "sandboxed:env"))
        await sup.start(agent_spec("closed", "sandboxed:env", sandbox=prof, env={"GIVEN": "1"}))
        assert await sup.call("open", {"name": "AGENTRT_TEST_SECRET"}) == "sk-hunter2"
        assert await sup.call("closed", {"name": "AGENTRT_TEST_SECRET"}) is None
        assert await sup.call("closed", {"name": "GIVEN"}) == "1"
        assert await sup.call("closed", {"name": "PATH"}) == os.environ["PATH"]


@pytest.mark.parametrize("method", ["zygote", "spawn"])
async def test_a_replica_never_holds_the_secrets_its_allowlist_hides(
    method, make_supervisor, agent_spec, monkeypatch
):
    """A replica whose profile has an env allowlist starts from a process
    whose environment held the allowed variables only (a zygote of its own
    per allowlist, or a spawned interpreter): the initial environment block
    in its memory (what ``/proc/PID/environ`` shows, and what an agent can
    read from its own stack with ctypes) has no secret, where removing it
    from ``os.environ`` would leave the string there."""
    monkeypatch.setenv("AGENTRT_TEST_SECRET", "sk-hunter2")
    prof = SandboxProfile(env=["PATH"])
    async with make_supervisor(start_method=method) as sup:
        await sup.start(agent_spec("open", "sandboxed:env"))
        await sup.start(agent_spec("closed", "sandboxed:env", sandbox=prof))
        assert await sup.call("closed", {"name": "AGENTRT_TEST_SECRET"}) is None
        assert await sup.call("closed", {"name": "PATH"}) == os.environ["PATH"]
        pids = {st.agent: st.pid for st in await sup.status()}
        blocks = {
            a: await asyncio.to_thread(Path(f"/proc/{pid}/environ").read_bytes)
            for a, pid in pids.items()
        }
    assert b"sk-hunter2" in blocks["open"]
    assert b"sk-hunter2" not in blocks["closed"]
    assert b"PATH=" in blocks["closed"]


async def test_agents_with_one_allowlist_share_a_zygote_of_their_own(make_supervisor, agent_spec):
    async with make_supervisor() as sup:
        await sup.start(agent_spec("open", "sandboxed:env"))
        await sup.start(agent_spec("a", "sandboxed:env", sandbox=SandboxProfile(env=["PATH"])))
        await sup.start(agent_spec("b", "sandboxed:env", sandbox=SandboxProfile(env=["PATH"])))
        await sup.start(agent_spec("c", "sandboxed:env", sandbox=SandboxProfile(env=["LANG"])))
        parents = {st.agent: psutil.Process(st.pid).ppid() for st in await sup.status()}
    assert parents["a"] == parents["b"]
    assert len({parents["open"], parents["a"], parents["c"]}) == 3


async def test_open_told_of_its_agents_starts_their_allowlists_zygotes_with_its_own(
    make_supervisor, agent_spec
):
    fenced = agent_spec("a", "sandboxed:env", sandbox=SandboxProfile(env=["PATH"]))
    same = agent_spec("b", "sandboxed:env", sandbox=SandboxProfile(env=["PATH"]))
    sup = make_supervisor()
    await sup.open([fenced, same, agent_spec("open", "sandboxed:env")])
    async with sup:
        # at open's return: the main zygote and the allowlist's (one for both)
        zygotes = {p.pid for p in psutil.Process().children()}
        assert len(zygotes) == 2
        await asyncio.gather(sup.start(fenced), sup.start(same))
        parents = {psutil.Process(st.pid).ppid() for st in await sup.status()}
        assert len(parents) == 1 and parents < zygotes  # that zygote forked them
        assert {p.pid for p in psutil.Process().children()} == zygotes


async def test_a_preload_that_needs_a_hidden_variable_names_the_allowlists_zygote(
    make_supervisor, agent_spec, monkeypatch
):
    monkeypatch.setenv("AGENTRT_TEST_KEY", "sk-42")
    async with make_supervisor(preload=["reads_key_at_import"]) as sup:
        await sup.start(agent_spec("open", "reads_key_at_import:first_two"))
        assert await sup.call("open") == "sk"
        fenced = SandboxProfile(env=["PATH"])
        with pytest.raises(StartupError) as info:
            await sup.start(agent_spec("f", "reads_key_at_import:first_two", sandbox=fenced))
        why = str(info.value)
        assert "KeyError: 'AGENTRT_TEST_KEY'" in why
        assert "zygote of env allowlist ['PATH']" in why
        assert await sup.call("open") == "sk"  # the main zygote's agents go on


@needs_root
async def test_run_as_drops_to_nobody(make_supervisor, agent_spec):
    nobody = pwd.getpwnam("nobody")
    prof = SandboxProfile(run_as="nobody", no_new_privs=True)
    async with make_supervisor() as sup:
        await sup.start(agent_spec("ids", "sandboxed:ids", sandbox=prof))
        ids = await sup.call("ids", {})
    assert ids == {"uid": nobody.pw_uid, "gid": nobody.pw_gid, "euid": nobody.pw_uid}


# --- cgroups -----------------------------------------------------------------------------


@needs_cgroup("pids")
async def test_fork_bomb_stops_at_the_process_limit_and_is_cleaned_up(
    make_supervisor, agent_spec, healthy
):
    prof = SandboxProfile(cgroup=True, limits=SandboxLimits(processes=16))
    async with make_supervisor() as sup:
        await sup.start(agent_spec("echo", "agents:echo"))
        await sup.start(agent_spec("bomb", "sandboxed:fork_bomb", sandbox=prof))
        leaves = _leaf_dirs("bomb")
        assert all(p.is_dir() for p in leaves)
        res = await sup.call("bomb", {"n": 200})
        assert res["made"] < 16
        assert res["error"] == "BlockingIOError"
        await healthy(sup)
        await sup.stop("bomb")  # returns once the replica's cgroups are removed
        assert not any(p.exists() for p in leaves)
        await healthy(sup)
    assert not (Path(CGROUP["pids"]) / f"agentrt-{os.getpid()}").exists()


@needs_cgroup("memory")
async def test_cgroup_memory_limit_kills_a_hog_as_limit_exceeded(make_supervisor, agent_spec):
    prof = SandboxProfile(cgroup=True, limits=SandboxLimits(memory="64MiB"))
    async with make_supervisor() as sup:
        await sup.start(agent_spec("hog", "sandboxed:hog", sandbox=prof, restart="temporary"))
        leaves = _leaf_dirs("hog")
        mem = Path(CGROUP["memory"]) / f"agentrt-{os.getpid()}" / "hog.0.0"
        limit_file = "memory.max" if CAPS["cgroup"]["version"] == 2 else "memory.limit_in_bytes"
        assert int((mem / limit_file).read_text()) == 64 * 1024 * 1024
        with pytest.raises(LimitExceeded) as info:
            await sup.call("hog", {"mb": 1024})
        assert info.value.limit == "memory"
        assert "OOM" in str(info.value)
        await sup.stop("hog")  # returns once the replica's cgroups are removed
        assert not any(p.exists() for p in leaves)


@needs_cgroup("cpu")
async def test_cpu_quota_is_written(make_supervisor, agent_spec):
    prof = SandboxProfile(cgroup=True, limits=SandboxLimits(cpu=0.5))
    async with make_supervisor() as sup:
        await sup.start(agent_spec("echo", "agents:echo", sandbox=prof))
        d = Path(CGROUP["cpu"]) / f"agentrt-{os.getpid()}" / "echo.0.0"
        if CAPS["cgroup"]["version"] == 2:
            assert (d / "cpu.max").read_text().split() == ["50000", "100000"]
        else:
            assert int((d / "cpu.cfs_quota_us").read_text()) == 50000
        assert await sup.call("echo", {"x": 1}) == {"x": 1}


# --- nothing silently unenforced ---------------------------------------------------------


async def test_strict_refuses_what_cannot_be_enforced(make_supervisor, agent_spec, logs):
    # a cpu share is a cgroup quota: without cgroup = true it cannot hold
    bad = SandboxProfile(enforce="strict", limits=SandboxLimits(cpu=0.5))
    async with make_supervisor() as sup:
        with pytest.raises(StartupError) as info:
            await sup.start(agent_spec("x", "agents:echo", sandbox=bad))
        assert "limits.cpu" in str(info.value)
        assert "x" not in sup.agents
        warn = SandboxProfile(enforce="warn", limits=SandboxLimits(cpu=0.5))
        await sup.start(agent_spec("y", "agents:echo", sandbox=warn))
        entry = await logs.wait_for("sandbox_unenforced", agent="y")
        assert entry["setting"] == "limits.cpu"
        assert await sup.call("y", {"a": 1}) == {"a": 1}


def test_explain_names_every_setting_and_how() -> None:
    prof = SandboxProfile(
        network="none",
        filesystem=FilesystemSpec(read=["/usr"]),
        env=["PATH"],
        no_new_privs=True,
        cgroup=True,
        limits=SandboxLimits(memory="64MiB", cpu=0.5, processes=8, cpu_time="5s"),
    )
    report = dict(sb.explain(prof))
    for key in (
        "network",
        "filesystem",
        "env",
        "no_new_privs",
        "cgroup",
        "limits.memory",
        "limits.cpu",
        "limits.processes",
        "limits.cpu_time",
    ):
        assert key in report
        assert report[key].startswith(("enforced", "NOT enforced")), report[key]
    caps = sb.probe()
    assert set(caps) >= {"pidfd", "user_ns", "net_ns", "landlock_abi", "cgroup", "rlimits"}


async def test_an_isolated_tool_runs_under_its_own_profile(
    make_supervisor, agent_spec, monkeypatch
):
    monkeypatch.setenv("AGENTRT_TEST_SECRET", "sk-hunter2")
    tool = ToolSpec(
        name="peek", entry="sandboxed:env", isolated=True, sandbox=SandboxProfile(env=["PATH"])
    )
    async with make_supervisor() as sup:
        await sup.add_tool(tool)
        await sup.start(agent_spec("iso", "agents:call_isolated"))
        await sup.start(agent_spec("open", "sandboxed:env"))
        assert await sup.call("open", {"name": "AGENTRT_TEST_SECRET"}) == "sk-hunter2"
        got = await sup.call("iso", {"tool": "peek", "name": "AGENTRT_TEST_SECRET"})
        assert got is None
