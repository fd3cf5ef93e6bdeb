"""``kubetune dashboard``: a live web page over experiments in a local directory or in S3.

It reads the same storage layout as ``ResultGrid`` (``experiment_state.json`` plus each trial's
``result.json``, ``error.txt`` and checkpoints), keeps only what the page draws in memory, and
serves it from the standard library's HTTP server as a JSON API that the page polls with a
cursor, so an update carries only the result rows written since the last one. The page draws
with plotly.js, served from the ``plotly`` package on this machine (the browser needs no
internet). Nothing here is imported by ``import kubetune``.
"""

from __future__ import annotations
