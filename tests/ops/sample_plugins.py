"""Plugins the server tests name by dotted path in server.yaml (tests.ops.sample_plugins.X)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from engine.messages import Request
from engine.result import Response


async def tag_workspace(request: Request) -> dict[str, Any]:
    """before_request: route every call to the `plugged` workspace, with a system note."""
    data = request.model_dump(exclude_none=True)
    data["metadata"] = {**data.get("metadata", {}), "workspace": "plugged"}
    data["messages"] = [{"role": "system", "content": "plugin was here"}, *data["messages"]]
    return data


def annotate(request: Request, response: Response) -> dict[str, str]:
    """after_response (a plain function): metadata for the client."""
    return {"reviewed": "yes", "answered-by": response.provider}


async def note_error(request: Request, error: BaseException) -> None:
    """on_error: append the error's class to the file named by $PLUGIN_ERRORS."""
    with Path(os.environ["PLUGIN_ERRORS"]).open("a") as f:
        f.write(type(error).__name__ + "\n")


NOT_A_FUNCTION = 42
