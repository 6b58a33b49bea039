"""``agentrt bench``: run the benchmarks of a source checkout (benchmarks/) in one go."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from agentrt.cli.common import EXIT_CONFIG, EXIT_FAILED, EXIT_OK, Subparsers

__all__ = ["add_parser", "command"]


def add_parser(sub: Subparsers) -> None:
    """The ``bench`` subcommand and its options."""
    bp = sub.add_parser(
        "bench",
        help="measure what isolation costs, against the runtimes you would pick instead",
        description=(
            "Run the benchmarks of a source checkout (benchmarks/: core, swarm, peers) in one "
            "go; peers that are not installed (pip install 'agentrt[bench]') are skipped with "
            "a note. Each figure is a median with min-max, peers as ratios to agentrt."
        ),
        epilog="exit status: 0 all benchmarks ran, 1 one failed, 2 no benchmarks/ here",
    )
    bp.add_argument("--quick", action="store_true", help="fewer repetitions, smaller N")
    bp.add_argument(
        "--only",
        metavar="NAME",
        help="comma-separated subset: core, swarm, peers, journal, llm",
    )
    bp.add_argument(
        "--json",
        type=Path,
        metavar="DIR",
        default=Path("out"),
        help="directory for the JSON results (default: out)",
    )
    bp.add_argument("--png", type=Path, metavar="FILE", help="also draw the headline ratios here")


_BENCHES = ("core", "swarm", "peers", "journal", "llm", "ray")


def command(args: argparse.Namespace) -> int:
    """``agentrt bench``: each benchmark script in turn, then the report."""
    import subprocess

    # the benchmarks are scripts of the source tree, not part of the installed package
    bench_dir = Path(__file__).resolve().parents[2] / "benchmarks"
    if not bench_dir.is_dir():
        print(
            "agentrt: bench: needs a source checkout: the benchmarks (benchmarks/) are not "
            "part of the installed package. In a checkout of agentrt, run `make bench` "
            "(or `pip install -e '.[bench]'`, then `agentrt bench`).",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    names = _BENCHES if not args.only else tuple(n.strip() for n in args.only.split(","))
    unknown = [n for n in names if n not in _BENCHES]
    if unknown:
        print(
            f"agentrt: bench: --only: unknown {', '.join(unknown)} "
            f"(choose from {', '.join(_BENCHES)})",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    if args.json.exists() and not args.json.is_dir():
        print(
            f"agentrt: bench: --json: {args.json} is a file: give a directory "
            "(the results are written there as bench_<name>.json)",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    try:
        args.json.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        print(
            f"agentrt: bench: --json: cannot create the directory {args.json}: "
            f"{exc.strerror or exc}",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    code = EXIT_OK
    for name in names:
        script = bench_dir / f"bench_{name}.py"
        if not script.exists():
            print(f"agentrt: bench: {script.name} is missing, skipped", file=sys.stderr)
            continue
        cmd = [sys.executable, str(script), "--json", str(args.json / f"bench_{name}.json")]
        if args.quick:
            cmd.append("--quick")
        if subprocess.run(cmd, check=False).returncode != 0:
            code = EXIT_FAILED
    report = bench_dir / "report.py"
    if args.png is not None and report.exists():
        # report.py draws <dir>/bench.png (and the Markdown table) from the JSON files
        cmd = [sys.executable, str(report), "--out", str(args.json)]
        if subprocess.run(cmd, check=False).returncode != 0:
            code = EXIT_FAILED
        else:
            drawn = args.json / "bench.png"
            if drawn.resolve() != args.png.resolve():
                import shutil

                shutil.copyfile(drawn, args.png)
    return code
