"""What a valid GH Archive event is: the one definition the archive streamer (reader.py) and
star_leaders' decoder both apply.

A line (bytes) is a valid event when it is
  * one JSON object in UTF-8, strict (no NaN/Infinity, no BOM, nothing after the object),
    nesting at most MAX_DEPTH levels;
  * with a `created_at` string in ISO 8601 (offsets allowed, naive = UTC, at most
    CREATED_AT_MAX_LENGTH characters) inside the bounds the caller gives: for an hour file,
    `hour_bounds` (from BEFORE_HOUR_MS before the hour to AFTER_HOUR_MS after it); without one,
    `absolute_bounds` (not before GitHub existed, not ahead of the wall clock);
  * with a `repo` object whose `name` is a string of 1..REPO_NAME_MAX_LENGTH characters.
A lone UTF-16 surrogate escape ("\\ud83d") is valid JSON text and occurs in real archive fields: it
is read as U+FFFD, so nothing decoded from an event holds a surrogate (and re-encoding never fails).

`validate` never raises: it returns `Valid` or `Invalid(kind, detail)`.  Imported by the streamer
and the app only (it needs orjson, which `import stack_contract` must not load).
"""
import functools
import re
import time
from datetime import datetime, timedelta, timezone
from typing import NamedTuple

import orjson

from . import REPO_NAME_MAX_LENGTH

HOUR_MS = 3_600_000
# Real events nest 6 levels (payload.pull_request.head.repo.owner); 32 leaves room for GitHub to add
# some, and keeps every event far inside any JSON parser's recursion limit (orjson: 1024; the stdlib
# fails near Python's recursion limit, 1000).
MAX_DEPTH = 32
CREATED_AT_MAX_LENGTH = 40

# Event time bounds.  An event older than its hour is harmless (it lands in an older hourly bucket, or
# is late); one newer than the stream moves windows forward and expires stars.  So the bound behind is
# wide (the 24 hours a window spans) and the bound ahead is tight.
BEFORE_HOUR_MS = 24 * HOUR_MS     # created_at may be this much before its file's hour starts
AFTER_HOUR_MS = HOUR_MS           # ... and this much after the hour ends
AHEAD_OF_CLOCK_MS = HOUR_MS       # never later than the wall clock plus this (the broker's own limit)
EARLIEST_MS = 1_199_145_600_000   # 2008-01-01T00:00:00Z: GitHub opened in 2008; nothing real is older

# Why a line is not a valid event, in the order summaries print them.  The first seven say the record is
# not a JSON object at all (the app's decoder raises: the engine dead-letters it); the others are objects
# without a usable created_at or repository (the decoder drops them).
NOT_AN_OBJECT_KINDS = (
    "empty_line",               # nothing but whitespace
    "nul_bytes",                # a raw NUL byte
    "invalid_utf8",             # bytes that are not UTF-8 (a lone surrogate *escape* is fine)
    "invalid_json",             # not strict JSON: cut, NaN, BOM, single quotes, trailing text ...
    "multiple_objects",         # another JSON value after the first: {...}{...}
    "too_deep",                 # nested deeper than MAX_DEPTH
    "not_an_object",            # valid JSON, but an array, string, number ...
)
FIELD_KINDS = (
    "missing_created_at",       # absent, null or not a string
    "bad_created_at",           # a string that is not an ISO 8601 time
    "created_at_out_of_range",  # a time outside the bounds (its hour's, or the absolute ones)
    "missing_repo",             # no `repo` object
    "missing_repo_name",        # `repo` without a non-empty string `name`
    "repo_name_too_long",       # over REPO_NAME_MAX_LENGTH characters
)
KINDS = NOT_AN_OBJECT_KINDS + FIELD_KINDS


class Valid(NamedTuple):
    event: dict                 # the decoded object (lone surrogates read as U+FFFD)
    created_at_ms: int          # created_at, epoch milliseconds
    repo: str                   # repo.name


class Invalid(NamedTuple):
    kind: str                   # one of KINDS
    detail: str                 # for a log line; may be ""


def absolute_bounds(now_ms: int | None = None) -> tuple[int, int]:
    """[lo, hi) for created_at without an hour file: from EARLIEST_MS to the clock + AHEAD_OF_CLOCK_MS."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    return EARLIEST_MS, now_ms + AHEAD_OF_CLOCK_MS


def hour_bounds(hour_ms: int, now_ms: int | None = None) -> tuple[int, int]:
    """[lo, hi) for created_at in the hour file starting at `hour_ms`, within the absolute bounds."""
    lo, hi = absolute_bounds(now_ms)
    return max(lo, hour_ms - BEFORE_HOUR_MS), min(hi, hour_ms + HOUR_MS + AFTER_HOUR_MS)


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MS = timedelta(milliseconds=1)
_created_at_cache: dict[str, int | None] = {}


def created_at_ms(text) -> int | None:
    """ISO 8601 text ("2015-01-01T12:00:01Z", "2012-03-10T04:00:01-08:00"; naive = UTC) -> epoch
    milliseconds, or None when it is not a string of at most CREATED_AT_MAX_LENGTH characters that
    parses."""
    value = _created_at_cache.get(text) if type(text) is str else None
    if value is not None:
        return value
    if type(text) is not str or len(text) > CREATED_AT_MAX_LENGTH:
        return None
    try:
        dt = datetime.fromisoformat(text)
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=timezone.utc)
        value = (dt - _EPOCH) // _MS
    except (ValueError, OverflowError):
        return None
    if len(_created_at_cache) >= 100_000:   # an hour has 3,600 distinct seconds; stay bounded anyway
        _created_at_cache.clear()
    _created_at_cache[text] = value
    return value


# A JSON string escape of a surrogate, or an escaped backslash (matched first, so "\\\\ud83d" is a
# backslash and the text "ud83d"); a high surrogate followed by a low one is a valid pair and is kept.
_SURROGATE_ESCAPES = re.compile(
    rb"\\\\|\\u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2}|\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def _lone_surrogate_to_replacement(match) -> bytes:
    text = match.group()
    return b"\\ufffd" if len(text) == 6 else text


def _opening_brackets(line: bytes) -> int:
    """How many b"{" and b"[" `line` holds. Measured by what deleting them removes: bytes.replace
    finds a single byte with memchr and copies the rest in runs, 2.2x faster than a byte-by-byte
    count (bytes.count) or a translate (2.2 against 4.9 us on a 10 KB pull request line)."""
    n = len(line)
    return 2 * n - len(line.replace(b"{", b"")) - len(line.replace(b"[", b""))


def _too_deep(obj, limit: int = MAX_DEPTH) -> bool:
    """Whether containers nest deeper than `limit` in `obj` (a dict or list), level by level."""
    level, depth = [obj], 1
    while level:
        if depth > limit:
            return True
        below = []
        add = below.append
        for container in level:
            for value in (container.values() if type(container) is dict else container):
                kind = type(value)
                if kind is dict or kind is list:
                    add(value)
        level, depth = below, depth + 1
    return False


def _not_json(line: bytes, error: orjson.JSONDecodeError) -> Invalid:
    """Why orjson refused `line`, by kind (only bad lines pay for this)."""
    if not line.strip(b" \t\r\n"):
        return Invalid("empty_line", "")
    if b"\x00" in line:
        return Invalid("nul_bytes", "")
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as e:
        return Invalid("invalid_utf8", f"byte {e.start}")
    if "depth limit" in error.msg:
        return Invalid("too_deep", f"deeper than {MAX_DEPTH} levels")
    if error.msg.startswith("unexpected content after document"):
        rest = text[error.pos:].lstrip(" \t\r\n")
        if rest[:1] in ("{", "["):
            return Invalid("multiple_objects", "another JSON value follows the first")
    return Invalid("invalid_json", str(error))


def validate(line: bytes, lo_ms: int, hi_ms: int) -> Valid | Invalid:
    """`line` (one record or archive line, bytes) as a `Valid` event, or `Invalid(kind, detail)`;
    created_at must lie in [lo_ms, hi_ms) (see `hour_bounds`, `absolute_bounds`).  Never raises."""
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError as error:
        obj = None
        if b"\\ud" in line or b"\\uD" in line:
            repaired = _SURROGATE_ESCAPES.sub(_lone_surrogate_to_replacement, line)
            if repaired != line:
                try:
                    obj = orjson.loads(repaired)
                except orjson.JSONDecodeError as again:
                    line, error = repaired, again
        if obj is None:
            return _not_json(line, error)
    if type(obj) is not dict:
        return Invalid("not_an_object", type(obj).__name__)
    # Nesting deeper than MAX_DEPTH needs more opening brackets than that: counting them (in C) spares
    # nine lines in ten of the walk.
    if _opening_brackets(line) > MAX_DEPTH and _too_deep(obj):
        return Invalid("too_deep", f"deeper than {MAX_DEPTH} levels")
    created = obj.get("created_at")
    if type(created) is not str:
        return Invalid("missing_created_at", "")
    ts = created_at_ms(created)
    if ts is None:
        return Invalid("bad_created_at", repr(created[:CREATED_AT_MAX_LENGTH]))
    if not lo_ms <= ts < hi_ms:
        return Invalid("created_at_out_of_range",
                       f"{created[:CREATED_AT_MAX_LENGTH]!r} is outside {_bounds_text(lo_ms, hi_ms)}")
    repo = obj.get("repo")
    if type(repo) is not dict:
        return Invalid("missing_repo", "")
    name = repo.get("name")
    if type(name) is not str or not name:
        return Invalid("missing_repo_name", "")
    if len(name) > REPO_NAME_MAX_LENGTH:
        return Invalid("repo_name_too_long", f"{len(name)} characters")
    return Valid(obj, ts, name)


def created_at_of(line: bytes) -> int | None:
    """The created_at (epoch ms) of an event line that `validate` accepts under any bounds, else None."""
    verdict = validate(line, -_UNBOUNDED, _UNBOUNDED)
    return verdict.created_at_ms if type(verdict) is Valid else None


_UNBOUNDED = 1 << 62


@functools.lru_cache(maxsize=64)
def _bounds_text(lo_ms: int, hi_ms: int) -> str:
    """"[lo, hi)" as ISO times (a file's bounds are the same for every line)."""
    return f"[{_iso(lo_ms)}, {_iso(hi_ms)})"


def _iso(ms: int) -> str:
    return (_EPOCH + ms * _MS).strftime("%Y-%m-%dT%H:%M:%SZ")
