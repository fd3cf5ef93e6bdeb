"""``kubetune dashboard`` in a real browser (Debian's chromium, headless, through selenium and
chromium-driver): a local experiment and an S3 one (the real SeaweedFS server) from real runs,
a live update while a run goes on, and the first paint of 1,000 trials x 100 results.

Each page is screenshotted; the screenshot itself is checked for the best trial's highlight
and the best curve's colour (set KUBETUNE_SCREENSHOTS=DIR to keep them)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from kubetune import air, tune
from kubetune.dashboard.server import make_server
from kubetune.schedulers import ASHAScheduler
from tests.cluster import dashboard_trainables as D
from tests.testenv import browser
from tests.testenv.experiments import SyntheticExperiment

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(browser.missing() is not None, reason=str(browser.missing())),
]

BEST_ROW_RGB = (0xFF, 0xF5, 0x9D)  # tr.best in app.css
BEST_CURVE_RGB = (0xFF, 0x98, 0x00)  # the best trial's trace in app.js


@pytest.fixture
def shots(tmp_path) -> str:
    path = os.environ.get("KUBETUNE_SCREENSHOTS") or str(tmp_path / "shots")
    os.makedirs(path, exist_ok=True)
    return path


@pytest.fixture
def driver() -> Iterator[Any]:
    with browser.chromium() as d:
        yield d


class Served:
    def __init__(self, location: str) -> None:
        self.server = make_server(location, port=0)
        self.url = f"http://127.0.0.1:{self.server.server_port}/"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def api(self, route: str, **query: Any) -> Any:
        q = "&".join(f"{k}={v}" for k, v in query.items())
        with urllib.request.urlopen(f"{self.url}api/{route}?{q}", timeout=30) as r:
            return json.load(r)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def serve() -> Iterator[Any]:
    started: list[Served] = []

    def start(location: str) -> Served:
        started.append(Served(location))
        return started[-1]

    yield start
    for s in started:
        s.close()


def run_experiment(storage_path: str, name: str) -> Any:
    return tune.Tuner(
        D.curve,
        param_space={"lr": tune.grid_search([0.05, 0.3, 0.5, 0.7, 0.9, -1.0]), "steps": 16},
        tune_config=tune.TuneConfig(
            metric="loss",
            mode="min",
            scheduler=ASHAScheduler(grace_period=2, max_t=16, reduction_factor=2),
        ),
        run_config=air.RunConfig(storage_path=storage_path, name=name, verbose=0),
    ).fit()


def screenshot_has(png: bytes, rect: dict[str, float], rgb: tuple[int, int, int]) -> int:
    """How many pixels of colour ``rgb`` (within 6 per channel) the screenshot has inside the
    element rectangle ``rect``."""
    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGB")
    left, top = int(rect["x"]), int(rect["y"])
    box = image.crop((left, top, left + int(rect["width"]), top + int(rect["height"])))
    return sum(
        n
        for n, (r, g, b) in box.getcolors(box.width * box.height) or []
        if abs(r - rgb[0]) <= 6 and abs(g - rgb[1]) <= 6 and abs(b - rgb[2]) <= 6
    )


def js(driver: Any, script: str) -> Any:
    return driver.execute_script("return " + script)


def check_experiment_page(driver: Any, url: str, key: str, grid: Any, shot: str) -> None:
    driver.get(f"{url}#/exp/{key}")
    browser.wait_js(driver, "window.kubetune.chartsPaint", 90, "the learning curves")
    browser.wait_js(
        driver, "document.querySelector('#parcoords .parcoords') !== null", 60, "parcoords"
    )
    browser.wait_js(driver, "document.querySelector('#importance .bars') !== null", 60, "bars")
    best = grid.get_best_result()
    best_id = best.metrics["trial_id"]
    assert js(driver, "document.querySelectorAll('tr.trial-row').length") == len(grid)
    assert js(driver, "[...document.querySelectorAll('tr.best')].map(r => r.dataset.id)") == [
        best_id
    ]
    # one trace for all trials (Plotly draws one path per gap-separated trial), one for the
    # best, and an x marker per early-stopped trial
    lines = js(
        driver,
        "[...document.querySelectorAll('#curves .scatterlayer .trace')]"
        ".map(t => [...t.querySelectorAll('path.js-line')]"
        ".reduce((n, p) => n + (p.getAttribute('d') || '').length, 0))",
    )
    segments = js(
        driver,
        "document.querySelectorAll('#curves .scatterlayer .trace:nth-child(1) path.js-line')"
        ".length",
    )
    assert segments >= 4, segments  # five finished trials but the best, the errored one has none
    assert lines[0] > 100 and lines[2] > 20, lines
    rows = {r.metrics["trial_id"]: r for r in grid if r.metrics}
    longest = max(r.metrics["training_iteration"] for r in rows.values())
    early = [
        tid
        for tid, r in rows.items()
        if r.error is None and r.metrics["training_iteration"] < longest
    ]
    markers = js(
        driver,
        "document.querySelectorAll('#curves .scatterlayer .trace:nth-child(2) path.point').length",
    )
    assert early and markers == len(early)
    errored = [r for r in grid if r.error is not None]
    assert len(errored) == 1
    assert "lr must be positive" in js(driver, "document.querySelector('td.err:not(:empty)').title")
    png = driver.get_screenshot_as_png()
    with open(shot, "wb") as f:
        f.write(png)
    best_rect = js(driver, "document.querySelector('tr.best').getBoundingClientRect().toJSON()")
    assert screenshot_has(png, best_rect, BEST_ROW_RGB) > 500
    curves_rect = js(driver, "document.querySelector('#curves').getBoundingClientRect().toJSON()")
    assert screenshot_has(png, curves_rect, BEST_CURVE_RGB) > 100
    # sorting by the last loss puts the best first; a filter keeps the errored trial alone
    driver.execute_script("document.querySelector('th[data-key=last]').click()")
    assert js(driver, "document.querySelector('tr.trial-row').dataset.id") == best_id
    box = driver.find_element("id", "filter")
    box.send_keys("status=ERROR")
    browser.wait_js(driver, "document.querySelectorAll('tr.trial-row').length === 1", 10)
    assert "ERROR" in js(driver, "document.querySelector('tr.trial-row').textContent")


def check_trial_pages(driver: Any, url: str, key: str, grid: Any, shot: str) -> None:
    best = grid.get_best_result()
    tid = best.metrics["trial_id"]
    driver.get(f"{url}#/exp/{key}/trial/{tid}")
    browser.wait_js(driver, "document.body.dataset.loaded === 'trial'", 60, "the trial page")
    assert js(driver, "document.querySelectorAll('tr.result-row').length") == len(best.history())
    uris = js(driver, "[...document.querySelectorAll('tr.ckpt-row code')].map(c => c.textContent)")
    assert uris and len(uris) == len(best.best_checkpoints)
    assert all(u.startswith(grid.experiment_path.rstrip("/") + "/") for u in uris), uris
    assert (
        json.loads(js(driver, "document.getElementById('trial-config').textContent"))["lr"]
        == best.config["lr"]
    )
    assert js(driver, "document.querySelector('#trial-curve path.js-line') !== null")
    with open(shot.replace(".png", "_trial.png"), "wb") as f:
        f.write(driver.get_screenshot_as_png())
    failed = next(r for r in grid if r.error is not None)
    driver.get(f"{url}#/exp/{key}/trial/{failed.metrics['trial_id']}")
    browser.wait_js(driver, "document.body.dataset.loaded === 'trial'", 60, "the errored trial")
    assert "ValueError: lr must be positive" in js(
        driver, "document.getElementById('error-txt').textContent"
    )
    with open(shot.replace(".png", "_error.png"), "wb") as f:
        f.write(driver.get_screenshot_as_png())


def test_local_experiment_pages(tmp_path, driver, serve, shots):
    root = str(tmp_path / "results")
    grid = run_experiment(root, "asha")
    run_experiment(root, "second")
    served = serve(root)
    driver.get(served.url)
    browser.wait_js(driver, "document.querySelectorAll('tr.exp-row').length === 2", 30)
    text = js(driver, "document.getElementById('exp-list').textContent")
    assert "asha" in text and "second" in text and "FINISHED" in text
    driver.save_screenshot(os.path.join(shots, "local_list.png"))
    check_experiment_page(driver, served.url, "asha", grid, os.path.join(shots, "local.png"))
    check_trial_pages(driver, served.url, "asha", grid, os.path.join(shots, "local.png"))


@pytest.mark.s3
def test_s3_experiment_pages(s3_server, s3_bucket, monkeypatch, tmp_path, driver, serve, shots):
    monkeypatch.setenv("KUBETUNE_S3_ENDPOINT_URL", s3_server.endpoint_url)
    monkeypatch.setenv("KUBETUNE_S3_REGION", s3_server.region)
    monkeypatch.setenv("KUBETUNE_S3_ADDRESSING_STYLE", "path")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_key)
    monkeypatch.setenv("HOME", str(tmp_path))  # local mode's staging copy goes under ~
    grid = run_experiment(f"s3://{s3_bucket}/runs", "asha")
    assert grid.experiment_path == f"s3://{s3_bucket}/runs/asha"
    served = serve(f"s3://{s3_bucket}/runs")
    check_experiment_page(driver, served.url, "asha", grid, os.path.join(shots, "s3.png"))
    check_trial_pages(driver, served.url, "asha", grid, os.path.join(shots, "s3.png"))


LIVE_RUN = """
import sys
from kubetune import air, tune
from tests.cluster import dashboard_trainables as D
tune.Tuner(
    D.curve,
    param_space={"lr": tune.grid_search([0.1, 0.5]), "steps": 40, "sleep": 0.25},
    tune_config=tune.TuneConfig(metric="loss", mode="min"),
    run_config=air.RunConfig(storage_path=sys.argv[1], name="live", verbose=0),
).fit()
"""


def test_live_update_while_a_run_goes_on(tmp_path, driver, serve, shots):
    root = str(tmp_path / "results")
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    proc = subprocess.Popen([sys.executable, "-c", LIVE_RUN, root], cwd=repo)
    try:
        state = os.path.join(root, "live", "experiment_state.json")
        browser.wait(lambda: os.path.exists(state), 120, "the live run's state file")
        served = serve(root)
        driver.get(f"{served.url}#/exp/live")
        browser.wait_js(driver, "window.kubetune.chartsPaint", 90, "the first paint")
        driver.execute_script("window.__sameDocument = true")
        rows_before = js(
            driver, "[...document.querySelectorAll('tr.trial-row')].map(r => r.textContent)"
        )
        seq = js(driver, "window.kubetune.seq")
        browser.wait_js(
            driver,
            f"window.kubetune.updates.filter(u => u.seq > {seq} && u.changed > 0).length >= 2",
            120,
            "two updates with new rows",
        )
        assert proc.poll() is None, "the run ended before the page saw it live"
        assert js(driver, "window.__sameDocument") is True  # updated in place, not reloaded
        rows_after = js(
            driver, "[...document.querySelectorAll('tr.trial-row')].map(r => r.textContent)"
        )
        assert rows_after != rows_before
        # the updates replaced the changed rows and redrew the running trials' trace only
        updates = js(driver, f"window.kubetune.updates.filter(u => u.seq > {seq} && u.changed > 0)")
        assert all(u["table"] != "full" and u["chart"] == "live" for u in updates), updates
        # only the first request asked for everything; later ones sent a cursor
        since = js(
            driver,
            "performance.getEntriesByType('resource').map(e => e.name)"
            ".filter(n => n.includes('/api/experiment?'))"
            ".map(n => new URL(n).searchParams.get('since'))",
        )
        assert since[0] == "0" and len(since) >= 3 and all(s != "0" for s in since[1:]), since
        full = served.api("experiment", exp="live", since=0)
        seen = {tid: len(c["x"]) for tid, c in full["curves"].items()}
        browser.wait(
            lambda: served.api("experiment", exp="live", since=full["seq"])["curves"],
            60,
            "new rows after a cursor",
        )
        delta = served.api("experiment", exp="live", since=full["seq"])
        for tid, c in delta["curves"].items():  # only the rows after the cursor
            assert c["start"] == seen.get(tid, 0) and c["x"][0] == seen.get(tid, 0) + 1
        driver.save_screenshot(os.path.join(shots, "live.png"))
        # once the run has ended, the table updated row by row reads as one built whole (a
        # sort there and back builds it whole) and the curves hold every point once
        assert proc.wait(120) == 0
        browser.wait_js(
            driver, "document.getElementById('live').textContent.startsWith('finished')", 60
        )
        browser.wait_js(
            driver,
            f"window.kubetune.seq === {served.api('experiment', exp='live', since=0)['seq']}",
            30,
        )
        updated = js(driver, "[...document.querySelectorAll('tr.trial-row')].map(r => r.outerHTML)")
        driver.execute_script("document.querySelector('th[data-key=index]').click()")
        driver.execute_script("document.querySelector('th[data-key=index]').click()")
        rebuilt = js(driver, "[...document.querySelectorAll('tr.trial-row')].map(r => r.outerHTML)")
        assert len(updated) == 2 and updated == rebuilt
        points = js(driver, "window.kubetune.curvePoints")
        assert points["stride"] == 1 and points["total"] == 40, points  # the other trial's 40
        assert points["total"] <= points["drawn"] <= points["total"] + 1, points  # + a joint
    finally:
        proc.terminate()
        proc.wait(60)


def test_thousand_trials_first_paint(tmp_path, driver, serve, shots):
    exp = SyntheticExperiment(str(tmp_path / "big"), trials=1000)
    exp.fill(results=100)
    t0 = time.monotonic()
    served = serve(str(tmp_path))
    served.api("experiments")  # returns once the server has read the experiment
    print(f"1000 trials x 100 results: server ready in {time.monotonic() - t0:.1f} s")
    driver.get(served.url + "static/app.css")  # the browser is up before the clock starts
    driver.get(f"{served.url}#/exp/big")
    browser.wait_js(driver, "window.kubetune.chartsPaint", 120, "1,000 trials' curves")
    first_paint = js(driver, "window.kubetune.firstPaint")
    charts = js(driver, "window.kubetune.chartsPaint")
    print(f"1000 trials x 100 results: table painted {first_paint:.0f} ms, curves {charts:.0f} ms")
    assert js(driver, "document.querySelectorAll('tr.trial-row').length") == 1000
    assert js(driver, "document.querySelectorAll('tr.best').length") == 1
    # 73,250 points of the other trials: thinned, and the page says so
    points = js(driver, "window.kubetune.curvePoints")
    assert points["total"] > 70000 and points["drawn"] <= 20000 + 2 * 1000, points
    note = js(driver, "document.getElementById('curves-note').textContent")
    assert f"{points['drawn']:,} of {points['total']:,} points drawn" in note, note
    preview = js(driver, "window.kubetune.previewPaint")
    print(f"1000 trials x 100 results: curves preview {preview} ms, plotly chart {charts:.0f} ms")
    driver.save_screenshot(os.path.join(shots, "thousand.png"))
    # three trials stopped at a low rung go on: an update redraws their rows and the curves'
    # live trace, where their new points continue from the static trace's
    seq = js(driver, "window.kubetune.seq")
    going = ["synth_00001", "synth_00004", "synth_00007"]
    for i in (1, 4, 7):
        exp.status[i], exp.stop_reason[i] = "RUNNING", None
        exp.grow(i, 5)
    exp.write_state()
    rows = " && ".join(
        f"document.querySelector('tr[data-id={t}] td.status-RUNNING') !== null" for t in going
    )
    browser.wait_js(driver, rows, 60, "the three trials' rows updated")
    browser.wait_js(driver, f"window.kubetune.curvePoints.total === {points['total'] + 15}", 30)
    updates = js(driver, f"window.kubetune.updates.filter(u => u.seq > {seq})")
    assert updates and all(u["table"] != "full" and u["chart"] == "live" for u in updates), updates
    after = js(driver, "window.kubetune.curvePoints")
    assert after["stride"] == points["stride"] and after["live"] > 0, after
    assert after["drawn"] == points["drawn"] + after["live"], (points, after)
    assert js(driver, "document.querySelectorAll('tr.trial-row').length") == 1000
    assert js(driver, "document.querySelectorAll('tr.best').length") == 1
    # how fast is bench/bench_dashboard.py's to measure (the printed figures above are for the
    # log); a wall-clock bound here would fail on a loaded machine, not on a slow dashboard


# -- an operator experiment on the real control plane ------------------------------------------
@pytest.fixture
def operator_experiment(
    control_plane, kube_api, namespace, kubelet, s3_server, s3_bucket, monkeypatch, tmp_path
):
    """A TuneExperiment run to Succeeded by the real operator: its pods run as processes on
    the test kubelet with the real sidecar, its results go to the real S3 server. The
    dashboard's user has the kubeconfig and the S3 keys, nothing else."""
    from tests.cluster import operator_helpers as T
    from tests.testenv.helpers import s3_secret

    T.apply_crds(control_plane)
    s3_secret(kube_api, namespace, s3_server)
    body = T.tune_experiment(
        "curves",
        {
            "trainable": T.repo_trainable("tests.cluster.dashboard_trainables:curve"),
            "paramSpace": {
                "lr": {"gridSearch": [0.1, 0.3, 0.6]},
                "steps": {"constant": 8},
            },
            "tuneConfig": {"metric": "loss", "mode": "min", "maxConcurrentTrials": 3},
            "storage": T.s3_storage(s3_bucket, s3_server.endpoint_url),
        },
    )
    T.create_experiment(kube_api, namespace, body)
    operator = T.start_operator(control_plane.kubeconfig, namespace, tmp_path / "operator.log")
    try:
        try:
            browser.wait(
                lambda: T.phase_of(kube_api, namespace, "curves") == "Succeeded", 240, "Succeeded"
            )
        except AssertionError:
            print((tmp_path / "operator.log").read_text()[-6000:])
            raise
        for key in [k for k in os.environ if k.startswith(("KUBETUNE_", "AWS_"))]:
            monkeypatch.delenv(key)
        monkeypatch.setenv("KUBECONFIG", str(control_plane.kubeconfig))
        monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_key)
        yield T.get_experiment(kube_api, namespace, "curves")
    finally:
        operator.terminate()
        operator.wait(30)


def dashboard_identity(cp: Any, namespace: str, tmp_path: Any) -> Any:
    """A kubeconfig with the token of the chart's dashboard ServiceAccount: the chart installed
    in ``namespace`` serving it, with dashboard.enabled (its pods kept off the test nodes)."""
    from tests.cluster import chart_helpers as C

    release = C.release_name()
    sets = [C.UNSCHEDULABLE, f"watchNamespaces={{{namespace}}}", "dashboard.enabled=true"]
    C.helm(cp, "install", release, str(C.CHART), "-n", namespace, *(f"--set={s}" for s in sets))
    sa = f"{release}-kubetune-dashboard"
    token = cp.kubectl("create", "token", sa, "-n", namespace, "--duration=30m").stdout.strip()
    return release, cp.write_kubeconfig(tmp_path / "dashboard.kubeconfig", token, user=sa)


def test_operator_experiment_pages_with_pods_events_and_log(
    shots, operator_experiment, control_plane, namespace, driver, monkeypatch, tmp_path
):
    """The dashboard as the chart runs it: with its ServiceAccount's token (read-only RBAC in
    the served namespace), against an experiment the real operator ran."""
    from kubetune.dashboard.cluster import make_cluster_server
    from tests.cluster import chart_helpers as C

    release, kubeconfig = dashboard_identity(control_plane, namespace, tmp_path)
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    try:
        _check_cluster_pages(operator_experiment, namespace, driver, shots, make_cluster_server)
    finally:
        C.helm(control_plane, "uninstall", release, "-n", namespace, "--wait=false", check=False)


def _check_cluster_pages(
    operator_experiment: Any, namespace: str, driver: Any, shots: str, make_cluster_server: Any
) -> None:
    server = make_cluster_server(None, [namespace], False, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/"
    key = f"{namespace}/curves"
    try:
        driver.get(url)
        browser.wait_js(driver, "document.querySelectorAll('tr.exp-row').length === 1", 60)
        text = js(driver, "document.getElementById('exp-list').textContent")
        assert key in text and "Succeeded" in text and "FINISHED" in text, text
        driver.save_screenshot(os.path.join(shots, "cluster_list.png"))

        driver.get(f"{url}#/exp/{urllib.parse.quote(key, safe='')}")
        browser.wait_js(driver, "window.kubetune.chartsPaint", 90, "the learning curves")
        assert js(driver, "document.querySelectorAll('tr.trial-row').length") == 3
        assert js(driver, "document.querySelectorAll('#curves path.js-line').length") >= 2
        png = driver.get_screenshot_as_png()
        with open(os.path.join(shots, "cluster.png"), "wb") as f:
            f.write(png)
        rect = js(driver, "document.querySelector('tr.best').getBoundingClientRect().toJSON()")
        assert screenshot_has(png, rect, BEST_ROW_RGB) > 500

        best_id = js(driver, "document.querySelector('tr.best').dataset.id")
        driver.get(f"{url}#/exp/{urllib.parse.quote(key, safe='')}/trial/{best_id}")
        browser.wait_js(driver, "document.body.dataset.loaded === 'trial'", 60, "the trial page")
        assert js(driver, "document.querySelectorAll('tr.result-row').length") == 8
        # the dashboard's best trial is the operator's: its config, its TuneTrial
        best = operator_experiment["status"]["bestTrial"]
        config = json.loads(js(driver, "document.getElementById('trial-config').textContent"))
        assert config["lr"] == best["config"]["lr"]
        summary = js(driver, "document.getElementById('cluster-summary').textContent")
        assert f"{namespace}/{best['name']}" in summary and "TERMINATED" in summary, summary
        pods = js(
            driver, "[...document.querySelectorAll('#pods tr.pod-row')].map(r => r.textContent)"
        )
        assert len(pods) == 1 and "Succeeded" in pods[0], pods
        reasons = js(
            driver,
            "[...document.querySelectorAll('#events tr.event-row')].map(r => r.dataset.reason)",
        )
        assert "Scheduled" in reasons, reasons  # the real kube-scheduler's Event on the pod
        pod = js(driver, "document.querySelector('#pods tr.pod-row td').textContent")
        head = js(driver, "document.getElementById('log-head').textContent")
        assert f"of {pod}, container trial" in head, head
        # the process kubelet serves no logs: the API server's answer is shown instead
        assert js(driver, "document.getElementById('log-tail').textContent").strip()
        driver.save_screenshot(os.path.join(shots, "cluster_trial.png"))
    finally:
        server.shutdown()
        server.server_close()
