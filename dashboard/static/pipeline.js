/* Pipeline page: the stream app's steps with throughput and latency, per worker, and live charts.
 *
 * Polls /api/pipeline every POLL_MS (the workers publish a snapshot every few seconds; a poll is one
 * small JSON document).  Step, pipeline and worker names come from a topic anyone on the broker can
 * write: they reach the DOM only through textContent (never innerHTML).  Charts are uPlot
 * (dashboard/package.json, copied into static/vendor/ by `make env`).
 */
(function () {
  "use strict";

  var POLL_MS = 2000;
  var API = document.body.getAttribute("data-api");
  var COLORS = ["#d4860b", "#0a5ccc", "#1a7f37", "#7a4fc8", "#c9252d", "#0e8a8a", "#8a5a00", "#c23c8c"];
  var LAT_SHOWN = ["p50", "p99", "p99.99"];
  var COLUMNS = ["Msgs/s in", "5 min min · median · max", "Checkpoints", "Checkpoint p50 · p99", "Consumer lag",
                 "Event-time lag", "Partitions", "Dead letters", "Restores", "Up"];
  var charts = {};              // pipeline name -> {tp: uPlot, lat: uPlot, key: series signature}
  var cards = {};               // pipeline name -> card element

  var $ = window.StarLeaders.$, el = window.StarLeaders.el;     // common.js

  function num(v) { return typeof v === "number" && isFinite(v) ? v : null; }

  function fmtRate(v) {
    v = num(v);
    if (v === null) return "—";
    if (v >= 100) return Math.round(v).toLocaleString("en-US");
    if (v >= 10) return v.toFixed(1);
    return v === 0 ? "0" : v.toFixed(2);
  }

  function fmtLat(v) {
    if (v === ">1s") return "> 1 s";
    v = num(v);
    if (v === null) return "—";
    if (v < 1e-3) return "≤ " + +(v * 1e6).toPrecision(3) + " µs";
    if (v < 1) return "≤ " + +(v * 1e3).toPrecision(3) + " ms";
    return "≤ " + +v.toPrecision(3) + " s";
  }

  function shortLat(v) { return fmtLat(v).replace("≤ ", ""); }

  function fmtDuration(s) {
    s = Math.max(0, Math.round(s));
    if (s < 120) return s + " s";
    if (s < 7200) return Math.round(s / 60) + " min";
    if (s < 172800) return (s / 3600).toFixed(1) + " h";
    return Math.round(s / 86400).toLocaleString("en-US") + " d";      // a replay of an old archive
  }

  /* ">1s" (the last bin) is drawn at 1 s; empty stays a gap. */
  function latNum(v) { return v === ">1s" ? 1 : num(v); }

  function cssVar(name) { return getComputedStyle(document.body).getPropertyValue(name).trim() || "#888"; }

  function figure(label, value, cls) {
    var d = el("div", "fig" + (cls ? " " + cls : ""));
    d.appendChild(el("span", "fig-label", label));
    d.appendChild(el("span", "fig-value", value));
    return d;
  }

  function stepBox(step) {
    var li = el("li", "step step-" + step.kind);
    li.setAttribute("data-step", step.name);
    var head = el("div", "step-head");
    head.appendChild(el("span", "step-kind", step.kind));
    head.appendChild(el("span", "step-name", step.name));
    li.appendChild(head);
    var tp = step.throughput || {};
    var rate = el("div", "step-rate");
    rate.appendChild(el("span", "step-rate-now", fmtRate(tp.now)));
    rate.appendChild(el("small", null, " msgs/s"));
    li.appendChild(rate);
    var spread = el("div", "step-spread", "min " + fmtRate(tp.min) + " · med " + fmtRate(tp.median) + " · max " + fmtRate(tp.max));
    spread.title = "messages in per second over the last 5 minutes: minimum, median, maximum";
    li.appendChild(spread);
    var lat = step.latency || {};
    var figs = el("div", "figs");
    LAT_SHOWN.forEach(function (p) { figs.appendChild(figure(p, fmtLat(lat[p]), "lat-" + p.replace(".", "_"))); });
    li.appendChild(figs);
    li.appendChild(el("div", "step-count", (step.messages_in || 0).toLocaleString("en-US") + " in · " +
                                           (step.messages_out || 0).toLocaleString("en-US") + " out"));
    return li;
  }

  function chartWidth(card) {
    var w = card.querySelector(".charts").clientWidth;
    return Math.max(240, window.innerWidth > 860 ? Math.floor((w - 16) / 2) : w);
  }

  function makeChart(target, title, series, yLog, width, fmt) {
    var text = cssVar("--muted"), grid = cssVar("--border");
    var axis = { stroke: text, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid, width: 1 } };
    var opts = {
      title: title, width: width, height: 220,
      scales: { x: { time: true }, y: yLog ? { distr: 3 } : { range: function (u, lo, hi) { return [0, Math.max(1, hi * 1.1)]; } } },
      axes: [axis, Object.assign({}, axis, { size: 64, values: function (u, vals) { return vals.map(function (v) { return v === null ? "" : fmt(v); }); } })],
      legend: { live: true },
      series: [{}].concat(series.map(function (name, i) {
        // every other line dashed: steps with equal rates (a decoder and the filter) stay visible
        return { label: name, stroke: COLORS[i % COLORS.length], width: 2, spanGaps: false,
                 dash: i % 2 ? [7, 4] : undefined,
                 value: function (u, v) { return v === null || v === undefined ? "—" : fmt(v); } };
      }))
    };
    var empty = [[]].concat(series.map(function () { return []; }));
    return new uPlot(opts, empty, target);
  }

  function pipelineCard(p) {
    var card = el("section", "card pipeline");
    card.setAttribute("data-pipeline", p.name);
    var head = el("div", "board-head");
    var h = el("h2", null, p.name);
    head.appendChild(h);
    head.appendChild(el("span", "updated pipe-source"));
    card.appendChild(head);
    var e2e = el("div", "e2e");
    card.appendChild(e2e);
    card.appendChild(el("ol", "flow"));
    var charts = el("div", "charts");
    charts.appendChild(el("div", "chart chart-tp"));
    charts.appendChild(el("div", "chart chart-lat"));
    card.appendChild(charts);
    return card;
  }

  function renderPipeline(p, times) {
    var card = cards[p.name];
    if (!card) {
      card = cards[p.name] = pipelineCard(p);
      $("pipelines").appendChild(card);
    }
    card.querySelector(".pipe-source").textContent = "source " + (p.source || "?") + " · " +
      p.workers.length + (p.workers.length === 1 ? " worker" : " workers");
    var e2e = card.querySelector(".e2e");
    e2e.replaceChildren(el("span", "e2e-label", "End to end"));
    LAT_SHOWN.forEach(function (q) { e2e.appendChild(figure(q, fmtLat((p.end_to_end || {})[q]))); });
    var flow = card.querySelector(".flow");
    flow.replaceChildren.apply(flow, p.steps.map(stepBox));

    if (typeof uPlot === "undefined") {      // static/vendor/ not built (make env): figures, no charts
      card.querySelector(".charts").textContent = "Charts need dashboard/static/vendor/ (make env).";
      return;
    }
    var names = p.steps.map(function (s) { return s.name; });
    var key = JSON.stringify(names);
    var c = charts[p.name];
    var width = chartWidth(card);
    if (!c || c.key !== key) {
      if (c) { c.tp.destroy(); c.lat.destroy(); }
      var tpEl = card.querySelector(".chart-tp"), latEl = card.querySelector(".chart-lat");
      c = charts[p.name] = {
        key: key,
        tp: makeChart(tpEl, "Messages in per second, by step", names, false, width, fmtRate),
        lat: makeChart(latEl, "End-to-end latency (log scale)", LAT_SHOWN, true, width, shortLat)
      };
    } else if (c.tp.width !== width) {
      c.tp.setSize({ width: width, height: 220 });
      c.lat.setSize({ width: width, height: 220 });
    }
    var xs = times.map(function (t) { return t / 1000; });
    c.tp.setData([xs].concat(p.steps.map(function (s) { return s.series.map(num); })));
    var ser = p.end_to_end_series || [];
    c.lat.setData([xs].concat(LAT_SHOWN.map(function (q) {
      return xs.map(function (_, i) { return ser[i] ? latNum(ser[i][q]) : null; });
    })));
    setTimeout(function () {                 // after uPlot's own redraw; not hovered: the latest values
      [c.tp, c.lat].forEach(function (u) {
        if (xs.length && !(u.cursor.left >= 0)) u.setLegend({ idx: xs.length - 1 });
      });
    }, 0);
  }

  function renderWorkers(ws, now) {
    var tbody = $("workers").querySelector("tbody");
    tbody.replaceChildren.apply(tbody, ws.map(function (w) {
      var tr = el("tr", w.stale ? "stale" : null);
      tr.setAttribute("data-worker", w.name);
      var name = el("th", "w-name");
      name.setAttribute("scope", "row");
      name.appendChild(el("span", "dot")).setAttribute("data-state", w.stale ? "warn" : "ok");
      name.appendChild(el("span", "w-label", w.name)).title = w.name;
      if (w.stale) name.appendChild(el("small", "w-stale", "silent " + fmtDuration(w.age_s)));
      tr.appendChild(name);
      var tp = w.throughput || {}, ck = w.checkpoint_latency || {};
      [fmtRate(tp.now), fmtRate(tp.min) + " · " + fmtRate(tp.median) + " · " + fmtRate(tp.max),
       (w.checkpoints || 0).toLocaleString("en-US"), shortLat(ck.p50) + " · " + shortLat(ck.p99),
       (w.consumer_lag || 0).toLocaleString("en-US"),
       num(w.event_time_lag_ms) === null ? "—" : fmtDuration(w.event_time_lag_ms / 1000),
       String(w.partitions || 0), (w.dead_letters || 0).toLocaleString("en-US"),
       String(w.restores || 0), fmtDuration((now - w.started_ms) / 1000)
      ].forEach(function (t, i) {
        var td = el("td", "num c" + i, t);
        td.setAttribute("data-label", COLUMNS[i]);      // the heading, shown beside the value on phones
        tr.appendChild(td);
      });
      return tr;
    }));
  }

  function render(doc) {
    var pipes = Array.isArray(doc.pipelines) ? doc.pipelines : [];
    var times = Array.isArray(doc.times_ms) ? doc.times_ms : [];
    $("banner").hidden = true;
    $("empty").hidden = pipes.length > 0;
    if (!pipes.length) {
      var st = doc.consumer && doc.consumer.state;
      $("empty-hint").textContent = st === "waiting_for_topic" ? "The topic " + doc.topic + " does not exist yet: start the app's workers (with metrics on)." :
        st === "waiting_for_kafka" ? "Waiting for Kafka…" : "No worker has published a snapshot on " + doc.topic + " in the last 5 minutes.";
    }
    var seen = {};
    pipes.forEach(function (p) { seen[p.name] = true; renderPipeline(p, times); });
    Object.keys(cards).forEach(function (n) {
      if (!seen[n]) {
        if (charts[n]) { charts[n].tp.destroy(); charts[n].lat.destroy(); }
        cards[n].remove(); delete cards[n]; delete charts[n];
      }
    });
    var ws = Array.isArray(doc.workers) ? doc.workers : [];
    $("workers-card").hidden = ws.length === 0;
    renderWorkers(ws, doc.now_ms);
    $("updated").textContent = "updated " + new Date(doc.now_ms).toLocaleTimeString("en-GB");
    var r = doc.records || {}, sk = r.skipped || {};
    var bad = (sk.malformed || 0) + (sk.out_of_order || 0) + (sk.too_many_workers || 0);
    $("records").textContent = (r.applied || 0).toLocaleString("en-US") + " snapshots read" +
      (bad ? ", " + bad.toLocaleString("en-US") + " skipped" : "");
    if (r.last_skip) $("records").title = "last skipped: " + r.last_skip;
    document.body.setAttribute("data-updates", String((+document.body.getAttribute("data-updates") || 0) + 1));
  }

  function poll() {
    fetch(API, { cache: "no-store", headers: { Accept: "application/json" } })
      .then(function (r) { if (!r.ok) throw new Error("HTTP " + r.status); return r.json(); })
      .then(render)
      .catch(function () { $("banner").hidden = false; })
      .then(function () { setTimeout(poll, POLL_MS); });
  }

  var resizeTimer = null;
  window.addEventListener("resize", function () {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(function () {
      Object.keys(charts).forEach(function (n) {
        if (!cards[n]) return;
        var w = chartWidth(cards[n]);
        charts[n].tp.setSize({ width: w, height: 220 });
        charts[n].lat.setSize({ width: w, height: 220 });
      });
    }, 150);
  });
  poll();
})();
