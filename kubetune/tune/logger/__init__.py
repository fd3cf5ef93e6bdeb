"""``ray.tune.logger`` -> ``kubetune.tune.logger``: logger callbacks."""

from kubetune.tune.logger.files import CSVLoggerCallback, JsonLoggerCallback
from kubetune.tune.logger.logger import LoggerCallback, pretty_print
from kubetune.tune.logger.tensorboardx import TBXLoggerCallback

__all__ = [
    "CSVLoggerCallback",
    "JsonLoggerCallback",
    "LoggerCallback",
    "TBXLoggerCallback",
    "pretty_print",
]
