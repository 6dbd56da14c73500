"""Two state steps in a row, used by the engine tests of local state: each word's count (state
"word counts"), then how many words reached each count, by its last digit (state "tallies").

A word starting with "bad" makes the first state computation raise; one whose count reaches 3 while
it ends in "x" makes the second raise. Outputs: b"count:word=n" and b"tally:d=n"."""
import wallaroo

WORDS = [f"{stem}{i}" for stem in ("w", "badw", "x") for i in range(10)] + [f"w{i}x" for i in range(10)]
DIGITS = [str(i) for i in range(10)]


def application_setup(args):
    in_topic, in_brokers, in_log = wallaroo.kafka_parse_source_options(args)
    out_topic, out_brokers, out_log, out_ms, out_max = wallaroo.kafka_parse_sink_options(args)
    ab = wallaroo.ApplicationBuilder("chained")
    ab.new_pipeline("tally words", wallaroo.KafkaSourceConfig(in_topic, in_brokers, in_log, decode))
    ab.to(split)
    ab.to_state_partition(count_word, WordCounts, "word counts", ByWord(), WORDS)
    ab.to_state_partition(tally, Tallies, "tallies", ByLastDigit(), DIGITS)
    ab.to_sink(wallaroo.KafkaSinkConfig(out_topic, out_brokers, out_log, out_ms, out_max, encode))
    return ab.build()


@wallaroo.decoder(header_length=4, length_fmt=">I")
def decode(data):
    return data.decode("utf-8")


@wallaroo.computation_multi(name="split")
def split(line):
    return line.split()


class ByWord:
    def partition(self, word):
        return word


class ByLastDigit:
    def partition(self, counted):
        return str(counted[1] % 10)


class WordCounts:
    def __init__(self):
        self.counts = {}


class Tallies:
    def __init__(self):
        self.reached = {}


@wallaroo.state_computation(name="count word")
def count_word(word, state):
    state.counts[word] = state.counts.get(word, 0) + 1      # changed before it raises: must be undone
    if word.startswith("bad"):
        raise ValueError(f"bad word {word}")
    return [word, state.counts[word]], True


@wallaroo.state_computation(name="tally")
def tally(counted, state):
    word, n = counted
    state.reached[n] = state.reached.get(n, 0) + 1
    if n == 3 and word.endswith("x"):
        raise ValueError(f"{word} reached 3")
    return f"tally:{n % 10}={state.reached[n]} after {word}", True


@wallaroo.encoder
def encode(text):
    return text.encode()
