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
import uuid
from pathlib import Path
from typing import Any

import msgspec
import structlog

from agentrt import __version__
from agentrt.config import Config, load_config
from agentrt.errors import AgentrtError, ConfigError
from agentrt.observe import configure_logging
from agentrt.supervisor import CallReport, Supervisor

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


async def _supervise(cfg: Config, output: Path | None) -> int:
    log = structlog.get_logger("agentrt.cli")
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    run_id = uuid.uuid4().hex
    reports: dict[str, CallReport] = {}
    code = EXIT_OK
    try:
        async with Supervisor(cfg.supervisor, base_dir=cfg.base_dir) as sup:
            try:
                for spec in cfg.agents.values():
                    await sup.start(spec)
            except AgentrtError as exc:
                log.error("agent_start_failed", error=str(exc), type=type(exc).__name__)
                return EXIT_FAILED
            if not cfg.tasks:
                log.info("supervising", agents=list(cfg.agents), hint="stop with Ctrl-C")
                await stop.wait()
                return EXIT_OK

            async def run(task: Any) -> None:
                timeout: Any = {} if task.timeout is None else {"timeout": float(task.timeout)}
                reports[task.id] = await sup.call_report(
                    task.agent, task.args, method=task.method, retries=task.retries, **timeout
                )
                log.info(
                    "task_finished",
                    task=task.id,
                    status=reports[task.id].status,
                    attempts=reports[task.id].attempts,
                )

            runner = asyncio.ensure_future(asyncio.gather(*(run(t) for t in cfg.tasks)))
            stopper = asyncio.ensure_future(stop.wait())
            both: list[asyncio.Future[Any]] = [runner, stopper]
            await asyncio.wait(both, return_when=asyncio.FIRST_COMPLETED)
            stopper.cancel()
            if not runner.done():
                log.warning("run_interrupted")
                runner.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await runner
            for task in cfg.tasks:
                reports.setdefault(
                    task.id,
                    CallReport(
                        status="cancelled",
                        error={"type": "CallCancelled", "message": "run was interrupted"},
                        agent=task.agent,
                    ),
                )
            code = EXIT_OK if all(r.status == "ok" for r in reports.values()) else EXIT_FAILED
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    ok = sum(r.status == "ok" for r in reports.values())
    log.info("run_finished", run_id=run_id, tasks=len(reports), ok=ok, failed=len(reports) - ok)
    if output is not None:
        doc = {"run_id": run_id, "tasks": {t.id: reports[t.id] for t in cfg.tasks}}
        _write_results(output, msgspec.json.format(msgspec.json.encode(doc)) + b"\n")
    return code


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
        except ConfigError as exc:
            print(f"agentrt: config error: {exc}", file=sys.stderr)
            return EXIT_CONFIG
        try:
            return asyncio.run(_supervise(cfg, args.output))
        except KeyboardInterrupt:
            return 130
    return EXIT_CONFIG


if __name__ == "__main__":
    sys.exit(main())
