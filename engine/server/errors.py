"""Engine exceptions -> OpenAI-format error responses, looked up by walking the exception's MRO.

Like starlette's exception handlers, one entry covers a whole subtree of `engine.errors`, and
the most specific entry wins. The body is OpenAI's `{"error": {message, type, param, code}}`
so the official SDKs raise their usual exception classes. Nothing here ever includes a
traceback; unexpected exceptions become a bare 500 and are logged by the caller.

Upstream authentication failures are the operator's problem (our provider key), not the
client's, so they map to 502 rather than 401.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from engine.errors import (
    AllCandidatesFailedError,
    BudgetExceededError,
    ConfigError,
    EngineError,
    NoCandidateError,
    ProviderError,
    RequestError,
    RoutingError,
    UnknownModelError,
    UnknownPolicyError,
    UnservableRequestError,
    redact,
)


@dataclass(frozen=True, slots=True)
class HTTPError:
    """What the client gets: status, OpenAI error fields and extra headers."""

    status: int
    message: str
    type: str
    code: str | None = None
    param: str | None = None
    retry_after: float | None = None

    def body(self) -> dict[str, object]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    def headers(self) -> dict[str, str]:
        if self.retry_after is None:
            return {}
        return {"retry-after": str(max(1, round(self.retry_after)))}


class ServerError(Exception):
    """An HTTP-level problem found by the server itself (bad JSON, auth, body size)."""

    def __init__(
        self,
        status: int,
        message: str,
        type_: str,
        code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.error = HTTPError(status, message, type_, code, retry_after=retry_after)


#: Provider error kinds -> (status, OpenAI type) as seen by *our* client.
_PROVIDER_KIND: dict[str, tuple[int, str]] = {
    "rate_limited": (429, "rate_limit_error"),
    "timeout": (504, "timeout_error"),
    "unavailable": (503, "api_error"),
    "circuit_open": (503, "api_error"),
    "context_window_exceeded": (400, "invalid_request_error"),
    "content_filtered": (400, "invalid_request_error"),
    "invalid_request": (400, "invalid_request_error"),
}
_CLIENT_KINDS = frozenset({"context_window_exceeded", "content_filtered", "invalid_request"})
_CAPACITY_KINDS = frozenset({"unavailable", "circuit_open", "rate_limited", "timeout"})


def _request(exc: BaseException) -> HTTPError:
    return HTTPError(400, str(exc), "invalid_request_error", "invalid_request")


def _not_found(exc: BaseException) -> HTTPError:
    return HTTPError(404, str(exc), "invalid_request_error", "model_not_found", "model")


def _unservable(exc: BaseException) -> HTTPError:
    return HTTPError(400, str(exc), "invalid_request_error", "no_candidate_can_serve")


def _budget(exc: BaseException) -> HTTPError:
    return HTTPError(429, str(exc), "insufficient_quota", "budget_exceeded")


def _no_candidate(exc: BaseException) -> HTTPError:
    return HTTPError(503, str(exc), "api_error", "no_candidate")


def _routing(exc: BaseException) -> HTTPError:
    return HTTPError(503, str(exc), "api_error", "routing_failed")


def _provider(exc: BaseException) -> HTTPError:
    assert isinstance(exc, ProviderError)
    status, type_ = _PROVIDER_KIND.get(exc.kind, (502, "api_error"))
    return HTTPError(status, str(exc), type_, exc.kind, retry_after=exc.retry_after)


def _all_failed_status(outcomes: set[str]) -> tuple[int, str]:
    """One status for a set of failed attempts: the client's fault, capacity, or upstream."""
    if outcomes and outcomes <= {"timeout"}:
        return 504, "timeout_error"
    if outcomes and outcomes <= {"rate_limited"}:
        return 429, "rate_limit_error"
    if outcomes and outcomes <= _CLIENT_KINDS:
        return 400, "invalid_request_error"
    if outcomes and outcomes <= _CAPACITY_KINDS:
        return 503, "api_error"
    return 502, "api_error"


def _all_failed(exc: BaseException) -> HTTPError:
    assert isinstance(exc, AllCandidatesFailedError)
    status, type_ = _all_failed_status({a.outcome for a in exc.attempts})
    return HTTPError(status, str(exc), type_, "all_candidates_failed")


def _config(exc: BaseException) -> HTTPError:
    return HTTPError(500, "server configuration error", "server_error", "config_error")


def _engine(exc: BaseException) -> HTTPError:
    return HTTPError(500, redact(str(exc)) or "engine error", "server_error")


def _server(exc: BaseException) -> HTTPError:
    assert isinstance(exc, ServerError)
    return exc.error


HANDLERS: dict[type[BaseException], Callable[[BaseException], HTTPError]] = {
    ServerError: _server,
    EngineError: _engine,
    ConfigError: _config,
    RequestError: _request,
    UnknownPolicyError: _not_found,
    UnknownModelError: _not_found,
    RoutingError: _routing,
    NoCandidateError: _no_candidate,
    UnservableRequestError: _unservable,
    BudgetExceededError: _budget,
    ProviderError: _provider,
    AllCandidatesFailedError: _all_failed,
}


def to_http(exc: BaseException) -> HTTPError | None:
    """The most specific handler's answer, or None for an exception we do not expect."""
    for cls in type(exc).__mro__:
        handler = HANDLERS.get(cls)
        if handler is not None:
            return handler(exc)
    return None


INTERNAL = HTTPError(500, "internal server error", "server_error", "internal_error")
