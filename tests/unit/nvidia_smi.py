"""A stand-in ``nvidia-smi`` for tests of GPU code on a machine without GPUs.

It prints what ``nvidia-smi --query-gpu=... --format=csv,noheader,nounits`` prints for the
fields that kubetune and GPUtil ask for (index, uuid, utilization, memory total/used/free,
driver, name, bus id, display mode/active, temperature), whatever it is asked.
"""

from __future__ import annotations

import stat
from pathlib import Path


def gpu_line(
    index: int,
    uuid: str,
    *,
    utilization: int = 0,
    used: int | str = 0,
    free: int = 16000,
    name: str = "Fake",
    bus_id: str = "0001",
) -> str:
    """One GPU's CSV line (16000 MiB in all, driver 535.0, 40 degrees)."""
    return (
        f"{index}, {uuid}, {utilization}, 16000, {used}, {free}, 535.0, {name}, {bus_id},"
        " Disabled, Disabled, 40"
    )


def write_nvidia_smi(folder: Path, *lines: str, prelude: str = "") -> Path:
    """An executable ``folder/nvidia-smi`` that runs the shell ``prelude`` and prints
    ``lines`` (from :func:`gpu_line`; ``$name`` in one reads a shell variable the prelude set).
    Returns ``folder``, to put on PATH."""
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "nvidia-smi"
    script.write_text("#!/bin/sh\n" + prelude + "".join(f'echo "{line}"\n' for line in lines))
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return folder


def two_fake_gpus(folder: Path) -> Path:
    """A stand-in for a machine with two idle GPUs, 0 (GPU-a) and 1 (GPU-b)."""
    return write_nvidia_smi(folder, gpu_line(0, "GPU-a"), gpu_line(1, "GPU-b", bus_id="0002"))
