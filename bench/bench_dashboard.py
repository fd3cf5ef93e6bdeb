"""The dashboard at scale: N trials x R results (local mode's layout), served by a real
``kubetune dashboard`` process and opened in headless chromium (``make browser``).

Prints, per size: the server's time to read the experiment, first paint (the trial table with
data) and the curves drawn on a fresh browser profile, the size of the full and of an
incremental API answer, the latency from new rows written to them painted (end to end, which
includes the page's 1 s poll, and the request + render part alone), and the server's memory
(VmRSS / VmHWM). "plotly.js ready" is when the page could first call Plotly (the bundle
downloaded, compiled and run: on a fresh profile most of the curves' time); "preview" is when
the canvas drawing of the same curves that stands in until then was painted. "chart/table
redrawn" says how the updates were drawn: the curves "full" or only their "live" trace, the
table "full" or only "N rows" (the changed ones and the best trial's).
Run: ``.venv/bin/python -m bench.bench_dashboard [--trials 100 1000]``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

from tests.testenv import browser
from tests.testenv.experiments import SyntheticExperiment


def memory_kib(pid: int) -> dict[str, int]:
    with open(f"/proc/{pid}/status") as f:
        text = f.read()
    return {k: int(re.search(rf"{k}:\s+(\d+)", text).group(1)) for k in ("VmRSS", "VmHWM")}  # type: ignore[union-attr]


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} ms"


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=120) as r:
        return bytes(r.read())


def bench(trials: int, results: int, updates: int, grow: int) -> None:
    root = tempfile.mkdtemp(prefix="bench-dashboard-")
    exp = SyntheticExperiment(os.path.join(root, "big"), trials)
    exp.fill(results)
    # still running: the trials that get rows during the updates are ones below the last rung
    # (as ASHA's running trials are), the others ended; the page keeps polling
    running = [i for i in range(trials) if i % 3 == 1][: updates * grow]
    for i in running:
        exp.status[i], exp.stop_reason[i] = "RUNNING", None
    exp.write_state()
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "kubetune.cli", "dashboard", root, "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        url = line.split(": ", 1)[1].strip()
        get(url + "api/experiments")  # answers once the experiment has been read
        ready = time.monotonic() - t0
        full = get(url + "api/experiment?exp=big&since=0")
        seq = json.loads(full)["seq"]
        with browser.chromium() as driver:
            driver.get(url + "static/app.css")
            driver.get(url + "#/exp/big")
            browser.wait_js(driver, "window.kubetune.chartsPaint", 300, "the curves")
            paint = driver.execute_script("return window.kubetune.firstPaint")
            charts = driver.execute_script("return window.kubetune.chartsPaint")
            plotly_at = driver.execute_script("return window.kubetune.plotlyAt")
            preview = driver.execute_script("return window.kubetune.previewPaint")
            points = driver.execute_script("return window.kubetune.curvePoints") or {}
            end_to_end, handled, kinds = [], [], []
            parts: dict[str, list[float]] = {"request": [], "table": [], "chart": []}
            for u in range(updates):
                before = driver.execute_script("return window.kubetune.updates.length")
                written = time.time()
                for i in range(grow):
                    exp.grow(running[(u * grow + i) % len(running)], 1)
                exp.write_state()
                # the update painted: the first poll by which all of its trials came (a
                # poll in the middle of the writes takes some, the next one the rest)
                done = (
                    f"(() => {{ let n = 0; for (const x of window.kubetune.updates.slice({before}))"
                    f" {{ n += x.changed; if (n >= {grow}) return x; }} return null; }})()"
                )
                try:
                    entry = browser.wait_js(driver, done, 60, "the update")
                except AssertionError:
                    page = "[document.getElementById('live').textContent, window.kubetune.updates]"
                    print("the page:", driver.execute_script(f"return {page}"), file=sys.stderr)
                    raise
                end_to_end.append(entry["at"] / 1000 - written)
                handled.append(entry["ms"])
                for part, values in parts.items():
                    if f"{part}_ms" in entry:
                        values.append(entry[f"{part}_ms"])
                kinds.append(f"{entry.get('chart', 'full')}/{entry.get('table', 'full')}")
            delta = get(url + f"api/experiment?exp=big&since={seq}")
            mem = memory_kib(proc.pid)
        split = ", ".join(
            f"{part} {statistics.median(values):.0f}" for part, values in parts.items() if values
        )
        redrawn = ", ".join(sorted(set(kinds)))
        print(
            f"{trials} trials x {results} results: server ready {ready:.2f} s;"
            f" first paint (table) {paint:.0f} ms, curves preview {_ms(preview)}, chart"
            f" {charts:.0f} ms (plotly.js ready at"
            f" {_ms(plotly_at)}; {points.get('drawn', 'all')} of {points.get('total', 'all')}"
            " points drawn);"
            f" full answer {len(full) / 1e6:.2f} MB, after {updates} updates of {grow} trials"
            f" {len(delta) / 1e3:.1f} kB; update written->painted median"
            f" {statistics.median(end_to_end) * 1000:.0f} ms (max {max(end_to_end) * 1000:.0f}),"
            f" request+render median {statistics.median(handled):.0f} ms"
            f" ({split}{'; ' if split else ''}chart/table redrawn: {redrawn});"
            f" server VmRSS {mem['VmRSS'] / 1024:.0f} MiB (peak {mem['VmHWM'] / 1024:.0f})",
            flush=True,
        )
    finally:
        proc.terminate()
        proc.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--results", type=int, default=100)
    parser.add_argument("--updates", type=int, default=5)
    parser.add_argument("--grow", type=int, default=10, help="trials that get a row per update")
    args = parser.parse_args()
    why = browser.missing()
    if why:
        sys.exit(why)
    for n in args.trials:
        bench(n, args.results, args.updates, args.grow)


if __name__ == "__main__":
    main()
