"""Request validation: OpenAI's types, strictly; every problem named with its path."""

import pytest

from engine.errors import RequestError
from engine.messages import parse_request

BASE = {"messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize(
    ("extra", "path"),
    [
        ({"stream": "yes"}, "stream"),
        ({"max_tokens": "5"}, "max_tokens"),
        ({"temperature": "0.5"}, "temperature"),
        ({"temperature": True}, "temperature"),
        ({"messages": [{"role": "user", "content": 5}]}, "messages.0.content"),
        ({"tools": [{"type": "function", "function": {"name": "bad name!"}}]}, "tools.0"),
        ({"n": 129}, "n"),
        ({"unknown_field": 1}, "unknown_field"),
    ],
)
def test_wrong_types_are_rejected_not_coerced(extra: dict[str, object], path: str) -> None:
    """A string where OpenAI wants a number or boolean is an error naming the field."""
    with pytest.raises(RequestError) as info:
        parse_request({**BASE, **extra})
    assert path in str(info.value)


def test_integers_are_accepted_where_numbers_are_expected() -> None:
    """`temperature: 1` is a number, as in JSON; `stop` may be one string."""
    req = parse_request({**BASE, "temperature": 1, "stop": "END", "max_tokens": 5})
    assert req.temperature == 1.0 and req.stop == ["END"] and req.output_limit == 5


def test_request_that_is_not_an_object() -> None:
    """A JSON array or string body is a RequestError, not a traceback."""
    with pytest.raises(RequestError, match="JSON object"):
        parse_request([1, 2])  # type: ignore[arg-type]
