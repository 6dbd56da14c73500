"""The worker: one consumer in the application's group, one transactional producer, live state.

The worker owns the loop: it consumes source and repartition records and hands each batch to the task
(task.py), which runs the steps and produces through the record collector (collector.py); every
checkpoint interval the checkpointer commits one transaction (checkpoint.py). Partitions move between
workers through the consumer group's rebalances: on revoke the worker checkpoints, on assign it
restores state from the changelog (state.py). When a Kafka client can no longer be trusted (a call that
never returns after a broker restart, a fenced producer), the worker replaces both clients and rejoins
the group: state comes back from the changelog, input from the committed offsets (see README, "When
Kafka fails").
"""
import gc
import logging
import signal
import threading
import time
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient

from . import clients, edges, metrics, queries, topics
from .checkpoint import Checkpointer, ClientsBroken, Transactions
from .collector import RecordCollector
from .event_time import DEFAULT_MAX_EVENT_TIME_SKEW_MS
from .operations import ControlListener, parse_offset_metadata
from .serde import Serde
from .state import restore
from .task import Task
from .tcp import Bridges

log = logging.getLogger("wallaroo.worker")

# Fenced again this soon after a reconnect means another live worker has our transactional id (the
# same --name): reconnecting again would only fence it back.
FENCED_TWICE_WINDOW_S = 60.0
# New objects between two collections of the youngest generation (Python's default: 700).
GC_YOUNG_THRESHOLD = 20_000


class ConsumerFailed(KafkaException):
    """The consumer reported a fatal error: the worker cannot go on."""


class WorkerFenced(RuntimeError):
    """Another live worker uses this worker's transactional id: this one must stop."""


@dataclass
class WorkerOptions:
    """A worker's settings; `machida`'s flags take their defaults from here."""
    name: str = "worker"
    application_id: str | None = None
    checkpoint_interval_ms: int = 1000    # how often one transaction commits outputs, state and offsets
    # With nothing left to read, commit what is done at once, not at the interval (its readers see it
    # sooner), but at most this often (0: only at the interval).
    idle_checkpoint_ms: int = 100
    transaction_timeout_ms: int = 10000   # how long a crashed worker's open transaction can block readers
    session_timeout_ms: int = 10000       # how soon the group notices a worker is gone
    stats_interval_s: float = 10.0
    purge_interval_ms: int = 30000        # how often consumed repartition records are deleted
    replication_factor: int | None = None  # of the topics the worker creates; default: the source's
    min_insync_replicas: int | None = None  # of those topics; default: the broker's
    bootstrap: str | None = None          # default: the first pipeline's source brokers
    # Trust (README "Trust and bad input"): pickle on internal topics only when asked for; how far
    # ahead of its partition's stream time a source record may be (0: no bound); whether to ignore the
    # event time restored from the changelog (after a deliberate jump of the input).
    unsafe_pickle: bool = False
    max_event_time_skew_ms: int = DEFAULT_MAX_EVENT_TIME_SKEW_MS
    reset_event_time: bool = False
    # Metrics (README "Metrics"): counted unless turned off; published to <application id>-metrics
    # every stack_contract.metrics.SNAPSHOT_INTERVAL_S; Prometheus text on metrics_port when given.
    metrics: bool = True
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    # Queries (README "Queries"): @wallaroo.query methods of owned state over HTTP on query_port when given.
    query_port: int | None = None
    query_host: str = "127.0.0.1"
    query_rate_per_s: float = 1000.0      # per client address (one repository card is 33 queries)
    # A message for a state partition this worker owns is applied at once (Task.local_state); off,
    # every message crosses the repartition topic, also to this worker's own partitions.
    local_state: bool = True


class Worker:
    def __init__(self, app, module=None, options: WorkerOptions | None = None):
        self.opts = options or WorkerOptions()
        self.app_id = self.opts.application_id or topics.application_id(app.name)
        self.app = edges.bind(app, self.app_id)    # TCP sources and sinks name their internal topics
        self.bootstrap = self.opts.bootstrap or edges.bootstrap_of(app)
        self.serde = Serde(module, app, unsafe_pickle=self.opts.unsafe_pickle)
        self.running = True
        self.reconnects = 0
        self._commits_before = 0          # checkpoints committed by clients replaced since
        self._last_fenced = None
        self._next_consumer_warning = 0.0
        self.metrics_server = self.publisher = self.queries = None
        self._lag = (0, 0)                # (consumer lag, partitions), read every snapshot interval
        self._replace_clients = None      # why the clients are to be replaced after this consume
        self._assigned = False            # the current consumer has had an assignment
        self.control = ControlListener(self.bootstrap, self.app_id, self.opts.name, self.stop)   # machida shrink

    # --- set-up -------------------------------------------------------------------------------
    def _prepare(self):
        self.admin = admin = AdminClient(clients.admin_config(self.bootstrap))
        self.bridges = Bridges(self.app, self.app_id, self.bootstrap, self.opts.name, self.opts.session_timeout_ms)
        if not self.bridges.prepare(admin, stop=lambda: not self.running):   # TCP topics; listeners bound
            return False
        source_topics = sorted({p.source.topic for p in self.app.pipelines})
        sources = topics.wait_for_topics(admin, source_topics, stop=lambda: not self.running)
        if sources is None:
            return False
        self.partitions = max(sources.values())
        self.task = Task(self.app, self.app_id, self.serde, self.partitions, None, self.opts.name,
                         self.opts.max_event_time_skew_ms, self.opts.reset_event_time, self.opts.metrics,
                         self.opts.local_state)
        replication = self.opts.replication_factor or topics.replication_factor(admin, source_topics)
        extra = {"min.insync.replicas": str(self.opts.min_insync_replicas)} if self.opts.min_insync_replicas else {}
        state_names = [store.name for store in self.task.stores.values()]
        topics.ensure_topics(admin, topics.internal_topics(self.app_id, state_names, self.partitions, extra),
                             replication)
        if self.opts.metrics:
            wanted = {metrics.metrics_topic(self.app_id): (1, dict(metrics.TOPIC_CONFIG, **extra))}
            topics.ensure_topics(admin, wanted, replication)
            self.publisher = metrics.Publisher(Producer(clients.metrics_producer_config(self.bootstrap)),
                                               self.app_id, self.opts.name)
            if self.opts.metrics_port is not None:
                self.metrics_server = metrics.serve(self.task.metrics, self._metric_figures,
                                                    self.opts.metrics_port, self.opts.metrics_host)
        sinks = [s for p in self.app.pipelines for s in p.sinks]
        existing = admin.list_topics(timeout=10).topics
        missing = {s.topic: (self.partitions, dict(topics.NO_TIME_RETENTION, **extra))
                   for s in sinks if s.topic not in existing}
        if missing:
            topics.ensure_topics(admin, missing, replication)
            existing = admin.list_topics(timeout=10).topics
        for s in sinks:                 # an encoder's partition is checked against it
            s.partitions = len(existing[s.topic].partitions)
        if self.opts.query_port is not None:     # bound before joining: its address is in our client.id
            self.queries = queries.QueryServer(self.task, admin, self.app_id, self.opts.query_port,
                                               self.opts.query_host, self._checkpoints, self.opts.query_rate_per_s)
        self.control.prepare(admin, replication)    # before joining: see ControlListener
        self._connect()
        self.bridges.start()
        self.control.start()
        if self.queries is not None:
            self.queries.start()
        return True

    def _connect(self):
        """A new consumer in the group and a new transactional producer, and everything that uses them."""
        while True:
            mine = []           # this consumer, once made: errors of an abandoned one are ignored
            consumer = Consumer({**clients.consumer_config(
                self.bootstrap, self.app_id, self._client_id(), self.opts.session_timeout_ms,
                edges.consumer_log_settings(self.app)),
                "error_cb": lambda err: self._on_client_error(mine[0] if mine else None, err)})
            mine.append(consumer)
            producer = Producer(clients.producer_config(
                self.bootstrap, f"{self.app_id}-{self.opts.name}", self.opts.transaction_timeout_ms,
                edges.producer_linger_ms(self.app), edges.producer_log_settings(self.app)))
            transactions = Transactions(producer, consumer, stopping=lambda: not self.running)
            try:
                transactions.init()
                break
            except ClientsBroken as e:
                self._fenced_again(e)
                log.warning("%s: %s; trying a new producer", self.opts.name, e)
                _abandon(consumer, transactions)
        self.consumer, self.transactions = consumer, transactions
        self._assigned = False
        self.collector = RecordCollector(transactions, topics.dead_letter_topic(self.app_id), self.opts.name)
        self.task.collector = self.collector
        self.checkpointer = Checkpointer(self.task, self.collector, transactions, consumer,
                                         self._restore, self.opts.purge_interval_ms)
        consumer.subscribe(self.task.source_topics + list(self.task.stores),
                           on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost)

    def _client_id(self):
        base = f"{self.app_id}-{self.opts.name}"
        if self.queries is None:
            return base
        return queries.advertised_client_id(base, self.opts.query_host, self.queries.port)

    def _checkpoints(self):
        return self._commits_before + self.transactions.commits

    def _reconnect(self, why):
        """Replace both clients: what was not committed is redone from the last checkpoint."""
        self._fenced_again(why)
        self.reconnects += 1
        log.warning("%s: %s; replacing the Kafka consumer and producer (state is restored on assignment)",
                    self.opts.name, why)
        self._commits_before += self.transactions.commits
        old = self.consumer, self.transactions
        self.consumer = None              # from here on, callbacks of the old consumer are ignored
        old[1].abandon()
        self.task.drop_state()
        self.task.clock.newest = self.task.clock.sent
        if self.task.metrics is not None:
            self.task.metrics.forget()
        self._connect()
        _abandon(*old)

    def _fenced_again(self, why):
        if not getattr(why, "fenced", False):
            return
        now = time.monotonic()
        if self._last_fenced is not None and now - self._last_fenced < FENCED_TWICE_WINDOW_S:
            raise WorkerFenced(f"fenced twice within {FENCED_TWICE_WINDOW_S:.0f} s ({why}): another worker "
                               f"runs with the name {self.opts.name!r}")
        self._last_fenced = now

    # --- the loop -----------------------------------------------------------------------------
    def run(self):
        """Process until stop() or SIGTERM/SIGINT; then checkpoint and leave the group."""
        signal.signal(signal.SIGTERM, lambda *_: self.stop())
        signal.signal(signal.SIGINT, lambda *_: self.stop())
        if not self._prepare():
            return
        _tune_garbage_collector()
        log.info("%s: running application %r as %s (group %s, %d partitions)", self.opts.name,
                 self.app.name, self.app_id, self.app_id, self.partitions)
        interval = self.opts.checkpoint_interval_ms / 1000.0
        next_checkpoint = time.monotonic() + interval
        idle_gap = self.opts.idle_checkpoint_ms / 1000.0
        last_checkpoint = time.monotonic()
        next_stats, last = time.monotonic() + self.opts.stats_interval_s, dict(self.task.stats)
        next_snapshot = time.monotonic() if self.publisher else float("inf")
        try:
            while self.running:
                try:
                    # an idle consume would hold a query for its whole timeout: wait less when serving them
                    idle = self._consume(min(0.1 if self.queries is None else queries.POLL_S, interval))
                    if self._replace_clients is not None:
                        why, self._replace_clients = self._replace_clients, None
                        raise ClientsBroken(why)
                    if self.queries is not None:
                        self.queries.serve()
                    now = time.monotonic()
                    if now >= next_checkpoint or (idle and idle_gap and now >= last_checkpoint + idle_gap
                                                  and self.checkpointer.pending):
                        self.checkpointer.checkpoint()
                        next_checkpoint, last_checkpoint = now + interval, now
                    if self.checkpointer.purge_due(now):
                        self.checkpointer.purge(self.admin)
                except ClientsBroken as e:
                    self._reconnect(e)
                now = time.monotonic()
                if now >= next_stats:
                    self._log_stats(last, now - next_stats + self.opts.stats_interval_s)
                    last, next_stats = dict(self.task.stats), now + self.opts.stats_interval_s
                if now >= next_snapshot:
                    self._publish_metrics()
                    next_snapshot = now + metrics.SNAPSHOT_INTERVAL_S
            self.checkpointer.checkpoint()
        finally:
            self._close()

    def _consume(self, timeout_s):
        """Handle what one poll brings; returns whether the worker is idle: the poll brought nothing
        within `timeout_s`. (Not "every partition at its end": a worker that keeps up with a live
        stream is at the end after every poll, and checkpointing at the idle rate then cost the day's
        workers 15% more CPU and, through some allocation pattern not found, 450-500 MB of RSS
        instead of 120.)"""
        consumer, offsets = self.consumer, self.checkpointer.offsets
        try:
            # What is fetched already, without waiting; when nothing is, wait for the first message
            # only. consume(n, timeout) waits for n messages or the whole timeout, which held the last
            # records of a burst, and every record of a slow stream, back by up to `timeout_s`.
            batch = consumer.consume(1000, 0)
            if not batch:
                first = consumer.poll(timeout_s)
                if first is None:
                    return True
                batch = [first, *consumer.consume(999, 0)]
            for m in self.task.process_batch(batch, offsets):     # its partition EOFs and errors
                err = m.error()
                if err.fatal():
                    raise ConsumerFailed(err)
                if err.code() == KafkaError._PARTITION_EOF:
                    self._reached_end(consumer, m)
                else:
                    self._consumer_warning(err)
        except ConsumerFailed:
            raise
        except KafkaException as e:   # from producing: the producer or its transaction broke
            self.checkpointer.recover(e)
        return False

    def _reached_end(self, consumer, m):
        """A partition EOF names the partition's end, for the next checkpoint to commit; only while
        this consumer holds the partition (one fetched before a revoke must not move the next
        owner's offset). EOFs come once per burst per partition: the assignment lookup is cheap."""
        topic, partition = m.topic(), m.partition()
        if any(tp.partition == partition and tp.topic == topic for tp in consumer.assignment()):
            self.checkpointer.reached_end(topic, partition, m.offset())

    def stop(self):
        self.running = False

    def _on_client_error(self, consumer, err):
        """librdkafka's global errors (it retries them all), served by consume()."""
        if consumer is not self.consumer or consumer is None:
            return
        if err.code() == KafkaError._ALL_BROKERS_DOWN and self._replace_clients is None and self._assigned:
            # After every broker went away the producer's next send_offsets_to_transaction can block
            # far past its timeout (librdkafka #5456, #5511: a stale coordinator), and its open
            # transaction cannot commit anyway: replace both clients now (the new producer waits for
            # Kafka to answer) instead of after a hung checkpoint. Not before the consumer's first
            # assignment: clients made while Kafka was away report it too, and are fresh.
            self._replace_clients = f"every broker went away ({err.str()})"
        self._consumer_warning(err)

    def _consumer_warning(self, err):
        """Log consumer errors (all retried by librdkafka), at most one a second: an outage repeats them."""
        now = time.monotonic()
        if now >= self._next_consumer_warning:
            log.warning("%s: consumer: %s", self.opts.name, err)
            self._next_consumer_warning = now + 1.0

    def _publish_metrics(self):
        try:
            self._lag = metrics.consumer_lag(self.consumer)
        except Exception as e:  # noqa: BLE001 - best effort (a closed consumer): keep the last figures
            log.debug("%s: consumer lag: %s", self.opts.name, e)
        self.publisher.publish(self.task.metrics.snapshot(self._metric_figures()))

    def _metric_figures(self):
        """The worker's own figures for a metrics snapshot (also read by the Prometheus thread)."""
        return {"dead_letters": self.task.stats["dead"], "reconnects": self.reconnects, "consumer_lag": self._lag[0],
                "event_time_lag_ms": metrics.event_time_lag_ms(self.task.clock.newest), "partitions": self._lag[1]}

    def _close(self):
        self.control.stop()
        self.bridges.stop()
        if self.publisher is not None:
            self._publish_metrics()       # the final counts
            self.publisher.close()
        if self.metrics_server is not None:
            self.metrics_server.shutdown()
        if self.queries is not None:
            self.queries.shutdown()
        try:
            self.consumer.close()   # revokes: checkpoints anything left
        except Exception as e:  # noqa: BLE001 - closing after a fatal error
            log.warning("closing consumer: %s", e)
        try:
            self.transactions.close()
        except ClientsBroken as e:
            log.warning("closing producer: %s", e)

    # --- rebalances -----------------------------------------------------------------------------
    # Each callback first checks it comes from the current consumer: an abandoned one closing in the
    # background revokes too, and must not touch the new clients' state.
    def _on_assign(self, consumer, partitions):
        if consumer is not self.consumer:
            return
        self._assigned = True
        self._learn_source_time(consumer, [tp for tp in partitions if tp.topic not in self.task.stores])
        self._restore([tp for tp in partitions if tp.topic in self.task.stores])
        log.info("%s: assigned %s", self.opts.name, _describe(partitions))

    def _learn_source_time(self, consumer, tps):
        """Start the event-time bound (SourceClock.admit) at the newest source time the partitions'
        last checkpoints had accepted: the time saved in the changelog lags it by a checkpoint or two,
        which at replay speed can be hours of event time, and this worker's own newest time may lag a
        partition another worker read further. Best effort: without it the changelog's time is used."""
        if not tps or self.opts.reset_event_time:
            return
        try:
            committed = consumer.committed(tps, timeout=10)
        except KafkaException as e:
            log.warning("%s: reading the committed offsets' source time: %s", self.opts.name, e)
            return
        for tp in committed:
            st = parse_offset_metadata(tp.metadata).get("st")
            if type(st) is int and st >= 0 and not self.task.clock.learn_committed(st):
                log.warning("%s: ignoring the source time %d committed with %s[%d]: ahead of the wall clock",
                            self.opts.name, st, tp.topic, tp.partition)

    def _restore(self, tps):
        by_topic = {}
        for tp in tps:
            by_topic.setdefault(tp.topic, []).append(tp.partition)
        for topic, parts in by_topic.items():
            store = self.task.stores[topic]
            t0 = time.monotonic()
            log.info("%s: restoring state %r partitions %s", self.opts.name, store.name, sorted(parts))
            try:
                tables = restore(self.bootstrap, store.changelog, parts, timeout_s=120.0,
                                 stopping=lambda: not self.running)
            except (KafkaException, TimeoutError) as e:
                raise ClientsBroken(f"restoring {store.changelog}: {e}") from e
            for p, table in tables.items():
                store.adopt(p, table)
            if self.task.metrics is not None:
                self.task.metrics.restored(time.monotonic() - t0)
            log.info("%s: restored state %r partitions %s in %.2f s", self.opts.name, store.name,
                     sorted(parts), time.monotonic() - t0)

    def _on_revoke(self, consumer, partitions):
        if consumer is not self.consumer:
            return
        log.info("%s: revoking %s", self.opts.name, _describe(partitions))
        try:
            self.checkpointer.checkpoint(rewind=False)   # all of them go: nothing to rewind into
        finally:
            self.checkpointer.forget(partitions)

    def _on_lost(self, consumer, partitions):
        if consumer is not self.consumer:
            return
        # The group moved on without us: the coordinator did not hear from us for a session timeout (a
        # broker outage, a frozen process). Such a producer's next send_offsets_to_transaction can block
        # far past its timeout (librdkafka #5456, #5511: a stale coordinator), so both clients are
        # replaced at once, once this consume returns, instead of after a hung checkpoint: the new
        # producer's init_transactions aborts the open transaction, state comes back on assignment.
        log.warning("%s: lost %s; replacing the clients", self.opts.name, _describe(partitions))
        self.checkpointer.forget(partitions)
        self._replace_clients = f"lost {_describe(partitions)} (the group moved on without this worker)"

    def _log_stats(self, last, seconds):
        stats = self.task.stats
        rate = {k: (stats[k] - last[k]) / max(seconds, 1e-9) for k in stats}
        log.info("%s: in %.0f ev/s, to state %.0f/s, out %.0f/s, dead letters %d total, %d checkpoints%s",
                 self.opts.name, rate["in"], rate["state"], rate["out"], stats["dead"], self._commits_before + self.transactions.commits,
                 f", {self.reconnects} reconnects" if self.reconnects else "")


def _tune_garbage_collector():
    """Python's cyclic collector is the worker's hidden cost: a consume brings a thousand messages, and
    each youngest-generation collection (every 700 new objects by default) also ages the live state,
    whose oldest generation is then walked whole again and again as it grows. Collect the young less
    often, and freeze what start-up made (modules, the application): full collections only walk
    what came since. Refcounting still frees all that is not a cycle at once."""
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, 20, 20)


def _abandon(consumer, transactions):
    """Give up on old clients; close the consumer in the background: closing may hang on the very
    fault that broke it, and leaving the group lets the others (and our new member) rebalance."""
    transactions.abandon()

    def close():
        try:
            consumer.close()
        except Exception as e:  # noqa: BLE001 - best effort
            log.debug("closing an abandoned consumer: %s", e)
    threading.Thread(target=close, name="abandoned-consumer", daemon=True).start()


def _describe(partitions):
    by = {}
    for tp in partitions:
        by.setdefault(tp.topic, []).append(tp.partition)
    return "; ".join(f"{t} {sorted(ps)}" for t, ps in sorted(by.items())) or "nothing"
