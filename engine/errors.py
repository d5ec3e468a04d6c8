"""The engine's whole exception tree, in one place.

Every failure a caller can see is one of these; lower libraries' errors (httpx, aiohttp,
pydantic, yaml) are translated at the boundary into the most specific class here, the way
httpx translates its transports' errors.

    EngineError
    ├── ConfigError                    config files or objects are invalid (carries diagnostics)
    ├── RequestError                   the caller's request is invalid (HTTP 400)
    │   ├── UnknownPolicyError         no such policy (HTTP 404)
    │   ├── UnknownModelError          no such model / provider pin (HTTP 404)
    │   ├── TemplateRenderError        the policy's template cannot render with the
    │                                  request's variables (names the template and why)
    │   └── UnservableRequestError     no candidate can ever serve it (a capability no
    │                                  model has, more tokens than every window); also a
    │                                  NoCandidateError
    ├── RoutingError                   no candidate could be chosen
    │   ├── NoCandidateError           every candidate was filtered out (lists why)
    │   └── BudgetExceededError        the request or workspace budget does not allow the call
    ├── ProviderError                  one attempt at one provider failed
    │   ├── RateLimitedError           429 / quota; retryable, may carry retry_after
    │   ├── UnavailableError           5xx, 529 overloaded, connection refused/reset; retryable
    │   ├── ProviderTimeoutError       connect / first_token / total timeout; retryable
    │   ├── ProtocolError              unparseable body, truncated stream; retryable
    │   ├── AuthenticationError        401: bad key; skip the key, never retried
    │   ├── PermissionDeniedError      403
    │   ├── ModelNotFoundError         404 for the model
    │   ├── ContextWindowExceededError the prompt does not fit this model
    │   ├── ContentFilteredError       the provider refused on content grounds
    │   ├── InvalidRequestError        400 that no other provider would accept either
    │   └── CircuitOpenError           the breaker is open; no network call was made
    └── AllCandidatesFailedError       every attempt failed; lists each attempt
        └── All<Kind>Error             every attempt failed the same way, e.g.
                                       AllRateLimitedError(AllCandidatesFailedError,
                                       RateLimitedError)

The final error of a call, when every attempt failed, follows one rule (`all_failed`):
when every attempt failed with the same kind (the tries that went out; when none did,
the refusals made here: open breakers, local rate limits), it is
`AllCandidatesFailedError.of(kind)`: a subclass of both AllCandidatesFailedError and that
kind's ProviderError class, with `.attempts`, and the provider, model, retry_after and
phase of the last failure. So
`except RateLimitedError`, `except ProviderTimeoutError`, the builtin `except
TimeoutError` and `except AuthenticationError` catch a call where every attempt was of
that kind, and `except AllCandidatesFailedError` still catches every such call. When the
attempts differ, it is a plain AllCandidatesFailedError.

No message ever contains an API key or a prompt: messages are built from provider names,
statuses and provider error texts passed through `redact`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from engine.secrets import redact

if TYPE_CHECKING:
    from engine.messages import RateLimitInfo


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """One problem found in configuration, located as precisely as the input allows."""

    message: str
    file: str | None = None
    line: int | None = None
    column: int | None = None
    path: str = ""
    hint: str | None = None
    severity: str = "error"  # "error" or "warning"

    def format(self) -> str:
        """`file:line:column: json.path: message (hint)` as editors and CI expect."""
        loc = ":".join(str(p) for p in (self.file, self.line, self.column) if p is not None)
        parts = [p for p in (loc, self.path) if p]
        head = ": ".join(parts)
        text = f"{head}: {self.message}" if head else self.message
        if self.severity != "error":
            text = f"{text} [{self.severity}]"
        return f"{text} (hint: {self.hint})" if self.hint else text

    def as_dict(self) -> dict[str, Any]:
        return {
            "severity": self.severity,
            "file": self.file,
            "line": self.line,
            "column": self.column,
            "path": self.path,
            "message": self.message,
            "hint": self.hint,
        }


class EngineError(Exception):
    """Root of every error the engine raises on purpose."""


class ConfigError(EngineError):
    """Configuration is invalid; `diagnostics` lists every problem found, not just the first."""

    def __init__(self, diagnostics: Sequence[Diagnostic]) -> None:
        self.diagnostics = tuple(diagnostics)
        errors = [d for d in self.diagnostics if d.severity == "error"]
        first = errors[0].format() if errors else "invalid configuration"
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        super().__init__(first + more)


class RequestError(EngineError):
    """The caller's request cannot be served as written."""

    status = 400


class UnknownPolicyError(RequestError):
    status = 404


class UnknownModelError(RequestError):
    status = 404


class TemplateRenderError(RequestError):
    """A policy's template failed to render with this request's variables: a variable
    missing, or one of the wrong type for what the template does with it (`count + 1` with
    a string). The message names the policy, the template and why; HTTP 400."""


class RoutingError(EngineError):
    """Selection produced nothing to call."""

    status = 503


class NoCandidateError(RoutingError):
    """Every candidate was eliminated; `eliminated` maps model id to the reason."""

    def __init__(self, message: str, eliminated: dict[str, str] | None = None) -> None:
        self.eliminated = dict(eliminated or {})
        super().__init__(message)


class BudgetExceededError(RoutingError):
    status = 429


class UnservableRequestError(RequestError, NoCandidateError):
    """No candidate can ever serve the request as written: every one lacks a capability
    it needs or a window for its tokens. A 400 (retrying cannot help), and still a
    NoCandidateError with `eliminated` saying why for each model."""

    status = 400


class ProviderError(EngineError):
    """One attempt at one provider failed. Adapters raise these; the runtime decides what next."""

    retryable: bool = False
    status: int | None = None
    kind: str = "provider_error"
    rate_limit: RateLimitInfo | None = None  # what the failing answer's headers said, if any
    #: False when the request never left this machine (refused, unreachable, connect timed
    #: out, unsendable header): the provider did no work, so the attempt cost nothing.
    reached: bool = True
    #: Which phase timed out (ProviderTimeoutError): "connect", "first_token", "total", or
    #: "pool" (no pooled connection came free in time: local congestion, not the
    #: provider's fault, so it never feeds a breaker). None for other errors.
    phase: str | None = None

    def __init__(
        self,
        message: str,
        *,
        provider: str = "",
        model: str = "",
        status: int | None = None,
        retry_after: float | None = None,
        code: str | None = None,
    ) -> None:
        self.provider = provider
        self.model = model
        if status is not None:
            self.status = status
        self.retry_after = retry_after
        self.code = code
        super().__init__(redact(message))

    def __repr__(self) -> str:
        name = type(self).__name__
        return f"{name}({str(self)!r}, provider={self.provider!r}, status={self.status})"

    @property
    def unreachable(self) -> bool:
        """The provider itself could not be reached (refused, DNS, TLS, proxy, connect
        timeout): true of every model it serves, so a call skips its other candidates."""
        return not self.reached and self.kind in _UNREACHABLE_KINDS and self.phase != "pool"


class RateLimitedError(ProviderError):
    retryable = True
    status = 429
    kind = "rate_limited"


class UnavailableError(ProviderError):
    retryable = True
    status = 503
    kind = "unavailable"


class ProviderTimeoutError(ProviderError, TimeoutError):
    """`phase` is "connect", "first_token", "total" or "pool" (see ProviderError.phase).

    Also a builtin TimeoutError, so code written as `except TimeoutError` keeps working.
    """

    retryable = True
    status = 504
    kind = "timeout"

    def __init__(self, message: str, *, phase: str = "total", **kw: Any) -> None:
        self.phase = phase
        super().__init__(message, **kw)


class ProtocolError(ProviderError):
    retryable = True
    status = 502
    kind = "protocol_error"


class AuthenticationError(ProviderError):
    status = 401
    kind = "authentication"


class PermissionDeniedError(ProviderError):
    status = 403
    kind = "permission_denied"


class ModelNotFoundError(ProviderError):
    status = 404
    kind = "model_not_found"


class ContextWindowExceededError(ProviderError):
    status = 400
    kind = "context_window_exceeded"


class ContentFilteredError(ProviderError):
    status = 400
    kind = "content_filtered"


class InvalidRequestError(ProviderError):
    status = 400
    kind = "invalid_request"


class CircuitOpenError(ProviderError):
    status = 503
    kind = "circuit_open"


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    """One try at one candidate: what was called, how it ended and how long it took."""

    provider: str
    model: str
    outcome: str  # "ok" or an error kind such as "rate_limited"
    error: str | None = None
    latency_ms: float = 0.0
    retry: int = 0
    fallback_index: int = 0
    key_id: str | None = None
    status: int | None = None


def _qualified(a: AttemptRecord) -> str:
    """`provider/model`, whether the record holds the model's full id or its bare name."""
    return a.model if a.model.startswith(f"{a.provider}/") else f"{a.provider}/{a.model}"


class AllCandidatesFailedError(EngineError):
    """Every candidate failed; `attempts` lists each try in order.

    Build the final error of a call with `all_failed`, which picks the typed subclass
    when every attempt failed the same way (see the rule in this module's docstring)."""

    status = 503

    def __init__(self, attempts: Sequence[AttemptRecord], message: str | None = None) -> None:
        self.attempts = tuple(attempts)
        lines = [
            f"{_qualified(a)}: {a.outcome}" + (f" ({a.error})" if a.error else "")
            for a in self.attempts
        ]
        head = message or f"all {len(self.attempts)} attempts failed"
        super().__init__(redact(head + (": " + "; ".join(lines) if lines else "")))
        self.last_status = next(
            (a.status for a in reversed(self.attempts) if a.status is not None), None
        )

    @staticmethod
    def of(kind: str) -> type[AllCandidatesFailedError] | None:
        """The subclass for calls whose every attempt failed with `kind` (None: no class
        for that kind, e.g. a budget or a skip)."""
        return _ALL_FAILED.get(kind)


#: Outcomes of candidates passed over for reasons that say nothing about how calls fail.
_NOT_TRIED = frozenset({"skipped", "disabled", "budget_exceeded", "context_window_exceeded"})


def _failed_kinds(attempts: Sequence[AttemptRecord]) -> set[str]:
    """How the calls failed: the outcomes of the tries that went out (they carry a key);
    when none did, of the refusals made here (open breakers, local rate limits)."""
    sent = {a.outcome for a in attempts if a.key_id is not None}
    return sent or {a.outcome for a in attempts if a.outcome not in _NOT_TRIED}


def all_failed(
    attempts: Sequence[AttemptRecord], last: ProviderError | None = None
) -> AllCandidatesFailedError:
    """The final error of a call whose every attempt failed: `AllCandidatesFailedError.of`
    the one kind they share (skips aside: `_failed_kinds`), carrying the provider, model,
    phase and retry_after of `last` (the latest failure), else a plain
    AllCandidatesFailedError."""
    kinds = _failed_kinds(attempts)
    typed = AllCandidatesFailedError.of(kinds.pop()) if len(kinds) == 1 else None
    if typed is None:
        return AllCandidatesFailedError(attempts)
    err = typed(attempts)
    if isinstance(err, ProviderError) and last is not None and last.kind == err.kind:
        err.provider, err.model, err.code = last.provider, last.model, last.code
        err.retry_after, err.phase, err.reached = last.retry_after, last.phase, last.reached
    return err


def _all_failed_class(cls: type[ProviderError]) -> type[AllCandidatesFailedError]:
    """`All<Kind>Error(AllCandidatesFailedError, <Kind>Error)`: both at once. Its status is
    the kind's; `str()` lists every attempt."""
    name = "All" + cls.__name__.removeprefix("Provider")
    typed = type(
        name, (AllCandidatesFailedError, cls), {"status": cls.status, "__module__": __name__}
    )
    return typed


_ALL_FAILED: dict[str, type[AllCandidatesFailedError]] = {
    cls.kind: _all_failed_class(cls)
    for cls in (
        RateLimitedError,
        UnavailableError,
        ProviderTimeoutError,
        ProtocolError,
        AuthenticationError,
        PermissionDeniedError,
        ModelNotFoundError,
        ContextWindowExceededError,
        ContentFilteredError,
        InvalidRequestError,
        CircuitOpenError,
    )
}
globals().update({c.__name__: c for c in _ALL_FAILED.values()})  # importable by name
_UNREACHABLE_KINDS = frozenset({UnavailableError.kind, ProviderTimeoutError.kind})


__all__ = [
    "AllCandidatesFailedError",
    "AttemptRecord",
    "AuthenticationError",
    "BudgetExceededError",
    "CircuitOpenError",
    "ConfigError",
    "ContentFilteredError",
    "ContextWindowExceededError",
    "Diagnostic",
    "EngineError",
    "InvalidRequestError",
    "ModelNotFoundError",
    "NoCandidateError",
    "PermissionDeniedError",
    "ProtocolError",
    "ProviderError",
    "ProviderTimeoutError",
    "RateLimitedError",
    "RequestError",
    "RoutingError",
    "TemplateRenderError",
    "UnavailableError",
    "UnknownModelError",
    "UnknownPolicyError",
    "UnservableRequestError",
    "all_failed",
    "redact",
]
