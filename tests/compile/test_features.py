"""features_of: explicit and implied capabilities, token estimate, metadata features."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.messages import parse_request
from engine.plan import features_of
from engine.plan.tokens import text_tokens


def _req(**kw):
    body = {"messages": [{"role": "user", "content": "hello there"}]}
    body.update(kw)
    return parse_request(body)


def test_plain_chat_needs_nothing_special():
    """A plain text request implies no capability and carries no metadata features."""
    f = features_of(_req())
    assert f.capabilities == frozenset()
    assert f.task_type is None and f.workspace is None and f.tags == frozenset()
    assert f.output_tokens is None


def test_implied_capabilities():
    """tools -> tools, image part -> vision, JSON response_format -> json, stream -> streaming."""
    tool = {
        "type": "function",
        "function": {"name": "get_weather", "parameters": {"type": "object"}},
    }
    image = {
        "role": "user",
        "content": [
            {"type": "text", "text": "what is it"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}},
        ],
    }
    f = features_of(
        _req(
            messages=[image],
            tools=[tool],
            response_format={"type": "json_object"},
            stream=True,
            capabilities=["reasoning"],
        )
    )
    assert f.capabilities == frozenset({"tools", "vision", "json", "streaming", "reasoning"})


def test_text_response_format_implies_nothing():
    """response_format text is not a JSON requirement."""
    assert "json" not in features_of(_req(response_format={"type": "text"})).capabilities


def test_token_estimate_grows_with_text():
    """The input estimate grows with the text and covers a run of one letter (real
    tokenizers: 500 tokens for 4,000 x's)."""
    short = features_of(_req()).input_tokens
    long = features_of(_req(messages=[{"role": "user", "content": "x" * 4000}])).input_tokens
    assert long >= 500
    assert short < long


def test_images_count_towards_tokens():
    """An image part adds a fixed token allowance to the estimate."""
    with_image = {
        "role": "user",
        "content": [{"type": "image_url", "image_url": {"url": "http://127.0.0.1/x.png"}}],
    }
    assert features_of(_req(messages=[with_image])).input_tokens > 700


def test_metadata_features_and_output_cap():
    """task_type, workspace and tags come from metadata; max_tokens is the output cap."""
    f = features_of(
        _req(
            metadata={
                "task_type": "code",
                "workspace": "team-a",
                "tags": ["cheap", "batch"],
                "region": "eu",
            },
            max_tokens=300,
            budget_usd=0.01,
        )
    )
    assert (f.task_type, f.workspace, f.output_tokens, f.budget_usd) == (
        "code",
        "team-a",
        300,
        0.01,
    )
    assert f.tags == frozenset({"cheap", "batch"})
    assert f.metadata["region"] == "eu"


def test_single_tag_string_and_odd_metadata_types():
    """A tag given as a string is one tag; non-string task_type is ignored, not an error."""
    f = features_of(_req(metadata={"tags": "cheap", "task_type": 7}))
    assert f.tags == frozenset({"cheap"}) and f.task_type is None


def _mock_input_tokens(request):
    """What the mock provider reports as the prompt's size (its own counting rule)."""
    from engine.providers.mock import answer_for_request

    return answer_for_request(request, "mock/fast").input_tokens


@pytest.mark.parametrize(
    "messages",
    [
        [{"role": "user", "content": "hi"}],
        [{"role": "user", "content": "hello there"}],
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}],
        [
            {"role": "user", "content": "x" * 4001},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": [{"type": "text", "text": "and a"}]},
        ],
    ],
)
def test_estimate_is_at_least_the_mock_providers_count(messages):
    """The estimate never undershoots what the mock upstream counts, even for short prompts."""
    request = parse_request({"messages": messages})
    assert features_of(request).input_tokens >= _mock_input_tokens(request)


def test_estimate_pins_reply_priming_and_per_message_overhead():
    """A prompt costs its text's bound + 4 per message + 3 for the reply priming."""
    request = _req(messages=[{"role": "user", "content": "hello"}])
    assert features_of(request).input_tokens == text_tokens("hello") + 4 + 3


_ascii_text = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=300)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["system", "user", "assistant"]), _ascii_text),
        min_size=1,
        max_size=6,
    )
)
def test_estimate_is_an_upper_bound_for_ascii_text(turns):
    """For any ASCII conversation the estimate is >= the mock provider's token count."""
    request = parse_request({"messages": [{"role": r, "content": t} for r, t in turns]})
    assert features_of(request).input_tokens >= _mock_input_tokens(request)
