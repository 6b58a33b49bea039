"""Model clients against the scripted model server: the real wire, no mocks.

Each test runs a :class:`ScriptedModel` on a thread of its own and talks to
it with the real clients over HTTP; retries, timeouts and concurrency are
asserted by the requests the server recorded and the attempts the errors
report, never by elapsed time.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import pickle
import socket
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentrt.errors import AgentrtError, ConfigError
from agentrt.llm.clients import (
    AnthropicMessages,
    ModelClient,
    ModelTurn,
    OpenAIChat,
    Usage,
    client_from_config,
)
from agentrt.llm.errors import (
    ModelError,
    ModelHTTPError,
    ModelRateLimited,
    ModelResponseError,
    ModelTimeout,
)
from agentrt.llm.scripted import (
    BODY_LIMIT,
    HEADER_LIMIT,
    Reply,
    Request,
    ScriptedCall,
    ScriptedModel,
    load_script,
)

USER = [{"role": "user", "content": "What is the weather in Paris?"}]
WEATHER_OPENAI = {
    "type": "function",
    "function": {
        "name": "weather",
        "description": "The weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
WEATHER_ANTHROPIC = {
    "name": "weather",
    "description": "The weather in a city.",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}


@pytest.fixture(autouse=True)
def _no_model_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The developer's own keys and endpoints never reach a test."""
    for var in (
        "OPENAI_API_KEY",
        "OPENAI_BASE_URL",
        "OPENAI_MODEL",
        "ANTHROPIC_API_KEY",
        "ANTHROPIC_BASE_URL",
        "ANTHROPIC_MODEL",
    ):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def weather_script() -> Iterator[list[Reply]]:
    """A tool call, then a text answer."""
    yield [
        Reply(tool_calls=[ScriptedCall("weather", {"city": "Paris"})]),
        Reply(text="Sunny, 21 °C."),
    ]


def _raw_exchange(port: int, data: bytes) -> bytes:
    """Send ``data`` on a fresh connection and read until the server closes it."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(data)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


# --- OpenAI chat completions ----------------------------------------------------------


async def test_openai_text_answer_carries_system_tools_and_usage() -> None:
    with ScriptedModel([Reply(text="Hello there.")], name="greeter") as m:
        async with m.client(extra_body={"temperature": 0}, headers={"X-Trace": "t1"}) as c:
            turn = await c.complete(USER, tools=[WEATHER_OPENAI], system="Be brief.", max_tokens=50)
    assert isinstance(c, ModelClient)
    assert turn.text == "Hello there."
    assert turn.message == {"role": "assistant", "content": "Hello there."}
    assert turn.tool_calls == []
    assert turn.stop_reason == "stop"
    assert turn.model == "scripted:greeter"
    assert turn.usage.input_tokens >= 1 and turn.usage.output_tokens >= 1
    (req,) = m.requests
    assert req.shape == "openai" and req.path == "/v1/chat/completions"
    assert req.body["messages"][0] == {"role": "system", "content": "Be brief."}
    assert req.body["messages"][1:] == USER
    assert req.system == "Be brief." and req.messages == USER
    assert req.tools == [WEATHER_OPENAI]
    assert req.body["max_tokens"] == 50 and req.body["temperature"] == 0
    assert req.body["model"] == "model"
    assert req.headers["x-trace"] == "t1"
    assert "authorization" not in req.headers


async def test_openai_without_tools_sends_no_tools_field() -> None:
    with ScriptedModel(["one", "two"]) as m:
        async with m.client() as c:
            await c.complete(USER)
            await c.complete(USER, tools=[])
    assert ["tools" in r.body or "max_tokens" in r.body for r in m.requests] == [False, False]


async def test_openai_tool_calls_keep_their_ids_and_json_arguments(
    weather_script: list[Reply],
) -> None:
    script = [
        Reply(
            tool_calls=[
                ScriptedCall("weather", {"city": "Paris"}),
                ScriptedCall("weather", {"city": "Rome"}, id="given_7"),
                ScriptedCall("broken", '{"city": '),
            ]
        ),
        *weather_script[1:],
    ]
    with ScriptedModel(script) as m:
        async with m.client() as c:
            turn = await c.complete(USER, tools=[WEATHER_OPENAI])
            assert turn.text == "" and turn.message["content"] is None
            assert turn.stop_reason == "tool_calls"
            ids = [tc["id"] for tc in turn.tool_calls]
            assert ids == ["call_1", "given_7", "call_2"]
            assert all(tc["type"] == "function" for tc in turn.tool_calls)
            args = [tc["function"]["arguments"] for tc in turn.tool_calls]
            assert json.loads(args[0]) == {"city": "Paris"}
            assert json.loads(args[1]) == {"city": "Rome"}
            assert args[2] == '{"city": '  # sent verbatim: invalid JSON on purpose
            assert turn.message["tool_calls"] == turn.tool_calls
            answers = [{"role": "tool", "tool_call_id": i, "content": f"answer {i}"} for i in ids]
            assert c.answers_messages(answers) == answers
            convo = [*USER, turn.message, *c.answers_messages(answers)]
            final = await c.complete(convo, tools=[WEATHER_OPENAI])
    assert final.text == "Sunny, 21 °C."
    second = m.requests[1]
    assert second.messages[1] == turn.message  # the assistant message went back as is
    assert second.tool_results() == [(i, f"answer {i}") for i in ids]
    assert second.turn() == 1
    assert second.last_user_text() == USER[0]["content"]
    assert second.index == 1


async def test_openai_api_key_is_sent_as_bearer_only_when_given() -> None:
    with ScriptedModel(["a", "b"]) as m:
        async with m.client(api_key="sk-test") as with_key, m.client() as without:
            await with_key.complete(USER)
            await without.complete(USER)
    assert m.requests[0].headers["authorization"] == "Bearer sk-test"
    assert "authorization" not in m.requests[1].headers


async def test_openai_reads_base_url_key_and_model_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with ScriptedModel(["from env"]) as m:
        monkeypatch.setenv("OPENAI_BASE_URL", m.openai_base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
        monkeypatch.setenv("OPENAI_MODEL", "env-model")
        async with OpenAIChat() as c:
            turn = await c.complete(USER)
    assert turn.text == "from env"
    (req,) = m.requests
    assert req.model == "env-model"
    assert req.headers["authorization"] == "Bearer sk-env"


def test_openai_without_a_model_names_the_variable() -> None:
    with pytest.raises(ValueError, match="OPENAI_MODEL"):
        OpenAIChat()
    with pytest.raises(ValueError, match="ANTHROPIC_MODEL"):
        AnthropicMessages()


# --- Anthropic Messages ---------------------------------------------------------------------


async def test_anthropic_round_trip_with_tool_use_blocks() -> None:
    script = [
        Reply(text="Let me look.", tool_calls=[ScriptedCall("weather", {"city": "Paris"})]),
        Reply(text="Sunny."),
    ]
    with ScriptedModel(script) as m:
        async with m.client("anthropic", api_key="ak-test") as c:
            assert c.shape == "anthropic"
            turn = await c.complete(USER, tools=[WEATHER_ANTHROPIC], system="Be brief.")
            assert turn.text == "Let me look."
            assert turn.stop_reason == "tool_use"
            (call,) = turn.tool_calls
            assert call == {
                "type": "tool_use",
                "id": "call_1",
                "name": "weather",
                "input": {"city": "Paris"},
            }
            assert turn.message == {
                "role": "assistant",
                "content": [{"type": "text", "text": "Let me look."}, call],
            }
            answers = [{"type": "tool_result", "tool_use_id": "call_1", "content": "sunny"}]
            assert c.answers_messages(answers) == [{"role": "user", "content": answers}]
            assert c.answers_messages([]) == []
            convo = [*USER, turn.message, *c.answers_messages(answers)]
            final = await c.complete(convo, max_tokens=100)
    assert final.text == "Sunny." and final.stop_reason == "end_turn"
    assert final.model == "scripted:model"
    first, second = m.requests
    assert first.path == "/v1/messages" and first.shape == "anthropic"
    assert first.headers["x-api-key"] == "ak-test"
    assert first.headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in first.headers
    assert first.body["system"] == "Be brief." and first.system == "Be brief."
    assert first.body["tools"] == [WEATHER_ANTHROPIC]
    assert first.body["max_tokens"] == 4096
    assert second.body["max_tokens"] == 100
    assert "system" not in second.body and "tools" not in second.body
    assert second.tool_results() == [("call_1", "sunny")]
    assert second.last_user_text() == USER[0]["content"]  # the tool answers hold no text
    assert second.turn() == 1


async def test_anthropic_reads_its_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    with ScriptedModel(["hi"]) as m:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", m.anthropic_base_url)
        monkeypatch.setenv("ANTHROPIC_API_KEY", "ak-env")
        monkeypatch.setenv("ANTHROPIC_MODEL", "claude-env")
        async with AnthropicMessages() as c:
            assert (await c.complete(USER)).text == "hi"
    assert m.requests[0].model == "claude-env"
    assert m.requests[0].headers["x-api-key"] == "ak-env"


# --- retries and errors -------------------------------------------------------------------


async def test_429_then_200_succeeds_after_one_retry_honouring_retry_after(logs: Any) -> None:
    script = [Reply(status=429, retry_after=0.01, text="slow down"), Reply(text="ok")]
    with ScriptedModel(script) as m:
        # Without Retry-After the backoff would be drawn from up to 5 s.
        async with m.client(backoff=5.0, backoff_max=5.0) as c:
            turn = await c.complete(USER)
    assert turn.text == "ok"
    assert len(m.requests) == 2
    (retry,) = logs.find("model_retry")
    assert retry["status"] == 429 and retry["attempt"] == 1
    assert retry["delay"] == 0.01


async def test_retry_after_is_capped_by_backoff_max(logs: Any) -> None:
    script = [Reply(status=503, retry_after=3600), Reply(text="ok")]
    with ScriptedModel(script) as m:
        async with m.client(backoff_max=0.02) as c:
            assert (await c.complete(USER)).text == "ok"
    assert logs.find("model_retry")[0]["delay"] == 0.02


async def test_5xx_on_every_attempt_raises_http_error_with_status_and_attempts() -> None:
    with ScriptedModel([Reply(status=500)] * 3) as m:
        async with m.client(max_retries=2, backoff=0.001, backoff_max=0.01) as c:
            with pytest.raises(ModelHTTPError) as info:
                await c.complete(USER)
    err = info.value
    assert type(err) is ModelHTTPError
    assert err.status_code == 500 and err.attempts == 3 and err.model == "model"
    assert len(m.requests) == 3
    for part in ("'model'", "/v1/chat/completions", "HTTP 500", "3 attempts", "scripted 500"):
        assert part in str(err)
    assert "scripted 500 error" in err.body


async def test_429_on_every_attempt_raises_rate_limited() -> None:
    with ScriptedModel([Reply(status=429)] * 2) as m:
        async with m.client(max_retries=1, backoff=0.001) as c:
            with pytest.raises(ModelRateLimited) as info:
                await c.complete(USER)
    assert info.value.status_code == 429 and info.value.attempts == 2
    assert info.value.status == "limit"
    assert len(m.requests) == 2


async def test_400_is_not_retried() -> None:
    with ScriptedModel([Reply(status=400, text="bad tool schema"), "unused"]) as m:
        async with m.client(max_retries=3, backoff=0.001) as c:
            with pytest.raises(ModelHTTPError) as info:
                await c.complete(USER)
    assert info.value.status_code == 400 and info.value.attempts == 1
    assert "bad tool schema" in str(info.value) and "1 attempt)" in str(info.value)
    assert len(m.requests) == 1


async def test_a_slow_answer_times_out_with_model_timeout() -> None:
    with ScriptedModel([Reply(text="late", delay=5.0)]) as m:
        async with m.client(timeout=0.2, max_retries=0) as c:
            with pytest.raises(ModelTimeout) as info:
                await c.complete(USER)
    err = info.value
    assert isinstance(err, TimeoutError) and err.status == "timeout"
    assert err.attempts == 1 and err.timeout == 0.2
    assert "timed out" in str(err) and "/v1/chat/completions" in str(err)
    assert len(m.requests) == 1


async def test_the_call_timeout_bounds_each_request_under_the_client_timeout() -> None:
    with ScriptedModel([Reply(text="late", delay=5.0)] * 2) as m:
        async with m.client(timeout=60.0, max_retries=1, backoff=0.001) as c:
            with pytest.raises(ModelTimeout) as info:
                await c.complete(USER, timeout=0.2)
    assert info.value.timeout == 0.2 and info.value.attempts == 2
    assert len(m.requests) == 2


async def test_an_unreachable_server_raises_model_error_after_retries() -> None:
    with socket.socket() as s:  # a port that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        async with OpenAIChat(
            "m", base_url=f"http://127.0.0.1:{port}/v1", max_retries=1, backoff=0.001
        ) as c:
            with pytest.raises(ModelError) as info:
                await c.complete(USER)
    assert type(info.value) is ModelError and info.value.attempts == 2
    assert "ConnectError" in str(info.value)
    assert info.value.__cause__ is not None


async def test_an_answer_of_the_wrong_shape_raises_response_error() -> None:
    script = [
        Reply(raw='{"choices": []}'),
        Reply(raw='{"choices": [{"finish_reason": "stop"}]}'),
        Reply(raw="not json"),
        Reply(raw='{"content": 3}'),
    ]
    with ScriptedModel(script) as m:
        async with m.client() as c, m.client("anthropic") as a:
            with pytest.raises(ModelResponseError, match=r"no choices\[0\]"):
                await c.complete(USER)
            with pytest.raises(ModelResponseError, match=r"no choices\[0\]\.message"):
                await c.complete(USER)
            with pytest.raises(ModelResponseError, match="not JSON"):
                await c.complete(USER)
            with pytest.raises(ModelResponseError, match="no content list"):
                await a.complete(USER)
    assert len(m.requests) == 4  # none retried


async def test_an_exhausted_script_answers_500_naming_the_index() -> None:
    with ScriptedModel(["only one"]) as m:
        async with m.client(max_retries=0) as c:
            await c.complete(USER)
            with pytest.raises(ModelHTTPError) as info:
                await c.complete(USER)
    assert info.value.status_code == 500
    assert "exhausted" in str(info.value) and "request index 1" in str(info.value)


async def test_a_script_that_raises_answers_500_with_its_text() -> None:
    def script(req: Request) -> Reply:
        raise ValueError(f"no answer for turn {req.turn()}")

    with ScriptedModel(script) as m:
        async with m.client(max_retries=0) as c:
            with pytest.raises(ModelHTTPError, match="ValueError: no answer for turn 0"):
                await c.complete(USER)


def test_model_errors_survive_pickling_with_their_details() -> None:
    err = ModelRateLimited(
        "model 'm': HTTP 429",
        status_code=429,
        body="x" * 5000,
        model="m",
        url="http://h/v1/chat/completions",
        attempts=4,
    )
    assert len(err.body) == 2000
    copy = pickle.loads(pickle.dumps(err))
    assert type(copy) is ModelRateLimited and isinstance(copy, AgentrtError)
    assert (copy.status_code, copy.attempts, copy.model, copy.body) == (429, 4, "m", err.body)
    assert copy.to_dict()["status_code"] == 429 and copy.to_dict()["attempts"] == 4
    t = pickle.loads(pickle.dumps(ModelTimeout("slow", timeout=0.5, model="m", attempts=2)))
    assert (t.timeout, t.attempts, t.status) == (0.5, 2, "timeout")


# --- the server ---------------------------------------------------------------------------


async def test_requests_are_served_concurrently() -> None:
    n = 8
    arrived = 0
    everyone: asyncio.Event | None = None

    async def script(req: Request) -> Reply:
        # Runs on the server's loop: each answer waits until all n are in.
        nonlocal arrived, everyone
        if everyone is None:
            everyone = asyncio.Event()
        arrived += 1
        if arrived == n:
            everyone.set()
        async with asyncio.timeout(10):
            await everyone.wait()
        return Reply(text=f"answer {req.index}")

    with ScriptedModel(script, latency=0.3) as m:
        async with m.client() as c:
            turns = await asyncio.gather(*(c.complete(USER) for _ in range(n)))
    assert sorted(t.text for t in turns) == sorted(f"answer {i}" for i in range(n))
    assert m.max_in_flight == n
    assert sorted(r.index for r in m.requests) == list(range(n))


def test_answers_are_labelled_scripted_and_it_serves_sync_callers() -> None:
    with ScriptedModel(["hi"], name="demo") as m:
        body = json.dumps({"model": "x", "messages": USER}).encode()
        req = urllib.request.Request(
            m.openai_base_url + "/chat/completions",
            data=body,
            headers={"content-type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert resp.headers["x-agentrt-scripted"] == "1"
            data = json.loads(resp.read())
        with urllib.request.urlopen(m.openai_base_url + "/models", timeout=10) as resp:
            models = json.loads(resp.read())
    assert data["model"] == "scripted:demo"
    assert data["system_fingerprint"] == "agentrt-scripted"
    assert data["choices"][0]["message"] == {"role": "assistant", "content": "hi"}
    assert models["data"][0]["id"] == "scripted:demo"


async def test_malformed_http_is_answered_400_and_the_server_keeps_serving() -> None:
    with ScriptedModel(["still here"]) as m:
        out = _raw_exchange(m.port, b"GARBAGE\r\n\r\n")
        assert out.startswith(b"HTTP/1.1 400 ")
        assert b"x-agentrt-scripted: 1" in out and b"malformed request line" in out
        out = _raw_exchange(m.port, b"POST /v1/messages HTTP/1.1\r\nno colon here\r\n\r\n")
        assert out.startswith(b"HTTP/1.1 400 ")
        async with m.client() as c:
            assert (await c.complete(USER)).text == "still here"
    assert len(m.requests) == 1


def test_an_oversized_body_is_answered_413_and_an_oversized_head_431() -> None:
    with ScriptedModel(["unused"]) as m:
        head = (
            f"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n"
            f"content-length: {BODY_LIMIT + 1}\r\n\r\n"
        )
        assert _raw_exchange(m.port, head.encode()).startswith(b"HTTP/1.1 413 ")
        big = b"POST /v1/messages HTTP/1.1\r\nx-big: " + b"a" * (HEADER_LIMIT + 10) + b"\r\n\r\n"
        assert _raw_exchange(m.port, big).startswith(b"HTTP/1.1 431 ")
    assert m.requests == []


def test_a_request_that_is_not_the_api_shape_is_answered_400() -> None:
    with ScriptedModel(["unused"]) as m:
        body = b'{"model": "m", "messages": "not a list"}'
        head = f"POST /v1/chat/completions HTTP/1.1\r\ncontent-length: {len(body)}\r\n"
        out = _raw_exchange(m.port, head.encode() + b"connection: close\r\n\r\n" + body)
        assert out.startswith(b"HTTP/1.1 400 ") and b"messages" in out
        body = b'{"model": "m", "messages": []}'  # no max_tokens, no anthropic-version
        head = f"POST /v1/messages HTTP/1.1\r\ncontent-length: {len(body)}\r\n"
        out = _raw_exchange(m.port, head.encode() + b"connection: close\r\n\r\n" + body)
        assert out.startswith(b"HTTP/1.1 400 ") and b"anthropic-version" in out
        body = b'{"model": "m", "messages": [], "stream": true}'  # it does not stream: it says so
        head = f"POST /v1/chat/completions HTTP/1.1\r\ncontent-length: {len(body)}\r\n"
        out = _raw_exchange(m.port, head.encode() + b"connection: close\r\n\r\n" + body)
        assert out.startswith(b"HTTP/1.1 400 ") and b"does not stream" in out
        out = _raw_exchange(m.port, b"GET /nowhere HTTP/1.1\r\nconnection: close\r\n\r\n")
        assert out.startswith(b"HTTP/1.1 404 ")
    assert m.requests == []


async def test_the_server_works_as_an_async_context_manager() -> None:
    async with ScriptedModel([{"text": "from a dict"}]) as m, m.client("anthropic") as c:
        assert (await c.complete(USER)).text == "from a dict"
    assert not m.running


def test_a_client_serves_several_event_loops_and_each_loop_closes_its_pool() -> None:
    with ScriptedModel(["one", "two", "three"]) as m:
        c = m.client()

        async def once(close: bool) -> ModelTurn:
            turn = await c.complete(USER)
            if close:
                await c.aclose()
            return turn

        # Left open, a loop's pool is closed by asyncio.run's shutdown (the
        # no_leaks fixture would see its socket otherwise).
        assert asyncio.run(once(close=False)).text == "one"
        assert asyncio.run(once(close=False)).text == "two"
        assert asyncio.run(once(close=True)).text == "three"


def test_request_helpers_read_both_shapes() -> None:
    openai = Request(
        shape="openai",
        model="m",
        messages=[
            {"role": "user", "content": [{"type": "text", "text": "hi"}]},
            {"role": "assistant", "content": None, "tool_calls": []},
            {"role": "tool", "tool_call_id": "a", "content": "1"},
            {"role": "tool", "tool_call_id": "b", "content": "2"},
        ],
        system="",
        tools=[],
        index=0,
        body={},
    )
    assert openai.tool_results() == [("a", "1"), ("b", "2")]
    assert openai.last_user_text() == "hi" and openai.turn() == 1
    anthropic = Request(
        shape="anthropic",
        model="m",
        messages=[
            {"role": "user", "content": "go"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "x"}]},
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "x",
                        "content": [{"type": "text", "text": "done"}],
                    }
                ],
            },
        ],
        system="",
        tools=[],
        index=0,
        body={},
    )
    assert anthropic.tool_results() == [("x", "done")]
    assert anthropic.last_user_text() == "go"


def test_load_script_reads_a_json_file_and_a_module_attribute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "script.json"
    path.write_text(json.dumps(["plain", {"tool_calls": [{"name": "f", "arguments": {"a": 1}}]}]))
    replies = load_script(str(path))
    assert replies == [Reply(text="plain"), Reply(tool_calls=[ScriptedCall("f", {"a": 1})])]
    (tmp_path / "my_script.py").write_text("REPLIES = ['x']\ndef answer(req):\n    return 'y'\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    assert load_script("my_script:REPLIES") == ["x"]
    assert callable(load_script("my_script:answer"))
    with pytest.raises(ValueError, match="module:name"):
        load_script("no_colon_here")


# --- from configuration ------------------------------------------------------------------


async def test_client_from_config_builds_a_working_client(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MY_KEY", "sk-config")
    with ScriptedModel(["configured"]) as m:
        spec = {
            "kind": "openai",
            "model": "cfg-model",
            "base_url": m.openai_base_url,
            "api_key_env": "MY_KEY",
            "timeout": 5,
            "max_retries": 0,
        }
        c = client_from_config(spec)
        assert isinstance(c, OpenAIChat) and c.timeout == 5.0 and c.max_retries == 0
        try:
            assert (await c.complete(USER)).text == "configured"
        finally:
            await c.aclose()
    assert m.requests[0].headers["authorization"] == "Bearer sk-config"
    assert m.requests[0].model == "cfg-model"
    a = client_from_config({"kind": "anthropic", "model": "claude"})
    assert isinstance(a, AnthropicMessages) and a.shape == "anthropic"


@pytest.mark.parametrize(
    ("spec", "key", "words"),
    [
        ({"kind": "openai", "model": "m", "modle": "x"}, "llm.modle", "did you mean 'model'"),
        ({"kind": "gemini", "model": "m"}, "llm.kind", "openai, anthropic"),
        ({"model": 3}, "llm.model", "string"),
        ({"model": "m", "timeout": "fast"}, "llm.timeout", "seconds"),
        ({"model": "m", "timeout": True}, "llm.timeout", "seconds"),
        ({"model": "m", "max_retries": -1}, "llm.max_retries", ">= 0"),
        ({"model": "m", "api_key_env": "NOT_SET_ANYWHERE"}, "llm.api_key_env", "NOT_SET"),
        ({"kind": "openai"}, "llm.model", "OPENAI_MODEL"),
    ],
)
def test_client_from_config_errors_name_the_key(
    spec: dict[str, Any], key: str, words: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NOT_SET_ANYWHERE", raising=False)
    with pytest.raises(ConfigError) as info:
        client_from_config(spec, path="llm")
    assert info.value.path == key
    assert words in str(info.value)


def test_importing_the_clients_without_httpx_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "httpx", None)  # import httpx -> ImportError
    monkeypatch.delitem(sys.modules, "agentrt.llm.clients")
    with pytest.raises(ImportError, match=r"pip install 'agentrt\[llm\]'"):
        importlib.import_module("agentrt.llm.clients")


def test_usage_and_turn_are_frozen_structs() -> None:
    u = Usage(input_tokens=3, output_tokens=4)
    with pytest.raises(AttributeError):
        u.input_tokens = 5  # type: ignore[misc]
