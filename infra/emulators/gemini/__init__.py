"""Gemini API emulator: what `google-genai` calls, deterministic outputs, injectable latency and faults.

State (emulator config, Gemini batches, the implicit-cache memory) is held in memory.
"""
