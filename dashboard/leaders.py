"""Pure leaderboard logic: validate `leaderboard` records and merge them into the global top N.

A record (key = state partition id, value = JSON, shaped as `stack_contract.Leaderboard`) carries one
state partition's own top TOP_N.  The newest record per partition replaces the older one; the global
top TOP_N is the merge of all partitions' leaders ordered by stars desc, then repo asc in plain string
(code point) order.

Everything here is untrusted: the archive is written by the public, and the topic by anyone who can
reach the broker.  Records that cannot be understood are counted and skipped, odd fields inside
otherwise good records are dropped, and every list and string is bounded, so memory stays
proportional to (partitions x TOP_N leaders x RECENT_EVENTS events).  Strings are kept verbatim
(escaping is the renderer's job) apart from truncation.  What a record must satisfy:

- its partition id (value's `partition`, else the key; both, when both are given) is one the app has:
  0 <= id < the app's partition count (stack_contract.PARTITION_COUNT, `--partitions`).  A forged
  record can so only take the place of a real partition's board, until that partition writes again;
- `window_end`, when present and readable, is not after the wall clock (+ FUTURE_TOLERANCE_S): event
  time is archive time, which never lies ahead of now;
- stars fit what a WINDOW_HOURS window can hold: at most MAX_STARS_PER_HOUR in any hourly bucket
  and MAX_WINDOW_STARS in all.  MAX_STARS_PER_HOUR (one million) is more than the whole archive
  holds in its busiest hours, of every event type together (a few hundred thousand); no real
  repository comes near it, while forged counts like 10^12 are refused.  A leader beyond it is dropped.

Within these bounds a forged record still shows until its partition's next record: only the broker
can keep strangers off the topic (ACLs on `leaderboard`, see the README).
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone

import orjson

from stack_contract import PARTITION_COUNT, RECENT_EVENTS, TOP_N, WINDOW_HOURS, Fork, Leader, PullRequest

MAX_PARTITIONS = 4096      # the most state partitions `--partitions` accepts
MAX_SCAN = 1000            # list items looked at before giving up on the rest
MAX_STARS_PER_HOUR = 1_000_000
MAX_WINDOW_STARS = WINDOW_HOURS * MAX_STARS_PER_HOUR
# star_leaders' records stay under the sink's 100000-byte message limit (star_leaders/config.py);
# ten times that leaves room for other producers' settings and still bounds one record's cost.
MAX_RECORD_BYTES = 1 << 20
FUTURE_TOLERANCE_S = 3600  # clock skew between the writer and this machine

# per-field string caps (characters)
STR_CAPS = {
    "repo": 200, "type": 40, "actor": 100, "created_at": 40, "url": 500,
    "title": 300, "action": 40, "name": 200,
}
# The fields of a leader and of its recent events, which hold every string field of a fork or a
# pull request and the pull request's number.
LEADER_KEYS = tuple(Leader.__annotations__)
EVENT_INT_KEYS = ("number",)
EVENT_STR_KEYS = tuple(k for k in {**Fork.__annotations__, **PullRequest.__annotations__}
                       if k not in EVENT_INT_KEYS)


class Malformed(ValueError):
    """A record that cannot be used at all."""


@dataclass(frozen=True)
class PartitionBoard:
    partition: int
    window_end: datetime | None
    leaders: tuple  # of leader dicts with exactly LEADER_KEYS, sorted, at most TOP_N


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _cap(s: str, key: str) -> str:
    limit = STR_CAPS.get(key, 200)
    return s if len(s) <= limit else s[: limit - 1] + "\u2026"


def sort_key(leader: dict):
    """stars desc, then repo asc in plain string order (not locale order)."""
    return (-leader["stars"], leader["repo"])


def parse_time(value) -> datetime | None:
    """ISO-8601 -> aware UTC datetime; None when missing or unparseable.  Naive times are UTC."""
    if not isinstance(value, str) or not value or len(value) > 40:
        return None
    try:
        dt = datetime.fromisoformat(value.strip())
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=timezone.utc)
        return dt.astimezone(timezone.utc)
    except (ValueError, OverflowError):
        return None


def format_time(dt: datetime | None) -> str | None:
    return None if dt is None else dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def clean_event(ev) -> dict | None:
    """Keep the known fields of a fork/PR event with the right types; None if it has no type."""
    if not isinstance(ev, dict) or not isinstance(ev.get("type"), str) or not ev["type"]:
        return None
    out = {}
    for k in EVENT_STR_KEYS:
        v = ev.get(k)
        if isinstance(v, str):
            out[k] = _cap(v, k)
    for k in EVENT_INT_KEYS:
        v = ev.get(k)
        if _is_int(v) and 0 <= v < 1 << 53:
            out[k] = v
    return out


def clean_hourly(hourly) -> list[int]:
    """Exactly WINDOW_HOURS non-negative ints, oldest first; the newest hours win when too long,
    zeros pad the old end when too short, junk values count as 0."""
    if not isinstance(hourly, list):
        return [0] * WINDOW_HOURS
    tail = hourly[-WINDOW_HOURS:]
    vals = [v if _is_int(v) and 0 <= v <= MAX_STARS_PER_HOUR else 0 for v in tail]
    return [0] * (WINDOW_HOURS - len(vals)) + vals


def clean_leader(item) -> dict | None:
    """A leader with exactly LEADER_KEYS, or None when repo/stars are unusable."""
    if not isinstance(item, dict):
        return None
    repo, stars = item.get("repo"), item.get("stars")
    if not isinstance(repo, str) or not repo.strip() or not _is_int(stars) or not 0 <= stars <= MAX_WINDOW_STARS:
        return None
    events = item.get("recent_events")
    cleaned = []
    if isinstance(events, list):
        for ev in events[:MAX_SCAN]:
            c = clean_event(ev)
            if c is not None:
                cleaned.append(c)
                if len(cleaned) == RECENT_EVENTS:
                    break
    return {"repo": _cap(repo, "repo"), "stars": stars,
            "hourly": clean_hourly(item.get("hourly")), "recent_events": cleaned}


def _partition_id(key, obj, partitions: int) -> int:
    """The record's state partition id: the value's, else the key's; both must agree when both exist."""
    p = obj.get("partition")
    if p is not None and not _is_int(p):
        raise Malformed("partition is not an integer")
    from_key = None
    if key:
        try:
            text = key.decode("utf-8") if isinstance(key, bytes) else key
            # the app's encoder writes str(id): plain ASCII digits, nothing else
            from_key = int(text) if len(text) <= 10 and text.isascii() and text.isdigit() else None
        except UnicodeDecodeError:
            from_key = None
    if p is None:
        if from_key is None:
            raise Malformed("no partition id in value or key")
        p = from_key
    elif key and from_key != p:
        raise Malformed("key and value name different partitions")
    if not 0 <= p < partitions:
        raise Malformed(f"partition id outside 0..{partitions - 1}")
    return p


def parse_record(key: bytes | str | None, value: bytes | str | None, *, partitions: int = PARTITION_COUNT,
                 now: float | None = None) -> tuple[PartitionBoard, int]:
    """Validate one `leaderboard` record.  Returns (board, number of leaders/events dropped).

    Raises Malformed when the record is unusable: too large, not JSON, not an object, no partition id
    or one outside 0..partitions-1, no `leaders` list, or a window_end in the future (`now`: the wall
    clock, time.time() by default)."""
    if value is None:
        raise Malformed("empty value (tombstone)")
    if len(value) > MAX_RECORD_BYTES:
        raise Malformed("record too large")
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError:
        raise Malformed("not JSON") from None
    if not isinstance(obj, dict):
        raise Malformed("not a JSON object")
    pid = _partition_id(key, obj, partitions)
    raw = obj.get("leaders")
    if not isinstance(raw, list):
        raise Malformed("leaders is not a list")
    window_end = parse_time(obj.get("window_end"))
    if window_end is not None and window_end.timestamp() > (time.time() if now is None else now) + FUTURE_TOLERANCE_S:
        raise Malformed("window_end lies in the future")
    valid = [c for c in map(clean_leader, raw[:MAX_SCAN]) if c is not None]
    dropped = len(raw) - len(valid)          # unusable items, and anything past MAX_SCAN
    leaders, seen = [], set()
    for item in sorted(valid, key=sort_key):
        if item["repo"] in seen:             # a repo twice in one board: keep the higher count
            dropped += 1
            continue
        seen.add(item["repo"])
        leaders.append(item)
    return PartitionBoard(pid, window_end, tuple(leaders[:TOP_N])), dropped


def merge(boards) -> dict:
    """Global view of the latest board per partition: {"event_time", "leaders"}.

    event_time = the latest window_end over partitions (ISO-8601 UTC) or None.  A repo should live in
    one partition only; if one shows up in two, it is listed once, with its higher count."""
    boards = list(boards)
    times = [b.window_end for b in boards if b.window_end is not None]
    everyone = sorted((ld for b in boards for ld in b.leaders), key=sort_key)
    top, seen = [], set()
    for ld in everyone:
        if ld["repo"] not in seen:
            seen.add(ld["repo"])
            top.append(ld)
            if len(top) == TOP_N:
                break
    return {"event_time": format_time(max(times)) if times else None, "leaders": top}


class Board:
    """Thread-safe latest-board-per-partition store with a change counter for live streams.

    The consumer thread calls `apply` for each record and `publish` once per batch (so a backlog
    does not re-merge per record); readers take `snapshot_json()` and block in `wait_for_change`."""

    def __init__(self, partitions: int = PARTITION_COUNT):
        if not 1 <= partitions <= MAX_PARTITIONS:
            raise ValueError(f"partitions must be 1..{MAX_PARTITIONS}")
        self._cond = threading.Condition()
        self._parts: dict[int, PartitionBoard] = {}
        self.partitions = partitions       # valid state partition ids: 0..partitions-1
        self._dirty = False
        self._snapshot = merge([])
        self._json = orjson.dumps(self._snapshot)
        self.version = 0
        self.records = 0          # records applied
        self.malformed = 0        # records skipped as unusable
        self.dropped = 0          # leaders dropped from otherwise good records
        self.last_error: str | None = None
        self.last_change: float | None = None  # wall clock of the last visible change
        # Wall clock of the last applied record.  Not the record's Kafka timestamp: star_leaders stamps
        # its output with event time, i.e. archive time, years ago.
        self.last_applied: float | None = None

    def apply(self, key, value) -> bool:
        """Store one record (not yet visible to readers).  False if it was skipped as malformed."""
        try:
            board, dropped = parse_record(key, value, partitions=self.partitions)
        except Malformed as e:
            with self._cond:
                self.malformed += 1
                self.last_error = str(e)
            return False
        with self._cond:
            self._parts[board.partition] = board
            self.records += 1
            self.last_applied = time.time()
            self.dropped += dropped
            self._dirty = True
        return True

    def publish(self) -> bool:
        """Re-merge after applied records; wakes streams only when the visible result changed."""
        with self._cond:
            if not self._dirty:
                return False
            self._dirty = False
            snap = merge(self._parts.values())
            data = orjson.dumps(snap)
            if data == self._json:
                return False
            self._snapshot, self._json = snap, data
            self.version += 1
            self.last_change = time.time()
            self._cond.notify_all()
            return True

    def reset(self) -> None:
        """Forget every partition (the topic was deleted); readers see the empty board."""
        with self._cond:
            self._parts.clear()
            self._dirty = True
        self.publish()

    def ingest(self, key, value) -> bool:
        """apply + publish, for single records."""
        ok = self.apply(key, value)
        self.publish()
        return ok

    def snapshot(self) -> dict:
        with self._cond:
            return self._snapshot

    def snapshot_json(self) -> tuple[int, bytes]:
        with self._cond:
            return self.version, self._json

    def wait_for_change(self, seen_version: int, timeout: float) -> int:
        """Block until version != seen_version or timeout; returns the current version."""
        with self._cond:
            self._cond.wait_for(lambda: self.version != seen_version, timeout)
            return self.version

    def stats(self) -> dict:
        with self._cond:
            return {"records": self.records, "malformed": self.malformed, "dropped": self.dropped,
                    "partitions": len(self._parts), "last_error": self.last_error,
                    "last_change": self.last_change, "last_applied": self.last_applied}
