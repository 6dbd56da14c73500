"""One semantics for the Kafka worker and the local runner, and records that outlive a change of the
application: repartitioned records name their state step, so they reach it after a pipeline is
inserted in front, and go to the dead letters (with why) when the step is gone."""
import time

import pytest
from confluent_kafka import Producer

from conftest import create_topic, read_topic, wait_for
from wallaroo.runtime import topics
from wallaroo.runtime.serde import Serde
from wallaroo.runtime.task import Task
from wallaroo.testing import Checkpoint, LocalCollector, LocalMessage, LocalResult, load_application, run_local

import deferred_count
import evolving
import window
import wordcount

FAST = ["--checkpoint-interval-ms", "200", "--session-timeout-ms", "3000", "--transaction-timeout-ms", "5000"]


def routed_by(app_args, lines, partitions):
    """The repartition records the application as built from `app_args` produces for `lines`,
    made by the runtime's own task (what a worker of that version left in the topic)."""
    app, module = load_application(evolving, app_args)
    collector = LocalCollector(LocalResult())
    task = Task(app, "unused", Serde(module, app), partitions, collector)
    for i, line in enumerate(lines):
        task.process_source(LocalMessage(app.pipelines[0].source.topic, 0, i, None, line, None, 1_000 + i))
    return list(collector.queue)


def inject(bootstrap, app_id, records, partitions=2):
    """Write `records` to the state's repartition topic, created as the runtime creates it."""
    from confluent_kafka.admin import AdminClient
    admin = AdminClient({"bootstrap.servers": bootstrap})
    topics.ensure_topics(admin, topics.internal_topics(app_id, ["word counts"], partitions))
    topic = topics.repartition_topic(app_id, "word counts")
    p = Producer({"bootstrap.servers": bootstrap})
    for m in records:
        p.produce(topic, m.value(), m.key(), partition=m.partition(), headers=m.headers(),
                  timestamp=m.timestamp()[1])
    p.flush(30)


def deployment(kafka, topic_name):
    src, letters, sink, app_id = (topic_name("evo-in"), topic_name("evo-letters"), topic_name("evo-out"),
                                  topic_name("evo"))
    for t in (src, letters):
        create_topic(kafka, t, 2)
    args = ["--kafka_source_topic", src, "--kafka_sink_topic", sink, "--letters_topic", letters]
    return src, sink, app_id, args


@pytest.mark.kafka
def test_repartitioned_record_reaches_its_step_after_a_pipeline_is_inserted(kafka, topic_name, workers):
    src, sink, app_id, args = deployment(kafka, topic_name)
    records = routed_by(args + ["--variant", "v1"], [b"w01 w02", b"w01"], partitions=2)
    assert len(records) == 3
    inject(kafka, app_id, records)
    # v2 puts a pipeline in front whose state step has the position v1's step had.
    w = workers.start("evolving", src, sink, "w1", app_id, "--variant", "v2",
                      "--letters_topic", args[-1], *FAST)
    got = read_topic(kafka, sink, expect=3, timeout_s=90)
    assert sorted(m.value() for m in got) == [b"w01=1", b"w01=2", b"w02=1"]
    assert read_topic(kafka, topics.dead_letter_topic(app_id), idle_s=1, timeout_s=5) == []
    assert w.poll() is None


@pytest.mark.kafka
def test_record_for_a_removed_step_goes_to_dead_letters(kafka, topic_name, workers):
    src, sink, app_id, args = deployment(kafka, topic_name)
    records = routed_by(args + ["--variant", "v1"], [b"w03"], partitions=2)
    inject(kafka, app_id, records)
    # v3 still has the state "word counts" (so the topic is read), but its step has another name.
    w = workers.start("evolving", src, sink, "w1", app_id, "--variant", "v3", *FAST)
    dead = read_topic(kafka, topics.dead_letter_topic(app_id), expect=1, timeout_s=90)
    assert len(dead) == 1 and dead[0].value() == records[0].value()
    headers = dict(dead[0].headers())
    assert headers["step"] == b"route"
    assert b"'count word' of pipeline 'count words'" in headers["error"]
    assert b"does not have" in headers["error"]
    assert read_topic(kafka, sink, idle_s=1, timeout_s=5) == []
    assert w.poll() is None


H = window.HOUR_MS
H0 = 1_420_070_400_000 // H          # 2015-01-01 00:00 UTC, as an absolute hour


def at(hour, ms=0):
    return (H0 + hour) * H + ms


# Three phases: key b only in hour 0; key a through hour 23 (b's window must stay open); a at 24:00:05
# (b's window closes, by event time alone: b's partition gets no record after hour 0).
PHASES = [[(b"b", at(0, i * 1000)) for i in range(3)],
          [(b"a", at(hour)) for hour in range(1, 24)],
          [(b"a", at(24, 5))]]


def by_key(records):
    """{key: [(value, timestamp)]} in the order each key's reports were produced."""
    out = {}
    for value, ts in records:
        out.setdefault(value.split(b",")[0], []).append((value, ts))
    return out


@pytest.mark.kafka
def test_local_runner_and_kafka_worker_close_an_idle_window_alike(kafka, topic_name, workers):
    src, sink, app_id = topic_name("same-in"), topic_name("same-out"), topic_name("same")
    create_topic(kafka, src, 2)
    p = Producer({"bootstrap.servers": kafka})
    workers.start("window", src, sink, "w1", app_id, *FAST)
    seen = 0
    for phase in PHASES:             # a phase is consumed and checkpointed before the next one
        for value, ts in phase:
            p.produce(src, value, key=value, timestamp=ts)   # a key per source partition: in order
        p.flush(30)
        seen += len(phase)
        wait_for(lambda: len(read_topic(kafka, sink, idle_s=0.5, timeout_s=5)) >= seen, 60, "the phase's reports")
        time.sleep(1.0)              # several checkpoints: the phase's watermarks reached every partition
    on_kafka = by_key((m.value(), m.timestamp()[1]) for m in read_topic(kafka, sink, idle_s=1))

    args = ["--kafka_source_topic", src, "--kafka_sink_topic", sink]
    local = run_local(window, PHASES[0] + [Checkpoint()] + PHASES[1] + [Checkpoint()] + PHASES[2],
                      args=args, partitions=2, checkpoint_every=None)
    assert by_key((r.value, r.timestamp) for r in local.outputs) == on_kafka
    closed = [(v, ts) for v, ts in on_kafka[b"b"] if v.endswith(b",0")]
    assert closed == [(f"b,{H0 + 24},0".encode(), at(24, 5))]      # at the watermark, not before


def test_local_runner_moves_event_time_only_at_checkpoint_boundaries():
    """As on Kafka: a record's timestamp reaches the state partitions through the next checkpoint's
    watermark, so b's window closes at the first boundary after a's hour-24 record, not at the record."""
    args = ["--kafka_source_topic", "in", "--kafka_sink_topic", "out"]
    items = PHASES[0] + PHASES[1] + PHASES[2] + [(b"a", at(24, 6))]
    b_closed, a_24, a_25 = f"b,{H0 + 24},0".encode(), f"a,{H0 + 24},24".encode(), f"a,{H0 + 24},25".encode()
    at_end = run_local(window, items, args=args, checkpoint_every=None).values
    assert at_end[-3:] == [a_24, a_25, b_closed]          # one boundary: the end
    every_record = run_local(window, items, args=args, checkpoint_every=1).values
    assert every_record[-3:] == [a_24, b_closed, a_25]    # the boundary right after a's hour-24 record
    assert sorted(at_end) == sorted(every_record)


def test_local_runner_dead_letters_name_the_failing_step():
    args = ["--kafka_source_topic", "in", "--kafka_sink_topic", "out"]
    result = run_local(wordcount, [b"w01", b"POISON w01", b"\xff not utf-8", b"zzz"], args=args)
    assert result.values == [b"w01=1"]
    steps = {d.value: d.step for d in result.dead_letters}
    assert steps == {b"POISON w01": "check poison", b"\xff not utf-8": "decoder", b"zzz": "count word"}


def test_coalescing_sink_sends_the_last_output_of_each_key_per_checkpoint():
    items = [b"w01 w02 w01", b"w01", Checkpoint(), b"w02 w02", Checkpoint(), b"w03"]
    topics_ = ["--kafka_source_topic", "in", "--kafka_sink_topic", "out"]
    plain = run_local(wordcount, items, args=topics_, checkpoint_every=None)
    assert plain.values == [b"w01=1", b"w02=1", b"w01=2", b"w01=3", b"w02=2", b"w02=3", b"w03=1"]
    coalesced = run_local(wordcount, items, args=topics_ + ["--coalesce"], checkpoint_every=None)
    # the last of each word at each boundary (the end is one), in the order of those last outputs
    assert coalesced.values == [b"w02=1", b"w01=3", b"w02=3", b"w03=1"]
    assert [r.key for r in coalesced.outputs] == [b"w02", b"w01", b"w02", b"w03"]
    assert {k: v.counts for k, v in coalesced.states["word counts"].items()} == {"w01": {"w01": 3},
                                                                               "w02": {"w02": 3}, "w03": {"w03": 1}}
    # a boundary after every record: only the outputs of one record coalesce
    assert run_local(wordcount, items, args=topics_ + ["--coalesce"]).values == [
        b"w02=1", b"w01=2", b"w01=3", b"w02=3", b"w03=1"]


def test_deferred_outputs_are_rendered_once_per_object_at_the_checkpoint():
    """A wallaroo.Deferred into a coalescing sink: rendered at the checkpoint, once per state object,
    from the object as it then is; after a computation raised, from the object rebuilt as it was
    before that message (never the half-done change); into a plain sink, at once."""
    items = [b"apple", b"avocado", b"bean", b"boom", b"apricot", Checkpoint(), b"banana", b"cherry"]
    topics_ = ["--kafka_source_topic", "in", "--kafka_sink_topic", "out"]
    deferred_count.RENDERS.clear()
    coalesced = run_local(deferred_count, items, args=topics_ + ["--coalesce"], checkpoint_every=None)
    # boom took b's object (which bean's Deferred is of) to 2, then raised: dead-lettered, and the
    # object rebuilt at 1 is the one rendered; banana makes it 2
    assert coalesced.values == [b"b=1", b"a=3", b"b=2", b"c=1"]
    assert deferred_count.RENDERS == [("b", 1), ("a", 3), ("b", 2), ("c", 1)]     # one per object per checkpoint
    assert [d.step for d in coalesced.dead_letters] == ["count"]
    assert coalesced.states["letters"]["b"].count == 2
    deferred_count.RENDERS.clear()
    plain = run_local(deferred_count, items, args=topics_, checkpoint_every=None)
    assert plain.values == [b"a=1", b"a=2", b"b=1", b"a=3", b"b=2", b"c=1"]
    assert len(deferred_count.RENDERS) == 6
    # an output made at once replaces the object's pending Deferred, and a later Deferred follows it
    deferred_count.RENDERS.clear()
    mixed = run_local(deferred_count, [b"apple", b"ant!", Checkpoint(), b"bee", b"bus!", b"bat"],
                      args=topics_ + ["--coalesce"], checkpoint_every=None)
    assert mixed.values == [b"a=-2", b"b=-2", b"b=3"] and deferred_count.RENDERS == [("b", 3)]
