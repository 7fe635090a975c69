"""Cloud Scheduler v1 emulator: the gRPC API of the official client; jobs fire on their unix-cron schedule.

Jobs are held in memory only: restarting the emulator loses them (the local cloud re-applies the platform's
own from `infra/resources.py`). Run it with `python -m infra.emulators.scheduler [--port N]`.
"""
