"""Server settings: defaults, then `server.yaml` in the config dir, then ENGINE_* env, then CLI.

One frozen `ServerSettings` value is built once at start and handed to the app; nothing reads
the environment later. Client API keys are `Secret`s so they never print; a key may be
written inline or named by an environment variable (`key_env`) so server.yaml can be
committed without secrets.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from engine.config.load import EMPTY_FILE, Document, join_path, load_file
from engine.errors import ConfigError, Diagnostic
from engine.secrets import Secret

SETTINGS_FILE = "server.yaml"
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


class ApiKeySpec(BaseModel):
    """One client key: who it is (a label), and what it may do: its budgets (`budget_usd`
    all-time, `daily_usd`, `monthly_usd`) and request limits (`rpm`, `tpm`,
    `max_concurrent`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = ""
    key: str | None = Field(default=None, repr=False)
    key_env: str | None = None
    workspace: str | None = None
    policies: tuple[str, ...] | None = None  # None: every policy and model
    budget_usd: float | None = Field(default=None, ge=0)  # all-time (engine/runtime/clients)
    daily_usd: float | None = Field(default=None, ge=0)
    monthly_usd: float | None = Field(default=None, ge=0)
    rpm: int | None = Field(default=None, ge=1)  # requests per minute
    tpm: int | None = Field(default=None, ge=1)  # tokens per minute
    max_concurrent: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _one_source(self) -> ApiKeySpec:
        if (self.key is None) == (self.key_env is None):
            raise ValueError("give exactly one of `key` or `key_env`")
        return self


class ApiKey(BaseModel):
    """A resolved client key: the secret plus its limits."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    id: str
    secret: Secret
    workspace: str | None = None
    policies: frozenset[str] | None = None
    budget_usd: float | None = None
    daily_usd: float | None = None
    monthly_usd: float | None = None
    rpm: int | None = None
    tpm: int | None = None
    max_concurrent: int | None = None


class PluginsSpec(BaseModel):
    """Hooks named by dotted path (`package.module.function`), loaded at start (plugins.py)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    before_request: tuple[str, ...] = ()
    after_response: tuple[str, ...] = ()
    on_error: tuple[str, ...] = ()


class ServerSettings(BaseModel):
    """Everything `python -m engine serve` needs; frozen once built."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    config_dir: Path = Path(".")
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    workers: int = Field(default=1, ge=1, le=64)
    insecure: bool = False
    api_keys: tuple[ApiKey, ...] = ()
    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    reload: bool = True
    reload_interval_s: float = Field(default=2.0, gt=0)
    drain_timeout_s: float = Field(default=30.0, ge=0)
    log_level: str = "info"
    access_log: bool = False
    warm_on_start: bool = False  # open provider connections when the server starts
    keep_alive_s: float | None = Field(default=None, gt=0)  # then re-warm at this interval
    # What a client may make the server hold before the app sees a request (server/guard.py).
    max_header_bytes: int = Field(default=64 * 1024, ge=1024)
    max_headers: int = Field(default=100, ge=1)
    header_timeout_s: float = Field(default=10.0, gt=0)
    body_timeout_s: float = Field(default=30.0, gt=0)
    idle_timeout_s: float = Field(default=5.0, gt=0)  # a keep-alive connection between requests
    admin_key: Secret | None = None  # when set, the only key the ops routes accept (ops.py)
    # Shared state and ledger (engine/state/backends.py); URLs may hold passwords: no repr.
    state_url: str | None = Field(default=None, repr=False)
    ledger_url: str | None = Field(default=None, repr=False)
    plugins: PluginsSpec = Field(default_factory=lambda: PluginsSpec())

    @property
    def loopback_only(self) -> bool:
        return self.host in LOOPBACK_HOSTS or self.host.startswith("127.")


class _FileSettings(BaseModel):
    """The shape of server.yaml (every key optional; unknown keys are errors)."""

    model_config = ConfigDict(extra="forbid")

    host: str | None = None
    port: int | None = None
    workers: int | None = None
    insecure: bool | None = None
    api_keys: list[ApiKeySpec] = Field(default_factory=list)
    max_body_bytes: int | None = None
    reload: bool | None = None
    reload_interval_s: float | None = None
    drain_timeout_s: float | None = None
    log_level: str | None = None
    access_log: bool | None = None
    warm_on_start: bool | None = None
    keep_alive_s: float | None = None
    max_header_bytes: int | None = None
    max_headers: int | None = None
    header_timeout_s: float | None = None
    body_timeout_s: float | None = None
    idle_timeout_s: float | None = None
    admin_key: str | None = Field(default=None, repr=False)
    admin_key_env: str | None = None
    state_url: str | None = Field(default=None, repr=False)
    ledger_url: str | None = Field(default=None, repr=False)
    plugins: PluginsSpec | None = None

    @model_validator(mode="after")
    def _one_admin_source(self) -> _FileSettings:
        if self.admin_key is not None and self.admin_key_env is not None:
            raise ValueError("give at most one of `admin_key` or `admin_key_env`")
        return self


_ENV: Mapping[str, str] = {
    "ENGINE_HOST": "host",
    "ENGINE_PORT": "port",
    "ENGINE_WORKERS": "workers",
    "ENGINE_INSECURE": "insecure",
    "ENGINE_MAX_BODY_BYTES": "max_body_bytes",
    "ENGINE_RELOAD": "reload",
    "ENGINE_RELOAD_INTERVAL": "reload_interval_s",
    "ENGINE_DRAIN_TIMEOUT": "drain_timeout_s",
    "ENGINE_LOG_LEVEL": "log_level",
    "ENGINE_ACCESS_LOG": "access_log",
    "ENGINE_WARM_ON_START": "warm_on_start",
    "ENGINE_KEEP_ALIVE": "keep_alive_s",
    "ENGINE_MAX_HEADER_BYTES": "max_header_bytes",
    "ENGINE_MAX_HEADERS": "max_headers",
    "ENGINE_HEADER_TIMEOUT": "header_timeout_s",
    "ENGINE_BODY_TIMEOUT": "body_timeout_s",
    "ENGINE_IDLE_TIMEOUT": "idle_timeout_s",
    "ENGINE_STATE_URL": "state_url",
    "ENGINE_LEDGER_URL": "ledger_url",
}


def _file_values(config_dir: Path) -> tuple[dict[str, Any], list[ApiKeySpec]]:
    """server.yaml read by the config loader (bounded: size, depth, aliases; every problem
    at file:line:col, never a line of the file, which may hold a client key), then checked
    against its shape; ConfigError."""
    path = config_dir / SETTINGS_FILE
    if not path.is_file():
        return {}, []
    doc = _document(path)
    try:
        spec = _FileSettings.model_validate(doc.data if doc.data is not None else {})
    except ValidationError as exc:
        raise ConfigError([_located(doc, e) for e in exc.errors()]) from None
    values = spec.model_dump(exclude_none=True, exclude={"api_keys", "admin_key", "admin_key_env"})
    if spec.admin_key is not None or spec.admin_key_env is not None:
        values["admin_key"] = ApiKeySpec(id="admin", key=spec.admin_key, key_env=spec.admin_key_env)
    return values, spec.api_keys


def file_problems(config_dir: Path) -> list[Diagnostic]:
    """What is wrong with `<config_dir>/server.yaml` itself (for `validate`; variables it
    names are checked only when the server starts, where they are read)."""
    try:
        _file_values(config_dir)
    except ConfigError as exc:
        return list(exc.diagnostics)
    return []


def _document(path: Path) -> Document:
    """The loaded file; an empty one (blanks and comments only) means every default."""
    doc = load_file(path)
    errors = [d for d in doc.diagnostics if d.severity == "error"]
    if [d.message for d in errors] == [EMPTY_FILE]:
        return Document(doc.source, None)
    if errors:
        raise ConfigError(errors)
    if doc.data is not None and not isinstance(doc.data, dict):
        kind = type(doc.data).__name__
        raise ConfigError([doc.diagnostic("", f"expected a mapping at the top level, got {kind}")])
    return doc


def _located(doc: Document, error: Any) -> Diagnostic:
    """A pydantic error at the file:line:col of the value it is about."""
    where = ""
    for part in error["loc"]:
        where = join_path(where, part)
    return doc.diagnostic(where, error["msg"])


def _env_values(env: Mapping[str, str]) -> tuple[dict[str, Any], list[ApiKeySpec]]:
    values = {field: env[name] for name, field in _ENV.items() if env.get(name)}
    raw_keys = [k.strip() for k in env.get("ENGINE_API_KEYS", "").split(",") if k.strip()]
    keys = [ApiKeySpec(id=f"env#{i}", key=k) for i, k in enumerate(raw_keys)]
    return values, keys


def _resolve_key(spec: ApiKeySpec, index: int, env: Mapping[str, str]) -> ApiKey:
    value = spec.key if spec.key is not None else env.get(spec.key_env or "", "")
    if not value:
        raise ConfigError(
            [
                Diagnostic(
                    f"environment variable {spec.key_env} is not set", path=f"api_keys.{index}"
                )
            ]
        )
    return ApiKey(
        id=spec.id or f"key#{index}",
        secret=Secret(value),
        workspace=spec.workspace,
        policies=frozenset(spec.policies) if spec.policies is not None else None,
        budget_usd=spec.budget_usd,
        daily_usd=spec.daily_usd,
        monthly_usd=spec.monthly_usd,
        rpm=spec.rpm,
        tpm=spec.tpm,
        max_concurrent=spec.max_concurrent,
    )


def _admin_key(spec: ApiKeySpec | None, env: Mapping[str, str]) -> Secret | None:
    """ENGINE_ADMIN_KEY, else server.yaml's `admin_key` / `admin_key_env`, else none."""
    if env.get("ENGINE_ADMIN_KEY"):
        return Secret(env["ENGINE_ADMIN_KEY"])
    if spec is None:
        return None
    try:
        return _resolve_key(spec, 0, env).secret
    except ConfigError:
        raise ConfigError(
            [Diagnostic(f"environment variable {spec.key_env} is not set", path="admin_key_env")]
        ) from None


def load_settings(
    config_dir: Path | str | None = None,
    overrides: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
) -> ServerSettings:
    """Merge defaults < server.yaml < ENGINE_* env < explicit overrides (CLI); ConfigError."""
    env = os.environ if env is None else env
    directory = Path(config_dir or env.get("ENGINE_CONFIG") or ".")
    file_values, file_keys = _file_values(directory)
    env_values, env_keys = _env_values(env)
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    merged: dict[str, Any] = {**file_values, **env_values, **given, "config_dir": directory}
    specs = [*file_keys, *env_keys]
    merged["api_keys"] = tuple(_resolve_key(s, i, env) for i, s in enumerate(specs))
    merged["admin_key"] = _admin_key(merged.get("admin_key"), env)
    try:
        return ServerSettings.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(
            [Diagnostic(e["msg"], path=".".join(str(p) for p in e["loc"])) for e in exc.errors()]
        ) from None
