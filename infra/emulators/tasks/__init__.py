"""Cloud Tasks v2 emulator: the gRPC API of the official client, Google's documented dispatch semantics.

Queues and tasks are held in memory: restarting the emulator loses them.
"""
