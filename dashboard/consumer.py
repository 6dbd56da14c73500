"""Background thread that follows the `leaderboard` topic into a `leaders.Board`.

- Reads from the beginning with isolation.level=read_committed, so records of aborted or still-open
  star_leaders transactions are never shown.
- Assigns partitions itself (no group membership, no rebalances, nothing committed); the random
  group.id only satisfies the client library.
- Starts before Kafka or the topic exist: it polls metadata until the topic appears (without ever
  auto-creating it) and re-checks now and then, so added partitions are picked up and a deleted
  topic sends it back to waiting.  librdkafka reconnects to the broker by itself.
"""
from __future__ import annotations

import logging
import time
import uuid

from confluent_kafka import (OFFSET_BEGINNING, Consumer, KafkaError, KafkaException,
                             TopicPartition)

from .background import BackgroundThread
from .leaders import Board

log = logging.getLogger(__name__)

WAITING_FOR_KAFKA = "waiting_for_kafka"
WAITING_FOR_TOPIC = "waiting_for_topic"
CONSUMING = "consuming"
STOPPED = "stopped"


class LeaderboardConsumer(BackgroundThread):
    def __init__(self, board: Board, bootstrap: str, topic: str, *,
                 retry_s: float = 1.0, rescan_s: float = 10.0, metadata_timeout_s: float = 5.0):
        super().__init__(f"leaderboard-consumer[{topic}]")
        self.board = board
        self.bootstrap = bootstrap
        self.topic = topic
        self.retry_s = retry_s
        self.rescan_s = rescan_s
        self.metadata_timeout_s = metadata_timeout_s
        self.state = WAITING_FOR_KAFKA
        self._logged_state: str | None = None
        self.last_error: str | None = None

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
            "reconnect.backoff.max.ms": 2000,
            "error_cb": self._on_error,
            # librdkafka logs every failed connect attempt; state changes are logged here instead
            "log_level": 2,
            "logger": log,
        }

    def _on_error(self, err: KafkaError) -> None:
        # Transport errors are transient: librdkafka keeps retrying; we only report them.
        self.last_error = err.str()

    def _partitions(self, consumer: Consumer) -> set[int] | None:
        """Partition ids of the topic, empty if it does not exist, None if Kafka did not answer."""
        try:
            md = consumer.list_topics(self.topic, timeout=self.metadata_timeout_s)
        except KafkaException as e:
            self.last_error = str(e)
            return None
        t = md.topics.get(self.topic)
        if t is None or t.error is not None or not t.partitions:
            return set()
        return set(t.partitions)

    def _set_state(self, state: str, detail: str = "") -> None:
        if state != self._logged_state:
            log.info("leaderboard consumer: %s%s", state.replace("_", " "), detail)
            self._logged_state = state
        self.state = state

    def run(self) -> None:
        while not self._stop_event.is_set():
            try:
                self._run_consumer()
            except Exception as e:   # a bug or an unexpected client error: start over, don't go stale
                log.exception("leaderboard consumer failed; restarting it")
                self.last_error = str(e) or type(e).__name__
                self._set_state(WAITING_FOR_KAFKA)
                self._stop_event.wait(self.retry_s * 5)
        self._set_state(STOPPED)

    def _run_consumer(self) -> None:
        consumer = Consumer(self._conf())
        assigned: set[int] = set()
        try:
            while not self._stop_event.is_set():
                parts = self._partitions(consumer)
                if parts is None:
                    self._set_state(WAITING_FOR_KAFKA, f" at {self.bootstrap}")
                    self._stop_event.wait(self.retry_s)
                    continue
                if not parts:
                    self._set_state(WAITING_FOR_TOPIC, f" {self.topic!r}")
                    if assigned:                      # topic was deleted under us: its data is gone
                        consumer.unassign()
                        assigned = set()
                        self.board.reset()
                    self._stop_event.wait(self.retry_s)
                    continue
                new = parts - assigned
                if new:
                    consumer.incremental_assign(
                        [TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in sorted(new)])
                    assigned |= new
                self._set_state(CONSUMING, f" {self.topic!r} ({len(assigned)} partitions, read_committed)")
                self._consume_for(consumer, self.rescan_s)
        finally:
            consumer.close()

    def _consume_for(self, consumer: Consumer, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self._stop_event.is_set() and time.monotonic() < deadline:
            msgs = consumer.consume(num_messages=500, timeout=0.5)
            for m in msgs:
                err = m.error()
                if err is None:
                    self.board.apply(m.key(), m.value())
                elif err.code() == KafkaError._PARTITION_EOF:
                    continue
                elif err.code() in (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC,
                                    KafkaError._UNKNOWN_PARTITION):
                    self.last_error = err.str()
                    return                              # re-read metadata now
                else:
                    self.last_error = err.str()
            if msgs:
                self.board.publish()
