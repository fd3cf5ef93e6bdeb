// kubetune dashboard: hash-routed pages over the JSON API; each poll asks only for what
// changed since the last sequence number it saw.
"use strict";

const POLL_MS = 1000;
const main = document.getElementById("main");
const crumbs = document.getElementById("crumbs");
const live = document.getElementById("live");
let page = null; // the current page's {stop()}
window.kubetune = { updates: [], firstPaint: null, chartsPaint: null, seq: 0 };
const plotlyReady = new Promise((resolve) => {
  const wait = () => (window.Plotly ? resolve(window.Plotly) : setTimeout(wait, 20));
  wait();
});
const frame = () => new Promise((r) => requestAnimationFrame(() => r()));

function esc(v) {
  return String(v ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}
function fmt(v) {
  if (v === null || v === undefined) return "";
  if (typeof v === "number") return Number.isInteger(v) ? String(v) : v.toPrecision(5);
  return String(v);
}
async function getJSON(path, params) {
  const q = new URLSearchParams(params || {}).toString();
  const r = await fetch("/api/" + path + (q ? "?" + q : ""));
  const body = await r.json();
  if (!r.ok) throw new Error(body.error || r.statusText);
  return body;
}
function link(hash, text) { return `<a href="${esc(hash)}">${esc(text)}</a>`; }
function expHash(key) { return "#/exp/" + encodeURIComponent(key); }

// ---------------------------------------------------------------- experiments under a root
function experimentsPage() {
  let timer = null, stopped = false;
  crumbs.innerHTML = "";
  async function load() {
    try {
      const data = await getJSON("experiments");
      if (stopped) return;
      if (data.experiments.length === 1 && data.experiments[0].key === "") {
        location.hash = expHash("");
        return;
      }
      const rows = data.experiments.map((e) => {
        const counts = Object.entries(e.counts || {}).map(([k, n]) => `${k}: ${n}`).join(", ");
        return `<tr class="exp-row"><td>${link(expHash(e.key), e.name)}</td><td>${esc(e.state)}</td>` +
          `<td class="num">${esc(e.trials ?? "")}</td><td>${esc(counts)}</td><td>${esc(e.metric ?? "")} (${esc(e.mode ?? "")})</td>` +
          `<td class="num">${esc(fmt(e.best))}</td><td>${esc(e.best_trial ?? "")}</td><td class="muted">${esc(e.uri ?? e.error ?? "")}</td></tr>`;
      }).join("");
      main.innerHTML = `<h2>Experiments in ${esc(data.root)}</h2><table id="exp-list"><thead><tr><th>experiment</th><th>state</th>` +
        `<th>trials</th><th>by state</th><th>metric</th><th>best</th><th>best trial</th><th>storage</th></tr></thead><tbody>${rows}</tbody></table>`;
      live.textContent = "updated " + new Date().toLocaleTimeString();
    } catch (err) {
      main.innerHTML = `<p class="err">${esc(err.message)}</p>`;
    }
    if (!stopped) timer = setTimeout(load, 3 * POLL_MS);
  }
  load();
  return { stop() { stopped = true; clearTimeout(timer); } };
}

// ---------------------------------------------------------------- one experiment
function experimentPage(key) {
  const st = { since: 0, metric: null, trials: new Map(), curves: new Map(), bestId: null, mode: "max",
    sortKey: "index", sortDir: 1, filter: "", configKeys: [], info: null, lastSide: 0, maxIter: 0 };
  let timer = null, stopped = false, first = true;
  crumbs.innerHTML = " / " + link(expHash(key), key || "experiment");
  main.innerHTML = `<h2 id="exp-title"></h2><div id="exp-summary" class="muted"></div>
    <div class="controls">metric <select id="metric"></select> filter <input id="filter" placeholder="text or status=RUNNING" size="30">
    <span id="shown" class="muted"></span></div>
    <div class="tablewrap"><table id="trial-table"><thead></thead><tbody></tbody></table></div>
    <div class="grid"><div class="panel"><h3>Learning curves</h3><div id="curves" style="height:380px"></div></div>
    <div class="panel"><h3>Parallel coordinates</h3><div id="parcoords" style="height:380px"></div></div>
    <div class="panel"><h3>Hyperparameter importance (fANOVA)</h3><div id="importance" style="height:300px"></div></div>
    <div class="panel"><h3>PBT lineage</h3><div id="lineage"></div></div></div>`;
  const table = document.getElementById("trial-table");
  document.getElementById("filter").addEventListener("input", (e) => { st.filter = e.target.value; renderTable(); });
  document.getElementById("metric").addEventListener("change", (e) => {
    st.metric = e.target.value; st.since = 0; st.curves.clear(); st.trials.clear(); st.lastSide = 0; poll();
  });
  table.querySelector("thead").addEventListener("click", (e) => {
    const k = e.target.dataset && e.target.dataset.key;
    if (!k) return;
    st.sortDir = st.sortKey === k ? -st.sortDir : 1; st.sortKey = k; renderTable();
  });

  function merge(data) {
    st.info = data; st.mode = data.mode; st.metric = data.metric; st.bestId = data.best_id;
    for (const row of data.changed) {
      st.trials.set(row.id, row);
      if (typeof row.iterations === "number" && row.iterations > st.maxIter) st.maxIter = row.iterations;
    }
    for (const [id, c] of Object.entries(data.curves)) {
      let cur = st.curves.get(id);
      if (!cur || c.start === 0) { cur = { x: [], y: [] }; st.curves.set(id, cur); }
      cur.x.length = c.start; cur.y.length = c.start;
      for (let i = 0; i < c.x.length; i++) { cur.x.push(c.x[i]); cur.y.push(c.y[i]); }
    }
    st.since = data.seq;
    const keys = new Set(st.configKeys);
    for (const row of data.changed) for (const k of Object.keys(row.config)) keys.add(k);
    st.configKeys = [...keys].sort();
  }

  function columns() {
    return [["index", "#"], ["name", "trial"], ["status", "state"], ...st.configKeys.map((k) => ["config/" + k, k]),
      ["iterations", "iter"], ["last", "last " + (st.metric || "")], ["best", "best " + (st.metric || "")],
      ["stopped_by_scheduler", "stopped by scheduler"], ["failures", "failures"], ["error", "error"]];
  }
  function cell(row, k) {
    if (k === "stopped_by_scheduler") return earlyStopped(row) ? "early, at " + row.iterations : row.stopped_by_scheduler ? "at the end" : "";
    return k.startsWith("config/") ? row.config[k.slice(7)] : row[k];
  }
  // the scheduler also ends the trials that reach its max_t: only those cut short are early
  function earlyStopped(row) { return row.stopped_by_scheduler && row.iterations < st.maxIter; }

  function renderTable() {
    const cols = columns();
    table.querySelector("thead").innerHTML = "<tr>" + cols.map(([k, label]) =>
      `<th data-key="${esc(k)}" class="${st.sortKey === k ? (st.sortDir > 0 ? "sorted-asc" : "sorted-desc") : ""}">${esc(label)}</th>`).join("") + "</tr>";
    let rows = [...st.trials.values()];
    const f = st.filter.trim().toLowerCase();
    if (f) {
      const m = f.match(/^([\w/.-]+)\s*=\s*(.*)$/);
      rows = rows.filter((r) => m ? String(cell(r, m[1] === "state" ? "status" : m[1]) ?? cell(r, "config/" + m[1]) ?? "").toLowerCase() === m[2]
        : cols.some(([k]) => String(cell(r, k) ?? "").toLowerCase().includes(f)));
    }
    const k = st.sortKey, d = st.sortDir;
    rows.sort((a, b) => {
      const x = cell(a, k), y = cell(b, k);
      if (x === y) return a.index - b.index;
      if (x === null || x === undefined || x === "") return 1;
      if (y === null || y === undefined || y === "") return -1;
      return (typeof x === "number" && typeof y === "number" ? x - y : String(x).localeCompare(String(y))) * d;
    });
    const html = rows.map((r) => `<tr class="trial-row${r.id === st.bestId ? " best" : ""}" data-id="${esc(r.id)}">` + cols.map(([c]) => {
      let v = cell(r, c);
      if (c === "name") return `<td>${link(expHash(key) + "/trial/" + encodeURIComponent(r.id), v)}</td>`;
      if (c === "status") return `<td class="status-${esc(v)}">${esc(v)}</td>`;
      if (c === "error") return `<td class="err" title="${esc(v)}">${esc(String(v || "").slice(0, 60))}</td>`;
      return `<td class="${typeof v === "number" ? "num" : ""}">${esc(fmt(v))}</td>`;
    }).join("") + "</tr>").join("");
    table.querySelector("tbody").innerHTML = html;
    document.getElementById("shown").textContent = `${rows.length} of ${st.trials.size} trials`;
  }

  async function renderCurves() {
    await plotlyReady;
    const xs = [], ys = [], stopX = [], stopY = [], stopText = [];
    for (const [id, c] of st.curves) {
      if (id === st.bestId) continue;
      for (let i = 0; i < c.x.length; i++) { xs.push(c.x[i]); ys.push(c.y[i]); }
      xs.push(null); ys.push(null);
    }
    for (const [id, row] of st.trials) {
      const c = st.curves.get(id);
      if (!earlyStopped(row) || !c) continue;
      for (let i = c.y.length - 1; i >= 0; i--) {
        if (c.y[i] !== null) { stopX.push(c.x[i]); stopY.push(c.y[i]); stopText.push(row.name); break; }
      }
    }
    const best = st.curves.get(st.bestId) || { x: [], y: [] };
    const bestName = st.trials.has(st.bestId) ? st.trials.get(st.bestId).name : "";
    const traces = [
      { x: xs, y: ys, mode: "lines", name: "trials", line: { color: "rgba(70,100,160,0.35)", width: 1 }, hoverinfo: "x+y" },
      { x: stopX, y: stopY, text: stopText, mode: "markers", name: "stopped by scheduler", marker: { symbol: "x", size: 7, color: "#e53935" } },
      { x: best.x, y: best.y, mode: "lines+markers", name: "best: " + bestName, line: { color: "#ff9800", width: 3 }, marker: { size: 4 } },
    ];
    const layout = { margin: { l: 50, r: 10, t: 10, b: 40 }, xaxis: { title: { text: "training_iteration" } },
      yaxis: { title: { text: st.metric || "" } }, legend: { orientation: "h", y: 1.12 }, uirevision: st.metric };
    return Plotly.react("curves", traces, layout, { displaylogo: false, responsive: true });
  }

  async function renderParcoords() {
    await plotlyReady;
    const rows = [...st.trials.values()].filter((r) => r.last !== null && r.last !== undefined);
    if (!rows.length) return;
    const dims = [];
    for (const k of st.configKeys) {
      const vals = rows.map((r) => r.config[k]);
      if (vals.every((v) => typeof v === "number")) {
        if (new Set(vals).size > 1) dims.push({ label: k, values: vals }); // a constant says nothing
      }
      else {
        const cats = [...new Set(vals.map(String))].sort();
        if (cats.length > 1 && cats.length <= 50) dims.push({ label: k, values: vals.map((v) => cats.indexOf(String(v))), tickvals: cats.map((_, i) => i), ticktext: cats });
      }
    }
    const metricVals = rows.map((r) => r.last);
    dims.push({ label: st.metric, values: metricVals });
    Plotly.react("parcoords", [{ type: "parcoords", dimensions: dims,
      line: { color: metricVals, colorscale: "Viridis", reversescale: st.mode === "min", showscale: true } }],
    { margin: { l: 60, r: 60, t: 50, b: 20 } }, { displaylogo: false, responsive: true });
  }

  async function renderSide() {
    try {
      const imp = await getJSON("importance", { exp: key, metric: st.metric || "" });
      await plotlyReady;
      const entries = Object.entries(imp.importance).reverse();
      if (entries.length) {
        Plotly.react("importance", [{ type: "bar", orientation: "h", x: entries.map((e) => e[1]), y: entries.map((e) => e[0]), marker: { color: "#5c6bc0" } }],
          { margin: { l: 100, r: 10, t: 10, b: 30 }, xaxis: { title: { text: "importance for " + imp.metric } } }, { displaylogo: false, responsive: true });
      } else document.getElementById("importance").innerHTML = `<p class="muted">${esc(imp.note)}</p>`;
      const lin = await getJSON("lineage", { exp: key });
      const el = document.getElementById("lineage");
      if (!lin.events.length) { el.innerHTML = `<p class="muted">no exploits (${esc(lin.scheduler || "no scheduler")})</p>`; return; }
      el.innerHTML = `<table id="lineage-table"><thead><tr><th>trial</th><th>at iteration</th><th>exploited</th><th>config change</th></tr></thead><tbody>` +
        lin.events.map((e) => `<tr class="lineage-row"><td>${esc(e.trial_name)}</td><td class="num">${esc(fmt(e.iteration))}</td><td class="donor">${esc(e.donor_name || "(not recorded)")}${e.donor_checkpoint ? ` <span class="muted">${esc(e.donor_checkpoint)}</span>` : ""}</td>` +
          `<td>${esc(Object.entries(e.change).map(([k, [a, b]]) => `${k}: ${fmt(a)} → ${fmt(b)}`).join(", "))}</td></tr>`).join("") + "</tbody></table>";
    } catch (err) { console.log(err); }
  }

  async function poll() {
    const t0 = performance.now();
    try {
      const data = await getJSON("experiment", { exp: key, since: st.since, metric: st.metric || "" });
      if (stopped) return;
      const changed = data.changed.length > 0 || first;
      merge(data);
      if (changed) {
        document.getElementById("exp-title").textContent = data.name;
        const counts = Object.entries(data.counts).map(([k, n]) => `${k} ${n}`).join(", ");
        document.getElementById("exp-summary").textContent = `${data.state} · ${data.trials} trials (${counts}) · ${data.uri} · best ${fmt(data.best)} (${data.best_trial || "-"})`;
        const sel = document.getElementById("metric");
        if (sel.options.length !== data.metrics.length) sel.innerHTML = data.metrics.map((m) => `<option>${esc(m)}</option>`).join("");
        sel.value = st.metric || "";
        renderTable();
        await frame();
        if (first) window.kubetune.firstPaint = performance.now();
        await renderCurves();
        await frame();
        if (first) { window.kubetune.chartsPaint = performance.now(); first = false; }
        window.kubetune.updates.push({ seq: data.seq, changed: data.changed.length, ms: performance.now() - t0, at: Date.now() });
        const now = Date.now();
        if (now - st.lastSide > 10000 || data.state === "FINISHED" && st.lastSide < now - 3000) {
          st.lastSide = now; renderParcoords(); renderSide();
        }
      }
      window.kubetune.seq = data.seq;
      document.body.dataset.seq = data.seq;
      live.textContent = `${data.state.toLowerCase()} · seq ${data.seq} · ${new Date().toLocaleTimeString()}`;
    } catch (err) {
      live.textContent = "error: " + err.message;
    }
    if (!stopped) timer = setTimeout(poll, POLL_MS);
  }
  poll();
  return { stop() { stopped = true; clearTimeout(timer); } };
}

// ---------------------------------------------------------------- one trial
function trialPage(key, id) {
  let timer = null, stopped = false;
  crumbs.innerHTML = " / " + link(expHash(key), key || "experiment") + " / " + esc(id);
  async function load() {
    try {
      const t = await getJSON("trial", { exp: key, id });
      if (stopped) return;
      const cks = t.checkpoints.map((c) => `<tr class="ckpt-row"><td>${esc(c.name)}${c.latest ? " (latest)" : ""}</td><td class="num">${esc(fmt(c.iteration))}</td>` +
        `<td class="num">${esc(fmt(c.metric))}</td><td><code>${esc(c.uri)}</code></td></tr>`).join("");
      const head = t.columns.map((c) => `<th>${esc(c)}</th>`).join("");
      const body = t.results.map((r) => "<tr class=\"result-row\">" + t.columns.map((c) => `<td class="${typeof r[c] === "number" ? "num" : ""}">${esc(fmt(r[c]))}</td>`).join("") + "</tr>").join("");
      main.innerHTML = `<h2 id="trial-title">${esc(t.name)} <span class="status-${esc(t.status)}">${esc(t.status)}</span></h2>
        <p class="muted">${esc(t.uri)} · ${t.rows} results · stop reason: ${esc(t.stop_reason || "-")}${t.stopped_by_scheduler ? " (ended by the scheduler)" : ""} · failures ${t.failures}</p>
        <div class="grid"><div class="panel"><h3>Config</h3><pre id="trial-config">${esc(JSON.stringify(t.full_config, null, 2))}</pre>
        <h3>Checkpoints</h3><table id="checkpoints"><thead><tr><th>checkpoint</th><th>iteration</th><th>${esc(t.metric || "")}</th><th>storage URI</th></tr></thead><tbody>${cks}</tbody></table>
        <h3>error.txt</h3><pre id="error-txt">${esc(t.error_txt || "(none)")}</pre></div>
        <div class="panel"><h3>${esc(t.metric || "")}</h3><div id="trial-curve" style="height:320px"></div></div></div>
        <h3>Result rows</h3><div class="tablewrap"><table id="trial-results"><thead><tr>${head}</tr></thead><tbody>${body}</tbody></table></div>`;
      if (t.metric) {
        await plotlyReady;
        const rows = t.results.filter((r) => typeof r[t.metric] === "number");
        await Plotly.react("trial-curve", [{ x: rows.map((r) => r.training_iteration), y: rows.map((r) => r[t.metric]), mode: "lines+markers", line: { color: "#ff9800" } }],
          { margin: { l: 50, r: 10, t: 10, b: 40 }, xaxis: { title: { text: "training_iteration" } } }, { displaylogo: false, responsive: true });
      }
      document.body.dataset.loaded = "trial";
      live.textContent = "updated " + new Date().toLocaleTimeString();
      if (["TERMINATED", "ERROR"].includes(t.status)) return;
    } catch (err) {
      main.innerHTML = `<p class="err">${esc(err.message)}</p>`;
    }
    if (!stopped) timer = setTimeout(load, 3 * POLL_MS);
  }
  load();
  return { stop() { stopped = true; clearTimeout(timer); } };
}

function route() {
  if (page) page.stop();
  delete document.body.dataset.loaded;
  const parts = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  if (parts[0] === "exp" && parts.length >= 4 && parts[2] === "trial") page = trialPage(parts[1], parts.slice(3).join("/"));
  else if (parts[0] === "exp" && parts.length >= 2) page = experimentPage(parts[1]);
  else page = experimentsPage();
}
window.addEventListener("hashchange", route);
route();
