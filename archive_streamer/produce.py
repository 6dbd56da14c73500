"""Kafka side: the broker check, topic creation, pacing, and a Sender that produces events.

Each event becomes one record: key = repo name (UTF-8), value = the event's JSON line, timestamp =
its created_at in ms.  Pacing follows created_at at a speedup: wall time elapsed since the first
event ~= event time elapsed / speedup.
"""
import logging
import threading
import time
from typing import Callable, Iterable

from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from stack_contract.valid_event import created_at_of

from . import config

log = logging.getLogger("archive_streamer")
_quiet = logging.getLogger("archive_streamer.librdkafka")
_quiet.setLevel(logging.CRITICAL)   # connection-refused chatter while we wait for a broker
_quiet.propagate = False


class KafkaUnavailable(Exception):
    """The broker did not answer within the bounded wait."""


def wait_for_broker(bootstrap: str, timeout_s: float = config.KAFKA_WAIT_S) -> None:
    """Returns once `bootstrap` answers a metadata request; raises KafkaUnavailable after `timeout_s`."""
    admin = AdminClient({"bootstrap.servers": bootstrap, "logger": _quiet})
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise KafkaUnavailable(f"Kafka at {bootstrap} did not answer within {timeout_s:g} s ({last})")
        try:
            admin.list_topics(timeout=min(left, 5.0))
            return
        except KafkaException as e:
            last = e.args[0].str() if e.args and hasattr(e.args[0], "str") else str(e)


def ensure_topic(bootstrap: str, topic: str = config.TOPIC,
                 partitions: int = config.DEFAULT_PARTITIONS,
                 replication: int = config.DEFAULT_REPLICATION,
                 topic_config: dict | None = None) -> bool:
    """Creates `topic` if missing (True when this call created it).  An existing topic is left as
    it is, whatever its partition count."""
    admin = AdminClient({"bootstrap.servers": bootstrap, "logger": _quiet})
    if topic in admin.list_topics(topic=None, timeout=10).topics:
        return False
    cfg = dict(config.TOPIC_CONFIG if topic_config is None else topic_config)
    future = admin.create_topics([NewTopic(topic, partitions, replication, config=cfg)])[topic]
    try:
        future.result(30)
    except KafkaException as e:
        if e.args[0].name() == "TOPIC_ALREADY_EXISTS":   # someone else made it meanwhile
            return False
        raise
    log.info("created topic %s (%d partitions, replication %d)", topic, partitions, replication)
    return True


class Pacer:
    """Maps event time to wall time at `speedup`, one sleep per window of `window_s` wall seconds.

    The pacing clock is the highest (clamped) event time seen so far, so an event stamped earlier
    than its predecessors never makes us wait or go back: we neither sleep backwards nor reorder.
    It does not follow a lone outlier ahead: a move of the clock worth more than `confirm_s` of wall
    time goes only as far as the previous event has gone too (a real gap in the data is followed one
    event later).  The clock starts where the first two events agree."""

    def __init__(self, speedup: float, window_s: float = config.PACING_WINDOW_S,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], object] = time.sleep, unpaced_until_ms: int | None = None,
                 confirm_s: float = config.PACING_CONFIRM_S):
        self.speedup = speedup
        self.unpaced_until_ms = unpaced_until_ms   # warm-up: events before this go at full speed
        self.window_s = window_s
        self.clock, self.sleep = clock, sleep
        self.confirm_ms = confirm_s * 1000.0 * speedup   # the same in event time
        self.t0_ms: int | None = None      # event time where pacing started
        self.wall0 = 0.0                   # wall time it started
        self.high_ms = 0                   # the pacing clock: never decreases
        self.previous_ms: int | None = None  # the previous paced event's (clamped) time
        self.window_end = float("-inf")
        self.sleeps = 0
        self.slept_s = 0.0
        self.lag_s = 0.0                   # >0: behind the target pace by that many seconds

    def wait(self, ts_ms: int, lo_ms: int | None = None, hi_ms: int | None = None) -> bool:
        """Called before each event is sent.  When the event opens a new window, sleeps until the
        window is due and returns True; otherwise returns False at once.  `lo_ms`/`hi_ms` (the
        bounds of the event's hour file) keep one wildly wrong created_at from stalling a replay."""
        if self.speedup <= 0:
            return False
        if lo_ms is not None and ts_ms < lo_ms:
            ts_ms = lo_ms
        if hi_ms is not None and ts_ms > hi_ms:
            ts_ms = hi_ms
        if self.unpaced_until_ms is not None and ts_ms < self.unpaced_until_ms:
            return False
        previous, self.previous_ms = self.previous_ms, ts_ms
        if self.t0_ms is None:
            if previous is None:
                return False
            self.t0_ms = self.high_ms = min(ts_ms, previous)
            self.wall0 = self.clock()
        if ts_ms > self.high_ms:
            if ts_ms - self.high_ms > self.confirm_ms and previous < ts_ms:
                ts_ms = previous           # a jump this far must be confirmed by two events in a row
            if ts_ms > self.high_ms:
                self.high_ms = ts_ms
        due = self.wall0 + (self.high_ms - self.t0_ms) / 1000.0 / self.speedup
        if due < self.window_end:
            return False
        self.window_end = due + self.window_s
        delay = due - self.clock()
        if delay > 0:
            self.sleeps += 1
            self.slept_s += delay
            self.sleep(delay)
        self.lag_s = self.clock() - due
        return True


def _broker_refused(err) -> bool:
    """A delivery error the broker gave for the record's batch (INVALID_TIMESTAMP, MSG_SIZE_TOO_LARGE,
    CORRUPT_MESSAGE ...): librdkafka fails every record of the batch with it, so each is worth one more
    try alone.  Local errors (timeouts, purges) and fatal ones are not."""
    return err.code() > 0 and not err.fatal() and not err.retriable()


class Sender:
    """Produces events to one topic at a pace; counts what the broker acknowledged.

    `send(events)` may be called once per hour file; `close()` flushes.  Setting `stop` (a
    threading.Event) makes `send` return at the next event and interrupts any pacing sleep.

    A record the broker refuses takes its whole batch with it.  Each record of such a batch is sent
    again alone (a second producer, one record per batch, after the others: its position in the
    partition changes), so only the records the broker refuses by themselves are lost; those are
    counted in `failed`.  The retry takes the timestamp from the record's created_at (a failed
    delivery report carries none)."""

    def __init__(self, bootstrap: str, topic: str = config.TOPIC, speedup: float = 0.0, *,
                 stop: threading.Event | None = None, producer_config: dict | None = None,
                 on_tick: Callable[["Sender"], None] | None = None, tick_s: float = 0.25,
                 unpaced_until_ms: int | None = None):
        self.topic = topic
        self.stop = stop or threading.Event()
        self.pacer = Pacer(speedup, sleep=self.stop.wait, unpaced_until_ms=unpaced_until_ms)
        self.produced = 0                  # handed to the producer by finished send() calls
        self._current = 0                  # ... and by the send() in progress
        self._refused_here = 0             # ... of which produce() refused (counted in `failed`)
        self._errors = 0                   # delivery reports of the producer (errors only, see below)
        self._acked_alone = 0              # records sent again alone that the broker acknowledged
        self.failed = 0                    # records lost: refused alone, or a local error
        self.retried_alone = 0             # records of refused batches that were sent again alone
        self.first_error: str | None = None
        self.on_tick, self.tick_s, self._next_tick = on_tick, tick_s, 0.0
        self._config = {"bootstrap.servers": bootstrap, **config.PRODUCER_CONFIG, **(producer_config or {})}
        # Delivery reports of failures only: a report for each of ~10^5 records a minute cost the
        # streamer a tenth of its CPU (Python callbacks from poll(); measured, 100,000 records of the
        # 2018 day: 0.97-1.22 CPU s with a report each, 0.76-0.84 s with errors only).  What was
        # delivered is counted from what is neither failed nor still in the producer (`delivered`).
        self.producer = Producer({**self._config, "on_delivery": self._delivered,
                                  "delivery.report.only.error": True})
        self._alone: Producer | None = None   # made at the first refused batch
        self._to_retry: list = []          # (value, key, partition) of records of refused batches

    @property
    def delivered(self) -> int:
        """Records the broker acknowledged: those handed to the producer that it no longer holds
        (librdkafka's len() counts what awaits sending, an acknowledgement or its delivery report)
        and did not report failed, plus those sent again alone that it acknowledged.

        len() also counts the producer's queued events (a broker connection's error, say), so they are
        served first (poll), and one queued since can only make the figure lower, never higher: it is
        bounded below by 0 (it said -1 with the broker gone and nothing acknowledged)."""
        self.producer.poll(0)
        pending = len(self.producer)
        return max(0, self.produced_now - self._refused_here - pending - self._errors) + self._acked_alone

    def _delivered(self, err, msg) -> None:
        if err is None:                 # (only failures are reported)
            return
        self._errors += 1
        if _broker_refused(err):
            self._to_retry.append((msg.value(), msg.key(), msg.partition()))
        else:
            self._lost(err)

    def _delivered_alone(self, err, msg) -> None:
        if err is None:
            self._acked_alone += 1
        else:
            self._lost(err)

    def _lost(self, err) -> None:
        self.failed += 1
        if self.first_error is None:
            self.first_error = str(err)
            log.error("delivery failed (further failures are only counted): %s", err)

    def _retry_alone(self) -> None:
        """Sends the records of refused batches again, one record per batch."""
        if self._alone is None:
            self._alone = Producer({**self._config, "linger.ms": 0, "batch.num.messages": 1,
                                    "on_delivery": self._delivered_alone})
            log.warning("the broker refused a batch; its records are sent again one by one")
        todo, self._to_retry = self._to_retry, []
        for value, key, partition in todo:
            self.retried_alone += 1
            ts = created_at_of(value)
            if ts is None:
                self.failed += 1        # cannot happen for what the reader yields; counted anyway
                continue
            while True:
                try:
                    self._alone.produce(self.topic, value, key, partition=max(partition, -1), timestamp=ts)
                    break
                except BufferError:
                    if self.stop.is_set():
                        self.failed += 1
                        break
                    self._alone.poll(0.05)
                except KafkaException as e:
                    self._lost(e.args[0])
                    break

    @property
    def produced_now(self) -> int:
        """Records handed to the producer so far, including the send() in progress."""
        return self.produced + self._current

    def _tick(self, n: int) -> None:
        self._current = n
        self.producer.poll(0)
        if self._to_retry:
            self._retry_alone()
        if self._alone is not None:
            self._alone.poll(0)
        if self.on_tick is not None:
            now = time.monotonic()
            if now >= self._next_tick:
                self._next_tick = now + self.tick_s
                self.on_tick(self)

    def send(self, events: Iterable, lo_ms: int | None = None, hi_ms: int | None = None) -> int:
        """Produces (ts_ms, repo, line) events in order; returns how many were handed to the
        producer.  Stops early when `stop` is set.  `lo_ms`/`hi_ms`: the hour file's bounds, for pacing."""
        produce, topic, pacer, stop = self.producer.produce, self.topic, self.pacer, self.stop
        paced = pacer.speedup > 0
        n = 0
        for ts_ms, repo, line in events:
            if stop.is_set():
                break
            if paced:
                if pacer.wait(ts_ms, lo_ms, hi_ms):
                    if stop.is_set():
                        break
                    self._tick(n)
            elif n & 1023 == 0:
                self._tick(n)
            key = repo.encode("utf-8", "surrogatepass")   # the reader's names hold none; others might
            try:
                produce(topic, line, key, timestamp=ts_ms)
            except BufferError:         # the local queue is full: let librdkafka drain it
                if not self._produce_when_room(line, key, ts_ms):
                    break
            except KafkaException as e:   # refused before sending (e.g. larger than message.max.bytes)
                self._refused_here += 1
                self._lost(e.args[0])
            n += 1
        self._tick(n)
        self.produced += n
        self._current = 0
        return n

    def _produce_when_room(self, line: bytes, key: bytes, ts_ms: int) -> bool:
        """Polls until the producer takes the record; False if asked to stop meanwhile (a broker
        that went away must not make a SIGTERM hang)."""
        while not self.stop.is_set():
            self.producer.poll(0.05)
            try:
                self.producer.produce(self.topic, line, key, timestamp=ts_ms)
                return True
            except BufferError:
                pass
        return False

    def close(self, timeout_s: float = config.FLUSH_TIMEOUT_S) -> int:
        """Flushes (retrying refused batches record by record); returns how many records were still
        undelivered when `timeout_s` ran out."""
        deadline = time.monotonic() + timeout_s
        left = self.producer.flush(timeout_s)
        if self._to_retry:
            self._retry_alone()
        if self._alone is not None:
            left += self._alone.flush(max(0.0, deadline - time.monotonic()))
        if left:
            log.error("%d records still undelivered after %g s", left, timeout_s)
        return left


def send_events(events: Iterable, bootstrap: str, topic: str = config.TOPIC,
                speedup: float = 0.0) -> int:
    """Produces `events` to `topic` and flushes; returns how many the broker acknowledged."""
    sender = Sender(bootstrap, topic, speedup)
    sender.send(events)
    sender.close()
    return sender.delivered
