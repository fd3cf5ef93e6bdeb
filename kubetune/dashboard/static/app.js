// kubetune dashboard: hash-routed pages over the JSON API; each poll asks only for what
// changed since the last sequence number it saw.
"use strict";

const POLL_MS = 1000;
const main = document.getElementById("main");
const crumbs = document.getElementById("crumbs");
const live = document.getElementById("live");
let page = null; // the current page's {stop()}
window.kubetune = { updates: [], firstPaint: null, previewPaint: null, chartsPaint: null, plotlyAt: null, seq: 0 };
const plotlyReady = new Promise((resolve) => {
  const wait = () => (window.Plotly ? (window.kubetune.plotlyAt = performance.now(), resolve(window.Plotly)) : setTimeout(wait, 20));
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
        const phase = e.phase !== undefined ? ` <span class="muted" title="${esc(e.message || "")}">(${esc(e.phase || "no phase yet")})</span>` : "";
        return `<tr class="exp-row"><td>${link(expHash(e.key), e.name)}</td><td>${esc(e.state)}${phase}</td>` +
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
    <div class="grid"><div class="panel"><h3>Learning curves</h3><div id="curves" style="height:380px"></div><div id="curves-note" class="muted"></div></div>
    <div class="panel"><h3>Parallel coordinates</h3><div id="parcoords" style="height:380px"></div></div>
    <div class="panel"><h3>Hyperparameter importance (fANOVA)</h3><div id="importance" style="height:300px"></div></div>
    <div class="panel"><h3>PBT lineage</h3><div id="lineage"></div></div></div>`;
  const table = document.getElementById("trial-table");
  document.getElementById("filter").addEventListener("input", (e) => { st.filter = e.target.value; renderTable(); });
  document.getElementById("metric").addEventListener("change", (e) => {
    st.metric = e.target.value; st.since = 0; st.curves.clear(); st.trials.clear(); st.lastSide = 0; chart = null; poll();
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
      if (chart && chart.ids.has(id) && c.start < chart.ids.get(id)) chart = null; // rewritten: the static trace is stale
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

  // The table is built whole on the first paint, a sort, a filter or a new column; an update
  // replaces only the rows of the trials that changed (and moves rows only where the sort
  // order asks), so 1,000 rows are not parsed and laid out again every second.
  const tbl = { rows: new Map(), sig: null, maxIter: 0, bestId: null };
  const tpl = document.createElement("template");
  function visibleRows(cols) {
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
    return rows;
  }
  function rowHtml(r, cols) {
    return `<tr class="trial-row${r.id === st.bestId ? " best" : ""}" data-id="${esc(r.id)}">` + cols.map(([c]) => {
      let v = cell(r, c);
      if (c === "name") return `<td>${link(expHash(key) + "/trial/" + encodeURIComponent(r.id), v)}</td>`;
      if (c === "status") return `<td class="status-${esc(v)}">${esc(v)}</td>`;
      if (c === "error") return `<td class="err" title="${esc(v)}">${esc(String(v || "").slice(0, 60))}</td>`;
      return `<td class="${typeof v === "number" ? "num" : ""}">${esc(fmt(v))}</td>`;
    }).join("") + "</tr>";
  }
  // changed: the ids of the trials whose rows changed; none: build the table whole
  function renderTable(changed) {
    const cols = columns();
    const sig = JSON.stringify([cols, st.sortKey, st.sortDir, st.filter]);
    const rows = visibleRows(cols);
    const tbody = table.querySelector("tbody");
    if (!changed || sig !== tbl.sig) {
      table.querySelector("thead").innerHTML = "<tr>" + cols.map(([k, label]) =>
        `<th data-key="${esc(k)}" class="${st.sortKey === k ? (st.sortDir > 0 ? "sorted-asc" : "sorted-desc") : ""}">${esc(label)}</th>`).join("") + "</tr>";
      tbody.innerHTML = rows.map((r) => rowHtml(r, cols)).join("");
      tbl.rows = new Map([...tbody.children].map((tr) => [tr.dataset.id, tr]));
      Object.assign(tbl, { sig, maxIter: st.maxIter, bestId: st.bestId, last: "full" });
    } else {
      const ids = new Set(changed);
      if (tbl.bestId !== st.bestId) { ids.add(tbl.bestId); ids.add(st.bestId); tbl.bestId = st.bestId; }
      if (tbl.maxIter !== st.maxIter) { // the rows whose "stopped early" changed with the longest trial
        for (const r of st.trials.values()) {
          if (r.stopped_by_scheduler && (r.iterations < tbl.maxIter) !== (r.iterations < st.maxIter)) ids.add(r.id);
        }
        tbl.maxIter = st.maxIter;
      }
      for (const id of ids) { const tr = tbl.rows.get(id); if (tr) { tr.remove(); tbl.rows.delete(id); } }
      let cur = tbody.firstElementChild;
      for (const r of rows) {
        let tr = tbl.rows.get(r.id);
        if (!tr) {
          tpl.innerHTML = rowHtml(r, cols); tr = tpl.content.firstElementChild; tbl.rows.set(r.id, tr);
        }
        if (tr === cur) { cur = cur.nextElementSibling; continue; }
        tbody.insertBefore(tr, cur);
      }
      tbl.last = `${ids.size} rows`;
    }
    document.getElementById("shown").textContent = `${rows.length} of ${st.trials.size} trials`;
  }

  // Points of the all-trials trace past which each curve is thinned (SVG paths of 100,000
  // points take seconds to draw and to redraw on every update): a curve keeps the first and
  // the last point (where an early stop is marked) and, of each run of `stride` points between,
  // the lowest and the highest, so spikes survive. The best trial is always drawn in full.
  const CURVE_POINTS = 20000;
  function thin(c, stride, xs, ys) {
    const n = c.x.length;
    if (stride <= 2 || n <= 3) { for (let i = 0; i < n; i++) { xs.push(c.x[i]); ys.push(c.y[i]); } return n; }
    xs.push(c.x[0]); ys.push(c.y[0]);
    let kept = 1;
    for (let s = 1; s < n - 1; s += stride) {
      const e = Math.min(s + stride, n - 1);
      let lo = -1, hi = -1;
      for (let i = s; i < e; i++) {
        const v = c.y[i];
        if (v === null) continue;
        if (lo < 0 || v < c.y[lo]) lo = i;
        if (hi < 0 || v > c.y[hi]) hi = i;
      }
      if (lo < 0) { xs.push(c.x[s]); ys.push(null); kept++; continue; } // a gap stays a gap
      for (const i of lo === hi ? [lo] : [Math.min(lo, hi), Math.max(lo, hi)]) { xs.push(c.x[i]); ys.push(c.y[i]); kept++; }
    }
    xs.push(c.x[n - 1]); ys.push(c.y[n - 1]);
    return kept + 1;
  }

  // Until plotly.js is ready (on a fresh browser profile it takes seconds to download, compile
  // and run the 4.8 MB bundle) the same thinned traces are drawn on a plain canvas, without
  // axes' interaction; Plotly's chart replaces it as soon as it can.
  function drawPreview(traces) {
    const el = document.getElementById("curves");
    const w = el.clientWidth || 600, h = el.clientHeight || 380;
    const m = { l: 50, r: 10, t: 30, b: 40 };
    let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
    for (const t of traces) for (let i = 0; i < t.x.length; i++) {
      const x = t.x[i], y = t.y[i];
      if (x === null || y === null || x === undefined || y === undefined) continue;
      if (x < x0) x0 = x; if (x > x1) x1 = x; if (y < y0) y0 = y; if (y > y1) y1 = y;
    }
    if (!(x1 >= x0 && y1 >= y0)) return false;
    if (x1 === x0) x1 = x0 + 1; if (y1 === y0) y1 = y0 + 1;
    const canvas = document.createElement("canvas");
    canvas.id = "curves-preview"; canvas.width = w; canvas.height = h;
    const g = canvas.getContext("2d");
    const px = (x) => m.l + ((x - x0) / (x1 - x0)) * (w - m.l - m.r);
    const py = (y) => h - m.b - ((y - y0) / (y1 - y0)) * (h - m.t - m.b);
    g.strokeStyle = "#999"; g.strokeRect(m.l, m.t, w - m.l - m.r, h - m.t - m.b);
    g.fillStyle = "#555"; g.font = "11px sans-serif";
    g.fillText(fmt(y1), 2, m.t + 8); g.fillText(fmt(y0), 2, h - m.b); g.fillText(fmt(x0), m.l, h - m.b + 14);
    g.fillText(fmt(x1), w - m.r - 30, h - m.b + 14); g.fillText("training_iteration (drawing the chart…)", m.l + 60, h - 8);
    for (const t of traces) {
      if (t.mode === "markers") {
        g.strokeStyle = t.marker.color; g.lineWidth = 1.5;
        for (let i = 0; i < t.x.length; i++) {
          const X = px(t.x[i]), Y = py(t.y[i]);
          g.beginPath(); g.moveTo(X - 3, Y - 3); g.lineTo(X + 3, Y + 3); g.moveTo(X + 3, Y - 3); g.lineTo(X - 3, Y + 3); g.stroke();
        }
        continue;
      }
      g.strokeStyle = t.line.color; g.lineWidth = t.line.width;
      g.beginPath();
      let pen = false;
      for (let i = 0; i < t.x.length; i++) {
        if (t.x[i] === null || t.y[i] === null) { pen = false; continue; }
        if (pen) g.lineTo(px(t.x[i]), py(t.y[i])); else g.moveTo(px(t.x[i]), py(t.y[i]));
        pen = true;
      }
      g.stroke();
    }
    el.replaceChildren(canvas);
    return true;
  }

  // Two traces share the other trials' curves: a static one, built (thinned) once, of the
  // trials that had ended when it was built, and a live one of the running trials, of the
  // points that ended trials got since (drawn on from their last static point) and of a best
  // trial that lost its place. An update rebuilds only the live one (Plotly still lays out
  // every trace: what it saves is the thinning and copying of all curves); the whole chart is
  // built again on a new metric, on a rewritten curve, or once the live trace holds enough to
  // be worth thinning with the rest.
  let chart = null; // {stride, ids: Map(id -> points in the static trace), xs, ys, drawn}
  const ENDED = new Set(["TERMINATED", "ERROR"]);
  function buildStatic(total) {
    const stride = total > CURVE_POINTS ? Math.ceil((2 * total) / CURVE_POINTS) : 1;
    const c = { stride, ids: new Map(), xs: [], ys: [], drawn: 0 };
    for (const [id, cur] of st.curves) {
      const row = st.trials.get(id);
      if (id === st.bestId || !row || !ENDED.has(row.status) || !cur.x.length) continue;
      c.drawn += thin(cur, stride, c.xs, c.ys);
      c.xs.push(null); c.ys.push(null);
      c.ids.set(id, cur.x.length);
    }
    return c;
  }
  function liveTrace(c) {
    const xs = [], ys = [];
    let drawn = 0, ended = 0;
    for (const [id, cur] of st.curves) {
      if (id === st.bestId || !cur.x.length) continue;
      const from = c.ids.has(id) ? c.ids.get(id) - 1 : 0; // from the static trace's last point on
      if (from >= cur.x.length - 1 && c.ids.has(id)) continue;
      const n = thin(from ? { x: cur.x.slice(from), y: cur.y.slice(from) } : cur, c.stride, xs, ys);
      xs.push(null); ys.push(null);
      drawn += n;
      const row = st.trials.get(id);
      if (row && ENDED.has(row.status)) ended += n;
    }
    return { xs, ys, drawn, ended };
  }

  async function renderCurves() {
    const stopX = [], stopY = [], stopText = [];
    let total = 0;
    for (const [id, c] of st.curves) if (id !== st.bestId) total += c.x.length;
    let how = "live";
    if (!chart) { chart = buildStatic(total); how = "full"; }
    let lv = liveTrace(chart);
    // rebuilt whole when the live trace holds many ended trials' points, or when it grew so
    // that the chart draws far more than its budget (the curves grew since they were thinned)
    if (how === "live" && (lv.ended > CURVE_POINTS / 4 || lv.drawn > CURVE_POINTS / 2 && chart.drawn + lv.drawn > 1.5 * CURVE_POINTS)) {
      chart = buildStatic(total); lv = liveTrace(chart); how = "full";
    }
    const stride = chart.stride, drawn = chart.drawn + lv.drawn;
    for (const [id, row] of st.trials) {
      const c = st.curves.get(id);
      if (!earlyStopped(row) || !c) continue;
      for (let i = c.y.length - 1; i >= 0; i--) {
        if (c.y[i] !== null) { stopX.push(c.x[i]); stopY.push(c.y[i]); stopText.push(row.name); break; }
      }
    }
    document.getElementById("curves-note").textContent = stride > 1
      ? `${drawn.toLocaleString()} of ${total.toLocaleString()} points drawn (each curve's low and high of every ${stride}; a trial's page has all)` : "";
    window.kubetune.curvePoints = { total, drawn, stride, live: lv.drawn };
    window.kubetune.chartUpdate = how;
    const best = st.curves.get(st.bestId) || { x: [], y: [] };
    const bestName = st.trials.has(st.bestId) ? st.trials.get(st.bestId).name : "";
    const line = { color: "rgba(70,100,160,0.35)", width: 1 };
    const traces = [
      { x: chart.xs, y: chart.ys, mode: "lines", name: "trials", legendgroup: "trials", line, hoverinfo: "x+y" },
      { x: stopX, y: stopY, text: stopText, mode: "markers", name: "stopped by scheduler", marker: { symbol: "x", size: 7, color: "#e53935" } },
      { x: best.x.slice(), y: best.y.slice(), mode: "lines+markers", name: "best: " + bestName, line: { color: "#ff9800", width: 3 }, marker: { size: 4 } },
      { x: lv.xs, y: lv.ys, mode: "lines", name: "trials (running)", legendgroup: "trials", showlegend: false, line, hoverinfo: "x+y" },
    ];
    const layout = { margin: { l: 50, r: 10, t: 10, b: 40 }, xaxis: { title: { text: "training_iteration" } },
      yaxis: { title: { text: st.metric || "" } }, legend: { orientation: "h", y: 1.12 }, uirevision: st.metric };
    if (!window.Plotly && drawPreview(traces) && window.kubetune.previewPaint === null) {
      await frame();
      window.kubetune.previewPaint = performance.now();
    }
    await plotlyReady;
    const preview = document.getElementById("curves-preview");
    if (preview) preview.remove();
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
      const t1 = performance.now();
      const changed = data.changed.length > 0 || first;
      merge(data);
      if (changed) {
        document.getElementById("exp-title").textContent = data.name;
        const counts = Object.entries(data.counts).map(([k, n]) => `${k} ${n}`).join(", ");
        document.getElementById("exp-summary").textContent = `${data.state} · ${data.trials} trials (${counts}) · ${data.uri} · best ${fmt(data.best)} (${data.best_trial || "-"})`;
        const sel = document.getElementById("metric");
        if (sel.options.length !== data.metrics.length) sel.innerHTML = data.metrics.map((m) => `<option>${esc(m)}</option>`).join("");
        sel.value = st.metric || "";
        renderTable(first ? null : data.changed.map((r) => r.id));
        await frame();
        const t2 = performance.now();
        if (first) window.kubetune.firstPaint = t2;
        await renderCurves();
        await frame();
        const t3 = performance.now();
        if (first) { window.kubetune.chartsPaint = performance.now(); first = false; }
        window.kubetune.updates.push({ seq: data.seq, changed: data.changed.length, ms: t3 - t0, at: Date.now(),
          request_ms: t1 - t0, table_ms: t2 - t1, chart_ms: t3 - t2, table: tbl.last, chart: window.kubetune.chartUpdate });
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
// on the cluster: the TuneTrial's pods (one per attempt), their Events and the trial
// container's log tail, as `kubectl get pods/events` and `kubectl logs --tail` would show them
function clusterSection(c) {
  if (c.error) return `<h3>On the cluster</h3><p class="err" id="cluster-error">${esc(c.error)}</p>`;
  const pods = c.pods.map((p) => `<tr class="pod-row"><td>${esc(p.name)}</td><td class="num">${esc(p.attempt ?? "")}</td><td class="status-${esc(p.phase)}">${esc(p.phase)}</td>` +
    `<td>${esc(p.node ?? "")}</td><td>${esc(p.containers.map((k) => `${k.name}: ${k.state}${k.reason ? " " + k.reason : ""}${k.exit_code !== null && k.exit_code !== undefined ? " (exit " + k.exit_code + ")" : ""}${k.restarts ? ", " + k.restarts + " restarts" : ""}`).join("; "))}</td>` +
    `<td>${esc(p.started ?? "")}</td><td class="muted">${esc([p.reason, p.message].filter(Boolean).join(": "))}</td></tr>`).join("");
  const events = c.events.map((e) => `<tr class="event-row" data-reason="${esc(e.reason)}"><td>${esc(e.last)}</td><td class="${e.type === "Warning" ? "err" : ""}">${esc(e.type)}</td>` +
    `<td>${esc(e.reason)}</td><td>${esc(e.object)}</td><td class="num">${esc(e.count)}</td><td class="wrap">${esc(e.message)}</td></tr>`).join("");
  const log = c.log ? `<p class="muted" id="log-head">last ${esc(c.log.lines)} lines of ${esc(c.log.pod)}, container ${esc(c.log.container)}</p><pre id="log-tail">${esc(c.log.text || "(empty)")}</pre>`
    : `<p class="muted" id="log-head">no pod yet</p><pre id="log-tail">(none)</pre>`;
  return `<h3>On the cluster</h3><p class="muted" id="cluster-summary">TuneTrial ${esc(c.namespace)}/${esc(c.tunetrial)} · phase ${esc(c.phase ?? "-")}${c.reason ? " · " + esc(c.reason) : ""} · attempts ${esc(c.attempts ?? "-")}</p>
    <h3>Pods</h3><table id="pods"><thead><tr><th>pod</th><th>attempt</th><th>phase</th><th>node</th><th>containers</th><th>started</th><th>reason</th></tr></thead><tbody>${pods}</tbody></table>
    <h3>Events</h3><table id="events"><thead><tr><th>last seen</th><th>type</th><th>reason</th><th>object</th><th>count</th><th>message</th></tr></thead><tbody>${events}</tbody></table>
    <h3>Log</h3>${log}`;
}

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
        ${t.cluster ? clusterSection(t.cluster) : ""}
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
