/* Helpers shared by the dashboard's pages (index: app.js and search.js; pipeline: pipeline.js), as
 * window.StarLeaders.  Every string from the data is untrusted (the public archive, a topic anyone on
 * the broker can write): it reaches the DOM only through textContent / setAttribute on elements built
 * here (never innerHTML), and URLs become links only when they point at https://github.com/.
 */
window.StarLeaders = (function () {
  "use strict";

  var SVG_NS = "http://www.w3.org/2000/svg";
  var GITHUB = "https://github.com/";
  var REPO_RE = /^[A-Za-z0-9_.-]+\/[A-Za-z0-9_.-]+$/;
  var ISO_RE = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})$/;
  var HOUR_MS = 3600 * 1000;

  function $(id) { return document.getElementById(id); }

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }

  function svgEl(tag, attrs) {
    var e = document.createElementNS(SVG_NS, tag);
    for (var k in attrs) if (Object.prototype.hasOwnProperty.call(attrs, k)) e.setAttribute(k, String(attrs[k]));
    return e;
  }

  function str(v) { return typeof v === "string" ? v : ""; }
  function int(v) { return typeof v === "number" && isFinite(v) ? Math.max(0, Math.floor(v)) : 0; }

  /* A link only for https://github.com/...; anything else (javascript:, data:, http:) is plain text. */
  function safeUrl(u) {
    return typeof u === "string" && u.indexOf(GITHUB) === 0 && !/[\s\u0000-\u001f\u007f]/.test(u) ? u : null;
  }

  function linkOrText(url, text, cls) {
    var safe = safeUrl(url);
    var e = el(safe ? "a" : "span", cls, text);
    if (safe) {
      e.href = safe;
      e.target = "_blank";
      e.rel = "noopener noreferrer";
    }
    return e;
  }

  function parseTime(s) {
    if (typeof s !== "string" || !ISO_RE.test(s)) return null;
    var t = Date.parse(s);
    return isNaN(t) ? null : t;
  }

  function pad(n) { return (n < 10 ? "0" : "") + n; }
  function fmtDate(ms) {
    var d = new Date(ms);
    return d.getUTCFullYear() + "-" + pad(d.getUTCMonth() + 1) + "-" + pad(d.getUTCDate());
  }
  function fmtHM(ms) { var d = new Date(ms); return pad(d.getUTCHours()) + ":" + pad(d.getUTCMinutes()); }
  function fmtHMS(ms) { return fmtHM(ms) + ":" + pad(new Date(ms).getUTCSeconds()); }
  function floorHour(ms) { return Math.floor(ms / HOUR_MS) * HOUR_MS; }
  function fmtNum(n) { return int(n).toLocaleString("en-US"); }

  function fmtAgo(ms) {
    var s = Math.max(0, Math.round(ms / 1000));
    if (s < 60) return s <= 1 ? "just now" : s + " s ago";
    var m = Math.round(s / 60);
    if (m < 60) return m + " min ago";
    var h = Math.round(m / 60);
    if (h < 48) return h + " h ago";
    return Math.round(h / 24) + " d ago";
  }

  function icon(kind) {
    var s = svgEl("svg", { viewBox: "0 0 16 16", width: 16, height: 16, "class": "icon icon-" + kind, "aria-hidden": "true" });
    var paths = kind === "fork"
      ? ["M5 2.75a1.25 1.25 0 1 1-2.5 0 1.25 1.25 0 0 1 2.5 0z", "M13.5 2.75a1.25 1.25 0 1 1-2.5 0 1.25 1.25 0 0 1 2.5 0z",
         "M9.25 13.25a1.25 1.25 0 1 1-2.5 0 1.25 1.25 0 0 1 2.5 0z", "M3.75 4v1.25c0 .97.78 1.75 1.75 1.75h5c.97 0 1.75-.78 1.75-1.75V4", "M8 7v4.75"]
      : ["M5 3a1.25 1.25 0 1 1-2.5 0A1.25 1.25 0 0 1 5 3z", "M5 13a1.25 1.25 0 1 1-2.5 0A1.25 1.25 0 0 1 5 13z",
         "M13.5 13a1.25 1.25 0 1 1-2.5 0 1.25 1.25 0 0 1 2.5 0z", "M3.75 4.25v7.5", "M12.25 11.75V6.5c0-1.1-.9-2-2-2H7.5", "M9 2.75 7.25 4.5 9 6.25"];
    paths.forEach(function (d) { s.appendChild(svgEl("path", { d: d })); });
    return s;
  }

  /* "owner/name" as a GitHub link (plain text when it is not a GitHub-shaped name). */
  function repoCell(repo) {
    var cell = el("div", "repo");
    var valid = REPO_RE.test(repo);
    var target = valid ? el("a", "repo-link") : el("span", "repo-link");
    if (valid) {
      target.href = GITHUB + repo;
      target.target = "_blank";
      target.rel = "noopener noreferrer";
      var slash = repo.indexOf("/");
      target.appendChild(el("span", "repo-owner", repo.slice(0, slash + 1)));
      target.appendChild(document.createElement("wbr"));   // narrow screens wrap after the slash
      target.appendChild(el("span", "repo-name", repo.slice(slash + 1)));
    } else {
      target.textContent = repo;
    }
    target.title = repo;
    cell.appendChild(target);
    return cell;
  }

  /* One fork or pull request; `nowMs` (event time, or null) makes its time relative ("5 min ago"). */
  function eventItem(ev, nowMs) {
    var type = str(ev.type);
    var kind = type === "ForkEvent" ? "fork" : type === "PullRequestEvent" ? "pr" : "other";
    var li = el("li", "event event-" + kind);
    li.appendChild(kind === "other" ? el("span", "icon icon-other", "\u2022") : icon(kind));
    var text = el("span", "event-text");
    text.appendChild(el("span", "actor", str(ev.actor) || "someone"));
    if (kind === "fork") {
      text.appendChild(document.createTextNode(" forked to "));
      text.appendChild(linkOrText(ev.url, str(ev.name) || str(ev.url) || "a fork", "event-link"));
    } else if (kind === "pr") {
      var action = str(ev.action) || "updated";
      text.appendChild(document.createTextNode(" " + action + " "));
      var num = typeof ev.number === "number" ? "#" + int(ev.number) : "a pull request";
      text.appendChild(linkOrText(ev.url, num, "event-link"));
      if (str(ev.title)) {
        text.appendChild(document.createTextNode(" "));
        var title = el("span", "pr-title", ev.title);
        title.title = ev.title;
        text.appendChild(title);
      }
    } else {
      text.appendChild(document.createTextNode(" " + (type || "event")));
      if (safeUrl(ev.url)) {
        text.appendChild(document.createTextNode(" "));
        text.appendChild(linkOrText(ev.url, "view", "event-link"));
      }
    }
    li.appendChild(text);
    var at = parseTime(ev.created_at);
    if (at !== null) {
      var tm = el("time", "event-time", nowMs !== null && nowMs !== undefined ? fmtAgo(nowMs - at) : fmtHM(at) + " UTC");
      tm.setAttribute("datetime", new Date(at).toISOString());
      tm.title = fmtDate(at) + " " + fmtHMS(at) + " UTC (archive time)";
      li.appendChild(tm);
    }
    return li;
  }

  return {
    GITHUB: GITHUB, REPO_RE: REPO_RE, HOUR_MS: HOUR_MS,
    $: $, el: el, svgEl: svgEl, str: str, int: int, safeUrl: safeUrl, linkOrText: linkOrText, parseTime: parseTime,
    pad: pad, fmtDate: fmtDate, fmtHM: fmtHM, fmtHMS: fmtHMS, floorHour: floorHour, fmtNum: fmtNum, fmtAgo: fmtAgo,
    icon: icon, repoCell: repoCell, eventItem: eventItem
  };
})();
