"""The literature-review demo end to end: `agentrt supervise` as a real subprocess.

A planner, researchers fanned out over a real corpus (``pydoc_data.topics``),
a writer, an agent that crashes once and one that hits its memory limit: the
run still exits 0 and the report cites real topics.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from pydoc_data.topics import topics
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "examples" / "literature_review" / "config.toml"


def _agentrt() -> list[str]:
    """The installed ``agentrt`` script next to this interpreter (or ``-m agentrt.cli``)."""
    script = Path(sys.executable).with_name("agentrt")
    return [str(script)] if script.exists() else [sys.executable, "-m", "agentrt.cli"]


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


def test_literature_review_demo_writes_a_cited_report(tmp_path: Path) -> None:
    results = tmp_path / "r.json"
    # Started in tmp_path (while $PWD still names the directory pytest was
    # started in): the report must land relative to the supervisor's cwd.
    env = {k: v for k, v in os.environ.items() if k != "AGENTRT_LAUNCH_DIR"}
    proc = subprocess.run(
        [
            *_agentrt(),
            "supervise",
            str(CONFIG),
            "--output",
            str(results),
            "--no-live",
            "--log-format",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]

    doc = json.loads(results.read_text())
    assert doc["status"] == "ok"
    tasks = doc["tasks"]
    assert all(t["status"] == "ok" for t in tasks.values()), {
        k: (t["status"], t["error"]) for k, t in tasks.items()
    }

    # the planner's sub-questions, one researcher task each
    subs = tasks["plan"]["result"]["subquestions"]
    assert 4 <= len(subs) <= 6
    assert all(s["query"] for s in subs)
    children = [tasks[f"research[{i}]"] for i in range(len(subs))]
    assert all(c["result"]["tool_calls"] >= 3 for c in children)
    assert len({c["pid"] for c in children}) > 1  # spread over replicas

    # the report: written relative to the launch directory, citing real topics
    report = tasks["report"]["result"]
    path = tmp_path / "out" / "literature_review.md"
    assert report["path"] == str(path)
    text = path.read_text(encoding="utf-8")
    assert text == report["markdown"]
    cited = set(re.findall(r"\[topic: ([\w-]+)\]", text))
    real = cited & set(topics)
    assert len(real) >= 3, cited
    assert cited == real
    assert "## References" in text
    assert {"with", "context-managers", "exceptions"} <= real

    # the flaky agent crashed once; its call ran again on the restarted replica
    stats = tasks["stats"]
    assert stats["agent"] == "flaky"
    assert stats["attempts"] == 2
    assert stats["result"]["topics"] == len(topics)

    # the hog hit its memory limit; the monitor caught the typed error
    health = tasks["health"]["result"]
    assert health["hog"] == "limit"
    assert health["limit"] == "memory"
    events = _events(proc.stderr)
    died = [e for e in events if e.get("event") == "replica_died"]
    assert any(e.get("agent") == "hog" and e.get("limit") == "memory" for e in died), died
    assert any(e.get("agent") == "flaky" and e.get("cause") == "AgentCrashed" for e in died), died
