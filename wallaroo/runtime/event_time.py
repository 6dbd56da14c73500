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


def decode_watermark(value: bytes) -> int:
    return _PACK.unpack(value)[0]


def is_watermark(headers) -> bool:
    return header(headers, WATERMARK_HEADER) is not None


class SourceClock:
    """The newest event time this worker consumed from its sources, and whether it is news."""

    def __init__(self):
        self.newest = None
        self.sent = None

    def saw(self, ms):
        if ms is not None and (self.newest is None or ms > self.newest):
            self.newest = ms

    def watermark_due(self):
        """The watermark to send now, or None if the last one sent is still current."""
        if self.newest is not None and self.newest != self.sent:
            return self.newest
        return None

    def sent_watermark(self, ms):
        self.sent = ms
