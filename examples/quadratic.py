"""The trainable of examples/quadratic.yaml: one report of (x - 3)^2 per trial."""

from __future__ import annotations

from kubetune.air import session


def objective(config: dict) -> None:
    session.report({"loss": (config["x"] - 3) ** 2})
