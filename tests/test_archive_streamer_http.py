"""HTTP source against a local server in GH Archive's layout: 404s, truncated gzip, the cache,
retries, resuming with Range and If-Range, verification before caching, redirects.  End to end
into the real broker."""
import email.utils
import gzip
import hashlib
import http.server
import os
import random
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
    """Serves a folder like data.gharchive.org, with Range and If-Range support (a strong ETag and
    Last-Modified) and injectable failures.  `mirror/<name>` serves `<name>` too (a redirect target)."""

    def __init__(self, root: Path):
        self.root = root
        self.requests: list[tuple[str, str | None, int]] = []   # (path, Range header, status)
        self.if_ranges: list[tuple[str, str | None]] = []       # (path, If-Range header) per GET
        self.fail_first: set[str] = set()     # answer 500 to the first GET of these paths
        self.always_fail: set[str] = set()
        self.cut_first: dict[str, int] = {}   # first GET: promise the whole file, send N bytes, close
        self.ignore_range = False
        self.ignore_if_range = False          # honour Range even when If-Range names another version
        self.validators = {"ETag", "Last-Modified"}   # the ones responses carry
        self.declare_length = True            # False: no Content-Length; the body ends at the close
        self.length_first: dict[str, int] = {}        # first GET: declare this Content-Length
        self.body_first: dict[str, tuple[str, bytes]] = {}   # first GET: 200 (Content-Type, body)
        self.body_always: dict[str, tuple[str, bytes]] = {}
        self.redirects: dict[str, str] = {}   # path -> Location of a 302
        self.replace_after_first: dict[str, bytes] = {}   # the file changes after its first GET
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                name = self.path.lstrip("/")
                rng = self.headers.get("Range")
                server.if_ranges.append((name, self.headers.get("If-Range")))
                seen = [p for p, _, _ in server.requests if p == name]
                try:
                    self._answer(name, rng, seen)
                finally:
                    if name in server.replace_after_first and not seen:
                        server.replace(name, server.replace_after_first[name])

            def _answer(self, name, rng, seen):
                path = server.root / name.removeprefix("mirror/")
                if name in server.redirects:
                    server.requests.append((name, rng, 302))
                    self.send_response(302)
                    self.send_header("Location", server.redirects[name])
                    self.send_header("Content-Length", "0")
                    return self.end_headers()
                if name in server.always_fail or (name in server.fail_first and not seen):
                    return self._status(name, rng, 500)
                if name in server.body_always or (name in server.body_first and not seen):
                    content_type, body = server.body_always.get(name) or server.body_first[name]
                    server.requests.append((name, rng, 200))
                    self.send_response(200)
                    self.send_header("Content-Type", content_type)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    return self.wfile.write(body)
                if "/" in name.removeprefix("mirror/") or not path.is_file():
                    return self._status(name, rng, 404)
                data = path.read_bytes()
                validators = {"ETag": server.etag(name.removeprefix("mirror/")),
                              "Last-Modified": email.utils.formatdate(path.stat().st_mtime, usegmt=True)}
                validators = {k: v for k, v in validators.items() if k in server.validators}
                # RFC 9110: a Range whose If-Range names another version gets the whole file
                if_range = self.headers.get("If-Range")
                same_version = (not if_range or server.ignore_if_range
                                or if_range in validators.values())
                start = 0
                if rng and not server.ignore_range and same_version:
                    start = int(rng.removeprefix("bytes=").split("-")[0])
                    if start >= len(data):
                        return self._status(name, rng, 416, {"Content-Range": f"bytes */{len(data)}"})
                status = 206 if start else 200
                server.requests.append((name, rng, status))
                self.send_response(status)
                self.send_header("Content-Type", "application/gzip")
                for header, value in validators.items():
                    self.send_header(header, value)
                if server.declare_length:
                    length = server.length_first.get(name) if not seen else None
                    self.send_header("Content-Length", str(length or len(data) - start))
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

            def _status(self, name, rng, code, headers=None):
                server.requests.append((name, rng, code))
                self.send_response(code)
                for header, value in (headers or {}).items():
                    self.send_header(header, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        # a short poll interval: shutdown() waits for one, in every test's teardown
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()

    def etag(self, name: str) -> str:
        return '"' + hashlib.sha256((self.root / name).read_bytes()).hexdigest()[:16] + '"'

    def replace(self, name: str, data: bytes) -> None:
        """A new version of the file: new bytes and a Last-Modified an hour later."""
        path = self.root / name
        later = path.stat().st_mtime + 3600
        path.write_bytes(data)
        os.utime(path, (later, later))

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
    # hour 2 is damaged on the server itself (the same bytes twice): kept apart from verified files
    assert sorted(p.name for p in cache.iterdir()) == [
        "2015-01-01-0.json.gz", "2015-01-01-2.json.gz.damaged", "2015-01-01-3.json.gz"]
    served_bytes = (archive.root / "2015-01-01-2.json.gz").read_bytes()
    assert (cache / "2015-01-01-2.json.gz.damaged").read_bytes() == served_bytes
    assert "the archive serves a damaged file" in r.stderr

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
    cached = gzip.compress(b"cached\n")    # a whole gzip stream: it decodes to its end
    (tmp_path / "2015-01-01-4.json.gz").write_bytes(cached)
    path = download.fetch_hour(parse_hour("2015-01-01-4"), archive.url, tmp_path)
    assert path.read_bytes() == cached and archive.requests == []


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


# Verification before caching: each test names the fault it serves.

@pytest.fixture
def cache(tmp_path):
    """The download cache, apart from the server's folder."""
    path = tmp_path / "cache"
    path.mkdir()
    return path


HTML_PAGE = b"<!DOCTYPE html><html><body><h1>429 Too Many Requests</h1></body></html>\n"


def payload(seed: int = 3) -> list[bytes]:
    """~400 KB of incompressible-ish lines: downloads only look at bytes (and synthetic events
    cost a second to generate on a busy machine)."""
    rng = random.Random(seed)
    return [rng.randbytes(500).hex().encode() for _ in range(400)]


def served(archive, hour: str, seed: int = 3) -> tuple[str, bytes]:
    """Puts `hour` on the server; (file name, its bytes)."""
    path = write_hour(archive.root, hour, payload(seed))
    return path.name, path.read_bytes()


def fetch(archive, cache: Path, hour: str, **args) -> Path:
    return download.fetch_hour(parse_hour(hour), archive.url, cache, backoff_s=0.001, **args)


def test_dropped_connection_resumes_with_if_range(archive, cache):
    name, whole = served(archive, "2015-01-01-7")
    archive.cut_first[name] = 65536
    path = fetch(archive, cache, "2015-01-01-7")
    assert path.read_bytes() == whole
    assert archive.gets(name) == [(None, 200), ("bytes=65536-", 206)]
    assert archive.if_ranges == [(name, None), (name, archive.etag(name))]
    assert sorted(p.name for p in cache.iterdir()) == [name]    # no .part, no .part.json


def test_body_ending_early_without_content_length_is_not_cached(archive, cache):
    # With no Content-Length a dropped connection looks like the end of the body: only the gzip
    # stream can tell, and it must end properly before the file is cached.
    name, whole = served(archive, "2015-01-01-7")
    archive.declare_length = False
    archive.cut_first[name] = 65536
    path = fetch(archive, cache, "2015-01-01-7")
    assert path.read_bytes() == whole
    assert archive.gets(name) == [(None, 200), (None, 200)]


def test_content_length_smaller_than_the_file_is_retried(archive, cache, caplog):
    name, whole = served(archive, "2015-01-01-7")
    archive.length_first[name] = len(whole) - 1000      # the client reads only what is declared
    path = fetch(archive, cache, "2015-01-01-7")
    assert path.read_bytes() == whole
    assert archive.gets(name) == [(None, 200), (None, 200)]
    assert "truncated gzip" in caplog.text and "retry 1/" in caplog.text


def test_interrupted_run_is_resumed_next_run_with_if_range(archive, cache):
    name, whole = served(archive, "2015-01-01-7")
    archive.cut_first[name] = 65536
    with pytest.raises(download.DownloadError, match="IncompleteRead"):
        fetch(archive, cache, "2015-01-01-7", retries=0)
    assert not (cache / name).exists()                           # not cached as complete
    assert (cache / (name + ".part")).stat().st_size == 65536
    first_etag = archive.etag(name)
    _, new = served(archive, "2015-01-01-7", seed=4)                 # the server's file changes
    path = fetch(archive, cache, "2015-01-01-7")
    assert path.read_bytes() == new
    assert archive.gets(name) == [(None, 200), ("bytes=65536-", 200)]
    assert archive.if_ranges[-1] == (name, first_etag)


@pytest.mark.parametrize("validators", [{"ETag", "Last-Modified"}, {"Last-Modified"}])
def test_resume_after_the_file_changed_gets_the_whole_new_file(archive, cache, validators):
    name, old = served(archive, "2015-01-01-7")
    archive.validators = validators
    first_validator = (archive.etag(name) if "ETag" in validators else
                       email.utils.formatdate((archive.root / name).stat().st_mtime, usegmt=True))
    new = gzip.compress(b"\n".join(payload(seed=4)) + b"\n")
    archive.cut_first[name] = 65536
    archive.replace_after_first[name] = new
    path = fetch(archive, cache, "2015-01-01-7")
    assert path.read_bytes() == new != old
    assert archive.gets(name) == [(None, 200), ("bytes=65536-", 200)]
    assert archive.if_ranges[1] == (name, first_validator)


def test_server_ignoring_if_range_is_not_spliced(archive, cache, caplog):
    name, _ = served(archive, "2015-01-01-7")
    archive.ignore_if_range = True          # answers 206 with the tail of the new version
    new = gzip.compress(b"\n".join(payload(seed=4)) + b"\n")
    archive.cut_first[name] = 65536
    archive.replace_after_first[name] = new
    path = fetch(archive, cache, "2015-01-01-7")
    assert path.read_bytes() == new
    assert archive.gets(name) == [(None, 200), ("bytes=65536-", 206), (None, 200)]
    assert "the file changed on the server" in caplog.text


def test_resume_without_validators_is_verified_not_spliced(archive, cache, caplog):
    # Stored (uncompressed) gzip blocks: the old and new versions have the same length, so only
    # the gzip CRC can tell the spliced file from a real one.
    lines = payload()
    old = gzip.compress(b"\n".join(lines) + b"\n", compresslevel=0, mtime=0)
    new = gzip.compress(b"\n".join(reversed(lines)) + b"\n", compresslevel=0, mtime=0)
    assert len(old) == len(new) and old != new
    name = "2015-01-01-7.json.gz"
    (archive.root / name).write_bytes(old)
    archive.validators = set()
    archive.cut_first[name] = 65536
    archive.replace_after_first[name] = new
    path = fetch(archive, cache, "2015-01-01-7")
    assert path.read_bytes() == new
    assert archive.gets(name) == [(None, 200), ("bytes=65536-", 206), (None, 200)]
    assert archive.if_ranges[1] == (name, None)
    assert "CRC check failed" in caplog.text


def test_html_page_served_with_200_is_retried_not_cached(archive, cache, caplog):
    name, whole = served(archive, "2015-01-01-7")
    archive.body_first[name] = ("text/html; charset=utf-8", HTML_PAGE)
    path = fetch(archive, cache, "2015-01-01-7")
    assert path.read_bytes() == whole
    assert archive.gets(name) == [(None, 200), (None, 200)]
    assert ("not a gzip file: the server sent text/html; charset=utf-8 starting b'<!DOCTYPE html>"
            in caplog.text)


def test_html_page_every_time_fails_and_is_never_replayed(archive, cache):
    name, whole = served(archive, "2015-01-01-7")
    archive.body_always[name] = ("text/html", HTML_PAGE)
    with pytest.raises(download.DownloadError,
                       match=r"not a gzip file: .*text/html.*gave up after 2 retries"):
        fetch(archive, cache, "2015-01-01-7", retries=2)
    assert archive.gets(name) == [(None, 200)] * 3
    assert list(cache.iterdir()) == []
    del archive.body_always[name]           # the server is well again: the next run downloads
    assert fetch(archive, cache, "2015-01-01-7").read_bytes() == whole
    assert len(archive.gets(name)) == 4


def test_resumed_part_that_is_not_gzip_is_thrown_away(archive, cache):
    # A .part left with an HTML page at its start (by an older version, or another tool): the
    # resumed file cannot decode, so it is downloaded whole; its head is never kept.
    name, whole = served(archive, "2015-01-01-7")
    (cache / (name + ".part")).write_bytes(HTML_PAGE)
    path = fetch(archive, cache, "2015-01-01-7")
    assert path.read_bytes() == whole
    assert archive.gets(name) == [(f"bytes={len(HTML_PAGE)}-", 206), (None, 200)]


def test_part_already_whole_is_verified_without_downloading(archive, cache):
    name, whole = served(archive, "2015-01-01-7")
    (cache / (name + ".part")).write_bytes(whole)    # a run ended between the body and the rename
    path = fetch(archive, cache, "2015-01-01-7")
    assert path.read_bytes() == whole
    assert archive.gets(name) == [(f"bytes={len(whole)}-", 416)]


@pytest.mark.parametrize("damage", ["truncated", "flipped byte", "not gzip"])
def test_cached_file_found_damaged_is_downloaded_again(archive, cache, caplog, damage):
    name, whole = served(archive, "2015-01-01-7")
    broken = {"truncated": whole[: len(whole) // 2],
              "flipped byte": whole[:5000] + bytes([whole[5000] ^ 0xFF]) + whole[5001:],
              "not gzip": HTML_PAGE}[damage]
    (cache / name).write_bytes(broken)
    path = fetch(archive, cache, "2015-01-01-7")
    assert path.read_bytes() == whole
    assert archive.gets(name) == [(None, 200)]
    assert f"cached {cache / name} is damaged" in caplog.text


def test_file_damaged_on_the_server_is_kept_apart_and_reused(archive, cache, caplog):
    whole = gzip.compress(b"\n".join(payload()) + b"\n")
    name = "2015-01-01-7.json.gz"
    (archive.root / name).write_bytes(whole[: len(whole) // 2])    # complete transfer, cut gzip
    path = fetch(archive, cache, "2015-01-01-7")
    assert path == cache / (name + ".damaged")
    assert path.read_bytes() == whole[: len(whole) // 2]
    assert archive.gets(name) == [(None, 200), (None, 200)]     # the same bytes twice
    assert not (cache / name).exists()                       # never passes for a verified file
    assert fetch(archive, cache, "2015-01-01-7") == path     # reused without asking
    assert len(archive.gets(name)) == 2
    assert "served damaged (delete it to download again)" in caplog.text


def test_damaged_gzip_that_differs_each_time_is_never_kept(archive, cache):
    # A server cutting its body at a different place each time: no two downloads agree, so none
    # is taken for the archive's own damaged file.
    name, whole = served(archive, "2015-01-01-7")
    archive.declare_length = False
    archive.cut_first[name] = 65536
    archive.replace_after_first[name] = whole[:100000]
    with pytest.raises(download.DownloadError, match="truncated gzip"):
        fetch(archive, cache, "2015-01-01-7", retries=1)
    assert list(cache.iterdir()) == []


def test_redirect_on_the_same_origin_is_followed(archive, cache):
    name, whole = served(archive, "2015-01-01-7")
    archive.redirects[name] = f"/mirror/{name}"
    path = fetch(archive, cache, "2015-01-01-7")
    assert path.read_bytes() == whole
    assert [(p, s) for p, _, s in archive.requests] == [(name, 302), (f"mirror/{name}", 200)]


@pytest.mark.parametrize("target", ["http://localhost:{port}/mirror/{name}",
                                    "https://archive.example.org/{name}",
                                    "http://127.0.0.1:1/{name}"])
def test_redirect_elsewhere_is_an_error(archive, cache, target):
    name, _ = served(archive, "2015-01-01-7")
    location = target.format(port=archive.port, name=name)
    archive.redirects[name] = location
    with pytest.raises(download.DownloadError,
                       match=f"redirected to {location}, which is not followed .only https on 127.0.0.1"):
        fetch(archive, cache, "2015-01-01-7")
    assert [p for p, _, _ in archive.requests] == [name]       # not retried, the target never asked
    assert list(cache.iterdir()) == []


def test_redirect_loop_is_bounded(archive, cache):
    name, _ = served(archive, "2015-01-01-7")
    archive.redirects[name] = f"/{name}"
    with pytest.raises(download.DownloadError, match="more than 5 redirects"):
        fetch(archive, cache, "2015-01-01-7")
    assert len(archive.requests) == 6


@pytest.mark.parametrize("base, target, allowed", [
    ("https://data.gharchive.org", "https://data.gharchive.org/x.json.gz", True),
    ("https://data.gharchive.org", "https://DATA.gharchive.org:8443/x", True),
    ("http://data.gharchive.org", "https://data.gharchive.org/x", True),        # an upgrade
    ("https://data.gharchive.org", "http://data.gharchive.org/x", False),       # a downgrade
    ("https://data.gharchive.org", "https://storage.example.com/x", False),
    ("https://data.gharchive.org", "https://data.gharchive.org.example.com/x", False),
    ("https://data.gharchive.org", "https://data.gharchive.org@example.com/x", False),
    ("https://data.gharchive.org", "ftp://data.gharchive.org/x", False),
    ("http://127.0.0.1:8000", "http://127.0.0.1:8000/mirror/x", True),
    ("http://127.0.0.1:8000", "http://127.0.0.1:8001/x", False),
    ("http://127.0.0.1:8000", "http://localhost:8000/x", False),
    ("http://127.0.0.1:8000", "http://127.0.0.1:notaport/x", False),
])
def test_redirect_rule(base, target, allowed):
    assert download.redirect_allowed(base, target) is allowed


@pytest.mark.kafka
def test_html_page_hour_is_reported_failed_and_not_cached(kafka, topic_name, archive, tmp_path):
    for h in ("2015-01-01-0", "2015-01-01-1"):
        write_hour(archive.root, h, synthetic_lines(h, 20))
    archive.body_always["2015-01-01-0.json.gz"] = ("text/html", HTML_PAGE)
    cache = tmp_path / "c"
    r = run_cli("--source", archive.url, "--start", "2015-01-01-0", "--hours", "2", "--speedup", "0",
                "--kafka", kafka, "--topic", topic_name("as-html"), "--cache-dir", str(cache),
                "--retries", "0", "--no-progress")
    assert r.returncode == 1, r.stderr
    assert "hour 2015-01-01-0 skipped: " in r.stderr
    assert "not a gzip file: the server sent text/html" in r.stderr
    assert "1 of 2 replayed, 0 missing, 1 failed (2015-01-01-0)" in r.stderr
    assert sent_count(r.stderr) == 20
    assert sorted(p.name for p in cache.iterdir()) == ["2015-01-01-1.json.gz"]
