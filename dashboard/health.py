"""Pipeline health, sampled from Kafka every few seconds by one background thread.

- events/s in  = growth per second of the summed committed end offsets (last stable offsets) of the
                 source topic (`gharchive`): what the archive streamer is writing.
- events/s out = the same for the `leaderboard` topic: what star_leaders commits.  Transactional
                 writes add one commit marker per partition per transaction, which occupy offsets
                 too, so this slightly overstates records/s.
- consumer lag = sum over source partitions of (end offset - offset committed by the star_leaders
                 group); partitions the group never committed count from their earliest offset.
                 None while the group has committed nothing at all.
- workers      = members of the star_leaders group (and their names), against --expected-workers:
                 a worker in a crash loop shows as missing here.
Rates are averages over a sliding window of samples (not instantaneous), which keeps the numbers
readable.  A topic that shrinks (deleted and recreated) restarts its rate.

Every Kafka call is bounded by `timeout_s`, and its failure has one reaction:
- metadata (the first call of a sample) fails: Kafka counts as unreachable, the rates restart, the
  sample ends there;
- a later call fails: Kafka answers, but the number that call feeds is None and `error` says why;
- either way the next sample uses a fresh AdminClient.  librdkafka's admin client can stay stuck
  after a broker restart (list_consumer_group_offsets timed out for minutes while a new client
  answered at once), and a new client costs a few milliseconds.
So the health is back within one sample (`interval_s` plus connection set-up) of the broker's return.

No coordinator-targeted admin request (describe_consumer_groups, list_consumer_group_offsets) is
made: in librdkafka 2.16 their error path, taken when a connection drops mid-request, frees an object
it then uses (confluentinc/librdkafka PR #5397, open), and the dashboard died with SIGSEGV in 2 of 13
broker restarts under a replay.  The group's committed offsets come from a consumer carrying the
group's id (OffsetFetch through the consumer's own coordinator code; it never subscribes, so it never
joins the group), its members from the group listing (DescribeGroups sent to each broker directly).

Only whole-cluster metadata is requested: AdminClient.list_topics(topic=...) would auto-create a
missing topic on brokers with auto.create.topics.enable=true (the default).
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from datetime import datetime, timezone

import re
import warnings

from confluent_kafka import Consumer, IsolationLevel, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

from .background import BackgroundThread

log = logging.getLogger(__name__)

MAX_WORKER_NAMES = 16          # group members listed by name (the group is open to any client)
WORKER_NAME_CAP = 100          # characters of one name


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class RateMeter:
    """Per-second growth of a monotonically increasing total over a sliding time window."""

    def __init__(self, window_s: float = 10.0):
        self.window_s = window_s
        self._samples: deque[tuple[float, int]] = deque()

    def reset(self) -> None:
        self._samples.clear()

    def add(self, t: float, total: int) -> None:
        if self._samples:
            last_t, last_total = self._samples[-1]
            if total < last_total:
                self._samples.clear()           # counter went backwards: topic recreated
            elif t <= last_t:
                return
        self._samples.append((t, total))
        while len(self._samples) > 2 and t - self._samples[0][0] > self.window_s:
            self._samples.popleft()

    def rate(self) -> float | None:
        if len(self._samples) < 2:
            return None
        (t0, v0), (t1, v1) = self._samples[0], self._samples[-1]
        return (v1 - v0) / (t1 - t0)


def compute_lag(end: dict, committed: dict, earliest: dict | None = None) -> int | None:
    """end/committed/earliest: partition -> offset.  Committed offsets < 0 mean "never committed".

    None when nothing at all was committed; partitions without a commit count from `earliest`
    (or 0 when unknown)."""
    if not any(committed.get(p, -1) >= 0 for p in end):
        return None
    lag = 0
    for p, e in end.items():
        c = committed.get(p, -1)
        if c < 0:
            c = (earliest or {}).get(p, 0)
        lag += max(0, e - c)
    return lag


def worker_name(client_id: str, group: str) -> str:
    """star_leaders' workers are `<group>-<name>` (wallaroo's client.id); show the name."""
    client_id = client_id.split("@", 1)[0]      # a worker with --query-port advertises it after "@"
    name = client_id[len(group) + 1:] if client_id.startswith(group + "-") else client_id
    return name[:WORKER_NAME_CAP] or "?"


def _short(e: BaseException) -> str:
    return str(e) or type(e).__name__


class HealthMonitor(BackgroundThread):
    def __init__(self, bootstrap: str, *, topic: str, source_topic: str, group: str,
                 interval_s: float = 1.5, window_s: float = 10.0, timeout_s: float = 3.0,
                 consumer=None):
        super().__init__("health-monitor")
        self.bootstrap = bootstrap
        self.topic, self.source_topic, self.group = topic, source_topic, group
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.consumer = consumer            # told the topic's committed end, for its stall check
        self._in = RateMeter(window_s)
        self._out = RateMeter(window_s)
        self._lock = threading.Lock()
        self._admin: AdminClient | None = None
        self.clients_created = 0
        self._state = {
            "kafka_connected": None,        # None = not checked yet
            "kafka_unreachable_since": None,
            "events_in_per_s": None,
            "events_out_per_s": None,
            "consumer_lag": None,
            "source_topic_exists": None,
            "topic_exists": None,
            "workers": None,                # members of the group, None = not known
            "worker_names": [],
            "group_state": None,
            "checked_at": None,
            "error": None,
        }

    def snapshot(self) -> dict:
        with self._lock:
            return dict(self._state)

    def _new_admin(self) -> AdminClient:
        self.clients_created += 1
        return AdminClient({"bootstrap.servers": self.bootstrap,
                            "client.id": "star-leaders-dashboard-health",
                            "reconnect.backoff.max.ms": 1000,
                            "socket.timeout.ms": max(1000, int(self.timeout_s * 1000)),
                            "error_cb": lambda err: None,   # transient; reported via sample()
                            "log_level": 2,                 # no line per failed connect
                            "logger": log})

    def run(self) -> None:
        while not self._stop_event.is_set():
            started = time.monotonic()
            if self._admin is None:
                self._admin = self._new_admin()
            try:
                update = self.sample()
            except Exception as e:  # a bug: keep sampling, report it, start from a fresh client
                log.debug("health sample failed", exc_info=True)
                update = {"kafka_connected": False, "events_in_per_s": None, "events_out_per_s": None,
                          "consumer_lag": None, "workers": None, "worker_names": [], "group_state": None,
                          "error": _short(e)}
            if update["error"] is not None:
                self._admin = None                     # see the module docstring
            if not update["kafka_connected"]:
                self._in.reset()
                self._out.reset()
            now = time.time()
            update["checked_at"] = iso(now)
            with self._lock:
                was = self._state["kafka_connected"]
                if update["kafka_connected"]:
                    update["kafka_unreachable_since"] = None
                elif was is not False or self._state["kafka_unreachable_since"] is None:
                    update["kafka_unreachable_since"] = iso(now)
                self._state.update(update)
            if update["kafka_connected"] != was:
                if update["kafka_connected"]:
                    log.info("kafka at %s answers", self.bootstrap)
                else:
                    log.warning("kafka at %s does not answer (%s); retrying", self.bootstrap, update["error"])
            self._stop_event.wait(max(0.1, self.interval_s - (time.monotonic() - started)))

    def _offsets(self, tps: list[TopicPartition], spec) -> dict[tuple[str, int], int]:
        if not tps:
            return {}
        futures = self._admin.list_offsets({tp: spec for tp in tps}, request_timeout=self.timeout_s,
                                           isolation_level=IsolationLevel.READ_COMMITTED)
        return {(tp.topic, tp.partition): f.result(timeout=self.timeout_s + 1).offset
                for tp, f in futures.items()}

    def sample(self) -> dict:
        result = {"kafka_connected": False, "error": None}
        try:
            md = self._admin.list_topics(timeout=self.timeout_s)
        except Exception as e:
            result.update(events_in_per_s=None, events_out_per_s=None, consumer_lag=None, workers=None,
                          worker_names=[], group_state=None, error=_short(e))
            return result
        now = time.monotonic()
        result["kafka_connected"] = True
        errors = []
        src = md.topics.get(self.source_topic)
        out = md.topics.get(self.topic)
        src_tps = [TopicPartition(self.source_topic, p) for p in sorted(src.partitions)] if src else []
        out_tps = [TopicPartition(self.topic, p) for p in sorted(out.partitions)] if out else []
        result["source_topic_exists"] = bool(src_tps)
        result["topic_exists"] = bool(out_tps)
        try:
            latest = self._offsets(src_tps + out_tps, OffsetSpec.latest())
        except Exception as e:
            errors.append(f"end offsets: {_short(e)}")
            latest = None
        for meter, tps, key in ((self._in, src_tps, "events_in_per_s"), (self._out, out_tps, "events_out_per_s")):
            if tps and latest is not None:
                meter.add(now, sum(latest[(tp.topic, tp.partition)] for tp in tps))
                r = meter.rate()
                result[key] = None if r is None else round(r, 1)
            else:
                if not tps:
                    meter.reset()
                result[key] = None
        if latest is not None and out_tps and self.consumer is not None:
            self.consumer.note_committed_end({tp.partition: latest[(tp.topic, tp.partition)] for tp in out_tps})

        result["consumer_lag"] = None
        if src_tps and latest is not None:
            try:
                result["consumer_lag"] = self._lag(src_tps, latest)
            except Exception as e:
                errors.append(f"lag: {_short(e)}")

        result.update(workers=None, worker_names=[], group_state=None)
        try:
            result.update(self._members())
        except Exception as e:
            errors.append(f"workers: {_short(e)}")
        result["error"] = "; ".join(errors) or None
        return result

    def _members(self) -> dict:
        # list_groups is deprecated in favour of describe_consumer_groups: see the module docstring.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            groups = self._admin.list_groups(group=self.group, timeout=self.timeout_s)
        group = next((g for g in groups if g.id == self.group), None)
        if group is not None and group.error is not None and group.error.code() != 0:
            raise RuntimeError(group.error.str())
        members = group.members if group is not None else []
        names = sorted(worker_name(m.client_id or "", self.group) for m in members)
        state = group.state if group is not None and group.state else None
        return {"workers": len(names), "worker_names": names[:MAX_WORKER_NAMES],
                "group_state": _snake(state) if state else None}

    def _committed(self, src_tps: list[TopicPartition]) -> dict[int, int]:
        c = Consumer({"bootstrap.servers": self.bootstrap, "group.id": self.group,
                      "client.id": "star-leaders-dashboard-health", "enable.auto.commit": False,
                      "socket.timeout.ms": max(1000, int(self.timeout_s * 1000)),
                      "error_cb": lambda err: None, "log_level": 2, "logger": log})
        try:
            return {tp.partition: tp.offset for tp in c.committed(src_tps, timeout=self.timeout_s)}
        finally:
            c.close()

    def _lag(self, src_tps: list[TopicPartition], latest: dict) -> int | None:
        committed = self._committed(src_tps)
        end = {tp.partition: latest[(tp.topic, tp.partition)] for tp in src_tps}
        missing = [tp for tp in src_tps if committed.get(tp.partition, -1) < 0]
        earliest = {}
        if missing and len(missing) < len(src_tps):
            earliest = {p: o for (_, p), o in self._offsets(missing, OffsetSpec.earliest()).items()}
        return compute_lag(end, committed, earliest)


def _snake(state: str) -> str:
    """'PreparingRebalance' -> 'preparing_rebalance' (the names ConsumerGroupState uses)."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", state).lower()


def describe(monitor: HealthMonitor, consumer, board, config) -> dict:
    """The /api/health document: Kafka-side numbers plus the dashboard's own consumer state."""
    h = monitor.snapshot()
    stats = board.stats()
    checked = h["checked_at"]
    # A sample takes at most a few bounded calls; a snapshot much older means the monitor is stuck.
    stale_after = 3 * config.health_interval + 6 * config.kafka_timeout + 5
    age = None if checked is None else time.time() - datetime.fromisoformat(checked).timestamp()
    if age is not None and age > stale_after:
        h["kafka_connected"] = None
        h["error"] = f"no health sample for {int(age)} s"
    h.update({
        "consumer_state": consumer.state,
        "consumer_error": consumer.last_error,
        "records": stats["records"],
        "malformed_records": stats["malformed"],
        "last_malformed": stats["last_error"],
        # when this dashboard last received a committed leaderboard record (wall clock)
        "last_update": iso(stats["last_applied"]),
        "expected_workers": config.expected_workers,
        "topic": config.topic,
        "source_topic": config.source_topic,
        "group": config.group,
        "kafka": config.kafka,
    })
    return h
