"""Fake Azure OpenAI upstream: the OpenAI fake routed by deployment.

It requires `api-version` and the `api-key` header, opens streams with a `choices: []`
prompt-filter chunk and reports content filtering the way the live service does
(`innererror.content_filter_result`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web

from ._server import Ask, BadRequest, json_response
from .openai import FakeOpenAI, parse_chat

__all__ = ["FakeAzure"]


_FILTER_OK = {
    "hate": {"filtered": False, "severity": "safe"},
    "self_harm": {"filtered": False, "severity": "safe"},
    "sexual": {"filtered": False, "severity": "safe"},
    "violence": {"filtered": False, "severity": "safe"},
}


class FakeAzure(FakeOpenAI):
    """`POST {url}/openai/deployments/{deployment}/chat/completions?api-version=...`, and
    the newer `POST {url}/openai/v1/chat/completions` with the deployment as `model`.

    `deployments` (optional) lists the deployments that exist; others answer 404
    DeploymentNotFound. `url` is the resource endpoint (no path).
    """

    name = "azure"
    base_path = ""

    def __init__(
        self, *, api_key: str | None = None, seed: int = 0, deployments: tuple[str, ...] = ()
    ) -> None:
        super().__init__(api_key=api_key, seed=seed)
        self.deployments = deployments

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/openai/deployments/{deployment}/chat/completions", self.handle)
        app.router.add_post("/openai/v1/chat/completions", self.handle)  # the newer v1 API
        app.router.add_post("/openai/deployments/{deployment}/embeddings", self.handle_embed)

    def presented_key(self, request: web.Request) -> str | None:
        key = request.headers.get("api-key")
        return key if key is not None else super().presented_key(request)

    def auth_error(self, request: web.Request) -> web.Response | None:
        key = self.presented_key(request)
        if key is None or (self.api_key is not None and key != self.api_key):
            message = (
                "Access denied due to invalid subscription key or wrong API endpoint. "
                "Make sure to provide a valid key for an active subscription and use a "
                "correct regional API endpoint for your resource."
            )
            return json_response(401, {"error": {"code": "401", "message": message}}, {})
        return None

    def error_body(self, status: int, message: str, code: str | None) -> dict[str, Any]:
        if code == "content_filter":
            return {
                "error": {
                    "message": message,
                    "type": None,
                    "param": "prompt",
                    "code": "content_filter",
                    "status": status,
                    "innererror": {
                        "code": "ResponsibleAIPolicyViolation",
                        "content_filter_result": {
                            **_FILTER_OK,
                            "violence": {"filtered": True, "severity": "medium"},
                        },
                    },
                }
            }
        if status == 429:
            return {"error": {"code": "429", "message": message}}
        return super().error_body(status, message, code)

    def error_response(
        self, status: int, message: str, code: str | None, headers: Mapping[str, str]
    ) -> web.Response:
        headers = {**headers, "apim-request-id": f"apim-{self._count:08d}"}
        return json_response(status, self.error_body(status, message, code), headers)

    def success_headers(self) -> dict[str, str]:
        used = self._count
        return {
            "apim-request-id": f"apim-{used:08d}",
            "x-ms-region": "Sweden Central",
            "x-ratelimit-remaining-requests": str(max(0, 1000 - used)),
            "x-ratelimit-remaining-tokens": str(max(0, 100000 - 50 * used)),
        }

    def parse(self, request: web.Request, body: Any) -> Ask:
        if "deployment" not in request.match_info:  # v1 API: deployment named by `model`
            ask = parse_chat(body)
            if self.deployments and ask.model not in self.deployments:
                raise _DeploymentNotFound
            return ask
        if not request.query.get("api-version"):
            raise BadRequest("Missing required query parameter: api-version")
        deployment = request.match_info["deployment"]
        if self.deployments and deployment not in self.deployments:
            raise _DeploymentNotFound
        has_model = isinstance(body, dict) and body.get("model")
        return parse_chat(body, model_override=None if has_model else deployment)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        try:
            return await super().handle(request)
        except _DeploymentNotFound:
            message = (
                "The API deployment for this resource does not exist. If you created the "
                "deployment within the last 5 minutes, please wait a moment and try again."
            )
            return json_response(
                404, {"error": {"code": "DeploymentNotFound", "message": message}}, {}
            )

    def _decorate(self, data: dict[str, Any]) -> dict[str, Any]:
        data["prompt_filter_results"] = [{"prompt_index": 0, "content_filter_results": _FILTER_OK}]
        for choice in data["choices"]:
            choice["content_filter_results"] = _FILTER_OK
        return data

    def _lead_chunks(self, ask: Ask) -> list[dict[str, Any]]:
        return [
            {
                "choices": [],
                "created": 0,
                "id": "",
                "model": "",
                "object": "",
                "prompt_filter_results": [
                    {"prompt_index": 0, "content_filter_results": _FILTER_OK}
                ],
            }
        ]


class _DeploymentNotFound(Exception):
    pass
