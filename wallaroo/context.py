"""The event time of what is being processed right now, readable from user code."""
_now_ms = None


def event_time():
    """Event time in ms since the epoch: the Kafka timestamp of the record being processed,
    or, inside `on_event_time`, the watermark just reached. None outside processing."""
    return _now_ms


def set_event_time(ms):
    global _now_ms
    _now_ms = ms
