"""Local mode: the engine driving trial subprocesses on this machine (no cluster)."""
