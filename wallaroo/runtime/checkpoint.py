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

from confluent_kafka import KafkaException, TopicPartition

from .errors import is_fatal, is_fenced, retrying

log = logging.getLogger("wallaroo.checkpoint")


class TransactionAborted(Exception):
    """The open transaction was aborted: in-memory progress since the last checkpoint is void."""


class WorkerFenced(RuntimeError):
    """Another live worker uses this worker's transactional id (the same --name): this one must stop."""


class ProducerStuck(Exception):
    """A transaction call did not return by its deadline."""


# A producer fenced by a newer epoch is replaced (the coordinator bumps the epoch when a transaction
# outlives transaction.timeout.ms, e.g. across a broker restart). Fenced again this soon means another
# live worker has our transactional id: replacing again would only fence it back.
FENCED_TWICE_WINDOW_S = 60.0


class Transactions:
    """The producer's transaction calls, each bounded in time, with the engine's reaction to each error.

    librdkafka's own timeouts are not a guarantee: send_offsets_to_transaction has been seen blocking for
    minutes after a broker restart (librdkafka #5456, #5511). So every call runs on a helper thread and
    is waited for at most `timeout_s` plus a margin; a call that does not return, or a producer in a
    fatal state, is abandoned: a new producer with the same transactional id is initialised, which
    fences the old one and settles its open transaction, and the caller rewinds to the last checkpoint.
    """

    def __init__(self, make_producer, consumer, timeout_s=10.0, margin_s=5.0, stopping=lambda: False):
        """`make_producer()` returns a new transactional Producer; `stopping()` ends retries."""
        self.make_producer = make_producer
        self.consumer = consumer
        self.timeout_s = timeout_s
        self.deadline_s = timeout_s + margin_s
        self.stopping = stopping
        self.open = False
        self.commits = 0
        self.recreated = 0
        self.last_fenced = None
        self.producer = None
        self._calls = None

    # --- lifecycle ------------------------------------------------------------------------------
    def init(self):
        """Create the producer and register its transactional id, retrying while Kafka is away."""
        attempt = 0
        while True:
            if self.producer is None:
                self.producer = self.make_producer()
                self._calls = ThreadPoolExecutor(max_workers=1, thread_name_prefix="transactions")
            try:
                self._bounded("init_transactions", self.producer.init_transactions, self.timeout_s)
                self.open = False
                return
            except (KafkaException, ProducerStuck) as e:
                if self.stopping():
                    raise
                attempt += 1
                log.warning("init_transactions failed (%s); retrying", e)
                if isinstance(e, ProducerStuck) or is_fatal(e):
                    self._abandon()        # this producer is done for: the next try makes a new one
                time.sleep(min(0.5 * attempt, 5.0))

    def _abandon(self):
        self.open = False
        if self._calls is not None:
            self._calls.shutdown(wait=False)   # a stuck call keeps its thread; we do not wait for it
        self._calls = None
        self.producer = None

    def _replace(self, why):
        """Abandon the current producer (it may be stuck in a call) and start a new one."""
        log.warning("replacing the transactional producer: %s", why)
        self.recreated += 1
        self._abandon()
        self.init()

    def _bounded(self, what, fn, *args):
        future = self._calls.submit(fn, *args)
        try:
            return future.result(self.deadline_s)
        except FutureTimeout:
            raise ProducerStuck(f"{what} did not return within {self.deadline_s:.0f} s") from None

    # --- transactions ---------------------------------------------------------------------------
    def begin(self):
        if not self.open:
            try:
                self.producer.begin_transaction()
            except KafkaException as e:      # the producer is in an error state: replace it
                self._replace(f"begin_transaction: {e}")
                self.producer.begin_transaction()
            self.open = True

    def commit(self, offsets: dict):
        """Commit the open transaction with `offsets` {(topic, partition): next offset}.

        Raises TransactionAborted when the commit did not happen: Kafka refused it (e.g. a rebalance
        fenced us), or it could not be completed and the transaction was aborted or the producer
        replaced. Raises WorkerFenced when another live worker took our transactional id."""
        tps = [TopicPartition(t, p, o) for (t, p), o in offsets.items()]
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
            except ProducerStuck as e:
                self._replace(str(e))
                raise TransactionAborted(str(e)) from e
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
                self._give_up(err)
                raise TransactionAborted(str(err)) from e

    def _give_up(self, err):
        if is_fenced(err):
            now = time.monotonic()
            if self.last_fenced is not None and now - self.last_fenced < FENCED_TWICE_WINDOW_S:
                raise WorkerFenced(f"fenced twice within {FENCED_TWICE_WINDOW_S:.0f} s ({err}): another "
                                   f"worker runs with this worker's name")
            self.last_fenced = now
        if err.fatal() or is_fenced(err):
            self._replace(str(err))
        else:
            log.warning("checkpoint failed (%s); aborting and rewinding to the last checkpoint", err)
            self.abort()

    def abort(self):
        if not self.open:
            return
        try:
            self._bounded("abort_transaction", self.producer.abort_transaction, self.timeout_s)
            self.open = False
        except (KafkaException, ProducerStuck) as e:
            self._replace(f"abort_transaction: {e}")

    def close(self, timeout_s=10.0):
        """Abort what is open and send what is queued."""
        try:
            self.abort()
            if self.producer is not None:
                self.producer.flush(timeout_s)
        finally:
            if self._calls is not None:
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

    def recover(self, why):
        """Producing failed mid-transaction (the producer or its transaction is broken): abort, or
        replace the producer, and start over from the last checkpoint."""
        log.warning("producing failed (%s); aborting and rewinding to the last checkpoint", why)
        self.transactions.abort()
        self.rewind()

    def rewind(self, exclude=()):
        """After an abort: drop in-memory progress, go back to the last committed offsets and state."""
        self._forget_progress()
        assignment = [tp for tp in self.consumer.assignment() if (tp.topic, tp.partition) not in exclude]
        self.task.drop_state()
        if assignment:
            for tp in retrying("reading committed offsets", lambda: self.consumer.committed(assignment, timeout=10),
                               self.transactions.stopping):
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
