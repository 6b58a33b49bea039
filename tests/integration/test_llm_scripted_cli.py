"""``python -m agentrt.llm.scripted``: the scripted model served from the command line."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from pathlib import Path

from agentrt.llm import OpenAIChat


async def ask(base_url: str) -> list[tuple[str, str]]:
    async with OpenAIChat("any", base_url=base_url, max_retries=0) as model:
        one = await model.complete([{"role": "user", "content": "hi"}])
        two = await model.complete([{"role": "user", "content": "again"}])
    return [(one.text, one.model), (two.text, two.model)]


def test_the_command_serves_a_script_until_sigterm(tmp_path: Path) -> None:
    script = tmp_path / "script.json"
    script.write_text(json.dumps([{"text": "first"}, {"text": "second"}]))
    proc = subprocess.Popen(
        [sys.executable, "-m", "agentrt.llm.scripted", "--script", str(script), "--name", "demo"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("scripted model (not a real model) listening on http://127.0.0.1:")
        base_url = line.rsplit(" ", 1)[1].strip()
        assert asyncio.run(ask(base_url)) == [
            ("first", "scripted:demo"),
            ("second", "scripted:demo"),
        ]
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
        assert proc.returncode == 0, err
        assert "scripted model stopped" in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_a_bad_script_is_refused_naming_it(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"not": "a list"}')
    proc = subprocess.run(
        [sys.executable, "-m", "agentrt.llm.scripted", "--script", str(bad)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2
    assert "--script" in proc.stderr and "JSON list of replies" in proc.stderr
