"""Unit tests of the dashboard's pure parts: validation/merge, rates and lag, config, routes."""
import json
import time

import orjson
import pytest

from conftest import ROOT
from dashboard import leaders as L
from dashboard.config import Config, parse_args
from dashboard.health import RateMeter, compute_lag
from test_dashboard_helpers import expected_top, leader, record


def board_with(*records) -> L.Board:
    b = L.Board()
    for key, value in records:
        b.apply(key, value)
    b.publish()
    return b


def test_global_top10_orders_by_stars_then_plain_repo_order():
    p0 = [leader("zeta/z", 50), leader("Zeta/a", 7), leader("alpha/b", 7), leader("m/1", 3)]
    p1 = [leader("_under/x", 7), leader("beta/c", 50), leader("Alpha/c", 7), leader("c/2", 1)]
    p2 = [leader(f"r{i:02d}/n", 2) for i in range(10)]
    b = board_with((b"0", record(0, "2015-01-01T10:59:59Z", p0)),
                   (b"1", record(1, "2015-01-01T11:59:59Z", p1)),
                   (b"2", record(2, None, p2)))
    snap = b.snapshot()
    repos = [ld["repo"] for ld in snap["leaders"]]
    # plain code-point order: upper case < "_" < lower case (a locale sort would mix these)
    assert repos == ["beta/c", "zeta/z", "Alpha/c", "Zeta/a", "_under/x", "alpha/b", "m/1",
                     "r00/n", "r01/n", "r02/n"]
    assert repos == [ld["repo"] for ld in expected_top({0: p0, 1: p1, 2: p2})]
    assert snap["event_time"] == "2015-01-01T11:59:59Z"
    assert all(list(ld) == ["repo", "stars", "hourly", "recent_events"] for ld in snap["leaders"])


def test_newer_record_replaces_partition_and_event_time_is_max():
    b = board_with((b"0", record(0, "2015-01-01T10:59:59Z", [leader("a/a", 100), leader("b/b", 90)])),
                   (b"1", record(1, "2015-01-01T10:30:00Z", [leader("c/c", 80)])))
    assert [l["repo"] for l in b.snapshot()["leaders"]] == ["a/a", "b/b", "c/c"]
    v = b.version
    assert b.ingest(b"0", record(0, "2015-01-01T11:59:59Z", [leader("d/d", 5)]))
    snap = b.snapshot()
    assert [(l["repo"], l["stars"]) for l in snap["leaders"]] == [("c/c", 80), ("d/d", 5)]
    assert snap["event_time"] == "2015-01-01T11:59:59Z"
    assert b.version == v + 1
    # the same content again is not a visible change
    b.ingest(b"0", record(0, "2015-01-01T11:59:59Z", [leader("d/d", 5)]))
    assert b.version == v + 1


def test_event_time_normalised_to_utc():
    b = board_with((b"0", record(0, "2015-01-01T13:59:59+01:00", [leader("a/a", 1)])))
    assert b.snapshot()["event_time"] == "2015-01-01T12:59:59Z"


@pytest.mark.parametrize("key,value", [
    (b"0", b"not json"),
    (b"0", b"[1, 2, 3]"),
    (b"0", b'"a string"'),
    (b"0", None),                                                    # tombstone
    (b"0", b'{"partition": 0, "leaders": null}'),
    (b"0", b'{"partition": 0}'),
    (b"0", b'{"partition": "zero", "leaders": []}'),
    (b"0", b'{"partition": -1, "leaders": []}'),
    (b"0", b'{"partition": true, "leaders": []}'),
    (b"x", b'{"leaders": []}'),                                      # no id in value, key not a number
    (None, b'{"leaders": []}'),
    (b"0", b"\xff\xfe garbage"),
    (b"0", b'{"partition": 0, "leaders": ' + b"[" * 5000 + b"]" * 5000 + b"}"),
])
def test_malformed_records_are_counted_and_skipped(key, value):
    good = record(3, "2015-01-01T10:59:59Z", [leader("ok/repo", 9)])
    b = board_with((b"3", good))
    assert b.ingest(key, value) is False
    stats = b.stats()
    assert stats["malformed"] == 1 and stats["records"] == 1
    assert [l["repo"] for l in b.snapshot()["leaders"]] == ["ok/repo"]


def test_key_is_the_fallback_partition_id():
    b = board_with((b"4", orjson.dumps({"leaders": [leader("k/k", 3)]})))
    assert b.stats()["partitions"] == 1 and b.snapshot()["leaders"][0]["repo"] == "k/k"
    # a later record for partition 4 (id in the value this time) replaces it
    b.ingest(b"4", record(4, None, [leader("v/v", 1)]))
    assert [l["repo"] for l in b.snapshot()["leaders"]] == ["v/v"]


def test_odd_leaders_and_events_are_dropped_not_fatal():
    raw = {"partition": 0, "window_end": "garbage", "leaders": [
        None, 5, "x", {"repo": None, "stars": 3}, {"repo": "a/a"}, {"repo": "b/b", "stars": "9"},
        {"repo": "c/c", "stars": True}, {"repo": "d/d", "stars": -1}, {"repo": "", "stars": 1},
        {"repo": "good/one", "stars": 4, "hourly": None, "recent_events": None},
        {"repo": "good/two", "stars": 2, "hourly": [1, "x", None, -5, 2.5, 7], "extra": "dropped",
         "recent_events": [None, {"type": None}, {"actor": "no type"},
                           {"type": "ForkEvent", "actor": 5, "url": "https://github.com/x/y", "name": "x/y"},
                           {"type": "PullRequestEvent", "title": "<b>hi</b>", "number": "7", "evil": 1},
                           {"type": "PullRequestEvent", "number": 8},
                           {"type": "ForkEvent", "name": "fourth/valid"}]},
        {"repo": "good/one", "stars": 1},                      # duplicate repo in one board: keep higher
    ]}
    b = L.Board()
    assert b.ingest(b"0", orjson.dumps(raw))
    snap = b.snapshot()
    assert snap["event_time"] is None
    one, two = snap["leaders"]
    assert one == {"repo": "good/one", "stars": 4, "hourly": [0] * 24, "recent_events": []}
    assert two["hourly"] == [0] * 18 + [1, 0, 0, 0, 0, 7]
    assert two["recent_events"] == [
        {"type": "ForkEvent", "url": "https://github.com/x/y", "name": "x/y"},
        {"type": "PullRequestEvent", "title": "<b>hi</b>"},     # kept verbatim: escaping is the page's job
        {"type": "PullRequestEvent", "number": 8},
    ]
    assert b.stats()["dropped"] == 10


def test_bounds_on_lists_strings_and_partitions():
    long = "x" * 5000
    many = [leader(f"o/r{i:03d}", i) for i in range(50)]
    many[0] = {"repo": "o/" + long, "stars": 1000, "hourly": list(range(100)),
               "recent_events": [{"type": "PullRequestEvent", "title": long, "url": long, "actor": long}] * 50}
    b = L.Board(partitions=3)
    assert b.ingest(b"0", record(0, "2015-01-01T00:59:59Z", many))
    part = b._parts[0]
    assert len(part.leaders) == L.TOP_N
    top = b.snapshot()["leaders"][0]
    assert len(top["repo"]) == L.STR_CAPS["repo"] and top["repo"].endswith("\u2026")
    assert top["hourly"] == list(range(76, 100))                # newest 24 hours kept
    assert len(top["recent_events"]) == L.RECENT_EVENTS
    ev = top["recent_events"][0]
    assert len(ev["title"]) == L.STR_CAPS["title"] and len(ev["url"]) == L.STR_CAPS["url"]
    assert len(ev["actor"]) == L.STR_CAPS["actor"]
    for p in (1, 2):
        assert b.ingest(str(p).encode(), record(p, None, [leader(f"p{p}/r", 1)]))
    assert not b.ingest(b"3", record(3, None, [leader("p3/r", 1)]))   # not one of the 3 partitions
    assert b.stats()["partitions"] == 3 and b.stats()["malformed"] == 1
    assert b.ingest(b"1", record(1, None, [leader("p1/again", 1)]))   # known partitions still update
    assert len(b.snapshot()["leaders"]) == L.TOP_N
    assert not b.ingest(b"0", record(L.MAX_PARTITIONS, None, []))


def test_repo_in_two_partitions_is_listed_once():
    b = board_with((b"0", record(0, None, [leader("dup/r", 3), leader("a/a", 1)])),
                   (b"1", record(1, None, [leader("dup/r", 5)])))
    assert [(l["repo"], l["stars"]) for l in b.snapshot()["leaders"]] == [("dup/r", 5), ("a/a", 1)]


def test_last_applied_is_wall_clock_not_the_records_event_time():
    b = L.Board()
    assert b.stats()["last_applied"] is None
    before = time.time()
    b.apply(b"0", record(0, None, [leader("a/a", 1)]))
    after_good = b.stats()["last_applied"]
    assert before <= after_good <= time.time()
    b.apply(b"1", b"junk")                                                   # malformed: not an update
    assert b.stats()["last_applied"] == after_good


def test_wait_for_change_wakes_on_publish():
    import threading
    b = L.Board()
    got = []
    t = threading.Thread(target=lambda: got.append(b.wait_for_change(0, 30)))
    t.start()
    b.ingest(b"0", record(0, None, [leader("a/a", 1)]))
    t.join(30)
    assert got == [1]
    assert b.wait_for_change(1, 0.01) == 1                      # no change: returns after the timeout


def test_rate_meter():
    m = RateMeter(window_s=10)
    assert m.rate() is None
    m.add(0.0, 100)
    assert m.rate() is None
    m.add(2.0, 300)
    assert m.rate() == 100.0
    m.add(2.0, 900)                                             # same instant ignored
    m.add(4.0, 300)
    assert m.rate() == 50.0
    for t in range(5, 30):
        m.add(float(t), 300 + (t - 4) * 7)
    assert m.rate() == 7.0                                      # old fast samples left the window
    m.add(31.0, 5)                                              # counter went backwards: restart
    assert m.rate() is None


def test_compute_lag():
    end = {0: 100, 1: 50, 2: 10}
    assert compute_lag(end, {0: 90, 1: 50, 2: 4}) == 16
    assert compute_lag(end, {0: -1001, 1: -1001, 2: -1001}) is None
    assert compute_lag(end, {}) is None
    assert compute_lag(end, {0: 90}, {1: 20, 2: 0}) == 10 + 30 + 10
    assert compute_lag({0: 5}, {0: 9}) == 0                    # never negative


def test_config_env_and_flags():
    env = {"DASHBOARD_KAFKA": "k:1", "DASHBOARD_PORT": "6000", "DASHBOARD_GROUP": "g"}
    c = parse_args([], environ=env)
    assert (c.kafka, c.port, c.group, c.topic, c.source_topic, c.host) == (
        "k:1", 6000, "g", "leaderboard", "gharchive", "127.0.0.1")
    c = parse_args(["--port", "7000", "--topic", "t", "--source-topic", "s", "--host", "0.0.0.0"], environ=env)
    assert (c.port, c.topic, c.source_topic, c.host, c.kafka) == (7000, "t", "s", "0.0.0.0", "k:1")
    assert Config() == parse_args([], environ={})
    with pytest.raises(SystemExit):
        parse_args(["--health-interval", "0"], environ={})


def test_routes_without_kafka():
    from dashboard.app import create_app
    app = create_app(Config(topic="t"), start=False)
    rt = app.extensions["dashboard"]
    client = app.test_client()
    assert client.get("/api/leaders").get_json() == {"event_time": None, "leaders": []}
    rt.board.ingest(b"0", record(0, "2015-01-01T12:59:59Z", [leader("a/b", 3)]))
    r = client.get("/api/leaders")
    assert r.get_json() == {"event_time": "2015-01-01T12:59:59Z",
                            "leaders": [{"repo": "a/b", "stars": 3, "hourly": [0] * 23 + [3], "recent_events": []}]}
    assert "script-src 'self'" in r.headers["Content-Security-Policy"]
    h = client.get("/api/health").get_json()
    assert h["topic"] == "t" and h["group"] == "star-leaders" and h["source_topic"] == "gharchive"
    assert h["records"] == 1 and h["malformed_records"] == 0 and h["kafka_connected"] is None
    page = client.get("/")
    assert page.status_code == 200 and b"Waiting for the first leaders" in page.data
    assert b"<script src=\"/static/app.js\"" in page.data


def test_page_gives_the_script_the_leaderboard_shape():
    """app.js takes the top N, the window length and the recent-events count from <body>."""
    import re

    import stack_contract
    from dashboard.app import create_app
    html = create_app(Config(), start=False).test_client().get("/").data.decode()
    body = re.search(r"<body[^>]*>", html).group(0)
    shape = {"data-top-n": stack_contract.TOP_N, "data-window-hours": stack_contract.WINDOW_HOURS,
             "data-recent-events": stack_contract.RECENT_EVENTS}
    script = (ROOT / "dashboard" / "static" / "app.js").read_text()
    for attribute, value in shape.items():
        assert f'{attribute}="{value}"' in body
        assert f'getAttribute("{attribute}")' in script
    assert f"Top {stack_contract.TOP_N} by new stars, last {stack_contract.WINDOW_HOURS}" in html


def test_page_escapes_configured_names():
    from dashboard.app import create_app
    app = create_app(Config(topic='"><script>alert(1)</script>'), start=False)
    html = app.test_client().get("/").data.decode()
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_api_json_round_trips_untrusted_strings():
    b = L.Board()
    title = "<script>window.__xss=1</script><b>bold</b>\u2028\"quote\""
    ev = {"type": "PullRequestEvent", "title": title, "url": "javascript:alert(1)"}
    b.ingest(b"0", record(0, None, [leader("a/b", 1, events=[ev])]))
    _, data = b.snapshot_json()
    assert json.loads(data)["leaders"][0]["recent_events"][0] == ev


def test_stream_protocol_without_kafka(monkeypatch):
    """Snapshot first, then health, keepalive comments and a leaders event per visible change."""
    from dashboard.app import create_app
    monkeypatch.setattr("dashboard.app.KEEPALIVE_S", 0.2)
    app = create_app(Config(topic="t", health_interval=0.1, max_streams=1), start=False)
    rt = app.extensions["dashboard"]
    resp = app.test_client().get("/stream", buffered=False)
    assert app.test_client().get("/stream").status_code == 503     # the only slot is taken
    assert resp.mimetype == "text/event-stream" and resp.headers["Cache-Control"].startswith("no-cache")
    chunks = iter(resp.response)
    assert next(chunks) == b"retry: 2000\n\n"
    first = next(chunks).decode()
    assert first.startswith("event: leaders\nid: 0\ndata: ")
    assert json.loads(first.split("data: ", 1)[1]) == {"event_time": None, "leaders": []}
    seen = set()
    while not {"health", "keepalive"} <= seen:
        c = next(chunks).decode()
        seen.add("keepalive" if c == ": keepalive\n\n" else c.split("\n")[0].removeprefix("event: "))
    assert "leaders" not in seen                     # nothing changed, nothing re-sent
    rt.board.ingest(b"0", record(0, "2015-01-01T00:59:59Z", [leader("a/b", 2)]))
    while True:
        c = next(chunks).decode()
        if c.startswith("event: leaders"):
            break
    assert c.startswith("event: leaders\nid: 1\n")
    assert json.loads(c.split("data: ", 1)[1])["leaders"] == [leader("a/b", 2)]
    resp.close()
    # the stream slot came back when the response closed
    assert rt.streams.in_use() == 0
    assert rt.streams.acquire("127.0.0.1")
    rt.streams.release("127.0.0.1")
