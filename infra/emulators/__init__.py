"""Emulators the project writes itself, for services Google ships no local emulator for."""
