"""Policy templates: render a route's system/user prompt from the request's variables.

Templates come from config files, variables from callers, so rendering happens in jinja2's
SandboxedEnvironment (no attribute tricks) with StrictUndefined (a missing variable is a
precise error, never an empty string). Compiled templates are cached by source. Whatever
rendering raises (jinja's errors, and the TypeError/ValueError/... of an expression or
filter applied to a variable of the wrong type) is a TemplateRenderError (a RequestError,
HTTP 400) naming the policy, the template and why: `validate` already rejects a template
that fails whatever the caller passes, so what is left depends on the caller's variables.

The system template becomes (or replaces) the leading system message; the user template
replaces the text of the last user message, which it can still use as `{{ input }}`.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, Template, TemplateError, UndefinedError
from jinja2.sandbox import SandboxedEnvironment

from engine.errors import TemplateRenderError
from engine.messages import Message, Request
from engine.plan.values import TemplatePlan
from engine.secrets import redact

_ENV = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False)


@lru_cache(maxsize=256)
def _compile(source: str) -> Template:
    return _ENV.from_string(source)


#: The longest reason quoted from an exception raised while rendering.
MAX_REASON = 300


def _render(source: str, variables: dict[str, Any], which: str) -> str:
    try:
        return _compile(source).render(variables)
    except UndefinedError as exc:
        why = f"{exc.message}; pass it in `variables`"
    except TemplateError as exc:
        why = exc.message or type(exc).__name__
    except Exception as exc:  # an expression or filter on a variable of the wrong type
        text = redact(str(exc))[:MAX_REASON]
        why = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    raise TemplateRenderError(f"template {which}: {why}")


def _last_user(messages: list[Message]) -> int | None:
    for i in range(len(messages) - 1, -1, -1):
        if messages[i].role == "user":
            return i
    return None


def apply_template(
    template: TemplatePlan | None, request: Request, policy: str | None = None
) -> Request:
    """The request with the route's templates rendered into its messages (unchanged if none);
    TemplateRenderError, naming `policy`, when they cannot render."""
    if template is None or (template.system is None and template.user is None):
        return request
    try:
        return _apply(template, request)
    except TemplateRenderError as exc:
        if policy is None:
            raise
        raise TemplateRenderError(f"policy `{policy}`: {exc}") from None


def _apply(template: TemplatePlan, request: Request) -> Request:
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
