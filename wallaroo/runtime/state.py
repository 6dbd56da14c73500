"""Partitioned state: live Python objects in memory, restored from a compacted changelog topic.

State objects are never serialized per message. At each checkpoint the objects whose computation
reported a change are pickled once into the changelog (partition p of the changelog mirrors
partition p of the repartition topic), inside the checkpoint's transaction.
"""
import logging
import time
import uuid

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from .clients import end_offsets_probe_config, restore_consumer_config
from .errors import retrying
from .routing import key_from_bytes
from .serde import dump_state, load_state

log = logging.getLogger("wallaroo.state")


class StateStore:
    """The state objects of one state name that this worker owns, by Kafka partition."""

    def __init__(self, name, state_class, changelog):
        self.name = name
        self.state_class = state_class
        self.changelog = changelog
        self.partitions = {}      # partition -> {key bytes: state object}
        self.dirty = {}           # partition -> set of key bytes changed since the last checkpoint
        self.event_time = {}      # partition -> newest watermark seen (ms)

    def get(self, partition, kb):
        table = self.partitions.get(partition)
        if table is None:  # a record for a partition we don't own: a rebalance raced it
            raise KeyError(f"state {self.name!r} partition {partition} is not assigned here")
        state = table.get(kb)
        if state is None:
            state = table[kb] = self.state_class()
        return state

    def changed(self, partition, kb):
        self.dirty.setdefault(partition, set()).add(kb)

    def changelog_records(self):
        """(partition, key bytes, pickled state) for each changed object; clears the dirty marks."""
        for partition, keys in self.dirty.items():
            table = self.partitions.get(partition, {})
            for kb in keys:
                if kb in table:
                    yield partition, kb, dump_state(table[kb])
        self.dirty = {}

    def adopt(self, partition, table):
        self.partitions[partition] = table
        self.event_time.pop(partition, None)

    def drop(self, partition):
        self.partitions.pop(partition, None)
        self.dirty.pop(partition, None)
        self.event_time.pop(partition, None)

    def drop_all(self):
        for p in list(self.partitions):
            self.drop(p)


def restore(bootstrap, topic, partitions, timeout_s=300.0, stopping=lambda: False):
    """Read changelog partitions from the start to their end; return {partition: {key bytes: state}}.

    read_committed, so a crashed worker's unfinished checkpoint is never restored (it waits for
    that transaction to be aborted, at most the transaction timeout). A partition without a leader
    (a broker restarting, a topic just created) is waited for, up to `timeout_s`."""
    tables = {p: {} for p in partitions}
    if not partitions:
        return tables
    c = Consumer(restore_consumer_config(bootstrap, f"restore-{uuid.uuid4().hex}"))
    try:
        ends = {}
        # The end to read to is the high watermark, not the last stable offset: see end_offsets_probe_config.
        probe = Consumer(end_offsets_probe_config(bootstrap, f"restore-{uuid.uuid4().hex}"))
        try:
            for p in partitions:
                _low, high = retrying(
                    f"reading the end of {topic}[{p}]",
                    lambda p=p: probe.get_watermark_offsets(TopicPartition(topic, p), timeout=10, cached=False),
                    stopping, timeout_s)
                if high > 0:
                    ends[p] = high
        finally:
            probe.close()
        raw = {p: {} for p in partitions}
        if ends:
            c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in ends])
            deadline = time.monotonic() + timeout_s
            pending = set(ends)
            while pending:
                for m in c.consume(1000, 0.2):
                    if m.error():
                        continue
                    if m.value() is None:          # a tombstone deletes the key
                        raw[m.partition()].pop(m.key(), None)
                    else:
                        raw[m.partition()][m.key()] = m.value()
                for tp in retrying(f"reading the restore position of {topic}",
                                   lambda: c.position([TopicPartition(topic, p) for p in pending]), stopping):
                    if tp.offset >= ends[tp.partition]:
                        pending.discard(tp.partition)
                if time.monotonic() > deadline:
                    raise TimeoutError(f"restoring {topic} partitions {sorted(pending)} took over {timeout_s:.0f} s")
        for p, kv in raw.items():
            tables[p] = {kb: load_state(v) for kb, v in kv.items()}
            if kv:
                log.info("restored %d %s object(s) of partition %d: %s", len(kv), topic, p,
                         ", ".join(repr(key_from_bytes(k)) for k in list(kv)[:5]) + (" ..." if len(kv) > 5 else ""))
    finally:
        c.close()
    return tables
