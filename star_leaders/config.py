"""The one place for star_leaders' defaults.

Topic names are defaults only: `--kafka_source_topic` / `--kafka_sink_topic` on the machida command
line win.  Everything else is fixed for a deployment: the partition keys and the window shape are part
of the state layout (state is partitioned and checkpointed by these keys), so changing them needs a
fresh state (new consumer group / changelog), not a restart.
"""
# Shared with the streamer and the dashboard, so they live in stack_contract: the topics, the
# application's name (the workers' consumer group), the window's shape and the partition count.
from stack_contract import APP_NAME, PARTITION_COUNT, RECENT_EVENTS, SOURCE_TOPIC, TOP_N, WINDOW_HOURS  # noqa: F401
from stack_contract import LEADERBOARD_TOPIC as SINK_TOPIC  # noqa: F401
# What a valid event is (these two limits included) is stack_contract.valid_event's, shared with the
# archive streamer: the decoder applies it (events.py).
from stack_contract.valid_event import CREATED_AT_MAX_LENGTH as TIME_MAX_LENGTH  # noqa: F401
from stack_contract.valid_event import REPO_NAME_MAX_LENGTH  # noqa: F401

from stack_contract import STATE_NAME  # noqa: F401,E402 - the state the dashboard queries

PARTITION_KEYS = list(range(PARTITION_COUNT))

WATCH_EVENT = "WatchEvent"           # a star
FORK_EVENT = "ForkEvent"
PULL_REQUEST_EVENT = "PullRequestEvent"
INTERESTING_TYPES = (WATCH_EVENT, FORK_EVENT, PULL_REQUEST_EVENT)

# Input is the public archive, i.e. untrusted.  An interesting event is ignored (filtered out) when
# `id` is not a string of 1..ID_MAX_LENGTH characters, `repo.name` is not a string of
# 1..REPO_NAME_MAX_LENGTH characters, or `created_at` is not an ISO-8601 time (naive means UTC) of at
# most TIME_MAX_LENGTH characters.  Display strings are truncated, ending in an ellipsis.
ID_MAX_LENGTH = 40
TITLE_MAX_LENGTH = 120               # pull request title, in recent events
ACTOR_MAX_LENGTH = 100               # actor login (GitHub's limit is 39)
URL_MAX_LENGTH = 300                 # pull request / fork html_url
FORK_NAME_MAX_LENGTH = 200           # forkee full_name
ACTION_MAX_LENGTH = 40               # pull request action ("opened", "closed", ...)
ELLIPSIS = "\u2026"
# With these caps a leaderboard record stays under the sink's default max_message_size (100000 bytes)
# even when every string is at its cap in 4-byte UTF-8 characters (checked by a test).
