"""A word count in Wallaroo 0.4 style, used by the engine tests (filter, multi, state partition, keyed encoder).

Input records are lines of words; lines starting with '#' are filtered; a line containing 'POISON'
makes a computation raise (a poison record). Every word's running count goes to the sink as
b"word=count", keyed by the word (with `--coalesce`, only the last of each word per checkpoint).
"""
import wallaroo

WORDS = [f"w{i:02d}" for i in range(40)]


def application_setup(args):
    in_topic, in_brokers, in_log = wallaroo.kafka_parse_source_options(args)
    out_topic, out_brokers, out_log, out_ms, out_max = wallaroo.kafka_parse_sink_options(args)
    ab = wallaroo.ApplicationBuilder("wordcount")
    ab.new_pipeline("count words", wallaroo.KafkaSourceConfig(in_topic, in_brokers, in_log, decode))
    ab.to(skip_comments)
    ab.to(check_poison)
    ab.to(split)
    ab.to_state_partition(count_word, WordCounts, "word counts", WordPartitioner(), WORDS)
    ab.to_sink(wallaroo.KafkaSinkConfig(out_topic, out_brokers, out_log, out_ms, out_max, encode,
                                        coalesce="--coalesce" in args))
    return ab.build()


@wallaroo.decoder(header_length=4, length_fmt=">I")
def decode(data):
    return data.decode("utf-8")


@wallaroo.computation(name="skip comments")
def skip_comments(line):
    return None if line.startswith("#") else line


@wallaroo.computation(name="check poison")
def check_poison(line):
    if "POISON" in line:
        raise ValueError("poison record")
    return line


@wallaroo.computation_multi(name="split into words")
def split(line):
    return line.split()


class WordPartitioner:
    def partition(self, word):
        return word


class WordCounts:
    def __init__(self):
        self.counts = {}


@wallaroo.state_computation(name="count word")
def count_word(word, state):
    state.counts[word] = state.counts.get(word, 0) + 1
    return (word, state.counts[word]), True


@wallaroo.encoder
def encode(pair):
    word, count = pair
    return f"{word}={count}".encode(), word
