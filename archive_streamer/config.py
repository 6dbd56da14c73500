"""Every default of the archive streamer.

Precedence everywhere: command-line flag, then the environment variable named here, then the default.
"""
import os
from pathlib import Path

from stack_contract import SOURCE_TOPIC

TOPIC = SOURCE_TOPIC   # the Kafka topic the streamer fills: the one star_leaders reads

# Where GH Archive serves its hour files: <base>/YYYY-MM-DD-H.json.gz (hour not zero-padded).
GHARCHIVE_URL = "https://data.gharchive.org"
SYNTHETIC = "synthetic"  # the --source value that selects the built-in generator
DEFAULT_SOURCE = GHARCHIVE_URL

# The hours whose star data is healthy; a replay outside them gets a warning.  Before 2015 the archive
# uses the older Timeline schema, without a `repo` object, so every event would be skipped.  The first
# hour is the default start: it never moves, and the real-data fixture in shared/data is from that day.
HEALTHY_FIRST_HOUR = "2015-01-01-0"
HEALTHY_LAST_HOUR = "2025-05-22-23"
DEFAULT_START = HEALTHY_FIRST_HOUR
DEFAULT_HOURS = 24          # one archive day; at the default speedup it takes one wall-clock hour
DEFAULT_SPEEDUP = 24.0      # archive seconds per wall second; 0 = as fast as possible
DEFAULT_WARMUP_HOURS = 0    # hours sent at full speed before pacing starts

DEFAULT_KAFKA_PORT = 9092
DEFAULT_PARTITIONS = 4
DEFAULT_REPLICATION = 1     # the local broker is a single node
# Event timestamps are years old, so time-based retention would delete every rolled segment within
# minutes of the replay; topics we create keep their records until someone deletes the topic.
TOPIC_CONFIG = {"retention.ms": "-1", "max.message.bytes": str(9 * 1024 * 1024)}

DEFAULT_SEED = 1
# Real 2015 hours hold ~8,000 events, 2021 hours ~100,000.  5,000 keeps a 24-hour synthetic replay
# (120,000 events, ~250 MB of JSON) to well under a minute at --speedup 0 on a laptop.
DEFAULT_EVENTS_PER_HOUR = 5000

DEFAULT_CACHE_DIR = "~/.cache/star-leaders/gharchive"

# Real events are ~2 KB, the largest a few hundred KB; anything above this is not an event we want
# in memory or in Kafka (the topic's max.message.bytes above leaves room for it).
MAX_LINE_BYTES = 8 * 1024 * 1024
# Hour files are inflated READ_INPUT_BYTES of gzip at a time, into pieces of at most READ_CHUNK_BYTES
# (deflate reaches ~1000:1, so a small bomb never becomes one huge piece).
READ_INPUT_BYTES = 64 * 1024
READ_CHUNK_BYTES = 1024 * 1024
# Bad lines up to this long are remembered (at most KNOWN_BAD_LINES per file): deflate repeats blocks
# of up to 32 KiB, so a bomb holds at most ~16,000 distinct lines, and each is parsed once.
KNOWN_BAD_LINE_BYTES = 256
KNOWN_BAD_LINES = 32768

# Downloads: retries with exponential backoff (1, 2, 4, 8, 16 s ... capped), bounded socket waits.
DOWNLOAD_RETRIES = 6
DOWNLOAD_BACKOFF_S = 1.0
DOWNLOAD_BACKOFF_MAX_S = 30.0
DOWNLOAD_TIMEOUT_S = (10.0, 60.0)      # (connect, read)
DOWNLOAD_CHUNK_BYTES = 1024 * 1024
DOWNLOAD_MAX_REDIRECTS = 5             # each to https on the archive's host only (download.py)
PREFETCH_HOURS = 1                     # download the next hour while the current one streams

# Pacing: events are sent in windows of this much wall time, with at most one sleep per window.
PACING_WINDOW_S = 0.02
# A move of the pacing clock worth more wall time than this is followed only once a second event
# confirms it: one outlier ahead (up to the hour's end, where created_at is clamped) cannot stall a replay.
PACING_CONFIRM_S = 5.0

KAFKA_WAIT_S = 15.0                    # how long to wait for an unreachable broker before giving up
FLUSH_TIMEOUT_S = 60.0                 # bounded final flush, so a dead broker cannot hang shutdown
PROGRESS_LOG_INTERVAL_S = 10.0         # plain log lines when there is no terminal (or --no-progress)

# librdkafka settings for throughput with exactly-once-per-partition delivery (idempotence keeps
# retries from duplicating or reordering records).  lz4 costs least CPU on a small machine.
PRODUCER_CONFIG = {
    "enable.idempotence": True,
    "acks": "all",
    "linger.ms": 20,
    "batch.size": 1024 * 1024,
    "batch.num.messages": 10000,
    "compression.type": "lz4",
    "queue.buffering.max.messages": 200000,
    "queue.buffering.max.kbytes": 512 * 1024,
    "message.max.bytes": 9 * 1024 * 1024,
}

# Environment variables read when a flag is not given.
ENV_SOURCE = "ARCHIVE_STREAMER_SOURCE"
ENV_START = "ARCHIVE_STREAMER_START"
ENV_HOURS = "ARCHIVE_STREAMER_HOURS"
ENV_SPEEDUP = "ARCHIVE_STREAMER_SPEEDUP"
ENV_WARMUP_HOURS = "ARCHIVE_STREAMER_WARMUP_HOURS"
ENV_TOPIC = "ARCHIVE_STREAMER_TOPIC"
ENV_SEED = "ARCHIVE_STREAMER_SEED"
ENV_EVENTS_PER_HOUR = "ARCHIVE_STREAMER_EVENTS_PER_HOUR"
ENV_PARTITIONS = "ARCHIVE_STREAMER_PARTITIONS"
ENV_KAFKA = "KAFKA_BOOTSTRAP"          # full bootstrap list; shared with the rest of the stack
ENV_KAFKA_PORT = "KAFKA_PORT"          # the Makefile's and tests' port, when KAFKA_BOOTSTRAP is unset
ENV_CACHE = "GHARCHIVE_CACHE"


def env(name: str, default):
    """The environment's value for `name`, or `default` when unset or empty."""
    value = os.environ.get(name, "")
    return value if value != "" else default


def default_kafka() -> str:
    """KAFKA_BOOTSTRAP, else 127.0.0.1 on KAFKA_PORT (default 9092)."""
    return env(ENV_KAFKA, f"127.0.0.1:{env(ENV_KAFKA_PORT, DEFAULT_KAFKA_PORT)}")


def default_cache_dir() -> Path:
    """GHARCHIVE_CACHE, else ~/.cache/star-leaders/gharchive."""
    return Path(env(ENV_CACHE, DEFAULT_CACHE_DIR)).expanduser()
