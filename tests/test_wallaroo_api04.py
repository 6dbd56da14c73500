"""The rest of the 0.4 API (object forms, hand-written classes, to_state_partition_u64, TCP configs and
parsers) and 0.5's additions (sink-less pipelines, to_sinks, (bytes, key, partition) encoders), in memory."""
import struct

import pytest

import wallaroo
from examples.wallaroo import market_spread
from wallaroo.kafka import librdkafka_log_settings
from wallaroo.runtime import clients, edges
from wallaroo.runtime.cli import strip_wallaroo_flags
from wallaroo.runtime.steps import encode
from wallaroo.testing import run_local


# --- decorated steps, with 0.4's object forms ---------------------------------------------------
@wallaroo.decoder(header_length=2, length_fmt=">H")
def decode_text(data):
    return data.decode()


@wallaroo.computation(name="shout")
def shout(text):
    return text.upper()


@wallaroo.computation_multi(name="split")
def split(text):
    return text.split()


class Tally:
    def __init__(self):
        self.seen = {}


@wallaroo.state_computation(name="tally")
def tally(word, state):
    state.seen[word] = state.seen.get(word, 0) + 1
    return (word, state.seen[word]), True


@wallaroo.state_computation_multi(name="tally twice")
def tally_twice(word, state):
    first, _ = tally(word, state)
    second, _ = tally(word, state)
    return [first, second], True


@wallaroo.partition
def first_letter(word):
    return word[0]


@wallaroo.encoder
def encode_pair(pair):
    return f"{pair[0]}={pair[1]}", pair[0]


def test_every_object_form_of_a_decorated_step():
    assert shout.compute("a") == "A" == shout("a")
    assert shout.name() == "shout" == shout.name
    assert split.compute_multi("a b") == ["a", "b"] == split("a b")
    assert not hasattr(split, "compute") and not hasattr(shout, "compute_multi")   # 0.4 told multi by this
    state = Tally()
    assert tally.compute("w", state) == (("w", 1), True)
    assert tally_twice.compute_multi("w", state) == ([("w", 2), ("w", 3)], True)
    assert tally("w", state) == (("w", 4), True)
    assert first_letter.partition("word") == "w" == first_letter("word")
    assert decode_text.header_length() == 2 and decode_text.header_length == 2
    assert decode_text.header_length + 1 == 3        # still an int where code used it as one
    assert decode_text.payload_length(b"\x01\x02") == 258
    assert decode_text.decode(b"hi") == "hi" == decode_text(b"hi")
    assert encode_pair.encode(("a", 1)) == ("a=1", "a") == encode_pair(("a", 1))


# --- classes written by hand for 0.4 ------------------------------------------------------------
class Shout:
    """0.4's documented Computation: a class with name() and compute(data), given to `to` as a class."""
    def name(self):
        return "shout by hand"

    def compute(self, data):
        return data.upper()


class Split:
    def name(self):
        return "split by hand"

    def compute_multi(self, data):
        return data.split()


class CountWord:
    def name(self):
        return "count by hand"

    def compute(self, word, state):
        state.seen[word] = state.seen.get(word, 0) + 1
        return (word, state.seen[word]), True


class FirstLetter:
    def partition(self, data):
        return data[0]


class LengthFramed:
    def header_length(self):
        return 4

    def payload_length(self, bs):
        return struct.unpack(">I", bs)[0]

    def decode(self, bs):
        return bs.decode()


class PairEncoder:
    def encode(self, data):
        return f"{data[0]}={data[1]}".encode(), data[0].encode()


def test_hand_written_04_classes_build_and_run_like_decorated_steps():
    def app(decoder, steps, counter, partitioner, encoder):
        ab = wallaroo.ApplicationBuilder("by hand")
        ab.new_pipeline("words", wallaroo.KafkaSourceConfig("in", "b:1", "Warn", decoder))
        for step in steps:
            ab.to(step)
        ab.to_state_partition(counter, Tally, "tally", partitioner, list("ABC"))
        ab.to_sink(wallaroo.KafkaSinkConfig("out", "b:1", "Warn", 0, 1000, encoder))
        return ab.build()
    lines = [b"a b", b"b c a", b"a"]
    by_hand = run_local(app(LengthFramed(), [Shout, Split()], CountWord(), FirstLetter(), PairEncoder()), lines)
    decorated = run_local(app(decode_text, [shout, split], tally, first_letter, encode_pair), lines)
    expected = [b"A=1", b"B=1", b"B=2", b"C=1", b"A=2", b"A=3"]
    assert by_hand.values == decorated.values == expected
    assert [r.key for r in by_hand.outputs] == [v[:1] for v in expected]
    built = app(LengthFramed(), [Shout, Split()], CountWord(), FirstLetter(), PairEncoder())
    assert [s.name for s in built.pipelines[0].steps] == ["shout by hand", "split by hand", "count by hand"]
    assert built.pipelines[0].source.decoder.header_length() == 4


def test_hand_written_classes_that_do_not_fit_are_rejected_by_name():
    class NoCompute:
        def name(self):
            return "nothing"

    ab = wallaroo.ApplicationBuilder("bad")
    ab.new_pipeline("p", wallaroo.KafkaSourceConfig("in", "b:1", "Warn", LengthFramed()))
    ab.to(NoCompute()).to(CountWord()).to_sink(wallaroo.KafkaSinkConfig("out", "b:1", "Warn", 0, 1000, object()))
    with pytest.raises(wallaroo.ApplicationError) as e:
        ab.build()
    message = str(e.value)
    assert "step 1" in message and "no compute(data)" in message
    assert "step 2" in message and "does not take (data)" in message and "to_stateful" in message
    assert "sink encoder" in message and "no encode(data)" in message


# --- 0.5: pipelines without a sink, to_sinks, (bytes, key, partition) -------------------------
def test_market_spread_pipeline_without_sink_updates_the_state_the_other_reads():
    quote, order = market_spread.market_data_message, market_spread.order_message
    inputs = {"quotes": [quote("AXQ", 10.00, 10.01), quote("BXQ", 10.00, 11.00)],
              "orders": [order(1, 7, "1", "AXQ", 100, 10.0), order(2, 7, "2", "BXQ", 50, 10.5),
                         order(1, 7, "3", "CXQ", 10, 1.0)]}
    result = run_local(market_spread, inputs, args=["--kafka_source_topic", "orders", "--market_data_topic",
                                                    "quotes", "--kafka_sink_topic", "reports"])
    # AXQ's spread is narrow: its order stands; BXQ's is wide and CXQ has no quote: both withdrawn
    assert [v.split(b",")[2] for v in result.values] == [b" order_id=2", b" order_id=3"]
    assert b"bid=10.00, offer=11.00" in result.values[0] and b"bid=0.00, offer=0.00" in result.values[1]
    states = result.states["symbol-data"]
    assert {key: s.quotes for key, s in states.items()} == {market_spread.symbol_key("AXQ"): 1,
                                                            market_spread.symbol_key("BXQ"): 1}
    assert not result.dead_letters


def test_done_after_to_sink_changes_nothing_and_an_unended_pipeline_is_rejected():
    source = wallaroo.KafkaSourceConfig("in", "b:1", "Warn", decode_text)
    sink = wallaroo.KafkaSinkConfig("out", "b:1", "Warn", 0, 1000, None)
    ab = wallaroo.ApplicationBuilder("ok")
    ab.new_pipeline("one", source).to(shout).to_sink(sink).done()
    assert ab.build().pipelines[0].sinks[0].topic == "out"
    ab.new_pipeline("dangling", source).to(shout)
    with pytest.raises(wallaroo.ApplicationError, match="pipeline 'dangling': is not ended"):
        ab.build()


@wallaroo.encoder
def to_partition(word):
    return word, None, len(word) - 1        # 0.5's (value, key, partition)


def test_to_sinks_writes_every_output_to_each_sink_with_its_encoder():
    source = wallaroo.KafkaSourceConfig("in", "b:1", "Warn", decode_text)
    ab = wallaroo.ApplicationBuilder("fan out")
    ab.new_pipeline("p", source).to(split).to_sinks([
        wallaroo.KafkaSinkConfig("by-length", "b:1", "Warn", 0, 1000, to_partition),
        wallaroo.KafkaSinkConfig("plain", "b:1", "Warn", 0, 1000, None)])
    result = run_local(ab.build(), [b"a bb", b"ccc"])
    assert [(r.topic, r.value, r.partition) for r in result.outputs] == [
        ("by-length", b"a", 0), ("plain", b"a", None), ("by-length", b"bb", 1), ("plain", b"bb", None),
        ("by-length", b"ccc", 2), ("plain", b"ccc", None)]
    with pytest.raises(wallaroo.ApplicationError, match="to_sinks got no sink"):
        wallaroo.ApplicationBuilder("none").new_pipeline("p", source).to_sinks([]).build()


def test_an_encoder_partition_a_sink_cannot_take_is_refused_before_kafka_sees_it():
    sink = wallaroo.KafkaSinkConfig("t", "b:1", "Warn", 0, 1000, to_partition)
    sink.partitions = 2                     # what the worker learns from the broker
    assert encode(sink, "ab") == (b"ab", None, 1)
    with pytest.raises(ValueError, match="partition 2, but sink topic t has 2 partitions"):
        encode(sink, "abc")
    with pytest.raises(TypeError, match="partition -1"):
        encode(sink, "")
    with pytest.raises(TypeError, match="tuple of 4"):
        encode(wallaroo.KafkaSinkConfig("t", "b:1", "Warn", 0, 1000, wallaroo.encoder(lambda x: (x, 1, 2, 3))), b"x")


# --- to_state_partition_u64 ---------------------------------------------------------------------
@wallaroo.partition
def by_number(text):
    return int(text) if text.isdigit() else text


def test_to_state_partition_u64_takes_integer_keys_only():
    source = wallaroo.KafkaSourceConfig("in", "b:1", "Warn", decode_text)
    sink = wallaroo.KafkaSinkConfig("out", "b:1", "Warn", 0, 1000, encode_pair)

    def app(keys):
        ab = wallaroo.ApplicationBuilder("u64")
        ab.new_pipeline("p", source).to_state_partition_u64(tally, Tally, "numbers", by_number, keys).to_sink(sink)
        return ab.build()
    result = run_local(app([0, 7, 2 ** 64 - 1]), [b"7", b"7", str(2 ** 64 - 1).encode(), b"x", b"8"])
    assert result.values == [b"7=1", b"7=2", b"18446744073709551615=1"]
    assert sorted(result.states["numbers"]) == [7, 2 ** 64 - 1]
    errors = sorted(d.error for d in result.dead_letters)
    assert "not an integer in 0..2**64-1" in errors[1] and "'x'" in errors[1]
    assert "not in the step's partition_keys" in errors[0]
    for bad in (["a"], [-1], [2 ** 64], [True]):
        with pytest.raises(wallaroo.ApplicationError, match="integer keys in 0..2"):
            app(bad)


# --- TCP configs and 0.4's address parsers -------------------------------------------------------
def test_tcp_parse_addrs_read_in_and_out_as_04_did():
    args = ["machida", "--in", "127.0.0.1:7010,127.0.0.1:7011", "-o", "[::1]:7002", "--other", "x"]
    assert wallaroo.tcp_parse_input_addrs(args) == [("127.0.0.1", "7010"), ("127.0.0.1", "7011")]
    assert wallaroo.tcp_parse_output_addrs(args) == [("::1", "7002")]
    with pytest.raises(wallaroo.ApplicationError, match="needs --out HOST:PORT"):
        wallaroo.tcp_parse_output_addrs(["--in", "h:1"])
    with pytest.raises(wallaroo.ApplicationError, match="'nowhere' is not HOST:PORT"):
        wallaroo.tcp_parse_input_addrs(["--in", "nowhere"])


def test_machida_passes_in_and_out_to_the_application():
    rest, dropped = strip_wallaroo_flags(["--application-module", "m", "--in", "h:1", "--out=h:2", "--control", "c:3"])
    assert rest == ["--application-module", "m", "--in", "h:1", "--out=h:2"] and dropped == ["--control"]


def test_tcp_configs_are_checked_at_build():
    @wallaroo.decoder(header_length=2, length_fmt=">I")
    def mismatched(data):
        return data

    ab = wallaroo.ApplicationBuilder("tcp")
    ab.new_pipeline("a", wallaroo.TCPSourceConfig("127.0.0.1", "http", decode_text)).to_sink(
        wallaroo.TCPSinkConfig("127.0.0.1", 70000, None))
    ab.new_pipeline("b", wallaroo.TCPSourceConfig("127.0.0.1", 1, mismatched)).done()
    ab.new_pipeline("c", wallaroo.TCPSourceConfig("127.0.0.1", 2, None)).done()
    ab.new_pipeline("c", wallaroo.TCPSourceConfig("127.0.0.1", 3, decode_text)).done()
    with pytest.raises(wallaroo.ApplicationError) as e:
        ab.build()
    message = str(e.value)
    assert "pipeline 'a': TCP source port 'http' is not a number" in message
    assert "pipeline 'a': TCP sink port 70000 is outside 0..65535" in message
    assert "pipeline 'b': TCP source decoder length_fmt '>I' reads 4 bytes but header_length is 2" in message
    assert "pipeline 'c': a TCP source needs a decoder" in message
    assert "another pipeline has the same name" in message


# --- what the Kafka configs ask of the clients ---------------------------------------------------
def _kafka_app(source_level, sink_level, buffer_ms):
    ab = wallaroo.ApplicationBuilder("levels")
    ab.new_pipeline("p", wallaroo.KafkaSourceConfig("in", "h:1", source_level, decode_text)).to_sink(
        wallaroo.KafkaSinkConfig("out", "h:1", sink_level, buffer_ms, 1000, None))
    return ab.build()


def test_log_levels_and_max_produce_buffer_ms_reach_the_clients():
    app = _kafka_app("Error", "fine", 7)
    assert edges.consumer_log_settings(app) == {"log_level": 3}
    assert edges.producer_log_settings(app) == {"log_level": 7, "debug": "conf,generic,broker,topic"}
    assert librdkafka_log_settings(["Warn", "Info"]) == {"log_level": 6}
    producer = clients.producer_config("h:1", "t", 1000, edges.producer_linger_ms(app),
                                       edges.producer_log_settings(app))
    assert producer["linger.ms"] == 7 and producer["log_level"] == 7
    # 0.4's default 0 ("no batching") keeps the engine's linger: outputs are visible at commit anyway
    assert edges.producer_linger_ms(_kafka_app("Warn", "Warn", 0)) == clients.DEFAULT_LINGER_MS
    with pytest.raises(wallaroo.ApplicationError,
                       match="source log_level 'Verbose' is not one of Fine, Info, Warn, Error"):
        _kafka_app("Verbose", "Warn", 0)
