"""The seed of a run that the user did not seed.

Ray Tune is unseeded unless the user seeds it: rerunning a script samples new configs. kubetune
does the same, but draws the seed explicitly and records it in the state of the engine and of
each searcher and scheduler, so that a restored experiment goes on exactly as it would have.
"""

from __future__ import annotations

import secrets


def fresh_seed() -> int:
    return secrets.randbelow(2**31)
