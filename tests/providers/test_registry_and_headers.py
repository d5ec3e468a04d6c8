"""The adapter registry and the rate-limit/retry header parsers."""

from __future__ import annotations

import pytest
from multidict import CIMultiDict

from engine.errors import UnknownModelError
from engine.providers import get_adapter, protocols, register_adapter
from engine.providers.mock import MockAdapter
from engine.providers.ratelimits import (
    parse_duration,
    parse_rate_limit,
    parse_retry_after,
    retry_delay_from_google_details,
)


def test_builtin_protocols_are_shared_instances() -> None:
    """get_adapter returns one shared instance per protocol, for every built-in protocol."""
    for name in ("openai", "azure", "anthropic", "gemini", "ollama", "mock"):
        assert get_adapter(name) is get_adapter(name)
        assert get_adapter(name).protocol == name


def test_unknown_protocol_names_the_known_ones() -> None:
    """An unknown protocol is a precise error listing what exists."""
    with pytest.raises(UnknownModelError, match="openai") as info:
        get_adapter("carrier-pigeon")
    assert isinstance(info.value, LookupError)


def test_register_adapter_plugs_in_a_custom_one() -> None:
    """A registered adapter is returned for its protocol name."""
    custom = MockAdapter()
    register_adapter("custom-test", custom)
    assert get_adapter("custom-test") is custom and "custom-test" in protocols()


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("6m0s", 360.0),
        ("1s", 1.0),
        ("12ms", 0.012),
        ("1h2m3.5s", 3723.5),
        ("2.5", 2.5),
        ("", None),
        ("soon", None),
    ],
)
def test_go_durations(text: str, seconds: float | None) -> None:
    """Go-style reset durations parse to seconds; junk parses to None."""
    assert parse_duration(text) == seconds


def test_openai_headers() -> None:
    """x-ratelimit-* headers fill the request and token fields."""
    info = parse_rate_limit(
        CIMultiDict(
            {
                "X-RateLimit-Limit-Requests": "60",
                "x-ratelimit-remaining-requests": "59",
                "x-ratelimit-reset-requests": "1s",
                "x-ratelimit-limit-tokens": "150000",
                "x-ratelimit-remaining-tokens": "149984",
                "x-ratelimit-reset-tokens": "6m0s",
            }
        )
    )
    assert info is not None
    assert (info.limit_requests, info.remaining_requests, info.reset_requests_s) == (60, 59, 1.0)
    assert (info.limit_tokens, info.remaining_tokens, info.reset_tokens_s) == (
        150000,
        149984,
        360.0,
    )


def test_anthropic_headers_reset_timestamps() -> None:
    """anthropic-ratelimit-* resets are RFC 3339 times turned into seconds from now."""
    info = parse_rate_limit(
        CIMultiDict(
            {
                "anthropic-ratelimit-requests-limit": "50",
                "anthropic-ratelimit-requests-remaining": "49",
                "anthropic-ratelimit-requests-reset": "2026-01-01T00:00:30Z",
                "anthropic-ratelimit-input-tokens-remaining": "30000",
                "anthropic-ratelimit-output-tokens-remaining": "8000",
            }
        ),
        now=1767225600.0,
    )  # 2026-01-01T00:00:00Z
    assert info is not None
    assert info.remaining_requests == 49 and info.reset_requests_s == 30.0
    assert info.remaining_input_tokens == 30000 and info.remaining_output_tokens == 8000


def test_retry_after_forms() -> None:
    """retry-after-ms wins; retry-after is seconds or an HTTP date."""
    assert parse_retry_after(CIMultiDict({"retry-after-ms": "1500", "retry-after": "9"})) == 1.5
    assert parse_retry_after(CIMultiDict({"retry-after": "9"})) == 9.0
    date = parse_retry_after(
        CIMultiDict({"retry-after": "Thu, 01 Jan 2026 00:00:20 GMT"}), now=1767225600.0
    )
    assert date == 20.0
    assert parse_retry_after(CIMultiDict({"retry-after": "whenever"})) is None


def test_no_headers_no_info() -> None:
    """Answers without rate-limit headers give None (nothing to tell the limiter)."""
    assert parse_rate_limit(CIMultiDict({"content-type": "application/json"})) is None


def test_google_retry_info() -> None:
    """Gemini's RetryInfo.retryDelay in error details gives the retry delay."""
    details = [
        {"@type": "type.googleapis.com/google.rpc.QuotaFailure"},
        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "53s"},
    ]
    assert retry_delay_from_google_details(details) == 53.0
    assert retry_delay_from_google_details("nope") is None
