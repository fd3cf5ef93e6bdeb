"""Names of the fields kubetune fills into every result (Ray's exact names)."""

from __future__ import annotations

DONE = "done"
SHOULD_CHECKPOINT = "should_checkpoint"
TRAINING_ITERATION = "training_iteration"
TIME_THIS_ITER_S = "time_this_iter_s"
TIME_TOTAL_S = "time_total_s"
TIMESTAMP = "timestamp"
DATE = "date"
PID = "pid"
HOSTNAME = "hostname"
NODE_IP = "node_ip"
CONFIG = "config"
TIME_SINCE_RESTORE = "time_since_restore"
ITERATIONS_SINCE_RESTORE = "iterations_since_restore"
TRIAL_ID = "trial_id"
EXPERIMENT_TAG = "experiment_tag"
CHECKPOINT_DIR_NAME = "checkpoint_dir_name"

# Fields the runner fills in; a user metric with one of these names is overwritten,
# except ``done`` and ``time_this_iter_s``, which a user may set (as in Ray).
AUTO_FILLED = (
    TRAINING_ITERATION,
    TIME_THIS_ITER_S,
    TIME_TOTAL_S,
    TIMESTAMP,
    DATE,
    PID,
    HOSTNAME,
    NODE_IP,
    CONFIG,
    TIME_SINCE_RESTORE,
    ITERATIONS_SINCE_RESTORE,
    TRIAL_ID,
    EXPERIMENT_TAG,
    DONE,
)
DATE_FORMAT = "%Y-%m-%d_%H-%M-%S"
