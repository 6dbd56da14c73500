"""The dashboard facing strangers: forged leaderboard records (the topic is writable by anyone on the
broker), hostile Host headers (DNS rebinding), idle and slow connections, and too many of them.
No Kafka here: the app runs without its background threads, the server for real on a free port."""
import http.client
import socket
import time

import orjson
import pytest

import stack_contract
from dashboard import leaders as L
from dashboard.app import create_app, host_name
from dashboard.config import Config, parse_args
from test_dashboard_helpers import SSE, leader, record, serve

HOUR = 3600


# ---------- forged records ----------

def board_of(*records) -> L.Board:
    b = L.Board()
    for key, value in records:
        b.apply(key, value)
    b.publish()
    return b


def test_partition_ids_are_the_apps_own():
    assert L.Board().partitions == stack_contract.PARTITION_COUNT == 32
    last = stack_contract.PARTITION_COUNT - 1
    b = board_of((str(last).encode(), record(last, None, [leader("real/last", 5)])))
    for pid in (stack_contract.PARTITION_COUNT, 10 ** 6, -1):
        assert not b.ingest(str(pid).encode(), record(pid, None, [leader("forged/repo", 10 ** 6)]))
    assert not b.ingest(b"40", orjson.dumps({"leaders": [leader("forged/key-only", 9)]}))
    assert [l["repo"] for l in b.snapshot()["leaders"]] == ["real/last"]
    assert b.stats()["malformed"] == 4 and "partition id outside 0..31" in b.stats()["last_error"]


def test_key_and_value_must_name_the_same_partition():
    b = L.Board()
    assert not b.ingest(b"3", record(4, None, [leader("a/b", 1)]))
    assert not b.ingest(b"+4", record(4, None, [leader("a/b", 1)]))
    assert not b.ingest("\u0664".encode(), record(4, None, [leader("a/b", 1)]))   # Arabic-Indic four
    assert b.ingest(b"4", record(4, None, [leader("a/b", 1)]))
    assert b.ingest(None, record(5, None, [leader("c/d", 1)]))                  # no key: the value's id
    assert b.stats()["malformed"] == 3


def test_stars_beyond_what_a_window_holds_are_refused():
    top = L.MAX_WINDOW_STARS
    assert top == stack_contract.WINDOW_HOURS * L.MAX_STARS_PER_HOUR
    b = board_of((b"0", record(0, None, [leader("forged/huge", 10 ** 12), leader("real/one", 7)])),
                 (b"1", record(1, None, [leader("edge/max", top, hourly=[L.MAX_STARS_PER_HOUR] * 24),
                                         leader("edge/over", top + 1)])))
    snap = b.snapshot()
    assert [(l["repo"], l["stars"]) for l in snap["leaders"]] == [("edge/max", top), ("real/one", 7)]
    assert snap["leaders"][0]["hourly"] == [L.MAX_STARS_PER_HOUR] * 24
    assert b.stats()["dropped"] == 2
    # an hourly bucket beyond one hour's bound counts as 0
    b.ingest(b"2", record(2, None, [leader("odd/hours", 3, hourly=[L.MAX_STARS_PER_HOUR + 1] + [1] * 23)]))
    odd = next(l for l in b.snapshot()["leaders"] if l["repo"] == "odd/hours")
    assert odd["hourly"] == [0] + [1] * 23


def test_window_end_in_the_future_is_refused():
    now = time.time()
    future = L.format_time(L.datetime.fromtimestamp(now + L.FUTURE_TOLERANCE_S + HOUR, L.timezone.utc))
    recent = L.format_time(L.datetime.fromtimestamp(now - 60, L.timezone.utc))
    b = board_of((b"0", record(0, "2015-01-01T12:59:59Z", [leader("real/repo", 5)])))
    assert not b.ingest(b"1", record(1, future, [leader("forged/future", 6)]))
    assert b.stats()["last_error"] == "window_end lies in the future"
    assert b.snapshot()["event_time"] == "2015-01-01T12:59:59Z", "the archive clock did not move"
    # a time of today is possible (a live replay), so it is shown ...
    assert b.ingest(b"1", record(1, recent, [leader("forged/today", 6)]))
    assert b.snapshot()["event_time"] == recent
    # ... but only until the partition it claims writes again
    assert b.ingest(b"1", record(1, "2015-01-01T12:58:00Z", [leader("real/one", 2)]))
    snap = b.snapshot()
    assert snap["event_time"] == "2015-01-01T12:59:59Z"
    assert [l["repo"] for l in snap["leaders"]] == ["real/repo", "real/one"]


def test_a_forged_board_lasts_until_its_partition_writes_again():
    b = board_of((b"7", record(7, "2015-01-01T10:00:00Z", [leader("real/seven", 40)])))
    assert b.ingest(b"7", record(7, "2015-01-01T10:00:01Z", [leader("forged/top", L.MAX_WINDOW_STARS)]))
    assert b.snapshot()["leaders"][0]["repo"] == "forged/top"
    assert b.ingest(b"7", record(7, "2015-01-01T10:00:02Z", [leader("real/seven", 41)]))
    assert [l["repo"] for l in b.snapshot()["leaders"]] == ["real/seven"]


def test_oversized_records_are_refused_before_parsing():
    big = record(0, None, [leader("a/b", 1, events=[{"type": "ForkEvent", "name": "x" * (L.MAX_RECORD_BYTES + 10)}])])
    b = L.Board()
    assert not b.ingest(b"0", big)
    assert b.stats()["last_error"] == "record too large"


# ---------- Host header ----------

@pytest.mark.parametrize("header,name", [
    ("localhost", "localhost"), ("localhost:5000", "localhost"), ("LocalHost:5000", "localhost"),
    ("127.0.0.1:80", "127.0.0.1"), ("[::1]:5000", "[::1]"), ("[::1]", "[::1]"),
    ("evil.example:5000", "evil.example"), ("localhost:5000:6000", None), ("localhost:x", None),
    ("[::1]x", None), ("", None), (None, None), ("localhost:\u0665", None),
])
def test_host_name(header, name):
    assert host_name(header) == name


def status_with_host(app, host: str, path: str = "/") -> int:
    return app.test_client().get(path, headers={"Host": host}).status_code


@pytest.mark.parametrize("path", ["/", "/api/leaders", "/api/health", "/static/app.js", "/stream"])
def test_loopback_binding_serves_only_loopback_names(path):
    app = create_app(Config(host="127.0.0.1", max_streams=64), start=False)
    for host in ("localhost:5000", "127.0.0.1:5000", "[::1]:5000", "localhost"):
        if path != "/stream":
            assert status_with_host(app, host, path) == 200, host
    for host in ("evil.example:5000", "localhost.evil.example", "127.0.0.1.nip.io:5000", "0.0.0.0:5000",
                 "127.0.0.2:5000"):
        assert status_with_host(app, host, path) == 421, host


def test_allowed_hosts_for_deployments_behind_a_proxy():
    app = create_app(Config(host="127.0.0.1", allowed_hosts="stars.example.org, Other.Example"), start=False)
    assert status_with_host(app, "stars.example.org") == 200
    assert status_with_host(app, "other.example:443") == 200
    assert status_with_host(app, "localhost:5000") == 421
    app = create_app(Config(host="127.0.0.1", allowed_hosts="*"), start=False)
    assert status_with_host(app, "anything.example") == 200
    # bound beyond loopback (a container, a LAN) the public name is not known: any, unless named
    assert status_with_host(create_app(Config(host="0.0.0.0"), start=False), "anything.example") == 200
    # the bound loopback address itself is served, and ::1
    assert status_with_host(create_app(Config(host="127.0.0.2"), start=False), "127.0.0.2:5000") == 200
    assert status_with_host(create_app(Config(host="::1"), start=False), "[::1]:5000") == 200
    assert parse_args(["--allowed-hosts", "a.example"], environ={}).allowed_hosts == "a.example"
    assert parse_args([], environ={"DASHBOARD_ALLOWED_HOSTS": "b.example"}).allowed_hosts == "b.example"


def test_real_server_refuses_a_rebound_name():
    """Over a socket, as a browser sends it after DNS rebinding."""
    config = Config()
    with serve(config, create_app(config, start=False)) as (url, app):
        port = int(url.rsplit(":", 1)[1])
        for host, status in ((f"attacker.example:{port}", 421), (f"localhost:{port}", 200)):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request("GET", "/api/leaders", headers={"Host": host})
            resp = conn.getresponse()
            assert resp.status == status, host
            resp.read()
            conn.close()


# ---------- connections ----------

def server_config(**kw) -> Config:
    return Config(**{"connection_timeout": 1.0, **kw})


def connect(url: str, source: str = "127.0.0.1") -> socket.socket:
    port = int(url.rsplit(":", 1)[1])
    return socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))


def closed_within(sock: socket.socket, seconds: float) -> float | None:
    """Seconds until the server closed `sock` (reading and discarding), None if it stayed open."""
    start = time.monotonic()
    sock.settimeout(seconds)
    try:
        while sock.recv(4096):
            pass
    except TimeoutError:
        return None
    except ConnectionResetError:
        pass
    return time.monotonic() - start


def wait_open(app, n: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while app.server.open_connections() != n:
        assert time.monotonic() < deadline, f"{app.server.open_connections()} open connections, not {n}"
        time.sleep(0.02)


def test_idle_and_dripping_connections_are_closed():
    config = server_config()
    with serve(config, create_app(config, start=False)) as (url, app):
        idle = connect(url)
        assert closed_within(idle, 5) is not None, "an idle connection was kept"
        # one header byte every 0.3 s: each read is within the timeout, the head as a whole is not
        drip = connect(url)
        started = time.monotonic()
        head = b"GET /api/leaders HTTP/1.1\r\nHost: localhost\r\nX-Slow: " + b"a" * 200
        with pytest.raises(OSError):
            for byte in head:
                drip.sendall(bytes([byte]))
                time.sleep(0.3)
        assert time.monotonic() - started < 5, "a dripping client held its thread past the deadline"
        # a keep-alive connection is closed once idle after its response
        kept = connect(url)
        kept.sendall(b"GET /api/leaders HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert closed_within(kept, 5) is not None
        wait_open(app, 0)
        for s in (idle, drip, kept):
            s.close()


def test_connection_caps_per_client_and_in_total():
    config = server_config(connection_timeout=30.0, max_connections=3, max_connections_per_client=2)
    with serve(config, create_app(config, start=False)) as (url, app):
        mine = [connect(url), connect(url)]
        wait_open(app, 2)
        third = connect(url)
        answer = third.recv(4096)
        assert answer.startswith(b"HTTP/1.1 503 ") and b"Retry-After: 10" in answer
        assert closed_within(third, 5) is not None
        other = connect(url, "127.0.0.2")          # another client still gets in ...
        wait_open(app, 3)
        fourth = connect(url, "127.0.0.3")         # ... until the total is reached
        assert fourth.recv(4096).startswith(b"HTTP/1.1 503 ")
        assert app.server.refused == 2
        for s in mine:
            s.close()
        wait_open(app, 1)
        again = connect(url)
        again.sendall(b"GET /api/leaders HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        assert again.recv(4096).startswith(b"HTTP/1.1 200 ")
        for s in (third, other, fourth, again):
            s.close()


def sse_from(url: str, source: str) -> SSE:
    s = SSE.__new__(SSE)
    host, port = url.removeprefix("http://").split(":")
    s.conn = http.client.HTTPConnection(host, int(port), timeout=30, source_address=(source, 0))
    s.conn.request("GET", "/stream", headers={"Accept": "text/event-stream"})
    s.resp = s.conn.getresponse()
    s.comments, s.retry = [], None
    return s


def test_stream_caps_per_client_and_in_total():
    config = server_config(connection_timeout=30.0, max_streams=2, max_streams_per_client=1)
    with serve(config, create_app(config, start=False)) as (url, app):
        first = sse_from(url, "127.0.0.1")
        assert first.resp.status == 200
        same = sse_from(url, "127.0.0.1")
        assert same.resp.status == 503 and same.resp.getheader("Retry-After") == "10"
        same.close()
        other = sse_from(url, "127.0.0.2")
        assert other.resp.status == 200
        third = sse_from(url, "127.0.0.3")
        assert third.resp.status == 503
        third.close()
        first.close()
        # the slot comes back when the client goes away (the server notices at its next write)
        rt = app.extensions["dashboard"]
        deadline = time.monotonic() + 30
        while rt.streams.in_use() != 1:
            assert time.monotonic() < deadline, "the closed stream's slot was not released"
            time.sleep(0.1)
        other.close()


def test_limits_are_validated():
    for flags in (["--connection-timeout", "0"], ["--max-connections", "0"],
                  ["--max-streams-per-client", "0"], ["--partitions", "0"], ["--partitions", "5000"],
                  ["--kafka-timeout", "-1"], ["--expected-workers", "0"]):
        with pytest.raises(SystemExit):
            parse_args(flags, environ={})
    c = parse_args(["--partitions", "8", "--expected-workers", "2"], environ={"DASHBOARD_MAX_STREAMS_PER_CLIENT": "3"})
    assert (c.partitions, c.expected_workers, c.max_streams_per_client) == (8, 2, 3)
    assert create_app(c, start=False).extensions["dashboard"].board.partitions == 8


def test_repository_lookups_are_rate_limited_per_browser():
    """/api/repos/... costs 32-33 queries of the workers: a browser gets a burst of two seconds' worth of
    its rate, then 429; another browser is not affected; a malformed name is refused
    before it counts."""
    from dashboard.repos import BURST_S, RATE_PER_S, Repos
    repos = Repos([], rate_per_s=RATE_PER_S)          # no worker: an allowed lookup answers 503
    burst = int(BURST_S * RATE_PER_S)
    assert [repos.card("a/b", client="10.0.0.1")[0] for _ in range(burst)] == [503] * burst
    assert repos.card("a/b", client="10.0.0.1")[0] == 429
    assert repos.complete("a", client="10.0.0.1")[0] == 429
    assert repos.card("a/b", client="10.0.0.2")[0] == 503
    assert repos.card("not a name", client="10.0.0.3")[0] == 400
