"""Provider adapters, one module per wire protocol. The only package that talks HTTP upstream.

`get_adapter(protocol)` returns the shared adapter instance for a wire protocol;
`register_adapter` lets users and tests plug in their own.
"""
