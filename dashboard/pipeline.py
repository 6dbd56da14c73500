"""Pure pipeline-page logic: validate the engine's metrics snapshots and turn them into figures.

Each record of the metrics topic (key = worker name, value = JSON shaped as
`stack_contract.metrics.Snapshot`) holds one worker's counters, cumulative since its `started_ms`.
`Pipelines` keeps WINDOW_S of them per worker (a new `started_ms` is a restarted worker: its older
snapshots go) and computes, per pipeline, step and worker:
- throughput: messages into a step per second between two snapshots of a worker; a step's figure is
  the sum over workers, sampled on a grid of SNAPSHOT_INTERVAL_S (each worker adds the rate of its
  interval holding the grid time; None where no worker of the pipeline reported); `now` is the sum of
  the workers' latest rates, min/median/max are over the grid in the window;
- latency percentiles (PERCENTILES, as bin upper bounds; ">1s" for the last bin) of the histograms'
  growth over the window (newest snapshot minus the oldest one kept, or minus zero when the worker
  started inside the window), summed over workers; end to end per pipeline the same way.

The topic is untrusted (anyone who can reach the broker can write it): a record that does not fit
the contract is counted and skipped, strings and lists are bounded, counters must not go backwards
within one start, and a worker's history is capped, so memory stays bounded whatever arrives.
"""
from __future__ import annotations

import math
import threading
import time
from collections import deque
from statistics import median

import orjson

from stack_contract.metrics import (LATENCY_BOUNDS_S, PERCENTILES, SNAPSHOT_INTERVAL_S, VERSION,
                                    percentile)

WINDOW_S = 300.0             # Wallaroo's UI: the last 5 minutes
MAX_RECORD_BYTES = 1 << 20   # the engine's snapshots stay under 900,000 bytes
MAX_WORKERS = 64
MAX_PIPELINES = 16
MAX_STEPS = 64               # per pipeline
MAX_STEPS_TOTAL = 128        # per snapshot: bounds the work of one view() (workers x steps x window)
MAX_HISTORY = 2 * int(WINDOW_S / SNAPSHOT_INTERVAL_S) + 4   # per worker; more often than every 2.5 s
                                                            # and the oldest go early
MAX_NAME = 200
MAX_COUNT = 1 << 53          # JSON numbers stay exact below this
STALE_S = 3 * SNAPSHOT_INTERVAL_S   # a worker silent this long is shown as stale
FUTURE_TOLERANCE_MS = 60_000        # clock skew between a worker and this machine
NBINS = len(LATENCY_BOUNDS_S) + 1
KINDS = ("decoder", "computation", "state", "sink")
FIGURE_INTS = ("checkpoints", "restores", "dead_letters", "reconnects", "consumer_lag", "partitions")
MONOTONIC = ("checkpoints", "restores", "dead_letters", "reconnects")


class Malformed(ValueError):
    """A snapshot that does not fit stack_contract.metrics."""


def _int(v, what: str, lo: int = 0) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= MAX_COUNT:
        raise Malformed(f"{what}: not an integer in {lo}..2^53")
    return v


def _seconds(v, what: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
        raise Malformed(f"{what}: not a finite number of seconds >= 0")
    return float(v)


def _name(v, what: str) -> str:
    if not isinstance(v, str) or not v or len(v) > MAX_NAME:
        raise Malformed(f"{what}: not a string of 1..{MAX_NAME} characters")
    return v


def _histogram(v, what: str) -> tuple[tuple[int, ...], float]:
    if not isinstance(v, dict) or not isinstance(v.get("counts"), list) or len(v["counts"]) != NBINS:
        raise Malformed(f"{what}: not a histogram of {NBINS} counts")
    return tuple(_int(c, what) for c in v["counts"]), _seconds(v.get("sum_s"), what + ".sum_s")


def validate(key: bytes | None, value: bytes | None, now_ms: int | None = None) -> dict:
    """The snapshot of one record, reduced to the fields used; Malformed if it does not fit."""
    if value is None or len(value) > MAX_RECORD_BYTES:
        raise Malformed("empty or larger than %d bytes" % MAX_RECORD_BYTES)
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError as e:
        raise Malformed(f"not JSON: {e}") from None
    if not isinstance(doc, dict):
        raise Malformed("not a JSON object")
    if doc.get("version") != VERSION:
        raise Malformed(f"version is not {VERSION}")
    worker = _name(doc.get("worker"), "worker")
    if key is not None and key != worker.encode():
        raise Malformed("key is not the worker's name")
    started, at = _int(doc.get("started_ms"), "started_ms"), _int(doc.get("at_ms"), "at_ms")
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    if at < started or at > now_ms + FUTURE_TOLERANCE_MS:
        raise Malformed("at_ms before started_ms or in the future")
    pipelines = doc.get("pipelines")
    if not isinstance(pipelines, list) or len(pipelines) > MAX_PIPELINES:
        raise Malformed(f"pipelines: not a list of at most {MAX_PIPELINES}")
    out_pipes = []
    for i, p in enumerate(pipelines):
        if not isinstance(p, dict):
            raise Malformed(f"pipeline {i}: not an object")
        steps = p.get("steps")
        if not isinstance(steps, list) or not 1 <= len(steps) <= MAX_STEPS:
            raise Malformed(f"pipeline {i}: steps not a list of 1..{MAX_STEPS}")
        out_steps = []
        for j, s in enumerate(steps):
            if not isinstance(s, dict) or s.get("kind") not in KINDS:
                raise Malformed(f"pipeline {i} step {j}: not an object with a kind of {KINDS}")
            out_steps.append({"name": _name(s.get("name"), "step name"), "kind": s["kind"],
                              "messages_in": _int(s.get("messages_in"), "messages_in"),
                              "messages_out": _int(s.get("messages_out"), "messages_out"),
                              "latency": _histogram(s.get("latency"), "step latency")})
        source = p.get("source")
        out_pipes.append({"name": _name(p.get("name"), "pipeline name"),
                          "source": source[:MAX_NAME] if isinstance(source, str) else "",
                          "steps": out_steps, "end_to_end": _histogram(p.get("end_to_end"), "end_to_end")})
    if sum(len(p["steps"]) for p in out_pipes) > MAX_STEPS_TOTAL:
        raise Malformed(f"more than {MAX_STEPS_TOTAL} steps in all")
    if len({p["name"] for p in out_pipes}) != len(out_pipes):
        raise Malformed("two pipelines of one name")
    f = doc.get("figures")
    if not isinstance(f, dict):
        raise Malformed("figures: not an object")
    figures = {k: _int(f.get(k), k) for k in FIGURE_INTS}
    figures["checkpoint_latency"] = _histogram(f.get("checkpoint_latency"), "checkpoint_latency")
    figures["restore_seconds"] = _seconds(f.get("restore_seconds"), "restore_seconds")
    lag = f.get("event_time_lag_ms")
    figures["event_time_lag_ms"] = None if lag is None else _int(lag, "event_time_lag_ms", lo=-MAX_COUNT)
    application = doc.get("application")
    return {"worker": worker, "application": application[:MAX_NAME] if isinstance(application, str) else "",
            "started_ms": started, "at_ms": at, "pipelines": out_pipes, "figures": figures}


def _shape(snap: dict) -> tuple:
    return tuple((p["name"], tuple((s["name"], s["kind"]) for s in p["steps"])) for p in snap["pipelines"])


def _counters(snap: dict):
    """Every cumulative count of a snapshot, in one order (for the never-backwards check)."""
    for p in snap["pipelines"]:
        yield from p["end_to_end"][0]
        for s in p["steps"]:
            yield s["messages_in"]
            yield s["messages_out"]
            yield from s["latency"][0]
    yield from snap["figures"]["checkpoint_latency"][0]
    for k in MONOTONIC:
        yield snap["figures"][k]


def _zero(snap: dict) -> dict:
    """A worker's counters at its start: every count zero, at started_ms."""
    zh = ((0,) * NBINS, 0.0)
    return {"at_ms": snap["started_ms"], "started_ms": snap["started_ms"],
            "pipelines": [{"name": p["name"], "end_to_end": zh,
                           "steps": [{"name": s["name"], "kind": s["kind"], "messages_in": 0,
                                      "messages_out": 0, "latency": zh} for s in p["steps"]]}
                          for p in snap["pipelines"]],
            "figures": {"checkpoint_latency": zh, "checkpoints": 0}}


def _covering(grid: list[int], spans: list[tuple[int, int]]):
    """(grid index, span index) for each grid time inside a span (a, b]; both lists ascending and
    the spans disjoint: one pass over each."""
    j = 0
    for gi, g in enumerate(grid):
        while j < len(spans) and spans[j][1] < g:
            j += 1
        if j < len(spans) and spans[j][0] < g:
            yield gi, j


def _diff(new, old) -> list[int]:
    return [a - b for a, b in zip(new[0], old[0])]


def latency_figures(counts: list[int], sum_s: float = 0.0) -> dict:
    """Percentiles ("p50", ... seconds, ">1s" in the last bin, None when empty), count and mean."""
    n = sum(counts)
    out = {}
    for q in PERCENTILES:
        v = percentile(counts, q)
        out["p%g" % q] = ">1s" if v == math.inf else v
    out["count"] = n
    out["mean_s"] = sum_s / n if n else None
    return out


def spread(values: list[float]) -> dict:
    return {"min": min(values), "median": median(values), "max": max(values)} if values else \
        {"min": None, "median": None, "max": None}


class Pipelines:
    """Snapshots of every worker over the window; `view()` the figures (thread-safe)."""

    def __init__(self, window_s: float = WINDOW_S, interval_s: float = SNAPSHOT_INTERVAL_S):
        self.window_ms = int(window_s * 1000)
        self.interval_ms = int(interval_s * 1000)
        self._lock = threading.Lock()
        self._workers: dict[str, deque] = {}
        self.applied = 0
        self.skipped: dict[str, int] = {"malformed": 0, "out_of_order": 0, "too_many_workers": 0}
        self.last_skip: str | None = None
        self.version = 0
        self._cache: tuple | None = None

    def reset(self) -> None:
        with self._lock:
            self._workers.clear()
            self.version += 1

    def publish(self) -> None:
        pass                                   # view() computes on demand

    def _skip(self, why: str, detail: str) -> None:
        self.skipped[why] += 1
        self.last_skip = detail[:300]

    def apply(self, key: bytes | None, value: bytes | None, now_ms: int | None = None) -> bool:
        """Take one record; False (counted in `skipped`) when it is not used."""
        try:
            snap = validate(key, value, now_ms)
        except Malformed as e:
            with self._lock:
                self._skip("malformed", str(e))
            return False
        with self._lock:
            hist = self._workers.get(snap["worker"])
            if hist is None:
                if len(self._workers) >= MAX_WORKERS:
                    self._evict(now_ms)
                if len(self._workers) >= MAX_WORKERS:
                    self._skip("too_many_workers", f"more than {MAX_WORKERS} workers")
                    return False
                hist = self._workers[snap["worker"]] = deque(maxlen=MAX_HISTORY)
            elif hist and snap["started_ms"] != hist[-1]["started_ms"]:
                if snap["started_ms"] < hist[-1]["started_ms"]:
                    self._skip("out_of_order", f"{snap['worker']}: snapshot of an earlier start")
                    return False
                hist.clear()                   # restarted: counters began again from zero
            elif hist:
                last = hist[-1]
                if snap["at_ms"] <= last["at_ms"]:
                    self._skip("out_of_order", f"{snap['worker']}: not newer than the last snapshot")
                    return False
                if _shape(snap) != _shape(last) or any(a < b for a, b in zip(_counters(snap), _counters(last))):
                    self._skip("malformed", f"{snap['worker']}: steps changed or counters went backwards "
                                            "within one start")
                    return False
            hist.append(snap)
            while hist[0]["at_ms"] < snap["at_ms"] - self.window_ms:
                hist.popleft()
            self.applied += 1
            self.version += 1
            return True

    def _evict(self, now_ms: int | None) -> None:
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        for w in [w for w, h in self._workers.items() if h[-1]["at_ms"] < now_ms - self.window_ms]:
            del self._workers[w]

    def cached_view(self, max_age_s: float = 1.0) -> dict:
        """view(), computed at most once per `max_age_s` unless a snapshot arrived (viewers poll)."""
        now = time.monotonic()
        with self._lock:
            cached = self._cache
        if cached and cached[0] == self.version and now - cached[1] < max_age_s:
            return cached[2]
        version = self.version
        doc = self.view()
        with self._lock:
            self._cache = (version, now, doc)
        return doc

    def view(self, now_ms: int | None = None) -> dict:
        """Figures per pipeline, step and worker (the /api/pipeline document)."""
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        with self._lock:
            workers = {w: list(h) for w, h in self._workers.items() if h[-1]["at_ms"] >= now_ms - self.window_ms}
            skipped, applied, last_skip = dict(self.skipped), self.applied, self.last_skip
        pipes: dict[str, dict] = {}      # name -> accumulated figures, in first-seen order
        worker_rows = []
        # The grid ends at the oldest latest snapshot of the live workers: later, some have not said yet.
        live = [h[-1]["at_ms"] for h in workers.values() if now_ms - h[-1]["at_ms"] <= STALE_S * 1000]
        grid_end = min(live or [h[-1]["at_ms"] for h in workers.values()] or [now_ms])
        earliest = grid_end
        grid = [grid_end - k * self.interval_ms for k in range(int(self.window_ms / self.interval_ms), -1, -1)]
        for name in sorted(workers):
            hist = workers[name]
            latest = hist[-1]
            base = _zero(latest) if latest["started_ms"] >= latest["at_ms"] - self.window_ms else hist[0]
            points = ([base] if base is not hist[0] else []) + hist     # oldest first
            earliest = min(earliest, points[0]["at_ms"])
            row_rates = []
            for pi, p in enumerate(latest["pipelines"]):
                acc = pipes.setdefault(p["name"], {"name": p["name"], "source": p["source"], "workers": [],
                                                   "steps": {}, "order": [], "e2e": [0] * NBINS, "e2e_sum": 0.0})
                acc["workers"].append(name)
                bp = base["pipelines"][pi]
                e2e = _diff(p["end_to_end"], bp["end_to_end"])
                acc["e2e"] = [a + b for a, b in zip(acc["e2e"], e2e)]
                acc["e2e_sum"] += max(0.0, p["end_to_end"][1] - bp["end_to_end"][1])
                e2e_grid = acc.setdefault("e2e_grid", [[0] * NBINS for _ in grid])
                pairs = list(zip(points, points[1:]))
                for gi, j in _covering(grid, [(a["at_ms"], b["at_ms"]) for a, b in pairs]):
                    a, b = pairs[j]
                    d = _diff(b["pipelines"][pi]["end_to_end"], a["pipelines"][pi]["end_to_end"])
                    e2e_grid[gi] = [x + y for x, y in zip(e2e_grid[gi], d)]
                for si, s in enumerate(p["steps"]):
                    key = (si, s["name"])
                    st = acc["steps"].get(key)
                    if st is None:
                        st = acc["steps"][key] = {"name": s["name"], "kind": s["kind"], "messages_in": 0,
                                                  "messages_out": 0, "lat": [0] * NBINS, "lat_sum": 0.0,
                                                  "now": 0.0, "grid": [None] * len(grid), "per_worker": {}}
                        acc["order"].append(key)
                    st["messages_in"] += s["messages_in"]
                    st["messages_out"] += s["messages_out"]
                    bs = base["pipelines"][pi]["steps"][si]
                    st["lat"] = [a + b for a, b in zip(st["lat"], _diff(s["latency"], bs["latency"]))]
                    st["lat_sum"] += max(0.0, s["latency"][1] - bs["latency"][1])
                    # rates of this worker's intervals: (start ms, end ms, messages/s)
                    ivs = []
                    for a, b in zip(points, points[1:]):
                        dt = (b["at_ms"] - a["at_ms"]) / 1000
                        if dt > 0:
                            n = b["pipelines"][pi]["steps"][si]["messages_in"] - a["pipelines"][pi]["steps"][si]["messages_in"]
                            ivs.append((a["at_ms"], b["at_ms"], n / dt))
                    now_rate = ivs[-1][2] if ivs else 0.0
                    st["now"] += now_rate
                    for gi, j in _covering(grid, [(a_ms, b_ms) for a_ms, b_ms, _ in ivs]):
                        st["grid"][gi] = (st["grid"][gi] or 0.0) + ivs[j][2]
                    st["per_worker"][name] = {"throughput": now_rate,
                                              **latency_figures(_diff(s["latency"], bs["latency"]))}
                    if si == 0:
                        row_rates.append([r for _, _, r in ivs])
            f = latest["figures"]
            ck = _diff(f["checkpoint_latency"], base["figures"]["checkpoint_latency"])
            rates = [sum(rs) for rs in zip(*row_rates)] if row_rates else []
            worker_rows.append({
                "name": name, "application": latest["application"], "started_ms": latest["started_ms"],
                "at_ms": latest["at_ms"], "age_s": max(0.0, (now_ms - latest["at_ms"]) / 1000),
                "stale": now_ms - latest["at_ms"] > STALE_S * 1000,
                "throughput": {"now": rates[-1] if rates else 0.0, **spread(rates)},
                "checkpoints": f["checkpoints"],
                "checkpoints_in_window": f["checkpoints"] - base["figures"]["checkpoints"],
                "checkpoint_latency": latency_figures(ck), "restores": f["restores"],
                "restore_seconds": f["restore_seconds"], "dead_letters": f["dead_letters"],
                "reconnects": f["reconnects"], "consumer_lag": f["consumer_lag"],
                "event_time_lag_ms": f["event_time_lag_ms"], "partitions": f["partitions"],
            })
        first = next((i for i, g in enumerate(grid) if g > earliest), len(grid))
        out_pipes = []
        for acc in sorted(pipes.values(), key=lambda a: (-len(a["workers"]), a["name"])):
            steps = []
            for key in acc["order"]:
                st = acc["steps"][key]
                series = st["grid"][first:]
                steps.append({"name": st["name"], "kind": st["kind"], "messages_in": st["messages_in"],
                              "messages_out": st["messages_out"],
                              "throughput": {"now": st["now"], **spread([v for v in series if v is not None])},
                              "latency": latency_figures(st["lat"], st["lat_sum"]),
                              "workers": st["per_worker"], "series": series})
            out_pipes.append({"name": acc["name"], "source": acc["source"], "workers": acc["workers"],
                              "steps": steps, "end_to_end": latency_figures(acc["e2e"], acc["e2e_sum"]),
                              "end_to_end_series": [latency_figures(c) for c in acc["e2e_grid"][first:]]})
        return {"now_ms": now_ms, "window_s": self.window_ms / 1000, "interval_s": self.interval_ms / 1000,
                "percentiles": ["p%g" % q for q in PERCENTILES],
                "times_ms": grid[first:], "pipelines": out_pipes, "workers": worker_rows,
                "records": {"applied": applied, "skipped": skipped, "last_skip": last_skip}}
