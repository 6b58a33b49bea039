"""Loading a config: TOML read safely, validated whole, entries checked.

:func:`load_config` (a file), :func:`parse_config` (a decoded document) and
:func:`check_entries` (imports each entry in a throwaway interpreter).
"""

from __future__ import annotations

import difflib
import tomllib
from pathlib import Path
from typing import Any

import msgspec

from agentrt.config.decode import _convert
from agentrt.config.profiles import load_sandbox
from agentrt.config.specs import (
    AgentSpec,
    ApprovalsSpec,
    Config,
    ModelSpec,
    RunSpec,
    SupervisorSpec,
    TaskSpec,
    ToolSpec,
)
from agentrt.config.units import NAME_RE
from agentrt.errors import ConfigError

__all__ = ["check_entries", "load_config", "parse_config", "read_toml"]


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
    known = ("supervisor", "agents", "tools", "models", "run", "tasks", "sandboxes", "approvals")
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
    raw_models = data.get("models", {})
    if not isinstance(raw_models, dict):
        raise ConfigError("models", "expected a table of models")
    models: dict[str, ModelSpec] = {}
    for name, raw in raw_models.items():
        if not isinstance(raw, dict):
            raise ConfigError(f"models.{name}", "expected a table")
        if "name" in raw:
            raise ConfigError(
                f"models.{name}.name", "unknown key (the table's name is the model's)"
            )
        _table_name("models", name)
        models[name] = _convert({**raw, "name": name}, ModelSpec, f"models.{name}")
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
    approvals = _convert(data.get("approvals", {}), ApprovalsSpec, "approvals")
    for i, rule in enumerate(approvals.rules):
        if rule.agent is not None and rule.agent not in agents:
            close = difflib.get_close_matches(rule.agent, list(agents), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"approvals.rules.{i}.agent", f"no agent named {rule.agent!r}{hint}")
    return Config(
        supervisor=sup,
        agents=agents,
        tools=tools,
        models=models,
        run=run,
        tasks=tasks,
        approvals=approvals,
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
