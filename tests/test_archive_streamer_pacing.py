"""Pacing: wall time ~ event time / speedup, in batches, never backwards; speedup 0 never sleeps."""
import time

import pytest

from archive_streamer import synthetic
from archive_streamer.produce import Pacer, Sender
from conftest import read_topic


class FakeClock:
    def __init__(self):
        self.now = 100.0
        self.sleeps: list[float] = []

    def clock(self):
        return self.now

    def sleep(self, s):
        assert s > 0
        self.sleeps.append(s)
        self.now += s


def test_pacer_follows_event_time_in_windows():
    c = FakeClock()
    p = Pacer(10.0, window_s=0.02, clock=c.clock, sleep=c.sleep)
    # 0 s, 1 s, 1 s, 1.1 s, 5 s of event time at speedup 10: due at 0, 0.1, 0.1, 0.11, 0.5 s
    for ts in (0, 1000, 1000, 1100, 5000):
        p.wait(ts)
    assert c.now == pytest.approx(100.5)
    # the second 1 s event and the 1.1 s one (due 10 ms later) share the 1 s event's window
    assert c.sleeps == pytest.approx([0.1, 0.4])


def test_pacer_never_sleeps_backwards_nor_for_late_events():
    c = FakeClock()
    p = Pacer(1.0, window_s=0.0, clock=c.clock, sleep=c.sleep)
    for ts in (10_000, 12_000, 11_000, 9_000, 12_000, 13_000):
        p.wait(ts)
    # only the moves forward of the highest time seen cost wall time: 10->12 s, 12->13 s
    assert c.sleeps == pytest.approx([2.0, 1.0])
    assert c.now == pytest.approx(103.0)


def test_pacer_clamps_outliers_to_the_hour():
    c = FakeClock()
    p = Pacer(3600.0, clock=c.clock, sleep=c.sleep)
    hour = 1420070400000
    p.wait(hour - 86_400_000, hour, hour + 3_600_000)       # a day early: starts at the hour
    p.wait(hour + 10 * 86_400_000, hour, hour + 3_600_000)  # ten days late: at most the hour's end
    assert sum(c.sleeps) <= 1.0 + 1e-9


def test_pacer_warmup_sends_early_hours_unpaced_then_paces():
    c = FakeClock()
    h = 3_600_000
    p = Pacer(3600.0, window_s=0.0, clock=c.clock, sleep=c.sleep, unpaced_until_ms=23 * h)
    for ts in range(0, 23 * h, 60_000):           # 23 hours of warm-up: no sleep at all
        p.wait(ts)
    assert c.sleeps == []
    for ts in (23 * h, 23 * h + h // 2, 24 * h):   # then one archive hour per wall second
        p.wait(ts)
    assert sum(c.sleeps) == pytest.approx(1.0)


def test_pacer_speedup_zero_never_sleeps():
    def forbidden(_):
        raise AssertionError("slept at speedup 0")
    p = Pacer(0, clock=time.monotonic, sleep=forbidden)
    assert not any(p.wait(ts) for ts in range(0, 10**9, 10**6))


@pytest.mark.kafka
def test_one_hour_at_speedup_3600_takes_about_a_second(kafka, topic_name):
    events = list(synthetic.generate_hour(5, "2015-01-01-3", 3000))
    first = events[0].ts_ms
    span_s = (max(e.ts_ms for e in events) - first) / 1000 / 3600     # ~1 s of wall time
    assert 0.9 < span_s <= 1.0
    topic = topic_name("as-pace")
    sender = Sender(kafka, topic, speedup=3600)
    sender.producer.poll(0)
    t = time.monotonic()
    sender.send(events)           # the send loop only: no generation, no start-up, no flush
    elapsed = time.monotonic() - t
    sender.close()
    # Tolerance: 0.8-2.5 s for ~1 s of paced time (the lower bound is span_s less one window).
    assert 0.8 <= elapsed <= 2.5, elapsed
    assert elapsed >= span_s - 0.03
    # batched: at most one sleep per 20 ms window (about 50 a second), never one per event
    assert 10 <= sender.pacer.sleeps <= elapsed / 0.02 + 5
    assert sender.delivered == len(events)
    assert len(read_topic(kafka, topic, expect=len(events))) == len(events)


@pytest.mark.kafka
def test_speedup_zero_does_not_sleep(kafka, topic_name):
    events = list(synthetic.generate_events(5, "2015-01-01-0", 6, 300))   # six hours of event time
    sender = Sender(kafka, topic_name("as-fast"), speedup=0)

    def forbidden(_):
        raise AssertionError("slept at speedup 0")
    sender.pacer.sleep = forbidden
    sender.send(events)
    sender.close()
    assert sender.pacer.sleeps == 0 and sender.delivered == len(events)


@pytest.mark.kafka
def test_full_local_queue_is_drained_not_dropped(kafka, topic_name):
    events = list(synthetic.generate_hour(6, "2015-01-01-4", 3000))
    topic = topic_name("as-buffer")
    # a queue of 50 records forces BufferError on nearly every produce
    sender = Sender(kafka, topic, 0, producer_config={"queue.buffering.max.messages": 50, "linger.ms": 1})
    assert sender.send(events) == 3000
    assert sender.close() == 0 and sender.delivered == 3000 and sender.failed == 0
    assert len(read_topic(kafka, topic, expect=3000)) == 3000


def test_stop_is_honoured_while_the_broker_is_gone():
    import socket
    import threading
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    stop = threading.Event()
    sender = Sender(f"127.0.0.1:{port}", "nowhere", 0, stop=stop,
                    producer_config={"queue.buffering.max.messages": 100,
                                     "log_level": 0})   # it retries the dead port for the rest of the session
    threading.Timer(1.0, stop.set).start()
    t = time.monotonic()
    n = sender.send(synthetic.generate_hour(6, "2015-01-01-4", 1000))
    assert stop.is_set() and time.monotonic() - t < 10
    assert n == 100                      # what the full queue took; nothing counted as delivered
    assert sender.close(timeout_s=0.5) == 100 and sender.delivered == 0
