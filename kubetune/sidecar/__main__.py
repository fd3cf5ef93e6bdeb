"""``python -m kubetune.sidecar`` (the pod's sidecar) and ``--probe`` (its startup probe)."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from types import FrameType


def probe(root: str) -> int:
    from kubetune.sidecar.config import READY_FILE

    return 0 if os.path.exists(os.path.join(root, READY_FILE)) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kubetune.sidecar", description=__doc__)
    parser.add_argument("--probe", action="store_true", help="exit 0 once inputs are restored")
    args = parser.parse_args(argv)
    root = os.environ.get("KUBETUNE_SIDECAR_ROOT") or "/kubetune"
    if args.probe:
        return probe(root)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    from kubetune.sidecar.config import ConfigError, SidecarConfig
    from kubetune.sidecar.core import Sidecar, TrialApi

    try:
        cfg = SidecarConfig.from_env()
    except ConfigError as exc:
        print(f"kubetune.sidecar: {exc}", file=sys.stderr)
        return 2
    if os.environ.get("KUBETUNE_SIDECAR_ROLE") == "worker":
        return _run_worker(cfg)
    api: TrialApi | None = None
    if cfg.trial:
        from kubetune.sidecar.kube import KubeTrialApi

        api = KubeTrialApi(cfg.trial, cfg.namespace, cfg.token_dir)
    sidecar = Sidecar(cfg, api=api)

    def on_term(signum: int, frame: FrameType | None) -> None:
        sidecar.terminate()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    return sidecar.run()


def _run_worker(cfg: object) -> int:
    """A worker pod of a multi-worker trial (``kubetune.sidecar.worker``)."""
    import threading

    from kubetune.sidecar.config import SidecarConfig
    from kubetune.sidecar.kube import KubeTrialApi
    from kubetune.sidecar.worker import run_worker

    assert isinstance(cfg, SidecarConfig) and cfg.trial
    stop = threading.Event()

    def on_term(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    return run_worker(cfg, KubeTrialApi(cfg.trial, cfg.namespace, cfg.token_dir), stop)


if __name__ == "__main__":
    sys.exit(main())
