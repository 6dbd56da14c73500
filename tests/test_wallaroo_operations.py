"""`machida status` and `machida shrink` against running wordcount workers on the real broker."""
import json
import subprocess
import sys
from collections import Counter

import pytest
from confluent_kafka.admin import AdminClient

import wordcount
from conftest import APPS, create_topic, group_assignments, read_topic, wait_for
from test_wallaroo_kafka import FAST, assert_exactly_once, expected_counts, held_back_feeder, produce, word_lines
from wallaroo.runtime import operations, topics

pytestmark = pytest.mark.kafka


def machida(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "wallaroo.runtime.cli", *args], cwd=str(APPS),
                          capture_output=True, text=True, timeout=timeout)


def status_json(bootstrap, app_id):
    done = machida("status", "--json", "--application-id", app_id, "--bootstrap-servers", bootstrap)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_status_agrees_with_the_group_and_the_topics(kafka, topic_name, workers):
    src, sink, app_id = topic_name("st-in"), topic_name("st-out"), topic_name("st")
    create_topic(kafka, src, 4)
    lines = word_lines(2000, seed=11)
    produce(kafka, src, lines)
    # --no-local-state: every word crosses the repartition topic (its ends are checked below), also
    # those for a partition of the worker that read them
    workers.start("wordcount", src, sink, "w1", app_id, *FAST, "--no-local-state")
    workers.start("wordcount", src, sink, "w2", app_id, *FAST, "--no-local-state")
    read_topic(kafka, sink, expect=sum(expected_counts(lines).values()), timeout_s=120)
    repartition = topics.repartition_topic(app_id, "word counts")
    last_ts = 1_420_000_000_000 + (len(lines) - 1) * 1000

    def caught_up():     # the last watermarks are consumed and committed a checkpoint or two later
        rows = status_json(kafka, app_id)["partitions"]
        return (len(rows) == 8 and all(r["event_time_ms"] == last_ts for r in rows if r["topic"] == repartition)
                and all(r["lag"] == 0 for r in rows))
    wait_for(caught_up, 60, "every state partition's event time to reach the last line's, and no lag")

    def settled():
        a = group_assignments(kafka, app_id)
        return a if len(a) == 2 and all(a.values()) else None
    # Compare once the group is stable: the same assignment before and after reading the status.
    for _ in range(10):
        before = wait_for(settled, 60, "both workers to receive partitions")
        status = status_json(kafka, app_id)
        if group_assignments(kafka, app_id) == before:
            break
    else:
        pytest.fail("the group kept rebalancing")

    admin = AdminClient({"bootstrap.servers": kafka})
    group = admin.describe_consumer_groups([app_id])[app_id].result(20)
    described = {m.client_id: (m.member_id, m.host, sorted((tp.topic, tp.partition)
                                                           for tp in m.assignment.topic_partitions))
                 for m in group.members}
    assert {w["client_id"]: (w["member_id"], w["host"], sorted((p["topic"], p["partition"]) for p in w["partitions"]))
            for w in status["workers"]} == described
    assert sorted(w["worker"] for w in status["workers"]) == ["w1", "w2"]
    assert status["group_state"] == "stable"

    rows = {(r["topic"], r["partition"]): r for r in status["partitions"]}
    assert set(rows) == {(t, p) for t in (src, repartition) for p in range(4)}
    owner = {tp: worker_name for worker_name, tps in ((operations.worker_name(app_id, c), v[2])
                                                      for c, v in described.items()) for tp in tps}
    for key, row in rows.items():
        assert row["worker"] == owner[key]
        assert row["kind"] == ("repartition" if key[0] == repartition else "source")
    # Every line was consumed and committed: no lag, the source partitions' ends are Kafka's. The
    # repartition topic ends in commit markers (two workers' transactions write each partition), past
    # its last record: the workers committed its end, not the offset after the last record they read.
    source_ends = sum(rows[(src, p)]["end"] for p in range(4))
    assert source_ends == len(lines)
    assert all(r["lag"] == 0 for r in rows.values()), list(rows.values())
    assert sum(rows[(repartition, p)]["end"] for p in range(4)) > sum(expected_counts(lines).values())
    # State entities: one WordCounts object per partition key that got words, counted from the changelog.
    words_seen = set(expected_counts(lines))
    by_partition = Counter(wordcount.WORDS.index(w) % 4 for w in words_seen)
    assert {p: rows[(repartition, p)]["entities"] for p in range(4)} == dict(by_partition)
    for w in status["workers"]:
        assert w["entities"] == sum(rows[(t, p)]["entities"] for t, p in
                                    ((x["topic"], x["partition"]) for x in w["partitions"]) if t == repartition)
    # Event time: the last line's timestamp reached every state partition (watermarks), and each
    # checkpoint mark names a worker of this application.
    assert all(rows[(repartition, p)]["event_time_ms"] == last_ts for p in range(4))
    assert {r["checkpointed_by"] for r in rows.values()} <= {"w1", "w2"}
    assert status["last_checkpoint_ms"] == max(r["checkpoint_ms"] for r in rows.values())
    # A source offset's mark holds the newest source time its worker had accepted: at least that of
    # the partition's own last record, at most the newest line's (the next owner's event-time bound).
    from confluent_kafka import Consumer, TopicPartition
    newest = Counter()
    for m in read_topic(kafka, src, expect=len(lines)):
        newest[m.partition()] = max(newest[m.partition()], m.timestamp()[1])
    reader = Consumer({"bootstrap.servers": kafka, "group.id": app_id, "enable.auto.commit": False})
    try:
        committed = reader.committed([TopicPartition(src, p) for p in range(4)], timeout=20)
    finally:
        reader.close()
    for tp in committed:
        assert newest[tp.partition] <= operations.parse_offset_metadata(tp.metadata)["st"] <= last_ts

    table = machida("status", "--application-id", app_id, "--bootstrap-servers", kafka)
    assert table.returncode == 0, table.stderr
    assert all(w["client_id"] in table.stdout for w in status["workers"])
    assert f"group stable, 2 worker(s)" in table.stdout
    assert sum(line.startswith(repartition) for line in table.stdout.splitlines()) == 4


def test_status_of_an_unknown_group_says_so(kafka, topic_name):
    done = machida("status", "--application-id", topic_name("nobody"), "--bootstrap-servers", kafka)
    assert done.returncode == 0, done.stderr
    assert "0 worker(s)" in done.stdout


def test_shrink_three_to_one_during_a_replay_is_exactly_once(kafka, topic_name, workers):
    src, sink, app_id = topic_name("sh-in"), topic_name("sh-out"), topic_name("sh")
    create_topic(kafka, src, 4)
    lines = word_lines(60_000, seed=12)
    procs = {n: workers.start("wordcount", src, sink, n, app_id, *FAST) for n in ("w1", "w2", "w3")}
    feeder, released = held_back_feeder(kafka, src, lines, rate=4000)   # holds the second half back

    def all_assigned():
        a = group_assignments(kafka, app_id)
        return a if len(a) == 3 and all(a.values()) else None
    wait_for(all_assigned, 90, "three workers to receive partitions")
    feeder.start()
    wait_for(lambda: len(read_topic(kafka, sink, idle_s=0.5, timeout_s=5)) > 2000, 60, "first outputs")
    assert feeder.is_alive(), "the input ended before the shrink: not mid-stream"
    released.set()                  # the second half flows while the two leave
    done = machida("shrink", "--count", "2", "--application-id", app_id, "--bootstrap-servers", kafka)
    assert done.returncode == 0, done.stderr
    assert "w2, w3 left" in done.stdout
    for name in ("w2", "w3"):
        assert procs[name].wait(60) == 0, procs[name].log_path.read_text()[-3000:]
        assert "shrink request" in procs[name].log_path.read_text()
    assert procs["w1"].poll() is None
    assert set(wait_for(lambda: group_assignments(kafka, app_id) if len(group_assignments(kafka, app_id)) == 1
                        else None, 60, "one member left")) == {f"{app_id}-w1"}
    feeder.join()
    assert_exactly_once(kafka, sink, app_id, lines)
    assert procs["w1"].poll() is None


def test_shrink_refuses_what_it_cannot_do(kafka, topic_name, workers):
    src, sink, app_id = topic_name("shx-in"), topic_name("shx-out"), topic_name("shx")
    create_topic(kafka, src, 2)
    w1 = workers.start("wordcount", src, sink, "w1", app_id, *FAST)
    wait_for(lambda: group_assignments(kafka, app_id).get(f"{app_id}-w1"), 60, "w1 to join")
    unknown = machida("shrink", "--workers", "w9", "--application-id", app_id, "--bootstrap-servers", kafka)
    assert unknown.returncode != 0 and "not in group" in unknown.stderr and "w9" in unknown.stderr
    last = machida("shrink", "--count", "1", "--application-id", app_id, "--bootstrap-servers", kafka)
    assert last.returncode != 0 and "would leave no worker" in last.stderr
    # A malformed control record is skipped, not obeyed and not fatal.
    from confluent_kafka import Producer
    p = Producer({"bootstrap.servers": kafka})
    p.produce(operations.control_topic(app_id), b"\xff not json")
    p.flush(10)
    wait_for(lambda: "skipping control record" in w1.log_path.read_text(), 30, "the bad record to be logged")
    assert w1.poll() is None
