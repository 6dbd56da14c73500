"""Reader: every malformed kind is skipped and counted exactly; every valid line is kept as is."""
import gzip
import json
import logging
import zlib

import orjson

from archive_streamer.reader import ReadStats, created_at_ms, read_file
from test_archive_streamer_helpers import synthetic_lines, write_gz


def ev(i: int, **over) -> bytes:
    d = {"id": str(1000 + i), "type": "WatchEvent",
         "actor": {"id": i, "login": f"u{i}", "display_login": f"u{i}"},
         "repo": {"id": i, "name": f"owner{i}/repo", "url": "x"}, "payload": {"action": "started"},
         "public": True, "created_at": f"2015-01-01T12:{i % 60:02d}:00Z"}
    d.update(over)
    return json.dumps({k: v for k, v in d.items() if v is not None}).encode()


def test_each_malformed_kind_is_skipped_and_counted(tmp_path, caplog):
    good = [ev(i) for i in range(5)]
    surrogate = ev(5, payload={"note": "\ud83d broken emoji"})   # json.dumps escapes it: \ud83d
    assert b"\\ud83d" in surrogate
    unicode_name = ev(6, repo={"id": 6, "name": "ünïcode/répo"})
    lines = [
        good[0],
        b"this is not json",                       # invalid_json
        good[1],
        ev(7)[:-1] + b"\x00\x00}",                 # nul_bytes
        ev(8) + ev(9),                             # multiple_objects: {...}{...}
        ev(10, created_at=None),                   # missing_created_at
        ev(11, repo=None),                         # missing_repo
        ev(12, repo={"id": 12}),                   # missing_repo_name
        b"[1, 2, 3]",                              # not_an_object
        b"",                                       # empty_line
        ev(13, created_at="yesterday"),            # bad_created_at
        b'{"id": "14", "type": "PushEvent"',       # invalid_json (cut)
        b"x" * 5000,                               # line_too_long (limit below)
        good[2],
        surrogate,                                 # orjson refuses a lone surrogate; still valid
        unicode_name,
        good[3],
        good[4],                                   # last line, no final newline
    ]
    path = write_gz(tmp_path / "2015-01-01-12.json.gz", lines, final_newline=False)
    stats = ReadStats()
    with caplog.at_level(logging.WARNING, logger="archive_streamer"):
        events = list(read_file(path, stats, max_line_bytes=4096))
    kept = [good[0], good[1], good[2], surrogate, unicode_name, good[3], good[4]]
    assert [e.line for e in events] == kept
    assert [e.repo for e in events] == ["owner0/repo", "owner1/repo", "owner2/repo", "owner5/repo",
                                        "ünïcode/répo", "owner3/repo", "owner4/repo"]
    assert events[0].ts_ms == 1420113600000          # 2015-01-01T12:00:00Z
    assert dict(stats.skipped) == {
        "invalid_json": 2, "nul_bytes": 1, "multiple_objects": 1, "missing_created_at": 1,
        "missing_repo": 1, "missing_repo_name": 1, "not_an_object": 1, "empty_line": 1,
        "bad_created_at": 1, "line_too_long": 1}
    assert stats.lines == len(lines) and stats.events == 7 and stats.files == 1
    assert stats.examples["invalid_json"] == f"{path}:2"      # file and line number
    assert stats.examples["multiple_objects"] == f"{path}:5"
    assert stats.examples["line_too_long"] == f"{path}:13"
    # each kind logged once, with its location, even though invalid_json happened twice
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 10
    assert sum("invalid json" in w for w in warnings) == 1 and any(f"{path}:2" in w for w in warnings)


def test_long_line_is_not_kept_and_following_lines_survive(tmp_path):
    lines = [ev(1), b'{"pad": "' + b"y" * 300_000 + b'"}', ev(2)]
    stats = ReadStats()
    events = list(read_file(write_gz(tmp_path / "a.json.gz", lines), stats, max_line_bytes=100_000))
    assert [e.line for e in events] == [ev(1), ev(2)]
    assert dict(stats.skipped) == {"line_too_long": 1}


def test_truncated_gzip_keeps_every_complete_line_before_the_cut(tmp_path):
    lines = synthetic_lines("2015-01-01-12", 3000)
    full = gzip.compress(b"\n".join(lines) + b"\n")
    cut = full[: len(full) * 6 // 10]
    path = tmp_path / "2015-01-01-12.json.gz"
    path.write_bytes(cut)
    # What a truncated stream still holds, worked out independently of the reader:
    readable = zlib.decompressobj(wbits=31).decompress(cut)
    complete = readable.split(b"\n")[:-1]
    assert 1000 < len(complete) < 3000
    stats = ReadStats()
    events = list(read_file(path, stats))
    assert [e.line for e in events] == complete
    assert dict(stats.skipped) == {"truncated_gzip": 1}


def test_not_gzip_at_all_is_counted(tmp_path):
    path = tmp_path / "2015-01-01-1.json.gz"
    path.write_bytes(b"<html>Service Unavailable</html>")
    stats = ReadStats()
    assert list(read_file(path, stats)) == []
    assert dict(stats.skipped) == {"corrupt_gzip": 1}


def test_corrupt_deflate_mid_file_keeps_lines_before(tmp_path):
    lines = synthetic_lines("2015-01-01-12", 2000)
    data = bytearray(gzip.compress(b"\n".join(lines) + b"\n"))
    middle = len(data) // 2
    data[middle:middle + 64] = b"\xff" * 64
    path = tmp_path / "2015-01-01-12.json.gz"
    path.write_bytes(bytes(data))
    stats = ReadStats()
    events = list(read_file(path, stats))
    assert 0 < len(events) < 2000
    assert [e.line for e in events] == lines[: len(events)]
    assert dict(stats.skipped) == {"corrupt_gzip": 1}     # zlib: invalid block type


def test_multi_member_gzip_is_read_whole(tmp_path):
    a, b = synthetic_lines("2015-01-01-12", 100), synthetic_lines("2015-01-01-13", 100)
    path = tmp_path / "x.json.gz"
    path.write_bytes(gzip.compress(b"\n".join(a) + b"\n") + gzip.compress(b"\n".join(b) + b"\n"))
    assert [e.line for e in read_file(path)] == a + b


def test_created_at_forms():
    assert created_at_ms("2015-01-01T12:00:01Z") == 1420113601000
    assert created_at_ms("2015-01-01T04:00:01-08:00") == 1420113601000   # 2011-2014 archive style
    assert orjson.loads(ev(3))["created_at"] == "2015-01-01T12:03:00Z"
