"""The one definition of a valid event (stack_contract.valid_event), as the streamer's reader and
star_leaders' decoder apply it; property tests on generated garbage and near-valid lines."""
import gzip
import json
import random
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings, strategies as st

import star_leaders
from archive_streamer.hours import ms as hour_ms, parse_hour
from archive_streamer.reader import ReadStats, read_file
from conftest import REAL_HOUR, event_line
from stack_contract import valid_event
from stack_contract.valid_event import Invalid, Valid, hour_bounds, validate
from star_leaders import RepoMetadata, decoder, encoder, filter_interesting_events
from star_leaders.events import InvalidRecord, may_be_interesting
from strict_reference import classify

HOUR = "2015-01-01-12"
HOUR_MS = hour_ms(parse_hour(HOUR))
NOW_MS = int(datetime.now(timezone.utc).timestamp() * 1000)
BOUNDS = hour_bounds(HOUR_MS)


def star(eid=1, repo="o/r", created_at="2015-01-01T12:30:00Z", **fields) -> bytes:
    return event_line("WatchEvent", eid, repo, created_at, **fields)


def nested_star(levels: int) -> bytes:
    """A star nesting exactly `levels` levels: the event, then its payload and levels - 2 more."""
    inner = levels - 1
    return star().replace(b'{"action": "started"}', b'{"a":' * inner + b"1" + b"}" * inner)


def kind_of(line: bytes) -> str | None:
    verdict = validate(line, *BOUNDS)
    return None if type(verdict) is Valid else verdict.kind


# ------------------------------------------------------------------------------------ the kinds

@pytest.mark.parametrize("line, kind", [
    (b"", "empty_line"), (b"  \t ", "empty_line"),
    (star()[:-1] + b"\x00}", "nul_bytes"),
    (star().replace(b'"o/r"', b'"o/\xff\xfe"'), "invalid_utf8"),
    (star().replace(b'"o/r"', b'"o/\xed\xa0\xbd"'), "invalid_utf8"),     # a surrogate *encoded* in UTF-8
    (star()[:-5], "invalid_json"),
    (star().replace(b'"public": true', b'"public": NaN'), "invalid_json"),
    (star().replace(b'"public": true', b'"public": -Infinity'), "invalid_json"),
    (star().replace(b'"public": true', b'"public": 1e400'), "invalid_json"),
    (b"\xef\xbb\xbf" + star(), "invalid_json"),                             # a BOM
    (star().replace(b'"id"', b"'id'"), "invalid_json"),
    (star() + b" trailing", "invalid_json"),
    (star() + star(), "multiple_objects"), (star() + b" [1]", "multiple_objects"),
    (nested_star(33), "too_deep"),
    (b"[" * 1100 + b"]" * 1100, "too_deep"),                                 # past orjson's limit
    (b'{"a":' * 1100 + b"1" + b"}" * 1100, "too_deep"),
    (b"[1, 2]", "not_an_object"), (b'"WatchEvent"', "not_an_object"), (b"null", "not_an_object"),
    (star(created_at=None), "missing_created_at"),
    (star().replace(b'"2015-01-01T12:30:00Z"', b"1420115400"), "missing_created_at"),
    (star(created_at="yesterday"), "bad_created_at"), (star(created_at="2015-13-01T00:00:00Z"), "bad_created_at"),
    (star(created_at="2015-01-01T12:30:00Z" + " " * 30), "bad_created_at"),   # over 40 characters
    (star(created_at="2999-01-01T00:00:00Z"), "created_at_out_of_range"),
    (star(created_at="1970-01-01T00:00:00Z"), "created_at_out_of_range"),
    (star(created_at="2015-01-01T14:00:00Z"), "created_at_out_of_range"),   # 1 h after the hour's end
    (star(created_at="2014-12-31T11:59:59Z"), "created_at_out_of_range"),   # > 24 h before its start
    (star().replace(b'"repo": {"id": 2, "name": "o/r", "url": "https://api.github.com/repos/o/r"}',
                    b'"repo": "o/r"'), "missing_repo"),
    (star(repo=""), "missing_repo_name"), (star().replace(b'"name": "o/r"', b'"name": 7'), "missing_repo_name"),
    (star(repo="o/" + "r" * 199), "repo_name_too_long"),
])
def test_each_kind(line, kind):
    assert kind in valid_event.KINDS
    assert kind_of(line) == kind
    assert classify(line, HOUR_MS, NOW_MS)[0] == kind       # the independent reference agrees


@pytest.mark.parametrize("line", [
    star(), star(created_at="2015-01-01T18:00:00+05:30"),    # 12:30 UTC
    star(created_at="2015-01-01T04:30:00-08:00"), star(created_at="2015-01-01T12:30:00"),  # naive = UTC
    star(created_at="2015-01-01T13:59:59.999Z"), star(created_at="2014-12-31T12:00:00Z"),  # both edges
    b"  " + star() + b" \t", nested_star(32),
    star(repo="\u00fcn\u00efcode/r\u00e9po"), star(repo="o/\\"),
])
def test_valid_lines(line):
    verdict = validate(line, *BOUNDS)
    assert type(verdict) is Valid, verdict
    assert classify(line, HOUR_MS, NOW_MS)[0] is None


def test_lone_surrogates_are_valid_and_read_as_replacement_characters():
    line = star(repo="o/\ud83d", actor="\udc00x", title="\ud83d\ud83d\ude00 ok")
    assert b'"o/\\ud83d"' in line                          # json.dumps escapes it: valid JSON text
    verdict = validate(line, *BOUNDS)
    assert verdict.repo == "o/\ufffd" and verdict.event["actor"]["login"] == "\ufffdx"
    verdict.repo.encode()                                   # nothing left that cannot be encoded
    # a valid pair stays one character; an escaped backslash before "ud83d" is no escape at all
    pr = event_line("PullRequestEvent", 2, "o/\\ud83d", "2015-01-01T12:00:00Z", title="\ud83d\ud83d\ude00")
    event = validate(pr, *BOUNDS).event
    assert event["repo"]["name"] == "o/\\ud83d" and event["payload"]["pull_request"]["title"] == "\ufffd\U0001f600"


def test_the_decoder_agrees_and_nothing_downstream_raises_on_surrogates():
    lines = [event_line(kind, i, "o/\ud83d", "2015-01-01T12:00:00Z", actor="\udbff", title="t\udfff")
             for i, kind in enumerate(("WatchEvent", "ForkEvent", "PullRequestEvent"))]
    state = RepoMetadata()
    for line in lines:
        event = filter_interesting_events(decoder(line))
        assert event.repo == "o/\ufffd"
        assert star_leaders.deserialize(star_leaders.serialize(event)) == event
        board, _ = state.update(event)
    value, key = encoder(board)
    leader = orjson.loads(value)["leaders"][0]
    assert leader["repo"] == "o/\ufffd" and leader["stars"] == 1
    assert {e["actor"] for e in leader["recent_events"]} == {"\ufffd"}


def test_the_decoder_raises_only_for_what_is_not_a_json_object():
    for line, kind in [(b'{"type":"WatchEvent","id":', "invalid_json"), (b"[" * 2000 + b"]" * 2000, None),
                       (b'["WatchEvent"]', "not_an_object"), (star(created_at="NaN").replace(b'"NaN"', b"NaN"),
                                                               "invalid_json")]:
        if kind is None:        # no type name: dropped unparsed, but still not an object
            with pytest.raises(InvalidRecord, match="not a JSON object"):
                decoder(line)
            continue
        with pytest.raises(InvalidRecord, match=kind):
            decoder(line)
    # objects that are not valid events can hold no star: dropped (None), never raised
    for line in (star(created_at="2999-01-01T00:00:00Z"), star(created_at="1970-01-01T00:00:00Z"),
                 star(repo=""), star(created_at=None)):
        assert decoder(line) is None


# ------------------------------------------------------------------------- the reader's behaviour

def test_reader_strips_crlf_and_keeps_the_line_otherwise(tmp_path):
    path = tmp_path / f"{HOUR}.json.gz"
    path.write_bytes(gzip.compress(b"\r\n".join([star(1), star(2)]) + b"\r\n"))
    assert [e.line for e in read_file(path)] == [star(1), star(2)]


def test_reader_bounds_follow_the_file_hour_or_the_hour_given(tmp_path):
    line = star(created_at="2015-01-01T12:30:00Z")
    for name, hour, kept in [(f"{HOUR}.json.gz", None, 1), ("2015-01-03-0.json.gz", None, 0),
                             ("any.json.gz", None, 1), ("any.json.gz", "2015-02-01-0", 0),
                             ("2015-01-03-0.json.gz.damaged", HOUR, 1)]:
        path = tmp_path / name
        path.write_bytes(gzip.compress(line + b"\n"))
        stats = ReadStats()
        assert len(list(read_file(path, stats, hour=hour))) == kept, name
        assert stats.skipped["created_at_out_of_range"] == 1 - kept


def test_a_newline_bomb_is_counted(tmp_path):
    """16 KB of gzip inflating to 16.5 million lines (blank, and two garbage lines in turn): every one
    counted by kind (benchmarks/archive_reader.py measures how fast)."""
    path = tmp_path / f"{HOUR}.json.gz"
    body = b"\n" * 8_000_000 + b"x\n[1]\n" * 1_000_000 + star() + b"\n" + b"\r\n" * 1_000_000
    data = gzip.compress(body, 9)
    path.write_bytes(data)
    assert len(data) < 40_000
    stats = ReadStats()
    assert [e.line for e in read_file(path, stats)] == [star()]
    assert dict(stats.skipped) == {"empty_line": 9_000_000, "invalid_json": 1_000_000, "not_an_object": 1_000_000}
    assert stats.lines == 11_000_001


def test_a_bomb_in_one_piece_is_inflated_in_pieces(tmp_path):
    """A 100 MB line of spaces (100 KB of gzip) is read past as too long, never held whole."""
    import tracemalloc
    path = tmp_path / f"{HOUR}.json.gz"
    with gzip.open(path, "wb") as f:
        f.write(star(1) + b"\n")
        for _ in range(100):
            f.write(b" " * 1_000_000)
        f.write(b"\n" + star(2) + b"\n")
    assert path.stat().st_size < 200_000
    stats = ReadStats()
    tracemalloc.start()
    try:
        events = list(read_file(path, stats, max_line_bytes=4_000_000))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert [e.line for e in events] == [star(1), star(2)]
    assert dict(stats.skipped) == {"line_too_long": 1}
    assert peak < 20_000_000, peak       # the limit plus a few pieces, not 100 MB


# --------------------------------------------------------------------------------- property tests

def _real_lines(n=40):
    if not REAL_HOUR.exists():
        return []
    with gzip.open(REAL_HOUR) as f:
        lines = f.read().splitlines()
    return random.Random(5).sample(lines, n)


BASES = _real_lines() + [
    star(1), star(2, repo="a/b"), event_line("ForkEvent", 3, "o/r", "2015-01-01T12:10:00Z"),
    event_line("PullRequestEvent", 4, "o/r", "2015-01-01T12:20:00Z", title="x"),
    event_line("PushEvent", 5, "o/r", "2015-01-01T12:40:00Z")]

timestamps = st.one_of(
    st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30),
                 timezones=st.one_of(st.none(), st.timezones())).map(lambda d: d.isoformat()),
    st.datetimes(min_value=datetime(2014, 12, 30), max_value=datetime(2015, 1, 2)).map(
        lambda d: d.strftime("%Y-%m-%dT%H:%M:%SZ")),
    st.sampled_from(["1970-01-01T00:00:00Z", "2999-01-01T00:00:00Z", "", "0", "2015-01-01T12:00:00+05:30",
                     "2015-01-01T25:00:00Z", "NaN", "2015-01-01T12:00:00Z\x00"]),
    st.text(max_size=45))
surrogates = st.sampled_from(["\ud83d", "\udc00", "\udbff\udfff", "\ud800\ud800", "\\ud83d", "\ufffd", "\x00"])
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False),
              st.text(), surrogates),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)),
    max_leaves=8)


def _mutate_field(base: bytes, data) -> bytes:
    """A real event with one field replaced by something generated (JSON written by the stdlib)."""
    event = json.loads(base)
    where = data.draw(st.sampled_from(["created_at", "repo", "repo.name", "id", "type", "payload", "actor"]))
    value = data.draw(st.one_of(json_values, timestamps, st.text(), surrogates))
    if where == "repo.name" and isinstance(event.get("repo"), dict):
        event["repo"]["name"] = value
    else:
        event[where.split(".")[0]] = value
    return json.dumps(event, ensure_ascii=data.draw(st.booleans())).encode("utf-8", "surrogatepass")


def _mutate_bytes(base: bytes, data) -> bytes:
    """A real event with bytes cut, inserted or replaced somewhere."""
    line = bytearray(base)
    for _ in range(data.draw(st.integers(1, 3))):
        i = data.draw(st.integers(0, len(line)))
        op = data.draw(st.sampled_from(["cut", "insert", "replace", "truncate"]))
        junk = data.draw(st.one_of(st.binary(max_size=4), st.sampled_from(
            [b"\x00", b"\xff", b"\xed\xa0\xbd", b"NaN", b"\\ud83d", b"\\u", b"}{", b"\r", b"\xef\xbb\xbf", b'"'])))
        if op == "cut":
            del line[i:i + len(junk) + 1]
        elif op == "insert":
            line[i:i] = junk
        elif op == "replace":
            line[i:i + len(junk)] = junk
        else:
            del line[i:]
    return bytes(line).replace(b"\n", b" ")


def _deep(base: bytes, data) -> bytes:
    depth = data.draw(st.integers(25, 1100))
    event = json.loads(base)
    event["payload"] = "@"
    inner = b'{"a":' * depth + b"1" + b"}" * depth
    return json.dumps(event).encode().replace(b'"@"', inner)


@st.composite
def lines(draw):
    base = draw(st.sampled_from(BASES))
    how = draw(st.sampled_from(["as is", "field", "bytes", "deep", "garbage", "wrap"]))
    drawer = _Drawer(draw)
    if how == "as is":
        return base
    if how == "field":
        return _mutate_field(base, drawer)
    if how == "bytes":
        return _mutate_bytes(base, drawer)
    if how == "deep":
        return _deep(base, drawer)
    if how == "wrap":
        return draw(st.sampled_from([b"[", b'{"x":', b" ", b"\xef\xbb\xbf"])) + base + \
            draw(st.sampled_from([b"]", b"}", b" ", b"\r", b"\x00", base]))
    return draw(st.binary(max_size=300)).replace(b"\n", b"")


class _Drawer:
    """`draw` with the `data.draw` spelling the mutators use."""

    def __init__(self, draw):
        self.draw = draw


def _check_sent(event):
    """What the reader yields to be sent: the decoder takes it, and nothing after it raises."""
    assert BOUNDS[0] <= event.ts_ms < BOUNDS[1]
    event.repo.encode()
    decoded = decoder(event.line)                      # never raises
    if may_be_interesting(event.line):
        assert decoded["repo"]["name"] == event.repo
        assert valid_event.created_at_ms(decoded["created_at"]) == event.ts_ms
        repo_event = filter_interesting_events(decoded)
        if repo_event is not None:
            assert star_leaders.deserialize(star_leaders.serialize(repo_event)) == repo_event
            board, _ = RepoMetadata().update(repo_event)
            if board is not None:
                encoder(board)
    else:
        assert decoded is None


@pytest.fixture(scope="module")
def scratch():
    with tempfile.TemporaryDirectory() as folder:
        yield Path(folder) / f"{HOUR}.json.gz"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(lines(), min_size=1, max_size=12))
@example([b'{"created_at":"2015-01-01T12:00:00Z","repo":{"name":"o/\\ud83d"},"type":"WatchEvent","id":"1"}'])
@example([b"[" * 1100 + b"]" * 1100, b'{"a":NaN}', b"\xff"])
def test_what_the_reader_sends_the_decoder_accepts(scratch, batch):
    scratch.write_bytes(gzip.compress(b"\n".join(batch) + b"\n", 1))
    stats = ReadStats()
    events = list(read_file(scratch, stats))            # never raises
    for event in events:
        _check_sent(event)
    # every line is either sent or counted, by kind
    assert stats.lines == len(batch) and stats.events == len(events)
    assert stats.events + stats.skipped_total == len(batch)
    # and the independent reference agrees on which lines are valid events
    expected = [line.removesuffix(b"\r") for line in batch if classify(line, HOUR_MS, NOW_MS)[0] is None]
    assert [e.line for e in events] == expected


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400) | lines())
def test_the_decoder_never_raises_anything_but_invalid_record(line):
    try:
        result = decoder(line)
    except InvalidRecord:
        return
    assert result is None or type(result) is dict
    if result is not None:
        filter_interesting_events(result)


def test_validate_never_raises_on_deep_or_huge_input():
    for line in (b"[" * 100_000, b'{"a":' * 100_000, b"[" * 5000 + b"]" * 5000, b'"' + b"\\" * 10_001 + b'"',
                 b'{"a":"' + b"\\ud83d" * 10_000 + b'"}', b"9" * 10_000):
        assert type(validate(line, *BOUNDS)) is Invalid
