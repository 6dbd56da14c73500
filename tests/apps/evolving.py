"""Word count (tests/apps/wordcount.py's steps) as it changes between deployments, for the engine's
topology-change tests.

`--variant v1`: one pipeline, "count words": split, then count per word (state "word counts").
`--variant v2`: v1 with a pipeline "count letters" inserted in front of it, reading `--letters_topic`,
               whose state step sits at the same position as v1's.
`--variant v3`: "count words" with its state step replaced by "tally word" on the same state, so a
               record left for "count word" has no step to go to.
"""
import argparse

import wallaroo
from wordcount import WORDS, WordCounts, WordPartitioner, count_word, decode, encode, split


def application_setup(args):
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--variant", default="v1")
    p.add_argument("--letters_topic", default="letters")
    opts, _ = p.parse_known_args(args)
    in_topic, in_brokers, in_log = wallaroo.kafka_parse_source_options(args)
    out_topic, out_brokers, out_log, out_ms, out_max = wallaroo.kafka_parse_sink_options(args)
    sink = wallaroo.KafkaSinkConfig(out_topic, out_brokers, out_log, out_ms, out_max, encode)
    ab = wallaroo.ApplicationBuilder("evolving")
    if opts.variant == "v2":
        ab.new_pipeline("count letters", wallaroo.KafkaSourceConfig(opts.letters_topic, in_brokers, in_log, decode))
        ab.to(split)
        ab.to_stateful(count_letters, LetterCounts, "letter counts")
        ab.to_sink(sink)
    ab.new_pipeline("count words", wallaroo.KafkaSourceConfig(in_topic, in_brokers, in_log, decode))
    ab.to(split)
    ab.to_state_partition(tally_word if opts.variant == "v3" else count_word, WordCounts, "word counts",
                          WordPartitioner(), WORDS)
    ab.to_sink(sink)
    return ab.build()


class LetterCounts:
    def __init__(self):
        self.letters = 0


@wallaroo.state_computation(name="count letters")
def count_letters(word, state):
    state.letters += len(word)
    return ("letters", state.letters), True


@wallaroo.state_computation(name="tally word")
def tally_word(word, state):
    return count_word(word, state)
