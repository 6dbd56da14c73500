"""A hostile archive of our own making, in GH Archive's layout, served over HTTP and replayed end to end
(archive_streamer CLI -> gharchive -> two machida workers of star_leaders -> leaderboard): nothing
crashes or restarts, every valid event is delivered, the leaderboard equals the strict batch reference
(tests/strict_reference.py), and the skip counts the streamer prints are what the corpus holds.

Every line of the corpus carries the kind it must be skipped as (None: a valid event), so the corpus
says what it holds independently of both the reader and the reference (which are checked against it).
"""
import gzip
import json
import time
import zlib
from collections import Counter
from datetime import timedelta

import pytest

from archive_streamer.hours import ms as hour_ms, parse_hour
from archive_streamer.reader import ReadStats, read_file
from conftest import event_line, read_topic, wait_for
from reference import comparable, merge_partitions
from strict_reference import classify, strict_batch_leaders
from test_archive_streamer_helpers import run_cli, sent_count, skip_counts
from test_archive_streamer_http import ArchiveServer
from test_end_to_end import assert_clean_logs, both_assigned, start_workers, wait_until_consumed

HOURS = ["2015-01-01-10", "2015-01-01-11", "2015-01-01-12", "2015-01-01-13"]
TRUNCATED = HOURS[-1]              # served cut short: the last file of the replay
SURROGATE_REPO = "o/\ud83d"       # a lone surrogate escape: valid; shown as "o/\ufffd"


def iso(hour: str, minute: int, second: int = 0, offset: str = "Z") -> str:
    t = parse_hour(hour) + timedelta(minutes=minute, seconds=second)
    if offset == "Z":
        return t.strftime("%Y-%m-%dT%H:%M:%SZ")
    sign, hh, mm = offset[0], int(offset[1:3]), int(offset[4:6])
    delta = timedelta(hours=hh, minutes=mm) * (1 if sign == "+" else -1)
    return (t + delta).replace(tzinfo=None).isoformat() + offset


def nested(levels: int) -> bytes:
    return b'{"a":' * levels + b"1" + b"}" * levels


class Corpus:
    """Hour files as [(bytes written, kind or None, value the topic must hold)]."""

    def __init__(self):
        self.files = {hour: [] for hour in HOURS}
        self.eid = 0

    def valid(self, hour: str, line: bytes, written: bytes | None = None):
        self.files[hour].append((line if written is None else written, None, line))

    def bad(self, hour: str, written: bytes, kind: str):
        self.files[hour].append((written, kind, None))

    def star(self, hour, repo, minute, second=0, offset="Z", **kw) -> bytes:
        self.eid += 1
        return event_line("WatchEvent", f"s{self.eid}", repo, iso(hour, minute, second, offset), **kw)


def build_corpus() -> Corpus:
    c = Corpus()
    # The last file opens with a star for every repository that may lead, so each one's state object
    # reaches the last hour by a record of its own.  (By watermarks alone it may not: a state object
    # made after its partition's event time moved on keeps its records' time; see the report.)
    for repo in [SURROGATE_REPO, "\u00fcn\u00efcode/r\u00e9po"] + [f"owner{i}/repo" for i in range(12)]:
        c.valid(TRUNCATED, c.star(TRUNCATED, repo, 0))
    # Valid events: 14 ordinary repositories with distinct star counts, spread over the hours; the
    # repository with a lone surrogate in its name leads; stars with offsets; a duplicate star.
    for i in range(14):
        for n in range(30 - 2 * i):
            hour = HOURS[n % 4]
            c.valid(hour, c.star(hour, f"owner{i}/repo", (7 * n + i) % 60, n % 60))
    for n in range(40):
        hour = HOURS[n % 3]
        c.valid(hour, c.star(hour, SURROGATE_REPO, n, offset="+05:30" if n % 2 else "Z",
                             actor="fan\udc00"))
    for n in range(22):
        c.valid("2015-01-01-12", c.star("2015-01-01-12", "\u00fcn\u00efcode/r\u00e9po", n, offset="-08:00"))
    twice = c.star("2015-01-01-11", "owner0/repo", 30)
    c.valid("2015-01-01-11", twice)
    c.valid("2015-01-01-12", twice)                          # the archive repeats events: counted once
    c.valid("2015-01-01-12", c.star("2015-01-01-11", "owner13/repo", 59))  # an hour early: fine
    for i, kind in enumerate(["ForkEvent", "PullRequestEvent", "PushEvent", "IssuesEvent"]):
        c.valid("2015-01-01-12", event_line(kind, f"o{i}", "owner1/repo", iso("2015-01-01-12", 40 + i),
                                            actor="\ud83dlogin", title="fix \ud83d\ude00 and \udfff"))
    c.valid("2015-01-01-12", event_line("PushEvent", "p9", "a/b", iso("2015-01-01-12", 50),
                                        message='mentions "WatchEvent" and ForkEvent'))
    padded = c.star("2015-01-01-12", "owner2/repo", 51)
    c.valid("2015-01-01-12", b"  \t" + padded + b"  ")      # JSON whitespace around it: sent as it is
    crlf = c.star("2015-01-01-12", "owner3/repo", 52)
    c.valid("2015-01-01-12", crlf, crlf + b"\r")             # a CRLF line: sent without its \r
    dup_keys = c.star("2015-01-01-12", "decoy/repo", 53)[:-1] + b', "repo": {"name": "owner4/repo"}}'
    c.valid("2015-01-01-12", dup_keys)                       # duplicate keys: the last wins, as in JSON
    c.valid("2015-01-01-12", c.star("2015-01-01-12", "nul\u0000/repo", 54))   # an escaped NUL is text
    # ISO 8601 as fromisoformat reads it: basic format, week dates, a space, a comma, hours only
    for n, created_at in enumerate(["20150101T121500Z", "2015-W01-4T12:16:00Z", "2015-01-01 12:17:00+00:00",
                                    "2015-01-01T12:18:00,5Z", "2015-01-01T12Z"]):
        c.valid("2015-01-01-12", event_line("WatchEvent", f"iso{n}", "owner5/repo", created_at))
    # valid events that hold no star: an id that is not a string, or too long; a 2 MB push
    star_id_int = c.star("2015-01-01-12", "owner6/repo", 55).replace(b'"id": "s', b'"id": 9', 1)
    c.valid("2015-01-01-12", star_id_int.replace(b'9%d"' % c.eid, b"9%d" % c.eid, 1))
    c.valid("2015-01-01-12", event_line("WatchEvent", "x" * 41, "owner6/repo", iso("2015-01-01-12", 56)))
    c.valid("2015-01-01-12", event_line("PushEvent", "big", "owner6/repo", iso("2015-01-01-12", 57),
                                        message="WatchEvent " * 200_000))

    # Hostile lines, each with the kind it must be counted as.
    h = "2015-01-01-12"
    s = c.star(h, "bad/repo", 10)
    for written in (b"", b"   ", b"\t", b"\r"):
        c.bad(h, written, "empty_line")
    c.bad(h, s[:40] + b"\x00" + s[40:], "nul_bytes")
    c.bad(h, s.replace(b"bad/repo", b"bad/\xff\xfe"), "invalid_utf8")
    c.bad(h, s.replace(b"bad/repo", b"bad/\xed\xa0\xbd"), "invalid_utf8")   # a surrogate encoded in UTF-8
    c.bad(h, s.replace(b"bad/repo", b"bad/\xc0\xaf"), "invalid_utf8")       # an overlong encoding
    for cut in (1, 17, len(s) // 2, len(s) - 1):
        c.bad(h, s[:cut], "invalid_json")                     # truncated lines
    for constant in (b"NaN", b"Infinity", b"-Infinity", b"1e400"):
        c.bad(h, s.replace(b'"public": true', b'"public": ' + constant), "invalid_json")
    for written in (b"\xef\xbb\xbf" + s, s.replace(b'"id"', b"'id'"), s[:-1] + b",}", s + b" garbage",
                    s + b"\x0c", s.replace(b"bad/repo", b"bad/\x01repo"), b"{not json"):
        c.bad(h, written, "invalid_json")
    c.bad(h, s + s, "multiple_objects")
    c.bad(h, s + b"[]", "multiple_objects")
    for levels in (33, 1100):
        c.bad(h, s.replace(b'{"action": "started"}', nested(levels)), "too_deep")
    c.bad(h, s.replace(b'{"action": "started"}', b"[" * 2000 + b"]" * 2000), "too_deep")
    for written in (b"[" + s + b"]", b'"WatchEvent"', b"123", b"null", b"true"):
        c.bad(h, written, "not_an_object")
    event = json.loads(s)
    for created_at, kind in [("2015-01-01t12:00:00z", "bad_created_at"), ("2015-001T12:00:00Z", "bad_created_at"),
                             (None, "missing_created_at"), (1420113600, "missing_created_at"),
                             (["2015-01-01T12:00:00Z"], "missing_created_at"), ("yesterday", "bad_created_at"),
                             ("2015-02-30T00:00:00Z", "bad_created_at"), ("", "bad_created_at"),
                             ("2015-01-01T12:00:00Z" + " " * 21, "bad_created_at"),
                             ("2015-01-01T12:00:00+25:00", "bad_created_at"),
                             ("2999-01-01T00:00:00Z", "created_at_out_of_range"),
                             ("1970-01-01T00:00:00Z", "created_at_out_of_range"),
                             ("1969-12-31T23:59:59Z", "created_at_out_of_range"),
                             ("2015-01-01T14:00:00Z", "created_at_out_of_range"),
                             ("2014-12-31T11:59:59Z", "created_at_out_of_range"),
                             ("2015-01-01T20:00:00+05:30", "created_at_out_of_range")]:   # 14:30 UTC
        e = dict(event)
        if created_at is None:
            del e["created_at"]
        else:
            e["created_at"] = created_at
        c.bad(h, json.dumps(e).encode(), kind)
    for repo, kind in [(None, "missing_repo"), ("bad/repo", "missing_repo"), (["bad/repo"], "missing_repo"),
                       ({}, "missing_repo_name"), ({"name": None}, "missing_repo_name"),
                       ({"name": 7}, "missing_repo_name"), ({"name": ["a/b"]}, "missing_repo_name"),
                       ({"name": ""}, "missing_repo_name"), ({"name": "x/" + "y" * 199}, "repo_name_too_long")]:
        e = dict(event)
        e["repo"] = repo
        if repo is None:
            del e["repo"]
        c.bad(h, json.dumps(e).encode(), kind)
    c.bad(h, b'{"pad": "' + b"a" * (9 * 1024 * 1024) + b'"}', "line_too_long")
    # A newline bomb in hour 11 (tests/test_valid_event.py has one of millions): blank lines and two
    # garbage lines in turn.
    for _ in range(20_000):
        c.bad("2015-01-01-11", b"", "empty_line")
        c.bad("2015-01-01-11", b"x", "invalid_json")
        c.bad("2015-01-01-11", b"[0]", "not_an_object")
    # The truncated last file also holds a few bad lines.
    for i in range(3):
        c.bad(TRUNCATED, b"{oops %d" % i, "invalid_json")
    return c


def write_site(corpus: Corpus, root):
    """The corpus as GH Archive hour files under `root`; the last one cut short.  Returns {hour: [(line,
    kind, value)]} of what can be read (a cut file: its complete lines before the cut)."""
    root.mkdir(parents=True, exist_ok=True)
    readable = {}
    for hour, entries in corpus.files.items():
        data = gzip.compress(b"\n".join(w for w, _, _ in entries) + b"\n", 6)
        if hour == TRUNCATED:
            data = data[: len(data) * 2 // 3]
            complete = zlib.decompressobj(wbits=31).decompress(data).count(b"\n")
            assert 0 < complete < len(entries)
            entries = entries[:complete]
        (root / f"{hour}.json.gz").write_bytes(data)
        readable[hour] = entries
    return readable


def reference_input(readable) -> dict:
    """{hour ms: lines} for the strict reference (lines over the streamer's length limit left out:
    a line length limit is the reader's, not the definition's)."""
    return {hour_ms(parse_hour(h)): [w for w, kind, _ in e if kind != "line_too_long"] for h, e in readable.items()}


def expected_skips(readable) -> Counter:
    counts = Counter(kind for entries in readable.values() for _, kind, _ in entries if kind)
    counts["truncated_gzip"] += 1
    return counts


def test_the_corpus_says_what_the_reference_and_the_reader_say(tmp_path):
    """Without Kafka: every line's kind, as the corpus says, the strict reference and the reader agree."""
    readable = write_site(build_corpus(), tmp_path / "www")
    now_ms = int(time.time() * 1000)
    for hour, entries in readable.items():
        for written, kind, _ in entries:
            if kind != "line_too_long":
                assert classify(written, hour_ms(parse_hour(hour)), now_ms)[0] == kind, written[:200]
    stats = ReadStats()
    events = [e for hour in HOURS for e in read_file(tmp_path / "www" / f"{hour}.json.gz", stats)]
    assert Counter(stats.skipped) == expected_skips(readable)
    assert [e.line for e in events] == [v for h in HOURS for _, kind, v in readable[h] if kind is None]
    surrogate = [e for e in events if e.repo == "o/\ufffd"]
    assert len(surrogate) == 41 and all(b"\\ud83d" in e.line for e in surrogate)


@pytest.mark.kafka
def test_hostile_corpus_end_to_end(kafka, topic_name, workers, tmp_path):
    corpus = build_corpus()
    server = ArchiveServer(tmp_path / "www")
    try:
        readable = write_site(corpus, server.root)
        source, sink, app_id = topic_name("hostile-src"), topic_name("hostile-board"), topic_name("hostile-app")
        procs = start_workers(workers, source, sink, app_id)
        r = run_cli("--source", server.url, "--start", HOURS[0], "--hours", str(len(HOURS)), "--speedup", "0",
                    "--kafka", kafka, "--topic", source, "--cache-dir", str(tmp_path / "cache"),
                    "--retries", "1", "--no-progress", timeout=300)
    finally:
        server.close()
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Traceback" not in r.stderr
    valid = [(hour, value) for hour, entries in readable.items() for _, kind, value in entries if kind is None]
    assert sent_count(r.stderr) == len(valid)
    assert skip_counts(r.stderr) == dict(expected_skips(readable))

    # every valid event is in the topic, as it was in the archive, stamped within its hour's bounds
    msgs = read_topic(kafka, source, expect=len(valid))
    assert Counter(m.value() for m in msgs) == Counter(value for _, value in valid)
    first, last = hour_ms(parse_hour(HOURS[0])), hour_ms(parse_hour(HOURS[-1]))
    assert all(first - 24 * 3_600_000 <= m.timestamp()[1] < last + 2 * 3_600_000 for m in msgs)

    # the two workers took it all without a dead letter, a traceback or an exit
    wait_for(lambda: both_assigned(kafka, app_id, source), 90, "both workers to own source partitions")
    wait_until_consumed(kafka, app_id, source, 180, procs)
    expected = comparable(strict_batch_leaders(reference_input(readable), int(time.time() * 1000)))
    assert expected["leaders"][0]["repo"] == "o/\ufffd" and len(expected["leaders"]) == 10

    seen = {}

    def leaderboard_matches():
        seen["got"] = comparable(merge_partitions(read_topic(kafka, sink, idle_s=1.0)))
        return seen["got"] == expected
    try:
        wait_for(leaderboard_matches, 120, "the leaderboard to equal the strict batch reference")
    except AssertionError:
        raise AssertionError(f"leaderboard {json.dumps(seen.get('got'))}\nreference {json.dumps(expected)}\n"
                             + "\n".join(p.log_path.read_text()[-2000:] for p in procs)) from None
    assert all(p.poll() is None for p in procs)            # the same two processes all along
    assert_clean_logs(procs)
