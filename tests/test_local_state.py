"""Local state (Task.local_state): a message for a state partition the worker owns is applied where
it is made instead of crossing the repartition topic. It must give what the trip through Kafka gives:
the same outputs, the same state, the same dead letters (the record the message would have been).
The real broker's side is in test_metrics.py (no state message crosses Kafka; the same leaderboards)."""
from hypothesis import given, settings, strategies as st

import chained
from wallaroo.runtime import topics
from wallaroo.runtime.serde import Serde
from wallaroo.testing import load_application, run_local

ARGS = ["--kafka_source_topic", "in", "--kafka_sink_topic", "out"]


def both(lines, partitions=4, checkpoint_every=1):
    return [run_local(chained, lines, args=ARGS, partitions=partitions, checkpoint_every=checkpoint_every,
                      local_state=local) for local in (False, True)]


def seen(result):
    states = {name: {key: (getattr(obj, "counts", None) or getattr(obj, "reached", None))
                     for key, obj in objects.items()} for name, objects in result.states.items()}
    # (dead letters in any order: a message applied in place fails before its source record is done)
    return ([(r.value, r.key) for r in result.outputs], states,
            sorted((d.topic, d.value, d.step, d.error) for d in result.dead_letters))


def test_a_raising_state_step_is_undone_and_its_message_dead_lettered_as_on_kafka():
    kafka, local = both([b"w1 badw1 w1", b"w3x w3x w3x w1"])
    assert seen(local) == seen(kafka)
    counts = local.states["word counts"]
    assert "badw1" not in counts or counts["badw1"].counts == {}    # the raise undid its change
    assert counts["w3x"].counts == {"w3x": 3}           # the first step kept its work ...
    assert local.states["tallies"]["3"].reached == {3: 1}   # w1's third; w3x's was undone when it raised
    letters = {d.step: d for d in local.dead_letters}
    assert set(letters) == {"count word", "tally"}
    assert letters["count word"].topic == topics.repartition_topic("chained", "word counts")
    assert letters["tally"].topic == topics.repartition_topic("chained", "tallies")
    # the message, serialized as it would have crossed Kafka
    app, module = load_application(chained, ARGS)
    serde = Serde(module, app)
    assert serde.loads(letters["count word"].value) == "badw1"
    assert serde.loads(letters["tally"].value) == ["w3x", 3]


words = st.sampled_from(chained.WORDS + ["nope"])       # "nope": outside the partition keys


@settings(max_examples=150, deadline=None)
@given(st.lists(st.lists(words, max_size=6).map(lambda ws: " ".join(ws).encode()), max_size=25),
       st.sampled_from([1, 2, 4]), st.sampled_from([1, 3, None]))
def test_local_state_gives_what_the_trip_through_kafka_gives(lines, partitions, checkpoint_every):
    kafka, local = both(lines, partitions, checkpoint_every)
    assert seen(local) == seen(kafka)
    assert counted(local) == counted(kafka)


def counted(result):
    return [(s["name"], s["messages_in"], s["messages_out"]) for s in result.metrics["pipelines"][0]["steps"]]


def test_star_leaders_leaderboards_are_the_same_with_local_state():
    """Coalesced, deferred leaderboards (rendered at the checkpoint from the object that made them)."""
    import star_leaders
    from archive_streamer.synthetic import generate_events
    lines = [(e.line, e.ts_ms) for e in generate_events(seed=3, start_hour="2018-06-01-0", hours=2,
                                                        events_per_hour=3000, long_tail=2000)]
    args = ["--kafka_source_topic", "gharchive", "--kafka_sink_topic", "leaderboard"]
    kafka, local = [run_local(star_leaders, lines, args=args, checkpoint_every=250, local_state=flag)
                    for flag in (False, True)]
    assert len(kafka.outputs) > 20 and not kafka.dead_letters
    assert [(r.key, r.value) for r in local.outputs] == [(r.key, r.value) for r in kafka.outputs]
    assert counted(local) == counted(kafka)
