"""Gather a configuration: models.yaml plus routes/*.yaml, loaded, interpolated and typed.

Why one place: the CLI (`validate` a file, a routes/ folder or a whole config dir), the
compiler (`build_plan(dir)`) and tests (`build_plan_from_data(dicts)`) must all see the same
pipeline: load -> interpolate environment -> schema check -> typed spec. Everything wrong
is collected as diagnostics; nothing here raises on bad input.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.config.env import interpolate
from engine.config.load import Document, load_file
from engine.config.schema import parse
from engine.config.specs import ModelsSpec, PolicySpec
from engine.errors import Diagnostic

YAML_SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True, slots=True)
class PolicyEntry:
    name: str
    spec: PolicySpec
    doc: Document


@dataclass(slots=True)
class ConfigSet:
    """Everything loaded, before linking: typed specs with the documents they came from."""

    models_doc: Document | None = None
    models: ModelsSpec | None = None
    policies: dict[str, PolicyEntry] = field(default_factory=dict)
    diagnostics: list[Diagnostic] = field(default_factory=list)
    unset: dict[str, list[str]] = field(default_factory=dict)  # models.yaml path -> env vars
    refs: dict[str, str] = field(default_factory=dict)  # models.yaml path -> its `${VAR}`
    source: str = ""


def find_models_file(directory: Path) -> Path | None:
    for name in ("models.yaml", "models.yml"):
        if (directory / name).is_file():
            return directory / name
    return None


def route_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.suffix in YAML_SUFFIXES and p.is_file())


def load_dir(config_dir: Path | str, env: Mapping[str, str] | None = None) -> ConfigSet:
    """Load `<dir>/models.yaml` and `<dir>/routes/*.yaml`."""
    root = Path(config_dir)
    models = find_models_file(root)
    routes_dir = root / "routes"
    routes = route_files(routes_dir) if routes_dir.is_dir() else []
    cs = load_paths(models, routes, env, source=str(root))
    if models is None:
        cs.diagnostics.append(Diagnostic("no models.yaml found", file=str(root)))
    if not routes:
        cs.diagnostics.append(
            Diagnostic(
                "no policies: no route files (*.yaml) in routes/",
                file=str(routes_dir),
                severity="warning",
                hint="requests can then only pin `provider/name` models",
            )
        )
    if routes_dir.is_dir():
        cs.diagnostics.extend(
            Diagnostic("not a file; skipped", file=str(p), severity="warning")
            for p in sorted(routes_dir.iterdir())
            if p.suffix in YAML_SUFFIXES and not p.is_file()
        )
    return cs


def load_paths(
    models: Path | None,
    routes: list[Path],
    env: Mapping[str, str] | None = None,
    source: str = "",
) -> ConfigSet:
    """Load an explicit models file (optional) and route files."""
    cs = ConfigSet(source=source)
    if models is not None:
        add_models(cs, load_file(models), env)
    for path in routes:
        add_policy(cs, path.stem, load_file(path), env)
    return cs


def load_data(
    models: Mapping[str, Any],
    routes: Mapping[str, Mapping[str, Any]],
    source: str = "<memory>",
    env: Mapping[str, str] | None = None,
) -> ConfigSet:
    """The same pipeline over in-memory dicts (no line numbers, JSON paths only)."""
    cs = ConfigSet(source=source)
    add_models(cs, Document(f"{source}:models", dict(models)), env)
    for name, data in routes.items():
        add_policy(cs, name, Document(f"{source}:routes/{name}", dict(data)), env)
    return cs


def add_models(cs: ConfigSet, doc: Document, env: Mapping[str, str] | None) -> None:
    cs.diagnostics.extend(doc.diagnostics)
    if not doc.ok:
        return
    interp = interpolate(doc.data, os.environ if env is None else env)
    doc = Document(doc.source, interp.data, doc.marks)
    cs.models_doc, cs.unset, cs.refs = doc, interp.unset, interp.refs
    spec, problems = _parse(doc, "models")
    cs.diagnostics.extend(problems)
    cs.models = spec if isinstance(spec, ModelsSpec) else None
    for path, names in interp.unset.items():
        for name in names:
            msg = f"environment variable {name} is not set"
            cs.diagnostics.append(doc.diagnostic(path, msg, severity="warning"))


def add_policy(cs: ConfigSet, stem: str, doc: Document, env: Mapping[str, str] | None) -> None:
    cs.diagnostics.extend(doc.diagnostics)
    if not doc.ok:
        return
    interp = interpolate(doc.data, os.environ if env is None else env)
    doc = Document(doc.source, interp.data, doc.marks)
    spec, problems = _parse(doc, "route")
    cs.diagnostics.extend(problems)
    if not isinstance(spec, PolicySpec):
        return
    name = spec.name or stem
    if name in cs.policies:
        first = cs.policies[name].doc.source
        msg = f"duplicate policy name `{name}` (also defined in {first})"
        cs.diagnostics.append(doc.diagnostic("name" if spec.name else "", msg))
        return
    cs.policies[name] = PolicyEntry(name, spec, doc)


def _parse(doc: Document, kind: str) -> tuple[object, list[Diagnostic]]:
    if doc.data is not None and not isinstance(doc.data, dict):
        return None, [
            doc.diagnostic(
                "", f"expected a mapping at the top level, got {type(doc.data).__name__}"
            )
        ]
    return parse(doc, "models" if kind == "models" else "route")
