"""Pure leaderboard logic: validate `leaderboard` records and merge them into the global top N.

A record (key = state partition id, value = JSON, shaped as `stack_contract.Leaderboard`) carries one
state partition's own top TOP_N.  The newest record per partition replaces the older one; the global
top TOP_N is the merge of all partitions' leaders ordered by stars desc, then repo asc in plain string
(code point) order.

Everything here is untrusted input from the public archive: records that cannot be understood are
counted and skipped, odd fields inside otherwise good records are dropped, and every list and string
is bounded, so memory stays proportional to (partitions x TOP_N leaders x RECENT_EVENTS events).
Strings are kept verbatim (escaping is the renderer's job) apart from truncation.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone

import orjson

from stack_contract import RECENT_EVENTS, TOP_N, WINDOW_HOURS, Fork, Leader, PullRequest

MAX_PARTITIONS = 4096      # distinct state partitions tracked; more are counted as malformed
MAX_PARTITION_ID = 1 << 20
MAX_SCAN = 1000            # list items looked at before giving up on the rest
MAX_STARS = 10 ** 12
MAX_RECORD_BYTES = 4 << 20

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
    vals = [v if _is_int(v) and 0 <= v <= MAX_STARS else 0 for v in tail]
    return [0] * (WINDOW_HOURS - len(vals)) + vals


def clean_leader(item) -> dict | None:
    """A leader with exactly LEADER_KEYS, or None when repo/stars are unusable."""
    if not isinstance(item, dict):
        return None
    repo, stars = item.get("repo"), item.get("stars")
    if not isinstance(repo, str) or not repo.strip() or not _is_int(stars) or not 0 <= stars <= MAX_STARS:
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


def _partition_id(key, obj) -> int:
    p = obj.get("partition")
    if _is_int(p):
        pid = p
    elif p is None and key:
        try:
            pid = int(key.decode("utf-8") if isinstance(key, bytes) else key)
        except (ValueError, UnicodeDecodeError):
            raise Malformed("no partition id in value or key") from None
    else:
        raise Malformed("partition is not an integer")
    if not 0 <= pid < MAX_PARTITION_ID:
        raise Malformed("partition id out of range")
    return pid


def parse_record(key: bytes | str | None, value: bytes | str | None) -> tuple[PartitionBoard, int]:
    """Validate one `leaderboard` record.  Returns (board, number of leaders/events dropped).

    Raises Malformed when the record is unusable: not JSON, not an object, no partition id,
    or no `leaders` list.  The partition id comes from the value, the key is the fallback."""
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
    pid = _partition_id(key, obj)
    raw = obj.get("leaders")
    if not isinstance(raw, list):
        raise Malformed("leaders is not a list")
    valid = [c for c in map(clean_leader, raw[:MAX_SCAN]) if c is not None]
    dropped = len(raw) - len(valid)          # unusable items, and anything past MAX_SCAN
    leaders, seen = [], set()
    for item in sorted(valid, key=sort_key):
        if item["repo"] in seen:             # a repo twice in one board: keep the higher count
            dropped += 1
            continue
        seen.add(item["repo"])
        leaders.append(item)
    return PartitionBoard(pid, parse_time(obj.get("window_end")), tuple(leaders[:TOP_N])), dropped


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

    def __init__(self, max_partitions: int = MAX_PARTITIONS):
        self._cond = threading.Condition()
        self._parts: dict[int, PartitionBoard] = {}
        self._max_partitions = max_partitions
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
            board, dropped = parse_record(key, value)
        except Malformed as e:
            with self._cond:
                self.malformed += 1
                self.last_error = str(e)
            return False
        with self._cond:
            if board.partition not in self._parts and len(self._parts) >= self._max_partitions:
                self.malformed += 1
                self.last_error = "too many partitions"
                return False
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
