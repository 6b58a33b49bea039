"""Replicas are isolated from each other, the zygote and the supervisor (real processes).

An attacker agent, given a sibling replica's pid (from ``sup.status()``) and
the supervisor's (the test process), tries what a hostile agent would: forge
a Result into their pipes through ``/proc/<pid>/fd``, ptrace them, connect to
the sibling's abstract unix socket, SIGKILL the sibling and the zygote (its
parent).  Each shipped profile is held to what ``agentrt doctor`` says it
enforces here; a profile this machine cannot enforce is skipped, with why.
"""

from __future__ import annotations

import importlib
import os
import secrets
import signal
from pathlib import Path
from typing import Any

import psutil
import pytest

from agentrt import StartupError, Supervisor
from agentrt import sandbox as sb
from agentrt.config import SandboxProfile, load_sandbox
from agentrt.protocol import Boot

# the modules (the package exports functions of the same names)
confine_mod = importlib.import_module("agentrt.sandbox.confine")
plan_mod = importlib.import_module("agentrt.sandbox.planning")

CAPS = sb.probe()
ATTACKS = ("procfd", "ptrace", "abstract", "kill")
TARGETS = ("victim", "zygote", "supervisor")


def _enforceable(name: str) -> SandboxProfile:
    """The shipped profile ``name``; the test is skipped where it cannot be enforced."""
    prof, _ = load_sandbox(name)
    missing = sb.plan(prof).unenforced
    if missing:
        pytest.skip(f"{name}: " + "; ".join(f"{s} {w}" for s, w in missing))
    return prof


def _promised(name: str) -> set[str]:
    """The attacks profile ``name`` refuses here, by what its plan reports enforced."""
    report = dict(sb.explain(load_sandbox(name)[0]))
    out: set[str] = set()
    for setting, attacks in (
        ("isolation.ptrace", ("procfd", "ptrace")),
        ("isolation.signal", ("kill",)),
        ("isolation.abstract_unix", ("abstract",)),
    ):
        if report[setting].startswith("enforced"):
            out.update(attacks)
    return out


async def _attack(sup: Supervisor, agent_spec: Any, healthy: Any, profile: str) -> dict[str, str]:
    """Run the attacker next to a victim holding a call open; return the outcomes.

    Checks that the victim's caller got the real answer, and that the victim,
    the zygote and the supervisor still serve.
    """
    promised = _promised(profile)
    await sup.start(agent_spec("victim", "sandboxed:Victim", sandbox=profile, concurrency=2))
    await sup.start(agent_spec("attacker", "sandboxed:attack", sandbox=profile))
    [victim] = [s for s in await sup.status() if s.agent == "victim"]
    held = sup.submit("victim", method="hold")  # in flight while the attacker forges
    name = f"agentrt-test-{os.getpid()}-{secrets.token_hex(4)}"
    assert await sup.call("victim", {"name": name}, method="listen") == "listening"
    assert await sup.call("victim", {"name": name}, method="connect") == "ok"  # it is live
    res = await sup.call(
        "attacker",
        {
            "victim": victim.pid,
            "supervisor": os.getpid(),
            "socket_name": name,
            "kill": "kill" in promised,  # never kill what the profile does not protect
        },
    )
    assert await sup.call("victim", method="release") == "released"
    assert await held == "real"  # no forged Result reached the victim's caller
    [after] = [s for s in await sup.status() if s.agent == "victim"]
    assert (after.pid, after.restarts) == (victim.pid, 0)
    assert await sup.call("victim", method="pid") == victim.pid
    assert psutil.pid_exists(res["zygote"])
    await sup.start(agent_spec("echo", "agents:echo"))  # the zygote still forks
    await healthy(sup)
    outcome: dict[str, str] = res["outcome"]
    return outcome


def _landed(outcome: dict[str, str], attack: str) -> dict[str, str]:
    """The outcomes of ``attack`` that were not refused."""
    return {k: v for k, v in outcome.items() if k.startswith(attack + ".") and v == "ok"}


# --- default: the /proc fd injection is refused ---------------------------------------------


async def test_default_refuses_forging_a_result_through_proc_fd(
    make_supervisor, agent_spec, healthy
):
    report = dict(sb.explain(load_sandbox("default")[0]))
    if not report["isolation.ptrace"].startswith("enforced"):
        pytest.skip(f"default: isolation.ptrace {report['isolation.ptrace']}")
    async with make_supervisor() as sup:
        outcome = await _attack(sup, agent_spec, healthy, "default")
    for who in TARGETS:
        assert outcome[f"procfd.{who}"] == "PermissionError", outcome
        assert outcome[f"ptrace.{who}"] == "PermissionError", outcome
    assert "kill.victim" not in outcome  # default does not confine signals
    if "abstract" in _promised("default"):
        assert outcome["abstract.victim"] != "ok", outcome


# --- strict and untrusted: every attack is refused -------------------------------------------


@pytest.mark.parametrize("profile", ["strict", "untrusted"])
async def test_confined_profiles_refuse_every_attack_on_siblings_zygote_and_supervisor(
    profile, make_supervisor, agent_spec, healthy
):
    _enforceable(profile)
    assert _promised(profile) == set(ATTACKS)
    async with make_supervisor() as sup:
        outcome = await _attack(sup, agent_spec, healthy, profile)
    for attack in ATTACKS:
        assert not _landed(outcome, attack), outcome
    for who in TARGETS:
        for attack in ("procfd", "ptrace", "kill"):
            assert outcome[f"{attack}.{who}"] == "PermissionError", outcome
    assert outcome["abstract.victim"] in ("PermissionError", "ConnectionRefusedError"), outcome


# --- untrusted: a uid of its own, and an interpreter that still works --------------------------


async def test_untrusted_replicas_each_run_as_a_uid_of_their_own(make_supervisor, agent_spec):
    _enforceable("untrusted")
    async with make_supervisor() as sup:
        await sup.start(agent_spec("who", "sandboxed:identity", sandbox="untrusted", replicas=2))
        # submitted back to back: the second goes to the other (idle) replica
        a, b = sup.submit("who"), sup.submit("who")
        first, second = await a, await b
    assert first["pid"] != second["pid"]
    assert first["uid"] != second["uid"]
    assert {first["uid"], second["uid"]}.isdisjoint({0, os.getuid()})


async def test_untrusted_agent_imports_stdlib_extension_modules_and_encodes_idna(
    make_supervisor, agent_spec
):
    _enforceable("untrusted")
    async with make_supervisor() as sup:
        await sup.start(agent_spec("std", "sandboxed:stdlib_use", sandbox="untrusted"))
        got = await sup.call("std")
    assert got == {"mmap_preloaded": False, "idna": "xn--bcher-kva.example"}


@pytest.mark.parametrize("profile", ["default", "strict", "untrusted"])
async def test_a_confined_agent_still_renames_forks_signals_its_children_and_runs_python(
    profile, make_supervisor, agent_spec
):
    if profile != "default":
        _enforceable(profile)
    async with make_supervisor() as sup:
        await sup.start(agent_spec("chores", "sandboxed:chores", sandbox=profile))
        got = await sup.call("chores")
    assert got == {"renamed": True, "child": -signal.SIGKILL, "python": "ok\n"}


def _module_dir(base: Path, mode: int) -> Path:
    """``base/code`` (of ``mode``) holding an agent module, ``hidden_agent``."""
    d = base / "code"
    d.mkdir()
    (d / "hidden_agent.py").write_text("import os\n\ndef uid():\n    return os.getuid()\n")
    d.chmod(mode)
    return d


async def test_run_as_reaches_agent_code_below_a_directory_its_uid_cannot_enter(
    tmp_path, agent_spec
):
    _enforceable("untrusted")
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    private.chmod(0o700)  # whatever the umask: not enterable by the replica's uid
    code = _module_dir(private, 0o755)
    async with Supervisor(base_dir=code, backoff=0.01) as sup:
        await sup.start(agent_spec("hidden", "hidden_agent:uid", sandbox="untrusted"))
        assert await sup.call("hidden") not in (0, os.getuid())


async def test_run_as_refuses_to_start_when_agent_code_is_unreadable_naming_the_path(
    tmp_path, agent_spec
):
    _enforceable("untrusted")
    code = _module_dir(tmp_path, 0o700)
    async with Supervisor(base_dir=code, backoff=0.01) as sup:
        with pytest.raises(StartupError) as info:
            await sup.start(agent_spec("hidden", "hidden_agent:uid", sandbox="untrusted"))
    assert str(code) in str(info.value)
    assert "not readable" in str(info.value)


# --- what cannot be enforced stops a strict profile -------------------------------------------


def _caps(**over: Any) -> dict[str, Any]:
    return {**CAPS, **over}


def test_without_landlock_scoping_strict_reports_signals_unenforced(monkeypatch):
    monkeypatch.setattr(plan_mod, "probe", lambda: _caps(landlock_abi=5))
    report = dict(sb.plan(load_sandbox("strict")[0]).unenforced)
    assert "isolation.signal" in report
    assert "ABI >= 6" in report["isolation.signal"]
    assert "isolation.abstract_unix" not in report or not CAPS["net_ns"]


def test_untrusted_falls_back_to_its_own_uid_and_network_namespace_below_abi_6(monkeypatch):
    monkeypatch.setattr(plan_mod, "probe", lambda: _caps(landlock_abi=5, root=True))
    if not CAPS["net_ns"]:
        pytest.skip("no network namespaces here")
    plan = sb.plan(load_sandbox("untrusted")[0])
    report = dict(plan.report)
    assert not plan.scope
    assert "uid of its own" in report["isolation.signal"]
    assert "network namespace" in report["isolation.abstract_unix"]
    assert report["isolation.ptrace"].startswith("enforced by a Landlock domain")


def test_default_without_landlock_is_reported_not_confined_not_refused(monkeypatch):
    monkeypatch.setattr(plan_mod, "probe", lambda: _caps(landlock_abi=0))
    plan = sb.plan(load_sandbox("default")[0])
    assert not plan.ptrace_isolation
    assert dict(plan.report)["isolation.ptrace"].startswith("not confined")
    assert not [s for s, _ in plan.unenforced if s.startswith("isolation.")]


async def test_strict_fails_to_start_naming_the_missing_landlock_scoping(
    make_supervisor, agent_spec, monkeypatch
):
    monkeypatch.setattr(plan_mod, "probe", lambda: _caps(landlock_abi=5))
    async with make_supervisor() as sup:
        with pytest.raises(StartupError) as info:
            await sup.start(agent_spec("s", "agents:echo", sandbox="strict"))
    assert "isolation.signal" in str(info.value)
    assert "Landlock" in str(info.value)


# --- the Landlock domain of a profile without filesystem rules, on every ABI -----------------


@pytest.mark.parametrize("abi", [2, 5, 6])
def test_a_domain_without_filesystem_rules_refuses_proc_fd_but_keeps_renames(abi, tmp_path):
    if CAPS["landlock_abi"] < abi:
        pytest.skip(f"Landlock ABI {CAPS['landlock_abi']} here")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "f").write_text("x")
    boot = Boot(
        agent="t",
        replica=0,
        generation=0,
        entry="m:f",
        workdir=str(tmp_path / "wd"),
        ptrace_isolation=True,
    )
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 1
        try:
            os.close(r)
            confine_mod.landlock_abi = lambda: abi  # type: ignore[assignment]
            confine_mod.confine(boot)
            os.rename(tmp_path / "a" / "f", tmp_path / "b" / "f")
            try:
                os.readlink(f"/proc/{os.getppid()}/fd/0")
                os.write(w, b"proc fd readable")
            except PermissionError:
                os.write(w, b"ok")
            code = 0
        except BaseException as exc:
            os.write(w, repr(exc).encode())
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        got = f.read().decode()
    os.waitpid(pid, 0)
    assert got == "ok"


def test_without_cap_sys_admin_the_domain_comes_with_no_new_privs_and_holds(tmp_path):
    """As a plain user (no CAP_SYS_ADMIN) a replica's domain needs no_new_privs; with
    it, a same-uid process that would let itself be inspected no longer can be."""
    if not CAPS["root"] or CAPS["landlock_abi"] < 2:
        pytest.skip("needs root (to become a plain user) and Landlock ABI >= 2")
    nobody = 65534
    boot = Boot(
        agent="t", replica=0, generation=0, entry="m:f", workdir="/tmp", ptrace_isolation=True
    )
    hold_r, hold_w = os.pipe()
    ready_r, ready_w = os.pipe()
    peer = os.fork()
    if peer == 0:  # pragma: no cover - child: a same-uid process, inspectable
        os.close(hold_w)
        os.setgid(nobody)
        os.setuid(nobody)
        confine_mod._prctl(confine_mod._PR_SET_DUMPABLE, 1, "PR_SET_DUMPABLE")
        os.write(ready_w, b"x")
        os.read(hold_r, 1)  # until the test closes its end
        os._exit(0)
    os.close(hold_r)
    os.close(ready_w)
    os.read(ready_r, 1)
    os.close(ready_r)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 1
        try:
            os.setgroups([])
            os.setgid(nobody)
            os.setuid(nobody)
            before = "ok" if os.readlink(f"/proc/{peer}/fd/0") else "?"
            confine_mod.confine(boot)
            try:
                os.readlink(f"/proc/{peer}/fd/0")
                after = "ok"
            except PermissionError:
                after = "PermissionError"
            with open("/proc/self/status") as f:
                nnp = next(ln.split()[1] for ln in f if ln.startswith("NoNewPrivs:"))
            os.write(w, f"{before} {after} {nnp}".encode())
            code = 0
        except BaseException as exc:
            os.write(w, repr(exc).encode())
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        got = f.read().decode()
    os.waitpid(pid, 0)
    os.close(hold_w)  # the peer ends
    os.waitpid(peer, 0)
    assert got == "ok PermissionError 1"


def test_doctor_says_which_mechanism_isolates_replicas(capsys):
    from agentrt.cli import main

    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    for row in ("landlock scoping", "pid namespace", "mount namespace", "interpreter for any uid"):
        assert row in out, row
    for setting in (
        "isolation.ptrace",
        "isolation.signal",
        "isolation.abstract_unix",
        "isolation.dumpable",
        "run_as.import_paths",
    ):
        assert setting in out, setting


# --- what a replica inherits ---------------------------------------------------------------


@pytest.mark.parametrize("spares", [0, 4])
@pytest.mark.parametrize("profile", ["default", "strict"])
async def test_a_replica_holds_none_of_the_zygotes_descriptors(
    profile, spares, make_supervisor, agent_spec
):
    """The zygote keeps Landlock rulesets for its replicas to apply: one left
    open could be added to, weakening a sibling's domain.  A replica (a spare
    or a fresh fork) starts its agent with its pipes, /dev/null and the files
    the runtime opened for it, nothing of the zygote's."""
    if profile != "default":
        _enforceable(profile)
    async with make_supervisor(spares=spares) as sup:
        if spares:
            await sup._launcher.client.spares_forked(spares)
        await sup.start(agent_spec("fds", "sandboxed:descriptors", sandbox=profile, replicas=2))
        for _ in range(4):
            fds = await sup.call("fds")
            # (the channel's pipes, /dev/null, the spin slot files and the
            # group's member list: no socket, no anonymous inode)
            assert set(fds.values()) <= {"pipe", "char", "file"}, fds
