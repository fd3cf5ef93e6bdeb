"""A notebook's script on the real node: `kubetune submit` of an unchanged Ray-style script
whose trials run in real containers of the trial base image the chart names (no image built
by the user), with a helper module from the working dir, S3 reached by this machine on
loopback and by the pods under an in-cluster name; the ResultGrid it returns has local mode's
best config for the same seed. ``kubetune dashboard --cluster`` then shows the trial's pod and
the tail of its container's log, which only a real kubelet serves."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

SCRIPT = """
from kubetune import air, tune
from kubetune.air import session

from helpers import score


def trainable(config):
    for step in range(4):
        print(f"trial a={config['a']} at step {step}", flush=True)
        session.report({"score": score(config["a"], config["b"], step)})


tuner = tune.Tuner(
    trainable,
    param_space={"a": tune.grid_search([1, 2, 3]), "b": tune.uniform(0, 1)},
    tune_config=tune.TuneConfig(metric="score", mode="max", seed=11),
    run_config=air.RunConfig(name="notebook", verbose=0),
)
grid = tuner.fit()
best = grid.get_best_result()
print("BEST " + json.dumps({"n": len(grid), "config": best.config, "score": best.metrics["score"],
                            "rows": len(best.metrics_dataframe)}))
"""

HELPERS = """
def score(a, b, step):
    return a * b + step * 0.1
"""


def _script(tmp_path: Path) -> Path:
    work = tmp_path / "work"
    work.mkdir()
    (work / "helpers.py").write_text(textwrap.dedent(HELPERS))
    script = work / "tune_notebook.py"
    script.write_text("import json\n" + textwrap.dedent(SCRIPT))
    return script


def _best(proc: Any) -> dict[str, Any]:
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("BEST "))
    return dict(json.loads(line[5:]))


def test_a_submitted_script_runs_its_trials_in_the_trial_base_image(
    control_plane,
    operator_ns,
    real_node,
    e2e_images,
    s3_server,
    bucket,
    tmp_path,
):
    script = _script(tmp_path)
    port = int(s3_server.endpoint_url.rsplit(":", 1)[1].rstrip("/"))
    relay = real_node.relay_to_host(port)
    s3_name = real_node.add_service_name("s3", "storage", relay.split(":")[0])
    home = tmp_path / "home"
    home.mkdir()
    base = {k: v for k, v in os.environ.items() if not k.startswith(("KUBETUNE_", "AWS_"))}
    base.pop("KUBERNETES_SERVICE_HOST", None)
    env = {
        **base,
        "HOME": str(home),
        "PYTHONUNBUFFERED": "1",
        "KUBECONFIG": str(control_plane.kubeconfig),
        "KUBETUNE_RESULTS_DIR": str(tmp_path / "local_results"),
    }
    local = subprocess.run(
        [sys.executable, str(script)],
        env=env,
        cwd=str(script.parent),
        capture_output=True,
        text=True,
        timeout=300,
    )
    here = _best(local)
    cluster_env = {
        **env,
        "KUBETUNE_NAMESPACE": operator_ns,
        "KUBETUNE_STORAGE": f"s3://{bucket}/notebooks",
        "KUBETUNE_STORAGE_SECRET": "s3-credentials",
        "KUBETUNE_S3_ENDPOINT_URL": s3_server.endpoint_url,  # this machine: loopback
        # the pods: an in-cluster name (the fixture's DNS) for the relay on the bridge
        "KUBETUNE_POD_S3_ENDPOINT_URL": f"http://{s3_name}:{relay.split(':')[1]}",
        "KUBETUNE_S3_REGION": s3_server.region,
        "KUBETUNE_S3_ADDRESSING_STYLE": "path",
        "AWS_ACCESS_KEY_ID": s3_server.access_key,
        "AWS_SECRET_ACCESS_KEY": s3_server.secret_key,
    }
    submitted = subprocess.run(
        [sys.executable, "-m", "kubetune.cli", "submit", str(script)],
        env=cluster_env,
        cwd=str(script.parent),
        capture_output=True,
        text=True,
        timeout=900,
    )
    there = _best(submitted)
    assert there["n"] == here["n"] == 3
    assert there["config"]["a"] == here["config"]["a"]
    assert abs(there["config"]["b"] - here["config"]["b"]) < 1e-9
    assert there["rows"] == here["rows"] == 4
    # every trial ran in a real container of the trial base image: nothing was built
    pods = json.loads(
        control_plane.kubectl(
            "get", "pods", "-n", operator_ns, "-l", "kubetune.io/experiment=notebook", "-o", "json"
        ).stdout
    )["items"]
    assert pods
    for pod in pods:
        images = {c["image"] for c in [*pod["spec"]["initContainers"], *pod["spec"]["containers"]]}
        assert images == {e2e_images.trial}, images
        (main,) = [c for c in pod["status"]["containerStatuses"] if c["name"] == "trial"]
        assert main["state"]["terminated"]["exitCode"] == 0, main

    # the dashboard on this machine: pods and the real kubelet's log tail of a trial
    dashboard_log_tail(control_plane, operator_ns, s3_server, pods)


def dashboard_log_tail(cp: Any, ns: str, s3_server: Any, pods: list[dict[str, Any]]) -> None:
    from kubetune.dashboard.cluster import make_cluster_server

    saved = dict(os.environ)  # the user's environment while the dashboard serves
    os.environ.update(
        KUBECONFIG=str(cp.kubeconfig),
        AWS_ACCESS_KEY_ID=s3_server.access_key,
        AWS_SECRET_ACCESS_KEY=s3_server.secret_key,
        KUBETUNE_S3_REGION=s3_server.region,
        KUBETUNE_S3_ADDRESSING_STYLE="path",
    )
    server = None
    try:
        server = make_cluster_server(
            f"{ns}/notebook", [], False, "127.0.0.1", 0, s3_endpoint=s3_server.endpoint_url
        )
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{server.server_port}/api/"
        tunetrial = pods[0]["metadata"]["labels"]["kubetune.io/trial"]
        listing = json.loads(cp.kubectl("get", "ttr", "-n", ns, tunetrial, "-o", "json").stdout)
        trial_id = listing["spec"]["trialId"]
        query = urllib.parse.urlencode({"exp": f"{ns}/notebook", "id": trial_id})
        try:
            with urllib.request.urlopen(f"{url}trial?{query}", timeout=60) as r:
                detail = json.load(r)
        except urllib.error.HTTPError as exc:
            raise AssertionError(f"{exc}: {exc.read()[:2000]!r}") from None
        cluster = detail["cluster"]
        assert cluster.get("pods") and cluster["pods"][0]["phase"] == "Succeeded", cluster
        text = cluster["log"]["text"]
        assert "at step 3" in text, text[-2000:]
    finally:
        os.environ.clear()
        os.environ.update(saved)
        if server is not None:
            server.shutdown()
            server.server_close()
