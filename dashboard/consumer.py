"""Background thread that follows the `leaderboard` topic into a `leaders.Board`.

- Reads from the beginning with isolation.level=read_committed, so records of aborted or still-open
  star_leaders transactions are never shown.
- Assigns partitions itself (no group membership, no rebalances, nothing committed); the random
  group.id only satisfies the client library.
- Starts before Kafka or the topic exist: it polls metadata until the topic appears (without ever
  auto-creating it) and re-checks now and then, so added partitions are picked up and a deleted
  topic sends it back to waiting.

Every Kafka call is bounded, and a failure has one reaction:
- metadata (`list_topics`, `timeout_s`) does not answer: state `waiting_for_kafka`; the client is
  closed and a fresh one takes over at the positions reached (nothing is read twice or skipped);
- `consume` (0.5 s) returns transport errors: librdkafka reconnects by itself; the error is kept in
  `last_error` for the health card;
- stalled: the health monitor reports the topic's committed end (`note_committed_end`); when this
  consumer stays behind it without receiving anything for `stall_s`, the client is replaced as above;
- anything unexpected (a bug): logged, a fresh client after `retry_s * 5`.
`close()` is local for an assign-only consumer (no group to leave, nothing to commit): milliseconds,
broker or not.
"""
from __future__ import annotations

import logging
import threading
import time
import uuid

from confluent_kafka import (OFFSET_BEGINNING, Consumer, KafkaError, KafkaException,
                             TopicPartition)

from .background import BackgroundThread
from .leaders import MAX_RECORD_BYTES, Board

log = logging.getLogger(__name__)

WAITING_FOR_KAFKA = "waiting_for_kafka"
WAITING_FOR_TOPIC = "waiting_for_topic"
CONSUMING = "consuming"
STOPPED = "stopped"


class LeaderboardConsumer(BackgroundThread):
    """Follows `topic` into `board` (anything with apply(key, value), publish() and reset())."""

    label = "leaderboard consumer"

    def __init__(self, board: Board, bootstrap: str, topic: str, *,
                 retry_s: float = 1.0, rescan_s: float = 10.0, timeout_s: float = 3.0,
                 stall_s: float = 15.0):
        super().__init__(f"leaderboard-consumer[{topic}]")
        self.board = board
        self.bootstrap = bootstrap
        self.topic = topic
        self.retry_s = retry_s
        self.rescan_s = rescan_s
        self.timeout_s = timeout_s
        self.stall_s = stall_s
        self.state = WAITING_FOR_KAFKA
        self._logged_state: str | None = None
        self.last_error: str | None = None
        self.clients_created = 0
        self._positions: dict[int, int] = {}     # next offset to read, per partition
        self._lock = threading.Lock()
        self._committed_end: dict[int, int] = {}
        self._last_progress = time.monotonic()
        self._consumer: Consumer | None = None   # the live client (tests reach it)

    def _conf(self) -> dict:
        return {
            "bootstrap.servers": self.bootstrap,
            "group.id": f"star-leaders-dashboard-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
            "allow.auto.create.topics": False,
            "client.id": "star-leaders-dashboard",
            "reconnect.backoff.max.ms": 1000,
            "socket.timeout.ms": max(1000, int(self.timeout_s * 1000)),
            # Bounded memory whatever the topic holds: a fetch and the prefetch queue stay small
            # (one record is at most MAX_RECORD_BYTES, larger ones are skipped as malformed anyway).
            "max.partition.fetch.bytes": MAX_RECORD_BYTES + 1024,
            "fetch.max.bytes": 4 * MAX_RECORD_BYTES,
            "receive.message.max.bytes": 4 * MAX_RECORD_BYTES + 1024,
            "queued.max.messages.kbytes": 8192,
            "error_cb": self._on_error,
            # librdkafka logs every failed connect attempt; state changes are logged here instead
            "log_level": 2,
            "logger": log,
        }

    def _on_error(self, err: KafkaError) -> None:
        # Transport errors are transient: librdkafka keeps retrying; we only report them.
        self.last_error = err.str()

    def note_committed_end(self, ends: dict[int, int]) -> None:
        """The topic's last stable offset per partition (from the health monitor)."""
        with self._lock:
            self._committed_end = dict(ends)

    def behind(self) -> int:
        """Committed records this consumer has not read yet, as far as the last report says."""
        with self._lock:
            ends, pos = dict(self._committed_end), dict(self._positions)
        return sum(max(0, end - pos.get(p, 0)) for p, end in ends.items())

    def _partitions(self, consumer: Consumer) -> set[int] | None:
        """Partition ids of the topic, empty if it does not exist, None if Kafka did not answer."""
        try:
            md = consumer.list_topics(self.topic, timeout=self.timeout_s)
        except KafkaException as e:
            self.last_error = str(e)
            return None
        t = md.topics.get(self.topic)
        if t is None or t.error is not None or not t.partitions:
            return set()
        return set(t.partitions)

    def _set_state(self, state: str, detail: str = "") -> None:
        if state != self._logged_state:
            log.info("%s: %s%s", self.label, state.replace("_", " "), detail)
            self._logged_state = state
        self.state = state

    def run(self) -> None:
        while not self._stop_event.is_set():
            try:
                self._run_consumer()
            except Exception as e:   # a bug or an unexpected client error: start over, don't go stale
                log.exception("%s failed; restarting it", self.label)
                self.last_error = str(e) or type(e).__name__
                self._set_state(WAITING_FOR_KAFKA)
                self._stop_event.wait(self.retry_s * 5)
        self._set_state(STOPPED)

    def _start_offset(self, p: int) -> int:
        return self._positions.get(p, OFFSET_BEGINNING)

    def _run_consumer(self) -> None:
        """One client's life; returns (closing the client) when it should be replaced."""
        consumer = Consumer(self._conf())
        self.clients_created += 1
        self._consumer = consumer
        assigned: set[int] = set()
        try:
            while not self._stop_event.is_set():
                parts = self._partitions(consumer)
                if parts is None:
                    self._set_state(WAITING_FOR_KAFKA, f" at {self.bootstrap}")
                    self._stop_event.wait(self.retry_s)
                    return                            # a fresh client next time
                if not parts:
                    self._set_state(WAITING_FOR_TOPIC, f" {self.topic!r}")
                    if assigned or self._positions:   # topic was deleted under us: its data is gone
                        if assigned:
                            consumer.unassign()
                        assigned = set()
                        with self._lock:
                            self._positions.clear()
                            self._committed_end.clear()
                        self.board.reset()
                    self._stop_event.wait(self.retry_s)
                    continue
                new = parts - assigned
                if new:
                    consumer.incremental_assign(
                        [TopicPartition(self.topic, p, self._start_offset(p)) for p in sorted(new)])
                    assigned |= new
                    self._last_progress = time.monotonic()
                self._set_state(CONSUMING, f" {self.topic!r} ({len(assigned)} partitions, read_committed)")
                if not self._consume_for(consumer, assigned, self.rescan_s):
                    return
        finally:
            self._remember_positions(consumer, assigned)
            self._consumer = None
            consumer.close()

    def _remember_positions(self, consumer: Consumer, assigned: set[int]) -> None:
        """Fetch positions (local; past control records too) so the next client resumes there."""
        if not assigned:
            return
        try:
            got = consumer.position([TopicPartition(self.topic, p) for p in assigned])
        except KafkaException:
            return
        with self._lock:
            for tp in got:
                if tp.offset >= 0:
                    self._positions[tp.partition] = tp.offset

    def _consume_for(self, consumer: Consumer, assigned: set[int], seconds: float) -> bool:
        """Consume for `seconds`; False when the client should be replaced (stalled)."""
        deadline = time.monotonic() + seconds
        while not self._stop_event.is_set() and time.monotonic() < deadline:
            msgs = consumer.consume(num_messages=500, timeout=0.5)
            for m in msgs:
                err = m.error()
                if err is None:
                    self.board.apply(m.key(), m.value())
                    with self._lock:
                        self._positions[m.partition()] = m.offset() + 1
                    self._last_progress = time.monotonic()
                elif err.code() == KafkaError._PARTITION_EOF:
                    continue
                elif err.code() in (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC,
                                    KafkaError._UNKNOWN_PARTITION):
                    self.last_error = err.str()
                    return True                          # re-read metadata now
                else:
                    self.last_error = err.str()
            if msgs:
                self.board.publish()
            else:
                self._remember_positions(consumer, assigned)   # control records move positions too
            if self.behind() == 0:
                self._last_progress = time.monotonic()
            elif time.monotonic() - self._last_progress > self.stall_s:
                log.warning("%s: %d committed records unread for %.0f s; "
                            "replacing the client", self.label, self.behind(), self.stall_s)
                self.last_error = "stalled; client replaced"
                return False
        return True


class MetricsConsumer(LeaderboardConsumer):
    """The same reader for the engine's metrics topic (`<application-id>-metrics`), into a
    `pipeline.Pipelines`."""

    label = "metrics consumer"
