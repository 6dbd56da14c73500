"""Checkpoints: one Kafka transaction commits outputs, repartitioned records, changelog and offsets.

Everything a worker produces between two checkpoints goes out inside one transaction (see
collector.py); at the checkpoint the watermarks due and the changed state objects join it, and the
consumed offsets join it via send_offsets_to_transaction with the consumer's group metadata (KIP-447),
so a worker that lost its partitions (a zombie) is fenced instead of committing twice. When Kafka
refuses, the transaction is aborted and the worker rewinds: its in-memory progress since the last
checkpoint is dropped, the consumer goes back to the committed offsets and state is restored.
"""
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

from confluent_kafka import KafkaError, KafkaException, TopicPartition

from .errors import is_fatal, is_fenced, retrying
from .operations import offset_metadata

log = logging.getLogger("wallaroo.checkpoint")
# librdkafka's errors for "no broker answered in time" (as opposed to an answer refusing the call)
KAFKA_AWAY = (KafkaError._TIMED_OUT, KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN)


class TransactionAborted(Exception):
    """The open transaction was aborted: in-memory progress since the last checkpoint is void."""


class ClientsBroken(Exception):
    """A Kafka client can no longer be trusted: a transaction call did not return by its deadline, the
    producer is fatal or fenced, or the consumer cannot read its group's offsets. The worker replaces
    its consumer and producer (see Worker._reconnect)."""

    def __init__(self, why, fenced=False):
        super().__init__(why)
        self.fenced = fenced


class Transactions:
    """The producer's transaction calls, each bounded in time, with the engine's reaction to each error.

    librdkafka's own timeouts are not a guarantee: send_offsets_to_transaction has been seen blocking for
    minutes after a broker restart (librdkafka #5456, #5511). So every call runs on a helper thread and
    is waited for at most `timeout_s` plus a margin. Kafka refusing a commit aborts the transaction
    (TransactionAborted: the caller rewinds); a call that does not return, a producer in a fatal or
    fenced state, or an abort that fails raise ClientsBroken: the worker abandons this producer and
    makes a new one with the same transactional id, which fences the old and settles its transaction.
    """

    def __init__(self, producer, consumer, timeout_s=10.0, margin_s=5.0, stopping=lambda: False):
        self.producer = producer
        self.consumer = consumer
        self.timeout_s = timeout_s
        self.deadline_s = timeout_s + margin_s
        self.stopping = stopping
        self.open = False
        self.commits = 0
        self._calls = ThreadPoolExecutor(max_workers=1, thread_name_prefix="transactions")

    def init(self):
        """Register the transactional id (fencing any older producer with it), retrying while Kafka is
        away; ClientsBroken if this producer cannot do it."""
        attempt = 0
        while True:
            try:
                self._bounded("init_transactions", self.producer.init_transactions, self.timeout_s)
                return
            except KafkaException as e:
                if is_fatal(e):
                    raise ClientsBroken(f"init_transactions: {e}", fenced=is_fenced(e.args[0])) from e
                if self.stopping():
                    raise
                attempt += 1
                log.warning("init_transactions failed (%s); retrying", e)
                time.sleep(min(0.5 * attempt, 5.0))

    def _bounded(self, what, fn, *args):
        future = self._calls.submit(fn, *args)
        try:
            return future.result(self.deadline_s)
        except FutureTimeout:
            self.abandon()
            raise ClientsBroken(f"{what} did not return within {self.deadline_s:.0f} s") from None

    def abandon(self):
        """Give up on this producer without waiting for it (a stuck call keeps its thread)."""
        self.open = False
        self._calls.shutdown(wait=False)

    def begin(self):
        if not self.open:
            try:
                self.producer.begin_transaction()
            except KafkaException as e:      # the producer is in an error state
                raise ClientsBroken(f"begin_transaction: {e}", fenced=is_fenced(e.args[0])) from e
            self.open = True

    def commit(self, offsets: dict, metadata: dict | None = None):
        """Commit the open transaction with `offsets` {(topic, partition): next offset}, each with its
        `metadata` string if given (operations.offset_metadata: read by `machida status`).

        TransactionAborted when Kafka refused the commit and the transaction was aborted (e.g. a
        rebalance fenced this member); ClientsBroken when the producer must be replaced."""
        metadata = metadata or {}
        tps = [TopicPartition(t, p, o, metadata[(t, p)]) if (t, p) in metadata else TopicPartition(t, p, o)
               for (t, p), o in offsets.items()]
        attempt = 0
        while True:
            try:
                if tps:
                    self._bounded("send_offsets_to_transaction", self.producer.send_offsets_to_transaction,
                                  tps, self.consumer.consumer_group_metadata(), self.timeout_s)
                self._bounded("commit_transaction", self.producer.commit_transaction, self.timeout_s)
                self.open = False
                self.commits += 1
                return
            except KafkaException as e:
                err = e.args[0]
                if err.fatal() or is_fenced(err):
                    raise ClientsBroken(f"checkpoint: {err}", fenced=is_fenced(err)) from e
                if err.code() in KAFKA_AWAY:
                    # Kafka did not answer within the call's timeout: the same call on this producer
                    # once Kafka is back is what blocks for minutes (librdkafka #5456, #5511), so a
                    # new producer (which waits for Kafka) takes over instead of a retry.
                    raise ClientsBroken(f"checkpoint: Kafka did not answer ({err})") from e
                if err.retriable() and not err.txn_requires_abort() and attempt < 5:
                    attempt += 1
                    time.sleep(0.2 * attempt)
                    continue
                log.warning("checkpoint refused (%s); aborting and rewinding to the last checkpoint", err)
                self.abort()
                raise TransactionAborted(str(err)) from e

    def abort(self):
        if not self.open:
            return
        try:
            self._bounded("abort_transaction", self.producer.abort_transaction, self.timeout_s)
            self.open = False
        except KafkaException as e:
            raise ClientsBroken(f"abort_transaction: {e}", fenced=is_fenced(e.args[0])) from e

    def close(self, timeout_s=10.0):
        """Abort what is open and send what is queued."""
        try:
            self.abort()
            self.producer.flush(timeout_s)
        finally:
            self._calls.shutdown(wait=False)


class Checkpointer:
    """What has happened since the last checkpoint, and committing it.

    `offsets` is updated by the worker's loop for every consumed record; the task supplies the
    watermarks due and the changed state; `restore(tps)` reloads state after a rewind."""

    def __init__(self, task, collector, transactions, consumer, restore, purge_interval_ms):
        self.task = task
        self.collector = collector
        self.transactions = transactions
        self.consumer = consumer
        self.restore = restore
        self.offsets = {}                 # (topic, partition) -> next offset, since the last checkpoint
        self.committed = {}               # (topic, partition) -> the offset this worker last committed
        self.ends = {}                    # (topic, partition) -> its end, as its last partition EOF named it
                                          # (read to its end since assigned: watermarks go in place)
        self.purgeable = {}               # repartition (topic, partition) -> committed offset
        self.purge_interval_s = purge_interval_ms / 1000.0
        self.next_purge = time.monotonic() + self.purge_interval_s

    @property
    def commits(self):
        return self.transactions.commits

    @property
    def pending(self):
        """Whether anything was read or produced since the last checkpoint (outputs come from records)."""
        return bool(self.offsets) or self.collector.pending

    def reached_end(self, topic, partition, end):
        """The consumer reached a partition's end (its last stable offset): every record below it was
        read or is not for reading (commit markers, aborted records). A transactional topic ends in
        markers, one per producer whose transaction wrote it last, so the record after the last one
        read can lie short of the end; committing the end lets `machida status` and Kafka's own tools
        show a caught-up group with no lag. Past this worker's position only: an end already
        committed costs no checkpoint."""
        key = (topic, partition)
        self.ends[key] = end
        if end > self.offsets.get(key, self.committed.get(key, -1)):
            self.offsets[key] = end

    def checkpoint(self, rewind=True):
        """Commit everything since the last checkpoint in one transaction.

        If Kafka refuses, the transaction is aborted and (with `rewind`) the worker goes back to
        its last committed offsets and state; without it (the partitions are going anyway) the
        progress is only forgotten."""
        started = time.perf_counter()
        # Partitions read to their end since they were assigned take the watermark at once (their
        # on_event_time outputs and state join this transaction); the others get a watermark record.
        wm = self.task.emit_watermarks(local=self.ends) if self.pending else None
        self.task.flush_outputs()        # coalesced sink outputs join this transaction
        if not self.pending:
            return
        for topic, p, kb, blob in self.task.changelog_records():
            self.collector.changelog(topic, p, kb, blob)
        try:
            self.transactions.begin()  # offsets alone still need a transaction
            self.transactions.commit(self.offsets, offset_metadata(self.task, self.offsets))
        except TransactionAborted:
            if rewind:
                self.rewind()
            else:
                self._forget_progress()
            return
        if wm is not None:
            self.task.clock.sent_watermark(wm)
        for (topic, p), offset in self.offsets.items():
            if topic in self.task.stores:
                self.purgeable[(topic, p)] = offset
        self.committed.update(self.offsets)
        self.offsets.clear()
        self.collector.pending = False
        if self.task.metrics is not None:
            self.task.metrics.committed(started)

    def _forget_progress(self):
        self.task.drop_outputs()
        self.offsets.clear()
        self.collector.pending = False
        if self.task.metrics is not None:
            self.task.metrics.forget()
        self.task.clock.newest = self.task.clock.sent

    def recover(self, why):
        """Producing failed mid-transaction (the producer or its transaction is broken): abort, or
        replace the producer, and start over from the last checkpoint."""
        log.warning("producing failed (%s); aborting and rewinding to the last checkpoint", why)
        self.transactions.abort()
        self.rewind()

    def rewind(self, exclude=()):
        """After an abort: drop in-memory progress, go back to the last committed offsets and state."""
        self._forget_progress()
        self.ends.clear()               # the partitions are read again from their committed offsets
        assignment = [tp for tp in self.consumer.assignment() if (tp.topic, tp.partition) not in exclude]
        self.task.drop_state()
        if assignment:
            try:
                committed = retrying("reading committed offsets", lambda: self.consumer.committed(assignment, timeout=10),
                                     self.transactions.stopping, deadline_s=30.0)
            except KafkaException as e:     # seen for minutes after a broker restart: a new consumer helps
                raise ClientsBroken(f"reading committed offsets: {e}") from e
            for tp in committed:
                if tp.offset >= 0:
                    self.consumer.seek(tp)
            self.restore([tp for tp in assignment if tp.topic in self.task.stores])

    def forget(self, partitions):
        """Partitions that leave this worker: no offsets to commit for them, no state to keep."""
        for tp in partitions:
            self.offsets.pop((tp.topic, tp.partition), None)
            self.committed.pop((tp.topic, tp.partition), None)
            self.ends.pop((tp.topic, tp.partition), None)
        self.task.drop_state(partitions)

    def purge_due(self, now):
        return bool(self.purgeable) and now >= self.next_purge

    def purge(self, admin):
        """Delete repartition records below the committed offsets: they are consumed for good."""
        tps = [TopicPartition(t, p, o) for (t, p), o in self.purgeable.items()]
        self.purgeable = {}
        self.next_purge = time.monotonic() + self.purge_interval_s
        for tp, fut in admin.delete_records(tps).items():
            fut.add_done_callback(lambda f, tp=tp: f.exception() and log.warning(
                "purging %s[%d]: %s", tp.topic, tp.partition, f.exception()))
