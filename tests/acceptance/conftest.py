"""Shared set-up for the acceptance suite: a clean environment and config directories.

Every test here drives one feature of the in-house services we replace (the "seeds")
through our public surface: `engine.run/arun/stream`, `Engine`, the YAML config, the CLI
(`engine.cli.main`) and the server with the official `openai` SDK. Upstreams are the
protocol-faithful fakes on loopback or the built-in mock provider; time is a FakeClock.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: Every variable the shipped models.yaml reads, cleared so the host cannot leak in.
ENV_VARS = (
    "OPENAI_API_KEY",
    "ANTHROPIC_API_KEY",
    "GEMINI_API_KEY",
    "AZURE_OPENAI_API_KEY",
    "AZURE_OPENAI_ENDPOINT",
    "AZURE_OPENAI_API_VERSION",
    "GROQ_API_KEY",
    "DEEPSEEK_API_KEY",
    "MISTRAL_API_KEY",
    "TOGETHER_API_KEY",
    "HF_TOKEN",
    "OPENROUTER_API_KEY",
    "OPENAI_BASE_URL",
    "ANTHROPIC_BASE_URL",
    "GEMINI_BASE_URL",
    "GROQ_BASE_URL",
    "DEEPSEEK_BASE_URL",
    "MISTRAL_BASE_URL",
    "TOGETHER_BASE_URL",
    "HUGGINGFACE_BASE_URL",
    "OPENROUTER_BASE_URL",
    "OLLAMA_BASE_URL",
    "AZURE_BASE_URL",
    "MOCK_BASE_URL",
    "ENGINE_CONFIG",
    "ENGINE_LEDGER",
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No host keys or URLs; the ledger lives in the test's own directory."""
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ENGINE_LEDGER", str(tmp_path / "ledger.sqlite3"))


def write_config(directory: Path, models: str, routes: Mapping[str, str]) -> Path:
    """A config directory: models.yaml plus one routes/<name>.yaml per entry."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "models.yaml").write_text(models)
    (directory / "routes").mkdir(exist_ok=True)
    for name, text in routes.items():
        (directory / "routes" / f"{name}.yaml").write_text(text)
    return directory


def shipped_config(directory: Path) -> Path:
    """A copy of the repository's own models.yaml and routes/ (ledger stays in tmp)."""
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "models.yaml", directory / "models.yaml")
    shutil.copytree(ROOT / "routes", directory / "routes")
    shutil.copytree(ROOT / "schema", directory / "schema")
    return directory


def ask(text: str = "hello there", **extra: Any) -> dict[str, Any]:
    """One user message, OpenAI-style, plus any routing inputs."""
    return {"messages": [{"role": "user", "content": text}], "max_tokens": 50, **extra}


#: Three free mock models with distinct latency / quality / price priors.
MOCK_MODELS = """
providers:
  mock:
    protocol: mock
    local: true
    implicit: true  # these tests route over every mock model without listing them
    options: {latency_ms: 0, fail_rate: 0, seed: 1}
models:
  mock/fast:
    capabilities: [chat, streaming]
    context_window: 16000
    max_output: 1000
    quality: 0.4
    latency_ms: 50
    input_price: 0.1
    output_price: 0.2
  mock/smart:
    capabilities: [chat, streaming, reasoning, tools]
    context_window: 200000
    max_output: 4000
    quality: 0.9
    latency_ms: 900
    input_price: 5
    output_price: 15
  mock/coder:
    capabilities: [chat, streaming, code, tools]
    context_window: 64000
    max_output: 4000
    quality: 0.7
    latency_ms: 300
    input_price: 1
    output_price: 2
"""
