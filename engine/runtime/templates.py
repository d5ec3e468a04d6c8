"""Policy templates: render a route's system/user prompt from the request's variables.

Templates come from config files, variables from callers, so rendering happens in jinja2's
SandboxedEnvironment (no attribute tricks) with StrictUndefined (a missing variable is a
precise RequestError, never an empty string). Compiled templates are cached by source.

The system template becomes (or replaces) the leading system message; the user template
replaces the text of the last user message, which it can still use as `{{ input }}`.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, Template, TemplateError, UndefinedError
from jinja2.sandbox import SandboxedEnvironment

from engine.errors import RequestError
from engine.messages import Message, Request
from engine.plan.values import TemplatePlan

_ENV = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False)


@lru_cache(maxsize=256)
def _compile(source: str) -> Template:
    return _ENV.from_string(source)


def _render(source: str, variables: dict[str, Any], which: str) -> str:
    try:
        return _compile(source).render(variables)
    except UndefinedError as exc:
        raise RequestError(f"template {which}: {exc.message}; pass it in `variables`") from None
    except TemplateError as exc:
        raise RequestError(f"template {which}: {exc.message or type(exc).__name__}") from None


def _last_user(messages: list[Message]) -> int | None:
    for i in range(len(messages) - 1, -1, -1):
        if messages[i].role == "user":
            return i
    return None


def apply_template(template: TemplatePlan | None, request: Request) -> Request:
    """The request with the route's templates rendered into its messages (unchanged if none)."""
    if template is None or (template.system is None and template.user is None):
        return request
    messages = list(request.messages)
    last = _last_user(messages)
    variables = {**template.defaults, **request.variables}
    variables.setdefault("input", messages[last].text() if last is not None else "")
    if template.user is not None:
        text = _render(template.user, variables, "user")
        if last is None:
            messages.append(Message(role="user", content=text))
        else:
            messages[last] = messages[last].model_copy(update={"content": text})
    if template.system is not None:
        system = Message(role="system", content=_render(template.system, variables, "system"))
        if messages[0].role == "system":
            messages[0] = system
        else:
            messages.insert(0, system)
    return request.model_copy(update={"messages": messages})
