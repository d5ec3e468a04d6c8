"""Which optional request fields each wire protocol carries, and which a model's rules allow.

One table for two readers: the adapters consult the model rules here (`rules`) when they
build a body, and the server names what an answer's provider did not receive
(`x-engine-dropped`, from `dropped`). A field is *carried* when the protocol has it natively
or a real equivalent (Anthropic `stop_sequences`, Gemini `thinkingConfig`, Ollama
`options.seed`...); otherwise the adapter leaves it out and `dropped` says why.

Model rules come from the registry (`models.yaml` `parameters:`) as endpoint options:
`max_tokens_field`, `temperature: false` (the model takes only its default sampling:
temperature, top_p, penalties, logprobs and logit_bias are left out), `reasoning: true`
and `reasoning_efforts: low,medium,high`.
"""

from __future__ import annotations

from collections.abc import Mapping
from operator import attrgetter
from typing import NamedTuple

from engine.messages import Request

__all__ = ["ModelRules", "dropped", "rules"]

#: OpenAI platform features no other protocol has.
OPENAI_ONLY = (
    "store",
    "service_tier",
    "prediction",
    "modalities",
    "audio",
    "prompt_cache_key",
    "prompt_cache_retention",
    "prompt_cache_options",
    "safety_identifier",
    "web_search_options",
    "moderation",
    "logit_bias",
    "verbosity",
)
#: What sampling-restricted (reasoning) models refuse.
SAMPLING = (
    "temperature",
    "top_p",
    "presence_penalty",
    "frequency_penalty",
    "logprobs",
    "top_logprobs",
    "logit_bias",
)
_CLASSIC = (
    "temperature",
    "top_p",
    "stop",
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "user",
    "parallel_tool_calls",
    "response_format",
    "reasoning_effort",
)

_LOCAL = (
    *("temperature", "top_p", "stop", "seed", "presence_penalty", "frequency_penalty"),
    *("response_format", "reasoning_effort"),
)

#: Fields each protocol carries (natively or translated); everything else is dropped.
CARRIED: dict[str, frozenset[str]] = {
    "openai": frozenset((*_CLASSIC, "n", "logprobs", "top_logprobs", *OPENAI_ONLY)),
    "openai-compatible": frozenset((*_CLASSIC, "n", "logprobs", "top_logprobs")),
    "anthropic": frozenset(
        {"temperature", "top_p", "stop", "user", "parallel_tool_calls", "response_format"}
        | {"reasoning_effort"}
    ),
    "gemini": frozenset(_LOCAL),
    "ollama": frozenset(_LOCAL),
    "mock": frozenset((*_CLASSIC, "n")),
}
CARRIED["azure"] = CARRIED["openai"]

#: Every optional field `dropped` looks at, in a fixed order.
OPTIONAL = tuple(dict.fromkeys((*_CLASSIC, *SAMPLING, *OPENAI_ONLY, "n")))
_values = attrgetter(*OPTIONAL)
_OPTIONAL_SET = frozenset(OPTIONAL)


class ModelRules(NamedTuple):
    """A model's parameter rules, read from its endpoint options."""

    token_field: str | None  # max_tokens | max_completion_tokens | None (the caller's)
    sampling: bool  # accepts temperature/top_p/penalties/logprobs
    reasoning: bool
    efforts: frozenset[str] | None  # None: any effort the protocol knows


def rules(options: Mapping[str, str]) -> ModelRules:
    """The model rules in `options` (see the module docstring)."""
    field = options.get("max_tokens_field")
    efforts = options.get("reasoning_efforts")
    return ModelRules(
        field if field in ("max_tokens", "max_completion_tokens") else None,
        options.get("temperature", "true") != "false",
        options.get("reasoning", "false") == "true",
        None if efforts is None else frozenset(e.strip() for e in efforts.split(",") if e.strip()),
    )


def _kind(protocol: str, options: Mapping[str, str]) -> str:
    if protocol == "openai" and options.get("dialect", "openai") != "openai":
        return "openai-compatible"
    return protocol


def sets_optional(request: Request) -> bool:
    """Whether the caller gave any field `dropped` looks at. Most requests give none: one
    set test on the fields given, instead of reading all 26 from the pydantic model (~12k
    instructions a request). A field not given holds its default, None (a test pins
    that), which is never dropped."""
    return not _OPTIONAL_SET.isdisjoint(request.model_fields_set)


def dropped(request: Request, protocol: str, options: Mapping[str, str]) -> list[str]:
    """`field (why)` for each set field the answering model did not receive."""
    if not sets_optional(request):
        return []
    values = _values(request)
    if values.count(None) == len(OPTIONAL):
        return []
    carried = CARRIED.get(_kind(protocol, options))
    model = rules(options)
    out: list[str] = []
    for name, value in zip(OPTIONAL, values, strict=True):
        if value is None or (name == "n" and value == 1):
            continue
        reason = _why(name, value, protocol, carried, model)
        if reason is not None:
            out.append(f"{name} ({reason})")
    return out


def _why(
    name: str, value: object, protocol: str, carried: frozenset[str] | None, model: ModelRules
) -> str | None:
    if name == "n" and carried is not None and name not in carried:
        return f"{protocol} answers one choice"
    if carried is not None and name not in carried:
        return f"{protocol} has no equivalent"
    if name in SAMPLING and not model.sampling:
        return "the model takes only its default sampling"
    if name in ("reasoning_effort", "verbosity") and not model.reasoning:
        return "the model is not declared as reasoning in the registry"
    if name == "reasoning_effort" and model.efforts is not None and value not in model.efforts:
        return f"the model takes {', '.join(sorted(model.efforts))}"
    return None
