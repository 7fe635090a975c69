"""The kinds of work the engine runs: one module each, registered in `shared.kinds.registry`."""
