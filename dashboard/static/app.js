/* Star Leaders live page.
 *
 * Data arrives over server-sent events from /stream ("leaders" on change, "health" every ~1.5 s);
 * EventSource reconnects by itself.  Every string in the data comes from the public GitHub archive
 * and is untrusted: it reaches the DOM only through common.js's builders (textContent, never innerHTML).
 * The repository search box and card are search.js.
 */
(function () {
  "use strict";

  var SL = window.StarLeaders;            // common.js
  var $ = SL.$, el = SL.el, svgEl = SL.svgEl, str = SL.str, int = SL.int, parseTime = SL.parseTime, pad = SL.pad;
  var fmtDate = SL.fmtDate, fmtHM = SL.fmtHM, fmtHMS = SL.fmtHMS, floorHour = SL.floorHour, fmtNum = SL.fmtNum;
  var fmtAgo = SL.fmtAgo, HOUR_MS = SL.HOUR_MS;

  // The server writes its settings and the leaderboard's shape (stack_contract) on <body>.
  var body = document.body;
  var cfg = {
    topic: body.getAttribute("data-topic"),
    sourceTopic: body.getAttribute("data-source-topic"),
    group: body.getAttribute("data-group"),
    kafka: body.getAttribute("data-kafka") || "",
    expectedWorkers: parseInt(body.getAttribute("data-expected-workers"), 10) || null,
    topN: parseInt(body.getAttribute("data-top-n"), 10),
    hours: parseInt(body.getAttribute("data-window-hours"), 10),
    recentEvents: parseInt(body.getAttribute("data-recent-events"), 10)
  };

  var state = {
    leaders: [],
    eventTime: null,          // ms since epoch, or null
    health: null,
    healthAt: 0,              // Date.now() when health arrived
    streamOpen: false,
    prevRanks: null,          // Map repo -> rank of the previous non-empty render
    source: null
  };

  function fmtRate(v) {
    if (typeof v !== "number" || !isFinite(v)) return "\u2014";
    if (v > 0 && v < 10) return v.toFixed(1);
    return Math.round(v).toLocaleString("en-US");
  }

  /* ---------- sparkline ---------- */

  function sparkline(hourly, repo) {
    var W = 168, H = 40, P = 3;
    var last = cfg.hours - 1;   // index of the latest hour
    var v = Array.isArray(hourly) ? hourly.slice(-cfg.hours).map(int) : [];
    while (v.length < cfg.hours) v.unshift(0);
    var max = Math.max.apply(null, v), scale = Math.max(1, max);
    var x = function (i) { return P + i * (W - 2 * P) / last; };
    var y = function (n) { return H - P - (n / scale) * (H - 2 * P - 2); };
    var line = v.map(function (n, i) { return (i ? "L" : "M") + x(i).toFixed(1) + " " + y(n).toFixed(1); }).join(" ");
    var area = line + " L" + x(last).toFixed(1) + " " + (H - P) + " L" + x(0).toFixed(1) + " " + (H - P) + " Z";

    var peak = v.indexOf(max);
    var lastHour = state.eventTime === null ? null : floorHour(state.eventTime);
    function hourLabel(i) {
      if (lastHour === null) return (last - i) ? (last - i) + " h before the latest hour" : "latest hour";
      var start = lastHour - (last - i) * HOUR_MS;
      return fmtHM(start) + "\u2013" + fmtHM(start + HOUR_MS - 60000) + " UTC";
    }
    var summary = "Stars per hour over the last " + cfg.hours + " h for " + repo + ": peak " + fmtNum(max) +
      (max > 0 ? " (" + hourLabel(peak) + ")" : "") + ", latest hour " + fmtNum(v[last]);

    var s = svgEl("svg", { viewBox: "0 0 " + W + " " + H, "class": "spark", role: "img",
                           preserveAspectRatio: "none", "aria-label": summary });
    var t = svgEl("title", {}); t.textContent = summary; s.appendChild(t);
    s.appendChild(svgEl("line", { x1: P, x2: W - P, y1: H - P + 0.5, y2: H - P + 0.5, "class": "spark-base" }));
    s.appendChild(svgEl("path", { d: area, "class": "spark-area" }));
    s.appendChild(svgEl("path", { d: line, "class": "spark-line" }));
    // the latest hour as a dot: a zero-length round-capped stroke stays round when the chart stretches
    s.appendChild(svgEl("path", { d: "M" + x(last).toFixed(1) + " " + y(v[last]).toFixed(1) + " l0.01 0", "class": "spark-dot" }));
    // one invisible column per hour, each with its own tooltip
    var colW = (W - 2 * P) / last;
    v.forEach(function (n, i) {
      var r = svgEl("rect", { x: Math.max(0, x(i) - colW / 2), y: 0, width: colW, height: H, "class": "spark-hit" });
      var tt = svgEl("title", {}); tt.textContent = hourLabel(i) + ": " + fmtNum(n) + (n === 1 ? " star" : " stars");
      r.appendChild(tt);
      s.appendChild(r);
    });
    return s;
  }

  /* ---------- one leader ---------- */

  function leaderItem(ld, rank) {
    var repo = str(ld.repo);
    var li = el("li", "leader");
    li.setAttribute("data-repo", repo);

    var rankCell = el("div", "rank");
    rankCell.appendChild(el("span", "rank-num", rank));
    if (state.prevRanks) {
      var before = state.prevRanks.get(repo);
      var move = null;
      if (before === undefined) move = ["new", "new"];
      else if (before > rank) move = ["up", "\u25B2" + (before - rank)];
      else if (before < rank) move = ["down", "\u25BC" + (rank - before)];
      if (move) {
        var badge = el("span", "move move-" + move[0], move[1]);
        badge.title = move[0] === "new" ? "new in the top " + cfg.topN : "was #" + before;
        rankCell.appendChild(badge);
        if (move[0] !== "down") li.classList.add("changed");   // flash risers and newcomers only
      }
    }
    li.appendChild(rankCell);
    li.appendChild(SL.repoCell(repo));

    var events = Array.isArray(ld.recent_events) ? ld.recent_events.slice(0, cfg.recentEvents) : [];
    var list = el("ul", "events");
    events.forEach(function (ev) { if (ev && typeof ev === "object") list.appendChild(SL.eventItem(ev, state.eventTime)); });
    if (!list.childNodes.length) list.appendChild(el("li", "event event-none", "No forks or pull requests in the window yet."));
    li.appendChild(list);

    var spark = el("div", "trend");
    spark.appendChild(sparkline(ld.hourly, repo));
    li.appendChild(spark);

    var stars = el("div", "stars");
    stars.appendChild(el("span", "stars-count", fmtNum(ld.stars)));
    stars.appendChild(el("span", "stars-unit", "\u2605 in " + cfg.hours + " h"));
    li.appendChild(stars);
    return li;
  }

  /* ---------- whole page ---------- */

  function renderLeaders(data) {
    if (!data || typeof data !== "object") return;
    var leaders = Array.isArray(data.leaders) ? data.leaders.filter(function (l) {
      return l && typeof l === "object" && typeof l.repo === "string";
    }).slice(0, cfg.topN) : [];
    state.eventTime = parseTime(data.event_time);
    state.leaders = leaders;
    renderClock();

    var list = $("leaders");
    var frag = document.createDocumentFragment();
    leaders.forEach(function (ld, i) { frag.appendChild(leaderItem(ld, i + 1)); });
    list.replaceChildren(frag);
    var has = leaders.length > 0;
    list.hidden = !has;
    $("columns").hidden = !has;
    $("empty").hidden = has;
    if (has) {
      var ranks = new Map();
      leaders.forEach(function (ld, i) { ranks.set(ld.repo, i + 1); });
      state.prevRanks = ranks;
    }
    renderHint();
  }

  function renderClock() {
    var c = $("clock");
    if (state.eventTime === null) {
      c.setAttribute("data-state", "empty");
      $("clock-hour").textContent = "\u2014";
      $("clock-hour").removeAttribute("datetime");
      $("clock-sub").textContent = "waiting for the stream";
      return;
    }
    var hour = floorHour(state.eventTime);
    c.setAttribute("data-state", "live");
    $("clock-hour").textContent = fmtDate(hour) + " " + fmtHM(hour) + " UTC";
    $("clock-hour").setAttribute("datetime", new Date(hour).toISOString());
    $("clock-sub").textContent = "archive time " + fmtHMS(state.eventTime) + " UTC";
  }

  function setNote(id, parts) {
    // parts: strings, or {code: "..."} for monospace names
    var n = $(id);
    n.replaceChildren();
    parts.forEach(function (p) { n.appendChild(typeof p === "string" ? document.createTextNode(p) : el("code", null, p.code)); });
  }

  function renderHealth() {
    var h = state.health || {};
    var dot = $("h-dot");
    var label;
    if (!state.streamOpen) { dot.setAttribute("data-state", "unknown"); label = "dashboard offline"; }
    else if (h.kafka_connected === true) { dot.setAttribute("data-state", "ok"); label = "connected"; }
    else if (h.kafka_connected === false) { dot.setAttribute("data-state", "down"); label = "unreachable"; }
    else { dot.setAttribute("data-state", "unknown"); label = "checking…"; }
    $("h-kafka").textContent = label;
    $("stat-kafka").title = str(h.error);
    var since = state.streamOpen && h.kafka_connected === false ? parseTime(h.kafka_unreachable_since) : null;
    var checked = parseTime(h.checked_at);
    $("h-kafka-note").textContent = since !== null && checked !== null
      ? "no answer for " + fmtDuration(checked - since + (Date.now() - state.healthAt))
      : cfg.kafka;
    renderWorkers(h);

    $("h-in").textContent = fmtRate(h.events_in_per_s);
    $("h-out").textContent = fmtRate(h.events_out_per_s);
    if (typeof h.consumer_lag === "number") {
      $("h-lag").textContent = fmtNum(h.consumer_lag);
      setNote("h-lag-note", ["events behind \u00B7 ", { code: cfg.group }]);
    } else {
      $("h-lag").textContent = "\u2014";
      setNote("h-lag-note", [h.source_topic_exists === false ? "no " : "no commits yet \u00B7 ",
                             { code: h.source_topic_exists === false ? cfg.sourceTopic : cfg.group },
                             h.source_topic_exists === false ? " topic yet" : ""]);
    }
    renderUpdated();
    renderHint();
  }

  /* Members of the workers' consumer group against the number the stack runs: a worker in a crash
     loop (restarted again and again by the stack's supervisor) shows here as missing. */
  function renderWorkers(h) {
    var dot = $("h-workers-dot"), card = $("stat-workers");
    var n = state.streamOpen && h.kafka_connected === true && typeof h.workers === "number" ? int(h.workers) : null;
    var expected = typeof h.expected_workers === "number" ? int(h.expected_workers) : cfg.expectedWorkers;
    var names = Array.isArray(h.worker_names) ? h.worker_names.filter(function (x) { return typeof x === "string"; }) : [];
    var st = n === null ? "unknown" : !expected ? (n > 0 ? "ok" : "unknown") : n >= expected ? "ok" : n > 0 ? "warn" : "down";
    dot.setAttribute("data-state", st);
    card.setAttribute("data-state", st);
    $("h-workers").textContent = n === null ? "\u2014" : expected ? n + " / " + expected : String(n);
    if (n !== null && expected && n < expected) {
      setNote("h-workers-note", [(expected - n) + " missing \u00B7 restarting?"]);
    } else if (n !== null && names.length) {
      setNote("h-workers-note", [names.join(" \u00B7 ")]);
    } else {
      setNote("h-workers-note", ["in ", { code: cfg.group }]);
    }
    card.title = "consumer group " + cfg.group + (h.group_state ? " (" + str(h.group_state) + ")" : "") +
      (names.length ? ": " + names.join(", ") : "");
  }

  function fmtDuration(ms) {
    var s = Math.max(0, Math.round(ms / 1000));
    if (s < 60) return s + " s";
    var m = Math.floor(s / 60);
    if (m < 60) return m + " min " + pad(s % 60) + " s";
    return Math.floor(m / 60) + " h " + pad(m % 60) + " min";
  }

  function renderUpdated() {
    var h = state.health;
    var u = $("updated");
    var last = h && parseTime(h.last_update), checked = h && parseTime(h.checked_at);
    if (!last || !checked || !state.leaders.length) { u.textContent = ""; return; }
    var age = Math.max(0, checked - last) + (Date.now() - state.healthAt);
    var refused = int(h.malformed_records);
    u.textContent = "updated " + fmtAgo(age) + (refused ? " \u00B7 " + fmtNum(refused) + " bad record" + (refused === 1 ? "" : "s") + " refused" : "");
    u.title = "star_leaders last wrote to \u201C" + cfg.topic + "\u201D at " + fmtDate(last) + " " + fmtHMS(last) + " UTC" +
      (refused ? "; last refused: " + str(h.last_malformed) : "");
  }

  function renderHint() {
    if (state.leaders.length) return;
    var h = state.health;
    var hint;
    if (!state.streamOpen && !h) hint = "Connecting to the dashboard server…";
    else if (!state.streamOpen) hint = "Lost the connection to the dashboard server — reconnecting…";
    else if (!h || h.kafka_connected === null || h.kafka_connected === undefined) hint = "Checking Kafka at " + cfg.kafka + "…";
    else if (h.kafka_connected === false || h.consumer_state === "waiting_for_kafka")
      hint = "Waiting for Kafka at " + cfg.kafka + " to answer. The page keeps retrying and fills in by itself.";
    else if (h.consumer_state === "waiting_for_topic")
      hint = "Kafka is up, but the \u201C" + cfg.topic + "\u201D topic does not exist yet. It appears once the star_leaders app starts writing (make start).";
    else {
      hint = "Connected and reading \u201C" + cfg.topic + "\u201D. The leaders show up as soon as star_leaders commits its first window.";
      if (h.malformed_records) hint += " " + fmtNum(h.malformed_records) + " malformed record(s) skipped so far.";
    }
    $("empty-hint").textContent = hint;
  }

  /* ---------- live connection ---------- */

  function setStream(open) {
    state.streamOpen = open;
    $("banner").hidden = open || !state.everOpen;
    if (open) state.everOpen = true;
    renderHealth();
  }

  function connect() {
    if (!window.EventSource) {
      $("empty-hint").textContent = "This browser cannot receive live updates (no EventSource support).";
      return;
    }
    var es = new EventSource("/stream");
    state.source = es;
    es.addEventListener("open", function () { setStream(true); });
    es.addEventListener("error", function () {
      setStream(false);
      if (es.readyState === EventSource.CLOSED) {   // server refused (e.g. busy): retry ourselves
        setTimeout(connect, 5000);
      }
    });
    es.addEventListener("leaders", function (e) {
      try { renderLeaders(JSON.parse(e.data)); } catch (err) { if (window.console) console.error(err); }
    });
    es.addEventListener("health", function (e) {
      try {
        state.health = JSON.parse(e.data);
        state.healthAt = Date.now();
        renderHealth();
      } catch (err) { if (window.console) console.error(err); }
    });
  }

  setInterval(renderUpdated, 1000);
  renderHint();
  connect();
})();
