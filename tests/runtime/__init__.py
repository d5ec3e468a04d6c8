"""Runtime tests: the Engine driven through its public API with doubles and FakeClock."""
