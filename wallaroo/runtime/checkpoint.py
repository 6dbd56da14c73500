"""Checkpoints: one Kafka transaction commits outputs, repartitioned records, changelog and offsets.

Everything a worker produces between two checkpoints goes out inside one transaction; the consumed
offsets join it via send_offsets_to_transaction with the consumer's group metadata (KIP-447), so a
worker that lost its partitions (a zombie) is fenced instead of committing twice.
"""
import logging
import time

from confluent_kafka import KafkaException, TopicPartition

log = logging.getLogger("wallaroo.checkpoint")


class TransactionAborted(Exception):
    """The open transaction was aborted: in-memory progress since the last checkpoint is void."""


class Transactions:
    def __init__(self, producer, consumer, timeout_s=30.0):
        self.producer = producer
        self.consumer = consumer
        self.timeout_s = timeout_s
        self.open = False
        self.commits = 0

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
