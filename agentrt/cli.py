"""The ``agentrt`` command (the only module that prints and exits).

Exit codes: 0 every task succeeded (or a clean stop), 1 a task or agent
failed, 2 the configuration or the command line is invalid.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from pathlib import Path
from typing import Any

import msgspec
import structlog

from agentrt import __version__
from agentrt.config import Config, load_config
from agentrt.errors import AgentrtError, ConfigError
from agentrt.graph import Graph
from agentrt.observe import configure_logging
from agentrt.scheduler import Run, RunResult
from agentrt.supervisor import Supervisor

__all__ = ["main"]

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="agentrt", description="A process-isolated runtime for parallel AI agents."
    )
    p.add_argument("--version", action="version", version=f"agentrt {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sp = sub.add_parser(
        "supervise",
        help="start the agents of a config file and run its tasks",
        description=(
            "Start the agents of CONFIG, run its [[tasks]] concurrently and write the results. "
            "With no tasks, supervise the agents until SIGINT or SIGTERM. "
            "Exit status: 0 all tasks ok, 1 a task or agent failed, 2 invalid config."
        ),
    )
    sp.add_argument("config", type=Path, help="path to config.toml")
    sp.add_argument("--output", "-o", type=Path, help="write the results file (JSON) here")
    sp.add_argument("--log-format", choices=("console", "json"), default="console")
    sp.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default="info")
    return p


async def _supervise(cfg: Config, graph: Graph, output: Path | None) -> int:
    log = structlog.get_logger("agentrt.cli")
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    result: RunResult | None = None
    try:
        async with Supervisor(cfg.supervisor, base_dir=cfg.base_dir) as sup:
            try:
                for tool in cfg.tools.values():
                    await sup.add_tool(tool)
                for spec in cfg.agents.values():
                    await sup.start(spec)
            except AgentrtError as exc:
                log.error("agent_start_failed", error=str(exc), type=type(exc).__name__)
                return EXIT_FAILED
            if not cfg.tasks:
                log.info("supervising", agents=list(cfg.agents), hint="stop with Ctrl-C")
                await stop.wait()
                return EXIT_OK
            run = Run(sup, graph, cfg.run).start()
            watcher = asyncio.ensure_future(_log_events(sup, log))
            stopper = asyncio.ensure_future(stop.wait())
            waiter = asyncio.ensure_future(run.wait())
            both: list[asyncio.Future[Any]] = [waiter, stopper]
            await asyncio.wait(both, return_when=asyncio.FIRST_COMPLETED)
            stopper.cancel()
            if not waiter.done():
                log.warning("run_interrupted")
                run.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await waiter
            result = run.result
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    if result is None:
        return EXIT_FAILED
    counts: dict[str, int] = {}
    for r in result.tasks.values():
        counts[r.status] = counts.get(r.status, 0) + 1
    log.info(
        "run_finished",
        run_id=result.run_id,
        status=result.status,
        makespan=round(result.makespan, 4),
        critical_path=" -> ".join(result.critical_path),
        **counts,
    )
    if output is not None:
        _write_results(output, msgspec.json.format(msgspec.json.encode(result)) + b"\n")
    return EXIT_OK if result.status == "ok" else EXIT_FAILED


async def _log_events(sup: Supervisor, log: Any) -> None:
    async for ev in sup.events():
        if ev.kind in ("task_finished", "task_skipped", "task_retry", "fanout"):
            fields = {k: v for k, v in msgspec.to_builtins(ev).items() if k not in ("kind", "time")}
            log.info(ev.kind, **fields)


def _write_results(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``agentrt`` console script."""
    args = _parser().parse_args(argv)
    if args.command == "supervise":
        configure_logging(args.log_format, args.log_level)
        try:
            cfg = load_config(args.config)
            graph = Graph.from_specs(cfg.tasks, on_error=cfg.run.on_error)
            graph.validate()  # dangling references and cycles: refused before anything starts
        except ConfigError as exc:
            print(f"agentrt: config error: {exc}", file=sys.stderr)
            return EXIT_CONFIG
        try:
            return asyncio.run(_supervise(cfg, graph, args.output))
        except KeyboardInterrupt:
            return 130
    return EXIT_CONFIG


if __name__ == "__main__":
    sys.exit(main())
