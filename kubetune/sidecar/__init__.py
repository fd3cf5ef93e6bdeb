"""The trial pod's sidecar: restores inputs, uploads results and checkpoints, reports progress."""
