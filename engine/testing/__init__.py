"""Test helpers shipped with the package, for our tests and for users' own.

- `engine.testing.fakes`: protocol-faithful fake upstreams (OpenAI, Azure, Anthropic,
  Gemini, Ollama) on loopback ports, with fault injection;
- `engine.testing.adapter.ScriptedAdapter`: an adapter answering from a handler function
  (as httpx's MockTransport), no network at all;
- `engine.testing.ledger.CapturingLedger`: a ledger keeping its rows in memory;
- `engine.testing.recording.RecordingRateLimiter` / `RecordingBudgetStore`: wrap any
  backend and record every call in order;
- `engine.testing.clock.FakeClock`: a clock that only moves when told, so nothing waits
  for real.
"""
