"""``agentrt doctor``: which isolation features this machine offers, and what each
sandbox profile would enforce on it."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agentrt import __version__
from agentrt.cli.common import EXIT_CONFIG, EXIT_OK, Subparsers
from agentrt.deathwatch import DeathWatch
from agentrt.errors import AgentrtError

__all__ = ["add_parser", "command"]


def add_parser(sub: Subparsers) -> None:
    """The ``doctor`` subcommand."""
    dp = sub.add_parser(
        "doctor",
        help="show which isolation features this machine offers",
        description=(
            "Probe pidfd, namespaces, Landlock, cgroups and rlimits, and say what each "
            "sandbox profile would enforce on this machine.  With a CONFIG whose "
            '[supervisor] backend is "ray" (or --ray ADDRESS), the Ray cluster too: '
            "its nodes, CPUs and memory."
        ),
        epilog="exit status: 0; 2 when the config is invalid or the Ray cluster cannot be reached",
    )
    dp.add_argument("config", nargs="?", type=Path, help="a config.toml (its backend)")
    dp.add_argument(
        "--ray",
        metavar="ADDRESS",
        help='report this Ray cluster ("auto", "local", "ray://host:port" or "host:port")',
    )


_RLIMITS = {
    "memory (RLIMIT_AS)": "AS",
    "cpu_time (RLIMIT_CPU)": "CPU",
    "open_files (RLIMIT_NOFILE)": "NOFILE",
    "processes (RLIMIT_NPROC)": "NPROC",
    "file_size (RLIMIT_FSIZE)": "FSIZE",
    "core dumps (RLIMIT_CORE)": "CORE",
}


def _fmt_limit(v: int) -> str:
    return "unlimited" if v < 0 else str(v)


def _table(rows: Sequence[tuple[str, ...]], indent: str = "  ") -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for r in rows:
        cells = [c.ljust(w) for c, w in zip(r[:-1], widths, strict=False)]
        print((indent + "  ".join([*cells, r[-1]])).rstrip())


def _features(caps: dict[str, Any]) -> list[tuple[str, str, str]]:
    """``sandbox.probe()`` as rows: feature, yes/no, what it gives or why not."""
    cg = caps["cgroup"]
    ctrls = ", ".join(sorted(cg["controllers"]))
    cg_detail = f"v{cg['version']}: {ctrls} writable" if cg["controllers"] else "none usable"
    if cg["why"]:
        cg_detail += f" ({cg['why']})"
    abi = caps["landlock_abi"]
    interp = caps["interpreter"]
    if interp["unreadable"]:
        interp_detail = f"{interp['unreadable']} unreadable: run_as agents cannot import from it"
    elif interp["blocked"] and caps["mount_ns"]:
        interp_detail = (
            f"below {interp['blocked']} (closed): run_as re-opens it in a mount namespace"
        )
    elif interp["blocked"]:
        interp_detail = f"below {interp['blocked']} (closed) and no mount namespace: run_as fails"
    else:
        interp_detail = "run_as replicas import as usual"

    def yn(ok: object) -> str:
        return "yes" if ok else "no"

    watch = DeathWatch()
    early = watch.on
    watch.close()  # (nothing is made before a page is taken)
    return [
        ("feature", "here", "what it gives"),
        ("pidfd", yn(caps["pidfd"]), "exits observed without pid-reuse races"),
        (
            "early death notice",
            yn(early),
            "a replica's death noticed as it begins (robust futex, futex_waitv)"
            if early
            else f"deaths noticed once the kernel freed the memory ({watch.why_off})",
        ),
        (
            "user namespace",
            yn(caps["user_ns"]),
            "unprivileged confinement" if caps["user_ns"] else caps["user_ns_error"],
        ),
        (
            "network namespace",
            yn(caps["net_ns"]),
            f'network = "none" ({caps["net_ns"]})' if caps["net_ns"] else caps["net_ns_error"],
        ),
        (
            "landlock",
            yn(abi),
            f"filesystem allowlists; a domain per replica: no ptrace or /proc/<pid>/fd "
            f"outside its tree (ABI {abi})"
            if abi
            else "not in this kernel: replicas of default may open each other's /proc/<pid>/fd",
        ),
        (
            "landlock scoping",
            yn(caps["landlock_scope"]),
            "signals and abstract unix sockets stay in a replica's tree"
            if caps["landlock_scope"]
            else f"needs ABI 6: strict cannot confine signals here (ABI {abi})",
        ),
        (
            "pid namespace",
            yn(caps["pid_ns"]),
            "not used: the Landlock domain and scopes refuse the same per replica"
            if caps["pid_ns"]
            else caps["pid_ns_error"],
        ),
        ("no_new_privs", yn(caps["no_new_privs"]), "no privilege gain through exec"),
        ("dumpable", "yes", "PR_SET_DUMPABLE 0: /proc/<pid> of a confined replica owned by root"),
        ("cgroups", yn(cg["controllers"]), cg_detail),
        (
            "root",
            yn(caps["root"]),
            "run_as and cgroups may be used"
            if caps["root"]
            else "run_as needs root; RLIMIT_NPROC applies",
        ),
        (
            "mount namespace",
            yn(caps["mount_ns"]),
            "run_as reaches an interpreter below a closed directory"
            if caps["mount_ns"]
            else caps["mount_ns_error"],
        ),
        (
            "interpreter for any uid",
            yn(not interp["blocked"] and not interp["unreadable"]),
            interp_detail,
        ),
    ]


def _ray_address(args: argparse.Namespace) -> str | None:
    """The Ray cluster to report: ``--ray``, or the config's when its backend is ray."""
    if args.ray is not None:
        return str(args.ray)
    if args.config is None:
        return None
    from agentrt.config import load_config

    spec = load_config(args.config).supervisor
    return spec.address if spec.backend == "ray" else None


def _ray_report(address: str) -> int:
    from agentrt.backends.ray import cluster_summary

    print(f"ray cluster ({address}):")
    try:
        summary = cluster_summary(address)
    except Exception as exc:  # not installed, not reachable
        print(f"  cannot reach it: {type(exc).__name__}: {exc}")
        return EXIT_CONFIG
    nodes = summary["nodes"]
    cpus = sum(n["cpus"] for n in nodes)
    mem = sum(n["memory"] for n in nodes)
    print(f"  ray {summary['ray']}: {len(nodes)} node(s), {cpus:g} CPUs, {mem / 2**30:.1f} GiB")
    _table(
        [
            (n["node"], n["ip"], f"{n['cpus']:g} CPUs", f"{n['memory'] / 2**30:.1f} GiB")
            for n in nodes
        ]
    )
    return EXIT_OK


def command(args: argparse.Namespace) -> int:
    """``agentrt doctor``: the probe, the rlimits, each profile explained, the Ray cluster."""
    from agentrt import sandbox
    from agentrt.config import load_sandbox, sandbox_names

    try:
        address = _ray_address(args)
    except AgentrtError as exc:
        print(f"agentrt doctor: {exc}", file=sys.stderr)
        return EXIT_CONFIG

    print(f"agentrt {__version__} on Linux {os.uname().release} ({os.uname().machine})")
    caps = sandbox.probe()
    print("isolation features (sandbox probe):")
    _table(_features(caps))
    print("rlimits (soft / hard; a replica may always lower them):")
    rl = caps["rlimits"]
    _table(
        [
            (label, f"{_fmt_limit(rl[k][0])} / {_fmt_limit(rl[k][1])}")
            for label, k in _RLIMITS.items()
        ]
    )
    print("profiles (what each would enforce here):")
    for name in sorted(sandbox_names([], [])):
        print(f"  {name}:")
        try:
            _table(list(sandbox.explain(load_sandbox(name)[0])), "    ")
        except AgentrtError as exc:
            print(f"    cannot load: {exc}")
    if address is not None:
        return _ray_report(address)
    return EXIT_OK
