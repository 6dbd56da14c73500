"""Words counted per first letter, the count emitted as a wallaroo.Deferred (engine tests): rendered
from the state object when produced.  Into a coalescing sink (`--coalesce`, else a plain one).  A word
"boom" adds to the count, then raises: its half-done change must never be rendered.  A word ending
in "!" emits its count (negated) at once, not deferred."""
import wallaroo

RENDERS = []        # (letter, count) of every render, for the tests to count


def application_setup(args):
    in_topic, in_brokers, in_log = wallaroo.kafka_parse_source_options(args)
    out_topic, out_brokers, out_log, out_ms, out_max = wallaroo.kafka_parse_sink_options(args)
    ab = wallaroo.ApplicationBuilder("deferred count")
    ab.new_pipeline("count letters", wallaroo.KafkaSourceConfig(in_topic, in_brokers, in_log, decode))
    ab.to_state_partition(count, Letters, "letters", FirstLetter(), list("abcdefghijklmnopqrstuvwxyz"))
    ab.to_sink(wallaroo.KafkaSinkConfig(out_topic, out_brokers, out_log, out_ms, out_max, encode,
                                        coalesce="--coalesce" in args))
    return ab.build()


@wallaroo.decoder(header_length=4, length_fmt=">I")
def decode(data):
    return data.decode("utf-8")


class FirstLetter:
    def partition(self, word):
        return word[0]


class Letters:
    def __init__(self):
        self.letter, self.count = None, 0


def render(state):
    RENDERS.append((state.letter, state.count))
    return state.letter, state.count


@wallaroo.state_computation(name="count")
def count(word, state):
    state.letter = word[0]
    state.count += 1
    if word == "boom":
        raise ValueError("boom")
    if word.endswith("!"):           # an output made at once: it replaces the object's pending Deferred
        return (state.letter, -state.count), True
    return wallaroo.Deferred(render), True


@wallaroo.encoder
def encode(pair):
    letter, n = pair
    return f"{letter}={n}".encode(), letter
