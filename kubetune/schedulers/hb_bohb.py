"""``HyperBandForBOHB``: HyperBand as BOHB uses it (Ray's ``HyperBandForBOHB``).

The synchronous HyperBand of :mod:`kubetune.schedulers.hyperband`: trials fill brackets in
order and pause at their bracket's milestones, where the best ``1/eta`` go on. Pair it with
:class:`kubetune.search.bohb.TuneBOHB`, which learns from every result at the budget reached
(``time_attr``), so the budgets of the milestones feed BOHB's model. Ray's version also tells
the searcher when a trial pauses; TuneBOHB here needs no such call, as each result is already
an observation at its budget.
"""

from __future__ import annotations

from kubetune.schedulers.hyperband import HyperBandScheduler


class HyperBandForBOHB(HyperBandScheduler):
    """HyperBand for BOHB; same arguments as :class:`HyperBandScheduler`."""
