"""Run one fake upstream from the command line, for demos and manual poking.

    python -m engine.testing.fakes openai --port 8001 [--key sk-demo] [--latency 0.05]

Prints the base URL to point a provider at, then serves until interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys

from . import FakeAnthropic, FakeAzure, FakeGemini, FakeOllama, FakeOpenAI, Fault
from ._server import FakeUpstream

FAKES: dict[str, type[FakeUpstream]] = {
    "openai": FakeOpenAI,
    "azure": FakeAzure,
    "anthropic": FakeAnthropic,
    "gemini": FakeGemini,
    "ollama": FakeOllama,
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m engine.testing.fakes", description=__doc__)
    parser.add_argument("protocol", choices=sorted(FAKES))
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--key", default=None, help="the only API key accepted (default: any)")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before each answer")
    return parser.parse_args(argv)


async def serve(args: argparse.Namespace) -> None:
    fake = FAKES[args.protocol](api_key=args.key)
    fake.default_fault = Fault(latency=args.latency)
    await fake.start(port=args.port)
    print(fake.url, flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await fake.stop()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
