"""The record collector: everything the worker produces goes through here, into the open transaction.

Sink records, repartition records, watermarks, changelog records and dead letters all go out on the
worker's one transactional producer; the first record after a checkpoint begins the next transaction.
A full local queue is waited out (the producer drains it), never dropped.
"""
import logging

from .event_time import record_time

log = logging.getLogger("wallaroo.collector")

DEAD_LETTERS_LOGGED = 100        # then they are only counted


class RecordCollector:
    def __init__(self, transactions, dead_letter_topic, name="worker"):
        self.transactions = transactions      # holds the current producer (it is replaced after a fault)
        self.dead_letter_topic = dead_letter_topic
        self.name = name
        self.pending = False          # produced something since the last checkpoint
        self.dead_logged = 0

    def repartition(self, topic, partition, key, value, headers, ts):
        self.produce(topic, value, key, partition, ts, headers)

    def sink(self, topic, value, key, ts, partition=None):
        self.produce(topic, value, key, partition, ts, None)

    def changelog(self, topic, partition, key, value):
        self.produce(topic, value, key, partition, None, None)

    def dead_letter(self, m, step, error):
        """`m` (a consumed message) could not be processed at `step`: keep it, with why, for a person."""
        if self.dead_logged < DEAD_LETTERS_LOGGED:
            self.dead_logged += 1
            log.warning("%s: dead letter from %s[%d]@%d at %s: %s: %s%s", self.name, m.topic(),
                        m.partition(), m.offset(), step, type(error).__name__, error,
                        "  (further dead letters are counted, not logged)"
                        if self.dead_logged == DEAD_LETTERS_LOGGED else "")
        headers = [("error", f"{type(error).__name__}: {error}"[:2000].encode()), ("step", str(step).encode()),
                   ("topic", m.topic().encode()), ("partition", str(m.partition()).encode()),
                   ("offset", str(m.offset()).encode())]
        self.produce(self.dead_letter_topic, m.value(), m.key(), None, record_time(m), headers)

    def hook_failed(self, state_name, partition, error):
        log.warning("%s: %s (state %r, partition %d)", self.name, error, state_name, partition)

    def produce(self, topic, value, key, partition, ts, headers):
        kwargs = {"key": key, "headers": headers}
        if partition is not None:
            kwargs["partition"] = partition
        if ts is not None:
            kwargs["timestamp"] = ts
        transactions = self.transactions
        if not transactions.open:
            transactions.begin()
        self.pending = True
        while True:
            try:
                transactions.producer.produce(topic, value, **kwargs)
                return
            except BufferError:       # the local queue is full: let the producer send some
                transactions.producer.poll(0.05)
