"""Protocol-faithful fake upstreams on loopback ports, one per wire protocol.

    async with FakeOpenAI() as up:            # or: with FakeOpenAI.in_thread() as up:
        up.script([Fault(status=429, retry_after=2), Fault(first_token_delay=0.01)])
        ... call up.url ...
        up.requests[-1].body                  # what arrived on the wire

Each fake answers deterministically from the request (see engine.providers.mock), speaks
its provider's real bodies, streams, headers and errors (the official SDKs parse them in
tests/providers), and injects faults: latency, delayed first token, error statuses with
Retry-After, connection reset, stall, truncated stream, malformed JSON, an error inside a
200 stream, slow trickle.
"""

from ._server import REFUSAL, Ask, ExtraUsage, FakeUpstream, Fault, RecordedRequest
from .anthropic import FakeAnthropic
from .azure import FakeAzure
from .gemini import FakeGemini
from .ollama import FakeOllama
from .openai import FakeOpenAI

__all__ = [
    "REFUSAL",
    "Ask",
    "ExtraUsage",
    "FakeAnthropic",
    "FakeAzure",
    "FakeGemini",
    "FakeOllama",
    "FakeOpenAI",
    "FakeUpstream",
    "Fault",
    "RecordedRequest",
]
