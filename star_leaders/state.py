"""The state of the `annotate repos` step: one `RepoMetadata` per partition of repositories
(`RepoPartitioner`: crc32 of the name), sliding a WINDOW_HOURS window of stars and keeping each
partition's top TOP_N, which it emits as a `stack_contract.Leaderboard`."""
import heapq
import time
import zlib

import msgspec

from stack_contract import (COMPLETE_MAX, COMPLETE_PREFIX_MAX, Fork, Leader, Leaderboard, PullRequest,
                            RepoAnswer, valid_repo_name)
from wallaroo.query import query

from . import config

MS_PER_HOUR = 3_600_000
_WATCH, _FORK, _PULL = config.WATCH_EVENT, config.FORK_EVENT, config.PULL_REQUEST_EVENT


def partition_of(repo):
    """A repository's partition key: stable across processes (Python's hash() is salted)."""
    return zlib.crc32(repo.encode("utf-8", "surrogatepass")) % config.PARTITION_COUNT


def repo_key(repo):
    """The partition key of a query about `repo` ("owner/name"); ValueError for a malformed name."""
    if not valid_repo_name(repo):
        raise ValueError("a repository is owner/name (no spaces or control characters, at most "
                         f"{config.REPO_NAME_MAX_LENGTH} characters)")
    return partition_of(repo)


def ahead_key(arg):
    """The partition key of an `ahead` query: its "<partition>:<stars>:<repo>" argument's first field."""
    p, _, _ = _ahead_arg(arg)
    return p


def _ahead_arg(arg):
    p, stars, repo = arg.split(":", 2)
    p, stars = int(p), int(stars)
    if not 0 <= p < config.PARTITION_COUNT or stars < 0:
        raise ValueError(f"no partition {p} / star count {stars}")
    return p, stars, repo


def complete_key(arg):
    """The partition key of a `complete` query: its "<partition>:<prefix>" argument's first field."""
    return _complete_arg(arg)[0]


def _complete_arg(arg):
    p, _, prefix = arg.partition(":")
    p = int(p)
    if not 0 <= p < config.PARTITION_COUNT:
        raise ValueError(f"no partition {p}")
    if not 0 < len(prefix) <= COMPLETE_PREFIX_MAX or not prefix.isprintable() or " " in prefix:
        raise ValueError(f"a prefix is 1 to {COMPLETE_PREFIX_MAX} printable characters, no spaces")
    return p, prefix.lower()


class RepoPartitioner:
    def partition(self, data):
        return partition_of(data.repo)


class RepoMetadata:
    """One partition's repositories over the window of the last WINDOW_HOURS hours.

    The window is the WINDOW_HOURS absolute hours (epoch seconds // 3600) ending at the hour of the
    stream's event time, as far as this partition knows it (its records' created_at and the runtime's
    `on_event_time` calls).  Only plain dicts, lists, sets and tuples.

    The engine saves it to its changelog as entries (`changed_entries` / `from_entries`): a
    partition holds thousands of repositories and changes a few at a time, so each checkpoint writes
    only what changed since the last one: the partition's header, the hourly star counts of each
    repository that got a star, the star ids of the hours that got one, the recent forks and pull
    requests of each repository that got one (and what the window's slide removed).  Where pickle is
    opted into, it pickles small and fast (`__getstate__`).
    """
    # The data; `changes` (the entries changed since the last changelog write) is not part of it.
    DATA_SLOTS = ("partition", "now_ms", "hour", "stars", "hourly", "seen", "recent", "leaders",
                  "emitted", "late_stars", "late_events", "duplicates")
    __slots__ = DATA_SLOTS + ("changes",)

    def __init__(self):
        self.partition = None   # this state's partition key (learnt from its first record)
        self.now_ms = None      # event time (ms): the newest this partition has heard of
        self.hour = None        # now_ms // MS_PER_HOUR: the window's last hour
        self.stars = {}         # repo -> stars in the window (only repos with stars)
        self.hourly = {}        # hour -> {repo -> stars in that hour}
        self.seen = {}          # hour -> {ids of the stars counted in that hour}
        self.recent = {}        # repo -> [(created_at, id, event dict)], newest first, in the window
        self.leaders = []       # the top TOP_N repos by (stars desc, repo asc); all have stars
        self.emitted = False    # has this partition emitted a leaderboard yet?
        self.late_stars = 0     # stars older than the window when they arrived (dropped)
        self.late_events = 0    # forks / pull requests older than the window (dropped)
        self.duplicates = 0     # repeated stars / forks / pull requests (same id; dropped)
        self.changes = set()    # entry names changed since changed_entries() last ran

    def __getstate__(self):
        return tuple(getattr(self, s) for s in self.DATA_SLOTS)

    def __setstate__(self, state):
        for slot, value in zip(self.DATA_SLOTS, state):
            setattr(self, slot, value)
        self.changes = set()

    # ---- the changelog form (the engine's changed_entries / from_entries)
    # Entry names: "p" the header; "h" + repo: {hour: stars} of a repo; "s" + hour: the star ids
    # counted in that hour; "r" + repo: a repo's recent forks and pull requests. Each entry is
    # MessagePack of its shape below (_HEADER, _COUNTS, _IDS, _RECENT), encoded here by msgspec: bytes
    # are data to the engine, which stores them as they are, where its data codec would walk the value
    # in Python to keep tuples and sets (2.7 us for a recent-events entry; msgspec alone: 0.3). An
    # entry holding a lone surrogate (not UTF-8, so not MessagePack text) goes to the engine as data.

    def changed_entries(self):
        """{entry name: its MessagePack bytes, or None for an entry now empty} of what changed since
        the last call."""
        names, self.changes = self.changes, set()
        out = {"p": _entry((self.partition, self.now_ms, self.hour, self.leaders, self.emitted, self.late_stars,
                            self.late_events, self.duplicates))}
        hourly = self.hourly
        for name in names:
            kind, rest = name[0], name[1:]
            if kind == "h":
                counts = {h: bucket[rest] for h, bucket in hourly.items() if rest in bucket}
                out[name] = _entry(counts) if counts else None
            elif kind == "s":
                ids = self.seen.get(int(rest))
                out[name] = _entry(ids) if ids else None
            else:
                events = self.recent.get(rest)
                out[name] = _entry(events) if events else None
        return out

    @classmethod
    def from_entries(cls, entries):
        """A RepoMetadata from its entries (as changed_entries wrote them); ValueError for any entry
        of another shape."""
        self = cls()
        try:
            for name, value in entries.items():
                kind, rest = name[:1], name[1:]
                if name == "p":
                    (self.partition, self.now_ms, self.hour, self.leaders, self.emitted, self.late_stars,
                     self.late_events, self.duplicates) = _decode(value, _HEADER)
                elif kind == "h" and rest:
                    for hour, n in _decode(value, _COUNTS).items():
                        if n <= 0:
                            raise ValueError(f"{n} stars")
                        self.hourly.setdefault(hour, {})[rest] = n
                        self.stars[rest] = self.stars.get(rest, 0) + n
                elif kind == "s" and rest:
                    self.seen[int(rest)] = set(_decode(value, _IDS))
                elif kind == "r" and rest:
                    self.recent[rest] = [tuple(e) for e in _decode(value, _RECENT)]
                else:
                    raise ValueError("unknown entry")
        except (msgspec.DecodeError, ValueError, TypeError) as e:
            raise ValueError(f"not a RepoMetadata entry ({name!r:.60}): {e}") from None
        if "p" not in entries or any(r not in self.stars for r in self.leaders):
            raise ValueError("RepoMetadata entries without their header, or with leaders that have no stars")
        return self

    # ---- the two ways in: a record, and event time moving on

    def update(self, event):
        """Apply one RepoEvent; returns (leaderboard or None, state changed)."""
        return (self.leaderboard() if self.apply(event) else None), True

    def apply(self, event):
        """Apply one RepoEvent; returns whether the partition's leaderboard is to be emitted (it
        changed, or says the last leaders are gone).  The state always changes."""
        if self.partition is None:
            self.partition = partition_of(event.repo)
        slid = self.advance(event.created_at * 1000)
        hour = event.created_at // 3600
        if hour <= self.hour - config.WINDOW_HOURS:
            if event.type == _WATCH:
                self.late_stars += 1
            else:
                self.late_events += 1
            moved = False
        elif event.type == _WATCH:
            moved = self._star(event, hour)
        else:
            moved = self._remember(event)
        if (slid or moved) and self._shows():
            self.emitted = True
            return True
        return False

    def on_event_time(self, event_time_ms):
        """The stream's event time reached `event_time_ms`: slide the window when the hour changed."""
        if self.hour is not None and event_time_ms // MS_PER_HOUR <= self.hour:
            # Same hour: only the window_end shown next moves on.  Not worth a checkpoint, so the
            # state is reported unchanged (after a restore, window_end may be a few seconds older).
            if event_time_ms > self.now_ms:
                self.now_ms = event_time_ms
            return None, False
        self.advance(event_time_ms)
        if self._shows():
            return self.leaderboard(), True
        return None, True

    def advance(self, ms):
        """Move this partition's event time to `ms` if newer; returns True when the window slid."""
        if self.now_ms is not None and ms <= self.now_ms:
            return False
        self.now_ms = ms
        hour = ms // MS_PER_HOUR
        if self.hour is not None and hour <= self.hour:
            return False
        self.hour = hour
        self._expire(hour - config.WINDOW_HOURS + 1)
        self.leaders = heapq.nsmallest(config.TOP_N, self.stars, key=self._rank)
        return True

    # ---- stars, forks and pull requests

    def _star(self, event, hour):
        """Count a star once; returns True when the top TOP_N changed."""
        eid = event.id
        for ids in self.seen.values():
            if eid in ids:
                self.duplicates += 1
                return False
        ids = self.seen.get(hour)
        if ids is None:
            ids = self.seen[hour] = set()
        ids.add(eid)
        repo = event.repo
        self.changes.add(f"s{hour}")
        self.changes.add("h" + repo)
        bucket = self.hourly.get(hour)
        if bucket is None:
            bucket = self.hourly[hour] = {}
        bucket[repo] = bucket.get(repo, 0) + 1
        stars = self.stars[repo] = self.stars.get(repo, 0) + 1

        # Only this repo's count went up, so the top TOP_N changes only if it is in it or enters it.
        leaders = self.leaders
        if repo not in leaders:
            if len(leaders) >= config.TOP_N:
                last = leaders[-1]
                if (-stars, repo) >= (-self.stars[last], last):
                    return False
                leaders.pop()
            leaders.append(repo)
        leaders.sort(key=self._rank)
        return True

    def _remember(self, event):
        """Keep the RECENT_EVENTS newest forks / pull requests of a repo (newest = greatest
        (created_at, id)); returns True when a leader's recent events changed."""
        repo = event.repo
        events = self.recent.get(repo)
        if events is None:
            events = self.recent[repo] = []
        key = (event.created_at, event.id)
        pos = len(events)
        for i, (created_at, eid, _) in enumerate(events):
            if eid == event.id:
                self.duplicates += 1
                return False
            if pos == len(events) and (created_at, eid) < key:
                pos = i
        if pos >= config.RECENT_EVENTS:
            return False
        shown: Fork | PullRequest
        if event.type == _FORK:
            shown = {"type": _FORK, "actor": event.actor, "created_at": iso(event.created_at),
                     "url": event.url, "name": event.name}
        else:
            shown = {"type": _PULL, "actor": event.actor, "created_at": iso(event.created_at),
                     "url": event.url, "title": event.title, "number": event.number,
                     "action": event.action}
        events.insert(pos, (event.created_at, event.id, shown))
        del events[config.RECENT_EVENTS:]
        self.changes.add("r" + repo)
        return repo in self.leaders

    def _expire(self, start):
        """Forget everything before hour `start`, and repos with nothing left in the window."""
        changes = self.changes
        for hour in [h for h in self.hourly if h < start]:
            for repo, n in self.hourly.pop(hour).items():
                changes.add("h" + repo)
                left = self.stars[repo] - n
                if left:
                    self.stars[repo] = left
                else:
                    del self.stars[repo]
        for hour in [h for h in self.seen if h < start]:
            del self.seen[hour]
            changes.add(f"s{hour}")
        oldest = start * 3600
        for repo, events in list(self.recent.items()):
            if events[-1][0] < oldest:
                changes.add("r" + repo)
                kept = [e for e in events if e[0] >= oldest]
                if kept:
                    self.recent[repo] = kept
                else:
                    del self.recent[repo]

    def _rank(self, repo):
        return -self.stars[repo], repo

    # ---- queries (README "Queries"): read-only, answering fresh data

    @query(key=repo_key)
    def repo(self, repo) -> RepoAnswer:
        """This partition's view of `repo`: stars and hourly counts in the window, recent events."""
        hourly = [0] * config.WINDOW_HOURS
        if self.hour is not None:
            first = self.hour - config.WINDOW_HOURS + 1
            for i, h in enumerate(range(first, self.hour + 1)):
                bucket = self.hourly.get(h)
                if bucket:
                    hourly[i] = bucket.get(repo, 0)
        return {"repo": repo, "partition": partition_of(repo), "stars": self.stars.get(repo, 0), "hourly": hourly,
                "recent_events": [dict(shown) for _, _, shown in self.recent.get(repo, ())],
                "window_end": None if self.now_ms is None else iso(self.now_ms // 1000)}

    @query(key=ahead_key)
    def ahead(self, arg) -> int:
        """How many of this partition's repositories rank before (stars, repo): more stars, or as many
        and a smaller name."""
        _, stars, repo = _ahead_arg(arg)
        return sum(1 for r, n in self.stars.items() if n > stars or (n == stars and r < repo))

    @query(key=complete_key)
    def complete(self, arg) -> list:
        """Up to COMPLETE_MAX [repo, stars] of this partition's repositories with stars, forks or pull
        requests in the window whose name or owner/name starts with the prefix (any case): most stars
        first, then by name."""
        _, prefix = _complete_arg(arg)
        stars = self.stars
        found = [(-stars.get(r, 0), r) for r in set(stars).union(self.recent)
                 if r.lower().startswith(prefix) or r[r.index("/") + 1:].lower().startswith(prefix)]
        return [[r, -n] for n, r in heapq.nsmallest(COMPLETE_MAX, found)]

    # ---- what the partition shows

    def _shows(self):
        """Emit when there are leaders, or to say that the leaders this partition showed are gone."""
        return self.partition is not None and (bool(self.leaders) or self.emitted)

    def leaderboard(self) -> Leaderboard:
        """This partition's leaderboard, which it now emits: fresh dicts and lists, sharing nothing
        mutable with the state."""
        self.emitted = True
        return self.board()

    def board(self, now_ms=None) -> Leaderboard:
        """The leaderboard as it stands, changing nothing (the app's wallaroo.Deferred renders it);
        `now_ms`: the event time to show as window_end (default: the partition's)."""
        first = self.hour - config.WINDOW_HOURS + 1
        buckets = [self.hourly.get(h) for h in range(first, self.hour + 1)]
        leaders: list[Leader] = []
        for repo in self.leaders:
            leaders.append({
                "repo": repo,
                "stars": self.stars[repo],
                "hourly": [b.get(repo, 0) if b else 0 for b in buckets],
                "recent_events": [dict(shown) for _, _, shown in self.recent.get(repo, ())],
            })
        now_ms = self.now_ms if now_ms is None else now_ms
        return {"partition": self.partition, "window_end": iso(now_ms // 1000), "leaders": leaders}


# The shapes of the entries (strict: no "1" for 1).
_HEADER = tuple[int | None, int | None, int | None, list[str], bool, int, int, int]
_COUNTS = dict[int, int]
_IDS = list[str]
_RECENT = list[tuple[int, str, dict[str, str | int | None]]]
_encode = msgspec.msgpack.Encoder().encode
_DECODERS = {shape: msgspec.msgpack.Decoder(shape) for shape in (_HEADER, _COUNTS, _IDS, _RECENT)}


def _entry(value):
    """An entry's value as MessagePack bytes; as the data itself when it holds a lone surrogate
    (the engine's codec keeps those; a set as a list, the shape _IDS reads)."""
    try:
        return _encode(value)
    except UnicodeEncodeError:
        return list(value) if type(value) is set else value


def _decode(value, shape):
    """An entry's value as `shape`: its MessagePack bytes, or (as changelogs written before the
    entries were bytes hold it) the plain data itself."""
    if type(value) is bytes:
        return _DECODERS[shape].decode(value)
    return msgspec.convert(value, shape)


def iso(seconds):
    """Seconds since the epoch -> "YYYY-MM-DDTHH:MM:SSZ" (remembered: every fork and pull request
    shows its time, and a window holds at most 86,400 distinct seconds)."""
    text = _iso_cache.get(seconds)
    if text is None:
        t = time.gmtime(seconds)
        text = (f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}T"
                f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}Z")
        if len(_iso_cache) >= 100_000:
            _iso_cache.clear()
        _iso_cache[seconds] = text
    return text


_iso_cache: dict[int, str] = {}
