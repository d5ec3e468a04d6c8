"""Failure classification: real providers' statuses, codes and messages map to the right
engine error (table taken from the wire-format reference)."""

from __future__ import annotations

import pytest

from engine.errors import (
    AuthenticationError,
    ContentFilteredError,
    ContextWindowExceededError,
    InvalidRequestError,
    ModelNotFoundError,
    PermissionDeniedError,
    ProviderError,
    RateLimitedError,
    UnavailableError,
)
from engine.providers.failures import classify, error_from_body

from .conftest import CANARY, endpoint

EP = endpoint("http://127.0.0.1:1")

CASES: list[tuple[int, str, str | None, type[ProviderError]]] = [
    (401, "Incorrect API key provided: sk-abc***xyz.", "invalid_api_key", AuthenticationError),
    (
        400,
        "API key not valid. Please pass a valid API key.",
        "API_KEY_INVALID",
        AuthenticationError,
    ),
    (403, "Country, region, or territory not supported", None, PermissionDeniedError),
    (
        404,
        "The model `gpt-9` does not exist or you do not have access to it.",
        "model_not_found",
        ModelNotFoundError,
    ),
    (404, 'model "llama3" not found, try pulling it first', None, ModelNotFoundError),
    (
        404,
        "The API deployment for this resource does not exist.",
        "DeploymentNotFound",
        ModelNotFoundError,
    ),
    (404, "Resource not found", "404", InvalidRequestError),
    (
        429,
        "You exceeded your current quota, please check your plan.",
        "insufficient_quota",
        RateLimitedError,
    ),
    (402, "Insufficient credits", None, RateLimitedError),
    (
        400,
        "This model's maximum context length is 8192 tokens.",
        "context_length_exceeded",
        ContextWindowExceededError,
    ),
    (
        400,
        "prompt is too long: 208000 tokens > 200000 maximum",
        "invalid_request_error",
        ContextWindowExceededError,
    ),
    (
        400,
        "input length and `max_tokens` exceed context limit: 190000 + 20000 > 200000",
        "invalid_request_error",
        ContextWindowExceededError,
    ),
    (
        400,
        "The input token count (2000000) exceeds the maximum number of tokens allowed (1048576).",
        "INVALID_ARGUMENT",
        ContextWindowExceededError,
    ),
    (500, "Internal error: input context too long", "INTERNAL", ContextWindowExceededError),
    (
        400,
        "The response was filtered due to the prompt triggering Azure OpenAI's content management policy.",
        "content_filter",
        ContentFilteredError,
    ),
    (400, "messages: Unexpected role", "invalid_request_error", InvalidRequestError),
    (422, "Unprocessable entity", None, InvalidRequestError),
    (
        500,
        "The server had an error while processing your request.",
        "server_error",
        UnavailableError,
    ),
    (503, "The engine is currently overloaded", None, UnavailableError),
    (529, "Overloaded", "overloaded_error", UnavailableError),
    (0, "Overloaded", None, UnavailableError),
]


@pytest.mark.parametrize(("status", "message", "code", "expected"), CASES)
def test_classification(
    status: int, message: str, code: str | None, expected: type[ProviderError]
) -> None:
    """Each real-world failure lands in the most specific engine error class."""
    err = classify(EP, status, message, code)
    assert type(err) is expected
    assert err.provider == EP.provider and err.model == EP.upstream_model


def test_classified_message_is_redacted_with_the_endpoint_key() -> None:
    """The endpoint's own key is masked even when it does not look like a key."""
    err = classify(EP, 401, f"bad key {CANARY}", f"code-{CANARY}")
    assert CANARY not in str(err) and CANARY not in (err.code or "")


@pytest.mark.parametrize("offset", [290, 295, 299])
def test_a_key_straddling_the_excerpt_cut_leaks_no_prefix(offset: int) -> None:
    """A non-JSON error body is redacted before it is cut to 300 characters: a key that
    straddles the cut leaves no prefix behind (the cut used to come first)."""
    key = "sk-proj-Zq8Xw2Lm9Rt4Yv6Bn1Kc3"
    ep = endpoint("http://127.0.0.1:1", key=key)
    body = ("<html>" + "x" * (offset - 6) + key + " more html</html>").encode()
    err = error_from_body(ep, 502, body, None, lambda *a: AssertionError("not JSON"))
    tail = str(err)[str(err).rfind("x") + 1 :]  # what follows the padding, up to the cut
    assert tail.startswith("*"), tail  # the redaction mark, never the key's first letters
    assert "sk-" not in str(err)
