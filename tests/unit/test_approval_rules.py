"""Approvals in the config (key paths of every mistake) and the rule matching."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agentrt import AgentSpec, ConfigError, ToolSpec, parse_config
from agentrt.cli.validate import validate_config
from agentrt.config import ApprovalsSpec
from agentrt.protocol import args_match, rule_text
from agentrt.supervisor.events import EventHub
from agentrt.supervisor.oversight import Approvals, Audit

AGENTS = {"pub": {"entry": "m:f"}}


def _cfg(approvals: Any, **extra: Any) -> Any:
    return parse_config({"agents": AGENTS, "approvals": approvals, **extra})


@pytest.mark.parametrize(
    ("approvals", "path", "message"),
    [
        ({"timeout": "soon"}, "approvals.timeout", "duration"),
        ({"timeout": 0}, "approvals.timeout", "greater than 0"),
        ({"rules": [{"tool": "x", "agent": "pub"}]}, "approvals.rules.0", "either a tool or"),
        ({"rules": [{}]}, "approvals.rules.0", "either a tool or"),
        ({"rules": [{"agent": "nobody"}]}, "approvals.rules.0.agent", "no agent named"),
        ({"rules": [{"agent": "pbu"}]}, "approvals.rules.0.agent", "did you mean 'pub'"),
        ({"rules": [{"tool": "t", "args": {"cmd": []}}]}, "approvals.rules.0.args.cmd", "pattern"),
        ({"rules": [{"tool": "t", "args": {"cmd": ""}}]}, "approvals.rules.0.args.cmd", "1 to"),
        ({"rules": [{"tool": "../t"}]}, "approvals.rules.0.tool", "not a name"),
        ({"rules": [{"tool": "t", "args": {"cmd": 3}}]}, "approvals.rules.0.args", ""),
        ({"rulez": []}, "approvals.rulez", "unknown"),
    ],
)
def test_approvals_mistakes_name_their_key(approvals: Any, path: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        _cfg(approvals)
    assert err.value.path.startswith(path)
    assert message in err.value.message


@pytest.mark.parametrize("where", ["agents.pub", "tools.t", "tasks.0"])
def test_approval_keys_take_none_or_required(where: str) -> None:
    doc: dict[str, Any] = {
        "agents": {"pub": {"entry": "m:f"}},
        "tools": {"t": {"entry": "m:t"}},
        "tasks": [{"id": "a", "agent": "pub"}],
    }
    section, key = where.split(".")
    target = doc[section][int(key)] if section == "tasks" else doc[section][key]
    target["approval"] = "always"
    with pytest.raises(ConfigError) as err:
        parse_config(doc)
    assert err.value.path.endswith(".approval")
    target["approval"] = "required"
    assert parse_config(doc)


def test_validate_reports_approvals_errors_with_paths(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        '[agents.pub]\nentry = "m:f"\n'
        '[approvals]\ntimeout = "-1s"\n'
        '[[approvals.rules]]\nagent = "nobody"\n'
    )
    errors, _ = validate_config(cfg)
    paths = {e.path for e in errors}
    assert "approvals.rules.0.agent" in paths or "approvals.timeout" in paths


@pytest.mark.parametrize(
    ("rule", "args", "hit"),
    [
        ({}, {}, True),
        ({"cmd": ["rm *"]}, {"cmd": "rm -rf /"}, True),
        ({"cmd": ["rm *"]}, {"cmd": "ls"}, False),
        ({"cmd": ["rm *"]}, {}, False),
        ({"cmd": ["rm *", "*sudo*"]}, {"cmd": "x; sudo y"}, True),
        ({"n": ["4?"]}, {"n": 42}, True),
        ({"cfg": ['*"prod"*']}, {"cfg": {"env": "prod"}}, True),
        ({"a": ["x"], "b": ["y"]}, {"a": "x", "b": "z"}, False),
        ({"cmd": ["*a*a*a*a*a*a*a*a*b"]}, {"cmd": "a" * 100_000}, False),
    ],
)
def test_args_match(rule: dict[str, list[str]], args: dict[str, Any], hit: bool) -> None:
    assert args_match(rule, args) is hit


def _approvals(**spec: Any) -> Approvals:
    audit = Audit(log=_NullLog())
    return Approvals(ApprovalsSpec(**spec), audit, EventHub(), _NullLog())


class _NullLog:
    def __getattr__(self, name: str) -> Any:
        return lambda *a, **k: None


def test_who_needs_approval() -> None:
    a = _approvals(
        rules=[
            {"agent": "pub", "args": {"channel": "prod*"}},
            {"tool": "shell", "args": {"cmd": "rm *"}},
            {"tool": "deploy"},
        ]
    )
    pub = AgentSpec(name="pub", entry="m:f")
    assert a.call_why(pub, {"channel": "dev"}, flagged=False) is None
    assert "rule 1" in (a.call_why(pub, {"channel": "prod-1"}, flagged=False) or "")
    assert a.call_why(pub, {}, flagged=True) == "the task requires approval"
    strict = AgentSpec(name="pub", entry="m:f", approval="required")
    assert a.call_why(strict, {}, flagged=False) == "agent 'pub' requires approval"
    pool = AgentSpec(name="tool:deploy", entry="m:d")
    assert "rule 3" in (a.call_why(pool, {}, flagged=False) or "")
    tools = {
        "shell": ToolSpec(name="shell", entry="m:s"),
        "deploy": ToolSpec(name="deploy", entry="m:d", isolated=True),
        "mail": ToolSpec(name="mail", entry="m:m", approval="required"),
    }
    # what replicas are told: in-process tools only (isolated ones are held by the supervisor)
    assert a.tool_rules(tools) == {"mail": [{}], "shell": [{"cmd": ["rm *"]}]}
    assert rule_text("shell", {"cmd": ["rm *"]}) == "'shell' called with cmd matches 'rm *'"
