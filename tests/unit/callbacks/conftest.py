from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _results_dir(tmp_path, monkeypatch):
    """Every test writes its experiments under its own tmp dir, never ~/kubetune_results."""
    monkeypatch.setenv("KUBETUNE_RESULTS_DIR", str(tmp_path / "results"))
    return tmp_path / "results"
