"""Event time: Kafka timestamps in, watermarks through the repartition topics to every partition.

A record's event time is its Kafka timestamp; it travels with the message through the repartition
topic. A partition that gets no records would never learn that time moved on, so at each checkpoint
every worker writes a watermark record (the newest source timestamp it has consumed) to every partition
of every repartition topic, in the same transaction as the data before it. A state partition's event
time is the largest watermark it has read; when it grows, each of its state objects' `on_event_time`
hook runs. Watermarks are ordered after the records sent before them, so a partition never sees the
watermark overtake data from the same worker.
"""
import struct
import time
from datetime import datetime, timezone

from confluent_kafka import TIMESTAMP_NOT_AVAILABLE

from .routing import WATERMARK_HEADER, header

WATERMARK_HEADERS = [(WATERMARK_HEADER, b"1")]
_PACK = struct.Struct(">q")


def record_time(msg):
    """The Kafka timestamp of a consumed record in ms, or None when it has none."""
    kind, ts = msg.timestamp()
    return None if kind == TIMESTAMP_NOT_AVAILABLE or ts < 0 else ts


def encode_watermark(ms: int) -> bytes:
    return _PACK.pack(ms)


def decode_watermark(value) -> int:
    """The event time in a watermark record; ValueError when the value is not one (8 bytes, >= 0)."""
    if type(value) is not bytes or len(value) != _PACK.size:
        raise ValueError(f"a watermark value is {_PACK.size} bytes, not "
                         f"{'none' if value is None else len(value)}")
    ms = _PACK.unpack(value)[0]
    if ms < 0:
        raise ValueError(f"negative watermark {ms}")
    return ms


def is_watermark(headers) -> bool:
    return header(headers, WATERMARK_HEADER) is not None


HOUR_MS = 3_600_000
# How far ahead of its partition's stream time a source record may be; see SourceClock.admit.
DEFAULT_MAX_EVENT_TIME_SKEW_MS = 6 * HOUR_MS


class SourceClock:
    """The newest event time this worker accepted from its sources, and whether it is news (a
    watermark to send).

    A record whose timestamp is more than `max_skew_ms` ahead of the stream's time is refused by
    `admit`, so one stray record (a producer that sent timestamp 0, which librdkafka replaces with the
    wall clock; a typo'd year) cannot move event time and expire every window. The stream's time is the
    newest timestamp this worker accepted from any of its source partitions, or before the first one
    `reference`: the event time saved in the state changelogs (the group's committed watermark), so a
    restarted worker is bound from its first record. A record ahead of the wall clock by more than the
    bound is refused too (event time cannot be in the future). Older records are accepted (lateness is
    the application's business) and do not move the clock. `max_skew_ms` 0 turns the bound off.

    The worker's newest time, rather than each partition's own, is the reference: a partition that was
    quiet for longer than the bound while the others moved on is not refused. Input that really jumps
    further ahead than the bound as a whole (a newer period replayed into the same deployment, a gap
    in the archive longer than the bound) is refused until the worker restarts with a larger bound or
    with --reset-event-time (no reference: the first record sets the time)."""

    def __init__(self, max_skew_ms=DEFAULT_MAX_EVENT_TIME_SKEW_MS, wall_clock=time.time):
        self.newest = None
        self.sent = None
        self.max_skew_ms = max_skew_ms
        self.reference = None
        self.wall_clock = wall_clock
        self._wall_limit = float("-inf")  # the wall clock (ms) as last read, plus the bound
        self.refused = 0

    def saw(self, ms):
        if ms is not None and (self.newest is None or ms > self.newest):
            self.newest = ms

    def admit(self, ms):
        """Accept the timestamp `ms` of a source record: None, or why it is refused."""
        newest = self.newest
        if ms is None or (newest is not None and ms <= newest):
            return None
        bound = self.max_skew_ms
        if bound:
            if newest is not None:
                if ms > newest + bound:
                    return self._refuse(ms, newest, "the stream's newest time")
            elif self.reference is not None and ms > self.reference + bound:
                return self._refuse(ms, self.reference, "the event time saved in the changelog")
            if ms > self._wall_limit:   # the clock only moves on: read it again only past the last limit
                wall = self.wall_clock() * 1000
                self._wall_limit = wall + bound
                if ms > self._wall_limit:
                    return self._refuse(ms, wall, "the wall clock")
        self.newest = ms
        return None

    def _refuse(self, ms, reference, of):
        self.refused += 1
        return (f"timestamp {iso(ms)} is {(ms - reference) / HOUR_MS:.1f} h ahead of {of}, {iso(reference)} "
                f"(bound: --max-event-time-skew {self.max_skew_ms // 60_000} min); refused so it cannot move "
                f"event time")

    def learn_committed(self, ms):
        """A source time a checkpoint had accepted (committed offset metadata, written by this
        application's workers): the stream's time is at least that. Not beyond the wall clock bound:
        the metadata is on the broker, like the input."""
        if self.max_skew_ms and ms > self.wall_clock() * 1000 + self.max_skew_ms:
            return False
        self.saw(ms)
        return True

    def learn_reference(self, ms):
        if self.reference is None or ms > self.reference:
            self.reference = ms

    def watermark_due(self):
        """The watermark to send now, or None if the last one sent is still current."""
        if self.newest is not None and self.newest != self.sent:
            return self.newest
        return None

    def sent_watermark(self, ms):
        self.sent = ms


def iso(ms):
    """Milliseconds since the epoch as UTC ISO 8601 text, for messages."""
    try:
        return datetime.fromtimestamp(ms / 1000, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    except (OverflowError, OSError, ValueError):
        return f"{ms} ms"
