"""Which archive lines are valid events, written from the spec independently of
stack_contract.valid_event (the stdlib's json, its own depth scan, its own constants), and the
leaderboard the valid ones make (reference.batch_leaders over them).

The spec (README "Trust and bad input", stack_contract/valid_event.py):
  * one JSON object in strict UTF-8 JSON: no NaN/Infinity, no number that overflows a double, no BOM,
    nothing after the object; at most 32 levels of nesting;
  * a lone UTF-16 surrogate escape is valid text and reads as U+FFFD;
  * `created_at`: a string of at most 40 characters that datetime.fromisoformat reads (naive = UTC),
    from 24 hours before its file's hour to 1 hour after the hour's end, from 2008 on, and not more
    than an hour ahead of the clock;
  * `repo.name`: a string of 1..200 characters.
"""
import json
import re
from datetime import datetime, timedelta, timezone

import reference

MAX_DEPTH = 32
MAX_TIME = 40
MAX_REPO = 200
HOUR_MS = 3_600_000
EARLIEST = datetime(2008, 1, 1, tzinfo=timezone.utc)
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_SURROGATE = re.compile("[\ud800-\udfff]")
_JSON_SPACE = " \t\r\n"


def _reject_constant(name):
    raise ValueError(f"{name} is not JSON")


def _finite_float(text):
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError("number overflows a double")
    return value


def _int(text):
    value = int(text)
    if not -2 ** 63 <= value < 2 ** 64:     # read as a double beyond 64 bits: must not overflow
        _finite_float(text)
    return value


def _depth(text):
    """Deepest nesting of [ and { outside strings."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def _clean(value):
    """`value` with every lone surrogate in its strings (keys too) replaced by U+FFFD."""
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, dict):
        return {_clean(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def _ms(text):
    if not isinstance(text, str) or len(text) > MAX_TIME:
        return None
    try:
        dt = datetime.fromisoformat(text)
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=timezone.utc)
        return (dt - _EPOCH) // timedelta(milliseconds=1)
    except (ValueError, OverflowError):
        return None


def classify(line: bytes, hour_ms: int, now_ms: int):
    """(kind, None) for a line that is not a valid event, (None, event) for one that is (its strings
    cleaned of lone surrogates)."""
    if line.endswith(b"\r"):
        line = line[:-1]
    if not line.strip(b" \t\r\n"):
        return "empty_line", None
    if b"\x00" in line:
        return "nul_bytes", None
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        return "invalid_utf8", None
    if _depth(text) > MAX_DEPTH:
        return "too_deep", None
    strict = dict(parse_constant=_reject_constant, parse_float=_finite_float, parse_int=_int)
    try:
        obj = json.loads(text, **strict)
    except ValueError:
        try:
            _, end = json.JSONDecoder(**strict).raw_decode(text.lstrip(_JSON_SPACE))
            rest = text.lstrip(_JSON_SPACE)[end:].lstrip(_JSON_SPACE)
            if rest[:1] in ("{", "["):
                return "multiple_objects", None
        except ValueError:
            pass
        return "invalid_json", None
    if not isinstance(obj, dict):
        return "not_an_object", None
    obj = _clean(obj)
    created = obj.get("created_at")
    if not isinstance(created, str):
        return "missing_created_at", None
    ms = _ms(created)
    if ms is None:
        return "bad_created_at", None
    lo = max(hour_ms - 24 * HOUR_MS, (EARLIEST - _EPOCH) // timedelta(milliseconds=1))
    hi = min(hour_ms + 2 * HOUR_MS, now_ms + HOUR_MS)
    if not lo <= ms < hi:
        return "created_at_out_of_range", None
    repo = obj.get("repo")
    if not isinstance(repo, dict):
        return "missing_repo", None
    name = repo.get("name")
    if not isinstance(name, str) or not name:
        return "missing_repo_name", None
    if len(name) > MAX_REPO:
        return "repo_name_too_long", None
    return None, obj


def valid_events(lines_by_hour, now_ms):
    """The valid events of {hour_ms: [line, ...]} (cleaned dicts, in order)."""
    return [event for hour_ms, lines in lines_by_hour.items() for line in lines
            for kind, event in [classify(line, hour_ms, now_ms)] if kind is None]


def strict_batch_leaders(lines_by_hour, now_ms):
    """reference.batch_leaders over the valid events only (as JSON, lone surrogates as U+FFFD)."""
    return reference.batch_leaders(json.dumps(e).encode() for e in valid_events(lines_by_hour, now_ms))
