"""The dashboard's HTTP server: the page, its static files, plotly.js from the ``plotly``
package, and the JSON API (standard library only; one thread per request)."""

from __future__ import annotations

import errno
import gzip
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from kubetune.dashboard import api
from kubetune.dashboard.source import ExperimentView, find_experiments
from kubetune.storage import Storage, StorageError, open_storage

STATIC_DIR = os.path.join(os.path.dirname(__file__), "static")
STATIC_FILES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/static/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/static/app.css": ("app.css", "text/css; charset=utf-8"),
}
PLOTLY_PATH = "/static/plotly.min.js"


def plotly_js() -> bytes:
    """plotly.js as the ``plotly`` Python package ships it (no CDN: the page is offline)."""
    try:
        from importlib.resources import files

        return (files("plotly") / "package_data" / "plotly.min.js").read_bytes()
    except (ImportError, FileNotFoundError, ModuleNotFoundError):
        raise RuntimeError(
            "kubetune dashboard needs the plotly package: pip install 'kubetune[dashboard]'"
        ) from None


class Dashboard:
    """The experiments under one storage root, as the API serves them. Subclasses change where
    the experiments come from (:class:`kubetune.dashboard.cluster.ClusterDashboard`: a
    cluster's TuneExperiments) by overriding :meth:`find_keys`, :meth:`open_view`,
    :meth:`name` and the ``extra_*`` hooks."""

    def __init__(self, storage: Storage | None, min_interval_s: float | None = None) -> None:
        self.storage = storage
        if min_interval_s is None:
            min_interval_s = 0.5 if storage is not None and storage.is_local() else 1.5
        self.min_interval_s = min_interval_s
        self.views: dict[str, ExperimentView] = {}
        self._keys: list[str] = []
        self._keys_at = -1e9
        self._lock = threading.Lock()
        self._assets: dict[str, tuple[bytes, bytes, str]] = {}

    # -- where the experiments come from ---------------------------------------------------
    def root(self) -> str:
        assert self.storage is not None
        return self.storage.uri()

    def find_keys(self) -> list[str]:
        assert self.storage is not None
        return find_experiments(self.storage)

    def open_view(self, key: str) -> ExperimentView:
        assert self.storage is not None
        return ExperimentView(self.storage, key, self.min_interval_s)

    def name(self, key: str) -> str:
        root = self.root()
        return key or os.path.basename(root.rstrip("/")) or root

    def extra_summary(self, key: str) -> dict[str, Any]:
        """More fields of an experiment's row in the list (the cluster's phase)."""
        return {}

    def extra_trial(self, key: str, view: ExperimentView, trial_id: str) -> dict[str, Any]:
        """More fields of a trial's page (the cluster's pods, Events and log tail)."""
        return {}

    # -- shared ------------------------------------------------------------------------------
    def experiment_keys(self) -> list[str]:
        with self._lock:
            if time.monotonic() - self._keys_at > 5 * self.min_interval_s:
                self._keys = self.find_keys()
                self._keys_at = time.monotonic()
            return list(self._keys)

    def view(self, key: str) -> ExperimentView:
        with self._lock:
            view = self.views.get(key)
            if view is None:
                if key not in self._keys and key not in self.find_keys():
                    raise KeyError(key)
                view = self.views[key] = self.open_view(key)
        view.refresh()
        return view

    def warm(self) -> None:
        """Read every experiment once (1,000 trials x 100 rows take seconds to parse), so the
        first page a user opens is served from memory; requests meanwhile wait for it."""
        try:
            keys = self.experiment_keys()
        except (OSError, RuntimeError, StorageError):
            return  # the list page shows the reason
        for key in keys:
            try:
                self.view(key)
            except (OSError, KeyError, ValueError, RuntimeError, StorageError):
                pass  # the page shows the experiment as unreadable, with the reason

    def asset(self, path: str) -> tuple[bytes, bytes, str]:
        """(body, gzipped body, content type) of a static file, read once."""
        cached = self._assets.get(path)
        if cached is None:
            if path == PLOTLY_PATH:
                body, ctype = plotly_js(), "text/javascript; charset=utf-8"
            else:
                filename, ctype = STATIC_FILES[path]
                with open(os.path.join(STATIC_DIR, filename), "rb") as f:
                    body = f.read()
            cached = self._assets[path] = (body, gzip.compress(body, 6), ctype)
        return cached

    def handle_api(self, route: str, query: dict[str, str]) -> Any:
        if route == "experiments":
            out = []
            for key in self.experiment_keys():
                extra = self.extra_summary(key)
                try:
                    summary = api.experiment_summary(self.view(key), self.name(key))
                except (FileNotFoundError, KeyError, ValueError, StorageError) as exc:
                    summary = {"name": self.name(key), "state": "UNREADABLE", "error": str(exc)}
                out.append({"key": key, **summary, **extra})
            return {"root": self.root(), "experiments": out}
        key = query.get("exp", "")
        view = self.view(key)
        if route == "experiment":
            since = int(query.get("since") or 0)
            return api.experiment_payload(view, self.name(key), since, query.get("metric"))
        if route == "trial":
            detail = api.trial_detail(view, query["id"])
            detail.update(self.extra_trial(key, view, query["id"]))
            return detail
        if route == "importance":
            from kubetune.dashboard.importance import param_importance

            return param_importance(view, query.get("metric"))
        if route == "lineage":
            return api.lineage(view)
        raise KeyError(route)


class _Handler(BaseHTTPRequestHandler):
    dashboard: Dashboard
    server_version = "kubetune-dashboard"
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass  # a poll a second per tab would drown the terminal

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        try:
            if parts.path in STATIC_FILES or parts.path == PLOTLY_PATH:
                body, zipped, ctype = self.dashboard.asset(parts.path)
                self._send(HTTPStatus.OK, body, ctype, zipped, cache=parts.path == PLOTLY_PATH)
                return
            if not parts.path.startswith("/api/"):
                self._json(HTTPStatus.NOT_FOUND, {"error": f"no page {parts.path}"})
                return
            query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
            payload = self.dashboard.handle_api(parts.path[len("/api/") :], query)
            self._json(HTTPStatus.OK, payload)
        except (BrokenPipeError, ConnectionResetError):
            return  # the tab went away mid-answer (a reload, a closed page): nothing to tell
        except KeyError as exc:
            self._json(HTTPStatus.NOT_FOUND, {"error": f"not found: {exc}"})
        except (StorageError, OSError, ValueError, RuntimeError) as exc:
            self._json(HTTPStatus.BAD_GATEWAY, {"error": str(exc)})

    def _json(self, status: HTTPStatus, payload: Any) -> None:
        body = json.dumps(payload, separators=(",", ":"), allow_nan=False, default=str).encode()
        self._send(status, body, "application/json", None)

    def _send(
        self, status: HTTPStatus, body: bytes, ctype: str, zipped: bytes | None, cache: bool = False
    ) -> None:
        accepts_gzip = "gzip" in (self.headers.get("Accept-Encoding") or "")
        if accepts_gzip and zipped is None and len(body) > 4096:
            zipped = gzip.compress(body, 1)
        use_gzip = accepts_gzip and zipped is not None
        data = zipped if use_gzip and zipped is not None else body
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "max-age=3600" if cache else "no-store")
        if use_gzip:
            self.send_header("Content-Encoding", "gzip")
        self.end_headers()
        self.wfile.write(data)


def make_server(location: str, host: str = "127.0.0.1", port: int = 8765) -> ThreadingHTTPServer:
    """A server for the experiments at ``location`` (a directory or s3://bucket/prefix); port
    0 takes a free one."""
    storage = open_storage(location)
    if not storage.is_local() and not storage.list_children(""):
        raise FileNotFoundError(f"nothing stored under {storage.uri()}")
    if storage.is_local() and not find_experiments(storage):
        raise FileNotFoundError(
            f"{location} holds no kubetune experiment (no experiment_state.json in it or in"
            " its subdirectories)"
        )
    return serve_dashboard(Dashboard(storage), host, port)


def serve_dashboard(dashboard: Dashboard, host: str, port: int) -> ThreadingHTTPServer:
    """An HTTP server for ``dashboard`` (not yet serving), its experiments read in the
    background."""
    plotly_js()  # fail now, not in the browser, when plotly is missing
    handler = type("Handler", (_Handler,), {"dashboard": dashboard})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    threading.Thread(target=dashboard.warm, name="dashboard-warm", daemon=True).start()
    return server


def serve(
    location: str,
    host: str = "127.0.0.1",
    port: int = 8765,
    make: Callable[[str, str, int], ThreadingHTTPServer] = make_server,
    page: str = "",
) -> int:
    try:
        server = make(location, host, port)
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise
        print(f"kubetune: port {port} is taken; using a free one", file=sys.stderr)
        server = make(location, host, 0)
    shown_host = "127.0.0.1" if host in ("", "0.0.0.0") else host
    print(
        f"kubetune dashboard for {location}: http://{shown_host}:{server.server_port}/{page}",
        flush=True,
    )
    try:
        server.serve_forever(poll_interval=0.5)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
