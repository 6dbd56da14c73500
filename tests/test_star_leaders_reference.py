"""The batch reference checked on its own, against answers worked out by hand (and by grep)."""
import gzip
import json

import pytest

import reference as ref
from conftest import REAL_HOUR


def ev(kind, eid, repo, created_at):
    return json.dumps({"id": eid, "type": kind, "actor": {"login": "u"}, "repo": {"name": repo},
                       "payload": {}, "created_at": created_at}).encode()


def test_window_is_24_absolute_hours_ending_at_the_newest_event_of_any_type():
    lines = [ev("WatchEvent", "1", "a/a", "2015-01-01T00:30:00Z"),   # hour 0: outside (window = 1..24)
             ev("WatchEvent", "2", "a/a", "2015-01-01T01:00:00Z"),   # hour 1: oldest bucket
             ev("WatchEvent", "3", "b/b", "2015-01-01T23:59:59Z"),
             ev("PushEvent", "4", "c/c", "2015-01-02T00:10:00Z")]    # newest event: not a star
    out = ref.batch_leaders(lines)
    assert out["event_time"] == "2015-01-02T00:10:00Z"
    assert out["leaders"] == [{"repo": "a/a", "stars": 1, "hourly": [1] + [0] * 23},
                              {"repo": "b/b", "stars": 1, "hourly": [0] * 22 + [1, 0]}]


def test_duplicates_ties_and_invalid_lines():
    lines = [ev("WatchEvent", "1", "a/x", "2015-01-01T00:00:00Z"),
             ev("WatchEvent", "1", "a/x", "2015-01-01T00:00:00Z"),   # repeat: once
             ev("WatchEvent", "2", "B/x", "2015-01-01T00:00:01Z"),
             ev("WatchEvent", "3", "c/x", "2015-01-01T00:00:02Z"),
             ev("WatchEvent", "4", "c/x", "2015-01-01T00:00:03Z"),
             ev("ForkEvent", "5", "d/x", "2015-01-01T00:00:04Z"),     # not a star
             ev("WatchEvent", 6, "d/x", "2015-01-01T00:00:05Z"),      # id not a string
             ev("WatchEvent", "7", "", "2015-01-01T00:00:05Z"),       # no repo name
             ev("WatchEvent", "8", "d/x", "soon"),                    # bad time
             b"not json", b'["WatchEvent"]']
    out = ref.batch_leaders(lines)
    assert [(d["repo"], d["stars"]) for d in out["leaders"]] == [("c/x", 2), ("B/x", 1), ("a/x", 1)]
    assert out["event_time"] == "2015-01-01T00:00:05Z"


def test_time_zones_and_top_n():
    lines = [ev("WatchEvent", str(i), f"r{i:02d}/x", "2014-12-31T16:00:00-08:00") for i in range(15)]
    out = ref.batch_leaders(lines)
    assert out["event_time"] == "2015-01-01T00:00:00Z"
    assert [d["repo"] for d in out["leaders"]] == [f"r{i:02d}/x" for i in range(10)]
    assert ref.batch_leaders([]) == {"event_time": None, "leaders": []}
    assert ref.event_time_ms(lines[0]) == 1420070400000 and ref.event_time_ms(b"{}") is None


def test_merge_keeps_the_latest_record_per_partition():
    def board(p, end, *leaders):
        return json.dumps({"partition": p, "window_end": end,
                           "leaders": [{"repo": r, "stars": s, "hourly": [0] * 23 + [s], "recent_events": []}
                                       for r, s in leaders]}).encode()
    records = [board(0, "2015-01-01T10:00:00Z", ("a/a", 5)),
               board(1, "2015-01-01T10:30:00Z", ("b/b", 3), ("Z/z", 1)),
               board(0, "2015-01-01T11:05:00Z", ("a/a", 2))]              # replaces partition 0's first
    out = ref.merge_partitions(records)
    assert out["event_time"] == "2015-01-01T11:05:00Z"
    assert [(d["repo"], d["stars"]) for d in out["leaders"]] == [("b/b", 3), ("a/a", 2), ("Z/z", 1)]
    assert set(out["leaders"][0]) == {"repo", "stars", "hourly"}
    assert ref.comparable(out) == {"event_hour": "2015-01-01T11", "leaders": out["leaders"]}


@pytest.mark.skipif(not REAL_HOUR.exists(), reason="needs the shared GH Archive hour")
def test_real_hour_top_three_as_counted_with_grep():
    with gzip.open(REAL_HOUR) as f:
        out = ref.batch_leaders(f)
    assert out["event_time"] == "2015-01-01T12:59:59Z"
    assert [(d["repo"], d["stars"]) for d in out["leaders"][:3]] == [
        ("wasabeef/awesome-android-ui", 12), ("prakhar1989/awesome-courses", 11), ("cachethq/Cachet", 10)]
    assert all(d["hourly"] == [0] * 23 + [d["stars"]] for d in out["leaders"])
