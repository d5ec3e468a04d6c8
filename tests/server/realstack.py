"""The real stack for server tests: Engine.from_config over two fake OpenAI upstreams.

`primary` and `backup` are both OpenAI-protocol fakes on loopback; policy `chat` tries
primary first and fails over to backup; model pins `primary/gpt-4o-mini` work too. Retries
are off and breakers generous, so each scripted fault maps to exactly one attempt.
"""

from __future__ import annotations

from pathlib import Path

MODEL = """\
    upstream: gpt-4o-mini
    capabilities: [chat, tools, json, streaming]
    context_window: 128000
    max_output: 16384
    input_price: 1.0
    output_price: 2.0
    quality: 0.8
"""


def write_config(directory: Path, primary: str, backup: str) -> Path:
    """models.yaml + routes/ for the two fakes; returns the directory."""
    (directory / "routes").mkdir(parents=True, exist_ok=True)
    (directory / "models.yaml").write_text(
        "providers:\n"
        f"  primary: {{protocol: openai, base_url: '{primary}', api_key: sk-primary-key-0000000}}\n"
        f"  backup: {{protocol: openai, base_url: '{backup}', api_key: sk-backup-key-00000000}}\n"
        "models:\n"
        f"  primary/gpt-4o-mini:\n{MODEL}"
        f"  backup/gpt-4o-mini:\n{MODEL}"
    )
    write_route(directory, "chat")
    return directory


def write_route(directory: Path, name: str, extra: str = "") -> None:
    (directory / "routes" / f"{name}.yaml").write_text(
        "strategy: ordered\n"
        "candidates: [primary/gpt-4o-mini, backup/gpt-4o-mini]\n"
        "retries: {max_retries: 0}\n"
        "fallback: {max_attempts: 2}\n" + extra
    )
