"""Tutorial: star_leaders plus fork leaders, a second pipeline with state of its own.

Run it in place of star_leaders:
    machida --application-module examples.fork_leaders --kafka_source_topic gharchive \
        --kafka_sink_topic leaderboard --name w1
Fork leaders go to the topic `fork-leaders` (see README, "Add a computation").
"""
import heapq

import orjson

import star_leaders
import wallaroo
from star_leaders import config

FORK_TOPIC = "fork-leaders"


def application_setup(args):
    source, sink = star_leaders.kafka_source_and_sink(args)
    ab = wallaroo.ApplicationBuilder(config.APP_NAME)
    star_leaders.add_star_leaders(ab, source, sink)         # as in star_leaders/app.py

    ab.new_pipeline("fork leaders", source)                 # new: same source, state of its own
    ab.to(star_leaders.filter_interesting_events)
    ab.to(keep_forks)
    ab.to_state_partition(count_forks, ForkCounts, "fork-counts",
                          star_leaders.RepoPartitioner(), config.PARTITION_KEYS)
    ab.to_sink(wallaroo.KafkaSinkConfig(FORK_TOPIC, sink.brokers, sink.log_level,
                                        sink.max_produce_buffer_ms, sink.max_message_size, encode_forks))
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
    state.partition = star_leaders.partition_of(event.repo)
    state.forks[event.repo] = state.forks.get(event.repo, 0) + 1
    top = heapq.nsmallest(config.TOP_N, state.forks.items(), key=lambda kv: (-kv[1], kv[0]))
    return {"partition": state.partition, "leaders": [{"repo": r, "forks": n} for r, n in top]}, True


@wallaroo.encoder
def encode_forks(leaders):
    return orjson.dumps(leaders), str(leaders["partition"])
