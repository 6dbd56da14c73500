"""The facts the services share: topic names, the application's name and the leaderboard's shape.

archive_streamer, star_leaders and the dashboard import them from here.  Standard library only, so the
streamer and the dashboard load it without the engine.  docker-compose.yaml and scripts/stack.sh write
the names again as shell defaults (STAR_LEADERS_EVENTS_TOPIC, STAR_LEADERS_LEADERBOARD_TOPIC,
STAR_LEADERS_APP_ID); tests/test_stack_compose.py checks that they agree with this module.
The definition of a valid archive event, which the streamer and star_leaders' decoder share, is the
submodule `stack_contract.valid_event` (it needs orjson, so this module does not import it).
"""
import re
from typing import TypedDict

SOURCE_TOPIC = "gharchive"         # GH Archive events (JSON bytes, one per record): archive_streamer fills it
LEADERBOARD_TOPIC = "leaderboard"  # star_leaders' output (one `Leaderboard` per record); the dashboard shows it
# star_leaders' application name, hence the workers' consumer group on SOURCE_TOPIC and the prefix of
# their internal topics (`machida --application-id` overrides it); the dashboard watches its lag.
APP_NAME = "star-leaders"

WINDOW_HOURS = 24                  # the sliding window: hourly star buckets ending at the stream's event time
TOP_N = 10                         # leaders per state partition, and on the dashboard
RECENT_EVENTS = 3                  # forks / pull requests kept per leader, newest first
# star_leaders' state partitions (a repository's is crc32(name) % this): LEADERBOARD_TOPIC records carry
# partition ids 0..PARTITION_COUNT-1, and the dashboard refuses any other (the topic is writable by anyone
# on the broker).  Part of the state layout: changing it needs a fresh application id.
PARTITION_COUNT = 32


# The value of a LEADERBOARD_TOPIC record (JSON); its key is the partition id as text.

class Fork(TypedDict):
    type: str                      # "ForkEvent"
    actor: str | None              # login
    created_at: str                # ISO-8601 UTC, "YYYY-MM-DDTHH:MM:SSZ"
    url: str | None                # the fork's html_url
    name: str | None               # the fork's full_name


class PullRequest(TypedDict):
    type: str                      # "PullRequestEvent"
    actor: str | None
    created_at: str
    url: str | None                # the pull request's html_url
    title: str | None
    number: int | None
    action: str | None             # opened, closed, ...


class Leader(TypedDict):
    repo: str                      # "owner/name"
    stars: int                     # stars in the window
    hourly: list[int]              # WINDOW_HOURS counts, oldest first; the last is window_end's hour
    recent_events: list[Fork | PullRequest]  # at most RECENT_EVENTS, newest first


class Leaderboard(TypedDict):
    partition: int                 # the state partition this board is of
    window_end: str                # the partition's event time, ISO-8601 UTC
    leaders: list[Leader]          # at most TOP_N, by stars descending, then repo in code point order


# ---- one repository, looked up live (README "Queries"): star_leaders' workers answer queries of their
# state (stack_contract.repo_card puts the answers together), the dashboard serves them as
# GET /api/repos/<owner>/<name> in this shape.

STATE_NAME = "repo-metadata"      # star_leaders' state, queried at /query/<STATE_NAME>/<method>
QUERY_REPO = "repo"               # arg "owner/name" -> RepoAnswer
QUERY_AHEAD = "ahead"             # arg "<partition>:<stars>:<owner/name>" -> repos of that partition ahead
QUERY_COMPLETE = "complete"       # arg "<partition>:<prefix>" -> [[repo, stars], ...] of that partition
COMPLETE_MAX = 10                 # completions per answer (per partition, and in all)
COMPLETE_PREFIX_MAX = 100         # characters of a completion prefix

REPO_NAME_MAX_LENGTH = 200        # GitHub's own limit is 39 (owner) + 1 + 100 (name); valid_event checks it
# A name as the stream counts it: owner/name, no whitespace, control characters or further slashes.
_REPO_NAME = re.compile(r"[^/\s\x00-\x1f\x7f]+/[^/\s\x00-\x1f\x7f]+")


def valid_repo_name(name) -> bool:
    return type(name) is str and len(name) <= REPO_NAME_MAX_LENGTH and _REPO_NAME.fullmatch(name) is not None


class AsOf(TypedDict):
    checkpoint: int                # checkpoints the answering worker had committed
    event_time_ms: int | None      # the state partition's event time (None: it has seen none)
    window_end: str | None         # the same, ISO-8601 UTC, as on the leaderboard


class RepoCard(TypedDict):
    repo: str
    stars: int                     # stars in the window; 0 when it has none
    hourly: list[int]              # WINDOW_HOURS counts, oldest first, ending at as_of's window_end hour
    rank: int | None               # 1 + repositories ahead of it in the global window (None without stars)
    recent_events: list[Fork | PullRequest]   # at most RECENT_EVENTS, newest first
    as_of: AsOf


class RepoAnswer(TypedDict):
    """The value of the QUERY_REPO query: one partition's view of one repository."""
    repo: str
    partition: int
    stars: int
    hourly: list[int]
    recent_events: list[Fork | PullRequest]
    window_end: str | None
