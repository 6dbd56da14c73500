"""Tutorial: star_leaders plus fork leaders, a second pipeline with state of its own.

Run it in place of star_leaders:
    machida --application-module examples.fork_leaders --kafka_source_topic gharchive \
        --kafka_sink_topic leaderboard --name w1
Fork leaders go to the topic `fork-leaders` (see README, "Add a computation").
"""
import heapq

import orjson

import wallaroo
from star_leaders import app as star
from star_leaders import config
from star_leaders.app import deserialize, serialize  # noqa: F401 - messages cross Kafka the same way

FORK_TOPIC = "fork-leaders"


def application_setup(args):
    in_topic, in_brokers, in_log_level = wallaroo.kafka_parse_source_options(args)
    (out_topic, out_brokers, out_log_level, out_buffer_ms,
     out_max_size) = wallaroo.kafka_parse_sink_options(args)
    source = wallaroo.KafkaSourceConfig(in_topic or config.SOURCE_TOPIC, in_brokers, in_log_level,
                                        star.decoder)

    ab = wallaroo.ApplicationBuilder(config.APP_NAME)
    ab.new_pipeline("star leaders", source)                 # as in star_leaders/app.py
    ab.to_parallel(star.filter_interesting_events)
    ab.to_state_partition(star.annotate_repos, star.RepoMetadata, config.STATE_NAME,
                          star.RepoPartitioner(), config.PARTITION_KEYS)
    ab.to_sink(wallaroo.KafkaSinkConfig(out_topic or config.SINK_TOPIC, out_brokers, out_log_level,
                                        out_buffer_ms, out_max_size, star.encoder))

    ab.new_pipeline("fork leaders", source)                 # new: same source, state of its own
    ab.to(star.filter_interesting_events)
    ab.to(keep_forks)
    ab.to_state_partition(count_forks, ForkCounts, "fork-counts",
                          star.RepoPartitioner(), config.PARTITION_KEYS)
    ab.to_sink(wallaroo.KafkaSinkConfig(FORK_TOPIC, out_brokers, out_log_level,
                                        out_buffer_ms, out_max_size, encode_forks))
    return ab.build()


@wallaroo.computation(name="keep forks")
def keep_forks(event):
    return event if event.type == config.FORK_EVENT else None


class ForkCounts:
    """Forks per repository in one partition (all time, to keep the tutorial short)."""

    def __init__(self):
        self.partition = None
        self.forks = {}


@wallaroo.state_computation(name="count forks")
def count_forks(event, state):
    state.partition = star.partition_of(event.repo)
    state.forks[event.repo] = state.forks.get(event.repo, 0) + 1
    top = heapq.nsmallest(config.TOP_N, state.forks.items(), key=lambda kv: (-kv[1], kv[0]))
    return {"partition": state.partition, "leaders": [{"repo": r, "forks": n} for r, n in top]}, True


@wallaroo.encoder
def encode_forks(leaders):
    return orjson.dumps(leaders), str(leaders["partition"])
