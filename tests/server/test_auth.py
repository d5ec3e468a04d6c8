"""Client API keys: Bearer required when configured, tied to workspace, policies and budget."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import openai
import pytest

from engine.errors import ConfigError
from engine.secrets import Secret
from engine.server.runner import bind_problem
from engine.server.settings import ApiKey, ServerSettings, load_settings
from tests.server.conftest import Running, serving
from tests.server.standin import StandInEngine

MSG = [{"role": "user", "content": "hi"}]
KEYS = (
    ApiKey(id="ops", secret=Secret("sk-ops-0123456789")),
    ApiKey(
        id="team-a", secret=Secret("sk-team-a-0123456789"), workspace="team-a",
        policies=frozenset({"cheap"}), budget_usd=0.5,
    ),
)  # fmt: skip


@pytest.fixture
async def secured() -> AsyncIterator[Running]:
    async with serving(StandInEngine(), ServerSettings(api_keys=KEYS)) as running:
        yield running


async def test_missing_key_is_401(secured: Running) -> None:
    """With keys configured, a request without Authorization is refused with 401."""
    async with secured.http() as http:
        resp = await http.post("/v1/chat/completions", json={"model": "fast", "messages": MSG})
    assert resp.status_code == 401
    assert resp.json()["error"]["code"] == "missing_api_key"


async def test_wrong_key_is_authentication_error(secured: Running) -> None:
    """A wrong key reaches the SDK as AuthenticationError, and the key is never echoed."""
    async with secured.client("sk-wrong-0123456789") as client:
        with pytest.raises(openai.AuthenticationError) as info:
            await client.chat.completions.create(model="fast", messages=MSG)
    assert "sk-wrong" not in str(info.value.body)


async def test_valid_key_is_served(secured: Running) -> None:
    """A configured key without limits may use any policy."""
    async with secured.client("sk-ops-0123456789") as client:
        completion = await client.chat.completions.create(model="fast", messages=MSG)
    assert completion.choices[0].message.content == "echo: hi"


async def test_key_policies_are_enforced(secured: Running) -> None:
    """A key limited to some policies gets 403 for others, also when named by header."""
    async with secured.client("sk-team-a-0123456789") as client:
        with pytest.raises(openai.PermissionDeniedError):
            await client.chat.completions.create(model="fast", messages=MSG)
        with pytest.raises(openai.PermissionDeniedError):
            await client.chat.completions.create(
                model="cheap", messages=MSG, extra_headers={"x-engine-policy": "fast"}
            )
        await client.chat.completions.create(model="cheap", messages=MSG)


async def test_key_workspace_overrides_client_metadata(secured: Running) -> None:
    """A key's workspace wins over whatever workspace the client claims."""
    async with secured.client("sk-team-a-0123456789") as client:
        await client.chat.completions.create(
            model="cheap", messages=MSG, metadata={"workspace": "someone-else"},
            extra_headers={"x-engine-workspace": "other"},
        )  # fmt: skip
    request, _ = secured.engine.calls[-1]
    assert request.metadata["workspace"] == "team-a"


async def test_health_is_open_but_models_need_a_key(secured: Running) -> None:
    """Probes stay open for orchestrators; listing models needs a key."""
    async with secured.http() as http:
        assert (await http.get("/healthz")).status_code == 200
        assert (await http.get("/v1/models")).status_code == 401


def test_refuses_public_bind_without_keys() -> None:
    """Binding beyond loopback without keys is refused unless --insecure."""
    assert bind_problem(ServerSettings(host="0.0.0.0")) is not None
    assert bind_problem(ServerSettings(host="0.0.0.0", insecure=True)) is None
    assert bind_problem(ServerSettings(host="0.0.0.0", api_keys=KEYS)) is None
    assert bind_problem(ServerSettings(host="127.0.0.1")) is None


def test_settings_merge_file_env_and_flags(tmp_path: Path) -> None:
    """server.yaml < ENGINE_* env < explicit flags, and key_env names a variable."""
    (tmp_path / "server.yaml").write_text(
        "port: 9000\nworkers: 2\napi_keys:\n  - id: a\n    key_env: MY_KEY\n    workspace: w\n"
    )
    env = {"ENGINE_PORT": "9100", "MY_KEY": "sk-from-env-123456", "ENGINE_API_KEYS": "sk-x-1234"}
    settings = load_settings(tmp_path, {"workers": 3}, env)
    assert (settings.port, settings.workers) == (9100, 3)
    assert [k.id for k in settings.api_keys] == ["a", "env#0"]
    assert settings.api_keys[0].secret.reveal() == "sk-from-env-123456"
    assert "sk-from-env" not in repr(settings)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("port: [1\n", "invalid YAML"),
        ("prot: 9000\n", "prot"),
        ("api_keys:\n  - id: a\n", "exactly one"),
        ("api_keys:\n  - key_env: NOT_SET_ANYWHERE\n", "NOT_SET_ANYWHERE"),
        ("port: 99999\n", "port"),
    ],
)
def test_bad_server_yaml_is_a_config_error(tmp_path: Path, text: str, needle: str) -> None:
    """Every server.yaml mistake is a ConfigError that names the problem."""
    (tmp_path / "server.yaml").write_text(text)
    with pytest.raises(ConfigError) as info:
        load_settings(tmp_path, env={})
    assert needle in " ".join(d.format() for d in info.value.diagnostics)


def test_binary_server_yaml_is_a_config_error(tmp_path: Path) -> None:
    """A server.yaml that is not UTF-8 text is a ConfigError naming the file, not a traceback."""
    (tmp_path / "server.yaml").write_bytes(b"\x00\xff\xfe")
    with pytest.raises(ConfigError) as info:
        load_settings(tmp_path, env={})
    assert "server.yaml" in info.value.diagnostics[0].format()
    assert "binary file" in info.value.diagnostics[0].format()
