"""Model clients: OpenAI-compatible chat completions and Anthropic Messages over httpx.

Both speak their API's own message and tool shapes (``shape`` says which) and
share one policy: connect errors, timeouts, 408, 409, 429 and 5xx are retried
up to ``max_retries`` times with exponential backoff and full jitter (capped
at ``backoff_max``; a ``Retry-After`` in seconds on 429 and 503 is honoured,
under the same cap); other errors are raised at once as
:mod:`agentrt.llm.errors`.  Each retry is logged as ``model_retry``.

The HTTP connection pool belongs to the event loop that opened it: a client
used from a new loop (another ``asyncio.run``) opens a new pool there.
:meth:`~OpenAIChat.aclose` (or ``async with``) closes the current loop's
pool; a pool still open when its loop shuts down (the end of
``asyncio.run``, or of any runner that finalizes async generators) is
closed by that shutdown.

Needs httpx: ``pip install 'agentrt[llm]'``.
"""

from __future__ import annotations

import asyncio
import difflib
import os
import random
from collections.abc import AsyncGenerator, Mapping
from types import TracebackType
from typing import Any, ClassVar, Literal, Protocol, Self, runtime_checkable

import msgspec

try:
    import httpx
except ImportError as exc:  # pragma: no cover - exercised by a test that hides httpx
    raise ImportError(
        "agentrt.llm.clients needs httpx: pip install 'agentrt[llm]'", name=exc.name
    ) from exc

from agentrt.errors import ConfigError
from agentrt.llm.errors import (
    ModelError,
    ModelHTTPError,
    ModelRateLimited,
    ModelResponseError,
    ModelTimeout,
)
from agentrt.observe import library_logger

__all__ = [
    "AnthropicMessages",
    "ModelClient",
    "ModelTurn",
    "OpenAIChat",
    "Usage",
    "client_from_config",
]

#: statuses worth another attempt (with 5xx)
RETRY_STATUSES = frozenset({408, 409, 429})
#: statuses whose Retry-After is honoured
RETRY_AFTER_STATUSES = frozenset({429, 503})
#: how much of an error answer's text goes into an error's message
MESSAGE_SNIPPET = 300


class Usage(msgspec.Struct, frozen=True):
    """Tokens a turn used, as the server counted them (0 when it did not say)."""

    input_tokens: int = 0
    output_tokens: int = 0


class ModelTurn(msgspec.Struct, frozen=True):
    """One answer of a model.

    ``message`` is the assistant message in the client's API shape, to append
    to the conversation as is.  ``tool_calls`` are the message's OpenAI
    ``tool_calls`` items (``{"id", "type": "function", "function": {"name",
    "arguments"}}``, arguments a JSON string) or its Anthropic ``tool_use``
    blocks (``{"type": "tool_use", "id", "name", "input"}``).
    """

    message: dict[str, Any]
    text: str
    tool_calls: list[dict[str, Any]]
    usage: Usage
    stop_reason: str
    model: str


@runtime_checkable
class ModelClient(Protocol):
    """What the agent loop needs of a model: one completion at a time."""

    @property
    def shape(self) -> Literal["openai", "anthropic"]:
        """Which message and tool shapes the client speaks."""
        ...

    @property
    def model(self) -> str:
        """The model asked for."""
        ...

    async def complete(
        self,
        messages: list[dict[str, Any]],
        *,
        tools: list[dict[str, Any]] | None = None,
        system: str | None = None,
        timeout: float | None = None,
        max_tokens: int | None = None,
    ) -> ModelTurn:
        """The model's next turn after ``messages``."""
        ...

    def answers_messages(self, answers: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The messages that carry a turn's tool answers into the conversation."""
        ...

    async def aclose(self) -> None:
        """Close the connections the client holds."""
        ...


class _Pool(msgspec.Struct, frozen=True):
    """One event loop's connection pool and the async generator that holds it open."""

    pool: httpx.AsyncClient
    keeper: AsyncGenerator[None, None]


async def _keep_open(pool: httpx.AsyncClient) -> AsyncGenerator[None, None]:
    """Suspended while the pool is in use.  An event loop finalizes the async
    generators it started when it shuts down (``loop.shutdown_asyncgens()``,
    which ``asyncio.run`` calls), and so closes a pool nobody closed."""
    try:
        yield
    finally:
        await pool.aclose()


class _HTTPClient:
    """The transport both clients share: connection pools per event loop, retries."""

    shape: ClassVar[Literal["openai", "anthropic"]]
    _path: ClassVar[str]

    def __init__(
        self,
        model: str,
        base_url: str,
        *,
        timeout: float,
        max_retries: int,
        backoff: float,
        backoff_max: float,
        headers: dict[str, str],
        extra_body: dict[str, Any] | None,
    ) -> None:
        if timeout <= 0:
            raise ValueError(f"timeout must be > 0, got {timeout!r}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries!r}")
        self.model = model
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self.backoff_max = backoff_max
        self.headers = headers
        self.extra_body = dict(extra_body or {})
        self.url = self.base_url + self._path
        u = httpx.URL(self.url)
        # what error messages show: no user info, no query
        self._shown_url = str(u.copy_with(userinfo=b"", query=None, fragment=None))
        self._pools: dict[asyncio.AbstractEventLoop, _Pool] = {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model={self.model!r}, url={self._shown_url!r})"

    # --- connection pools, one per event loop ---------------------------------

    async def _pool(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        entry = self._pools.get(loop)
        if entry is None:
            for old in [lp for lp in self._pools if lp.is_closed()]:
                del self._pools[old]  # closed by its loop's shutdown
            pool = httpx.AsyncClient()
            keeper = _keep_open(pool)
            await anext(keeper)  # now the loop finalizes it at shutdown
            entry = self._pools[loop] = _Pool(pool, keeper)
        return entry.pool

    async def aclose(self) -> None:
        """Close this event loop's connection pool (the client stays usable)."""
        entry = self._pools.pop(asyncio.get_running_loop(), None)
        if entry is not None:
            await entry.keeper.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # --- one POST, with retries -------------------------------------------------

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.backoff_max)
        return random.uniform(0.0, min(self.backoff_max, self.backoff * 2 ** (attempt - 1)))

    def _where(self, attempts: int) -> str:
        return (
            f"model {self.model!r}: POST {self._shown_url} "
            f"({attempts} attempt{'s' if attempts != 1 else ''})"
        )

    async def _post(
        self, body: dict[str, Any], timeout: float | None
    ) -> tuple[dict[str, Any], int]:
        """The decoded 2xx answer, and the attempts it took."""
        per_request = self.timeout if timeout is None else min(self.timeout, timeout)
        content = msgspec.json.encode(body)
        headers = {"content-type": "application/json", **self.headers}
        attempt = 0
        while True:
            attempt += 1
            retry_after: float | None = None
            status: int | None = None
            failure: ModelError
            try:
                async with asyncio.timeout(per_request):
                    pool = await self._pool()
                    resp = await pool.post(
                        self.url, content=content, headers=headers, timeout=per_request
                    )
            except (TimeoutError, httpx.TimeoutException) as e:
                failure = ModelTimeout(
                    f"{self._where(attempt)}: timed out after {per_request:g}s",
                    timeout=per_request,
                    model=self.model,
                    url=self._shown_url,
                    attempts=attempt,
                )
                failure.__cause__ = e
            except (httpx.NetworkError, httpx.RemoteProtocolError) as e:
                failure = ModelError(
                    f"{self._where(attempt)}: {type(e).__name__}: {e}",
                    model=self.model,
                    url=self._shown_url,
                    attempts=attempt,
                )
                failure.__cause__ = e
            except httpx.HTTPError as e:  # not worth a retry (bad URL, proxy, ...)
                raise ModelError(
                    f"{self._where(attempt)}: {type(e).__name__}: {e}",
                    model=self.model,
                    url=self._shown_url,
                    attempts=attempt,
                ) from e
            else:
                status = resp.status_code
                if 200 <= status < 300:
                    return self._decode(resp, attempt), attempt
                failure = self._http_error(resp, attempt)
                if status in RETRY_AFTER_STATUSES:
                    retry_after = _retry_after(resp.headers.get("retry-after"))
            retryable = status is None or status in RETRY_STATUSES or status >= 500
            if not retryable or attempt > self.max_retries:
                raise failure
            delay = self._delay(attempt, retry_after)
            library_logger().info(
                "model_retry",
                model=self.model,
                url=self._shown_url,
                attempt=attempt,
                status=status,
                error=type(failure).__name__,
                delay=delay,
            )
            await asyncio.sleep(delay)

    def _http_error(self, resp: httpx.Response, attempts: int) -> ModelHTTPError:
        text = resp.text
        detail = text
        try:
            data = msgspec.json.decode(resp.content)
        except msgspec.DecodeError:
            pass
        else:
            err = data.get("error") if isinstance(data, dict) else None
            msg = err.get("message") if isinstance(err, dict) else None
            if isinstance(msg, str):
                detail = msg
        if len(detail) > MESSAGE_SNIPPET:
            detail = detail[:MESSAGE_SNIPPET] + "..."
        cls = ModelRateLimited if resp.status_code == 429 else ModelHTTPError
        return cls(
            f"{self._where(attempts)}: HTTP {resp.status_code}: {detail or resp.reason_phrase}",
            status_code=resp.status_code,
            body=text,
            model=self.model,
            url=self._shown_url,
            attempts=attempts,
        )

    def _decode(self, resp: httpx.Response, attempts: int) -> dict[str, Any]:
        try:
            data = msgspec.json.decode(resp.content)
        except msgspec.DecodeError as e:
            raise self._bad(f"the body is not JSON ({e})", attempts) from e
        if not isinstance(data, dict):
            raise self._bad(f"the body is a JSON {type(data).__name__}, not an object", attempts)
        return data

    def _bad(self, what: str, attempts: int) -> ModelResponseError:
        return ModelResponseError(
            f"{self._where(attempts)}: unexpected answer: {what}",
            model=self.model,
            url=self._shown_url,
            attempts=attempts,
        )


def _retry_after(value: str | None) -> float | None:
    """A ``Retry-After`` in seconds (an HTTP date is not honoured)."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


def _usage(data: dict[str, Any], inp: str, out: str) -> Usage:
    usage = data.get("usage")
    if not isinstance(usage, dict):
        return Usage()
    i, o = usage.get(inp), usage.get(out)
    return Usage(
        input_tokens=i if isinstance(i, int) else 0,
        output_tokens=o if isinstance(o, int) else 0,
    )


def _env(name: str) -> str | None:
    return os.environ.get(name) or None


class OpenAIChat(_HTTPClient):
    """An OpenAI-compatible chat-completions client (OpenAI, vLLM, llama.cpp,
    Ollama, ...): ``POST {base_url}/chat/completions``.

    ``model``, ``base_url`` and ``api_key`` default to the environment's
    ``OPENAI_MODEL``, ``OPENAI_BASE_URL`` (else ``https://api.openai.com/v1``)
    and ``OPENAI_API_KEY``.  With no key (or ``api_key=""``) no
    ``Authorization`` header is sent, as local servers expect.  ``extra_body``
    is merged into every request's body.
    """

    shape: ClassVar[Literal["openai"]] = "openai"
    _path = "/chat/completions"

    def __init__(
        self,
        model: str | None = None,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout: float = 60.0,
        max_retries: int = 3,
        backoff: float = 0.5,
        backoff_max: float = 8.0,
        headers: dict[str, str] | None = None,
        extra_body: dict[str, Any] | None = None,
    ) -> None:
        model = model or _env("OPENAI_MODEL")
        if not model:
            raise ValueError("no model: pass model= or set OPENAI_MODEL")
        key = _env("OPENAI_API_KEY") if api_key is None else api_key
        hdrs = {"authorization": f"Bearer {key}"} if key else {}
        hdrs.update({k.lower(): v for k, v in (headers or {}).items()})
        super().__init__(
            model,
            base_url or _env("OPENAI_BASE_URL") or "https://api.openai.com/v1",
            timeout=timeout,
            max_retries=max_retries,
            backoff=backoff,
            backoff_max=backoff_max,
            headers=hdrs,
            extra_body=extra_body,
        )

    async def complete(
        self,
        messages: list[dict[str, Any]],
        *,
        tools: list[dict[str, Any]] | None = None,
        system: str | None = None,
        timeout: float | None = None,
        max_tokens: int | None = None,
    ) -> ModelTurn:
        """The model's next turn; ``system`` is sent as a leading system message."""
        msgs = [{"role": "system", "content": system}, *messages] if system else messages
        body: dict[str, Any] = {"model": self.model, "messages": msgs}
        if tools:
            body["tools"] = tools
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        body.update(self.extra_body)
        return self._turn(*await self._post(body, timeout))

    def _turn(self, data: dict[str, Any], attempts: int) -> ModelTurn:
        choices = data.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            raise self._bad("no choices[0]", attempts)
        choice = choices[0]
        message = choice.get("message")
        if not isinstance(message, dict):
            raise self._bad("no choices[0].message", attempts)
        content = message.get("content")
        if content is None:
            text = ""
        elif isinstance(content, str):
            text = content
        elif isinstance(content, list):  # content parts, as some servers answer
            text = "".join(
                p["text"]
                for p in content
                if isinstance(p, dict)
                and p.get("type") == "text"
                and isinstance(p.get("text"), str)
            )
        else:
            raise self._bad("choices[0].message.content is not text", attempts)
        calls = message.get("tool_calls") or []
        if not isinstance(calls, list) or not all(isinstance(c, dict) for c in calls):
            raise self._bad("choices[0].message.tool_calls is not a list of objects", attempts)
        model = data.get("model")
        return ModelTurn(
            message=message,
            text=text,
            tool_calls=calls,
            usage=_usage(data, "prompt_tokens", "completion_tokens"),
            stop_reason=str(choice.get("finish_reason") or ""),
            model=model if isinstance(model, str) and model else self.model,
        )

    def answers_messages(self, answers: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The answers themselves: they are ``role: "tool"`` messages."""
        return list(answers)


class AnthropicMessages(_HTTPClient):
    """An Anthropic Messages client: ``POST {base_url}/v1/messages``.

    ``model``, ``base_url`` and ``api_key`` default to the environment's
    ``ANTHROPIC_MODEL``, ``ANTHROPIC_BASE_URL`` (else
    ``https://api.anthropic.com``) and ``ANTHROPIC_API_KEY`` (sent as
    ``x-api-key``).  ``max_tokens`` is the default for calls that give none.
    """

    shape: ClassVar[Literal["anthropic"]] = "anthropic"
    _path = "/v1/messages"
    version = "2023-06-01"

    def __init__(
        self,
        model: str | None = None,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout: float = 60.0,
        max_retries: int = 3,
        backoff: float = 0.5,
        backoff_max: float = 8.0,
        headers: dict[str, str] | None = None,
        extra_body: dict[str, Any] | None = None,
        max_tokens: int = 4096,
    ) -> None:
        model = model or _env("ANTHROPIC_MODEL")
        if not model:
            raise ValueError("no model: pass model= or set ANTHROPIC_MODEL")
        key = _env("ANTHROPIC_API_KEY") if api_key is None else api_key
        hdrs = {"anthropic-version": self.version}
        if key:
            hdrs["x-api-key"] = key
        hdrs.update({k.lower(): v for k, v in (headers or {}).items()})
        self.max_tokens = max_tokens
        super().__init__(
            model,
            base_url or _env("ANTHROPIC_BASE_URL") or "https://api.anthropic.com",
            timeout=timeout,
            max_retries=max_retries,
            backoff=backoff,
            backoff_max=backoff_max,
            headers=hdrs,
            extra_body=extra_body,
        )

    async def complete(
        self,
        messages: list[dict[str, Any]],
        *,
        tools: list[dict[str, Any]] | None = None,
        system: str | None = None,
        timeout: float | None = None,
        max_tokens: int | None = None,
    ) -> ModelTurn:
        """The model's next turn."""
        body: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "max_tokens": self.max_tokens if max_tokens is None else max_tokens,
        }
        if system:
            body["system"] = system
        if tools:
            body["tools"] = tools
        body.update(self.extra_body)
        return self._turn(*await self._post(body, timeout))

    def _turn(self, data: dict[str, Any], attempts: int) -> ModelTurn:
        content = data.get("content")
        if not isinstance(content, list) or not all(isinstance(b, dict) for b in content):
            raise self._bad("no content list", attempts)
        text = "".join(
            b["text"] for b in content if b.get("type") == "text" and isinstance(b.get("text"), str)
        )
        calls = [b for b in content if b.get("type") == "tool_use"]
        model = data.get("model")
        return ModelTurn(
            message={"role": data.get("role") or "assistant", "content": content},
            text=text,
            tool_calls=calls,
            usage=_usage(data, "input_tokens", "output_tokens"),
            stop_reason=str(data.get("stop_reason") or ""),
            model=model if isinstance(model, str) and model else self.model,
        )

    def answers_messages(self, answers: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """One user message whose content is the answers (``tool_result`` blocks)."""
        return [{"role": "user", "content": list(answers)}] if answers else []


# --- from configuration -------------------------------------------------------------

_KINDS: dict[str, type[OpenAIChat | AnthropicMessages]] = {
    "openai": OpenAIChat,
    "anthropic": AnthropicMessages,
}
_CONFIG_KEYS = ("kind", "model", "base_url", "api_key_env", "timeout", "max_retries")


def client_from_config(spec: Mapping[str, Any], *, path: str = "") -> ModelClient:
    """A client from a config table: ``kind`` (``"openai"``, the default, or
    ``"anthropic"``), ``model``, ``base_url``, ``api_key_env`` (the name of the
    environment variable that holds the key), ``timeout``, ``max_retries``.

    An unknown key, a value of the wrong type or a named key variable that is
    not set raises :class:`~agentrt.errors.ConfigError` naming the key
    (prefixed with ``path``).
    """

    def key(name: str) -> str:
        return f"{path}.{name}" if path else name

    for k in spec:
        if k not in _CONFIG_KEYS:
            near = difflib.get_close_matches(str(k), _CONFIG_KEYS, n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            raise ConfigError(key(str(k)), f"unknown key{hint}; known: {', '.join(_CONFIG_KEYS)}")
    for k in ("kind", "model", "base_url", "api_key_env"):
        if k in spec and not isinstance(spec[k], str):
            raise ConfigError(key(k), f"must be a string, got {type(spec[k]).__name__}")
    kind = spec.get("kind", "openai")
    if kind not in _KINDS:
        raise ConfigError(key("kind"), f"must be one of {', '.join(_KINDS)}, got {kind!r}")
    kw: dict[str, Any] = {}
    timeout = spec.get("timeout")
    if timeout is not None:
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
            raise ConfigError(key("timeout"), f"must be a number of seconds > 0, got {timeout!r}")
        kw["timeout"] = float(timeout)
    retries = spec.get("max_retries")
    if retries is not None:
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ConfigError(key("max_retries"), f"must be an integer >= 0, got {retries!r}")
        kw["max_retries"] = retries
    env = spec.get("api_key_env")
    if env is not None:
        value = os.environ.get(env)
        if not value:
            raise ConfigError(key("api_key_env"), f"environment variable {env} is not set")
        kw["api_key"] = value
    try:
        return _KINDS[kind](spec.get("model"), base_url=spec.get("base_url"), **kw)
    except ValueError as e:
        raise ConfigError(key("model"), str(e)) from e
