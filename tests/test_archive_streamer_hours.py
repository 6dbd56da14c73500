"""Hour names (not zero-padded) and time order of folders."""
from datetime import datetime, timezone

import pytest

from archive_streamer import config
from archive_streamer.hours import (file_name, folder_hours, hour_name, hour_of_file, hour_range,
                                    hours_between, parse_hour)
from archive_streamer.reader import read_hours
from conftest import read_topic
from test_archive_streamer_helpers import run_cli, synthetic_lines, write_hour

UTC = timezone.utc


def test_names_are_not_zero_padded():
    h = datetime(2015, 1, 1, 5, tzinfo=UTC)
    assert hour_name(h) == "2015-01-01-5"
    assert file_name(h) == "2015-01-01-5.json.gz"
    assert file_name(datetime(2015, 1, 1, 0, tzinfo=UTC)) == "2015-01-01-0.json.gz"
    assert file_name(datetime(2021, 12, 31, 23, tzinfo=UTC)) == "2021-12-31-23.json.gz"


def test_parse_round_trips_and_rejects_garbage():
    assert parse_hour("2015-01-01-5") == datetime(2015, 1, 1, 5, tzinfo=UTC)
    assert parse_hour("2015-01-01-05") == datetime(2015, 1, 1, 5, tzinfo=UTC)   # lenient for people
    for h in hour_range("2015-01-01-0", 48):
        assert parse_hour(hour_name(h)) == h
    for bad in ("2015-01-01", "2015-01-01-24", "2015-13-01-0", "2015-02-30-1", "2015-1-1-5",
                "yesterday", "2015-01-01-5.json.gz", ""):
        with pytest.raises(ValueError):
            parse_hour(bad)


def test_ranges():
    assert [hour_name(h) for h in hour_range("2015-12-31-22", 4)] == [
        "2015-12-31-22", "2015-12-31-23", "2016-01-01-0", "2016-01-01-1"]
    assert [hour_name(h) for h in hours_between("2015-01-01-8", "2015-01-01-11")] == [
        "2015-01-01-8", "2015-01-01-9", "2015-01-01-10", "2015-01-01-11"]   # --end is inclusive
    assert hours_between("2015-01-01-8", "2015-01-01-7") == []


def test_default_start_is_in_the_healthy_range():
    first, last = parse_hour(config.HEALTHY_FIRST_HOUR), parse_hour(config.HEALTHY_LAST_HOUR)
    assert first <= parse_hour(config.DEFAULT_START) <= last


def test_folder_is_listed_in_time_order_not_name_order(tmp_path):
    names = ["2015-01-01-10", "2015-01-01-9", "2015-01-02-0", "2015-01-01-1", "2015-01-01-11"]
    for n in names:
        (tmp_path / f"{n}.json.gz").write_bytes(b"")
    (tmp_path / "README.md").write_text("not an hour")
    (tmp_path / "2015-01-01-3.json.gz.part").write_bytes(b"")
    assert sorted(p.name for p in tmp_path.iterdir())[:2] == ["2015-01-01-1.json.gz", "2015-01-01-10.json.gz"]
    assert [hour_name(h) for h, _ in folder_hours(tmp_path)] == [
        "2015-01-01-1", "2015-01-01-9", "2015-01-01-10", "2015-01-01-11", "2015-01-02-0"]
    assert hour_of_file("2015-01-01-3.json.gz.part") is None


def test_read_hours_follows_time_order(tmp_path):
    for h in ("2015-01-01-10", "2015-01-01-8", "2015-01-01-9", "2015-01-01-11"):
        write_hour(tmp_path, h, synthetic_lines(h, 50))
    events = list(read_hours(tmp_path))
    assert len(events) == 200
    hours_seen = [e.ts_ms // 3_600_000 for e in events]
    assert hours_seen == sorted(hours_seen) and len(set(hours_seen)) == 4
    later = list(read_hours(tmp_path, start="2015-01-01-9", hours=2))
    assert len(later) == 100 and {e.ts_ms // 3_600_000 for e in later} == set(sorted(set(hours_seen))[1:3])


@pytest.mark.kafka
def test_folder_replays_into_kafka_in_time_order(kafka, topic_name, tmp_path):
    expected = []
    for h in ("2015-01-01-8", "2015-01-01-9", "2015-01-01-10", "2015-01-01-11"):
        lines = synthetic_lines(h, 40)
        expected += lines
        write_hour(tmp_path, h, lines)
    topic = topic_name("as-order")
    r = run_cli("--source", str(tmp_path), "--speedup", "0", "--topic", topic, "--kafka", kafka,
                "--partitions", "1", "--no-progress")
    assert r.returncode == 0, r.stderr
    msgs = read_topic(kafka, topic, expect=len(expected))
    # One partition: the record order is the replay order, which must be the files' time order.
    assert [m.value() for m in msgs] == expected
