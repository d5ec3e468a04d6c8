"""Credentials written into a provider's base_url never show in a repr or a message."""

from __future__ import annotations

from pathlib import Path

from engine.compile import load_plan
from engine.endpoints import Endpoint
from engine.secrets import redact

PASSWORD = "hunter2-gateway-pass"


def test_plan_and_endpoint_reprs_mask_url_credentials(tmp_path: Path) -> None:
    """`https://user:pass@host` compiles to a plan whose repr shows `https://***@host`,
    while the URL itself (what the transport dials) is unchanged."""
    (tmp_path / "routes").mkdir()
    (tmp_path / "models.yaml").write_text(
        "providers:\n"
        "  gw: {protocol: openai, api_key: sk-test-0000000000000,\n"
        f"       base_url: 'https://svc-user:{PASSWORD}@gateway.example/v1'}}\n"
        "models:\n"
        "  gw/m: {upstream: m, context_window: 1000}\n"
    )
    (tmp_path / "routes" / "default.yaml").write_text("strategy: ordered\ncandidates: [gw/m]\n")
    plan, _ = load_plan(tmp_path)
    provider = plan.providers["gw"]
    assert provider.base_url == f"https://svc-user:{PASSWORD}@gateway.example/v1"
    assert PASSWORD not in repr(plan) and "svc-user" not in repr(provider)
    assert "https://***@gateway.example/v1" in repr(provider)
    endpoint = Endpoint("gw", "openai", provider.base_url, "m")  # as the runtime builds it
    assert PASSWORD not in repr(endpoint)
    assert PASSWORD not in redact(f"cannot connect to {provider.base_url}/chat/completions")
