"""``kubetune-operator``: parse the command line and environment, then run kopf.

    kubetune-operator [--namespace NS ...] [--all-namespaces] [--peering NAME] [--standalone]
                      [--liveness-port 8080] [--metrics-port 9090] [--verbose]

Leader election is kopf's peering: with ``--peering NAME`` replicas coordinate through the
``KopfPeering`` object NAME in each watched namespace (``ClusterKopfPeering`` with
``--all-namespaces``); the chart installs kopf's peering CRDs and the objects. ``--standalone``
runs without peering (one replica; deploy it with ``strategy: Recreate``). Without either,
kopf uses the peering object named ``default`` when it exists.

Environment: KUBETUNE_SIDECAR_IMAGE, KUBETUNE_GPU_RESOURCE, KUBETUNE_EXTENDED_RESOURCES (JSON),
KUBETUNE_TRIAL_SERVICE_ACCOUNT, KUBETUNE_DEFAULT_S3_{ENDPOINT,REGION,BUCKET,PREFIX,
ADDRESSING_STYLE}, KUBETUNE_IMAGE_PULL_SECRETS (comma list); see ``config.py``.
kopf puts the finalizer ``kubetune.io/finalizer`` on each TuneExperiment (to stop its daemon
on deletion): deleting one while no operator runs waits for an operator (or a manual removal).
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import sys
from collections.abc import Sequence

from kubetune_operator.config import ConfigError, load


def main(argv: Sequence[str] | None = None) -> int:
    try:
        config = load(argv)
    except ConfigError as exc:
        print(f"kubetune-operator: {exc}", file=sys.stderr)
        return 2
    import kopf

    from kubetune_operator import handlers, metrics
    from kubetune_operator.api import KubeApi
    from kubetune_operator.state import STATE

    assert handlers  # registers the handlers with kopf
    # One handler on the root logger: kopf's (basicConfig's as well printed every line twice)
    kopf.configure(
        verbose=config.verbose,
        # kopf takes a format string as well as a LogFormat (its stubs say only the latter)
        log_format="%(asctime)s %(levelname)s %(name)s: %(message)s",  # type: ignore[arg-type]
    )
    logging.getLogger("kopf").setLevel(logging.DEBUG if config.verbose else logging.WARNING)
    # which replica serves and which pauses is worth a line in every replica's log
    logging.getLogger("kopf._core.engines.peering").setLevel(
        logging.DEBUG if config.verbose else logging.INFO
    )
    STATE.config = config
    STATE.api = KubeApi()
    metrics.serve(config.metrics_port)
    liveness = f"http://0.0.0.0:{config.liveness_port}/healthz" if config.liveness_port else None
    profile_path = os.environ.get("KUBETUNE_OPERATOR_PROFILE")
    if profile_path:  # a development aid: cProfile of the whole run, dumped at exit
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()

        def dump() -> None:
            profiler.disable()
            profiler.dump_stats(profile_path)

        atexit.register(dump)
    asyncio.run(
        kopf.operator(
            standalone=config.standalone,
            peering_name=config.peering,
            clusterwide=config.all_namespaces,
            namespaces=config.namespaces,
            liveness_endpoint=liveness,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
