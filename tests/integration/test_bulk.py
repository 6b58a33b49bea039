"""A bulk map: many items to a frame, each item still a call of its own.

Each test first runs a map of quick items so that the agent's item time is
measured: the items of the map under test then go many to a frame.
"""

from __future__ import annotations

import asyncio

import pytest

from agentrt import Limits
from agentrt.errors import (
    AgentCrashed,
    CallCancelled,
    CallTimeout,
    EncodeError,
    LimitExceeded,
    ProtocolViolation,
    RemoteError,
)


async def _warm(sup, name, n=300):
    """Quick items first: the agent's item time is measured, chunks grow."""
    got = await sup.map(name, [{"i": -1}] * n)
    assert len(got) == n


async def test_a_map_of_quick_items_goes_many_to_a_frame(make_supervisor, agent_spec):
    async with make_supervisor() as sup:
        await sup.start(agent_spec("c", "agents:chunk_of", replicas=2))
        await _warm(sup, "c")
        got = await sup.map("c", [{"i": i} for i in range(2000)])
        assert [g["i"] for g in got] == list(range(2000))
        calls = {g["call"] for g in got}
        # Many items to one call (a chunk): far fewer calls than items.
        assert len(calls) <= 2000 // 4
        assert len({g["pid"] for g in got}) == 2  # both replicas served
        # A call of its own still goes one to a frame.
        assert (await sup.call("c", {"i": 7}))["call"] not in calls


async def test_an_agent_running_calls_side_by_side_gets_quick_items_many_to_a_frame(
    make_supervisor, agent_spec
):
    async with make_supervisor() as sup:
        await sup.start(agent_spec("c", "agents:achunk_of", replicas=2, concurrency=4))
        await _warm(sup, "c")
        got = await sup.map("c", [{"i": i} for i in range(2000)])
        assert [g["i"] for g in got] == list(range(2000))
        assert len({g["call"] for g in got}) <= 2000 // 4
        assert len({g["pid"] for g in got}) == 2


async def test_an_item_that_waits_ends_its_chunk_so_that_the_next_do_not_wait_for_it(
    make_supervisor, agent_spec
):
    async with make_supervisor() as sup:
        await sup.start(agent_spec("c", "agents:achunk_of", concurrency=8))
        await _warm(sup, "c")  # quick items: the next chunks carry several
        waiting = list(range(10, 18))
        items = [{"i": i, "wait_at": waiting, "seconds": 0.3} for i in range(40)]
        got = await sup.map("c", items)
        assert [g["i"] for g in got] == list(range(40))
        assert len({g["call"] for g in got[:10]}) < 10  # they went many to a frame
        # Each item that waited ended its chunk: no later item shared its call
        # (queued behind it in one slot), so the next waiting items went out
        # again and could wait beside it, as calls of their own would.
        for w in waiting:
            assert all(g["call"] != got[w]["call"] for g in got[w + 1 :]), w


async def test_a_violation_is_blamed_on_a_running_chunk_not_on_one_queued_behind_it(
    make_supervisor, agent_spec
):
    async with make_supervisor() as sup:
        # Not warmed: one item to a chunk, six out (two running, four queued).
        await sup.start(agent_spec("h", "agents:aforge_rest", concurrency=2, queue=4))
        got = await sup.map("h", [{"i": i, "at": 0} for i in range(6)], return_exceptions=True)
        assert isinstance(got[0], ProtocolViolation) and "early" in str(got[0])
        # Item 1 ran beside it, and may fail with it; those queued never ran,
        # and are served by the replacement.
        assert [g["i"] for g in got[2:]] == [2, 3, 4, 5]
        assert len({g["pid"] for g in got[2:]}) == 1


async def test_an_item_that_raises_fails_alone(make_supervisor, agent_spec):
    async with make_supervisor() as sup:
        await sup.start(agent_spec("f", "agents:item"))
        await _warm(sup, "f")
        items = [{"i": i, "fail_at": 5} for i in range(20)]
        got = await sup.map("f", items, return_exceptions=True)
        assert isinstance(got[5], RemoteError) and "item 5 fails" in str(got[5])
        assert [g["i"] for k, g in enumerate(got) if k != 5] == [i for i in range(20) if i != 5]
        assert len({g["pid"] for k, g in enumerate(got) if k != 5}) == 1  # no restart
        with pytest.raises(RemoteError, match="item 5 fails"):
            await sup.map("f", items)
        assert await sup.map("f", [{"i": 1}, {"i": 2}]) == [
            {"i": 1, "pid": got[0]["pid"]},
            {"i": 2, "pid": got[0]["pid"]},
        ]


async def test_a_death_blames_the_item_it_ran_and_the_rest_are_served(make_supervisor, agent_spec):
    async with make_supervisor() as sup:
        await sup.start(agent_spec("d", "agents:item"))
        await _warm(sup, "d")
        first = (await sup.call("d", {"i": 0}))["pid"]
        got = await sup.map(
            "d", [{"i": i, "crash_at": 5} for i in range(20)], return_exceptions=True
        )
        assert isinstance(got[5], AgentCrashed)
        # Answered before the death: kept.  After it: never ran, sent again
        # to the replacement, not failed with it.
        assert [g["pid"] for g in got[:5]] == [first] * 5
        later = {g["pid"] for g in got[6:]}
        assert len(later) == 1 and first not in later
        assert [g["i"] for g in got[6:]] == list(range(6, 20))


async def test_retries_apply_to_the_item_that_died(make_supervisor, agent_spec, tmp_path):
    marker = tmp_path / "crashed"
    async with make_supervisor() as sup:
        await sup.start(agent_spec("d", "agents:item", retries=1))
        await _warm(sup, "d")
        items = [{"i": i, "crash_at": 5, "marker": str(marker)} for i in range(20)]
        got = await sup.map("d", items)
        assert [g["i"] for g in got] == list(range(20))
        assert got[5]["pid"] != int(marker.read_text())  # served by the replacement
        assert [r.restarts for r in await sup.status() if r.agent == "d"] == [1]


async def test_the_deadline_ends_the_items_not_answered(make_supervisor, agent_spec):
    async with make_supervisor() as sup:
        await sup.start(agent_spec("s", "agents:item"))
        await _warm(sup, "s")
        items = [{"i": i, "sleep_at": 5} for i in range(20)]
        got = await sup.map("s", items, timeout=1.0, return_exceptions=True)
        assert [g["i"] for g in got[:5]] == list(range(5))
        assert all(isinstance(g, CallTimeout) for g in got[5:])
        # The replica stays (it ended the sleeping item itself).
        assert await sup.call("s", {"i": 1}) == {"i": 1, "pid": got[0]["pid"]}


async def test_an_item_over_a_limit_fails_alone_and_the_replica_is_replaced(
    make_supervisor, agent_spec
):
    async with make_supervisor() as sup:
        await sup.start(agent_spec("m", "agents:item", limits=Limits(memory="256MiB")))
        await _warm(sup, "m")
        got = await sup.map("m", [{"i": i, "hog_at": 5} for i in range(20)], return_exceptions=True)
        assert isinstance(got[5], LimitExceeded) and got[5].limit == "memory"
        assert len({g["pid"] for g in got[:5]}) == 1
        later = {g["pid"] for g in got[6:]}
        assert len(later) == 1 and later != {got[0]["pid"]}
        assert [g["i"] for g in got[6:]] == list(range(6, 20))


# An item answered twice is out of turn too: tests/unit/test_parts.py.
# So is a chunk ended early by a replica that runs one call at a time (``rest``;
# an async replica ends one only after an item, which the supervisor checks).
@pytest.mark.parametrize("what", ["part", "result", "rest"])
async def test_answers_out_of_turn_are_a_protocol_violation(make_supervisor, agent_spec, what):
    async with make_supervisor() as sup:
        await sup.start(agent_spec("h", "agents:forge_answer"))
        await _warm(sup, "h")
        items = [{"i": i, "at": 3, "what": what} for i in range(12)]
        got = await sup.map("h", items, return_exceptions=True)
        assert isinstance(got[3], ProtocolViolation)
        said = {"part": "out of turn", "result": "answered after", "rest": "one call at a time"}
        assert said[what] in str(got[3])
        assert [g["i"] for k, g in enumerate(got) if k != 3] == [i for i in range(12) if i != 3]
        assert all(g != "x" for g in got)


async def test_an_item_that_cannot_be_sent_fails_alone(make_supervisor, agent_spec):
    async with make_supervisor() as sup:
        await sup.start(agent_spec("e", "agents:item"))
        await _warm(sup, "e")
        items = [{"i": i} for i in range(20)]
        items[7] = {"i": object()}
        got = await sup.map("e", items, return_exceptions=True)
        assert isinstance(got[7], EncodeError)
        assert [g["i"] for k, g in enumerate(got) if k != 7] == [i for i in range(20) if i != 7]
        with pytest.raises(EncodeError):
            await sup.map("e", items)


async def test_cancelling_a_map_cancels_the_item_running(make_supervisor, agent_spec):
    async with make_supervisor() as sup:
        # A long cancel_grace: the replica itself must end the sleeping item.
        await sup.start(agent_spec("s", "agents:aitem", cancel_grace=30))
        await _warm(sup, "s")
        task = asyncio.create_task(sup.map("s", [{"i": i, "sleep_at": 0} for i in range(8)]))
        # Its chunks are in the replica (sent as the map starts).
        await asyncio.sleep(0)
        assert [r.inflight >= 1 for r in await sup.status() if r.agent == "s"] == [True]
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        got = await sup.call("s", {"i": 1})
        assert got["i"] == 1
        assert [(r.restarts, r.inflight) for r in await sup.status() if r.agent == "s"] == [(0, 0)]


async def test_a_sync_replica_reads_its_cancel_between_items(
    make_supervisor, agent_spec, make_gate
):
    report = make_gate("report")
    async with make_supervisor() as sup:
        # The 10 items take a second; the replica is killed if it has not
        # answered the Cancel within 0.3 s (it reads it after the item running).
        await sup.start(agent_spec("s", "agents:slow_item", cancel_grace=0.3))
        await _warm(sup, "s")
        items = [{"i": i, "seconds": 0.1, "report": report.path} for i in range(10)]
        task = asyncio.create_task(sup.map("s", items))
        assert await report.read_line() == "started"
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        pid = (await sup.call("s", {"i": 1}))["pid"]
        assert [(r.pid, r.restarts) for r in await sup.status() if r.agent == "s"] == [(pid, 0)]


async def test_a_slow_method_is_not_chunked_by_a_quick_ones_time(make_supervisor, agent_spec):
    async with make_supervisor() as sup:
        await sup.start(agent_spec("x", "agents:Mixed"))
        quick = await sup.map("x", [{"i": i} for i in range(300)], method="quick")
        assert len(set(quick)) < 300 // 4  # measured quick: many to a frame
        # The slow method has no time of its own yet: one item to a frame.
        slow = await sup.map("x", [{"i": i} for i in range(6)], method="slow")
        assert len(set(slow)) == 6


async def test_cancelling_the_agents_calls_ends_the_map(make_supervisor, agent_spec, make_gate):
    report = make_gate("report")
    async with make_supervisor() as sup:
        # Not measured: one item to a chunk, five chunks out, the rest not
        # sent.  The item running answers after its Cancel (within the grace).
        await sup.start(agent_spec("s", "agents:slow_item", cancel_grace=5))
        items = [{"i": i, "seconds": 0.3, "report": report.path} for i in range(20)]
        task = asyncio.create_task(sup.map("s", items, return_exceptions=True))
        assert await report.read_line() == "started"
        await sup.cancel("s", scope="agent")
        got = await task
        # The item running ends cancelled although its answer comes after;
        # the items not sent yet are cancelled with the agent's calls.
        assert all(isinstance(g, CallCancelled) for g in got)
        assert (await sup.call("s", {"i": 1}))["i"] == 1


async def test_a_pause_of_the_agent_moves_the_maps_deadline(make_supervisor, agent_spec, make_gate):
    report = make_gate("report")
    async with make_supervisor() as sup:
        await sup.start(agent_spec("s", "agents:slow_item"))
        items = [{"i": i, "seconds": 0.02, "report": report.path} for i in range(12)]
        task = asyncio.create_task(sup.map("s", items, timeout=1.0))
        assert await report.read_line() == "started"
        await sup.pause("s")
        await asyncio.sleep(1.5)  # longer than the map's whole timeout
        await sup.resume("s")
        assert [g["i"] for g in await task] == list(range(12))


async def test_an_item_answered_after_its_call_was_cancelled_keeps_its_outcome(
    make_supervisor, agent_spec, make_gate
):
    report = make_gate("report")
    async with make_supervisor() as sup:
        await sup.start(agent_spec("s", "agents:first_slow", cancel_grace=5))
        items = [{"i": i, "report": report.path} for i in range(20)]
        task = asyncio.create_task(sup.map("s", items, return_exceptions=True))
        call = await report.read_line()
        assert await sup.cancel(call) == [call]
        got = await task
        # Item 0's answer came after the cancel: counted once, as cancelled;
        # the map still waits for and returns every other item.
        assert isinstance(got[0], CallCancelled)
        assert [g["i"] for g in got[1:]] == list(range(1, 20))
