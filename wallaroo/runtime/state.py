"""Partitioned state: live Python objects in memory, restored from a compacted changelog topic.

State objects are never serialized per message. At each checkpoint the objects whose computation
reported a change are written to the changelog (partition p of the changelog mirrors partition p of
the repartition topic), inside the checkpoint's transaction, as data (serde.py): whole, one record per
object, or, for a class that saves itself as entries (`changed_entries()` / `from_entries()`), one
record per entry it changed, so a big object that changes a little writes a little (Kafka Streams
writes a key-value store's changelog entry by entry for the same reason). The changelog also holds,
under the engine's own key, each partition's event time, so a restarted worker knows how far the
stream had got (the reference of the event-time bound, event_time.py).

A changelog value that does not decode into the state's class (written by someone else, or by an
incompatible version) is skipped at restore, reported as a dead letter, and replaced by a tombstone at
the next checkpoint (every entry of an object saved as entries): that key starts over from a new
state object. Its old value cannot be recovered from a record that is not one, and a new object is
better than a half-read one.
"""
import logging
import time
import uuid

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from .clients import end_offsets_probe_config, restore_consumer_config
from .errors import retrying
from .event_time import decode_watermark, encode_watermark
from .routing import (ENTRY_TAG, EVENT_TIME_KEY, describe_key, entry_key_prefix, key_from_bytes,
                      split_entry_key)

log = logging.getLogger("wallaroo.state")
BAD_RECORDS_LOGGED = 20          # per partition restored; then they are counted


class StoredRecord:
    """A record read back from a changelog (or made in memory), with the accessors of confluent-kafka's
    Message that the task and the collector use."""
    __slots__ = ("_topic", "_partition", "_offset", "_key", "_value", "_headers", "_ts")

    def __init__(self, topic, partition, offset, key, value, headers=None, ts=None):
        self._topic, self._partition, self._offset = topic, partition, offset
        self._key, self._value, self._headers, self._ts = key, value, headers, ts

    def error(self):
        return None                     # a record, never a consumer event

    def topic(self):
        return self._topic

    def partition(self):
        return self._partition

    def offset(self):
        return self._offset

    def key(self):
        return self._key

    def value(self):
        return self._value

    def headers(self):
        return self._headers

    def timestamp(self):
        return (0, -1) if self._ts is None else (1, self._ts)   # (TIMESTAMP_NOT_AVAILABLE, -1) or CREATE_TIME


class StateStore:
    """The state objects of one state name that this worker owns, by Kafka partition.

    Besides the live objects it keeps, per object, its changelog value as of the last checkpoint
    (`saved`) and what was applied to it since (`journal`: messages and event-time calls), so an object
    whose computation raised can be rebuilt as it was before that message (task.py)."""

    def __init__(self, name, state_class, changelog, codec, on_bad_record=None, on_event_time=None,
                 catch_up=None):
        self.name = name
        self.state_class = state_class
        self.changelog = changelog
        self.codec = codec
        self.entries = codec.entries            # saved as entries (changed_entries / from_entries)?
        self.on_bad_record = on_bad_record      # (StoredRecord, error): a changelog value skipped at restore
        self.on_event_time = on_event_time      # (ms): a partition's event time read back at restore
        # (store, partition, key bytes, state, ms): a new object of a partition already at event time ms
        self.catch_up = catch_up if hasattr(state_class, "on_event_time") else None
        self.partitions = {}      # partition -> {key bytes: state object}
        self.dirty = {}           # partition -> set of key bytes changed since the last checkpoint
        self.event_time = {}      # partition -> newest watermark seen (ms)
        self.saved = {}           # partition -> {key bytes: changelog value as of the last checkpoint}
                                  # (saved as entries: {entry name: value})
        self.journal = {}         # partition -> {key bytes: [(plan step or None, data, ts)] since then}
        self.tombstones = {}      # partition -> changelog keys to delete at the next checkpoint
        self.saved_time = {}      # partition -> event time last written to the changelog

    def get(self, partition, kb):
        table = self.partitions.get(partition)
        if table is None:  # a record for a partition we don't own: a rebalance raced it
            raise KeyError(f"state {self.name!r} partition {partition} is not assigned here")
        state = table.get(kb)
        if state is None:
            state = table[kb] = self.state_class()
            if self.catch_up is not None:
                # The partition's time moved before this object existed: it starts from that time,
                # as its neighbours did, not from its first record's (which may be an hour behind).
                ms = self.event_time.get(partition, self.saved_time.get(partition))
                if ms is not None:
                    self.catch_up(self, partition, kb, state, ms)
                    state = table[kb]       # rebuilt if the hook raised
        return state

    def changed(self, partition, kb):
        dirty = self.dirty.get(partition)
        if dirty is None:               # (not setdefault: its new set would be made every call)
            dirty = self.dirty[partition] = set()
        dirty.add(kb)

    def record(self, partition, kb, op):
        """Remember `op` (plan step, data, ts; plan step None for an on_event_time call) as applied."""
        journal = self.journal.get(partition)
        if journal is None:
            journal = self.journal[partition] = {}
        ops = journal.get(kb)
        if ops is None:
            journal[kb] = [op]
        else:
            ops.append(op)

    def as_saved(self, partition, kb):
        """A new object equal to `kb`'s as of the last checkpoint (a fresh one if it had none)."""
        blob = self.saved.get(partition, {}).get(kb)
        if blob is None:
            return self.state_class()
        return self.codec.decode_entries(blob) if self.entries else self.codec.decode(blob)

    def changelog_records(self):
        """(partition, changelog key, value) for each changed object (value None: a tombstone) and each
        partition whose event time moved; clears the dirty marks and the journal.

        An object saved whole is one record under its key bytes; an object saved as entries writes
        only the entries it reports changed, each under routing.entry_key. Tombstones of records
        skipped at restore go first, so a key written again in the same checkpoint keeps its value."""
        for partition, keys in self.tombstones.items():
            for key in keys:
                yield partition, key, None
        for partition, keys in self.dirty.items():
            table = self.partitions.get(partition, {})
            saved = self.saved.setdefault(partition, {})
            for kb in keys:
                state = table.get(kb)
                if state is None:
                    continue
                if not self.entries:
                    blob = saved[kb] = self.codec.encode(state)
                    yield partition, kb, blob
                    continue
                kept = saved.get(kb)
                if kept is None:
                    kept = saved[kb] = {}
                prefix = entry_key_prefix(kb)
                for name, blob in self.codec.encode_changes(state):
                    if blob is None:
                        if kept.pop(name, None) is None:
                            continue            # never written: nothing to delete
                    else:
                        kept[name] = blob
                    yield partition, prefix + name.encode("utf-8", "surrogatepass"), blob
                if not kept:
                    del saved[kb]
        for partition, ms in self.event_time.items():
            if self.saved_time.get(partition, -1) < ms:
                self.saved_time[partition] = ms
                yield partition, EVENT_TIME_KEY, encode_watermark(ms)
        self.dirty = {}
        self.tombstones = {}
        self.journal = {}

    def read(self, raw):
        """{changelog key: value} of one partition -> ({key bytes: object}, {key bytes: saved form},
        event time or None, [(changelog keys, StoredRecord, error)] of what does not decode)."""
        table, saved, bad, ms = {}, {}, [], None
        groups = {}                     # key bytes -> {entry name: value}, {entry name: changelog key}
        for ck, blob in raw.items():
            try:
                if ck == EVENT_TIME_KEY:
                    ms = decode_watermark(blob)
                elif ck[:1] == ENTRY_TAG:
                    kb, name = split_entry_key(ck)
                    if not self.entries:
                        raise ValueError(f"an entry record, but {self.state_class.__qualname__} has no "
                                         f"changed_entries/from_entries")
                    values, keys = groups.setdefault(kb, ({}, {}))
                    values[name], keys[name] = blob, ck
                else:
                    key_from_bytes(ck)
                    if self.entries:
                        raise ValueError(f"a whole-object record, but {self.state_class.__qualname__} saves "
                                         f"itself as entries")
                    table[ck] = self.codec.decode(blob)
                    saved[ck] = blob
            except Exception as e:  # noqa: BLE001 - anything in the record, or a from_data, may fail
                bad.append(([ck] if ck is not None else [], StoredRecord(self.changelog, -1, -1, ck, blob), e))
        for kb, (values, keys) in groups.items():
            try:
                table[kb] = self.codec.decode_entries(values)
                saved[kb] = values
            except Exception as e:  # noqa: BLE001 - from_entries is application code
                name = next(iter(values))
                bad.append((list(keys.values()), StoredRecord(self.changelog, -1, -1, keys[name], values[name]), e))
        return table, saved, ms, bad

    def adopt(self, partition, raw):
        """Take over `partition` with `raw` {changelog key: value} as restored from the changelog."""
        table, saved, ms, bad = self.read(raw)
        if ms is not None:
            self.saved_time[partition] = ms
            if self.on_event_time is not None:
                self.on_event_time(ms)
        for n, (keys, record, e) in enumerate(bad, 1):
            # (a compacted topic refuses records without a key)
            self.tombstones.setdefault(partition, set()).update(k for k in keys if k)
            if n <= BAD_RECORDS_LOGGED:
                log.error("state %r partition %d: skipped the changelog value of key %s (%d bytes): %s: %s; "
                          "that key starts from a new state object", self.name, partition,
                          describe_key(record.key()), len(record.value() or b""), type(e).__name__, e)
            if self.on_bad_record is not None:
                self.on_bad_record(StoredRecord(self.changelog, partition, -1, record.key(), record.value()), e)
        if len(bad) > BAD_RECORDS_LOGGED:
            log.error("state %r partition %d: %d changelog values skipped in all (see the dead letters)",
                      self.name, partition, len(bad))
        self.partitions[partition] = table
        self.saved[partition] = saved
        self.event_time.pop(partition, None)

    def drop(self, partition):
        for kept in (self.partitions, self.dirty, self.event_time, self.saved, self.journal, self.tombstones,
                     self.saved_time):
            kept.pop(partition, None)

    def drop_all(self):
        for p in list(self.partitions):
            self.drop(p)


def restore(bootstrap, topic, partitions, timeout_s=300.0, stopping=lambda: False):
    """Read changelog partitions from the start to their end; return {partition: {key bytes: value bytes}}
    (StateStore.adopt decodes them).

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
            tables[p] = kv
            if kv:
                log.info("restored %d %s object(s) of partition %d: %s", len(kv), topic, p,
                         ", ".join(describe_key(k) for k in list(kv)[:5]) + (" ..." if len(kv) > 5 else ""))
    finally:
        c.close()
    return tables
