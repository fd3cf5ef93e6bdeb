from __future__ import annotations

import os

import pytest

from tests.unit.nvidia_smi import two_fake_gpus


@pytest.fixture(autouse=True)
def _results_dir(tmp_path, monkeypatch):
    """Every test writes its experiments under its own tmp dir, never ~/kubetune_results."""
    monkeypatch.setenv("KUBETUNE_RESULTS_DIR", str(tmp_path / "results"))
    return tmp_path / "results"


@pytest.fixture
def two_gpus(tmp_path, monkeypatch):
    """This machine seems to have two idle GPUs (a stand-in nvidia-smi on PATH), none chosen."""
    folder = two_fake_gpus(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{folder}:{os.environ['PATH']}")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
