"""``agentrt validate``: every error of a config file at once, each with its key path and a hint.

The loader stops at the first error; :func:`validate_config` checks each
section, agent, tool and task on its own, dropping each offending key and
retrying, then the task graph (dangling references, cycles).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import re
from pathlib import Path
from typing import Any

import msgspec

from agentrt.cli.common import EXIT_CONFIG, EXIT_OK, Subparsers
from agentrt.config import (
    AgentSpec,
    ApprovalRule,
    ApprovalsSpec,
    Config,
    Limits,
    ModelSpec,
    RunSpec,
    SupervisorSpec,
    TaskSpec,
    ToolSpec,
    check_entries,
    parse_config,
    read_toml,
)
from agentrt.errors import ConfigError
from agentrt.graph import Graph

__all__ = ["add_parser", "command", "validate_config"]


def add_parser(sub: Subparsers) -> None:
    """The ``validate`` subcommand."""
    vp = sub.add_parser(
        "validate",
        help="check a config file and report every error at once",
        description=(
            "Check CONFIG without starting anything: every error, each with its key path and a "
            "hint, and the task graph (dangling references, cycles)."
        ),
        epilog="exit status: 0 valid, 2 invalid",
    )
    vp.add_argument("config", type=Path, help="path to config.toml")


_SECTIONS = ("supervisor", "agents", "tools", "models", "run", "tasks", "approvals")


def _drop_key(doc: dict[str, Any], path: str) -> bool:
    """Remove the key ``path`` names from ``doc`` (so the rest can be checked)."""
    parts = path.split(".")
    cur: Any = doc
    for part in parts[:-1]:
        if isinstance(cur, list):
            if len(cur) == 1:
                cur = cur[0]
            elif part.isdigit() and int(part) < len(cur):
                cur = cur[int(part)]
            else:
                return False
        elif isinstance(cur, dict) and part in cur:
            cur = cur[part]
        else:
            return False
    if isinstance(cur, dict) and parts[-1] in cur:
        del cur[parts[-1]]
        return True
    return False


def _collect(
    doc: dict[str, Any], base: Path, limit: int = 50
) -> tuple[list[ConfigError], Config | None]:
    """Every error of one small document, by dropping each offending key and retrying."""
    doc = copy.deepcopy(doc)
    errors: list[ConfigError] = []
    for _ in range(limit):
        try:
            cfg = parse_config(doc, base)
        except ConfigError as exc:
            if exc.message == "required key is missing" and any(e.path == exc.path for e in errors):
                return errors, None  # the key's bad value was dropped and reported already
            errors.append(exc)
            if not _drop_key(doc, exc.path):
                return errors, None
        else:
            return errors, (cfg if not errors else None)
    return errors, None


def validate_config(path: Path) -> tuple[list[ConfigError], Config | None]:
    """All errors of a config file (each section, agent, tool and task on its own)."""
    try:
        data = read_toml(path)
    except ConfigError as exc:
        return [exc], None
    base = path.parent
    errors: list[ConfigError] = []
    context: dict[str, Any] = {}  # valid sections other docs may refer to (sandboxes, ...)
    for key in data:
        if key not in ("agents", "tools", "tasks", "approvals"):
            errs = _collect({key: data[key]}, base)[0]
            errors += errs
            if not errs:
                context[key] = data[key]
    agent_names: list[str] = []
    for key in ("agents", "tools"):
        raw = data.get(key, {})
        if not isinstance(raw, dict):
            errors += _collect({key: raw}, base)[0]
            continue
        if key == "agents":
            agent_names = list(raw)
        for name, item in raw.items():
            errors += _collect({**context, key: {name: item}}, base)[0]
    raw_tasks = data.get("tasks", [])
    specs: list[TaskSpec] = []
    tasks_ok = True
    if not isinstance(raw_tasks, list):
        errors += _collect({"tasks": raw_tasks}, base)[0]
        tasks_ok = False
        raw_tasks = []
    stub = {n: {"entry": "stub:stub"} for n in agent_names}
    if "approvals" in data:  # its rules name agents
        errors += _collect({"agents": stub, "approvals": data["approvals"]}, base)[0]
    seen: set[str] = set()
    for i, raw in enumerate(raw_tasks):
        errs, cfg = _collect({**context, "agents": stub, "tasks": [raw]}, base)
        if not (isinstance(raw, dict) and "id" in raw):
            errs = [ConfigError(_reindex(e.path, i), e.message) for e in errs]
        errors += errs
        if cfg is not None:
            spec = cfg.tasks[0]
        elif isinstance(raw, dict) and isinstance(raw.get("id"), str):
            # invalid, but other tasks may refer to it: keep its id in the graph check
            spec = TaskSpec(id=raw["id"], agent=str(raw.get("agent", "")))
        else:
            tasks_ok = False
            continue
        if spec.id in seen:
            if cfg is not None:
                errors.append(ConfigError(f"tasks.{spec.id}.id", f"duplicate task id {spec.id!r}"))
            continue
        seen.add(spec.id)
        specs.append(spec)
    if tasks_ok and specs:
        on_error = data.get("run", {}).get("on_error", "fail_fast")
        try:
            Graph.from_specs(specs, on_error=on_error).validate()
        except ConfigError as exc:
            errors.append(exc)
        except (TypeError, ValueError) as exc:
            errors.append(ConfigError("tasks", str(exc)))
    if errors:
        return errors, None
    try:
        cfg = parse_config(data, path.parent)
    except ConfigError as exc:  # a check above missed it: still report it
        return [exc], None
    errors = check_entries(cfg)
    return errors, (None if errors else cfg)


def _reindex(path: str, i: int) -> str:
    parts = path.split(".")
    if len(parts) >= 2 and parts[0] == "tasks" and parts[1] == "0":
        parts[1] = str(i)
    return ".".join(parts)


def _struct_for(path: str) -> Any:
    parts = path.split(".")[:-1]
    if not parts:
        return _SECTIONS
    head = parts[0]
    if head == "supervisor" and len(parts) == 1:
        return SupervisorSpec
    if head == "run" and len(parts) == 1:
        return RunSpec
    if head == "approvals" and len(parts) == 1:
        return ApprovalsSpec
    if head == "approvals" and len(parts) == 3 and parts[1] == "rules":
        return ApprovalRule
    if head in ("agents", "tools") and len(parts) == 2:
        return AgentSpec if head == "agents" else ToolSpec
    if head in ("agents", "tools") and len(parts) == 3 and parts[2] == "limits":
        return Limits
    if head == "tasks" and len(parts) == 2:
        return TaskSpec
    if head == "models" and len(parts) == 2:
        return ModelSpec
    return None


#: msgspec's type names, in words
_TYPE_WORDS = {
    "int": "a whole number",
    "float": "a number",
    "str": 'a string ("in quotes")',
    "bool": "true or false",
    "array": "a list ([...])",
    "object": "a table ({...} or [section])",
    "null": "nothing",
}


def _hint(err: ConfigError, agents: list[str]) -> str | None:
    msg, path = err.message, err.path
    last = path.rsplit(".", 1)[-1]
    if msg.startswith("unknown key"):
        owner = _struct_for(path)
        if owner is None:
            return None
        keys = (
            list(owner)
            if isinstance(owner, tuple)
            else [f.name for f in msgspec.structs.fields(owner) if f.name != "name"]
        )
        return "allowed keys here: " + ", ".join(keys)
    if "expected a size" in msg:
        return 'write a size such as "512MiB", "2GiB" or a number of bytes'
    if "expected a duration" in msg:
        return 'write a duration such as "500ms", "30s", "2m" or a number of seconds'
    if msg == "required key is missing":
        parent = path.rsplit(".", 1)[0] if "." in path else "the top level"
        return f"add `{last} = ...` under [{parent}]"
    if msg.startswith("no agent named"):
        return "declare it as [agents.<name>]" + (
            f" or use one of: {', '.join(agents)}" if agents else ""
        )
    if msg.startswith("duplicate task id"):
        return "give every [[tasks]] table its own id"
    if "cycle" in msg:
        return "remove one dependency of the cycle (an `after` entry or a ${...} reference)"
    if "depends on unknown task" in msg:
        return "refer only to task ids defined in this file"
    if "module:attr" in msg:
        return 'entry is "package.module:function" (or a class)'
    if "invalid TOML" in msg:
        return "fix the TOML syntax at the line and column shown"
    m = re.match(r"[Ee]xpected `([^`]+)`, got `([^`]+)`", msg)
    if m:
        want = " or ".join(_TYPE_WORDS.get(t.strip(), t.strip()) for t in m[1].split("|"))
        return f"write {want} here (this is {_TYPE_WORDS.get(m[2], m[2])})"
    if msg.startswith("must be at least"):
        return f"raise {last}"
    return None


def command(args: argparse.Namespace) -> int:
    """``agentrt validate``: every error of CONFIG, each with a hint."""
    path: Path = args.config
    errors, cfg = validate_config(path)
    if cfg is not None:
        print(
            f"{path}: ok ({len(cfg.agents)} agents, {len(cfg.tools)} tools, {len(cfg.tasks)} tasks)"
        )
        return EXIT_OK
    agents: list[str] = []
    with contextlib.suppress(ConfigError):
        raw = read_toml(path).get("agents", {})
        agents = list(raw) if isinstance(raw, dict) else []
    n = len(errors)
    print(f"{path}: {n} error{'s' if n != 1 else ''}")
    for err in errors:
        print(f"  {err}")
        hint = _hint(err, agents)
        if hint:
            print(f"    hint: {hint}")
    return EXIT_CONFIG
