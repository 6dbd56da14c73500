"""The worker: one consumer in the application's group, one transactional producer, live state.

Source records run through the stateless steps where they are consumed. A message reaching a state
step is produced to that state's repartition topic, keyed by its partition key; whichever worker owns
that partition applies the state computation and carries the output on. Every checkpoint interval the
worker commits one transaction (see checkpoint.py). Partitions move between workers through the
consumer group's rebalances: on revoke the worker checkpoints, on assign it restores state.
"""
import logging
import signal
import time
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from . import topics as T
from .checkpoint import TransactionAborted, Transactions
from .event_time import (WATERMARK_HEADERS, SourceClock, decode_watermark, encode_watermark,
                         is_watermark, record_time)
from .routing import H_STEP, KeyRouter, key_bytes, parse_step_header, step_header
from .serde import Serde
from .state import StateStore, restore
from .steps import Executor, StepError, encode

log = logging.getLogger("wallaroo.worker")


@dataclass
class WorkerOptions:
    name: str = "worker"
    application_id: str | None = None
    checkpoint_interval_ms: int = 1000
    transaction_timeout_ms: int = 10000
    session_timeout_ms: int = 10000
    stats_interval_s: float = 10.0
    purge_interval_ms: int = 30000        # how often consumed repartition records are deleted
    bootstrap: str | None = None          # default: the first pipeline's source brokers


class Worker:
    def __init__(self, app, module=None, options: WorkerOptions | None = None):
        self.app = app
        self.opts = options or WorkerOptions()
        self.app_id = self.opts.application_id or T.application_id(app.name)
        self.bootstrap = self.opts.bootstrap or app.pipelines[0].source.brokers
        self.serde = Serde(module)
        self.executor = Executor(app, self._route, self._sink)
        self.running = True
        self.current_ts = None
        self.offsets = {}                 # (topic, partition) -> next offset, since the last checkpoint
        self.pending = False              # produced something since the last checkpoint
        self.clock = SourceClock()
        self.stats = {"in": 0, "state": 0, "out": 0, "dead": 0}
        self.dead_logged = 0
        self.purgeable = {}               # repartition (topic, partition) -> committed offset
        self.next_purge = time.monotonic() + self.opts.purge_interval_ms / 1000.0

        self.by_source = {}
        self.decoders = {}                # source topic -> [(pipeline index, plain decoder function)]
        for pi, p in enumerate(app.pipelines):
            self.by_source.setdefault(p.source.topic, []).append(pi)
            decode = getattr(p.source.decoder, "func", p.source.decoder)
            self.decoders.setdefault(p.source.topic, []).append((pi, decode))
        self.stores = {}                  # repartition topic -> StateStore
        self.state_topic = {}             # state name -> repartition topic
        for _pi, _si, s in app.state_steps():
            if s.state_name not in self.state_topic:
                topic = T.repartition_topic(self.app_id, s.state_name)
                self.state_topic[s.state_name] = topic
                self.stores[topic] = StateStore(s.state_name, s.state_class,
                                                T.changelog_topic(self.app_id, s.state_name))
        self.dead_letter_topic = T.dead_letter_topic(self.app_id)

    # --- set-up -------------------------------------------------------------------------------
    def _prepare(self):
        self.admin = admin = AdminClient({"bootstrap.servers": self.bootstrap})
        sources = T.wait_for_topics(admin, list(self.by_source), stop=lambda: not self.running)
        if sources is None:
            return False
        self.partitions = max(sources.values())
        T.ensure_topics(admin, T.internal_topics(self.app_id, list(self.state_topic), self.partitions))
        sinks = {p.sink.topic for p in self.app.pipelines}
        existing = admin.list_topics(timeout=10).topics
        missing = {t: (self.partitions, dict(T.NO_TIME_RETENTION)) for t in sinks if t not in existing}
        if missing:
            T.ensure_topics(admin, missing)
        self.routers = {(pi, si): KeyRouter(s.partition_keys, self.partitions)
                        for pi, si, s in self.app.state_steps()}
        self.producer = Producer({
            "bootstrap.servers": self.bootstrap,
            "transactional.id": f"{self.app_id}-{self.opts.name}",
            "transaction.timeout.ms": self.opts.transaction_timeout_ms,
            "linger.ms": 20, "batch.size": 1_000_000, "compression.type": "lz4",
            "queue.buffering.max.messages": 1_000_000,
            "message.max.bytes": T.MAX_STATE_BYTES + 1024 * 1024,
        })
        self.producer.init_transactions(60)
        self.consumer = Consumer({
            "bootstrap.servers": self.bootstrap,
            "group.id": self.app_id,
            "client.id": f"{self.app_id}-{self.opts.name}",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            # Eager range assignment: every rebalance revokes all partitions, and we checkpoint before
            # giving them up while our generation is still valid; partition i of co-partitioned topics
            # lands on one worker.
            "partition.assignment.strategy": "range",
            # One fetch queue serves source and repartition partitions: keep it short, so records bound
            # for state do not wait behind seconds of prefetched source records, and refill it at once
            # (librdkafka's default waits a whole second once the queue was full).
            "queued.max.messages.kbytes": 8192,
            "fetch.queue.backoff.ms": 5,
            "session.timeout.ms": self.opts.session_timeout_ms,
            "heartbeat.interval.ms": max(100, self.opts.session_timeout_ms // 5),
        })
        self.txn = Transactions(self.producer, self.consumer)
        self.consumer.subscribe(list(self.by_source) + list(self.stores),
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
        next_stats, last = time.monotonic() + self.opts.stats_interval_s, dict(self.stats)
        handlers = {t: self._on_source for t in self.by_source}
        handlers.update({t: self._on_repartition for t in self.stores})
        consumer = self.consumer
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
                    self.offsets[(topic, m.partition())] = m.offset() + 1
                now = time.monotonic()
                if now >= next_checkpoint:
                    self.checkpoint()
                    next_checkpoint = now + interval
                if self.purgeable and now >= self.next_purge:
                    self._purge()
                if now >= next_stats:
                    self._log_stats(last, now - next_stats + self.opts.stats_interval_s)
                    last, next_stats = dict(self.stats), now + self.opts.stats_interval_s
            self.checkpoint()
        finally:
            self._close()

    def stop(self):
        self.running = False

    def _close(self):
        try:
            self.consumer.close()   # revokes: checkpoints anything left
        except Exception as e:  # noqa: BLE001 - closing after a fatal error
            log.warning("closing consumer: %s", e)
        self.txn.abort()
        self.producer.flush(10)

    # --- records --------------------------------------------------------------------------------
    def _on_source(self, m):
        ts = record_time(m)
        self.clock.saw(ts)
        self.current_ts = ts
        self.stats["in"] += 1
        for pi, decode in self.decoders[m.topic()]:
            try:
                data = decode(m.value()) if decode is not None else m.value()
            except Exception as e:  # noqa: BLE001 - user code
                self._dead_letter(m, "decoder", e)
                continue
            try:
                self.executor.run(pi, 0, data)
            except StepError as e:
                self._dead_letter(m, e.step_name, e.cause)

    def _on_repartition(self, m):
        store = self.stores[m.topic()]
        p = m.partition()
        headers = m.headers()
        if is_watermark(headers):
            self._advance(store, p, decode_watermark(m.value()))
            return
        self.stats["state"] += 1
        ts = record_time(m)
        self.current_ts = ts
        kb = m.key()
        try:
            pi, si = parse_step_header(headers[0][1])
            state = store.get(p, kb)
            if self.executor.apply_state(pi, si, state, self.serde.loads(m.value()), ts):
                store.changed(p, kb)
        except StepError as e:
            store.changed(p, kb)          # it may have half-changed before raising
            self._dead_letter(m, e.step_name, e.cause)
        except Exception as e:  # noqa: BLE001 - deserialize or header
            self._dead_letter(m, "deserialize", e)

    def _advance(self, store, p, wm):
        if wm <= store.event_time.get(p, -1):
            return
        store.event_time[p] = wm
        self.current_ts = wm
        for kb, state in list(store.partitions.get(p, {}).items()):
            try:
                if self.executor.advance_event_time(store.name, state, wm):
                    store.changed(p, kb)
            except StepError as e:
                store.changed(p, kb)
                log.warning("%s: %s (state partition %d)", self.opts.name, e, p)
                self.stats["dead"] += 1

    def _route(self, pi, si, step, data):
        try:
            kb = key_bytes(step.key_for(data))
            partition = self.routers[(pi, si)].partition_for(kb)
            value = self.serde.dumps(data)
        except Exception as e:  # noqa: BLE001 - the partitioner, a key outside partition_keys, serialize
            raise StepError(step.name, e) from e
        self._produce(self.state_topic[step.state_name], value, kb, partition,
                      self.current_ts, [(H_STEP, step_header(pi, si))])

    def _sink(self, pi, data):
        sink = self.app.pipelines[pi].sink
        try:
            value, key = encode(sink.encoder, data)
        except Exception as e:  # noqa: BLE001 - user code
            raise StepError("encoder", e) from e
        if len(value) > sink.max_message_size > 0:
            raise StepError("encoder", ValueError(
                f"encoded output is {len(value)} bytes, over the sink's max_message_size {sink.max_message_size}"))
        self.stats["out"] += 1
        self._produce(sink.topic, value, key, None, self.current_ts, None)

    def _produce(self, topic, value, key, partition, ts, headers):
        kwargs = {"key": key, "headers": headers}
        if partition is not None:
            kwargs["partition"] = partition
        if ts is not None:
            kwargs["timestamp"] = ts
        if not self.txn.open:
            self.txn.begin()
        self.pending = True
        while True:
            try:
                self.producer.produce(topic, value, **kwargs)
                return
            except BufferError:
                self.producer.poll(0.05)

    def _dead_letter(self, m, step, error):
        self.stats["dead"] += 1
        if self.dead_logged < 100:
            self.dead_logged += 1
            log.warning("%s: dead letter from %s[%d]@%d at %s: %s: %s%s", self.opts.name, m.topic(),
                        m.partition(), m.offset(), step, type(error).__name__, error,
                        "  (further dead letters are counted, not logged)" if self.dead_logged == 100 else "")
        headers = [("error", f"{type(error).__name__}: {error}"[:2000].encode()), ("step", str(step).encode()),
                   ("topic", m.topic().encode()), ("partition", str(m.partition()).encode()),
                   ("offset", str(m.offset()).encode())]
        self._produce(self.dead_letter_topic, m.value(), m.key(), None, record_time(m), headers)

    # --- checkpoints ----------------------------------------------------------------------------
    def checkpoint(self, rewind=True):
        """Commit everything since the last checkpoint in one transaction.

        If Kafka refuses, the transaction is aborted and (with `rewind`) the worker goes back to
        its last committed offsets and state."""
        if not self.offsets and not self.pending:
            return
        wm = self.clock.watermark_due()
        if wm is not None:
            for topic in self.stores:
                for p in range(self.partitions):
                    self._produce(topic, encode_watermark(wm), None, p, wm, WATERMARK_HEADERS)
        for store in self.stores.values():
            for p, kb, blob in store.changelog_records():
                self._produce(store.changelog, blob, kb, p, None, None)
        try:
            self.txn.begin()  # offsets alone still need a transaction
            self.txn.commit(self.offsets)
        except TransactionAborted:
            if rewind:
                self._rewind()
            else:
                self.offsets.clear()
                self.pending = False
                self.clock.newest = self.clock.sent
            return
        if wm is not None:
            self.clock.sent_watermark(wm)
        for (topic, p), offset in self.offsets.items():
            if topic in self.stores:
                self.purgeable[(topic, p)] = offset
        self.offsets.clear()
        self.pending = False

    def _purge(self):
        """Delete repartition records below the committed offsets: they are consumed for good."""
        tps = [TopicPartition(t, p, o) for (t, p), o in self.purgeable.items()]
        self.purgeable = {}
        self.next_purge = time.monotonic() + self.opts.purge_interval_ms / 1000.0
        for tp, fut in self.admin.delete_records(tps).items():
            fut.add_done_callback(lambda f, tp=tp: f.exception() and log.warning(
                "purging %s[%d]: %s", tp.topic, tp.partition, f.exception()))

    def _rewind(self, exclude=()):
        """After an abort: drop in-memory progress, go back to the last committed offsets and state."""
        self.offsets.clear()
        self.pending = False
        self.clock.newest = self.clock.sent
        assignment = [tp for tp in self.consumer.assignment() if (tp.topic, tp.partition) not in exclude]
        for store in self.stores.values():
            store.drop_all()
        if assignment:
            for tp in self.consumer.committed(assignment, timeout=30):
                if tp.offset >= 0:
                    self.consumer.seek(tp)
            self._restore([tp for tp in assignment if tp.topic in self.stores])

    # --- rebalances -----------------------------------------------------------------------------
    def _on_assign(self, consumer, partitions):
        self._restore([tp for tp in partitions if tp.topic in self.stores])
        log.info("%s: assigned %s", self.opts.name, _describe(partitions))

    def _restore(self, tps):
        by_topic = {}
        for tp in tps:
            by_topic.setdefault(tp.topic, []).append(tp.partition)
        for topic, parts in by_topic.items():
            store = self.stores[topic]
            t0 = time.monotonic()
            for p, table in restore(self.bootstrap, store.changelog, parts).items():
                store.adopt(p, table)
            log.info("%s: restored state %r partitions %s in %.2f s", self.opts.name, store.name,
                     sorted(parts), time.monotonic() - t0)

    def _on_revoke(self, consumer, partitions):
        log.info("%s: revoking %s", self.opts.name, _describe(partitions))
        self.checkpoint(rewind=False)   # all of them go: nothing to rewind into
        self._forget(partitions)

    def _on_lost(self, consumer, partitions):
        log.warning("%s: lost %s; aborting the open transaction", self.opts.name, _describe(partitions))
        self.txn.abort()
        self._forget(partitions)
        self._rewind(exclude={(tp.topic, tp.partition) for tp in partitions})

    def _forget(self, partitions):
        for tp in partitions:
            self.offsets.pop((tp.topic, tp.partition), None)
            if tp.topic in self.stores:
                self.stores[tp.topic].drop(tp.partition)

    def _log_stats(self, last, seconds):
        d = {k: (self.stats[k] - last[k]) / max(seconds, 1e-9) for k in self.stats}
        log.info("%s: in %.0f ev/s, to state %.0f/s, out %.0f/s, dead letters %d total, %d checkpoints",
                 self.opts.name, d["in"], d["state"], d["out"], self.stats["dead"], self.txn.commits)


def _describe(partitions):
    by = {}
    for tp in partitions:
        by.setdefault(tp.topic, []).append(tp.partition)
    return "; ".join(f"{t} {sorted(ps)}" for t, ps in sorted(by.items())) or "nothing"
