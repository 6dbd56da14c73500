"""The worker: one consumer in the application's group, one transactional producer, live state.

The worker owns the loop: it consumes source and repartition records and hands each to the task
(task.py), which runs the steps and produces through the record collector (collector.py); every
checkpoint interval the checkpointer commits one transaction (checkpoint.py). Partitions move between
workers through the consumer group's rebalances: on revoke the worker checkpoints, on assign it
restores state from the changelog (state.py).
"""
import logging
import signal
import time
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient

from . import clients, topics
from .checkpoint import Checkpointer, Transactions
from .collector import RecordCollector
from .event_time import DEFAULT_MAX_EVENT_TIME_SKEW_MS
from .serde import Serde
from .state import restore
from .task import Task

log = logging.getLogger("wallaroo.worker")


@dataclass
class WorkerOptions:
    """A worker's settings; `machida`'s flags take their defaults from here."""
    name: str = "worker"
    application_id: str | None = None
    checkpoint_interval_ms: int = 1000    # how often one transaction commits outputs, state and offsets
    transaction_timeout_ms: int = 10000   # how long a crashed worker's open transaction can block readers
    session_timeout_ms: int = 10000       # how soon the group notices a worker is gone
    stats_interval_s: float = 10.0
    purge_interval_ms: int = 30000        # how often consumed repartition records are deleted
    bootstrap: str | None = None          # default: the first pipeline's source brokers
    # Trust (README "Trust and bad input"): pickle on internal topics only when asked for; how far
    # ahead of its partition's stream time a source record may be (0: no bound); whether to ignore the
    # event time restored from the changelog (after a deliberate jump of the input).
    unsafe_pickle: bool = False
    max_event_time_skew_ms: int = DEFAULT_MAX_EVENT_TIME_SKEW_MS
    reset_event_time: bool = False


class Worker:
    def __init__(self, app, module=None, options: WorkerOptions | None = None):
        self.app = app
        self.opts = options or WorkerOptions()
        self.app_id = self.opts.application_id or topics.application_id(app.name)
        self.bootstrap = self.opts.bootstrap or app.pipelines[0].source.brokers
        self.serde = Serde(module, app, unsafe_pickle=self.opts.unsafe_pickle)
        self.running = True

    # --- set-up -------------------------------------------------------------------------------
    def _prepare(self):
        self.admin = admin = AdminClient(clients.admin_config(self.bootstrap))
        source_topics = sorted({p.source.topic for p in self.app.pipelines})
        sources = topics.wait_for_topics(admin, source_topics, stop=lambda: not self.running)
        if sources is None:
            return False
        self.partitions = max(sources.values())
        self.producer = Producer(clients.producer_config(
            self.bootstrap, f"{self.app_id}-{self.opts.name}", self.opts.transaction_timeout_ms))
        self.consumer = Consumer(clients.consumer_config(
            self.bootstrap, self.app_id, f"{self.app_id}-{self.opts.name}", self.opts.session_timeout_ms))
        self.transactions = Transactions(self.producer, self.consumer)
        self.collector = RecordCollector(self.producer, self.transactions,
                                         topics.dead_letter_topic(self.app_id), self.opts.name)
        self.task = Task(self.app, self.app_id, self.serde, self.partitions, self.collector, self.opts.name,
                         self.opts.max_event_time_skew_ms, self.opts.reset_event_time)
        self.checkpointer = Checkpointer(self.task, self.collector, self.transactions, self.consumer,
                                         self._restore, self.opts.purge_interval_ms)
        state_names = [store.name for store in self.task.stores.values()]
        topics.ensure_topics(admin, topics.internal_topics(self.app_id, state_names, self.partitions))
        sinks = {p.sink.topic for p in self.app.pipelines}
        existing = admin.list_topics(timeout=10).topics
        missing = {t: (self.partitions, dict(topics.NO_TIME_RETENTION)) for t in sinks if t not in existing}
        if missing:
            topics.ensure_topics(admin, missing)
        self.transactions.init()
        self.consumer.subscribe(self.task.source_topics + list(self.task.stores),
                                on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost)
        return True

    # --- the loop -----------------------------------------------------------------------------
    def run(self):
        """Process until stop() or SIGTERM/SIGINT; then checkpoint and leave the group."""
        signal.signal(signal.SIGTERM, lambda *_: self.stop())
        signal.signal(signal.SIGINT, lambda *_: self.stop())
        if not self._prepare():
            return
        log.info("%s: running application %r as %s (group %s, %d partitions)", self.opts.name,
                 self.app.name, self.app_id, self.app_id, self.partitions)
        interval = self.opts.checkpoint_interval_ms / 1000.0
        next_checkpoint = time.monotonic() + interval
        next_stats, last = time.monotonic() + self.opts.stats_interval_s, dict(self.task.stats)
        handlers = {t: self.task.process_source for t in self.task.source_topics}
        handlers.update({t: self.task.process_repartition for t in self.task.stores})
        consumer, checkpointer, offsets = self.consumer, self.checkpointer, self.checkpointer.offsets
        try:
            while self.running:
                for m in consumer.consume(1000, min(0.1, interval)):
                    err = m.error()
                    if err is not None:
                        if err.fatal():
                            raise KafkaException(err)
                        if err.code() != KafkaError._PARTITION_EOF:
                            log.warning("consumer: %s", err)
                        continue
                    topic = m.topic()
                    handlers[topic](m)
                    offsets[(topic, m.partition())] = m.offset() + 1
                now = time.monotonic()
                if now >= next_checkpoint:
                    checkpointer.checkpoint()
                    next_checkpoint = now + interval
                if checkpointer.purge_due(now):
                    checkpointer.purge(self.admin)
                if now >= next_stats:
                    self._log_stats(last, now - next_stats + self.opts.stats_interval_s)
                    last, next_stats = dict(self.task.stats), now + self.opts.stats_interval_s
            checkpointer.checkpoint()
        finally:
            self._close()

    def stop(self):
        self.running = False

    def _close(self):
        try:
            self.consumer.close()   # revokes: checkpoints anything left
        except Exception as e:  # noqa: BLE001 - closing after a fatal error
            log.warning("closing consumer: %s", e)
        self.transactions.close()

    # --- rebalances -----------------------------------------------------------------------------
    def _on_assign(self, consumer, partitions):
        self._restore([tp for tp in partitions if tp.topic in self.task.stores])
        log.info("%s: assigned %s", self.opts.name, _describe(partitions))

    def _restore(self, tps):
        by_topic = {}
        for tp in tps:
            by_topic.setdefault(tp.topic, []).append(tp.partition)
        for topic, parts in by_topic.items():
            store = self.task.stores[topic]
            t0 = time.monotonic()
            for p, table in restore(self.bootstrap, store.changelog, parts).items():
                store.adopt(p, table)
            log.info("%s: restored state %r partitions %s in %.2f s", self.opts.name, store.name,
                     sorted(parts), time.monotonic() - t0)

    def _on_revoke(self, consumer, partitions):
        log.info("%s: revoking %s", self.opts.name, _describe(partitions))
        self.checkpointer.checkpoint(rewind=False)   # all of them go: nothing to rewind into
        self.checkpointer.forget(partitions)

    def _on_lost(self, consumer, partitions):
        log.warning("%s: lost %s; aborting the open transaction", self.opts.name, _describe(partitions))
        self.checkpointer.abort_and_rewind(partitions)

    def _log_stats(self, last, seconds):
        stats = self.task.stats
        rate = {k: (stats[k] - last[k]) / max(seconds, 1e-9) for k in stats}
        log.info("%s: in %.0f ev/s, to state %.0f/s, out %.0f/s, dead letters %d total, %d checkpoints",
                 self.opts.name, rate["in"], rate["state"], rate["out"], stats["dead"], self.checkpointer.commits)


def _describe(partitions):
    by = {}
    for tp in partitions:
        by.setdefault(tp.topic, []).append(tp.partition)
    return "; ".join(f"{t} {sorted(ps)}" for t, ps in sorted(by.items())) or "nothing"
