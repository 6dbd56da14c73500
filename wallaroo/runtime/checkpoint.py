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

from confluent_kafka import KafkaException, TopicPartition

log = logging.getLogger("wallaroo.checkpoint")


class TransactionAborted(Exception):
    """The open transaction was aborted: in-memory progress since the last checkpoint is void."""


class Transactions:
    """The producer's transaction calls, with the engine's reaction to each kind of error."""

    def __init__(self, producer, consumer, timeout_s=30.0):
        self.producer = producer
        self.consumer = consumer
        self.timeout_s = timeout_s
        self.open = False
        self.commits = 0

    def init(self, timeout_s=60.0):
        self.producer.init_transactions(timeout_s)

    def begin(self):
        if not self.open:
            self.producer.begin_transaction()
            self.open = True

    def commit(self, offsets: dict):
        """Commit the open transaction with `offsets` {(topic, partition): next offset}.

        Raises TransactionAborted after aborting when Kafka refuses the commit (e.g. a rebalance
        fenced us); re-raises fatal errors (another worker took our transactional id)."""
        tps = [TopicPartition(t, p, o) for (t, p), o in offsets.items()]
        attempt = 0
        while True:
            try:
                if tps:
                    self.producer.send_offsets_to_transaction(
                        tps, self.consumer.consumer_group_metadata(), self.timeout_s)
                self.producer.commit_transaction(self.timeout_s)
                self.open = False
                self.commits += 1
                return
            except KafkaException as e:
                err = e.args[0]
                if err.txn_requires_abort():
                    log.warning("checkpoint refused (%s); aborting and rewinding to the last checkpoint", err)
                    self.abort()
                    raise TransactionAborted(str(err)) from e
                if err.retriable() and attempt < 5:
                    attempt += 1
                    time.sleep(0.2 * attempt)
                    continue
                raise

    def abort(self):
        if self.open:
            try:
                self.producer.abort_transaction(self.timeout_s)
            finally:
                self.open = False

    def close(self, timeout_s=10.0):
        """Abort what is open and send what is queued."""
        self.abort()
        self.producer.flush(timeout_s)


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
        self.purgeable = {}               # repartition (topic, partition) -> committed offset
        self.purge_interval_s = purge_interval_ms / 1000.0
        self.next_purge = time.monotonic() + self.purge_interval_s

    @property
    def commits(self):
        return self.transactions.commits

    def checkpoint(self, rewind=True):
        """Commit everything since the last checkpoint in one transaction.

        If Kafka refuses, the transaction is aborted and (with `rewind`) the worker goes back to
        its last committed offsets and state; without it (the partitions are going anyway) the
        progress is only forgotten."""
        if not self.offsets and not self.collector.pending:
            return
        wm = self.task.emit_watermarks()
        for topic, p, kb, blob in self.task.changelog_records():
            self.collector.changelog(topic, p, kb, blob)
        try:
            self.transactions.begin()  # offsets alone still need a transaction
            self.transactions.commit(self.offsets)
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
        self.offsets.clear()
        self.collector.pending = False

    def _forget_progress(self):
        self.offsets.clear()
        self.collector.pending = False
        self.task.clock.newest = self.task.clock.sent

    def rewind(self, exclude=()):
        """After an abort: drop in-memory progress, go back to the last committed offsets and state."""
        self._forget_progress()
        assignment = [tp for tp in self.consumer.assignment() if (tp.topic, tp.partition) not in exclude]
        self.task.drop_state()
        if assignment:
            for tp in self.consumer.committed(assignment, timeout=30):
                if tp.offset >= 0:
                    self.consumer.seek(tp)
            self.restore([tp for tp in assignment if tp.topic in self.task.stores])

    def abort_and_rewind(self, lost):
        """Partitions `lost` without a revoke (the group moved on without us): nothing since the last
        checkpoint may be committed, and the rest starts over from its committed offsets."""
        self.transactions.abort()
        self.forget(lost)
        self.rewind(exclude={(tp.topic, tp.partition) for tp in lost})

    def forget(self, partitions):
        """Partitions that leave this worker: no offsets to commit for them, no state to keep."""
        for tp in partitions:
            self.offsets.pop((tp.topic, tp.partition), None)
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
