"""Reference answers for star_leaders, computed in one batch straight from the spec.

Independent of star_leaders on purpose (stdlib json, its own parsing, its own constants): tests compare
the streaming application's output with this.

    batch_leaders(lines)       -> the global top 10 over a whole input, as a batch job would compute it
    merge_partitions(records)  -> the global top 10 the dashboard shows from `leaderboard` records
    event_time_ms(line)        -> the Kafka timestamp a GH Archive line gets (its created_at), or None
    comparable(result)         -> the part of either result that must match exactly

Both results have the same shape:

    {"event_time": "YYYY-MM-DDTHH:MM:SSZ" or None,
     "leaders": [{"repo": "owner/name", "stars": int, "hourly": [24 ints, oldest first]}, ...]}

The spec, as the reference reads it:
  * A star is a WatchEvent whose `id` is a string of 1..40 characters, whose `repo.name` is a string of
    1..200 characters and whose `created_at` is an ISO-8601 time of at most 40 characters (naive = UTC).
    Anything else (not JSON, not an object, other types, odd fields) is not a star.
  * Event time = the newest `created_at` of all valid events (any type; a JSON object with a usable
    `created_at`).  The window is the 24 absolute hours (epoch seconds // 3600) ending at its hour.
  * A repo's stars = the number of distinct star ids in the window; a repeated id is counted once, in
    the hour of its first occurrence.  Repos with 0 stars are not leaders.
  * Top 10 by stars descending, then repo ascending in plain string (code point) order, so "B/x" < "a/x".
  * `hourly[i]` = stars in hour (last hour - 23 + i).

About event_time: a partition emits when its leaderboard changes, and at least once in every hour of
event time, so `window_end` of the newest records is in the newest hour but may be a few minutes older
than the newest event.  Compare `comparable(...)` (leaders exactly, event_time to the hour).
"""
import json
from datetime import datetime, timedelta, timezone

WINDOW_HOURS = 24
TOP_N = 10
MAX_ID = 40
MAX_REPO = 200
MAX_TIME = 40
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def parse_time(value):
    """ISO-8601 string -> whole seconds since the epoch (UTC), or None."""
    if not isinstance(value, str) or len(value) > MAX_TIME:
        return None
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    try:
        return (dt - _EPOCH) // timedelta(seconds=1)
    except OverflowError:
        return None


def format_time(seconds):
    """Seconds since the epoch -> "YYYY-MM-DDTHH:MM:SSZ"."""
    dt = _EPOCH + timedelta(seconds=seconds)
    return f"{dt.year:04d}-{dt.month:02d}-{dt.day:02d}T{dt.hour:02d}:{dt.minute:02d}:{dt.second:02d}Z"


def _load(line):
    try:
        obj = json.loads(line)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    return obj if isinstance(obj, dict) else None


def event_time_ms(line):
    """The Kafka timestamp of a GH Archive line: its created_at in ms, or None if it has none."""
    obj = _load(line)
    seconds = parse_time(obj.get("created_at")) if obj is not None else None
    return None if seconds is None else seconds * 1000


def _star(obj):
    """(id, repo, seconds) if obj is a valid star, else None."""
    if obj.get("type") != "WatchEvent":
        return None
    eid, repo, seconds = obj.get("id"), obj.get("repo"), parse_time(obj.get("created_at"))
    name = repo.get("name") if isinstance(repo, dict) else None
    if not (isinstance(eid, str) and 1 <= len(eid) <= MAX_ID):
        return None
    if not (isinstance(name, str) and 1 <= len(name) <= MAX_REPO) or seconds is None:
        return None
    return eid, name, seconds


def batch_leaders(lines, top_n=TOP_N, window_hours=WINDOW_HOURS):
    """The global top `top_n` star leaders over all of `lines` (GH Archive lines, bytes or str).

    Returns {"event_time": newest created_at (ISO) or None, "leaders": [{"repo", "stars", "hourly"}]}."""
    first_hour_of = {}          # star id -> (repo, hour) of its first occurrence
    newest = None
    for line in lines:
        obj = _load(line)
        if obj is None:
            continue
        seconds = parse_time(obj.get("created_at"))
        if seconds is None:
            continue
        newest = seconds if newest is None else max(newest, seconds)
        star = _star(obj)
        if star is not None and star[0] not in first_hour_of:
            first_hour_of[star[0]] = (star[1], star[2] // 3600)
    if newest is None:
        return {"event_time": None, "leaders": []}
    last = newest // 3600
    first = last - window_hours + 1
    hourly = {}
    for repo, hour in first_hour_of.values():
        if first <= hour <= last:
            hourly.setdefault(repo, [0] * window_hours)[hour - first] += 1
    leaders = [{"repo": r, "stars": sum(h), "hourly": h} for r, h in hourly.items()]
    leaders = sorted(leaders, key=lambda d: (-d["stars"], d["repo"]))[:top_n]
    return {"event_time": format_time(newest), "leaders": leaders}


def _record_value(record):
    """bytes/str/dict, or a SinkRecord (.value) or a confluent_kafka Message (.value())."""
    value = getattr(record, "value", record)
    if callable(value):
        value = value()
    if isinstance(value, (bytes, bytearray, str)):
        value = json.loads(value)
    return value


def merge_partitions(records, top_n=TOP_N):
    """Merge `leaderboard` records (in the order they were written) as the dashboard does.

    The newest record of each partition (by its "partition" field) replaces older ones; the result is
    {"event_time": newest window_end, "leaders": top `top_n` of all partitions' leaders, with only
    "repo", "stars" and "hourly"}."""
    latest = {}
    for record in records:
        value = _record_value(record)
        latest[value["partition"]] = value
    if not latest:
        return {"event_time": None, "leaders": []}
    everyone = [{"repo": ld["repo"], "stars": ld["stars"], "hourly": list(ld["hourly"])}
                for value in latest.values() for ld in value["leaders"]]
    ends = [parse_time(v["window_end"]) for v in latest.values() if v.get("window_end")]
    leaders = sorted(everyone, key=lambda d: (-d["stars"], d["repo"]))[:top_n]
    return {"event_time": format_time(max(ends)) if ends else None, "leaders": leaders}


def comparable(result):
    """What must match between batch_leaders and merge_partitions: the leaders exactly, and the hour
    of event_time (as "YYYY-MM-DDTHH")."""
    t = result["event_time"]
    return {"event_hour": t[:13] if t else None, "leaders": result["leaders"]}
