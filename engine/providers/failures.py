"""Map a provider's failure (HTTP status, error code, message) to the engine's error tree.

Each adapter extracts status, message and code from its own error shape; this module
decides the class, so "what counts as a context-window error" is written once. Messages are
redacted with the endpoint's key before they reach an exception (`redact` in errors.py also
masks anything shaped like a key).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import orjson

from engine.endpoints import Endpoint
from engine.errors import (
    AuthenticationError,
    ContentFilteredError,
    ContextWindowExceededError,
    InvalidRequestError,
    ModelNotFoundError,
    PermissionDeniedError,
    ProtocolError,
    ProviderError,
    RateLimitedError,
    UnavailableError,
    redact,
)
from engine.messages import RateLimitInfo
from engine.secrets import option_secrets

__all__ = ["ObjectErrors", "classify", "error_from_body", "protocol_error", "secrets_of"]

#: A protocol's classifier for its own error object: (endpoint, status, object, rate limits).
ObjectErrors = Callable[[Endpoint, int, dict[str, Any], RateLimitInfo | None], ProviderError]

_CONTEXT = re.compile(
    r"context[_ ]length|context[_ ]window|context limit|maximum context|too many tokens|"
    r"prompt is too long|input token count|exceeds the maximum number of tokens|num_ctx|"
    r"context (is )?too long",
    re.IGNORECASE,
)
_FILTER = re.compile(
    r"content[_ ]filter|content management policy|responsibleai|content[_ ]policy",
    re.IGNORECASE,
)
_NOT_FOUND = re.compile(r"model.*not (be )?found|does not exist|deploymentnotfound", re.IGNORECASE)
_AUTH_CODES = frozenset({"invalid_api_key", "api_key_invalid", "authentication_error"})
_QUOTA_CODES = frozenset({"insufficient_quota", "rate_limit_exceeded", "resource_exhausted"})

_BY_STATUS: dict[int, type[ProviderError]] = {
    401: AuthenticationError,
    402: RateLimitedError,  # credits / spend limit exhausted: another key or provider may work
    403: PermissionDeniedError,
    404: ModelNotFoundError,
    408: UnavailableError,
    409: UnavailableError,
    413: ContextWindowExceededError,
    429: RateLimitedError,
}


def secrets_of(endpoint: Endpoint) -> tuple[str, ...]:
    """The values that must never appear in a message about this endpoint: its key and any
    credential header option (a gateway's own key)."""
    key = (endpoint.api_key.reveal(),) if endpoint.api_key else ()
    return key + option_secrets(endpoint.options)


def _class_for(status: int, code: str, message: str) -> type[ProviderError]:
    lowered = code.lower()
    if lowered in _AUTH_CODES:
        return AuthenticationError
    if _FILTER.search(code) or _FILTER.search(message):
        return ContentFilteredError
    if _CONTEXT.search(code) or _CONTEXT.search(message):
        return ContextWindowExceededError
    if status in _BY_STATUS:
        cls = _BY_STATUS[status]
        if cls is ModelNotFoundError and not (_NOT_FOUND.search(message) or "model" in lowered):
            return InvalidRequestError  # a 404 for a path, not for the model
        return cls
    if lowered in _QUOTA_CODES:
        return RateLimitedError
    if status >= 500 or status == 0:
        return UnavailableError
    if _NOT_FOUND.search(message) or "not_found" in lowered:
        return ModelNotFoundError
    return InvalidRequestError


def classify(
    endpoint: Endpoint,
    status: int,
    message: str,
    code: str | None = None,
    *,
    retry_after: float | None = None,
    rate_limit: RateLimitInfo | None = None,
    error_class: type[ProviderError] | None = None,
) -> ProviderError:
    """The most specific ProviderError for this failure; status 0 means "inside a 200 stream"."""
    cls = error_class or _class_for(status, code or "", message)
    if retry_after is None and rate_limit is not None:
        retry_after = rate_limit.retry_after_s
    text = redact(
        f"{endpoint.provider}: {message}" if message else endpoint.provider, secrets_of(endpoint)
    )
    err = cls(
        text,
        provider=endpoint.provider,
        model=endpoint.upstream_model,
        status=status or None,
        retry_after=retry_after,
        code=redact(code, secrets_of(endpoint)) if code else None,
    )
    err.rate_limit = rate_limit
    return err


def error_from_body(
    endpoint: Endpoint,
    status: int,
    body: bytes | str,
    rate_limit: RateLimitInfo | None,
    from_object: ObjectErrors,
) -> ProviderError:
    """An error answer: a JSON object goes to the protocol's `from_object`; anything else (a
    proxy's HTML page...) is classified by its status and its first 300 characters."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        data = None
    if isinstance(data, dict):
        return from_object(endpoint, status, data, rate_limit)
    return classify(
        endpoint, status, f"HTTP {status}: {_excerpt(endpoint, body)}", rate_limit=rate_limit
    )


#: How much of a non-JSON error body is shown, and how much is redacted before that cut.
EXCERPT_CHARS = 300
_REDACT_CHARS = 4096


def _excerpt(endpoint: Endpoint, body: bytes | str) -> str:
    """The first EXCERPT_CHARS of the body, redacted *before* the cut: cutting first left
    the prefix of a key that straddled the cut, which no pattern recognises any more."""
    head = body[:_REDACT_CHARS]
    text = head if isinstance(head, str) else head.decode("utf-8", "replace")
    return redact(text, secrets_of(endpoint))[:EXCERPT_CHARS].strip()


def protocol_error(endpoint: Endpoint, what: str) -> ProtocolError:
    """The answer arrived but cannot be understood (unparseable, truncated, wrong shape)."""
    return ProtocolError(
        redact(f"{endpoint.provider}: {what}", secrets_of(endpoint)),
        provider=endpoint.provider,
        model=endpoint.upstream_model,
    )
