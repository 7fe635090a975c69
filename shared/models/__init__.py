"""pydantic models per purpose: what clients send, what is stored, what is returned."""
