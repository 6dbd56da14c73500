"""The 0.4 API surface and the in-memory runner (no Kafka here)."""

import pytest

import wallaroo
import window
import wordcount
from wallaroo.runtime.cli import strip_wallaroo_flags
from wallaroo.runtime.routing import KeyRouter, key_bytes, key_from_bytes
from wallaroo.testing import Watermark, run_local

ARGS = ["--kafka_source_topic", "in", "--kafka_source_brokers", "127.0.0.1:9092",
        "--kafka_sink_topic", "out", "--kafka_sink_brokers", "127.0.0.1:9092"]


def test_decorated_functions_stay_plain_functions():
    assert wordcount.skip_comments("#x") is None
    assert wordcount.split("a b") == ["a", "b"]
    st = wordcount.WordCounts()
    assert wordcount.count_word("w01", st) == (("w01", 1), True)
    assert wordcount.encode(("w01", 3)) == (b"w01=3", "w01")
    assert wordcount.decode(b"hi") == "hi"
    assert wordcount.skip_comments.name == "skip comments"
    assert wordcount.decode.header_length == 4 and wordcount.decode.payload_length(b"\0\0\0\x07") == 7


def test_parse_options_read_04_flags():
    args = ARGS + ["--kafka_sink_max_produce_buffer_ms", "5", "--kafka_sink_max_message_size", "2000", "--x"]
    assert wallaroo.kafka_parse_source_options(args) == ("in", [("127.0.0.1", "9092")], "Warn")
    assert wallaroo.kafka_parse_sink_options(args) == ("out", [("127.0.0.1", "9092")], "Warn", 5, 2000)
    cfg = wallaroo.KafkaSourceConfig("t", [("h1", "1"), ("h2", "2")])
    assert cfg.brokers == "h1:1,h2:2"


def _builder():
    src = wallaroo.KafkaSourceConfig("in", "b:1", "Warn", wordcount.decode)
    sink = wallaroo.KafkaSinkConfig("out", "b:1", "Warn", 0, 1000, wordcount.encode)
    return wallaroo.ApplicationBuilder("bad"), src, sink


def test_build_rejects_an_application_without_any_sink():
    """Wallaroo 0.5's rule: a pipeline may end with done(), but the application needs a sink somewhere."""
    ab, src, sink = _builder()
    ab.new_pipeline("lonely", src).to(wordcount.skip_comments).done()
    with pytest.raises(wallaroo.ApplicationError, match="application 'bad' has no sink"):
        ab.build()
    ab.new_pipeline("with a sink", wallaroo.KafkaSourceConfig("in2", "b:1", "Warn", wordcount.decode)).to_sink(sink)
    app = ab.build()
    assert [p.sinks for p in app.pipelines][0] == [] and app.pipelines[1].sink.topic == "out"


def test_build_rejects_pipeline_without_source():
    ab, _, sink = _builder()
    ab.new_pipeline("nowhere", None).to_sink(sink)
    with pytest.raises(wallaroo.ApplicationError, match="pipeline 'nowhere': has no source"):
        ab.build()


def test_build_rejects_undecorated_step():
    ab, src, sink = _builder()
    ab.new_pipeline("p", src).to(wordcount.skip_comments).to(lambda x: x).to_sink(sink)
    with pytest.raises(wallaroo.ApplicationError, match=r"pipeline 'p', step 2 .*not decorated"):
        ab.build()


def test_build_rejects_state_computation_given_to_to():
    ab, src, sink = _builder()
    ab.new_pipeline("p", src).to(wordcount.count_word).to_sink(sink)
    with pytest.raises(wallaroo.ApplicationError, match=r"pipeline 'p', step 1 \('count word'\).*to_stateful"):
        ab.build()


def test_build_rejects_steps_before_a_pipeline():
    ab, src, sink = _builder()
    ab.to(wordcount.skip_comments)
    ab.new_pipeline("p", src).to_sink(sink)
    with pytest.raises(wallaroo.ApplicationError, match="outside a pipeline"):
        ab.build()


def test_named_state_is_shared_by_pipelines():
    ab, src, sink = _builder()
    ab.new_pipeline("one", src).to_state_partition(
        wordcount.count_word, wordcount.WordCounts, "counts", wordcount.WordPartitioner(), ["a", "b"]).to_sink(sink)
    ab.new_pipeline("two", wallaroo.KafkaSourceConfig("in2", "b:1", "Warn", wordcount.decode)).to_state_partition(
        wordcount.count_word, wordcount.WordCounts, "counts", wordcount.WordPartitioner(), ["a", "b"]).to_sink(sink)
    app = ab.build()
    assert app.state_names() == ["counts"]
    out = run_local(app, {"in": [b"a", b"b"], "in2": [b"a"]})
    assert out.values == [b"a=1", b"b=1", b"a=2"]


def test_local_runner_semantics():
    lines = [b"w01 w02", b"# a comment w01", b"w01", b"POISON w01", b"w03 w01"]
    result = run_local(wordcount, lines, args=ARGS)
    assert [(r.value, r.key) for r in result.outputs] == [
        (b"w01=1", b"w01"), (b"w02=1", b"w02"), (b"w01=2", b"w01"), (b"w03=1", b"w03"), (b"w01=3", b"w01")]
    assert len(result.dead_letters) == 1 and "poison" in result.dead_letters[0].error
    counts = {}
    for st in result.states["word counts"].values():
        counts.update(st.counts)
    assert counts == {"w01": 3, "w02": 1, "w03": 1}


def test_local_runner_rejects_key_outside_partition_keys():
    result = run_local(wordcount, [b"w01 nope"], args=ARGS)
    assert result.values == [b"w01=1"]
    assert len(result.dead_letters) == 1 and "not in partition_keys" in result.dead_letters[0].error


def test_local_runner_messages_cross_state_step_serialized():
    class Unpicklable:
        def __reduce__(self):
            raise TypeError("cannot pickle me")

    @wallaroo.computation(name="wrap")
    def wrap(x):
        return Unpicklable()

    ab, src, sink = _builder()
    ab.new_pipeline("p", src).to(wrap).to_stateful(wordcount.count_word, wordcount.WordCounts, "s").to_sink(sink)
    result = run_local(ab.build(), [b"x"])
    assert result.values == [] and "cannot pickle me" in result.dead_letters[0].error


def test_event_time_hook_closes_idle_window_in_local_runner():
    h = window.HOUR_MS
    items = [(b"b", 0)] * 3 + [(b"a", i * h) for i in range(1, 24)] + [Watermark(24 * h)]
    result = run_local(window, items, args=ARGS)
    b_reports = [v for v in result.values if v.startswith(b"b,")]
    assert b_reports == [b"b,0,1", b"b,0,2", b"b,0,3", b"b,24,0"]


def test_key_bytes_round_trip_and_router_is_stable():
    for key in ["repo/x", 7, b"\x00raw", ("tuple", 1)]:
        assert key_from_bytes(key_bytes(key)) == key
    router = KeyRouter(None, 8)
    assert router.partition_for(key_bytes("torvalds/linux")) == router.partition_for(key_bytes("torvalds/linux"))
    listed = KeyRouter(["a", "b", "c"], 2)
    assert [listed.partition_for(key_bytes(k)) for k in "abc"] == [0, 1, 0]
    with pytest.raises(KeyError):
        listed.partition_for(key_bytes("z"))


def test_wallaroo_cluster_flags_are_accepted_and_dropped():
    argv = ["--application-module", "m", "--cluster-initializer", "--control", "127.0.0.1:6000",
            "--ponythreads=1", "--ponynoblock", "--name", "w1", "--data", "127.0.0.1:6001"]
    rest, dropped = strip_wallaroo_flags(argv)
    assert rest == ["--application-module", "m", "--name", "w1"]
    assert dropped == ["--cluster-initializer", "--control", "--ponythreads", "--ponynoblock", "--data"]


def test_build_rejects_undecorated_decoder_and_encoder():
    ab = wallaroo.ApplicationBuilder("bad")
    ab.new_pipeline("p", wallaroo.KafkaSourceConfig("in", "b:1", "Warn", lambda b: b))
    ab.to_sink(wallaroo.KafkaSinkConfig("out", "b:1", "Warn", 0, 1000, lambda x: x))
    with pytest.raises(wallaroo.ApplicationError) as e:
        ab.build()
    assert "pipeline 'p': source decoder" in str(e.value) and "pipeline 'p': sink encoder" in str(e.value)


def test_decoder_works_bare_too():
    @wallaroo.decoder
    def bare(data):
        return data.upper()
    assert bare(b"x") == b"X" and bare.header_length == 4
