"""Test helpers shipped with the package, for our tests and for users' own.

`engine.testing.fakes`: protocol-faithful fake upstreams (OpenAI, Azure, Anthropic, Gemini,
Ollama) on loopback ports, with fault injection; `engine.testing.clock.FakeClock`: a clock
that only moves when told, so nothing waits for real.
"""
