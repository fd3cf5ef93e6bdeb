"""The in-trial runner: ``python -m kubetune.trial SPEC.json`` runs one trial."""
