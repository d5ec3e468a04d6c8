"""parse_rate_limit's branches: OpenAI-style headers alone (the fast path) and mixed with
retry-after or Anthropic's headers (the general merge), each equal to what the headers say."""

from __future__ import annotations

from multidict import CIMultiDict

from engine.messages import RateLimitInfo
from engine.providers.ratelimits import parse_rate_limit

OPENAI = {
    "x-ratelimit-limit-requests": "100",
    "x-ratelimit-remaining-requests": "99",
    "x-ratelimit-reset-requests": "600ms",
    "x-ratelimit-limit-tokens": "1000",
    "x-ratelimit-remaining-tokens": "990",
    "x-ratelimit-reset-tokens": "1m0s",
}


def test_openai_headers_with_retry_after() -> None:
    """retry-after joins the x-ratelimit-* figures in one RateLimitInfo."""
    info = parse_rate_limit(CIMultiDict({**OPENAI, "retry-after": "3"}))
    assert info == RateLimitInfo(100, 99, 0.6, None, None, None, None, 1000, 990, 60.0, 3.0)


def test_retry_after_alone() -> None:
    """Only a retry-after (a 429 without x-ratelimit-*): just the pause."""
    assert parse_rate_limit(CIMultiDict({"retry-after-ms": "250"})) == RateLimitInfo(
        retry_after_s=0.25
    )
    assert parse_rate_limit(CIMultiDict({"retry-after": "soon"})) is None


def test_partial_and_unparseable_openai_headers() -> None:
    """Fields the headers leave out stay None; figures that do not parse give nothing."""
    info = parse_rate_limit(CIMultiDict({"x-ratelimit-remaining-tokens": "5"}))
    assert info == RateLimitInfo(remaining_tokens=5)
    assert parse_rate_limit(CIMultiDict({"x-ratelimit-remaining-requests": "n/a"})) is None
    azure = {"x-ratelimit-remaining-tokens": "5", "x-rate-limit-reset-tokens": "2s"}
    assert parse_rate_limit(CIMultiDict(azure)) == RateLimitInfo(
        remaining_tokens=5, reset_tokens_s=2.0
    )


def test_anthropic_and_openai_headers_together_merge_as_before() -> None:
    """Both families present: Anthropic's reading wins field by field (the general path)."""
    headers = {**OPENAI, "anthropic-ratelimit-requests-remaining": "7"}
    info = parse_rate_limit(CIMultiDict(headers), now=0.0)
    assert info is not None
    assert info.remaining_requests == 7 and info.limit_requests is None
    assert info.limit_tokens is None and info.reset_requests_s is None
