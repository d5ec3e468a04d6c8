"""Compile-time checks of policy templates: Jinja2 syntax and undeclared variables.

The runtime renders templates in a sandbox with StrictUndefined, so a typo in a variable
name would fail on every request; here it fails once, at validate time, with a location.
Besides the declared `variables`, templates may use the request-derived names in BUILTINS.

Parsing alone let through templates that fail on every call: an unknown filter or test
(`{{ input | shout }}` parses, and fails when compiled), an `{% include %}` of nothing, an
operation the sandbox forbids, or arithmetic on the defaults that cannot work. So each
template is also compiled and rendered once here, with its `defaults`, a sample `input`, and
variables the caller must pass left undefined-but-harmless (ChainableUndefined): whatever
still fails does not depend on the caller and is reported as an error.
"""

from __future__ import annotations

from typing import Any

from jinja2 import ChainableUndefined, TemplateSyntaxError, UndefinedError, meta
from jinja2.sandbox import SandboxedEnvironment

from engine.config.load import Document, join_path
from engine.config.specs import TemplateSpec
from engine.errors import Diagnostic

#: Names every template may use without declaring them: the runtime fills `input` with the
#: text of the last user message (engine.runtime.templates).
BUILTINS = frozenset({"input"})
_ENV = SandboxedEnvironment()
_TRIAL = SandboxedEnvironment(undefined=ChainableUndefined, autoescape=False)
SAMPLE_INPUT = "sample user message"


def check_template(doc: Document, path: str, spec: TemplateSpec) -> list[Diagnostic]:
    """Syntax errors and undeclared variables in a template's system/user sources."""
    problems: list[Diagnostic] = []
    declared = set(spec.variables) | BUILTINS
    for part in ("system", "user"):
        source = getattr(spec, part)
        if source is None:
            continue
        where = join_path(path, part)
        try:
            ast = _ENV.parse(source)
        except TemplateSyntaxError as exc:
            problems.append(
                doc.diagnostic(
                    where, f"template syntax error on its line {exc.lineno}: {exc.message}"
                )
            )
            continue
        try:  # compiles the template: an unknown filter or test fails here
            undeclared = meta.find_undeclared_variables(ast)
        except TemplateSyntaxError as exc:
            problems.append(doc.diagnostic(where, f"template fails on every call: {exc.message}"))
            continue
        for name in sorted(undeclared - declared):
            hint = f"declare it under {join_path(path, 'variables')}"
            problems.append(
                doc.diagnostic(where, f"undeclared template variable `{name}`", hint=hint)
            )
        if failure := trial_render(source, {**spec.defaults, "input": SAMPLE_INPUT}):
            problems.append(doc.diagnostic(where, f"template fails on every call: {failure}"))
    for name in sorted(set(spec.defaults) - set(spec.variables)):
        problems.append(
            doc.diagnostic(join_path(path, "defaults"), f"default for undeclared variable `{name}`")
        )
    return problems


def trial_render(source: str, variables: dict[str, Any]) -> str | None:
    """Why compiling and rendering `source` fails whatever the caller passes, or None.

    A failure caused by a missing variable is not one: the caller may pass it."""
    try:
        _TRIAL.from_string(source).render(variables)
    except UndefinedError:
        return None
    except Exception as exc:  # anything jinja2 or the sandboxed expression itself raises
        text = getattr(exc, "message", None) or str(exc)
        return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return None
