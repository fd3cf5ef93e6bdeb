"""``spec.queueName``: the Kueue LocalQueue of an experiment's trial pods (assembled into the
CRD by ``crd.py``)."""

from __future__ import annotations

from kubetune.manifest.schema_builders import Schema, string


def queue_name() -> Schema:
    # Kueue reads it from a label (kueue.x-k8s.io/queue-name), and LocalQueues are named as
    # DNS subdomains: a name that is both is at most 63 characters of [a-z0-9.-].
    return string(
        "Kueue LocalQueue (in the experiment's namespace) that admits the trial pods: each"
        " gets the label kueue.x-k8s.io/queue-name and waits, gated, until Kueue admits it; a"
        " trial of several pods is admitted whole. Unset: the operator's default queue, if any.",
        maxLength=63,
        pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
    )
