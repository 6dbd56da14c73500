"""The record collector: everything the worker produces goes through here, into the open transaction.

Sink records, repartition records, watermarks, changelog records and dead letters all go out on the
worker's one transactional producer; the first record after a checkpoint begins the next transaction.
A full local queue is waited out (the producer drains it), never dropped.
"""
import hashlib
import logging

from .event_time import record_time

log = logging.getLogger("wallaroo.collector")

DEAD_LETTERS_LOGGED = 100        # then they are only counted
DEAD_LETTER_VALUE_BYTES = 64 * 1024   # kept of a dead letter's value (see topics.DEAD_LETTER_MAX_MESSAGE_BYTES)
DEAD_LETTER_KEY_BYTES = 1024


def dead_letter_value(value):
    """The part of a rejected record's value that its dead letter keeps."""
    return value if value is None or len(value) <= DEAD_LETTER_VALUE_BYTES else value[:DEAD_LETTER_VALUE_BYTES]


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
        """`m` (a consumed message) could not be processed at `step`: keep it, with why, for a person.

        Bounded, so it always fits the dead-letter topic: the first DEAD_LETTER_VALUE_BYTES of the value
        (and DEAD_LETTER_KEY_BYTES of the key), with the original's size and SHA-256 in headers."""
        if self.dead_logged < DEAD_LETTERS_LOGGED:
            self.dead_logged += 1
            log.warning("%s: dead letter from %s[%d]@%d at %s: %s: %.500s%s", self.name, m.topic(),
                        m.partition(), m.offset(), step, type(error).__name__, error,
                        "  (further dead letters are counted, not logged)"
                        if self.dead_logged == DEAD_LETTERS_LOGGED else "")
        value, key = dead_letter_value(m.value()), m.key()
        headers = [("error", f"{type(error).__name__}: {error}"[:2000].encode("utf-8", "replace")),
                   ("step", str(step).encode()), ("topic", m.topic().encode()),
                   ("partition", str(m.partition()).encode()), ("offset", str(m.offset()).encode())]
        if value is not None:
            headers += [("original-size", str(len(m.value())).encode()),
                        ("original-sha256", hashlib.sha256(m.value()).hexdigest().encode())]
        if key is not None and len(key) > DEAD_LETTER_KEY_BYTES:
            headers.append(("original-key-size", str(len(key)).encode()))
            key = key[:DEAD_LETTER_KEY_BYTES]
        self.produce(self.dead_letter_topic, value, key, None, record_time(m), headers)

    def hook_failed(self, state_name, partition, error):
        log.warning("%s: %s (state %r, partition %d)", self.name, error, state_name, partition)

    def produce(self, topic, value, key, partition, ts, headers):
        transactions = self.transactions
        if not transactions.open:
            transactions.begin()
        self.pending = True
        # Positionally, in the order of confluent-kafka's argument list (topic, value, key, partition,
        # on_delivery, callback, timestamp, headers; -1: by key, 0: now): a checkpoint makes ~10,000
        # of these calls, and keywords cost 0.45 us more each (1.25 against 0.8 us).
        args = (topic, value, key, -1 if partition is None else partition, None, None, 0 if ts is None else ts,
                headers)
        while True:
            try:
                transactions.producer.produce(*args)
                return
            except BufferError:       # the local queue is full: let the producer send some
                transactions.producer.poll(0.05)
