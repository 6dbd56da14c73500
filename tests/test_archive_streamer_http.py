"""HTTP source against a local server in GH Archive's layout: 404s, truncated gzip, the cache,
retries, and resuming with Range.  End to end into the real broker."""
import gzip
import http.server
import threading
from collections import Counter
from pathlib import Path

import orjson
import pytest
from confluent_kafka import TIMESTAMP_CREATE_TIME

from archive_streamer import download
from archive_streamer.hours import parse_hour
from archive_streamer.reader import created_at_ms
from conftest import read_topic
from test_archive_streamer_helpers import run_cli, sent_count, synthetic_lines, write_hour


class ArchiveServer:
    """Serves a folder like data.gharchive.org, with Range support and injectable failures."""

    def __init__(self, root: Path):
        self.root = root
        self.requests: list[tuple[str, str | None, int]] = []   # (path, Range header, status)
        self.fail_first: set[str] = set()     # answer 500 to the first GET of these paths
        self.always_fail: set[str] = set()
        self.cut_first: dict[str, int] = {}   # first GET: promise the whole file, send N bytes, close
        self.ignore_range = False
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                name = self.path.lstrip("/")
                rng = self.headers.get("Range")
                seen = [p for p, _, _ in server.requests if p == name]
                path = server.root / name
                if name in server.always_fail or (name in server.fail_first and not seen):
                    return self._status(name, rng, 500)
                if "/" in name or not path.is_file():
                    return self._status(name, rng, 404)
                data = path.read_bytes()
                start = 0
                if rng and not server.ignore_range:
                    start = int(rng.removeprefix("bytes=").split("-")[0])
                    if start >= len(data):
                        return self._status(name, rng, 416)
                status = 206 if start else 200
                server.requests.append((name, rng, status))
                self.send_response(status)
                self.send_header("Content-Type", "application/gzip")
                self.send_header("Content-Length", str(len(data) - start))
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.end_headers()
                body = data[start:]
                if name in server.cut_first and len(seen) == 0:
                    self.wfile.write(body[: server.cut_first[name]])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

            def _status(self, name, rng, code):
                server.requests.append((name, rng, code))
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def gets(self, name: str) -> list[tuple[str | None, int]]:
        return [(r, s) for p, r, s in self.requests if p == name]

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def archive(tmp_path):
    server = ArchiveServer(tmp_path / "www")
    (tmp_path / "www").mkdir()
    yield server
    server.close()


def make_site(root: Path) -> list[bytes]:
    """Hours 2015-01-01-0..3: hour 1 missing (404), hour 2 a truncated gzip, hour 0 with two bad
    lines.  Returns the lines that must reach Kafka."""
    h0 = synthetic_lines("2015-01-01-0", 300)
    h0_file = h0[:100] + [b"{not json", h0[100][:-1] + b"}{}"] + h0[101:]
    write_hour(root, "2015-01-01-0", h0_file)
    expected = h0[:100] + h0[101:]
    h2 = synthetic_lines("2015-01-01-2", 600)
    full = gzip.compress(b"\n".join(h2) + b"\n")
    cut = full[: len(full) // 2]
    (root / "2015-01-01-2.json.gz").write_bytes(cut)
    import zlib
    expected += zlib.decompressobj(wbits=31).decompress(cut).split(b"\n")[:-1]
    h3 = synthetic_lines("2015-01-01-3", 300)
    write_hour(root, "2015-01-01-3", h3)
    return expected + h3


@pytest.mark.kafka
def test_http_end_to_end_then_cached(kafka, topic_name, archive, tmp_path):
    expected = make_site(archive.root)
    cache = tmp_path / "cache"
    topic = topic_name("as-http")
    args = ["--source", archive.url, "--start", "2015-01-01-0", "--hours", "4", "--speedup", "0",
            "--kafka", kafka, "--cache-dir", str(cache), "--no-progress"]
    r = run_cli(*args, "--topic", topic)
    assert r.returncode == 0, r.stderr
    assert sent_count(r.stderr) == len(expected)
    assert "hour 2015-01-01-1 missing" in r.stderr                       # the 404 is reported
    assert "3 of 4 replayed, 1 missing (2015-01-01-1), 0 failed" in r.stderr
    assert "invalid_json=1" in r.stderr and "multiple_objects=1" in r.stderr
    assert "truncated_gzip=1" in r.stderr
    msgs = read_topic(kafka, topic, expect=len(expected))
    assert Counter(m.value() for m in msgs) == Counter(expected)          # exactly the valid events
    for m in msgs:
        event = orjson.loads(m.value())
        assert m.key() == event["repo"]["name"].encode()
        assert m.timestamp() == (TIMESTAMP_CREATE_TIME, created_at_ms(event["created_at"]))
    assert sorted(p.name for p in cache.iterdir()) == [
        "2015-01-01-0.json.gz", "2015-01-01-2.json.gz", "2015-01-01-3.json.gz"]
    assert (cache / "2015-01-01-2.json.gz").read_bytes() == (archive.root / "2015-01-01-2.json.gz").read_bytes()

    # Second run: the cached hours are not downloaded again (only the missing hour is asked for).
    before = len(archive.requests)
    topic2 = topic_name("as-http2")
    r2 = run_cli(*args, "--topic", topic2)
    assert r2.returncode == 0, r2.stderr
    assert sent_count(r2.stderr) == len(expected)
    assert [p for p, _, _ in archive.requests[before:]] == ["2015-01-01-1.json.gz"]
    assert len(read_topic(kafka, topic2, expect=len(expected))) == len(expected)


@pytest.mark.kafka
def test_http_first_request_500_is_retried(kafka, topic_name, archive, tmp_path):
    lines = synthetic_lines("2015-01-01-5", 200)
    write_hour(archive.root, "2015-01-01-5", lines)
    archive.fail_first.add("2015-01-01-5.json.gz")
    topic = topic_name("as-flaky")
    r = run_cli("--source", archive.url, "--start", "2015-01-01-5", "--hours", "1", "--speedup", "0",
                "--kafka", kafka, "--topic", topic, "--cache-dir", str(tmp_path / "c"), "--no-progress")
    assert r.returncode == 0, r.stderr
    assert archive.gets("2015-01-01-5.json.gz") == [(None, 500), (None, 200)]
    assert "HTTP 500" in r.stderr and "retry 1/" in r.stderr
    assert sent_count(r.stderr) == 200
    assert Counter(m.value() for m in read_topic(kafka, topic, expect=200)) == Counter(lines)


def test_broken_connection_resumes_with_range(archive, tmp_path):
    write_hour(archive.root, "2015-01-01-7", synthetic_lines("2015-01-01-7", 800))
    name = "2015-01-01-7.json.gz"
    archive.cut_first[name] = 65536
    path = download.fetch_hour(parse_hour("2015-01-01-7"), archive.url, tmp_path, backoff_s=0.01)
    assert path == tmp_path / name
    assert path.read_bytes() == (archive.root / name).read_bytes()
    assert archive.gets(name) == [(None, 200), ("bytes=65536-", 206)]
    assert not (tmp_path / (name + ".part")).exists()


def test_existing_part_file_is_resumed(archive, tmp_path):
    write_hour(archive.root, "2015-01-01-8", synthetic_lines("2015-01-01-8", 500))
    name = "2015-01-01-8.json.gz"
    whole = (archive.root / name).read_bytes()
    (tmp_path / (name + ".part")).write_bytes(whole[:1000])     # left by an interrupted run
    path = download.fetch_hour(parse_hour("2015-01-01-8"), archive.url, tmp_path, backoff_s=0.01)
    assert path.read_bytes() == whole
    assert archive.gets(name) == [("bytes=1000-", 206)]


def test_server_without_range_support_rewrites_the_part(archive, tmp_path):
    write_hour(archive.root, "2015-01-01-9", synthetic_lines("2015-01-01-9", 200))
    name = "2015-01-01-9.json.gz"
    whole = (archive.root / name).read_bytes()
    (tmp_path / (name + ".part")).write_bytes(b"garbage that is not the start of the file")
    archive.ignore_range = True
    path = download.fetch_hour(parse_hour("2015-01-01-9"), archive.url, tmp_path, backoff_s=0.01)
    assert path.read_bytes() == whole


def test_missing_hour_and_persistent_failure(archive, tmp_path):
    with pytest.raises(download.HourMissing):
        download.fetch_hour(parse_hour("2015-01-01-1"), archive.url, tmp_path / "cache", backoff_s=0.01)
    write_hour(archive.root, "2015-01-01-2", synthetic_lines("2015-01-01-2", 10))
    archive.always_fail.add("2015-01-01-2.json.gz")
    with pytest.raises(download.DownloadError, match="HTTP 500"):
        download.fetch_hour(parse_hour("2015-01-01-2"), archive.url, tmp_path / "cache", retries=2, backoff_s=0.01)
    assert [s for _, s in archive.gets("2015-01-01-2.json.gz")] == [500, 500, 500]
    assert list((tmp_path / "cache").iterdir()) == []   # nothing half-done passes for a cached hour


def test_cached_file_is_used_without_asking(archive, tmp_path):
    (tmp_path / "2015-01-01-4.json.gz").write_bytes(b"cached")
    path = download.fetch_hour(parse_hour("2015-01-01-4"), archive.url, tmp_path)
    assert path.read_bytes() == b"cached" and archive.requests == []


@pytest.mark.kafka
def test_download_failure_is_reported_and_exits_nonzero(kafka, topic_name, archive, tmp_path):
    for h in ("2015-01-01-0", "2015-01-01-1"):
        write_hour(archive.root, h, synthetic_lines(h, 20))
    archive.always_fail.add("2015-01-01-0.json.gz")
    topic = topic_name("as-fail")
    r = run_cli("--source", archive.url, "--start", "2015-01-01-0", "--hours", "2", "--speedup", "0",
                "--kafka", kafka, "--topic", topic, "--cache-dir", str(tmp_path / "c"),
                "--retries", "0", "--no-progress")
    assert r.returncode == 1, r.stderr
    assert "hour 2015-01-01-0 skipped" in r.stderr and "1 of 2 replayed, 0 missing, 1 failed (2015-01-01-0)" in r.stderr
    assert sent_count(r.stderr) == 20
    assert len(read_topic(kafka, topic, expect=20)) == 20
