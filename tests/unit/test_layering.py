"""The module map's one-way data flow, and the public API, checked by parsing imports."""

from __future__ import annotations

import ast
from pathlib import Path

import agentrt

PKG = Path(agentrt.__file__).parent

# module -> the agentrt modules it may import (directly)
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "protocol": set(),
    "_linux": set(),
    "deathwatch": set(),
    "config.units": set(),
    "config.specs": {"config.units", "errors"},
    "config.decode": {"config.units", "errors"},
    "config.profiles": {"config.decode", "config.specs", "config.units", "errors"},
    "config.loader": {
        "config.decode",
        "config.profiles",
        "config.specs",
        "config.units",
        "errors",
    },
    "config": {
        "config.decode",
        "config.loader",
        "config.profiles",
        "config.specs",
        "config.units",
    },
    "graph": {"errors"},
    "observe": set(),
    # ctx.toolbox / run_tool_calls / run_plan / model open into agentrt.llm when first called
    "context": {"errors", "protocol", "llm.calls", "llm.clients", "llm.plan", "llm.schema"},
    # model-driven agents: above ctx and the graph engine, beside the supervisor
    "llm.schema": set(),
    "llm.shapes": set(),
    "llm.errors": {"errors"},
    "llm.calls": {"context", "errors", "llm.schema", "llm.shapes"},
    "llm.plan": {"context", "errors", "graph", "llm.calls", "llm.schema"},
    "llm.clients": {"errors", "llm.errors", "observe"},
    "llm.loop": {"context", "llm.calls", "llm.clients", "llm.schema", "llm.shapes", "protocol"},
    # (and itself: run with -m, it hands over to the module scripts import)
    "llm.scripted": {"llm.clients", "llm.scripted"},
    "llm": {
        "llm.calls",
        "llm.clients",
        "llm.errors",
        "llm.loop",
        "llm.plan",
        "llm.schema",
        "llm.scripted",
        "llm.shapes",
    },
    "sandbox.probe": set(),
    "sandbox.planning": {"config", "errors", "sandbox.probe"},
    "sandbox.cgroups": {"sandbox.probe"},
    "sandbox.confine": {"_linux", "protocol", "sandbox.cgroups", "sandbox.probe"},
    "sandbox": {"sandbox.cgroups", "sandbox.confine", "sandbox.planning", "sandbox.probe"},
    "worker": {
        "_linux",
        "context",
        "deathwatch",
        "errors",
        "protocol",
        "sandbox",
        "sandbox.confine",
    },
    "zygote": {"_linux", "deathwatch", "protocol", "sandbox.cgroups", "sandbox.confine", "worker"},
    "process": {"_linux", "deathwatch", "errors", "protocol"},
    # the control socket: server, client, run discovery (the supervisor serves it)
    "control": {"_linux", "errors", "protocol"},
    "backends": set(),
    "backends.local": {"deathwatch", "process", "protocol", "worker", "zygote"},
    "backends.ray": {"_linux", "config", "process", "protocol", "sandbox"},
    "backends.ray_child": {"_linux", "protocol", "worker"},
    # the supervisor package, room by room (data flows down the list)
    "supervisor.policy": set(),
    "supervisor.events": set(),
    "supervisor.ledger": {"errors", "protocol", "supervisor.events"},
    "supervisor.boot": {"_linux", "config", "control", "errors", "protocol", "sandbox"},
    "supervisor.watchdog": {"errors", "process", "sandbox"},
    "supervisor.pool": {
        "_linux",
        "config",
        "errors",
        "process",
        "protocol",
        "supervisor.boot",
        "supervisor.events",
        "supervisor.ledger",
        "supervisor.policy",
        "supervisor.watchdog",
    },
    "supervisor.tree": {
        "_linux",
        "config",
        "errors",
        "supervisor.events",
        "supervisor.policy",
        "supervisor.pool",
    },
    "supervisor.requests": {
        "config",
        "errors",
        "process",
        "protocol",
        "supervisor.ledger",
        "supervisor.oversight",
        "supervisor.pool",
    },
    "supervisor.oversight": {"config", "errors", "protocol", "supervisor.events"},
    "supervisor.bulk": {"errors", "supervisor.ledger", "supervisor.pool"},
    "supervisor.holds": {
        "_linux",
        "errors",
        "process",
        "protocol",
        "sandbox",
        "supervisor.events",
        "supervisor.ledger",
        "supervisor.pool",
    },
    "supervisor.console": {
        "control",
        "errors",
        "protocol",
        "supervisor.events",
        "supervisor.holds",
        "supervisor.ledger",
        "supervisor.oversight",
        "supervisor.pool",
    },
    "supervisor.facade": {
        "_linux",
        "backends.local",
        "backends.ray",
        "config",
        "control",
        "errors",
        "observe",
        "process",
        "protocol",
        "supervisor.boot",
        "supervisor.bulk",
        "supervisor.console",
        "supervisor.events",
        "supervisor.holds",
        "supervisor.ledger",
        "supervisor.oversight",
        "supervisor.policy",
        "supervisor.pool",
        "supervisor.requests",
        "supervisor.tree",
    },
    "supervisor": {
        "supervisor.events",
        "supervisor.facade",
        "supervisor.ledger",
        "supervisor.oversight",
        "supervisor.pool",
    },
    # the run journal (SQLite): what the scheduler records and resumes from
    "journal": {"errors"},
    "scheduler": {"config", "errors", "graph", "journal", "supervisor"},
    "live": {"protocol", "supervisor"},
    "trace": {"scheduler", "supervisor"},
    # the command, one module per subcommand (nothing imports cli)
    "cli.common": set(),
    "cli.supervise": {
        "cli.common",
        "config",
        "errors",
        "graph",
        "journal",
        "live",
        "observe",
        "scheduler",
        "supervisor",
        "trace",
    },
    "cli.validate": {"cli.common", "config", "errors", "graph"},
    "cli.doctor": {
        "__init__",
        "backends.ray",
        "cli.common",
        "config",
        "deathwatch",
        "errors",
        "sandbox",
    },
    "cli.trace": {"cli.common", "trace"},
    "cli.bench": {"cli.common"},
    # the control client only: it knows the supervisor through the socket
    "cli.ctl": {"cli.common", "control", "errors", "protocol"},
    # the journal, read only: the runs it recorded and one run's tasks
    "cli.runs": {"cli.common", "config", "errors", "graph", "journal", "scheduler"},
    "cli": {
        "__init__",
        "cli.bench",
        "cli.common",
        "cli.ctl",
        "cli.doctor",
        "cli.runs",
        "cli.supervise",
        "cli.trace",
        "cli.validate",
    },
    "cli.__main__": {"cli"},
}


def _agentrt_imports(path: Path) -> set[str]:
    """The agentrt modules ``path`` imports; ``from agentrt.pkg import mod`` counts
    as ``pkg.mod``, ``from agentrt.pkg import name`` as the package ``pkg``."""
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module != "agentrt" and not node.module.startswith("agentrt."):
                continue
            pkg = node.module.removeprefix("agentrt").lstrip(".")
            where = PKG.joinpath(*pkg.split(".")) if pkg else PKG
            for a in node.names:
                if (where / f"{a.name}.py").exists() or (where / a.name).is_dir():
                    found.add(f"{pkg}.{a.name}" if pkg else a.name)
                else:
                    found.add(pkg or "__init__")
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("agentrt."):
                    found.add(a.name.removeprefix("agentrt."))
    return found


def _path(name: str) -> Path:
    base = PKG / name.replace(".", "/")
    return base / "__init__.py" if base.is_dir() else base.with_suffix(".py")


def test_every_module_imports_only_lower_layers() -> None:
    for name, allowed in ALLOWED.items():
        path = _path(name)
        extra = _agentrt_imports(path) - allowed
        assert not extra, f"agentrt.{name} imports {sorted(extra)}, outside its layer"


def test_every_module_is_in_the_layer_map() -> None:
    mods = {
        str(p.relative_to(PKG).with_suffix("")).replace("/", ".").removesuffix(".__init__")
        for p in PKG.rglob("*.py")
        if p.parent != PKG or p.name != "__init__.py"
    }
    assert mods <= set(ALLOWED), (
        f"modules missing from the layer map: {sorted(mods - set(ALLOWED))}"
    )


def test_protocol_and_errors_import_only_msgspec_and_stdlib() -> None:
    import sys

    for name in ("protocol", "errors"):
        tree = ast.parse((PKG / f"{name}.py").read_text())
        for node in ast.walk(tree):
            mods: list[str] = []
            if isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                mods = [node.module]
            for m in mods:
                top = m.split(".")[0]
                assert (
                    top == "msgspec" and name == "protocol"
                ) or top in sys.stdlib_module_names, f"agentrt.{name} imports {m}"


def test_dunder_all_matches_the_public_names() -> None:
    public = {n for n in dir(agentrt) if not n.startswith("_") and n not in {"annotations"}}
    modules = {n for n in public if type(getattr(agentrt, n)).__name__ == "module"}
    assert set(agentrt.__all__) - {"__version__"} == public - modules
    for name in agentrt.__all__:
        assert hasattr(agentrt, name), name


def test_replicas_do_not_import_the_supervisors_side() -> None:
    """The zygote and the worker (what every replica and spawn child imports)
    leave out the configuration loader, the sandbox planner and the supervisor;
    ``agentrt.sandbox``'s lazy names still resolve, even after their module
    was imported by its own name."""
    import subprocess
    import sys

    code = (
        "import sys, importlib, agentrt.zygote, agentrt.worker\n"
        "print(sorted(m for m in sys.modules if m.startswith('agentrt')))\n"
        "importlib.import_module('agentrt.sandbox.planning')\n"
        "from agentrt import sandbox\n"
        "print(callable(sandbox.plan), callable(sandbox.explain), sandbox.Plan.__name__)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded, resolved = proc.stdout.splitlines()
    for heavy in ("agentrt.config", "agentrt.sandbox.planning", "agentrt.supervisor"):
        assert f"'{heavy}'" not in loaded, f"{heavy} imported by a replica: {loaded}"
    assert "'agentrt.sandbox.confine'" in loaded
    assert resolved == "True True Plan"
