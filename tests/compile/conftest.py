"""A small in-memory registry shared by the compile tests."""

from __future__ import annotations

from typing import Any

import pytest

MODELS: dict[str, Any] = {
    "providers": {
        "mock": {"protocol": "mock"},
        "cloud": {
            "protocol": "openai",
            "base_url": "http://127.0.0.1:9/v1",
            "api_key": "${CLOUD_KEY}",
        },
        "off": {"protocol": "anthropic", "base_url": "http://127.0.0.1:9", "api_key": "${OFF_KEY}"},
    },
    "models": {
        "mock/tiny": {
            "capabilities": ["chat"],
            "context_window": 4000,
            "quality": 0.3,
            "latency_ms": 5,
        },
        "mock/big": {
            "capabilities": ["chat", "code", "vision", "long_context"],
            "context_window": 500000,
            "quality": 0.6,
            "latency_ms": 50,
        },
        "cloud/cheap": {
            "capabilities": ["chat", "tools", "json"],
            "context_window": 32000,
            "input_price": 0.1,
            "output_price": 0.4,
            "quality": 0.6,
            "latency_ms": 300,
        },
        "cloud/mid": {
            "capabilities": ["chat", "code", "tools", "json", "vision"],
            "context_window": 128000,
            "input_price": 1.0,
            "output_price": 4.0,
            "quality": 0.8,
            "latency_ms": 800,
        },
        "cloud/top": {
            "capabilities": ["chat", "code", "tools", "json", "vision", "reasoning"],
            "context_window": 200000,
            "input_price": 5.0,
            "output_price": 25.0,
            "quality": 0.95,
            "latency_ms": 2000,
        },
        "off/claude": {
            "capabilities": ["chat", "code"],
            "context_window": 200000,
            "input_price": 3.0,
            "output_price": 15.0,
            "quality": 0.9,
            "latency_ms": 1500,
        },
    },
}
ENV = {"CLOUD_KEY": "k-cloud"}


@pytest.fixture
def models() -> dict[str, Any]:
    return MODELS
