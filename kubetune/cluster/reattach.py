"""``Tuner.restore(uri).fit()`` of an experiment that ran on the cluster.

- still there and unfinished: reattach (watch it again; a suspended one is resumed);
- still there and finished: its results, nothing runs (as Ray's restore of a finished run);
- gone (deleted after Ctrl-C, or lost): a new TuneExperiment continues it from storage
  (``spec.restoreFrom`` = the stored tree): finished trials are kept, unfinished ones resume
  from their checkpoints, with the code shipped the first time.
"""

from __future__ import annotations

from typing import Any

from kubetune.cluster import ship
from kubetune.cluster.follow import FOLLOWER_FILES


def continue_experiment(run: Any, restore: dict[str, Any]) -> Any:
    from kubetune.cluster.kube import Cluster
    from kubetune.storage import open_storage

    uri = restore["storage_uri"].rstrip("/")
    storage = open_storage(uri)
    saved = ship.load_experiment(storage)
    if saved is None:
        raise RuntimeError(
            f"{uri} was not submitted from Python (no {ship.EXPERIMENT}): continue it by"
            " applying its TuneExperiment again with spec.restoreFrom set to that URI"
        )
    body = saved["experiment"]
    name = body["metadata"]["name"]
    cluster = Cluster(run.settings.context, run.settings.namespace or saved.get("namespace"))
    current = cluster.get(name)
    if current is not None:
        status = current.get("status") or {}
        if status.get("phase") in ("Succeeded", "Failed"):
            cluster.close()
            return run.finished(name, uri, status)
        if (current.get("spec") or {}).get("suspend"):
            cluster.patch_spec(name, {"suspend": False})
        run._say(f"kubetune: reattached to TuneExperiment {name} in namespace {cluster.namespace}")
        return run.watch(cluster, name, uri)
    # gone: continue it as a new experiment next to the old tree
    n = 1
    while cluster.get(f"{name}-r{n}") is not None:
        n += 1
    new_name = f"{name}-r{n}"[:63]
    spec = dict(body["spec"])
    spec["restoreFrom"] = uri
    options = {
        "resumeErrored": bool(restore.get("resume_errored")),
        "restartErrored": bool(restore.get("restart_errored")),
    }
    spec["restoreOptions"] = options
    new_body = {**body, "metadata": {"name": new_name}, "spec": spec}
    new_uri = uri.rsplit("/", 1)[0] + "/" + new_name
    new_storage = open_storage(new_uri)
    ship.save_experiment(new_storage, new_body, cluster.namespace)
    for key in (ship.TUNER, *FOLLOWER_FILES):  # the callbacks carry on where they were
        try:
            new_storage.put_bytes(key, storage.get_bytes(key))
        except FileNotFoundError:
            pass
    cluster.create(new_body)
    run._say(
        f"kubetune: {name} is gone from namespace {cluster.namespace}; continuing it as"
        f" TuneExperiment {new_name} ({new_uri})"
    )
    return run.watch(cluster, new_name, new_uri)
