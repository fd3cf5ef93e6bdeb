"""``Tuner.fit()`` in cluster mode: translate, ship, create the TuneExperiment, watch, read back.

Order matters for "refused before anything is created": the translation and its round trip
through the manifest reader run first, then the storage and the cluster are checked, then the
code is stored, and the TuneExperiment is created last. Ctrl-C detaches (the experiment keeps
running) and prints how to reattach and how to stop it.
"""

from __future__ import annotations

import os
import re
import sys
import time
from datetime import datetime
from typing import Any

from kubetune.cluster import ship
from kubetune.cluster.mode import ClusterSettings
from kubetune.cluster.roundtrip import check_round_trip, manifest_document
from kubetune.cluster.translate import experiment_spec

TERMINAL = ("Succeeded", "Failed")
POLL_S = 1.0


def dns_name(name: str) -> str:
    out = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")[:63].strip("-")
    return out or "experiment"


def _trainable_name(trainable: Any) -> str:
    name = getattr(trainable, "__name__", None) or type(trainable).__name__
    return re.sub(r"[^A-Za-z0-9_]", "_", str(name)) or "trainable"


def storage_spec(
    settings: ClusterSettings, storage_path: str | None = None
) -> tuple[str, dict[str, Any]]:
    """(s3://bucket/prefix, spec.storage): the settings' storage, else an s3:// storage_path."""
    uri = settings.storage
    if not uri and storage_path and storage_path.startswith("s3://"):
        uri = storage_path
    if not uri or not uri.startswith("s3://"):
        raise ValueError(
            "cluster mode needs the experiments' S3 location: set KUBETUNE_STORAGE=s3://BUCKET/"
            "PREFIX (or storage = ... in the config file), the same storage the trial pods use"
        )
    bucket, _, prefix = uri[len("s3://") :].partition("/")
    spec: dict[str, Any] = {"bucket": bucket}
    if prefix.strip("/"):
        spec["prefix"] = prefix.strip("/")
    endpoint = (
        settings.pod_storage_endpoint
        or settings.storage_endpoint
        or os.environ.get("KUBETUNE_S3_ENDPOINT_URL")
    )
    if endpoint:
        spec["endpoint"] = endpoint
    if os.environ.get("KUBETUNE_S3_REGION"):
        spec["region"] = os.environ["KUBETUNE_S3_REGION"]
    style = os.environ.get("KUBETUNE_S3_ADDRESSING_STYLE")
    if style in ("path", "virtual"):
        spec["addressingStyle"] = style
    if settings.storage_secret:
        spec["secretName"] = settings.storage_secret
    return uri.rstrip("/"), spec


class ClusterRun:
    def __init__(self, tuner: Any, settings: ClusterSettings) -> None:
        self.tuner = tuner
        self.settings = settings

    # -- a new experiment -------------------------------------------------------------------
    def run(self) -> Any:
        restore = self.tuner._restore
        if restore is not None:
            from kubetune.cluster.reattach import continue_experiment

            return continue_experiment(self, restore)
        tuner, settings = self.tuner, self.settings
        spec = experiment_spec(tuner)  # refuses what the operator cannot run
        stamp = datetime.now().strftime("%Y-%m-%d-%H-%M-%S")
        name = dns_name(tuner.run_config.name or f"{_trainable_name(tuner.trainable)}-{stamp}")
        spec["trainable"] = {"entrypoint": f"shipped:{_trainable_name(tuner.trainable)}"}
        if settings.image:
            spec["trainable"]["image"] = settings.image
        check_round_trip(tuner, manifest_document(tuner, name, spec))
        root, spec["storage"] = storage_spec(settings, tuner.run_config.storage_path)
        from kubetune.cluster.kube import Cluster
        from kubetune.storage import open_storage

        cluster = Cluster(settings.context, settings.namespace)
        name = self._free_name(cluster, root, name)
        uri = f"{root}/{name}"
        storage = open_storage(uri)
        from kubetune.cluster.follow import FOLLOWER_FILES

        for key in FOLLOWER_FILES:  # left by an earlier submission that never started
            storage.delete_prefix(key)
        parts = ship.ship(tuner, storage, settings.working_dir, settings.requirements)
        spec["trainable"]["codeFrom"] = storage.uri(ship.CODE)
        if parts["params"]:
            spec["trainable"]["parametersFrom"] = storage.uri(ship.PARAMS)
        body = manifest_document(tuner, name, spec)
        ship.save_experiment(storage, body, cluster.namespace)
        cluster.create(body)
        self._say(
            f"kubetune: created TuneExperiment {name} in namespace {cluster.namespace} ({uri})"
        )
        return self.watch(cluster, name, uri)

    def _free_name(self, cluster: Any, root: str, name: str) -> str:
        """``name``, or ``name-2``, ``name-3``... after earlier runs under that name: as in
        Ray, a script may run two Tuners with one RunConfig.name; each run is a TuneExperiment
        of its own here, and the earlier ones (objects and stored results) stay as they are.
        A run of that name still going is refused: reattach to it instead."""
        from kubetune.storage import open_storage

        wanted = name
        for n in range(2, 1000):
            existing = cluster.get(name)
            if existing is not None:
                phase = (existing.get("status") or {}).get("phase")
                if phase not in TERMINAL:
                    raise FileExistsError(
                        f"TuneExperiment {name} is running in namespace {cluster.namespace}"
                        f" ({phase or 'Pending'}): reattach with Tuner.restore('{root}/{name}')"
                        ".fit(), or choose another RunConfig.name"
                    )
            elif not open_storage(f"{root}/{name}").exists("experiment_state.json"):
                if name != wanted:
                    self._say(
                        f"kubetune: an earlier run is named {wanted} (TuneExperiment or stored"
                        f" results in {root}); this one is {name}"
                    )
                return name
            name = dns_name(f"{wanted[:58]}-{n}")
        raise FileExistsError(f"no free TuneExperiment name {wanted}-N in {cluster.namespace}")

    # -- watching ---------------------------------------------------------------------------
    def _say(self, line: str) -> None:
        if self.tuner.run_config.verbose:
            print(line, flush=True)

    def view(self, uri: str, name: str) -> Any:
        from kubetune.cluster.follow import ClusterView
        from kubetune.storage import open_storage

        return ClusterView(self.tuner, open_storage(uri), uri, name)

    def watch(self, cluster: Any, name: str, uri: str) -> Any:
        """Follow the experiment until it ends: local mode's table, the user's callbacks."""
        view = self.view(uri, name)
        status: dict[str, Any] = {}
        try:
            while True:
                obj = cluster.get(name)
                if obj is None:
                    raise RuntimeError(
                        f"TuneExperiment {name} was deleted in namespace {cluster.namespace};"
                        f" continue it with Tuner.restore({uri!r}).fit()"
                    )
                status = obj.get("status") or {}
                if status.get("phase") in TERMINAL:
                    break
                view.poll()
                time.sleep(POLL_S)
            view.poll(final=True)
        except KeyboardInterrupt:
            view.close()
            print(
                f"\nkubetune: detached; TuneExperiment {name} keeps running in namespace"
                f" {cluster.namespace}.\n"
                f"  reattach: tune.Tuner.restore({uri!r}).fit()  (in cluster mode)\n"
                f"  results:  kubetune results {uri}\n"
                f"  stop:     kubectl delete tuneexperiment {name} -n {cluster.namespace}\n"
                f"  pause:    kubectl patch tuneexperiment {name} -n {cluster.namespace}"
                ' --type merge -p \'{"spec":{"suspend":true}}\'',
                file=sys.stderr,
                flush=True,
            )
            raise
        finally:
            cluster.close()
        view.close()
        return self.results(status.get("storageUri") or uri, status)

    def finished(self, name: str, uri: str, status: dict[str, Any]) -> Any:
        """An experiment that ended while no one watched: the hooks it still owes the
        callbacks (none twice), then its results."""
        view = self.view(uri, name)
        try:
            view.poll(final=True)
        finally:
            view.close()
        return self.results(status.get("storageUri") or uri, status)

    def results(self, uri: str, status: dict[str, Any]) -> Any:
        from kubetune.local.result_grid import ResultGrid, TuneError
        from kubetune.storage import open_storage

        if status.get("phase") == "Failed" and not open_storage(uri).exists(
            "experiment_state.json"
        ):  # stopped before its first snapshot: a spec the operator refused (Stalled)
            raise TuneError(
                f"the operator did not run {uri}: {status.get('message') or 'no reason given'}"
            )
        grid = ResultGrid.from_path(uri)
        self._say(
            f"kubetune: {status.get('phase')}: {len(grid)} trials, {grid.num_terminated}"
            f" terminated, {grid.num_errors} errored ({uri})"
        )
        failure = self.tuner.run_config.failure_config
        if failure.fail_fast == "raise" and grid.errors:
            raise TuneError(f"a trial failed and fail_fast='raise': {grid.errors[0]}")
        return grid
