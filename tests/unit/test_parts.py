"""The items of a many-item call are answered in turn, each once, none beyond."""

from __future__ import annotations

from typing import Any

import pytest

from agentrt.supervisor.ledger import UNLIMITED, Call, Parts
from agentrt.supervisor.pool import Pool


class _Sink:
    def part(self, pos: int, value: Any) -> None: ...

    def part_failed(self, pos: int, error: Any) -> None: ...


def _call(n: int) -> Call[Any]:
    call: Call[Any] = Call(1, "a", "", b"", None, None, 0, None, UNLIMITED)  # type: ignore[arg-type]
    call.parts = Parts([{}] * n, 10, _Sink())
    return call


def test_items_are_taken_in_turn_and_none_past_the_last() -> None:
    call = _call(2)
    assert Pool._next_part(call, 0).answered == 1
    with pytest.raises(ValueError, match="out of turn"):
        Pool._next_part(call, 0)  # again
    with pytest.raises(ValueError, match="out of turn"):
        Pool._next_part(call, 3)  # ahead
    assert Pool._next_part(call, 1).answered == 2
    with pytest.raises(ValueError, match="out of turn"):
        Pool._next_part(call, 2)  # past the last


def test_a_part_for_a_call_without_items_is_refused() -> None:
    call = _call(1)
    call.parts = None
    with pytest.raises(ValueError, match="out of turn"):
        Pool._next_part(call, 0)
