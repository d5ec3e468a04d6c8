"""Azure OpenAI: the OpenAI chat protocol at deployment URLs with an `api-key` header.

Options: `deployment` (default: the endpoint's upstream model), `api_version` (default
`2024-10-21`, the latest GA in the published spec), `api_style: v1` for the newer
`{endpoint}/openai/v1/chat/completions` API without api-version, and `auth: bearer` to
send the key as a Microsoft Entra token instead. Bodies, streams and errors are OpenAI's
(parsed by engine.providers.openai); Azure's extras are handled there too: the leading
`choices: []` prompt-filter chunk is skipped, `finish_reason: content_filter` is kept, and
a 400 with `code: content_filter` / `innererror` becomes ContentFilteredError.
"""

from __future__ import annotations

from urllib.parse import quote

from engine.endpoints import Endpoint

from .common import json_headers, key_header
from .openai import OpenAIAdapter

__all__ = ["DEFAULT_API_VERSION", "AzureAdapter"]

DEFAULT_API_VERSION = "2024-10-21"


class AzureAdapter(OpenAIAdapter):
    """Chat Completions on an Azure OpenAI resource."""

    protocol = "azure"

    def url(self, endpoint: Endpoint) -> str:
        base = endpoint.base_url.rstrip("/")
        if endpoint.options.get("api_style") == "v1":
            return f"{base}/openai/v1/chat/completions"
        deployment = quote(endpoint.options.get("deployment") or endpoint.upstream_model, safe="")
        version = quote(endpoint.options.get("api_version") or DEFAULT_API_VERSION, safe="")
        return f"{base}/openai/deployments/{deployment}/chat/completions?api-version={version}"

    def headers(self, endpoint: Endpoint) -> dict[str, str]:
        return json_headers(endpoint, key_header(endpoint, "api-key"))
