"""Wire-neutral request, response, chunk, tool-call and usage types.

Every adapter translates between these and its provider's wire format; nothing above the
adapters ever sees a provider's JSON. The incoming request is a pydantic model (it is user
input and must be validated with precise errors); what adapters produce are slotted frozen
dataclasses (they are built on the hot path and never need validation).

The request shape is OpenAI's chat body, because that is what people already write, plus
the routing inputs (`model`, `metadata`, `capabilities`, `budget_usd`, `cache`,
`fallbacks`) that adapters ignore.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    ValidationError,
    field_validator,
    model_validator,
)

# The answer side lives in engine/answers.py; its names are re-exported from here.
from engine.answers import (
    Blob,
    Choice,
    Chunk,
    FinishReason,
    ProviderResponse,
    RateLimitInfo,
    StreamAccumulator,
    ToolCallDelta,
    ToolCallOut,
    Usage,
)
from engine.errors import RequestError
from engine.request_forms import needs_rewrite, rewrite

__all__ = [
    "MAX_JSON_DEPTH",
    "AudioPart",
    "Blob",
    "CacheBreakpoint",
    "Choice",
    "Chunk",
    "ContentPart",
    "FileData",
    "FilePart",
    "FinishReason",
    "FunctionCall",
    "FunctionSpec",
    "ImagePart",
    "ImageURL",
    "InputAudio",
    "JSONObject",
    "Message",
    "NamedToolChoice",
    "ProviderResponse",
    "RateLimitInfo",
    "ReasoningEffort",
    "RefusalPart",
    "Request",
    "ResponseFormat",
    "Role",
    "StreamAccumulator",
    "StreamOptions",
    "TextPart",
    "Tool",
    "ToolCall",
    "ToolCallDelta",
    "ToolCallOut",
    "ToolChoice",
    "Usage",
    "parse_request",
]

Role = Literal["system", "developer", "user", "assistant", "tool"]
ReasoningEffort = Literal["none", "minimal", "low", "medium", "high", "xhigh", "max"]


#: How deep free-form JSON (metadata, variables, tool parameters, JSON schemas) may nest.
#: Deeper is refused as a 400: pydantic's serializer stops at ~255 levels and the cache key
#: serializes the request, so a deep `metadata` used to answer 500 on caching policies.
MAX_JSON_DEPTH = 64


def _bounded_depth(value: dict[str, Any]) -> dict[str, Any]:
    """The value itself, or ValueError when it nests deeper than MAX_JSON_DEPTH (iterative:
    a recursive walk would itself fail on the input it is meant to refuse)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise ValueError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
        for child in item.values() if isinstance(item, dict) else item:
            if isinstance(child, dict | list):
                stack.append((child, depth + 1))
    return value


JSONObject = Annotated[dict[str, Any], AfterValidator(_bounded_depth)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class CacheBreakpoint(_Strict):
    mode: Literal["explicit"] = "explicit"


class _Part(_Strict):
    """What every content part may carry besides its content: OpenAI's prompt-cache
    breakpoint, and Anthropic's `cache_control` (sent to Anthropic, ignored elsewhere)."""

    prompt_cache_breakpoint: CacheBreakpoint | None = None
    cache_control: dict[str, Any] | None = None


class TextPart(_Part):
    type: Literal["text"] = "text"
    text: str


class ImageURL(_Strict):
    url: str
    detail: Literal["auto", "low", "high"] | None = None


class ImagePart(_Part):
    type: Literal["image_url"] = "image_url"
    image_url: ImageURL


class InputAudio(_Strict):
    data: str  # base64
    format: Literal["wav", "mp3"]


class AudioPart(_Part):
    type: Literal["input_audio"] = "input_audio"
    input_audio: InputAudio


class FileData(_Strict):
    file_data: str | None = None  # a data: URL or bare base64
    file_id: str | None = None
    filename: str | None = None


class FilePart(_Part):
    type: Literal["file"] = "file"
    file: FileData


class RefusalPart(_Strict):
    """An assistant's earlier refusal, echoed back in the history."""

    type: Literal["refusal"] = "refusal"
    refusal: str


ContentPart = TextPart | ImagePart | AudioPart | FilePart | RefusalPart


class FunctionCall(_Strict):
    name: str
    arguments: str = "{}"  # JSON text, exactly as the model produced it


class ToolCall(_Strict):
    """A call the assistant asked for; `arguments` stays JSON text (it may be invalid JSON)."""

    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class Message(_Strict):
    """One turn. An assistant message is accepted exactly as OpenAI (or this server)
    returned it: `refusal`, `annotations` and `audio` ride along; only `audio` (a reference
    to an earlier spoken answer) is sent on, and only to OpenAI."""

    role: Role
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None
    refusal: str | None = None
    annotations: list[dict[str, Any]] | None = None
    audio: dict[str, Any] | None = None

    def text(self) -> str:
        """The message's text, parts joined; images contribute nothing."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text for p in self.content if isinstance(p, TextPart))


class FunctionSpec(_Strict):
    name: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")
    description: str | None = None
    parameters: JSONObject = Field(default_factory=lambda: {"type": "object", "properties": {}})
    strict: bool | None = None


class Tool(_Strict):
    type: Literal["function"] = "function"
    function: FunctionSpec
    cache_control: dict[str, Any] | None = None  # Anthropic's; ignored elsewhere


class NamedToolChoice(_Strict):
    type: Literal["function"] = "function"
    function: dict[str, str]


ToolChoice = Literal["auto", "none", "required"] | NamedToolChoice


class ResponseFormat(_Strict):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JSONObject | None = None


class StreamOptions(_Strict):
    include_usage: bool = False
    include_obfuscation: bool | None = None  # OpenAI's stream padding; nothing to pad here


class Request(BaseModel):
    """One chat call plus its routing inputs. Unknown top-level keys are rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    messages: list[Message] = Field(min_length=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    stop: list[str] | None = None
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    seed: int | None = None
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    user: str | None = None
    n: int | None = Field(default=None, ge=1, le=128)
    # The rest of OpenAI's chat schema: sent to OpenAI as they are, translated where
    # another protocol has the same thing, else dropped (the server names what it dropped:
    # engine.providers.support).
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    reasoning_effort: ReasoningEffort | None = None
    verbosity: Literal["low", "medium", "high"] | None = None
    store: bool | None = None
    service_tier: Literal["auto", "default", "flex", "scale", "priority", "fast"] | None = None
    logit_bias: dict[str, int] | None = None
    prediction: dict[str, Any] | None = None
    modalities: list[Literal["text", "audio"]] | None = None
    audio: dict[str, Any] | None = None
    prompt_cache_key: str | None = None
    prompt_cache_retention: Literal["in_memory", "24h"] | None = None
    prompt_cache_options: dict[str, Any] | None = None
    safety_identifier: str | None = Field(default=None, max_length=64)
    web_search_options: dict[str, Any] | None = None
    moderation: dict[str, Any] | None = None

    # Routing inputs: never sent upstream.
    model: str | None = None
    metadata: JSONObject = Field(default_factory=dict)
    capabilities: list[str] = Field(default_factory=list)
    budget_usd: float | None = Field(default=None, ge=0)
    cache: bool = True
    fallbacks: list[str] = Field(default_factory=list)
    variables: JSONObject = Field(default_factory=dict)  # for policy templates

    @model_validator(mode="wrap")
    @classmethod
    def _shorthands(cls, data: Any, handler: ModelWrapValidatorHandler[Request]) -> Request:
        """The shorthand and legacy forms (`prompt`, `functions`, `function` messages...)
        as the canonical fields (engine.request_forms). Every such form fails the canonical
        schema (an unknown key or role), so the body is validated as it is first and
        rewritten only when that fails: the common request skips `needs_rewrite`'s walk of
        its messages (~4k instructions a request)."""
        try:
            return handler(data)
        except ValidationError:
            if not isinstance(data, dict) or not needs_rewrite(data):
                raise
        return handler(rewrite(data))

    @field_validator("stop", mode="before")
    @classmethod
    def _stop_as_list(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @field_validator("stream", mode="before")
    @classmethod
    def _stream_null(cls, v: Any) -> Any:
        return False if v is None else v

    @field_validator("metadata", mode="before")
    @classmethod
    def _metadata_null(cls, v: Any) -> Any:
        return {} if v is None else v

    @property
    def output_limit(self) -> int | None:
        """The caller's cap on generated tokens, whichever field they used."""
        return self.max_completion_tokens or self.max_tokens


def parse_request(data: Request | dict[str, Any]) -> Request:
    """Validate a request dict; every problem is named with its JSON path in one RequestError."""
    if isinstance(data, Request):
        return data
    if not isinstance(data, dict):
        raise RequestError(f"request must be a JSON object, got {type(data).__name__}")
    try:
        # The validator itself: `model_validate` with its defaults, minus a wrapper call.
        return Request.__pydantic_validator__.validate_python(data)  # type: ignore[no-any-return]
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}" for e in exc.errors()
        )
        raise RequestError(f"invalid request: {problems}") from None
