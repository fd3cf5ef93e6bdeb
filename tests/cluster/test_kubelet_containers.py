"""The test kubelet against the real control plane: native sidecars, startup probes, init
containers, restarts and start errors."""

from __future__ import annotations

from typing import Any

import pytest

from tests.cluster.kubelet_helpers import (
    JSON,
    condition,
    container,
    phase_in,
    pod,
    py,
    status_of,
    wait_pod,
)
from tests.testenv.kubelet import TestKubelet
from tests.testenv.kubelet_api import pod_path
from tests.testenv.kubelet_fixtures import KubeletFactory

pytestmark = pytest.mark.cluster


# -- native sidecars -----------------------------------------------------------------------
SIDECAR_CODE = """
    import os, pathlib, signal, sys, time
    shared = pathlib.Path(os.environ["SHARED"])
    def bye(*_):
        (shared / "sidecar-stopped").write_text("SIGTERM")
        sys.exit(0)
    signal.signal(signal.SIGTERM, bye)
    time.sleep(float(os.environ.get("DELAY", "0")))
    (shared / "ready").write_text(str(time.time()))
    while True:
        time.sleep(1)
"""


def sidecar(**extra: Any) -> JSON:
    env = [{"name": "SHARED", "value": "/shared"}, *extra.pop("env", [])]
    return py(
        "sidecar",
        SIDECAR_CODE,
        restartPolicy="Always",
        env=env,
        volumeMounts=[{"name": "shared", "mountPath": "/shared"}],
        **extra,
    )


MAIN_CODE = """
    import os, pathlib, sys, time
    shared = pathlib.Path(os.environ["SHARED"])
    deadline = time.time() + float(os.environ.get("WAIT_READY", "0"))
    while not (shared / "ready").exists() and time.time() < deadline:
        time.sleep(0.05)
    if not (shared / "ready").exists():
        print("main started before the sidecar was ready", flush=True)
        sys.exit(1)
    print("main saw the sidecar ready", flush=True)
    (shared / "main-started").write_text(str(time.time()))
    time.sleep(0.5)
"""


def main_container(wait_ready: float = 0) -> JSON:
    return py(
        "main",
        MAIN_CODE,
        env=[
            {"name": "SHARED", "value": "/shared"},
            {"name": "WAIT_READY", "value": str(wait_ready)},
        ],
        volumeMounts=[{"name": "shared", "mountPath": "/shared"}],
    )


def test_native_sidecar_pod_completes_when_main_exits(kubelet: TestKubelet, namespace: str) -> None:
    api = kubelet.api
    api.create(
        pod_path(namespace),
        pod(
            "with-sidecar",
            [main_container(wait_ready=10)],  # no startup probe: no ordering guarantee
            initContainers=[sidecar()],
            volumes=[{"name": "shared", "emptyDir": {}}],
        ),
    )
    done = wait_pod(api, namespace, "with-sidecar", phase_in("Succeeded", "Failed"))
    assert done["status"]["phase"] == "Succeeded", kubelet.logs(namespace, "with-sidecar", "main")
    side = status_of(done, "sidecar", init=True)
    assert "terminated" in side["state"]
    shared = kubelet.pod_dir(namespace, "with-sidecar") / "volumes" / "shared"
    assert (shared / "sidecar-stopped").read_text() == "SIGTERM"
    assert status_of(done, "main")["state"]["terminated"]["exitCode"] == 0


def test_startup_probe_gates_the_main_container(kubelet: TestKubelet, namespace: str) -> None:
    api = kubelet.api
    probe = {"exec": {"command": ["test", "-f", "/shared/ready"]}, "periodSeconds": 1}
    side = sidecar(env=[{"name": "DELAY", "value": "1.5"}], startupProbe=probe)
    api.create(
        pod_path(namespace),
        pod(
            "gated",
            [main_container()],
            initContainers=[side],
            volumes=[{"name": "shared", "emptyDir": {}}],
        ),
    )
    running = wait_pod(api, namespace, "gated", phase_in("Pending", "Running"))
    if running["status"].get("initContainerStatuses"):
        # while the probe has not passed, the sidecar runs but is not started
        side_st = status_of(running, "sidecar", init=True)
        if not side_st["started"]:
            assert "waiting" in status_of(running, "main")["state"]
            assert condition(running, "Initialized")["status"] == "False"
    done = wait_pod(api, namespace, "gated", phase_in("Succeeded", "Failed"))
    assert done["status"]["phase"] == "Succeeded", kubelet.logs(namespace, "gated", "main")
    shared = kubelet.pod_dir(namespace, "gated") / "volumes" / "shared"
    ready_at = float((shared / "ready").read_text())
    main_at = float((shared / "main-started").read_text())
    assert main_at >= ready_at


# -- init containers, restarts, start errors -------------------------------------------------
def test_init_containers_run_in_order_and_a_failing_one_fails_the_pod(
    kubelet: TestKubelet, namespace: str
) -> None:
    api = kubelet.api
    mount = {
        "env": [{"name": "W", "value": "/w"}],
        "volumeMounts": [{"name": "w", "mountPath": "/w"}],
    }
    step = "import os, sys; d = os.environ['W']; {check}; open(d + '/{n}', 'w').write('x')"
    inits = [
        py("first", step.format(check="pass", n=1), **mount),
        py("second", step.format(check="assert os.path.exists(d + '/1')", n=2), **mount),
    ]
    main = py("main", "import os; assert os.path.exists(os.environ['W'] + '/2')", **mount)
    vols = [{"name": "w", "emptyDir": {}}]
    api.create(pod_path(namespace), pod("ordered", [main], initContainers=inits, volumes=vols))
    failing = [py("broken", "import sys; sys.exit(2)"), py("never", "pass")]
    api.create(
        pod_path(namespace),
        pod("init-fails", [py("main", "pass")], initContainers=failing),
    )
    done = wait_pod(api, namespace, "ordered", phase_in("Succeeded", "Failed"))
    assert done["status"]["phase"] == "Succeeded"
    assert [
        s["state"]["terminated"]["exitCode"] for s in done["status"]["initContainerStatuses"]
    ] == [0, 0]
    failed = wait_pod(api, namespace, "init-fails", phase_in("Succeeded", "Failed"))
    assert failed["status"]["phase"] == "Failed"
    broken = status_of(failed, "broken", init=True)["state"]["terminated"]
    assert broken["exitCode"] == 2 and broken["reason"] == "Error"
    assert "waiting" in status_of(failed, "never", init=True)["state"]
    assert status_of(failed, "main")["state"]["waiting"]["reason"] == "PodInitializing"
    assert condition(failed, "Initialized")["status"] == "False"


def test_a_sidecar_that_exits_is_restarted(kubelet: TestKubelet, namespace: str) -> None:
    api = kubelet.api
    flaky = py(
        "sidecar", "import time; time.sleep(0.2); raise SystemExit(1)", restartPolicy="Always"
    )
    api.create(
        pod_path(namespace),
        pod("flaky", [py("main", "import time; time.sleep(2.5)")], initContainers=[flaky]),
    )
    done = wait_pod(api, namespace, "flaky", phase_in("Succeeded", "Failed"))
    assert done["status"]["phase"] == "Succeeded"  # terminated sidecars never decide the phase
    assert status_of(done, "sidecar", init=True)["restartCount"] >= 1


def test_a_missing_binary_is_a_start_error(kubelet: TestKubelet, namespace: str) -> None:
    api = kubelet.api
    api.create(pod_path(namespace), pod("nobin", [container("main", "/no/such/binary")]))
    done = wait_pod(api, namespace, "nobin", phase_in("Succeeded", "Failed"))
    assert done["status"]["phase"] == "Failed"
    term = status_of(done, "main")["state"]["terminated"]
    assert term["reason"] == "StartError" and term["exitCode"] == 128


def test_image_entrypoints_and_command_map(kubelet_factory: KubeletFactory, namespace: str) -> None:
    kl = kubelet_factory(
        image_entrypoints={"example/trainer": ["python", "-c", "import sys; print(sys.argv[1:])"]},
        command_map={"kubetune-hello": ["python", "-c", "print('hello via command_map')"]},
    )
    entry = {"name": "main", "image": "example/trainer:1.0", "args": ["--lr", "0.1"]}
    mapped = container("main", "/usr/local/bin/kubetune-hello")
    kl.api.create(pod_path(namespace), pod("entry", [entry]))
    kl.api.create(pod_path(namespace), pod("mapped", [mapped]))
    for name in ("entry", "mapped"):
        done = wait_pod(kl.api, namespace, name, phase_in("Succeeded", "Failed"))
        assert done["status"]["phase"] == "Succeeded", kl.logs(namespace, name, "main")
    assert "['--lr', '0.1']" in kl.logs(namespace, "entry", "main")
    assert "hello via command_map" in kl.logs(namespace, "mapped", "main")


def test_active_deadline_fails_the_pod(kubelet: TestKubelet, namespace: str) -> None:
    kubelet.api.create(
        pod_path(namespace),
        pod("late", [container("main", "sleep", "60")], activeDeadlineSeconds=1),
    )
    done = kubelet.wait_for_phase(namespace, "late", timeout=20)
    assert done["status"]["phase"] == "Failed"
    assert done["status"]["reason"] == "DeadlineExceeded"
    assert status_of(done, "main")["state"]["terminated"]["exitCode"] == 143  # SIGTERM


# -- HTTP and TCP startup probes --------------------------------------------------------------
@pytest.mark.parametrize("kind", ["httpGet", "tcpSocket"])
def test_http_and_tcp_startup_probes_gate_the_main_container(
    kubelet: TestKubelet, namespace: str, kind: str
) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = py(
        "server",
        f"""
        import http.server, time
        time.sleep(1.0)
        http.server.HTTPServer(("127.0.0.1", {port}), http.server.SimpleHTTPRequestHandler
                               ).serve_forever()
        """,
        restartPolicy="Always",
        ports=[{"name": "web", "containerPort": port}],
        startupProbe={
            kind: {"port": "web", **({"path": "/"} if kind == "httpGet" else {})},
            "periodSeconds": 1,
            "failureThreshold": 30,
        },
    )
    client = py(
        "main",
        f"import urllib.request; urllib.request.urlopen('http://127.0.0.1:{port}/', timeout=2)",
    )
    name = f"probe-{kind.lower()}"
    kubelet.api.create(pod_path(namespace), pod(name, [client], initContainers=[server]))
    done = kubelet.wait_for_phase(namespace, name, timeout=30)
    assert done["status"]["phase"] == "Succeeded", kubelet.logs(namespace, name, "main")
