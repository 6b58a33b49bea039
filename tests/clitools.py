"""Running the real `agentrt` command in the CLI tests (not a test module)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_cli(
    *args: str, timeout: float = 60, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -m agentrt.cli ARGS`` from ``cwd`` (the repository root by default),
    output captured."""
    return subprocess.run(
        [sys.executable, "-m", "agentrt.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd or ROOT,
    )


def write_project(tmp_path: Path, agents: str, config: str) -> Path:
    """An ``agents.py`` and a ``config.toml`` in ``tmp_path``; returns the config."""
    (tmp_path / "agents.py").write_text(agents)
    cfg = tmp_path / "config.toml"
    cfg.write_text(config)
    return cfg
