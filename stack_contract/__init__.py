"""The facts the services share: topic names, the application's name and the leaderboard's shape.

archive_streamer, star_leaders and the dashboard import them from here.  Standard library only, so the
streamer and the dashboard load it without the engine.  docker-compose.yaml and scripts/stack.sh write
the names again as shell defaults (STAR_LEADERS_EVENTS_TOPIC, STAR_LEADERS_LEADERBOARD_TOPIC,
STAR_LEADERS_APP_ID); tests/test_stack_compose.py checks that they agree with this module.
The definition of a valid archive event, which the streamer and star_leaders' decoder share, is the
submodule `stack_contract.valid_event` (it needs orjson, so this module does not import it).
"""
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
