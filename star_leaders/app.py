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
  leaderboard.  Event time moving on (`RepoMetadata.on_event_time`) slides the window of idle
  partitions too.
* `encoder` writes the leaderboard as JSON, keyed by partition id; the dashboard keeps the newest
  record per partition and merges them into the global top 10.
"""
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
    sink = wallaroo.KafkaSinkConfig(out_topic or config.SINK_TOPIC, out_brokers, out_log_level,
                                    out_max_produce_buffer_ms, out_max_message_size, encoder)
    return source, sink


@wallaroo.state_computation(name="annotate repos")
def annotate_repos(event, repos):
    """Count a star / remember a fork or pull request; emit the partition's leaderboard if it changed."""
    return repos.update(event)


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
    tag, body = data[:1], memoryview(data)[1:]
    if tag == b"E":
        return RepoEvent(*orjson.loads(body))
    if tag == b"J":
        return orjson.loads(body)
    raise ValueError(f"not a star_leaders message (tag {tag!r})")
