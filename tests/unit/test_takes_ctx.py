"""Whether an entry takes the context: read from the code object where it can
be, and always the answer ``inspect.signature`` gives (its first parameter is
named ``ctx``)."""

from __future__ import annotations

import functools
import inspect
from typing import Any

import pytest

from agentrt.context import takes_ctx


def _by_signature(fn: Any) -> bool:
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return False
    return bool(params) and params[0].name == "ctx"


class _Agent:
    def with_ctx(self, ctx, x): ...
    def without(self, x): ...
    def only_self(self): ...
    def star_ctx(self, *ctx): ...
    def kwonly_ctx(self, *, ctx): ...
    def kwargs_ctx(self, **ctx): ...
    def noself(): ...  # type: ignore[misc]
    def __call__(self, ctx): ...
    async def run(self, ctx, query): ...

    @staticmethod
    def static(ctx): ...

    @classmethod
    def klass(cls, ctx): ...


def _wrapped(fn: Any) -> Any:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)

    return wrapper


def _with_signature() -> Any:
    def f(a): ...

    f.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    )
    return f


async def _async_ctx(ctx, n=1): ...


agent = _Agent()
CASES = {
    "ctx first": lambda ctx, x: None,
    "ctx second": lambda x, ctx: None,
    "no parameters": lambda: None,
    "*ctx": lambda *ctx: None,
    "*args then ctx": lambda *args, ctx: None,
    "keyword-only ctx": lambda *, ctx: None,
    "**ctx": lambda **ctx: None,
    "positional-only ctx": lambda ctx, /: None,
    "defaulted ctx": lambda ctx=None: None,
    "async": _async_ctx,
    "method with ctx": agent.with_ctx,
    "method without": agent.without,
    "method with only self": agent.only_self,
    "method *ctx": agent.star_ctx,
    "method keyword-only ctx": agent.kwonly_ctx,
    "method **ctx": agent.kwargs_ctx,
    "method without self": agent.noself,
    "async method": agent.run,
    "callable instance": agent,
    "staticmethod": _Agent.static,
    "classmethod": agent.klass,
    "wrapped function": _wrapped(lambda ctx: None),
    "wrapped method": _wrapped(agent.without),
    "own __signature__": _with_signature(),
    "partial": functools.partial(lambda ctx, a: None, a=1),
    "partial binding ctx": functools.partial(lambda ctx, a: None, None),
    "builtin": len,
    "class": _Agent,
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_takes_ctx_agrees_with_the_signature(name: str) -> None:
    fn = CASES[name]
    assert takes_ctx(fn) == _by_signature(fn)


def test_takes_ctx_reads_the_first_parameter_by_name() -> None:
    assert takes_ctx(CASES["ctx first"]) and takes_ctx(agent.with_ctx)
    assert not takes_ctx(CASES["ctx second"]) and not takes_ctx(agent.without)
