"""Event time cannot be hijacked from the archive: the streamer never sends a timestamp outside its
hour's bounds, a record the broker refuses does not take its batch with it, and one outlier ahead
does not stall a paced replay."""
import pytest
from confluent_kafka import TIMESTAMP_CREATE_TIME

from archive_streamer import synthetic
from archive_streamer.produce import Pacer, Sender
from archive_streamer.reader import Event
from conftest import event_line, read_topic
from stack_contract.valid_event import hour_bounds
from test_archive_streamer_helpers import run_cli, sent_count, skip_counts, write_hour
from test_archive_streamer_pacing import FakeClock

HOUR_MS = 1420113600000          # 2015-01-01T12:00:00Z
MINUTE = 60_000


def test_one_event_hours_ahead_does_not_stall_a_paced_replay():
    clock = FakeClock()
    pacer = Pacer(24.0, window_s=0.0, clock=clock.clock, sleep=clock.sleep)
    lo, hi = HOUR_MS, HOUR_MS + 3_600_000
    times = [HOUR_MS + s * 1000 for s in range(0, 600, 10)]       # ten minutes, one event every 10 s
    times.insert(5, HOUR_MS + 3 * 3_600_000)                       # three hours ahead (clamped to hi)
    for ts in times:
        pacer.wait(ts, lo, hi)
    # ten minutes of archive at 24x: 24.6 s of wall time, not also the rest of the hour (150 s) for
    # the outlier
    assert sum(clock.sleeps) == pytest.approx((times[-1] - HOUR_MS) / 1000 / 24)


def test_a_real_gap_is_followed_one_event_later():
    clock = FakeClock()
    pacer = Pacer(24.0, window_s=0.0, clock=clock.clock, sleep=clock.sleep)
    times = [HOUR_MS, HOUR_MS + 1000, HOUR_MS + 30 * MINUTE, HOUR_MS + 30 * MINUTE + 1000]
    slept = []
    for ts in times:
        pacer.wait(ts)
        slept.append(sum(clock.sleeps))
    # the first event after the gap waits for a second one to confirm it, which then pays for it
    assert slept == pytest.approx([0, 1 / 24, 1 / 24, (30 * MINUTE) / 1000 / 24])


def test_an_outlier_first_does_not_anchor_the_pace():
    clock = FakeClock()
    pacer = Pacer(60.0, window_s=0.0, clock=clock.clock, sleep=clock.sleep)
    times = [HOUR_MS + 50 * MINUTE] + [HOUR_MS + m * MINUTE for m in range(0, 11)]
    for ts in times:
        pacer.wait(ts, HOUR_MS, HOUR_MS + 3_600_000)
    assert sum(clock.sleeps) == pytest.approx(10 * 60 / 60)     # ten archive minutes at 60x, paced


@pytest.mark.kafka
def test_a_refused_record_does_not_take_its_batch_with_it(kafka, topic_name):
    """One event stamped 2999 among 2,000: the broker refuses its batch (INVALID_TIMESTAMP, more
    than an hour ahead of its clock); every other record of it is sent again alone and delivered.
    (The reader never yields such an event: the Sender is fed directly here.)"""
    events = list(synthetic.generate_hour(9, "2015-01-01-12", 2000))
    bad_ts = 32503680000000                                      # 3000-01-01
    bad = Event(bad_ts, "evil/repo", event_line("WatchEvent", "x", "evil/repo", "3000-01-01T00:00:00Z"))
    events.insert(1000, bad)
    topic = topic_name("as-refused")
    sender = Sender(kafka, topic, 0)
    sender.send(events)
    assert sender.close() == 0
    assert sender.failed == 1 and "Invalid timestamp" in sender.first_error
    assert sender.delivered == 2000 and sender.retried_alone > 1     # the neighbours were retried
    msgs = read_topic(kafka, topic, expect=2000)
    assert sorted(m.value() for m in msgs) == sorted(e.line for e in events if e is not bad)
    assert {m.timestamp()[0] for m in msgs} == {TIMESTAMP_CREATE_TIME}
    assert all(HOUR_MS <= m.timestamp()[1] < HOUR_MS + 3_600_000 for m in msgs)


@pytest.mark.kafka
def test_the_cli_sends_no_timestamp_outside_the_hours_bounds(kafka, topic_name, tmp_path):
    hour = "2015-01-01-12"
    good = [event_line("WatchEvent", i, f"o/r{i}", f"2015-01-01T12:{i:02d}:00Z") for i in range(20)]
    edge = [event_line("WatchEvent", "early", "o/e", "2014-12-31T12:00:00Z"),      # 24 h before: kept
            event_line("WatchEvent", "late", "o/l", "2015-01-01T13:59:59Z"),       # in the hour after: kept
            event_line("WatchEvent", "ist", "o/i", "2015-01-01T17:45:00+05:30")]   # 12:15 UTC
    out_of_range = [event_line("WatchEvent", "future", "o/f", "2999-01-01T00:00:00Z"),
                    event_line("WatchEvent", "epoch", "o/z", "1970-01-01T00:00:00Z"),
                    event_line("WatchEvent", "ahead", "o/a", "2015-01-01T14:00:00Z"),
                    event_line("WatchEvent", "behind", "o/b", "2014-12-31T11:59:59Z"),
                    event_line("WatchEvent", "minus", "o/m", "-001-01-01T00:00:00Z")]
    lines = good[:10] + out_of_range + edge + good[10:]
    write_hour(tmp_path, hour, lines)
    topic = topic_name("as-bounds")
    r = run_cli("--source", str(tmp_path), "--speedup", "0", "--kafka", kafka, "--topic", topic, "--no-progress")
    assert r.returncode == 0, r.stderr
    assert sent_count(r.stderr) == len(good) + len(edge)
    assert skip_counts(r.stderr) == {"created_at_out_of_range": 4, "bad_created_at": 1}
    msgs = read_topic(kafka, topic, expect=len(good) + len(edge))
    lo, hi = hour_bounds(HOUR_MS)
    assert sorted(m.value() for m in msgs) == sorted(good + edge)
    assert all(m.timestamp()[0] == TIMESTAMP_CREATE_TIME and lo <= m.timestamp()[1] < hi for m in msgs)
