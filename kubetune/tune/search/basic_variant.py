"""``ray.tune.search.basic_variant`` -> ``kubetune.tune.search.basic_variant``."""

from kubetune.search.basic_variant import BasicVariantGenerator
from kubetune.search.concurrency_limiter import ConcurrencyLimiter
from kubetune.search.repeater import Repeater
from kubetune.search.searcher import Searcher

__all__ = ["BasicVariantGenerator", "ConcurrencyLimiter", "Repeater", "Searcher"]
