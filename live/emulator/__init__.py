"""A local emulated cluster: an OpenAI-compatible frontend with emulated GPU workers."""

from live.emulator.launch import EmulatorHandle, EmulatorThread, start_emulated_cluster

__all__ = ["EmulatorHandle", "EmulatorThread", "start_emulated_cluster"]
