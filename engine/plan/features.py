"""`features_of(request) -> Features`: what rules and filters look at, extracted once.

Required capabilities are the explicit `capabilities` plus what the body implies: tools
-> "tools", an image part -> "vision", a JSON response_format -> "json", stream ->
"streaming". Input tokens are an upper bound (engine.plan.tokens: character classes
weighed so the estimate is at least the count of OpenAI's and Claude's tokenizers for
prose, code, JSON, hex, CJK, emoji ...), plus the chat format's overhead (4 tokens per
message for role and separators, 3 to prime the reply, as OpenAI counts them). Budgets
reserve this estimate as the worst case and token-rate leases take it, so it must not be
low; the real count comes back in the provider's usage and settles the call. (tiktoken
would be exact for OpenAI models only, and downloads its encodings on first use, which
an offline deployment cannot do.)
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from engine.frozen import builder
from engine.messages import ImagePart, Message, Request, TextPart, Tool
from engine.plan.tokens import text_tokens
from engine.plan.values import Features

TOKENS_PER_MESSAGE = 4  # role and separators, as chat formats add
REPLY_PRIMING = 3  # the assistant header every reply is primed with
IMAGE_TOKENS = 765  # a high-detail image tile budget, as OpenAI counts it

#: Features(...) without a frozen dataclass's per-field cost (one per call; engine.frozen).
_features = builder(Features)
_NO_TAGS: frozenset[str] = frozenset()  # also the empty set of capabilities
_NO_METADATA: Mapping[str, Any] = MappingProxyType({})  # one, read-only, for all without


def features_of(request: Request) -> Features:
    """The routing features of one request (each field read once: a field of the pydantic
    Request reads several times slower than a plain attribute)."""
    metadata, tools = request.metadata, request.tools
    meta: Mapping[str, Any]
    if metadata:
        meta = dict(metadata)
        task_type, tags = _text(meta.get("task_type")), _tags(meta.get("tags"))
        workspace = _text(meta.get("workspace"))
    else:  # the common request without metadata
        meta, task_type, tags, workspace = _NO_METADATA, None, _NO_TAGS, None
    tokens, image = _scan(request.messages, tools)
    return _features(
        task_type,
        _capabilities(request, tools, image),
        tokens,
        request.max_completion_tokens or request.max_tokens,  # request.output_limit
        tags,
        workspace,
        meta,
        request.budget_usd,
    )


def estimate_tokens(request: Request) -> int:
    """Prompt tokens, an upper bound: text, images, tools' JSON and the format's overheads."""
    return _scan(request.messages, request.tools)[0]


def _scan(messages: list[Message], tools: list[Tool] | None) -> tuple[int, bool]:
    """estimate_tokens' count, and whether any message carries an image: one pass over
    the messages for both (features_of needs both for every request)."""
    tokens, image = REPLY_PRIMING, False
    for message in messages:
        tokens += TOKENS_PER_MESSAGE
        if message.name:
            tokens += text_tokens(message.name)
        content = message.content
        if isinstance(content, str):
            tokens += text_tokens(content)
        elif content is not None:
            for part in content:
                if isinstance(part, TextPart):
                    tokens += text_tokens(part.text)
                else:
                    tokens += IMAGE_TOKENS
                    image = image or isinstance(part, ImagePart)
        for call in message.tool_calls or ():
            tokens += text_tokens(call.function.name) + text_tokens(call.function.arguments)
    for tool in tools or ():
        described = f"{tool.function.name} {tool.function.description or ''}"
        tokens += text_tokens(described) + text_tokens(str(tool.function.parameters))
    return tokens, image


def _capabilities(request: Request, tools: list[Tool] | None, image: bool) -> frozenset[str]:
    """Required capabilities: the explicit ones and what the body implies (`tools`: the
    request's; `image`: a message carries an image part)."""
    fmt = request.response_format
    if not (request.capabilities or tools or request.stream or fmt or image):
        return _NO_TAGS  # the plain chat call requires nothing (the same empty frozenset)
    caps = set(request.capabilities)
    if tools:
        caps.add("tools")
    if request.stream:
        caps.add("streaming")
    if fmt is not None and fmt.type in ("json_object", "json_schema"):
        caps.add("json")
    if image:
        caps.add("vision")
    return frozenset(caps)


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _tags(value: object) -> frozenset[str]:
    if isinstance(value, str):
        return frozenset({value})
    if isinstance(value, list | tuple | set | frozenset):
        return frozenset(str(v) for v in value)
    return frozenset()
