"""The errors of model calls (leaf module: agentrt.errors and the stdlib only).

::

    AgentrtError
    └── ModelError                          a model call failed; ``model``, ``url``, ``attempts``
        ├── ModelHTTPError                  an HTTP error answer; ``status_code``, ``body``
        │   └── ModelRateLimited            429, after the retries were spent
        ├── ModelTimeout (TimeoutError)     the request timed out, after the retries
        └── ModelResponseError              a 2xx answer without the expected shape

A plain :class:`ModelError` is a transport failure (the server could not be
reached, the connection broke), after the retries; the cause is in
``__cause__``.  Every message names the model, the URL and the attempts made.

The HTTP status is ``status_code`` (httpx's name): ``status`` is the short
status word every :class:`~agentrt.errors.AgentrtError` has (``"failed"``,
``"timeout"``, ``"limit"``).
"""

from __future__ import annotations

from typing import Any

from agentrt.errors import AgentrtError

__all__ = [
    "ModelError",
    "ModelHTTPError",
    "ModelRateLimited",
    "ModelResponseError",
    "ModelTimeout",
]

#: how much of an error answer's body an error keeps
BODY_LIMIT = 2000


class ModelError(AgentrtError):
    """A model call failed: ``model`` asked of the server at ``url``, after
    ``attempts`` requests."""

    def __init__(self, message: str, *, model: str = "", url: str = "", attempts: int = 0) -> None:
        super().__init__(message)
        self.model = model
        self.url = url
        self.attempts = attempts

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        d.update(model=self.model, url=self.url, attempts=self.attempts)
        return d


class ModelHTTPError(ModelError):
    """The server answered an HTTP error: one that is not retried (a 4xx other
    than 408, 409 and 429), or a retryable one after the retries were spent.
    ``status_code`` is the HTTP status, ``body`` the answer's body cut to 2,000
    characters."""

    def __init__(self, message: str, *, status_code: int, body: str = "", **kw: Any) -> None:
        super().__init__(message, **kw)
        self.status_code = status_code
        self.body = body[:BODY_LIMIT]

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        d.update(status_code=self.status_code, body=self.body)
        return d


class ModelRateLimited(ModelHTTPError):
    """The server answered 429 (rate limited) to every attempt."""

    status = "limit"


class ModelTimeout(ModelError, TimeoutError):
    """The request did not finish within its ``timeout`` (seconds), on every attempt."""

    status = "timeout"

    def __init__(self, message: str, *, timeout: float | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.timeout = timeout

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        d["timeout"] = self.timeout
        return d


class ModelResponseError(ModelError):
    """The server answered 2xx with a body that is not the expected shape; the
    message names what is missing."""
