"""Where an engine's plan comes from, and run-time changes to it (add/remove provider or model).

A running engine may be told to add a provider or drop a model. The change is made to the
configuration *data* (the shapes of models.yaml and routes/*.yaml), the whole config is
compiled again, and the new plan is handed back only if it compiles: a change that breaks a
route changes nothing. `DirectorySource` reads the files through the same bounded,
line-numbered loader `validate` and `build_plan` use, so an error in an untouched entry
still names its file and line; `DataSource` holds config given as dicts (`from_data`).

The runtime never imports this module: engine.assemble hands a source to the Engine, which
sees it only through the small `PlanSource` protocol (engine.runtime.engine).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.compile.compiler import collector_paused, compile_config
from engine.config.load import Document, load_file
from engine.config.project import (
    ConfigSet,
    add_models,
    add_policy,
    find_models_file,
    load_dir,
    route_files,
)
from engine.errors import ConfigError, Diagnostic, UnknownModelError
from engine.plan.compiled import Plan

#: An edit of (models data, {policy stem: route data}), in place; raises to refuse.
Edit = Callable[[dict[str, Any], dict[str, Any]], None]


@dataclass(slots=True)
class Documents:
    """models.yaml and the route files as loaded documents (data plus line marks)."""

    source: str
    models: Document
    routes: dict[str, Document]

    def edited(self, edit: Edit) -> Documents:
        """A copy with `edit` applied to the data; marks of untouched paths still hold."""
        models = copy.deepcopy(_mapping(self.models))
        routes = {stem: copy.deepcopy(_mapping(doc)) for stem, doc in self.routes.items()}
        edit(models, routes)
        return Documents(
            self.source,
            _with(self.models, models),
            {stem: _with(self.routes.get(stem), data, stem) for stem, data in routes.items()},
        )

    def compile(self, env: Mapping[str, str]) -> Plan:
        """The plan these documents compile to; ConfigError listing every error otherwise."""
        cs = ConfigSet(source=self.source)
        add_models(cs, self.models, env)
        for stem, doc in self.routes.items():
            add_policy(cs, stem, doc, env)
        with collector_paused():
            plan, _ = compile_config(cs, env)
        return plan


def _mapping(doc: Document) -> dict[str, Any]:
    if not doc.ok or not isinstance(doc.data, dict):
        raise ConfigError(list(doc.diagnostics) or [doc.diagnostic("", "expected a mapping")])
    return doc.data


def _with(doc: Document | None, data: dict[str, Any], stem: str = "") -> Document:
    if doc is None:  # a route added by the edit: no file, JSON paths only
        return Document(f"<memory>:routes/{stem}", data)
    return Document(doc.source, data, doc.marks, doc.diagnostics)


def read_documents(directory: Path) -> Documents:
    """models.yaml and routes/*.yaml of `directory`, through the line-numbered loader."""
    models = find_models_file(directory)
    if models is None:
        raise ConfigError([Diagnostic("no models.yaml found", file=str(directory))])
    routes_dir = directory / "routes"
    routes = route_files(routes_dir) if routes_dir.is_dir() else []
    return Documents(
        str(directory), load_file(models), {path.stem: load_file(path) for path in routes}
    )


class _Editable:
    """The four run-time changes, as edits of the current documents; subclasses hold them."""

    env: Mapping[str, str]

    def _documents(self) -> Documents:
        raise NotImplementedError

    def _commit(self, documents: Documents) -> None:
        raise NotImplementedError

    def _apply(self, edit: Edit) -> Plan:
        documents = self._documents().edited(edit)
        plan = documents.compile(self.env)  # raises: nothing is committed
        self._commit(documents)
        return plan

    def add_provider(self, provider_id: str, spec: Mapping[str, Any]) -> Plan:
        return self._apply(_add("providers", provider_id, spec, "provider"))

    def add_model(self, model_id: str, spec: Mapping[str, Any]) -> Plan:
        return self._apply(_add("models", model_id, spec, "model"))

    def remove_provider(self, provider_id: str) -> Plan:
        def edit(models: dict[str, Any], _routes: dict[str, Any]) -> None:
            if provider_id not in models.get("providers", {}):
                raise UnknownModelError(f"unknown provider {provider_id!r}")
            del models["providers"][provider_id]
            for mid in [m for m in models.get("models", {}) if m.startswith(provider_id + "/")]:
                del models["models"][mid]

        return self._apply(edit)

    def remove_model(self, model_id: str) -> Plan:
        def edit(models: dict[str, Any], _routes: dict[str, Any]) -> None:
            if model_id not in models.get("models", {}):
                raise UnknownModelError(f"unknown model {model_id!r}")
            del models["models"][model_id]

        return self._apply(edit)


def _add(section: str, key: str, spec: Mapping[str, Any], kind: str) -> Edit:
    def edit(models: dict[str, Any], _routes: dict[str, Any]) -> None:
        table = models.setdefault(section, {})
        if key in table:
            raise ConfigError(
                [Diagnostic(f"{kind} {key!r} already exists", path=f"{section}.{key}")]
            )
        table[key] = copy.deepcopy(dict(spec))

    return edit


class DirectorySource(_Editable):
    """A config directory: `reload` recompiles the files; edits stack until the next reload."""

    def __init__(self, directory: Path, env: Mapping[str, str] | None = None) -> None:
        self.directory = directory
        self.env = os.environ if env is None else env
        self._edited: Documents | None = None  # the files plus run-time edits, once edited

    def reload(self) -> Plan:
        """The directory compiled afresh (run-time edits are dropped, as the files win)."""
        with collector_paused():
            plan, _ = compile_config(load_dir(self.directory, self.env), self.env)
        self._edited = None
        return plan

    def _documents(self) -> Documents:
        return self._edited or read_documents(self.directory)

    def _commit(self, documents: Documents) -> None:
        self._edited = documents


class DataSource(_Editable):
    """Config given as data (`from_data`): edits stack; there are no files to reload from."""

    def __init__(
        self,
        models: Mapping[str, Any],
        routes: Mapping[str, Mapping[str, Any]],
        env: Mapping[str, str] | None = None,
        source: str = "<memory>",
    ) -> None:
        self.env = os.environ if env is None else env
        self._current = Documents(
            source,
            Document(f"{source}:models", copy.deepcopy(dict(models))),
            {
                n: Document(f"{source}:routes/{n}", copy.deepcopy(dict(r)))
                for n, r in routes.items()
            },
        )

    def compile(self) -> Plan:
        return self._current.compile(self.env)

    def reload(self) -> Plan:
        raise ConfigError([Diagnostic("reload() without a plan needs from_config")])

    def _documents(self) -> Documents:
        return self._current

    def _commit(self, documents: Documents) -> None:
        self._current = documents
