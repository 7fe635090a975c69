"""`batchctl`: the platform's command line (the local cloud from emulator.json, or --url and a key)."""
