"""``ray.tune.search.concurrency_limiter`` -> ``kubetune.tune.search.concurrency_limiter``."""

from kubetune.search.concurrency_limiter import ConcurrencyLimiter

__all__ = ["ConcurrencyLimiter"]
