"""The market-research example end to end: `agentrt supervise` as a real subprocess, offline.

A coordinator model calls one researcher subagent per market, all in one
turn; each researcher is a model loop of its own, in its own process,
calling tools over the example's data set; the report cites its documents.
No ``OPENAI_*`` variable reaches the run, so the model is the scripted one
the example serves itself.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "market_research"
CONFIG = EXAMPLE / "config.toml"
MARKETS = {"EU", "Japan", "Brazil"}
SCRIPTED = "scripted model — not a real model"


def _agentrt() -> list[str]:
    """The installed ``agentrt`` script next to this interpreter (or ``-m agentrt.cli``)."""
    script = Path(sys.executable).with_name("agentrt")
    return [str(script)] if script.exists() else [sys.executable, "-m", "agentrt.cli"]


def _offline_env() -> dict[str, str]:
    """This environment without a launch dir of its own and without a model endpoint."""
    drop = {"AGENTRT_LAUNCH_DIR", "OPENAI_BASE_URL", "OPENAI_API_KEY", "OPENAI_MODEL"}
    return {k: v for k, v in os.environ.items() if k not in drop}


def _events(stderr: str) -> list[dict[str, Any]]:
    out = []
    for line in stderr.splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict):
            out.append(event)
    return out


def _overlap(spans: list[tuple[float, float]]) -> bool:
    """Some instant lies within every span."""
    return max(s for s, _ in spans) < min(e for _, e in spans)


def test_market_research_runs_offline_researchers_in_parallel_and_cites_the_data_set(
    tmp_path: Path,
) -> None:
    results, trace = tmp_path / "r.json", tmp_path / "t.json"
    proc = subprocess.run(
        [
            *_agentrt(),
            "supervise",
            str(CONFIG),
            "--output",
            str(results),
            "--trace",
            str(trace),
            "--no-live",
            "--log-format",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env=_offline_env(),
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    doc = json.loads(results.read_text())
    assert doc["status"] == "ok"
    out = doc["tasks"]["recommend"]["result"]

    # The coordinator's model called a researcher per market in its first turn ...
    assert out["loop"]["calls_per_turn"][0] == ["researcher"] * 3
    assert out["loop"]["stop"] == "final"
    research = out["research"]
    assert {r["market"] for r in research} == MARKETS
    # ... and they ran at once, each in a process of its own,
    assert len({r["pid"] for r in research}) == 3
    assert _overlap([(r["start"], r["end"]) for r in research])
    # each driving its own model, which called several tools in one turn.
    for r in research:
        assert len(r["loop"]["calls_per_turn"][0]) > 1, r["loop"]
        assert r["loop"]["stop"] == "final"

    # The trace shows the same: the researcher calls overlap, and every model
    # call of every loop is a span of its own, on the scripted model.
    events = json.loads(trace.read_text())["traceEvents"]
    spans = [e for e in events if e.get("ph") == "X" and "target" in e.get("args", {})]
    researchers = [
        (e["ts"], e["ts"] + e["dur"]) for e in spans if e["args"]["target"] == "researcher"
    ]
    assert len(researchers) == 3
    assert _overlap(researchers)
    model_calls = [e["args"]["target"] for e in spans if e["args"]["target"].startswith("model:")]
    assert len(model_calls) == out["loop"]["turns"] + sum(r["loop"]["turns"] for r in research)
    assert set(model_calls) == {"model:scripted:market-analyst"}

    # The report: where the results say, naming the markets, citing real documents.
    path = tmp_path / "out" / "market_research.md"
    assert out["report"] == str(path)
    text = path.read_text(encoding="utf-8")
    assert all(m in text for m in MARKETS)
    data = json.loads((EXAMPLE / "data" / "documents.json").read_text(encoding="utf-8"))
    known = {d["id"]: d["market"] for d in data["documents"]}
    cited = set(re.findall(r"\[([a-z]{2}-[a-z]+)\]", text))
    assert cited
    assert cited <= set(known), cited - set(known)
    assert {known[c] for c in cited} == MARKETS  # every market's findings are sourced
    assert "## Sources" in text
    assert set(out["sources"]) <= set(known)
    assert out["summary"]
    assert any(m in out["summary"] for m in MARKETS)

    # The scripted model says what it is: in the report, the results and the logs.
    assert SCRIPTED in text
    assert out["scripted"] is True
    assert SCRIPTED in out["model"]
    served = [e for e in _events(proc.stderr) if e.get("event") == "scripted_model_serving"]
    assert served
    assert SCRIPTED in served[0]["model"]
