"""Turn the benchmark JSON files into a chart and a Markdown results table.

Reads ``out/bench_peers.json`` (``benchmarks/bench_peers.py --json``) and,
when present, ``out/bench_core.json`` and ``out/bench_swarm.json``; writes

- ``out/bench.png``: the headline ratios, each peer's figure / agentrt's
  (zygote), as bars on a log scale (above 1: agentrt is ahead; throughput
  and memory are turned so that this holds for every bar);
- ``out/bench_table.md``: the results as Markdown tables, also printed.

``--readme README.md`` replaces the text between ``<!-- bench:begin -->``
and ``<!-- bench:end -->`` in that file with the table (only when both
markers are there; nothing is added otherwise).

Usage::

    python benchmarks/report.py [--out out] [--readme README.md] [--no-png]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from common import get

REF = "agentrt-zygote"
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"
PEERS = [
    "agentrt-spawn",
    "asyncio",
    "threads",
    "process-pool",
    "mp-pool",
    "loky",
    "pebble",
    "ray-tasks",
    "ray-actors",
]
#: agentrt-zygote's agents with ``standby = true`` (crash figures only)
STANDBY = "agentrt-zygote+standby"
ORDER = ["floor-pipe", "floor-asyncio", "floor-fork", "floor-minimal", REF, STANDBY, *PEERS]


def _load(path: Path) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data


# --- headline metrics: (label, getter, lower_is_better) -----------------------------------

Metric = tuple[str, list[str], bool]
HEADLINES: list[Metric] = [
    ("round trip p50", ["rtt", "{n}", "p50_us"], True),
    ("tasks one by one", ["tasks", "{n}", "one_by_one_us", "median"], True),
    ("tasks in bulk", ["tasks", "{n}", "bulk_us", "median"], True),
    ("echo 1 MiB (time)", ["payload", "{n}", "1 MiB", "MBps", "median"], False),
    ("start N=50", ["startup", "{n}", "50", "ready_s", "median"], True),
    ("PSS per worker", ["pss", "{n}", "pss_mib", "mean"], True),
    ("crash to error (kill)", ["crash", "{n}", "kill", "error_ms", "median"], True),
    ("crash to replaced (kill)", ["crash", "{n}", "kill", "replaced_ms", "median"], True),
]


def figure(res: dict[str, Any], keys: list[str], n: str) -> float | None:
    v = get(res, *[n if k == "{n}" else k for k in keys])
    return float(v) if isinstance(v, int | float) else None


def slower(res: dict[str, Any], metric: Metric, n: str) -> float | None:
    """How many times worse than agentrt-zygote the runtime ``n`` is on ``metric``."""
    label, keys, lower = metric
    if label.startswith("echo") and n in ("asyncio", "threads"):
        return None  # no copy at all: not comparable
    v, ref = figure(res, keys, n), figure(res, keys, REF)
    if v is None or ref is None or v <= 0 or ref <= 0:
        return None
    return v / ref if lower else ref / v


def write_png(peers: dict[str, Any], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("report: matplotlib is not installed, no chart", file=sys.stderr)
        return False
    res = peers["results"]
    names = [n for n in PEERS if any(slower(res, m, n) for m in HEADLINES)]
    metrics = [m for m in HEADLINES if any(slower(res, m, n) for n in names)]
    if not names or not metrics:
        return False
    fig, ax = plt.subplots(figsize=(max(10, 1.6 * len(metrics)), 5.5), dpi=110)
    width = 0.8 / len(names)
    cmap = plt.get_cmap("tab10")
    for i, n in enumerate(names):
        xs, ys = [], []
        for j, m in enumerate(metrics):
            r = slower(res, m, n)
            if r is not None:
                xs.append(j - 0.4 + width * (i + 0.5))
                ys.append(r)
        ax.bar(xs, ys, width, label=n, color=cmap(i % 10), bottom=0)
    ax.set_yscale("log")
    ax.axhline(1.0, color="black", linewidth=1)
    ax.set_xticks(range(len(metrics)))
    ax.set_xticklabels([m[0] for m in metrics], rotation=20, ha="right")
    ax.set_ylabel("peer / agentrt-zygote  (> 1: agentrt ahead)")
    m = peers["machine"]
    ax.set_title(
        f"agentrt vs peers: {m['cores']} cores, Python {m['python']}, kernel {m['kernel']}"
        + (" (quick)" if peers.get("quick") else "")
    )
    ax.legend(fontsize=8, ncol=3)
    ax.grid(axis="y", which="both", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return True


# --- Markdown --------------------------------------------------------------------------


def md_table(head: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out


def _fmt(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def _x(res: dict[str, Any], metric: Metric, n: str) -> str:
    if n == REF:
        return ""
    r = slower(res, metric, n)
    return "" if r is None else f" ({r:.2g}x)"


def peers_markdown(peers: dict[str, Any]) -> list[str]:
    res = peers["results"]
    m = peers["machine"]
    present = [
        n
        for n in ORDER
        if (n in peers["runtimes"] or n == "floor-asyncio")
        and any(n in res.get(s, {}) for s in ("rtt", "tasks", "startup", "crash"))
    ]
    lines = [
        f"Measured side by side in one run ({'quick' if peers.get('quick') else 'full'}) on "
        f"{m['cores']} cores, Python {m['python']}, Linux {m['kernel']}. Medians; in "
        "brackets, how many times worse than agentrt (zygote) the runtime is "
        "(above 1: agentrt ahead). `benchmarks/bench_peers.py` says how each figure "
        "is taken.",
        "",
    ]
    rows = []
    for n in present:
        cells = [f"**{n}**" if n == REF else n]
        for metric, spec in zip(HEADLINES, (".0f", ".1f", ".1f", ".0f"), strict=False):
            cells.append(_fmt(figure(res, metric[1], n), spec) + _x(res, metric, n))
        st = get(res, "startup", n) or {}
        for k in ("50", "300", "1000"):
            v = get(st, k, "ready_s", "median")
            metric = ("", ["startup", "{n}", k, "ready_s", "median"], True)
            cells.append(_fmt(v, ".3f") + _x(res, metric, n))
        cells.append(_fmt(figure(res, HEADLINES[5][1], n), ".2f") + _x(res, HEADLINES[5], n))
        for what in ("error_ms", "replaced_ms"):
            v = get(res, "crash", n, "kill", what, "median")
            metric = ("", ["crash", "{n}", "kill", what, "median"], True)
            cells.append(_fmt(v, ".1f") + _x(res, metric, n))
        cells.append(str(get(res, "crash", n, "kill", "error_type") or "-"))
        rows.append(cells)
    head = [
        "runtime",
        "round trip p50 µs",
        "1-by-1 µs/task",
        "bulk µs/task",
        "echo 1 MiB MB/s",
        "start 50 s",
        "start 300 s",
        "start 1000 s",
        "PSS MiB",
        "SIGKILL→error ms",
        "→replaced ms",
        "error",
    ]
    lines += md_table(head, rows)
    lines.append("")
    # Crash modes in full.
    rows = []
    for n in present:
        for mode in ("kill", "exit", "segv"):
            e = get(res, "crash", n, mode)
            if not isinstance(e, dict):
                continue
            rows.append(
                [
                    n,
                    mode,
                    str(e.get("error_type", "-")),
                    _fmt(get(e, "error_ms", "median"), ".2f"),
                    _fmt(get(e, "replaced_ms", "median"), ".2f"),
                    str(e.get("replacement", "")),
                ]
            )
    if rows:
        lines.append("Worker death mid-call (SIGKILL, `os._exit(3)`, segfault), ms from death:")
        lines.append("")
        lines += md_table(["runtime", "death", "error", "to error", "to replaced", "note"], rows)
        lines.append("")
    # Payloads.
    rows = []
    for n in present:
        e = get(res, "payload", n)
        if not isinstance(e, dict) or "error" in e:
            continue
        cells = [n]
        for label in ("1 KiB", "64 KiB", "1 MiB", "16 MiB"):
            metric = ("", ["payload", "{n}", label, "MBps", "median"], False)
            cells.append(_fmt(get(e, label, "MBps", "median"), ",.0f") + _x(res, metric, n))
        rows.append(cells)
    if rows:
        lines.append("Echo of a `bytes` payload, MB/s (in-process runtimes pass a reference):")
        lines.append("")
        lines += md_table(["runtime", "1 KiB", "64 KiB", "1 MiB", "16 MiB"], rows)
        lines.append("")
    notes = [
        f"- {n}: {peers['runtimes'][n]['note']}"
        for n in present
        if n in peers["runtimes"] and peers["runtimes"][n]["note"]
    ]
    skipped = [
        f"- {n}: skipped, {v['note']}" for n, v in peers["runtimes"].items() if not v["available"]
    ]
    if notes or skipped:
        lines += ["Notes:", "", *notes, *skipped, ""]
    return lines


AIM_TEXT = {
    "rtt_x_floor": "round trip ≤ {b}x the raw pipe floor",
    "rtt_x_async_floor": "round trip ≤ {b}x the asyncio pipe floor",
    "ray_actor_x": "round trip ≥ {b}x faster than a Ray actor call (p50s)",
    "ready_300_s": "300 isolated agents ready in < {b} s",
    "pss_mib": "PSS per idle agent < {b} MiB",
    "crash_error_ms": "crash to typed error < {b} ms (worst death)",
    "crash_replaced_ms": "crash to served replacement < {b} ms (worst death)",
    "crash_after_error_ms": "caller's error (death noticed) to served replacement ≤ {b} ms",
    "crash_after_error_standby_ms": "… the same with `standby = true` ≤ {b} ms",
    "bulk_us": "per-task overhead in bulk < {b} µs",
    "one_by_one_x_process_pool": "one by one ≤ {b}x ProcessPoolExecutor's",
}


def aims_markdown(
    peers: dict[str, Any] | None, core: dict[str, Any] | None, swarm: dict[str, Any] | None
) -> list[str]:
    rows = []
    met = {True: "yes", False: "**no**", None: "n/a"}
    for key, a in (peers or {}).get("aims", {}).items():
        v = a.get("value")
        rows.append(
            [
                AIM_TEXT.get(key, key).format(b=a["bound"]),
                "-" if v is None else f"{v:.3g}",
                met[a.get("met")],
            ]
        )
    if core:
        r = core.get("results", {})
        s300 = get(r, "startup", "300", "ready_s", "median")
        ratio = get(r, "call", "block_ratio_p50", "median")
        pss = get(r, "pss", "pss_mib", "mean")
        ca = core.get("aims", {})
        rows.append(
            [
                "bench_core: call / floor ≤ 1.5x",
                _fmt(ratio, ".3g"),
                met[ca.get("rtt_within_1.5x_floor")],
            ]
        )
        rows.append(
            [
                "bench_core: call / asyncio floor ≤ 1.5x",
                _fmt(get(r, "call", "block_ratio_asyncio_p50", "median"), ".3g"),
                met[ca.get("rtt_within_1.5x_asyncio_floor")],
            ]
        )
        rows.append(
            [
                "bench_core: map, µs per call ≤ 10",
                _fmt(get(r, "bulk", "us_per_call", "median"), ".3g"),
                met[ca.get("bulk_within_10us")],
            ]
        )
        rows.append(
            [
                "bench_core: 300 ready < 0.5 s",
                _fmt(s300, ".3g"),
                met[ca.get("300_ready_under_0.5s")],
            ]
        )
        warm_n = get(r, "startup_warm", "replicas")
        if warm_n is not None:
            rows.append(
                [
                    f"bench_core: {warm_n} ready from {warm_n} waiting spares "
                    f"(`spares = {warm_n}`)" + (" < 0.3 s" if warm_n == 300 else ""),
                    _fmt(get(r, "startup_warm", "ready_s", "median"), ".3g"),
                    met[ca.get("300_from_waiting_spares_under_0.3s")],
                ]
            )
        rows.append(
            [
                "bench_core: 1,000 ready / minimal fork floor ≤ 6x",
                _fmt(get(r, "startup", "1000", "ratio_to_minimal_fork_floor"), ".3g"),
                met[ca.get("1000_within_6x_minimal_fork")],
            ]
        )
        rows.append(["bench_core: PSS < 3 MiB", _fmt(pss, ".3g"), met[ca.get("pss_under_3MiB")]])
    if swarm:
        r, sa = swarm.get("results", {}), swarm.get("aims", {})
        rows.append(
            [
                "bench_swarm: 1,000-agent swarm efficiency ≥ 0.9",
                _fmt(get(r, "swarm", "efficiency"), ".3g"),
                met[sa.get("swarm_efficiency_ge_0.9")],
            ]
        )
        rows.append(
            [
                "bench_swarm: … with start-up ≥ 0.8",
                _fmt(get(r, "swarm", "efficiency_with_startup"), ".3g"),
                met[sa.get("swarm_efficiency_with_startup_ge_0.8")],
            ]
        )
        rows.append(
            [
                "bench_swarm: 200-task DAG makespan ≤ 1.1x critical path",
                _fmt(get(r, "dag", "ratio_makespan"), ".3g"),
                met[sa.get("dag_within_10pct_of_critical_path")],
            ]
        )
    if not rows:
        return []
    return ["Aims (agentrt, zygote):", "", *md_table(["aim", "measured", "met"], rows), ""]


def swarm_markdown(swarm: dict[str, Any]) -> list[str]:
    r = swarm.get("results", {})
    sw, dg = r.get("swarm", {}), r.get("dag", {})
    rows = []
    if "efficiency" in sw:
        rows.append(
            [
                f"swarm: {sw.get('workers')} subagents x 13 sequential 50 ms tool calls",
                f"makespan {_fmt(get(sw, 'makespan_s', 'median'), '.3f')} s "
                f"(ideal {sw.get('ideal_s')} s), start-up {_fmt(sw.get('startup_s'), '.3f')} s",
            ]
        )
    fl = r.get("process_floor", {})
    if "efficiency" in fl and "makespan_over_floor" in sw:
        rows.append(
            [
                f"the same swarm as {sw.get('workers')} bare asyncio processes (floor)",
                f"makespan {_fmt(get(fl, 'makespan_s', 'median'), '.3f')} s, efficiency "
                f"{_fmt(fl.get('efficiency'), '.3f')}; agentrt's makespan "
                f"{_fmt(sw.get('makespan_over_floor'), '.2f')}x the floor",
            ]
        )
    seq = r.get("sequential", {})
    if "speedup" in seq:
        rows.append(
            ["same work in one asyncio process (extrapolated)", f"{seq['extrapolated_s']:.0f} s"]
        )
    if "ratio_makespan" in dg:
        rows.append(
            [
                f"DAG: {dg.get('tasks')} tasks, depth {dg.get('depth')}",
                f"makespan {_fmt(get(dg, 'makespan_s', 'median'), '.3f')} s vs critical path "
                f"{_fmt(dg.get('critical_path_s'), '.3f')} s (plain asyncio: "
                f"{_fmt(dg.get('floor_makespan_s'), '.3f')} s)",
            ]
        )
    if not rows:
        return []
    return [
        "Swarm and DAG (`benchmarks/bench_swarm.py`):",
        "",
        *md_table(["workload", "result"], rows),
        "",
    ]


def build(out: Path) -> tuple[str, dict[str, Any] | None]:
    peers = _load(out / "bench_peers.json")
    core = _load(out / "bench_core.json")
    swarm = _load(out / "bench_swarm.json")
    lines: list[str] = []
    if peers:
        lines += peers_markdown(peers)
    lines += aims_markdown(peers, core, swarm)
    if swarm:
        lines += swarm_markdown(swarm)
    return "\n".join(lines).rstrip() + "\n", peers


def splice_readme(path: Path, table: str) -> bool:
    text = path.read_text()
    i, j = text.find(BEGIN), text.find(END)
    if i < 0 or j < 0 or j < i:
        print(f"report: {path} has no {BEGIN} ... {END} markers; left as is", file=sys.stderr)
        return False
    new = text[: i + len(BEGIN)] + "\n" + table + text[j:]
    if new != text:
        path.write_text(new)
    return True


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--out", default="out", help="folder of the JSON files and outputs (out)")
    ap.add_argument("--readme", metavar="FILE", help="replace the text between the markers")
    ap.add_argument("--no-png", action="store_true", help="do not draw out/bench.png")
    args = ap.parse_args(argv)
    out = Path(args.out)
    peers = _load(out / "bench_peers.json")
    if peers is None:
        print(f"report: {out / 'bench_peers.json'} is missing or unreadable", file=sys.stderr)
        if _load(out / "bench_core.json") is None and _load(out / "bench_swarm.json") is None:
            return 1
    if peers and not args.no_png and write_png(peers, out / "bench.png"):
        print(f"report: wrote {out / 'bench.png'}", file=sys.stderr)
    table, _ = build(out)
    (out / "bench_table.md").write_text(table)
    print(table)
    print(f"report: wrote {out / 'bench_table.md'}", file=sys.stderr)
    if args.readme:
        splice_readme(Path(args.readme), table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
