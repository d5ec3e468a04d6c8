"""Compile-time checks of policy templates: Jinja2 syntax and undeclared variables.

The runtime renders templates in a sandbox with StrictUndefined, so a typo in a variable
name would fail on every request; here it fails once, at validate time, with a location.
Besides the declared `variables`, templates may use the request-derived names in BUILTINS.
"""

from __future__ import annotations

from jinja2 import TemplateSyntaxError, meta
from jinja2.sandbox import SandboxedEnvironment

from engine.config.load import Document, join_path
from engine.config.specs import TemplateSpec
from engine.errors import Diagnostic

#: Names every template may use without declaring them: the runtime fills `input` with the
#: text of the last user message (engine.runtime.templates).
BUILTINS = frozenset({"input"})
_ENV = SandboxedEnvironment()


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
        for name in sorted(meta.find_undeclared_variables(ast) - declared):
            hint = f"declare it under {join_path(path, 'variables')}"
            problems.append(
                doc.diagnostic(where, f"undeclared template variable `{name}`", hint=hint)
            )
    for name in sorted(set(spec.defaults) - set(spec.variables)):
        problems.append(
            doc.diagnostic(join_path(path, "defaults"), f"default for undeclared variable `{name}`")
        )
    return problems
