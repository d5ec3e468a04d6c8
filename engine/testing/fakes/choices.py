"""OpenAI's per-token `logprobs` and `n` choices, as the OpenAI fake answers them.

The shape is the official one (`ChatCompletionTokenLogprob`): per token its text, logprob,
UTF-8 bytes and the `top_logprobs` alternatives, the token itself first. Tokens are the
answer's words with their leading space (a stand-in for the real tokenizer), and every
logprob is derived from the token text, so the same answer always carries the same values.
"""

from __future__ import annotations

import re
import zlib
from typing import Any

_TOKEN = re.compile(r"\s*\S+|\s+")


def _entry(token: str, logprob: float) -> dict[str, Any]:
    return {"token": token, "logprob": logprob, "bytes": list(token.encode())}


def _logprob(token: str) -> float:
    return -round((zlib.crc32(token.encode()) % 1000) / 1000 + 0.001, 6)


def token_logprobs(text: str, top: int) -> list[dict[str, Any]]:
    """One entry per token of `text`, each with `top` alternatives."""
    out = []
    for token in _TOKEN.findall(text):
        best = _logprob(token)
        alternatives = [_entry(token, best)]
        alternatives += [_entry(f"{token}~{i}", best - i) for i in range(1, top)]
        out.append({**_entry(token, best), "top_logprobs": alternatives[:top]})
    return out


def logprobs(text: str, top: int | None) -> dict[str, Any] | None:
    """A choice's (or a streamed piece's) `logprobs` object; None when not asked for."""
    if top is None:
        return None
    return {"content": token_logprobs(text, top), "refusal": None}
