"""The live view's keys on a real supervisor: ``a`` approves the selected call
(the audit log names the live view), ``p`` pauses the run and ``p`` again
resumes it."""

from __future__ import annotations

import asyncio
import io
import os
import re
from collections.abc import Callable
from typing import Any

from rich.console import Console

from agentrt import AgentSpec, Supervisor
from agentrt.live import LiveView


def _text(view: LiveView) -> str:
    buf = io.StringIO()
    Console(file=buf, width=160, color_system=None).print(view.render())
    return buf.getvalue()


async def test_keys_approve_the_selected_call_and_pause_and_resume_the_run(
    make_supervisor: Callable[..., Supervisor], agent_spec: Callable[..., AgentSpec]
) -> None:
    view = LiveView(Console(file=io.StringIO()))
    async with make_supervisor() as sup:
        await sup.start(agent_spec("echo", "agents:echo", approval="required"))
        call: asyncio.Future[Any] = sup.submit("echo", {"text": "hi"})
        async with view.attached(sup):
            (pending,) = sup.approvals()
            text = _text(view)  # sampled when attached: no event needed
            assert "pending approvals" in text
            assert re.search(rf"^>\s+{pending.id}\s", text, re.M)  # selected
            assert "text='hi'" in text

            view.keypress(b"a", sup)
            async with asyncio.timeout(10):
                assert await call == {"text": "hi"}
            (approved,) = [e for e in sup.audit() if e.action == "approved"]
            assert approved.approval == pending.id
            assert (approved.by.via, approved.by.uid, approved.by.pid) == (
                "live",
                os.getuid(),
                os.getpid(),
            )
            assert "pending approvals" not in _text(view)

            view.keypress(b"p", sup)
            await view.settled()
            assert "run" in sup.paused()
            assert {s.state for s in await sup.status()} == {"paused"}
            assert "- run paused" in _text(view)
            (paused,) = [e for e in sup.audit() if e.action == "pause"]
            assert (paused.target, paused.by.via) == ("run", "live")

            view.keypress(b"p", sup)
            await view.settled()
            assert sup.paused() == []
            assert "paused" not in {s.state for s in await sup.status()}
            assert "- run paused" not in _text(view) and "run resumed" in _text(view)
