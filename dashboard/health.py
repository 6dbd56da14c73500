"""Pipeline health, sampled from Kafka every few seconds by one background thread.

- events/s in  = growth per second of the summed end offsets of the source topic (`gharchive`):
                 what the archive streamer is writing.
- events/s out = growth per second of the summed end offsets of the `leaderboard` topic: what
                 star_leaders is writing.  Transactional writes add one commit marker per partition
                 per transaction, which occupy offsets too, so this slightly overstates records/s.
- consumer lag = sum over source partitions of (end offset - offset committed by the star_leaders
                 group); partitions the group never committed count from their earliest offset.
                 None while the group has committed nothing at all.
Rates are averages over a sliding window of samples (not instantaneous), which keeps the numbers
readable.  A topic that shrinks (deleted and recreated) restarts its rate.

Only whole-cluster metadata is requested: AdminClient.list_topics(topic=...) would auto-create a
missing topic on brokers with auto.create.topics.enable=true (the default).
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from datetime import datetime, timezone

from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

from .background import BackgroundThread

log = logging.getLogger(__name__)


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


class HealthMonitor(BackgroundThread):
    def __init__(self, bootstrap: str, *, topic: str, source_topic: str, group: str,
                 interval_s: float = 1.5, window_s: float = 10.0, timeout_s: float = 5.0):
        super().__init__("health-monitor")
        self.bootstrap = bootstrap
        self.topic, self.source_topic, self.group = topic, source_topic, group
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self._in = RateMeter(window_s)
        self._out = RateMeter(window_s)
        self._lock = threading.Lock()
        self._admin: AdminClient | None = None
        self._state = {
            "kafka_connected": None,        # None = not checked yet
            "events_in_per_s": None,
            "events_out_per_s": None,
            "consumer_lag": None,
            "source_topic_exists": None,
            "topic_exists": None,
            "checked_at": None,
            "error": None,
        }

    def snapshot(self) -> dict:
        with self._lock:
            return dict(self._state)

    def run(self) -> None:
        self._admin = AdminClient({"bootstrap.servers": self.bootstrap,
                                   "client.id": "star-leaders-dashboard-health",
                                   "reconnect.backoff.max.ms": 2000,
                                   "error_cb": lambda err: None,   # transient; reported via sample()
                                   "log_level": 2,                 # no line per failed connect
                                   "logger": log})
        while not self._stop_event.is_set():
            started = time.monotonic()
            try:
                update = self.sample()
            except Exception as e:  # keep sampling whatever happens; report it
                log.debug("health sample failed", exc_info=True)
                update = {"kafka_connected": False, "events_in_per_s": None, "events_out_per_s": None,
                          "consumer_lag": None, "error": str(e) or type(e).__name__}
                self._in.reset()
                self._out.reset()
            update["checked_at"] = iso(time.time())
            with self._lock:
                was = self._state["kafka_connected"]
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
        futures = self._admin.list_offsets({tp: spec for tp in tps}, request_timeout=self.timeout_s)
        return {(tp.topic, tp.partition): f.result().offset for tp, f in futures.items()}

    def sample(self) -> dict:
        md = self._admin.list_topics(timeout=self.timeout_s)      # raises when Kafka is unreachable
        now = time.monotonic()
        src = md.topics.get(self.source_topic)
        out = md.topics.get(self.topic)
        src_tps = [TopicPartition(self.source_topic, p) for p in sorted(src.partitions)] if src else []
        out_tps = [TopicPartition(self.topic, p) for p in sorted(out.partitions)] if out else []
        latest = self._offsets(src_tps + out_tps, OffsetSpec.latest())
        result = {"kafka_connected": True, "source_topic_exists": bool(src_tps),
                  "topic_exists": bool(out_tps), "error": None}

        for meter, tps, key in ((self._in, src_tps, "events_in_per_s"), (self._out, out_tps, "events_out_per_s")):
            if tps:
                meter.add(now, sum(latest[(tp.topic, tp.partition)] for tp in tps))
                r = meter.rate()
                result[key] = None if r is None else round(r, 1)
            else:
                meter.reset()
                result[key] = None

        lag = None
        if src_tps:
            futures = self._admin.list_consumer_group_offsets(
                [ConsumerGroupTopicPartitions(self.group, src_tps)], request_timeout=self.timeout_s)
            got = futures[self.group].result()
            committed = {tp.partition: tp.offset for tp in got.topic_partitions}
            end = {tp.partition: latest[(tp.topic, tp.partition)] for tp in src_tps}
            missing = [tp for tp in src_tps if committed.get(tp.partition, -1) < 0]
            earliest = {}
            if missing and len(missing) < len(src_tps):
                earliest = {p: o for (_, p), o in self._offsets(missing, OffsetSpec.earliest()).items()}
            lag = compute_lag(end, committed, earliest)
        result["consumer_lag"] = lag
        return result


def describe(monitor: HealthMonitor, consumer, board, config) -> dict:
    """The /api/health document: Kafka-side numbers plus the dashboard's own consumer state."""
    h = monitor.snapshot()
    stats = board.stats()
    h.update({
        "consumer_state": consumer.state,
        "records": stats["records"],
        "malformed_records": stats["malformed"],
        # when this dashboard last received a committed leaderboard record (wall clock)
        "last_update": iso(stats["last_applied"]),
        "topic": config.topic,
        "source_topic": config.source_topic,
        "group": config.group,
        "kafka": config.kafka,
    })
    return h
