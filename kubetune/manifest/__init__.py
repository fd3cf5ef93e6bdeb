"""The ``TuneExperiment`` manifest: its CRD schema (one source of truth for the cluster and
for local mode), validation with readable messages, and its translation into Tuner objects."""
