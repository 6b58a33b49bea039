"""Config loading: typed specs, sizes and durations, errors that name the key path."""

from __future__ import annotations

import enum
from pathlib import Path

import pytest

from agentrt import AgentSpec, ConfigError, Limits, Supervisor, load_config, parse_config
from agentrt.config import parse_duration, parse_size


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("256MiB", 256 * 2**20),
        ("1GiB", 2**30),
        ("512KiB", 512 * 1024),
        ("10MB", 10**7),
        ("4096", 4096),
        (1024, 1024),
        ("1.5GiB", int(1.5 * 2**30)),
    ],
)
def test_parse_size_accepts_units(text: str | int, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("500ms", 0.5),
        ("30s", 30.0),
        ("2m", 120.0),
        ("1h", 3600.0),
        (5, 5.0),
        ("0.25", 0.25),
        ("200us", 0.0002),
    ],
)
def test_parse_duration_accepts_units(text: str | int, expected: float) -> None:
    assert parse_duration(text) == pytest.approx(expected)


@pytest.mark.parametrize("bad", ["lots", "12 parsecs", "-1", True, "MiB"])
def test_parse_size_rejects_garbage(bad: object) -> None:
    with pytest.raises(ValueError, match="size"):
        parse_size(bad)  # type: ignore[arg-type]


def test_limits_normalise_strings_from_python() -> None:
    lim = Limits(memory="256MiB", cpu_time="10s", file_size="1MiB")
    assert (lim.memory, lim.cpu_time, lim.file_size) == (256 * 2**20, 10.0, 2**20)
    assert (type(lim.memory), type(lim.cpu_time), type(lim.file_size)) == (int, float, int)


def _agent(**kw: object) -> dict[str, object]:
    return {"agents": {"echo": {"entry": "agents:echo", **kw}}}


@pytest.mark.parametrize(
    ("doc", "path", "fragment"),
    [
        (
            _agent(limits={"memory": "lots"}),
            "agents.echo.limits.memory",
            'expected a size like "256MiB"',
        ),
        (_agent(limits={"memry": 1}), "agents.echo.limits.memry", "did you mean 'memory'"),
        (_agent(replicas=0), "agents.echo.replicas", "at least 1"),
        (_agent(restart="sometimes"), "agents.echo.restart", "invalid enum value"),
        (_agent(timeout="soon"), "agents.echo.timeout", "duration"),
        ({"agents": {"echo": {"entry": "no_colon"}}}, "agents.echo.entry", "module:attr"),
        ({"agents": {"echo": {}}}, "agents.echo.entry", "required"),
        ({"supervisor": {"strategy": "all_for_one"}}, "supervisor.strategy", "invalid enum"),
        ({"supervisor": {"start_methd": "zygote"}}, "supervisor.start_methd", "start_method"),
        ({"agentz": {}}, "agentz", "did you mean 'agents'"),
        ({"supervisor": {"backend": "k8s"}}, "supervisor.backend", "invalid enum"),
        ({"supervisor": {"address": "ray://"}}, "supervisor.address", '"ray://host:port"'),
        ({"supervisor": {"address": "a b:1"}}, "supervisor.address", '"host:port"'),
        ({"supervisor": {"ray_num_cpus": -1}}, "supervisor.ray_num_cpus", "between 0 and"),
        ({"supervisor": {"ray_strategy": "PACK"}}, "supervisor.ray_strategy", "invalid enum"),
        (
            {**_agent(), "tasks": [{"id": "t", "agent": "ecko"}]},
            "tasks.t.agent",
            "did you mean 'echo'",
        ),
        (
            {**_agent(), "tasks": [{"id": "t", "agent": "echo"}, {"id": "t", "agent": "echo"}]},
            "tasks.t.id",
            "duplicate",
        ),
        (
            {**_agent(), "tasks": [{"id": "t", "agent": "echo", "retries": -1}]},
            "tasks.t.retries",
            "at least 0",
        ),
        (
            {"agents": {"echo": {"entry": "m:f", "spin": "1s"}}},
            "agents.echo.spin",
            "at most 10ms",
        ),
        (_agent(standby="yes"), "agents.echo.standby", 'expected true, false or "auto"'),
        (
            _agent(restart="sometimes"),
            "agents.echo.restart",
            'expected "permanent", "transient" or "temporary"',
        ),
    ],
)
def test_config_errors_name_the_key_path(doc: dict[str, object], path: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(doc)
    assert info.value.path == path
    assert fragment in str(info.value)
    assert str(info.value).startswith(f"{path}: ")


def test_load_config_reads_toml_and_keeps_declaration_order(tmp_path: Path) -> None:
    cfg_file = tmp_path / "config.toml"
    cfg_file.write_text(
        """
[supervisor]
strategy = "rest_for_one"
period = "10s"

[agents.zeta]
entry = "agents:echo"
timeout = "500ms"
[agents.alpha]
entry = "agents:echo"
replicas = 3
[agents.alpha.limits]
memory = "64MiB"

[[tasks]]
id = "greet"
agent = "alpha"
args = { text = "hello" }
"""
    )
    cfg = load_config(cfg_file)
    assert list(cfg.agents) == ["zeta", "alpha"]
    assert cfg.agents["zeta"].timeout == 0.5
    assert cfg.agents["alpha"].limits.memory == 64 * 2**20
    # decoded once into the types the names promise: float seconds, int bytes
    assert type(cfg.agents["zeta"].timeout) is float
    assert type(cfg.agents["alpha"].limits.memory) is int
    assert type(cfg.supervisor.period) is float
    assert cfg.agents["alpha"].name == "alpha"
    assert cfg.supervisor.strategy == "rest_for_one"
    assert cfg.tasks[0].args == {"text": "hello"}
    assert cfg.base_dir == str(tmp_path.resolve())


def test_invalid_toml_is_a_config_error(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text("[agents\n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(f)


def test_agent_spec_from_python_validates_entry() -> None:
    with pytest.raises(ValueError, match="module:attr"):
        AgentSpec(name="x", entry="nocolon")


@pytest.mark.parametrize("address", ["local", "auto", "ray://head:10001", "10.0.0.7:6379"])
def test_ray_addresses_in_each_documented_form_are_accepted(address: str) -> None:
    cfg = parse_config({"supervisor": {"backend": "ray", "address": address}})
    assert (cfg.supervisor.backend, cfg.supervisor.address) == ("ray", address)


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("standby", 1, 'true, false or "auto"'),
        ("standby", "yes", 'true, false or "auto"'),
        ("standby", None, 'true, false or "auto"'),
        ("restart", "sometimes", '"permanent", "transient" or "temporary"'),
        ("approval", True, '"none" or "required"'),
    ],
)
def test_a_choice_given_from_python_is_checked_as_from_a_config(
    field: str, value: object, expected: str
) -> None:
    with pytest.raises(ConfigError) as info:
        AgentSpec(name="a", entry="m:f", **{field: value})  # type: ignore[arg-type]
    assert info.value.path == field
    assert str(info.value).endswith(f"must be {expected}, got {value!r}")


def test_a_str_subclass_counts_as_its_string() -> None:
    class Restart(enum.StrEnum):
        PERMANENT = "permanent"

    assert AgentSpec(name="a", entry="m:f", restart=Restart.PERMANENT).restart == "permanent"


def test_a_supervisor_built_in_python_names_its_choices_too() -> None:
    with pytest.raises(ConfigError) as info:
        Supervisor(strategy="one_for_some")  # type: ignore[arg-type]
    assert info.value.path == "supervisor.strategy"
    assert str(info.value).endswith('expected "one_for_one", "one_for_all" or "rest_for_one"')


def test_standby_is_read_from_a_config_file(tmp_path: Path) -> None:
    cfg_file = tmp_path / "config.toml"
    cfg_file.write_text(
        '[agents.a]\nentry = "m:f"\nstandby = true\n[agents.b]\nentry = "m:f"\n'
        '[agents.c]\nentry = "m:f"\nstandby = "auto"\n'
    )
    agents = load_config(cfg_file).agents
    assert (agents["a"].standby, agents["b"].standby, agents["c"].standby) == (True, False, "auto")
