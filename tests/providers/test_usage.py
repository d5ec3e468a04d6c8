"""Token usage as each provider reports it, normalised: cache reads, cache writes and
thinking tokens land where billing expects them."""

from __future__ import annotations

from engine.messages import Usage
from engine.providers.anthropic import parse_message
from engine.providers.gemini import parse_response
from engine.providers.openai import parse_completion

from .conftest import endpoint

EP = endpoint("http://127.0.0.1:1")


def test_openai_cached_prompt_tokens() -> None:
    """prompt_tokens includes cached tokens; cached_tokens is reported separately."""
    resp = parse_completion(
        EP,
        {
            "id": "x",
            "model": "m",
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "message": {"role": "assistant", "content": "hi"},
                }
            ],
            "usage": {
                "prompt_tokens": 1200,
                "completion_tokens": 5,
                "total_tokens": 1205,
                "prompt_tokens_details": {"cached_tokens": 1024},
            },
        },
        None,
    )
    assert resp.usage == Usage(1200, 5, cache_read_tokens=1024)


def test_anthropic_cache_fields_add_to_input() -> None:
    """Anthropic's input_tokens excludes cache reads/writes; the total input adds them."""
    resp = parse_message(
        EP,
        {
            "id": "msg",
            "model": "c",
            "content": [{"type": "text", "text": "hi"}],
            "stop_reason": "end_turn",
            "usage": {
                "input_tokens": 10,
                "output_tokens": 3,
                "cache_creation_input_tokens": 200,
                "cache_read_input_tokens": 1000,
            },
        },
        None,
    )
    assert resp.usage == Usage(1210, 3, cache_read_tokens=1000, cache_write_tokens=200)


def test_gemini_thinking_tokens_count_as_output() -> None:
    """Thoughts are billed as output; cached content is reported as cached input."""
    resp = parse_response(
        EP,
        {
            "candidates": [
                {
                    "content": {
                        "role": "model",
                        "parts": [{"text": "thinking...", "thought": True}, {"text": "Paris."}],
                    },
                    "finishReason": "STOP",
                }
            ],
            "usageMetadata": {
                "promptTokenCount": 83,
                "candidatesTokenCount": 14,
                "thoughtsTokenCount": 104,
                "cachedContentTokenCount": 50,
                "totalTokenCount": 201,
            },
        },
        None,
    )
    assert resp.content == "Paris."
    assert resp.usage == Usage(83, 118, cache_read_tokens=50, reasoning_tokens=104)


def _openai(usage: dict[str, object]) -> Usage:
    choice = {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "x"}}
    return parse_completion(
        EP, {"id": "x", "model": "m", "choices": [choice], "usage": usage}, None
    ).usage


def test_openai_reasoning_tokens_are_part_of_completion_tokens() -> None:
    """o-series: completion_tokens includes reasoning_tokens, reported apart for the breakdown."""
    usage = _openai(
        {
            "prompt_tokens": 10,
            "completion_tokens": 500,
            "completion_tokens_details": {"reasoning_tokens": 448},
        }
    )
    assert usage == Usage(10, 500, reasoning_tokens=448)


def test_deepseek_cache_hits_at_the_top_level() -> None:
    """DeepSeek's OpenAI-compatible usage names cache hits prompt_cache_hit_tokens."""
    usage = _openai(
        {
            "prompt_tokens": 1000,
            "completion_tokens": 10,
            "prompt_cache_hit_tokens": 900,
            "prompt_cache_miss_tokens": 100,
        }
    )
    assert usage == Usage(1000, 10, cache_read_tokens=900)


def test_null_details_count_as_zero() -> None:
    """Details that are null or not objects are no cache and no reasoning."""
    usage = _openai(
        {
            "prompt_tokens": 7,
            "completion_tokens": 2,
            "prompt_tokens_details": None,
            "completion_tokens_details": "n/a",
        }
    )
    assert usage == Usage(7, 2)
