"""Star leaders: which GitHub repositories get the most stars right now, live from the GH Archive.

The pipeline, as in the Wallaroo blog post that introduced it (`add_star_leaders`):

    gharchive (Kafka) -> decoder -> filter_interesting_events -> annotate_repos [RepoMetadata,
    partitioned by repository] -> encoder -> leaderboard (Kafka)

* `decoder` (events.py) turns a record into an event dict.  85% of the archive is neither a star, a
  fork nor a pull request, so it first looks for the three type names in the raw bytes and does not
  parse a record that contains none of them.
* `filter_interesting_events` (events.py) keeps stars (WatchEvent), forks and pull requests and trims
  each to a small `RepoEvent`: that is what crosses Kafka to the state step (`serialize` below).
* `annotate_repos` updates the partition's `RepoMetadata` (state.py): stars per repository in 24
  hourly buckets (absolute hours), each event id counted once, the last forks and pull requests of
  each repository, and the partition's top 10.  When the top 10 changes, it emits the partition's
  leaderboard (a wallaroo.Deferred: built once per checkpoint, for the coalescing sink).  Event
  time moving on (`RepoMetadata.on_event_time`) slides the window of idle partitions too.
* `encoder` writes the leaderboard as JSON, keyed by partition id; the dashboard keeps the newest
  record per partition and merges them into the global top 10.
"""
import msgspec
import orjson

import wallaroo

from . import config
from .events import RepoEvent, decoder, filter_interesting_events
from .state import RepoMetadata, RepoPartitioner


def application_setup(args):
    source, sink = kafka_source_and_sink(args)
    ab = wallaroo.ApplicationBuilder(config.APP_NAME)
    add_star_leaders(ab, source, sink)
    return ab.build()


def add_star_leaders(builder, source, sink):
    """Add the star leaders pipeline to an ApplicationBuilder: events from `source`, leaderboards
    to `sink` (both as `kafka_source_and_sink` makes them)."""
    builder.new_pipeline("star leaders", source)
    builder.to_parallel(filter_interesting_events)
    builder.to_state_partition(annotate_repos, RepoMetadata, config.STATE_NAME,
                               RepoPartitioner(), config.PARTITION_KEYS)
    builder.to_sink(sink)
    return builder


def kafka_source_and_sink(args):
    """machida's --kafka_source_* and --kafka_sink_* options -> (KafkaSourceConfig with `decoder`,
    KafkaSinkConfig with `encoder`); the topics default to gharchive and leaderboard."""
    in_topic, in_brokers, in_log_level = wallaroo.kafka_parse_source_options(args)
    (out_topic, out_brokers, out_log_level, out_max_produce_buffer_ms,
     out_max_message_size) = wallaroo.kafka_parse_sink_options(args)
    source = wallaroo.KafkaSourceConfig(in_topic or config.SOURCE_TOPIC, in_brokers, in_log_level, decoder)
    # coalesce: a partition's leaderboard can change hundreds of times between two checkpoints; the
    # dashboard keeps only the newest of each partition, so only the last one is produced.
    sink = wallaroo.KafkaSinkConfig(out_topic or config.SINK_TOPIC, out_brokers, out_log_level,
                                    out_max_produce_buffer_ms, out_max_message_size, encoder, coalesce=True)
    return source, sink


@wallaroo.state_computation(name="annotate repos")
def annotate_repos(event, repos):
    """Count a star / remember a fork or pull request; emit the partition's leaderboard if it changed.

    Emitted as a wallaroo.Deferred: the sink coalesces, so the engine builds the leaderboard once per
    partition per checkpoint, from the state as it then is, instead of at each of the ~40 changes a
    partition's top 10 goes through between two checkpoints (building them was a fifth of the task's
    CPU).  It is the board of the last change exactly: nothing a leaderboard shows changes without a
    new one being emitted, but window_end (the partition's event time), which the Deferred keeps."""
    return (wallaroo.Deferred(RepoMetadata.board, repos.now_ms) if repos.apply(event) else None), True


@wallaroo.encoder
def encoder(leaderboard):
    """A partition's leaderboard -> (JSON bytes, key = partition id)."""
    return orjson.dumps(leaderboard), str(leaderboard["partition"])


# ----------------------------------------------------------- messages crossing Kafka to the state
# The engine takes these from the application module, or else from the module of the state
# computation (here), so an application that reuses `annotate_repos` gets them without importing them.

def serialize(message):
    """Messages cross Kafka between workers as JSON, not pickle: smaller, faster, and loading them
    cannot run code.  A RepoEvent travels as a JSON array; anything else as plain JSON."""
    if type(message) is RepoEvent:
        return b"E" + orjson.dumps(tuple(message))
    return b"J" + orjson.dumps(message)


def deserialize(data):
    """The inverse of `serialize`, for records anyone who can write to the repartition topic may have
    written: a RepoEvent comes back only with the types and the length limits `filter_interesting_events`
    gives it (config.py), else this raises and the engine dead-letters the record.  Checked here, before
    the state sees it: a title of 40 KB would otherwise be copied into every leaderboard its repository
    appears in (hundreds a second: that is how one such record grew a worker by 150 MB)."""
    tag, body = data[:1], memoryview(data)[1:]
    if tag == b"E":
        return _checked(_REPO_EVENT.decode(body))
    if tag == b"J":
        return orjson.loads(body)
    raise ValueError(f"not a star_leaders message (tag {tag!r})")


_REPO_EVENT = msgspec.json.Decoder(RepoEvent)      # checks each field's type (strict: no "1" for 1)
# The longest each text field may be (what the filter makes), and the range of the integers.
_LIMITS = {"id": config.ID_MAX_LENGTH, "repo": config.REPO_NAME_MAX_LENGTH, "actor": config.ACTOR_MAX_LENGTH,
           "url": config.URL_MAX_LENGTH, "title": config.TITLE_MAX_LENGTH, "action": config.ACTION_MAX_LENGTH,
           "name": config.FORK_NAME_MAX_LENGTH}
_MAX_INT = 1 << 53


def _checked(event):
    if event.type not in config.INTERESTING_TYPES:
        raise ValueError(f"event type {event.type[:40]!r} is not one the state counts")
    for field, limit in _LIMITS.items():
        value = getattr(event, field)
        if value is not None and not 0 < len(value) <= limit:
            raise ValueError(f"{field} of {len(value)} characters (at most {limit})")
    if event.id is None or event.repo is None:
        raise ValueError("an event needs an id and a repo")
    if not 0 <= event.created_at < _MAX_INT // 1000 or (event.number is not None and not 0 <= event.number < _MAX_INT):
        raise ValueError("created_at or number out of range")
    return event
