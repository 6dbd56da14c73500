"""Star leaders: which GitHub repositories get the most stars right now, live from the GH Archive.

The pipeline, as in the Wallaroo blog post that introduced it:

    gharchive (Kafka) -> decoder -> filter_interesting_events -> annotate_repos [RepoMetadata,
    partitioned by repository] -> encoder -> leaderboard (Kafka)

* `decoder` turns a record into an event dict.  85% of the archive is neither a star, a fork nor a
  pull request, so it first looks for the three type names in the raw bytes and does not parse a
  record that contains none of them.
* `filter_interesting_events` keeps stars (WatchEvent), forks and pull requests and trims each to a
  small `RepoEvent`: that is what crosses Kafka to the state step.
* `annotate_repos` updates the partition's `RepoMetadata`: stars per repository in 24 hourly buckets
  (absolute hours), each event id counted once, the last forks and pull requests of each repository,
  and the partition's top 10.  When the top 10 changes, it emits the partition's leaderboard.
  Event time moving on (`RepoMetadata.on_event_time`) slides the window of idle partitions too.
* `encoder` writes the leaderboard as JSON, keyed by partition id; the dashboard keeps the newest
  record per partition and merges them into the global top 10.
"""
import heapq
import time
import zlib
from datetime import datetime, timedelta, timezone
from typing import NamedTuple

import orjson

import wallaroo

from . import config

MS_PER_HOUR = 3_600_000
_WATCH, _FORK, _PULL = config.WATCH_EVENT, config.FORK_EVENT, config.PULL_REQUEST_EVENT


def application_setup(args):
    in_topic, in_brokers, in_log_level = wallaroo.kafka_parse_source_options(args)
    (out_topic, out_brokers, out_log_level, out_max_produce_buffer_ms,
     out_max_message_size) = wallaroo.kafka_parse_sink_options(args)

    ab = wallaroo.ApplicationBuilder(config.APP_NAME)
    ab.new_pipeline("star leaders",
                    wallaroo.KafkaSourceConfig(in_topic or config.SOURCE_TOPIC, in_brokers,
                                               in_log_level, decoder))
    ab.to_parallel(filter_interesting_events)
    ab.to_state_partition(annotate_repos, RepoMetadata, config.STATE_NAME,
                          RepoPartitioner(), config.PARTITION_KEYS)
    ab.to_sink(wallaroo.KafkaSinkConfig(out_topic or config.SINK_TOPIC, out_brokers, out_log_level,
                                        out_max_produce_buffer_ms, out_max_message_size, encoder))
    return ab.build()


# --------------------------------------------------------------------------------------- decoding

@wallaroo.decoder(header_length=4, length_fmt=">I")
def decoder(data):
    """One record value (one GH Archive line) -> the event as a dict, or None if it can't be interesting.

    An interesting event contains its type name in its raw bytes, so a record with none of the three
    names (see `may_be_interesting`) is dropped without parsing it: it is only checked to start with
    "{" and end with "}" (so garbage and truncated lines are still dead-lettered).  Everything else is
    parsed with orjson; a record that is not JSON raises, and the runtime dead-letters it."""
    if type(data) is not bytes:
        if data is None:
            raise ValueError("empty record value (tombstone)")
        data = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    if may_be_interesting(data):
        return orjson.loads(data)
    if not (data.startswith(b"{") and data.endswith((b"}", b"}\n", b"}\r\n"))):
        stripped = data.strip()
        if not (stripped.startswith(b"{") and stripped.endswith(b"}")):
            raise ValueError("record is not a JSON object")
    return None


def may_be_interesting(data):
    """False only if `data` cannot hold a star, fork or pull request: none of b'WatchEvent"',
    b'ForkEvent"', b'PullRequestEvent"' occurs (a JSON string value is followed by its quote).

    One scan for b'Event"' instead of one per name: twice as fast on the 85% that are dropped.
    (A type name written with JSON \\u escapes is not seen; the archive never writes one.)"""
    find = data.find
    i = find(b'Event"')
    while i >= 0:
        if data[i - 5:i] == b"Watch" or data[i - 4:i] == b"Fork" or data[i - 11:i] == b"PullRequest":
            return True
        i = find(b'Event"', i + 6)
    return False


# -------------------------------------------------------------------------------------- filtering

class RepoEvent(NamedTuple):
    """What crosses to the state step: only what the state needs.

    Stars carry type, id, repo and created_at; forks and pull requests add what the dashboard shows."""
    type: str                 # WatchEvent | ForkEvent | PullRequestEvent
    id: str                   # the archive's event id (the archive repeats some events)
    repo: str                 # "owner/name"
    created_at: int           # seconds since the epoch, UTC
    actor: str | None = None  # login (forks and pull requests)
    url: str | None = None    # pull request html_url / forkee html_url
    title: str | None = None  # pull request title, truncated to TITLE_MAX_LENGTH
    number: int | None = None  # pull request number
    action: str | None = None  # pull request action: opened, closed, ...
    name: str | None = None   # forkee full_name


@wallaroo.computation(name="filter interesting events")
def filter_interesting_events(event):
    """Keep stars, forks and pull requests with the fields the state needs; drop everything else.

    Odd input (missing repo, bad created_at, non-string id, ...) is dropped here, never raised."""
    if type(event) is not dict:
        return None
    kind = event.get("type")
    if kind == _WATCH:              # (the constants themselves, so the state can compare with `is`)
        kind = _WATCH
    elif kind == _FORK:
        kind = _FORK
    elif kind == _PULL:
        kind = _PULL
    else:
        return None
    eid = event.get("id")
    if type(eid) is not str or not 0 < len(eid) <= config.ID_MAX_LENGTH:
        return None
    repo = event.get("repo")
    name = repo.get("name") if type(repo) is dict else None
    if type(name) is not str or not 0 < len(name) <= config.REPO_NAME_MAX_LENGTH:
        return None
    created_at = epoch_seconds(event.get("created_at"))
    if created_at is None:
        return None
    if kind is _WATCH:
        return RepoEvent(kind, eid, name, created_at)

    actor = event.get("actor")
    login = _text(actor.get("login"), config.ACTOR_MAX_LENGTH) if type(actor) is dict else None
    payload = event.get("payload")
    if type(payload) is not dict:
        payload = {}
    if kind is _FORK:
        forkee = payload.get("forkee")
        if type(forkee) is not dict:
            forkee = {}
        return RepoEvent(kind, eid, name, created_at, login,
                         url=_text(forkee.get("html_url"), config.URL_MAX_LENGTH),
                         name=_text(forkee.get("full_name"), config.FORK_NAME_MAX_LENGTH))
    pr = payload.get("pull_request")
    if type(pr) is not dict:
        pr = {}
    number = payload.get("number")
    if type(number) is not int or not 0 <= number < 1 << 53:
        number = None
    return RepoEvent(kind, eid, name, created_at, login,
                     url=_text(pr.get("html_url"), config.URL_MAX_LENGTH),
                     title=_text(pr.get("title"), config.TITLE_MAX_LENGTH), number=number,
                     action=_text(payload.get("action"), config.ACTION_MAX_LENGTH))


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_SECOND = timedelta(seconds=1)


def epoch_seconds(created_at):
    """ISO-8601 text -> whole seconds since the epoch (UTC; naive times are UTC), or None if unusable."""
    if type(created_at) is not str or len(created_at) > config.TIME_MAX_LENGTH:
        return None
    try:
        dt = datetime.fromisoformat(created_at)
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=timezone.utc)
        return (dt - _EPOCH) // _SECOND
    except (ValueError, OverflowError):
        return None


def iso(seconds):
    """Seconds since the epoch -> "YYYY-MM-DDTHH:MM:SSZ"."""
    t = time.gmtime(seconds)
    return (f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}T"
            f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}Z")


def _text(value, limit):
    """A display string, truncated to `limit` characters (ending in an ellipsis); None if not a string."""
    if type(value) is not str:
        return None
    return value if len(value) <= limit else value[:limit - 1] + config.ELLIPSIS


# ------------------------------------------------------------------------------ state, partitioned

def partition_of(repo):
    """A repository's partition key: stable across processes (Python's hash() is salted)."""
    return zlib.crc32(repo.encode("utf-8", "surrogatepass")) % config.PARTITION_COUNT


class RepoPartitioner:
    def partition(self, data):
        return partition_of(data.repo)


@wallaroo.state_computation(name="annotate repos")
def annotate_repos(event, repos):
    """Count a star / remember a fork or pull request; emit the partition's leaderboard if it changed."""
    return repos.update(event)


class RepoMetadata:
    """One partition's repositories over the window of the last WINDOW_HOURS hours.

    The window is the WINDOW_HOURS absolute hours (epoch seconds // 3600) ending at the hour of the
    stream's event time, as far as this partition knows it (its records' created_at and the runtime's
    `on_event_time` calls).  Only plain dicts, lists, sets and tuples: it pickles small and fast.
    """
    __slots__ = ("partition", "now_ms", "hour", "stars", "hourly", "seen", "recent", "leaders",
                 "emitted", "late_stars", "late_events", "duplicates")

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

    def __getstate__(self):
        return tuple(getattr(self, s) for s in self.__slots__)

    def __setstate__(self, state):
        for slot, value in zip(self.__slots__, state):
            setattr(self, slot, value)

    # ---- the two ways in: a record, and event time moving on

    def update(self, event):
        """Apply one RepoEvent; returns (leaderboard or None, state changed)."""
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
            return self.leaderboard(), True
        return None, True

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
        if event.type == _FORK:
            shown = {"type": _FORK, "actor": event.actor, "created_at": iso(event.created_at),
                     "url": event.url, "name": event.name}
        else:
            shown = {"type": _PULL, "actor": event.actor, "created_at": iso(event.created_at),
                     "url": event.url, "title": event.title, "number": event.number,
                     "action": event.action}
        events.insert(pos, (event.created_at, event.id, shown))
        del events[config.RECENT_EVENTS:]
        return repo in self.leaders

    def _expire(self, start):
        """Forget everything before hour `start`, and repos with nothing left in the window."""
        for hour in [h for h in self.hourly if h < start]:
            for repo, n in self.hourly.pop(hour).items():
                left = self.stars[repo] - n
                if left:
                    self.stars[repo] = left
                else:
                    del self.stars[repo]
        for hour in [h for h in self.seen if h < start]:
            del self.seen[hour]
        oldest = start * 3600
        for repo, events in list(self.recent.items()):
            if events[-1][0] < oldest:
                kept = [e for e in events if e[0] >= oldest]
                if kept:
                    self.recent[repo] = kept
                else:
                    del self.recent[repo]

    def _rank(self, repo):
        return -self.stars[repo], repo

    # ---- what the partition shows

    def _shows(self):
        """Emit when there are leaders, or to say that the leaders this partition showed are gone."""
        return self.partition is not None and (bool(self.leaders) or self.emitted)

    def leaderboard(self):
        """This partition's leaderboard: fresh dicts and lists, sharing nothing mutable with the state."""
        self.emitted = True
        first = self.hour - config.WINDOW_HOURS + 1
        buckets = [self.hourly.get(h) for h in range(first, self.hour + 1)]
        leaders = []
        for repo in self.leaders:
            leaders.append({
                "repo": repo,
                "stars": self.stars[repo],
                "hourly": [b.get(repo, 0) if b else 0 for b in buckets],
                "recent_events": [dict(shown) for _, _, shown in self.recent.get(repo, ())],
            })
        return {"partition": self.partition, "window_end": iso(self.now_ms // 1000), "leaders": leaders}


# ---------------------------------------------------------------------------------------- encoding

@wallaroo.encoder
def encoder(leaderboard):
    """A partition's leaderboard -> (JSON bytes, key = partition id)."""
    return orjson.dumps(leaderboard), str(leaderboard["partition"])


# ----------------------------------------------------------- messages crossing Kafka to the state

def serialize(message):
    """Messages cross Kafka between workers as JSON, not pickle: smaller, faster, and loading them
    cannot run code.  A RepoEvent travels as a JSON array; anything else as plain JSON."""
    if type(message) is RepoEvent:
        return b"E" + orjson.dumps(tuple(message))
    return b"J" + orjson.dumps(message)


def deserialize(data):
    tag, body = data[:1], memoryview(data)[1:]
    if tag == b"E":
        return RepoEvent(*orjson.loads(body))
    if tag == b"J":
        return orjson.loads(body)
    raise ValueError(f"not a star_leaders message (tag {tag!r})")
