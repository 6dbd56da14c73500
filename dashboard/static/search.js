/* The repository search box and card of the live page (shown when the dashboard has --query).
 *
 * Typing asks GET /api/repos?prefix=... (debounced; only the latest answer is shown) for completions
 * over the repositories with stars, forks or pull requests in the window, as the workers' state holds
 * them.  Picking one (click, Enter, arrows) shows its card from GET /api/repos/<owner>/<name>, asked
 * again every POLL_MS while it is shown and the page is visible, so it stays live like the leaders.
 * 503 (partitions moving) and 429 keep the last card, marked stale, and retry after Retry-After.
 * Names and events are untrusted: they reach the DOM through common.js's builders (textContent only).
 */
(function () {
  "use strict";

  var SL = window.StarLeaders;
  var $ = SL.$, el = SL.el, svgEl = SL.svgEl, str = SL.str, int = SL.int, fmtNum = SL.fmtNum;
  if (!$("lookup")) return;

  var POLL_MS = 2000;
  var DEBOUNCE_MS = 150;
  var NAME_MAX = 200;
  var hours = parseInt(document.body.getAttribute("data-window-hours"), 10) || 24;
  var recentMax = parseInt(document.body.getAttribute("data-recent-events"), 10) || 3;

  var input = $("search-input"), list = $("search-list"), msg = $("search-msg"), card = $("card");
  var items = [];          // completions shown: [{repo, stars}]
  var active = -1;         // highlighted completion
  var typed = 0;           // sequence number of completion requests: only the latest is shown
  var shown = null;        // repository whose card is shown
  var looked = 0;          // sequence number of card requests
  var timer = null, debounce = null;

  /* A name the server may accept: owner/name, no spaces or control characters, no "." / ".." part
     (the browser would resolve those in the URL). */
  function plausible(name) {
    var parts = name.split("/");
    return name.length <= NAME_MAX && parts.length === 2 && parts.every(function (p) {
      return p && p !== "." && p !== ".." && !/[\s\u0000-\u001f\u007f]/.test(p);
    });
  }

  function say(text, kind) {
    msg.textContent = text || "";
    msg.hidden = !text;
    msg.setAttribute("data-kind", kind || "info");
  }

  function fetchJson(url) {
    return fetch(url, { headers: { "Accept": "application/json" }, cache: "no-store" }).then(function (r) {
      var retry = parseInt(r.headers.get("Retry-After"), 10);
      return r.json().catch(function () { return {}; }).then(function (body) {
        return { status: r.status, body: body, retryMs: (isFinite(retry) && retry > 0 ? Math.min(retry, 30) : 1) * 1000 };
      });
    });
  }

  /* ---------- completions ---------- */

  function closeList() {
    list.hidden = true;
    list.replaceChildren();
    items = [];
    active = -1;
    input.setAttribute("aria-expanded", "false");
    input.removeAttribute("aria-activedescendant");
  }

  function renderList(prefix, repos) {
    items = repos;
    active = -1;
    var frag = document.createDocumentFragment();
    repos.forEach(function (c, i) {
      var li = el("li", "completion");
      li.id = "search-opt-" + i;
      li.setAttribute("role", "option");
      li.setAttribute("data-repo", c.repo);
      li.appendChild(el("span", "completion-repo", c.repo));
      li.appendChild(el("span", "completion-stars", c.stars ? fmtNum(c.stars) + " \u2605" : "no stars"));
      li.addEventListener("mousedown", function (e) { e.preventDefault(); pick(c.repo); });
      frag.appendChild(li);
    });
    if (!repos.length) {
      var none = el("li", "completion completion-none", "No repository starting with \u201C" + prefix + "\u201D in the last " + hours + " h");
      none.setAttribute("aria-disabled", "true");
      frag.appendChild(none);
    }
    list.replaceChildren(frag);
    list.hidden = false;
    input.setAttribute("aria-expanded", "true");
  }

  function highlight(i) {
    var opts = list.querySelectorAll("li[role=option]");
    if (!opts.length) return;
    active = (i + opts.length) % opts.length;
    opts.forEach(function (o, j) { o.setAttribute("aria-selected", j === active ? "true" : "false"); });
    input.setAttribute("aria-activedescendant", opts[active].id);
    opts[active].scrollIntoView({ block: "nearest" });
  }

  function complete() {
    var prefix = input.value.trim();
    var seq = ++typed;
    if (!prefix) { closeList(); return; }
    if (/\s/.test(prefix) || prefix.length > 100) { closeList(); say("A repository name has no spaces.", "error"); return; }
    fetchJson("/api/repos?prefix=" + encodeURIComponent(prefix)).then(function (r) {
      if (seq !== typed) return;                     // typed on since: a newer answer is coming
      if (r.status === 200 && r.body && Array.isArray(r.body.repos)) {
        var repos = r.body.repos.filter(function (c) { return c && typeof c.repo === "string"; }).slice(0, 10);
        renderList(prefix, repos.map(function (c) { return { repo: c.repo, stars: int(c.stars) }; }));
        say("");
      } else {
        closeList();
        say(r.status === 503 ? "The workers are moving partitions; completions are back in a moment." :
            r.status === 429 ? "Too many lookups at once; slow down a little." :
            str(r.body && r.body.error) || "No completions (" + r.status + ").", "warn");
      }
    }).catch(function () { if (seq === typed) { closeList(); say("The dashboard server does not answer.", "warn"); } });
  }

  input.addEventListener("input", function () {
    clearTimeout(debounce);
    debounce = setTimeout(complete, DEBOUNCE_MS);
  });
  input.addEventListener("keydown", function (e) {
    if (e.key === "ArrowDown" || e.key === "ArrowUp") {
      if (list.hidden) return;
      e.preventDefault();
      highlight(active + (e.key === "ArrowDown" ? 1 : -1));
    } else if (e.key === "Escape") {
      closeList();
    } else if (e.key === "Enter" && active >= 0 && items[active]) {
      e.preventDefault();
      pick(items[active].repo);
    }
  });
  input.addEventListener("blur", function () { setTimeout(closeList, 100); });
  $("search").addEventListener("submit", function (e) {
    e.preventDefault();
    var name = input.value.trim();
    if (items.length && active < 0 && items[0].repo.toLowerCase() === name.toLowerCase()) name = items[0].repo;
    pick(name);
  });

  /* ---------- the card ---------- */

  function pick(repo) {
    closeList();
    ++typed;                                 // an answer to earlier typing must not reopen the list
    input.value = repo;
    if (!plausible(repo)) {
      say("\u201C" + repo + "\u201D is not a repository name: it is owner/name, as in torvalds/linux.", "error");
      return;
    }
    say("");
    if (shown !== repo) card.replaceChildren();
    shown = repo;
    card.hidden = false;
    card.setAttribute("data-repo", repo);
    card.setAttribute("data-state", "loading");
    if (!card.childNodes.length) card.appendChild(el("p", "card-loading", "Asking the workers about " + repo + "\u2026"));
    lookUp();
  }

  function schedule(ms) {
    clearTimeout(timer);
    timer = setTimeout(lookUp, ms);
  }

  function lookUp() {
    clearTimeout(timer);
    if (shown === null) return;
    if (document.hidden) { schedule(POLL_MS); return; }     // resumes on visibilitychange
    var repo = shown, seq = ++looked;
    var i = repo.indexOf("/");
    fetchJson("/api/repos/" + encodeURIComponent(repo.slice(0, i)) + "/" + encodeURIComponent(repo.slice(i + 1)))
      .then(function (r) {
        if (seq !== looked || repo !== shown) return;
        if (r.status === 200) {
          renderCard(r.body);
          schedule(POLL_MS);
        } else if (r.status === 400) {
          closeCard();
          say(str(r.body && r.body.error) ? "\u201C" + repo + "\u201D: " + r.body.error + "." : "Not a repository name.", "error");
        } else {
          stale(r.status === 503 ? "The workers are moving partitions (a worker left or joined); retrying\u2026"
                : r.status === 429 ? "Too many lookups; retrying in a moment\u2026"
                : "The lookup failed (" + r.status + "); retrying\u2026");
          schedule(r.retryMs);
        }
      })
      .catch(function () {
        if (seq !== looked || repo !== shown) return;
        stale("The dashboard server does not answer; retrying\u2026");
        schedule(POLL_MS);
      });
  }

  function stale(text) {
    card.setAttribute("data-state", "stale");
    var note = card.querySelector(".card-status");
    if (!note) { card.replaceChildren(); note = el("p", "card-status"); card.appendChild(note); }
    note.textContent = text;
  }

  function closeCard() {
    shown = null;
    ++looked;
    clearTimeout(timer);
    card.hidden = true;
    card.replaceChildren();
    card.removeAttribute("data-repo");
  }

  function stat(label, value, note, cls) {
    var s = el("div", "card-stat" + (cls ? " " + cls : ""));
    s.appendChild(el("span", "stat-label", label));
    s.appendChild(el("span", "card-value", value));
    if (note) s.appendChild(el("span", "stat-note", note));
    return s;
  }

  /* 24 bars, oldest first, with the hours under the first, middle and last ones. */
  function bars(hourly, endMs, repo) {
    var v = Array.isArray(hourly) ? hourly.slice(-hours).map(int) : [];
    while (v.length < hours) v.unshift(0);
    var W = 480, H = 96, B = 16, gap = 2;
    var bw = (W - gap * (hours - 1)) / hours, max = Math.max(1, Math.max.apply(null, v));
    var last = endMs === null ? null : SL.floorHour(endMs);
    function start(i) { return last === null ? null : last - (hours - 1 - i) * SL.HOUR_MS; }
    var s = svgEl("svg", { viewBox: "0 0 " + W + " " + (H + B), "class": "bars", role: "img", preserveAspectRatio: "none",
                           "aria-label": "Stars per hour over the last " + hours + " h for " + repo + ": " + v.join(", ") });
    v.forEach(function (n, i) {
      var h = n ? Math.max(2, (n / max) * (H - 4)) : 0;
      var r = svgEl("rect", { x: (i * (bw + gap)).toFixed(1), y: (H - h).toFixed(1), width: bw.toFixed(1), height: h.toFixed(1),
                              "class": "bar" + (i === hours - 1 ? " bar-now" : ""), "data-stars": n });
      var t = svgEl("title", {});
      var at = start(i);
      t.textContent = (at === null ? (hours - 1 - i) + " h before the latest hour" : SL.fmtHM(at) + "\u2013" + SL.fmtHM(at + SL.HOUR_MS - 60000) + " UTC") +
        ": " + fmtNum(n) + (n === 1 ? " star" : " stars");
      r.appendChild(t);
      s.appendChild(r);
      // a hit area the full height, so short bars have a tooltip too
      var hit = svgEl("rect", { x: (i * (bw + gap)).toFixed(1), y: 0, width: bw.toFixed(1), height: H, "class": "bar-hit" });
      hit.appendChild(t.cloneNode(true));
      s.appendChild(hit);
    });
    s.appendChild(svgEl("line", { x1: 0, x2: W, y1: H + 0.5, y2: H + 0.5, "class": "bars-base" }));
    return s;
  }

  function axis(endMs) {
    var a = el("div", "bars-axis");
    if (endMs === null) return a;
    var last = SL.floorHour(endMs);
    [hours - 1, Math.floor((hours - 1) / 2), 0].forEach(function (back) {
      a.appendChild(el("span", null, SL.fmtHM(last - back * SL.HOUR_MS)));
    });
    return a;
  }

  function renderCard(c) {
    if (!c || typeof c !== "object") return;
    var repo = str(c.repo) || shown;
    var stars = int(c.stars);
    var hourly = Array.isArray(c.hourly) ? c.hourly : [];
    var asOf = c.as_of && typeof c.as_of === "object" ? c.as_of : {};
    var endMs = SL.parseTime(asOf.window_end);
    var frag = document.createDocumentFragment();

    var head = el("header", "card-head");
    head.appendChild(SL.repoCell(repo));
    var close = el("button", "card-close", "\u00D7");
    close.type = "button";
    close.title = "Close";
    close.setAttribute("aria-label", "Close the card of " + repo);
    close.addEventListener("click", closeCard);
    head.appendChild(close);
    frag.appendChild(head);

    var stats = el("div", "card-stats");
    stats.appendChild(stat("Stars, last " + hours + " h", fmtNum(stars), null, "card-stars"));
    var rank = typeof c.rank === "number" && c.rank >= 1 ? "#" + fmtNum(c.rank) : "\u2014";
    var rs = stat("Rank", rank, stars ? "among all starred repositories" : "needs a star in the window", "card-rank");
    rs.title = "1 + the repositories with more stars (or as many and a smaller name), counted in every state partition";
    stats.appendChild(rs);
    stats.appendChild(stat("Latest hour", fmtNum(hourly.length ? hourly[hourly.length - 1] : 0),
                           endMs === null ? null : "since " + SL.fmtHM(SL.floorHour(endMs)) + " UTC"));
    var asOfNote = "checkpoint " + fmtNum(asOf.checkpoint);
    stats.appendChild(stat("As of", endMs === null ? "\u2014" : SL.fmtDate(endMs) + " " + SL.fmtHMS(endMs) + " UTC", asOfNote, "card-asof"));
    frag.appendChild(stats);

    if (!stars) {
      frag.appendChild(el("p", "card-empty", "No stars in the last " + hours + " h" +
                          (endMs === null ? "." : " (up to " + SL.fmtDate(endMs) + " " + SL.fmtHM(endMs) + " UTC, archive time).") +
                          " The card fills in by itself when one arrives."));
    } else {
      var chart = el("div", "card-chart");
      chart.appendChild(el("span", "stat-label", "Stars per hour"));
      chart.appendChild(bars(hourly, endMs, repo));
      chart.appendChild(axis(endMs));
      frag.appendChild(chart);
    }

    var events = Array.isArray(c.recent_events) ? c.recent_events.slice(0, recentMax) : [];
    var ev = el("div", "card-events");
    ev.appendChild(el("span", "stat-label", "Latest forks & pull requests"));
    var ul = el("ul", "events");
    events.forEach(function (e) { if (e && typeof e === "object") ul.appendChild(SL.eventItem(e, endMs)); });
    if (!ul.childNodes.length) ul.appendChild(el("li", "event event-none", "None in the window."));
    ev.appendChild(ul);
    frag.appendChild(ev);

    var foot = el("p", "card-status", "Live: asked again every " + POLL_MS / 1000 + " s");
    frag.appendChild(foot);
    card.replaceChildren(frag);
    card.setAttribute("data-state", "live");
    card.setAttribute("data-stars", String(stars));
  }

  document.addEventListener("visibilitychange", function () { if (!document.hidden && shown !== null) lookUp(); });
})();
