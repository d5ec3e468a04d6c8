"""Shared state: the async protocols (protocols.py) and their backends (assemble picks)."""
