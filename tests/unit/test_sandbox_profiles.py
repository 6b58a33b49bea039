"""Sandbox profiles: the shipped ones, lookup, extends/merge, key-path errors, plans."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentrt import ConfigError
from agentrt import sandbox as sb
from agentrt.config import (
    SHIPPED_SANDBOXES,
    Limits,
    SandboxLimits,
    SandboxProfile,
    load_config,
    load_sandbox,
    parse_config,
)

AGENT = {"a": {"entry": "m:f"}}


def test_shipped_profiles_load() -> None:
    assert {p.stem for p in SHIPPED_SANDBOXES.glob("*.toml")} >= {"default", "strict", "untrusted"}
    default, shipped = load_sandbox("default")
    assert shipped
    assert default.network == "host" and default.filesystem is None and default.env is None
    assert not default.cgroup and default.run_as is None
    strict, _ = load_sandbox("strict")
    assert strict.enforce == "strict" and strict.network == "none" and strict.no_new_privs
    assert strict.filesystem is not None and "/usr" in strict.filesystem.read
    assert strict.env is not None and "PATH" in strict.env
    untrusted, _ = load_sandbox("untrusted")
    assert untrusted.extends == "strict"
    assert untrusted.network == "none" and untrusted.filesystem == strict.filesystem
    assert untrusted.run_as == "dynamic" and untrusted.cgroup
    assert untrusted.limits.memory == 512 * 1024**2 and untrusted.limits.cpu == 1.0
    assert untrusted.limits.processes == 64


def test_inline_profile_extends_and_overrides() -> None:
    cfg = parse_config(
        {
            "sandboxes": {
                "mine": {
                    "extends": "untrusted",
                    "network": "host",
                    "limits": {"memory": "128MiB"},
                }
            },
            "agents": {"a": {"entry": "m:f", "sandbox": "mine"}, "b": {"entry": "m:g"}},
        }
    )
    mine = cfg.sandboxes["mine"]
    assert cfg.agents["a"].sandbox == mine
    assert mine.name == "mine" and mine.extends == "untrusted"
    assert mine.network == "host"  # overridden
    assert mine.run_as == "dynamic"  # inherited through untrusted
    assert mine.limits.memory == 128 * 1024**2  # tables merge key by key
    assert mine.limits.processes == 64
    assert mine.filesystem is not None and "/usr" in mine.filesystem.read
    assert cfg.agents["b"].sandbox == "default"  # shipped names stay names


def test_profile_file_next_to_the_config(tmp_path: Path) -> None:
    (tmp_path / "lab.toml").write_text('extends = "strict"\nenv = ["PATH", "HOME"]\n')
    # a profile may extend the shipped one of its own name
    (tmp_path / "strict.toml").write_text('extends = "strict"\nenforce = "warn"\n')
    (tmp_path / "config.toml").write_text(
        '[agents.a]\nentry = "m:f"\nsandbox = "lab"\n'
        '[tools.t]\nentry = "m:t"\nisolated = true\nsandbox = "strict"\n'
    )
    cfg = load_config(tmp_path / "config.toml")
    lab = cfg.agents["a"].sandbox
    assert isinstance(lab, SandboxProfile)
    assert lab.env == ["PATH", "HOME"] and lab.network == "none"
    tool = cfg.tools["t"].sandbox
    assert isinstance(tool, SandboxProfile)
    assert tool.enforce == "warn" and tool.network == "none"


@pytest.mark.parametrize(
    ("sandboxes", "path", "text"),
    [
        ({"mine": {"netwrk": "none"}}, "sandboxes.mine.netwrk", "did you mean 'network'"),
        ({"mine": {"filesystem": {"reed": []}}}, "sandboxes.mine.filesystem.reed", "unknown key"),
        ({"mine": {"limits": {"memory": "lots"}}}, "sandboxes.mine.limits.memory", "size"),
        ({"mine": {"limits": {"cpu": -1}}}, "sandboxes.mine.limits.cpu", "positive"),
        ({"mine": {"network": "some"}}, "sandboxes.mine.network", "invalid enum"),
        ({"mine": {"enforce": "maybe"}}, "sandboxes.mine.enforce", "invalid enum"),
        ({"mine": {"extends": "nope"}}, "sandboxes.mine.extends", "no sandbox profile"),
        ({"x": {"extends": "y"}, "y": {"extends": "x"}}, "sandboxes.", "cycle"),
        ({"mine": {"name": "other"}}, "sandboxes.mine.name", "unknown key"),
        ({"mine": 3}, "sandboxes.mine", "table"),
    ],
)
def test_profile_errors_name_the_key(sandboxes: dict, path: str, text: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"sandboxes": sandboxes, "agents": AGENT})
    assert info.value.path.startswith(path), info.value.path
    assert text in info.value.message


def test_a_profile_file_is_read_again_once_it_changed(tmp_path: Path) -> None:
    # (each agent's start resolves its profile: unchanged files are not parsed again)
    f = tmp_path / "mine.toml"
    f.write_text('extends = "default"\n[limits]\nmemory = "64MiB"\n')
    first, _ = load_sandbox("mine", dirs=[tmp_path])
    assert load_sandbox("mine", dirs=[tmp_path])[0] == first
    assert first.limits.memory == 64 * 1024**2
    f.write_text('extends = "default"\n[limits]\nmemory = "128MiB"\nprocesses = 32\n')
    again, _ = load_sandbox("mine", dirs=[tmp_path])
    assert (again.limits.memory, again.limits.processes) == (128 * 1024**2, 32)
    f.unlink()  # gone: the shipped profiles only
    with pytest.raises(ConfigError, match="no sandbox profile named 'mine'"):
        load_sandbox("mine", dirs=[tmp_path])
    (tmp_path / "default.toml").write_text('extends = "default"\nnetwork = "none"\n')
    assert load_sandbox("default", dirs=[tmp_path])[0].network == "none"  # found first now


def test_a_profile_loaded_twice_is_two_profiles_and_a_huge_number_a_config_error() -> None:
    first, _ = load_sandbox("strict")
    assert first.env is not None
    first.env.append("AWS_*")  # (a caller changing its copy)
    again, _ = load_sandbox("strict")
    assert again.env is not None and "AWS_*" not in again.env
    # nested too: its structs and their lists are its own
    mine, _ = load_sandbox("untrusted")
    assert mine.filesystem is not None and mine.limits.memory is not None
    mine.filesystem.read.append("/home")
    mine.limits.memory = 1
    theirs, _ = load_sandbox("untrusted")
    assert theirs.filesystem is not None and "/home" not in theirs.filesystem.read
    assert theirs.limits.memory == 512 * 1024**2
    raw = {"x": {"limits": {"memory": 10**30}}}  # (beyond MessagePack's integers)
    with pytest.raises(ConfigError, match=r"sandboxes\.x\.limits\.memory"):
        load_sandbox("x", inline=raw)


def test_an_unknown_profile_name_is_an_error_at_the_agent() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"agents": {"a": {"entry": "m:f", "sandbox": "strictt"}}})
    assert info.value.path == "agents.a.sandbox"
    assert "strict" in info.value.message  # the known names are listed
    with pytest.raises(ConfigError) as info:
        parse_config({"tools": {"t": {"entry": "m:f", "sandbox": "nope"}}})
    assert info.value.path == "tools.t.sandbox"


def test_an_error_in_a_profile_file_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text('network = "none"\nrun_ass = "nobody"\n')
    with pytest.raises(ConfigError) as info:
        parse_config({"agents": {"a": {"entry": "m:f", "sandbox": "bad"}}}, tmp_path)
    assert info.value.path == "sandboxes.bad.run_ass"
    assert "bad.toml" in info.value.message


def test_plan_merges_limits_the_agents_winning() -> None:
    prof = SandboxProfile(limits=SandboxLimits(memory="1GiB", open_files=64, cpu_time="9s"))
    plan = sb.plan(prof, Limits(memory="100MiB"))
    assert plan.limits.memory == 100 * 1024**2
    assert plan.limits.open_files == 64
    assert plan.limits.cpu_time == 9.0
    assert plan.core_limits() == plan.limits  # no cgroup: the core applies them all


def test_plan_moves_memory_to_the_cgroup_when_there_is_one() -> None:
    prof = SandboxProfile(cgroup=True, limits=SandboxLimits(memory="64MiB", processes=4))
    plan = sb.plan(prof)
    if "memory" in sb.probe()["cgroup"]["controllers"]:
        assert plan.cgroup_memory == 64 * 1024**2
        assert plan.core_limits().memory is None
    else:
        assert ("cgroup", plan.report[-1][1]) in plan.report
        assert plan.core_limits().memory == 64 * 1024**2


def test_unenforceable_settings_are_reported_not_dropped() -> None:
    plan = sb.plan(SandboxProfile(limits=SandboxLimits(cpu=0.5)))
    un = dict(plan.unenforced)
    assert un["limits.cpu"] == "NOT enforced: needs cgroup = true"


def test_an_unknown_run_as_user_is_a_config_error_naming_the_user() -> None:
    with pytest.raises(ConfigError, match="run_as: no user named 'no-such-user-agentrt'"):
        SandboxProfile(run_as="no-such-user-agentrt")
    with pytest.raises(ConfigError) as info:
        parse_config({"sandboxes": {"mine": {"run_as": "no-such-user-agentrt"}}})
    assert info.value.path == "sandboxes.mine.run_as"


def test_run_as_accepts_uid_and_gid() -> None:
    if not sb.probe()["root"]:
        pytest.skip("run_as needs root")
    plan = sb.plan(SandboxProfile(run_as="65534:65534"))
    assert (plan.run_uid, plan.run_gid) == (65534, 65534)
    assert dict(plan.report)["run_as"].startswith("enforced")
