"""Parse providers' rate-limit and retry hints into `RateLimitInfo`.

Sources: OpenAI/Azure/Groq `x-ratelimit-*` (resets as Go durations such as `6m0s`),
Azure's hyphenated `x-rate-limit-reset-tokens`, Anthropic `anthropic-ratelimit-*` (resets as
RFC 3339 timestamps), `retry-after-ms` and `retry-after` (seconds or an HTTP date), and
Gemini's `RetryInfo.retryDelay` in an error body. Pure functions: the runtime's rate limiter
gets plain numbers and never sees a header.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from datetime import datetime
from email.utils import parsedate_to_datetime
from functools import lru_cache
from typing import Any

from engine.frozen import builder
from engine.messages import RateLimitInfo

__all__ = [
    "parse_duration",
    "parse_rate_limit",
    "parse_retry_after",
    "retry_delay_from_google_details",
]

#: RateLimitInfo(...), built without a frozen dataclass's per-field cost (see engine.frozen).
_rate_limit_info = builder(RateLimitInfo)

_GO_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNIT_S = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


@lru_cache(maxsize=512)  # pure; a provider repeats the same few values on every answer
def parse_duration(text: str) -> float | None:
    """Seconds in a Go-style duration (`6m0s`, `1.5s`, `12ms`) or a bare number of seconds."""
    text = text.strip()
    if not text:
        return None
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    parts = _GO_DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        return None
    return sum(float(n) * _UNIT_S[u] for n, u in parts)


def _seconds_until(stamp: str, now: float) -> float | None:
    """Seconds from `now` until an RFC 3339 timestamp (Anthropic's reset headers)."""
    try:
        moment = datetime.fromisoformat(stamp.strip().replace("Z", "+00:00"))
    except ValueError:
        return parse_duration(stamp)
    if moment.tzinfo is None:
        return None
    return max(0.0, moment.timestamp() - now)


def parse_retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """`retry-after-ms` first, then `retry-after` as seconds or an HTTP date (as the SDKs do)."""
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, moment.timestamp() - (time.time() if now is None else now))


def _int(headers: Mapping[str, str], name: str) -> int | None:
    value = headers.get(name)
    if value is None:
        return None
    try:
        return int(float(value))
    except ValueError:
        return None


def _duration(headers: Mapping[str, str], *names: str) -> float | None:
    for name in names:
        value = headers.get(name)
        if value is not None:
            return parse_duration(value)
    return None


def _anthropic(headers: Mapping[str, str], now: float) -> dict[str, Any]:
    def reset(kind: str) -> float | None:
        value = headers.get(f"anthropic-ratelimit-{kind}-reset")
        return None if value is None else _seconds_until(value, now)

    p = "anthropic-ratelimit-"
    return {
        "limit_requests": _int(headers, p + "requests-limit"),
        "remaining_requests": _int(headers, p + "requests-remaining"),
        "reset_requests_s": reset("requests"),
        "limit_tokens": _int(headers, p + "tokens-limit"),
        "remaining_tokens": _int(headers, p + "tokens-remaining"),
        "reset_tokens_s": reset("tokens") or reset("input-tokens"),
        "limit_input_tokens": _int(headers, p + "input-tokens-limit"),
        "remaining_input_tokens": _int(headers, p + "input-tokens-remaining"),
        "limit_output_tokens": _int(headers, p + "output-tokens-limit"),
        "remaining_output_tokens": _int(headers, p + "output-tokens-remaining"),
    }


def _openai(headers: Mapping[str, str]) -> dict[str, Any]:
    p = "x-ratelimit-"
    return {
        "limit_requests": _int(headers, p + "limit-requests"),
        "remaining_requests": _int(headers, p + "remaining-requests"),
        "reset_requests_s": _duration(headers, p + "reset-requests"),
        "limit_tokens": _int(headers, p + "limit-tokens"),
        "remaining_tokens": _int(headers, p + "remaining-tokens"),
        "reset_tokens_s": _duration(headers, p + "reset-tokens", "x-rate-limit-reset-tokens"),
    }


def parse_rate_limit(headers: Mapping[str, str], now: float | None = None) -> RateLimitInfo | None:
    """Every limit the headers state, or None when they state none (the common cheap case).

    `headers` must look names up case-insensitively (aiohttp's CIMultiDict does).
    """
    if (
        "anthropic-ratelimit-requests-remaining" in headers
        or "anthropic-ratelimit-tokens-remaining" in headers
        or "anthropic-ratelimit-input-tokens-remaining" in headers
    ):
        return _general(headers, time.time() if now is None else now)
    # Every answer of every OpenAI-style provider comes here: read only the headers that
    # are present and build the result once (no dict of fields, no ** call).
    retry_s = None
    if "retry-after-ms" in headers or "retry-after" in headers:
        retry_s = parse_retry_after(headers, now)
    if "x-ratelimit-remaining-requests" in headers or "x-ratelimit-remaining-tokens" in headers:
        return _openai_info(headers, retry_s)
    return None if retry_s is None else _rate_limit_info(retry_after_s=retry_s)


def _openai_info(headers: Mapping[str, str], retry_s: float | None) -> RateLimitInfo | None:
    """_openai's fields (and retry-after) as a RateLimitInfo, without the dict in between."""
    get = headers.get
    lr, rr = get("x-ratelimit-limit-requests"), get("x-ratelimit-remaining-requests")
    lt, rt = get("x-ratelimit-limit-tokens"), get("x-ratelimit-remaining-tokens")
    try:  # _int's parsing for all four at once (they parse, as a rule): no call per figure
        limit_requests = None if lr is None else int(float(lr))
        remaining_requests = None if rr is None else int(float(rr))
        limit_tokens = None if lt is None else int(float(lt))
        remaining_tokens = None if rt is None else int(float(rt))
    except ValueError:  # one does not: each on its own, the bad ones as None
        limit_requests = _int(headers, "x-ratelimit-limit-requests")
        remaining_requests = _int(headers, "x-ratelimit-remaining-requests")
        limit_tokens = _int(headers, "x-ratelimit-limit-tokens")
        remaining_tokens = _int(headers, "x-ratelimit-remaining-tokens")
    value = get("x-ratelimit-reset-requests")
    reset_requests = None if value is None else parse_duration(value)
    value = get("x-ratelimit-reset-tokens")
    if value is None:
        value = get("x-rate-limit-reset-tokens")
    reset_tokens = None if value is None else parse_duration(value)
    if (
        limit_requests is None
        and remaining_requests is None
        and reset_requests is None
        and limit_tokens is None
        and remaining_tokens is None
        and reset_tokens is None
        and retry_s is None
    ):
        return None  # present but unparseable
    return _rate_limit_info(
        limit_requests,
        remaining_requests,
        reset_requests,
        None,
        None,
        None,
        None,
        limit_tokens,
        remaining_tokens,
        reset_tokens,
        retry_s,
    )


def _general(headers: Mapping[str, str], moment: float) -> RateLimitInfo | None:
    """Any mix of the header families (Anthropic's, OpenAI's, retry-after), merged."""
    fields: dict[str, Any] = {}
    if "x-ratelimit-remaining-requests" in headers or "x-ratelimit-remaining-tokens" in headers:
        fields.update(_openai(headers))
    if "anthropic-ratelimit-requests-remaining" in headers or (
        "anthropic-ratelimit-tokens-remaining" in headers
        or "anthropic-ratelimit-input-tokens-remaining" in headers
    ):
        fields.update(_anthropic(headers, moment))
    retry = parse_retry_after(headers, moment)
    if retry is not None:
        fields["retry_after_s"] = retry
    # Unset fields default to None, so None values need no filtering out.
    return RateLimitInfo(**fields) if any(v is not None for v in fields.values()) else None


def retry_delay_from_google_details(details: Any) -> float | None:
    """`retryDelay` of a `google.rpc.RetryInfo` entry in a Google error's `details` list."""
    if not isinstance(details, list):
        return None
    for item in details:
        if isinstance(item, dict) and str(item.get("@type", "")).endswith("google.rpc.RetryInfo"):
            delay = item.get("retryDelay")
            if isinstance(delay, str):
                return parse_duration(delay)
    return None
