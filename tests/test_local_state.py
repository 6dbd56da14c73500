"""Local state (Task.local_state): a message for a state partition the worker owns is applied where
it is made instead of crossing the repartition topic. It must give what the trip through Kafka gives:
the same outputs, the same state, the same dead letters (the record the message would have been).
The real broker's side is in test_metrics.py (no state message crosses Kafka; the same leaderboards)."""
from hypothesis import given, settings, strategies as st

import chained
import window
from wallaroo.runtime import topics
from wallaroo.runtime.event_time import decode_watermark
from wallaroo.runtime.serde import Serde
from wallaroo.runtime.task import Task
from wallaroo.testing import Checkpoint, LocalCollector, LocalMessage, LocalResult, load_application, run_local

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


HOUR_MS = 3_600_000
H0 = 1_420_070_400_000 // HOUR_MS       # 2015-01-01 00:00 UTC, as an absolute hour
WINDOW_ARGS = ["--kafka_source_topic", "in", "--kafka_sink_topic", "out"]


def test_watermarks_applied_in_place_close_windows_as_those_through_kafka():
    """An idle key's window closes on event time alone, at the same watermark, whether the watermark
    reaches its partition in place (local state: the runner has read every partition to its end) or
    as a record through the repartition topic."""
    items = ([(b"b", (H0 + 0) * HOUR_MS + i) for i in range(3)] + [Checkpoint()]
             + [(b"a", (H0 + h) * HOUR_MS) for h in range(1, 24)] + [Checkpoint()]
             + [(b"a", (H0 + 24) * HOUR_MS + 5)])
    results = [run_local(window, items, args=WINDOW_ARGS, partitions=2, checkpoint_every=None, local_state=local)
               for local in (False, True)]
    outputs = [[(r.value, r.timestamp) for r in result.outputs] for result in results]
    assert outputs[0] == outputs[1]
    assert (f"b,{H0 + 24},0".encode(), (H0 + 24) * HOUR_MS + 5) in outputs[1]


def test_a_watermark_goes_in_place_only_to_partitions_read_to_their_end():
    """Partition 0 was read to its end (nothing this worker sent it earlier can still be in the
    topic, behind the watermark): it reaches the event time at once. Partition 1 was not: it gets a
    watermark record, after whatever the topic still holds for it."""
    app, module = load_application(window, WINDOW_ARGS)
    collector = LocalCollector(LocalResult())
    task = Task(app, "wm", Serde(module, app), 2, collector, local_state=True)
    store = next(iter(task.stores.values()))
    for p in (0, 1):
        store.adopt(p, {})
    ts = (H0 + 3) * HOUR_MS
    task.process_source(LocalMessage("in", 0, 0, None, b"a", None, ts))
    wm = task.emit_watermarks(local={(task.state_topic["windows"], 0)})
    assert wm == ts
    assert store.event_time == {0: ts}
    assert [(m.partition(), decode_watermark(m.value())) for m in collector.queue] == [(1, ts)]
