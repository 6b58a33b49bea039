"""A scripted model server: deterministic answers over the real wire, for tests and demos.

:class:`ScriptedModel` serves HTTP/1.1 on 127.0.0.1 (an ephemeral port by
default) in both the OpenAI chat-completions shape (``POST
/v1/chat/completions``, also ``/chat/completions``) and the Anthropic
Messages shape (``POST /v1/messages``).  Its answers come from a script: a
list of :class:`Reply` served in order, one per request across all
conversations, or a callable given each :class:`Request`.  It is no model,
and says so wherever it shows: the answers' ``model`` is
``"scripted:<name>"``, every response has the header ``x-agentrt-scripted:
1`` and OpenAI answers carry ``"system_fingerprint": "agentrt-scripted"``.

The server runs an asyncio loop on a thread of its own, so it serves sync
tests, async tests and the command line alike, and answers requests
concurrently (``latency`` is slept per request, so concurrent requests
overlap; ``max_in_flight`` is the most it held at once).  Stdlib and msgspec
only: it does not need httpx.

Command line::

    python -m agentrt.llm.scripted --script module:callable_or_list | file.json \\
        [--latency 0.3] [--port 8000] [--name model]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import inspect
import json
import os
import signal
import sys
import threading
from collections.abc import Awaitable, Callable, Sequence
from http import HTTPStatus
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Annotated, Any, Literal, Self, overload

import msgspec

if TYPE_CHECKING:
    from agentrt.llm.clients import AnthropicMessages, OpenAIChat

__all__ = ["Reply", "Request", "Script", "ScriptedCall", "ScriptedModel", "main"]

#: bound on a request's line and headers (a longer head is answered 431)
HEADER_LIMIT = 64 * 1024
#: bound on a request's body (a longer one is answered 413)
BODY_LIMIT = 16 * 1024 * 1024
#: how long the server waits for its thread to come up
START_TIMEOUT = 10.0
#: after an error that ends a connection, how long unread input is drained
LINGER = 2.0

_ROUTES: dict[str, Literal["openai", "anthropic"]] = {
    "/v1/chat/completions": "openai",
    "/chat/completions": "openai",
    "/v1/messages": "anthropic",
}
_MODELS_ROUTES = frozenset({"/v1/models", "/models"})

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}


class ScriptedCall(msgspec.Struct):
    """One tool call of a scripted answer.  ``arguments`` given as a string is
    sent verbatim (to test invalid JSON); an empty ``id`` gets ``call_<n>``."""

    name: str
    arguments: dict[str, Any] | str = {}
    id: str = ""


class Reply(msgspec.Struct, kw_only=True):
    """One scripted answer.

    A ``status`` other than 200 answers an error with that status (the
    message is ``text``, when given) and ``retry_after`` as its
    ``Retry-After`` header.  ``delay`` is this answer's latency (else the
    server's).  ``stop_reason`` defaults to ``stop``/``end_turn``, or
    ``tool_calls``/``tool_use`` when there are tool calls.  ``raw``, when
    set, is sent as the body verbatim, with ``status`` (to test how a client
    takes an answer of the wrong shape).
    """

    text: str = ""
    tool_calls: list[ScriptedCall] = []
    status: Annotated[int, msgspec.Meta(ge=100, le=599)] = 200
    retry_after: Annotated[float, msgspec.Meta(ge=0)] | None = None
    delay: Annotated[float, msgspec.Meta(ge=0)] | None = None
    stop_reason: str = ""
    raw: str | None = None


class Request(msgspec.Struct):
    """A request the server received, as a script callable sees it.

    ``messages`` are the conversation without its system prompt, which is
    ``system`` (OpenAI ``system`` messages are taken out and joined);
    ``index`` is how many model requests the server received before this
    one; ``body`` is the request's JSON body as sent, ``headers`` its headers
    (lower-case names), ``path`` its path.
    """

    shape: Literal["openai", "anthropic"]
    model: str
    messages: list[dict[str, Any]]
    system: str
    tools: list[dict[str, Any]]
    index: int
    body: dict[str, Any]
    headers: dict[str, str] = {}
    path: str = ""

    def last_user_text(self) -> str:
        """The text of the last user message that has text ("" when none)."""
        for m in reversed(self.messages):
            if m.get("role") == "user":
                text = _text(m.get("content"))
                if text:
                    return text
        return ""

    def tool_results(self) -> list[tuple[str, str]]:
        """``(call id, content)`` of the tool answers that end the conversation:
        the trailing ``role: "tool"`` messages (OpenAI) or the last user
        message's ``tool_result`` blocks (Anthropic)."""
        msgs = self.messages
        i = len(msgs)
        while i > 0 and msgs[i - 1].get("role") == "tool":
            i -= 1
        out = [(str(m.get("tool_call_id", "")), _text(m.get("content"))) for m in msgs[i:]]
        if out or not msgs or msgs[-1].get("role") != "user":
            return out
        content = msgs[-1].get("content")
        if isinstance(content, list):
            out = [
                (str(b.get("tool_use_id", "")), _text(b.get("content")))
                for b in content
                if isinstance(b, dict) and b.get("type") == "tool_result"
            ]
        return out

    def turn(self) -> int:
        """How many assistant messages the conversation already has."""
        return sum(1 for m in self.messages if m.get("role") == "assistant")


ReplyLike = Reply | dict[str, Any] | str
#: a list of replies served in order, or a callable (sync or async) per request;
#: a dict is converted to a Reply, a str is ``Reply(text=...)``
Script = Sequence[ReplyLike] | Callable[[Request], ReplyLike | Awaitable[ReplyLike]]


def _text(content: Any) -> str:
    """The text of a message's content: a string, or its ``text`` blocks joined."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            b["text"]
            for b in content
            if isinstance(b, dict) and b.get("type") == "text" and isinstance(b.get("text"), str)
        )
    return ""


def _as_reply(item: Any) -> Reply:
    if isinstance(item, Reply):
        return item
    if isinstance(item, str):
        return Reply(text=item)
    if isinstance(item, dict):
        return msgspec.convert(item, Reply)
    raise TypeError(f"a scripted reply is a Reply, a dict or a str, not {type(item).__name__}")


class _HTTPError(Exception):
    """A request the server refuses before it reaches the script."""

    def __init__(self, status: int, message: str, *, close: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.close = close


class _Answer(msgspec.Struct):
    status: int
    body: bytes
    headers: list[tuple[str, str]] = []


def _error_body(status: int, message: str) -> bytes:
    kind = _ERROR_TYPES.get(status, "api_error" if status >= 500 else "error")
    # Both APIs read error.message; "type": "error" is Anthropic's envelope.
    return msgspec.json.encode({"type": "error", "error": {"type": kind, "message": message}})


def _parse_head(head: bytes) -> tuple[str, str, str, dict[str, str]]:
    """Method, target, version and headers (lower-case names) of a request head."""
    lines = head.decode("latin-1").lstrip("\r\n").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[0].isalpha() or not parts[1].startswith("/"):
        raise _HTTPError(400, f"malformed request line {lines[0][:100]!r}", close=True)
    method, target, version = parts
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        raise _HTTPError(505, f"HTTP version {version[:20]!r} is not supported", close=True)
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise _HTTPError(400, f"malformed header line {line[:100]!r}", close=True)
        name = name.lower()
        value = value.strip()
        if name in headers and name == "content-length" and headers[name] != value:
            raise _HTTPError(400, "conflicting content-length headers", close=True)
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return method, target, version, headers


def _content_length(headers: dict[str, str]) -> int:
    if "transfer-encoding" in headers:
        raise _HTTPError(501, "transfer-encoding is not supported: send content-length", close=True)
    value = headers.get("content-length", "0")
    if not value.isdigit():
        raise _HTTPError(400, f"malformed content-length {value[:40]!r}", close=True)
    length = int(value)
    if length > BODY_LIMIT:
        raise _HTTPError(413, f"body of {length} bytes is over {BODY_LIMIT}", close=True)
    return length


def _keep_alive(version: str, headers: dict[str, str]) -> bool:
    tokens = {t.strip().lower() for t in headers.get("connection", "").split(",")}
    return "keep-alive" in tokens if version == "HTTP/1.0" else "close" not in tokens


def _head(status: int, length: int, keep: bool, extra: Sequence[tuple[str, str]]) -> bytes:
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = "Unknown"
    lines = [
        f"HTTP/1.1 {status} {reason}",
        "content-type: application/json",
        f"content-length: {length}",
        "x-agentrt-scripted: 1",
        f"connection: {'keep-alive' if keep else 'close'}",
        *(f"{k}: {v}" for k, v in extra),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class ScriptedModel:
    """A scripted model server (see the module docstring).

    Use it as a context manager (sync or async), or call :meth:`start` and
    :meth:`stop`.  A list script past its end answers 500 saying so; a
    callable that raises answers 500 with the exception's text.
    """

    def __init__(
        self,
        script: Script,
        *,
        latency: float = 0.0,
        name: str = "model",
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self._replies: list[Reply] | None = None
        self._script: Callable[[Request], Any] | None = None
        if callable(script):
            self._script = script
        elif isinstance(script, Sequence) and not isinstance(script, str | bytes):
            self._replies = [_as_reply(r) for r in script]
        else:
            raise TypeError("a script is a sequence of replies or a callable")
        if latency < 0:
            raise ValueError(f"latency must be >= 0, got {latency!r}")
        self.latency = latency
        self.name = name
        self.host = host
        self.port = port
        #: every model request received, in order
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        self._count = 0
        self._ids = 0
        self._in_flight = 0
        self._max_in_flight = 0
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._start_error: BaseException | None = None
        self._conns: set[asyncio.Task[None]] = set()
        self._closing = False

    def __repr__(self) -> str:
        where = self.url if self.running else "stopped"
        return f"ScriptedModel(name={self.name!r}, {where})"

    # --- where it listens -----------------------------------------------------

    @property
    def running(self) -> bool:
        return self._thread is not None

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (the Anthropic base URL)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def openai_base_url(self) -> str:
        """``url + "/v1"``."""
        return self.url + "/v1"

    @property
    def anthropic_base_url(self) -> str:
        return self.url

    @property
    def max_in_flight(self) -> int:
        """The most requests the server was answering at once."""
        with self._lock:
            return self._max_in_flight

    # --- clients pointed at it ------------------------------------------------------

    @overload
    def client(self, shape: Literal["openai"] = ..., **kw: Any) -> OpenAIChat: ...
    @overload
    def client(self, shape: Literal["anthropic"], **kw: Any) -> AnthropicMessages: ...

    def client(
        self, shape: Literal["openai", "anthropic"] = "openai", **kw: Any
    ) -> OpenAIChat | AnthropicMessages:
        """A client of this server for model ``"model"`` (keywords go to the
        client; no API key is sent unless ``api_key`` is given)."""
        from agentrt.llm.clients import AnthropicMessages, OpenAIChat

        kw.setdefault("model", "model")
        kw.setdefault("api_key", "")
        if shape == "openai":
            return OpenAIChat(base_url=self.openai_base_url, **kw)
        if shape == "anthropic":
            return AnthropicMessages(base_url=self.anthropic_base_url, **kw)
        raise ValueError(f"shape must be 'openai' or 'anthropic', got {shape!r}")

    # --- life cycle ------------------------------------------------------------------

    def start(self) -> Self:
        """Listen, on a thread of its own; returns once the port is bound."""
        if self._thread is not None:
            raise RuntimeError("the scripted model is already running")
        ready = threading.Event()
        self._start_error = None
        self._closing = False
        thread = threading.Thread(
            target=self._thread_main, args=(ready,), name=f"scripted-model-{self.name}", daemon=True
        )
        thread.start()
        if not ready.wait(START_TIMEOUT):
            raise RuntimeError(f"the scripted model did not start in {START_TIMEOUT}s")
        if self._start_error is not None:
            thread.join()
            raise self._start_error
        self._thread = thread
        return self

    def stop(self) -> None:
        """Stop serving: open connections are closed, the thread is joined."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        if thread is threading.current_thread():
            raise RuntimeError("the scripted model cannot be stopped from its own thread")
        loop, stopping = self._loop, self._stopping
        if loop is not None and stopping is not None:
            with contextlib.suppress(RuntimeError):  # the loop has ended already
                loop.call_soon_threadsafe(stopping.set)
        thread.join()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        return await asyncio.to_thread(self.start)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await asyncio.to_thread(self.stop)

    def _thread_main(self, ready: threading.Event) -> None:
        try:
            asyncio.run(self._main(ready))
        except BaseException as e:  # handed to start()'s caller
            if not ready.is_set():
                self._start_error = e
                ready.set()
            else:
                raise

    async def _main(self, ready: threading.Event) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        server = await asyncio.start_server(
            self._connection, self.host, self.port, limit=HEADER_LIMIT
        )
        self.port = server.sockets[0].getsockname()[1]
        ready.set()
        try:
            await self._stopping.wait()
        finally:
            server.close()
            self._closing = True
            conns = list(self._conns)
            for task in conns:
                task.cancel()
            await asyncio.gather(*conns, return_exceptions=True)
            await server.wait_closed()

    # --- one connection ------------------------------------------------------------

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._conns.add(task)
        try:
            await self._serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client went away
        except asyncio.CancelledError:
            # The server's shutdown cancelled this connection: the task ends
            # here (asyncio's streams report a cancelled handler as an error).
            if not self._closing:
                raise
        finally:
            self._conns.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(LINGER):
                    await writer.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Requests of one connection, in turn, while it is kept alive."""
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError as e:
                if e.partial.strip():
                    await self._refuse(reader, writer, _HTTPError(400, "incomplete request head"))
                return
            except asyncio.LimitOverrunError:
                err = _HTTPError(431, f"request head is over {HEADER_LIMIT} bytes")
                await self._refuse(reader, writer, err)
                return
            try:
                method, target, version, headers = _parse_head(head)
                length = _content_length(headers)
            except _HTTPError as e:
                await self._refuse(reader, writer, e)
                return
            if headers.get("expect", "").lower() == "100-continue":
                writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            body = await reader.readexactly(length)
            keep = _keep_alive(version, headers)
            answer = await self._answer(method, target.partition("?")[0], headers, body)
            writer.write(_head(answer.status, len(answer.body), keep, answer.headers))
            writer.write(answer.body)
            await writer.drain()
            if not keep:
                return

    async def _refuse(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, err: _HTTPError
    ) -> None:
        """Answer an error and end the connection, draining what the client still sends
        (closing with unread input would reset the connection before it reads the answer)."""
        body = _error_body(err.status, err.message)
        writer.write(_head(err.status, len(body), False, ()))
        writer.write(body)
        await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
        with contextlib.suppress(TimeoutError, ConnectionError):
            async with asyncio.timeout(LINGER):
                drained = 0
                while drained <= 2 * BODY_LIMIT:
                    chunk = await reader.read(HEADER_LIMIT)
                    if not chunk:
                        break
                    drained += len(chunk)

    # --- one request -------------------------------------------------------------------

    async def _answer(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> _Answer:
        if path in _MODELS_ROUTES and method == "GET":
            listing = {
                "object": "list",
                "data": [{"id": f"scripted:{self.name}", "object": "model", "owned_by": "agentrt"}],
            }
            return _Answer(200, msgspec.json.encode(listing))
        shape = _ROUTES.get(path)
        if shape is None and path not in _MODELS_ROUTES:
            return _Answer(404, _error_body(404, f"no route {path!r} (scripted model)"))
        if shape is None or method != "POST":
            return _Answer(405, _error_body(405, f"{method} is not allowed on {path}"))
        try:
            request = self._request(shape, path, headers, body)
        except _HTTPError as e:
            return _Answer(e.status, _error_body(e.status, e.message))
        with self._lock:
            self.requests.append(request)
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)
        try:
            try:
                reply = await self._reply(request)
            except Exception as e:
                return _Answer(500, _error_body(500, f"scripted model: {e}"))
            delay = self.latency if reply.delay is None else reply.delay
            if delay > 0:
                await asyncio.sleep(delay)
            return self._render(request, reply)
        finally:
            with self._lock:
                self._in_flight -= 1

    def _request(
        self, shape: Literal["openai", "anthropic"], path: str, headers: dict[str, str], raw: bytes
    ) -> Request:
        try:
            body = msgspec.json.decode(raw)
        except msgspec.DecodeError as e:
            raise _HTTPError(400, f"the body is not JSON: {e}") from e
        if not isinstance(body, dict):
            raise _HTTPError(400, "the body is not a JSON object")
        if body.get("stream"):
            # said, rather than answered as one body a streaming client never reads
            raise _HTTPError(400, "stream: the scripted model does not stream; send stream=false")
        messages = body.get("messages")
        if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
            raise _HTTPError(400, "messages: must be a list of objects")
        tools = body.get("tools") or []
        if not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools):
            raise _HTTPError(400, "tools: must be a list of objects")
        if shape == "anthropic":
            if "anthropic-version" not in headers:
                raise _HTTPError(400, "anthropic-version: header is required")
            if not isinstance(body.get("max_tokens"), int):
                raise _HTTPError(400, "max_tokens: field required")
            system = body.get("system")
            system_text = system if isinstance(system, str) else _text(system)
        else:
            system_text = "\n".join(
                _text(m.get("content")) for m in messages if m.get("role") == "system"
            )
            messages = [m for m in messages if m.get("role") != "system"]
        model = body.get("model")
        index = self._count  # the loop's thread alone counts
        self._count += 1
        return Request(
            shape=shape,
            model=model if isinstance(model, str) else "",
            messages=messages,
            system=system_text,
            tools=tools,
            index=index,
            body=body,
            headers=headers,
            path=path,
        )

    async def _reply(self, request: Request) -> Reply:
        if self._replies is not None:
            if request.index >= len(self._replies):
                raise LookupError(
                    f"the script is exhausted: request index {request.index}, "
                    f"{len(self._replies)} replies scripted"
                )
            return self._replies[request.index]
        assert self._script is not None
        try:
            got = self._script(request)
            if inspect.isawaitable(got):
                got = await got
            return _as_reply(got)
        except Exception as e:
            raise RuntimeError(f"the script raised {type(e).__name__}: {e}") from e

    def _call_id(self, given: str) -> str:
        if given:
            return given
        self._ids += 1
        return f"call_{self._ids}"

    def _render(self, request: Request, reply: Reply) -> _Answer:
        extra: list[tuple[str, str]] = []
        if reply.retry_after is not None and reply.status != 200:
            extra.append(("retry-after", f"{reply.retry_after:g}"))
        if reply.raw is not None:
            return _Answer(reply.status, reply.raw.encode(), extra)
        if reply.status != 200:
            why = reply.text or f"scripted {reply.status} error"
            return _Answer(reply.status, _error_body(reply.status, why), extra)
        args = [
            c.arguments if isinstance(c.arguments, str) else json.dumps(c.arguments)
            for c in reply.tool_calls
        ]
        usage_in = max(1, len(msgspec.json.encode(request.messages)) // 4)
        usage_out = max(1, (len(reply.text) + sum(len(a) for a in args)) // 4)
        model = f"scripted:{self.name}"
        data: dict[str, Any]
        if request.shape == "openai":
            calls = [
                {
                    "id": self._call_id(c.id),
                    "type": "function",
                    "function": {"name": c.name, "arguments": a},
                }
                for c, a in zip(reply.tool_calls, args, strict=True)
            ]
            message: dict[str, Any] = {
                "role": "assistant",
                "content": reply.text if reply.text or not calls else None,
            }
            if calls:
                message["tool_calls"] = calls
            data = {
                "id": f"chatcmpl-scripted-{request.index}",
                "object": "chat.completion",
                "created": 0,
                "model": model,
                "system_fingerprint": "agentrt-scripted",
                "choices": [
                    {
                        "index": 0,
                        "message": message,
                        "finish_reason": reply.stop_reason or ("tool_calls" if calls else "stop"),
                    }
                ],
                "usage": {
                    "prompt_tokens": usage_in,
                    "completion_tokens": usage_out,
                    "total_tokens": usage_in + usage_out,
                },
            }
        else:
            content: list[dict[str, Any]] = []
            if reply.text:
                content.append({"type": "text", "text": reply.text})
            for c in reply.tool_calls:
                content.append(
                    {
                        "type": "tool_use",
                        "id": self._call_id(c.id),
                        "name": c.name,
                        "input": _input(c.arguments),
                    }
                )
            data = {
                "id": f"msg_scripted_{request.index}",
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": content,
                "stop_reason": reply.stop_reason
                or ("tool_use" if reply.tool_calls else "end_turn"),
                "stop_sequence": None,
                "usage": {"input_tokens": usage_in, "output_tokens": usage_out},
            }
        return _Answer(200, msgspec.json.encode(data), extra)


def _input(arguments: dict[str, Any] | str) -> Any:
    """A tool_use block's ``input``: a string holding a JSON object is decoded;
    any other string is sent verbatim."""
    if isinstance(arguments, dict):
        return arguments
    try:
        value = json.loads(arguments)
    except ValueError:
        return arguments
    return value if isinstance(value, dict) else arguments


# --- command line ---------------------------------------------------------------------


def load_script(spec: str) -> Script:
    """A script from ``file.json`` (a list of replies) or ``module:name`` (a list
    or a callable; the current directory is importable)."""
    path = Path(spec)
    if spec.endswith(".json") or path.is_file():
        data = json.loads(path.read_text())
        if not isinstance(data, list):
            raise ValueError(f"{spec}: a script file holds a JSON list of replies")
        return [_as_reply(r) for r in data]
    module, sep, name = spec.partition(":")
    if not sep or not module or not name:
        raise ValueError(f"{spec!r}: give file.json or module:name")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    obj: Any = importlib.import_module(module)
    for part in name.split("."):
        obj = getattr(obj, part)
    if not callable(obj) and not (isinstance(obj, Sequence) and not isinstance(obj, str)):
        raise ValueError(f"{spec}: not a list of replies or a callable")
    return obj  # type: ignore[no-any-return]


def main(argv: Sequence[str] | None = None) -> int:
    """Serve a script until SIGINT or SIGTERM."""
    parser = argparse.ArgumentParser(
        prog="python -m agentrt.llm.scripted",
        description="Serve a scripted model (not a real model) over the OpenAI "
        "chat-completions and Anthropic Messages APIs, for tests and offline demos.",
    )
    parser.add_argument("--script", required=True, help="file.json or module:callable_or_list")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds slept per answer")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: an ephemeral port")
    parser.add_argument("--name", default="model", help="answers name the model scripted:NAME")
    args = parser.parse_args(argv)
    try:
        script = load_script(args.script)
    except (OSError, ValueError, ImportError, AttributeError, msgspec.ValidationError) as e:
        parser.error(f"--script: {e}")
    done = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        done.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    with ScriptedModel(
        script, latency=args.latency, name=args.name, host=args.host, port=args.port
    ) as model:
        print(f"scripted model (not a real model) listening on {model.openai_base_url}")
        print(
            f"  OpenAI base URL {model.openai_base_url}, Anthropic base URL "
            f"{model.anthropic_base_url}; answers name the model scripted:{args.name}",
            flush=True,
        )
        done.wait()
    print("scripted model stopped", flush=True)
    return 0


if __name__ == "__main__":
    # Run as the module scripts import (``python -m`` loads this file a second
    # time as __main__), so the Reply they return is the Reply checked here.
    from agentrt.llm.scripted import main as _main

    sys.exit(_main())
