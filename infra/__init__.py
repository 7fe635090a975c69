"""How the platform runs: the local cloud of emulators, the functions gateway and resource declarations."""
