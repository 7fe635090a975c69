"""Domain logic. Services depend on ports (shared.ports) and models, never on a Google client."""
