"""The engine against the real broker: equivalence with the local runner, exactly-once under kill -9,
dead letters, event time reaching idle partitions, topology checks."""
import random
import signal
import threading
import time
from collections import Counter, defaultdict

import pytest
from confluent_kafka import Producer

import wordcount
from conftest import create_topic, group_assignments, read_topic, wait_for
from wallaroo.runtime import topics
from wallaroo.runtime.routing import EVENT_TIME_KEY
from wallaroo.runtime.serde import StateCodec
from wallaroo.testing import run_local

pytestmark = pytest.mark.kafka
FAST = ["--checkpoint-interval-ms", "200", "--session-timeout-ms", "3000", "--transaction-timeout-ms", "5000"]


def produce(bootstrap, topic, lines, *, rate=None, start_ms=1_420_000_000_000, pause=None):
    """Produce lines (keyed by index, timestamped one second apart); at `rate` lines/s if given.

    `pause` (a threading.Event): after half the lines, wait until it is set (at most 120 s), so a
    test can kill a worker while input is certainly still to come."""
    # Idempotent: a retry across a broker restart must not duplicate input (the counts would be off).
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "enable.idempotence": True})
    t0 = time.monotonic()
    for i, line in enumerate(lines):
        if pause is not None and i == len(lines) // 2:
            p.flush(30)
            pause.wait(120)
            t0 = time.monotonic() - i / rate if rate else t0
        p.produce(topic, line, key=str(i).encode(), timestamp=start_ms + i * 1000)
        if rate and i % 500 == 0:
            p.poll(0)
            ahead = i / rate - (time.monotonic() - t0)
            if ahead > 0:
                time.sleep(ahead)
    p.flush(30)


def word_lines(n_lines, seed):
    rnd = random.Random(seed)
    return [" ".join(rnd.choice(wordcount.WORDS) for _ in range(rnd.randint(1, 4))).encode()
            for _ in range(n_lines)]


def expected_counts(lines):
    return Counter(w for line in lines if not line.startswith(b"#") and b"POISON" not in line
                   for w in line.decode().split())


def assert_exactly_once(bootstrap, sink, app_id, lines):
    """Every word=k for k in 1..N(word) exactly once in the read_committed sink, and exact final state."""
    expected = expected_counts(lines)
    total = sum(expected.values())
    got = read_topic(bootstrap, sink, expect=total, timeout_s=180)
    values = Counter(m.value() for m in got)
    dupes = [v for v, c in values.items() if c > 1]
    assert not dupes, f"duplicated outputs: {dupes[:5]}"
    want = {f"{w}={k}".encode() for w, n in expected.items() for k in range(1, n + 1)}
    assert set(values) == want, f"missing {len(want - set(values))}, unexpected {len(set(values) - want)}"
    assert all(m.key() == m.value().split(b"=")[0] for m in got)
    # The changelog's last committed record per key is the final state.
    assert changelog_states(bootstrap, app_id) == dict(expected)


def changelog_states(bootstrap, app_id):
    """The word counts in the changelog's last committed record per key, decoded as a restore does."""
    changelog = topics.changelog_topic(app_id, "word counts")
    latest = {}
    for m in read_topic(bootstrap, changelog, idle_s=2):
        latest[(m.partition(), m.key())] = m.value()
    codec = StateCodec("word counts", wordcount.WordCounts)
    final = {}
    for (_p, kb), blob in latest.items():
        if kb != EVENT_TIME_KEY and blob is not None:
            final.update(codec.decode(blob).counts)
    return final


def held_back_feeder(bootstrap, topic, lines, rate):
    """A feeder thread (not started yet) for `lines` at `rate` that holds back the second half until
    the returned event is set: kill_9_mid_stream sets it after the kill."""
    killed = threading.Event()
    feeder = threading.Thread(target=produce, args=(bootstrap, topic, lines),
                              kwargs={"rate": rate, "pause": killed}, daemon=True)
    return feeder, killed


def kill_9_mid_stream(bootstrap, sink, worker, feeder, killed, after_outputs):
    """SIGKILL `worker` once the sink holds `after_outputs` committed records, while the feeder still
    holds back input (it waits on `killed`, set here after the kill)."""
    wait_for(lambda: len(read_topic(bootstrap, sink, idle_s=0.5, timeout_s=5)) > after_outputs, 60,
             "first outputs")
    assert feeder.is_alive(), "the input ended before the kill: not mid-stream"
    worker.send_signal(signal.SIGKILL)
    worker.wait(10)
    killed.set()


def test_kafka_output_equals_local_runner(kafka, topic_name, workers):
    src, sink, app_id = topic_name("wc-in"), topic_name("wc-out"), topic_name("wc")
    create_topic(kafka, src, 4)
    lines = word_lines(3000, seed=1) + [b"# comment w01", b"w05 w06"]
    produce(kafka, src, lines)
    local = run_local(wordcount, lines, args=["--kafka_source_topic", src, "--kafka_sink_topic", sink])
    w = workers.start("wordcount", src, sink, "w1", app_id, *FAST, "--purge-interval-ms", "200")
    got = read_topic(kafka, sink, expect=len(local.outputs), timeout_s=120)
    assert Counter((m.value(), m.key()) for m in got) == Counter((r.value, r.key) for r in local.outputs)
    # per key, the order on Kafka is the order the local runner produced
    by_key = defaultdict(list)
    for m in got:
        by_key[m.key()].append(m.value())
    local_by_key = defaultdict(list)
    for r in local.outputs:
        local_by_key[r.key].append(r.value)
    assert by_key == local_by_key
    # the worker's changelog, read back with the runtime's codec, holds the state run_local ends with
    local_counts = {}
    for state in local.states["word counts"].values():
        local_counts.update(state.counts)
    wait_for(lambda: changelog_states(kafka, app_id) == local_counts, 30, "the changelog to hold the local state")
    # consumed repartition records are deleted from Kafka (purged up to the committed offsets)
    from confluent_kafka import Consumer, TopicPartition
    probe = Consumer({"bootstrap.servers": kafka, "group.id": app_id})
    tps = [TopicPartition(topics.repartition_topic(app_id, "word counts"), p) for p in range(4)]
    try:
        wait_for(lambda: all(probe.get_watermark_offsets(tp, timeout=10, cached=False)[0] > 0 for tp in tps),
                 30, "repartition records to be purged")
        lows = [probe.get_watermark_offsets(tp, timeout=10, cached=False)[0] for tp in tps]
        assert all(low <= tp.offset for low, tp in zip(lows, probe.committed(tps, timeout=10)))
    finally:
        probe.close()
    w.send_signal(signal.SIGTERM)
    assert w.wait(30) == 0


def test_poison_record_goes_to_dead_letters_and_worker_goes_on(kafka, topic_name, workers):
    src, sink, app_id = topic_name("poison-in"), topic_name("poison-out"), topic_name("poison")
    create_topic(kafka, src, 2)
    lines = [b"w01 w02", b"POISON w01", b"w01", b"\xff\xfe not utf-8", b"w02", b"zzz"]
    produce(kafka, src, lines)
    w = workers.start("wordcount", src, sink, "w1", app_id, *FAST)
    got = read_topic(kafka, sink, expect=4, timeout_s=60)
    assert sorted(m.value() for m in got) == [b"w01=1", b"w01=2", b"w02=1", b"w02=2"]
    dead = read_topic(kafka, topics.dead_letter_topic(app_id), expect=3, timeout_s=30)
    assert sorted(m.value() for m in dead) == [b"POISON w01", b"zzz", b"\xff\xfe not utf-8"]
    headers = {m.value(): dict(m.headers()) for m in dead}
    assert headers[b"POISON w01"]["step"] == b"check poison"
    assert b"poison record" in headers[b"POISON w01"]["error"]
    assert headers[b"\xff\xfe not utf-8"]["step"] == b"decoder"
    assert headers[b"zzz"]["step"] == b"count word" and b"not in the step's partition_keys" in headers[b"zzz"]["error"]
    assert {h["topic"] for h in headers.values()} == {src.encode()}
    # still alive and processing after the poison
    produce(kafka, src, [b"w03"])
    more = read_topic(kafka, sink, expect=5, timeout_s=60)
    assert b"w03=1" in {m.value() for m in more}
    assert w.poll() is None
    log = w.log_path.read_text()
    assert f"dead letter from {src}" in log and "@" in log


def test_two_workers_share_and_survive_kill_9(kafka, topic_name, workers):
    src, sink, app_id = topic_name("eo-in"), topic_name("eo-out"), topic_name("eo")
    create_topic(kafka, src, 4)
    lines = word_lines(60_000, seed=2)
    feeder, killed = held_back_feeder(kafka, src, lines, rate=6000)
    w1 = workers.start("wordcount", src, sink, "w1", app_id, *FAST)
    w2 = workers.start("wordcount", src, sink, "w2", app_id, *FAST)
    feeder.start()

    def both_assigned():
        a = group_assignments(kafka, app_id)
        return a if len(a) == 2 and all(a.values()) else None
    assignment = wait_for(both_assigned, 60, "both workers to receive partitions")
    for member, tps in assignment.items():
        assert any(t == src for t, _ in tps) or any("repartition" in t for t, _ in tps), (member, tps)
    kill_9_mid_stream(kafka, sink, w2, feeder, killed, after_outputs=2000)
    feeder.join()
    assert_exactly_once(kafka, sink, app_id, lines)
    assert w1.poll() is None
    assert "restored state 'word counts'" in w1.log_path.read_text()


def test_restart_after_kill_9_of_the_only_worker(kafka, topic_name, workers):
    src, sink, app_id = topic_name("rs-in"), topic_name("rs-out"), topic_name("rs")
    create_topic(kafka, src, 2)
    lines = word_lines(30_000, seed=3)
    feeder, killed = held_back_feeder(kafka, src, lines, rate=5000)
    w1 = workers.start("wordcount", src, sink, "w1", app_id, *FAST)
    feeder.start()
    kill_9_mid_stream(kafka, sink, w1, feeder, killed, after_outputs=1000)
    time.sleep(1)
    workers.start("wordcount", src, sink, "w1", app_id, *FAST)
    feeder.join()
    assert_exactly_once(kafka, sink, app_id, lines)



def test_coalescing_sink_keeps_the_last_output_per_key_and_exactly_once_across_kill_9(kafka, topic_name, workers):
    src, sink, app_id = topic_name("co-in"), topic_name("co-out"), topic_name("co")
    create_topic(kafka, src, 2)
    lines = word_lines(30_000, seed=5)
    feeder, killed = held_back_feeder(kafka, src, lines, rate=5000)
    w1 = workers.start("wordcount", src, sink, "w1", app_id, "--coalesce", *FAST)
    feeder.start()
    kill_9_mid_stream(kafka, sink, w1, feeder, killed, after_outputs=40)
    time.sleep(1)
    workers.start("wordcount", src, sink, "w1", app_id, "--coalesce", *FAST)
    feeder.join()
    expected = {w.encode(): n for w, n in expected_counts(lines).items()}

    def last_counts():
        last = {}
        for m in read_topic(kafka, sink, idle_s=1, timeout_s=30):
            last[m.key()] = int(m.value().split(b"=")[1])
        return last
    wait_for(lambda: last_counts() == expected, 180, "the final count of every word")
    got = read_topic(kafka, sink, idle_s=1)
    per_key = {}
    for m in got:                   # one partition per key: in the order produced
        per_key.setdefault(m.key(), []).append(int(m.value().split(b"=")[1]))
    # Never a count twice nor going back (an aborted checkpoint's outputs never show), and far fewer
    # records than outputs made (one per word per checkpoint at most).
    assert all(a < b for counts in per_key.values() for a, b in zip(counts, counts[1:]))
    assert len(got) < sum(expected.values()) // 4
    assert changelog_states(kafka, app_id) == {w.decode(): n for w, n in expected.items()}

def test_idle_partition_window_closes_on_event_time(kafka, topic_name, workers):
    """Key b gets records only in hour 0; key a keeps going. b's 24-hour window must close when the
    stream's event time passes hour 24, though b's partition receives no record after hour 0."""
    src, sink, app_id = topic_name("et-in"), topic_name("et-out"), topic_name("et")
    create_topic(kafka, src, 2)
    h = 3600 * 1000
    h0 = 1_420_070_400_000 // h          # 2015-01-01 00:00 UTC, as an absolute hour

    def at(hour, ms=0):
        return (h0 + hour) * h + ms

    def report(key, hour, total):
        return f"{key},{h0 + hour},{total}".encode()
    p = Producer({"bootstrap.servers": kafka})
    for i in range(3):
        p.produce(src, b"b", timestamp=at(0, i * 1000))
    p.flush()
    w = workers.start("window", src, sink, "w1", app_id, *FAST)
    assert wait_for(lambda: [m for m in read_topic(kafka, sink, idle_s=0.5, timeout_s=5)
                             if m.value() == report("b", 0, 3)], 60, "b counted")
    for hour in range(1, 24):       # event time moves on, but not far enough to close b's hour 0
        p.produce(src, b"a", timestamp=at(hour))
    p.flush()
    wait_for(lambda: [m for m in read_topic(kafka, sink, idle_s=0.5, timeout_s=5)
                      if m.value() == report("a", 23, 23)], 60, "a at hour 23")
    time.sleep(1.0)                 # several checkpoints: watermarks for hour 23 reached b's partition
    b_reports = [m.value() for m in read_topic(kafka, sink, idle_s=1) if m.value().startswith(b"b,")]
    assert b_reports == [report("b", 0, 1), report("b", 0, 2), report("b", 0, 3)], "b's window closed early"
    repartition = topics.repartition_topic(app_id, "windows")
    watermarks = len(read_topic(kafka, repartition, committed_only=False, idle_s=0.5, timeout_s=5))
    p.produce(src, b"a", timestamp=at(24, 5))
    p.flush()
    closed = wait_for(lambda: [m for m in read_topic(kafka, sink, idle_s=0.5, timeout_s=5)
                               if m.value().startswith(b"b,") and m.value().endswith(b",0")], 60,
                      "b's window to close")
    assert closed[0].value() == report("b", 24, 0)
    assert closed[0].timestamp()[1] == at(24, 5)   # closed at the watermark: the stream's event time
    # The worker owns both partitions and has read them to their end: it applies its watermarks to
    # them at once, as its messages (local state), instead of through the repartition topic.
    assert len(read_topic(kafka, repartition, committed_only=False, idle_s=0.5, timeout_s=5)) == watermarks
    partitions = {m.key(): m.partition() for m in read_topic(kafka, topics.changelog_topic(app_id, "windows"), idle_s=1)
                  if m.key() != EVENT_TIME_KEY}
    assert len(set(partitions.values())) == 2, "a and b must live in different partitions for this test"
    assert w.poll() is None


def test_partition_count_mismatch_stops_worker_with_clear_message(kafka, topic_name, workers):
    src, sink, app_id = topic_name("mm-in"), topic_name("mm-out"), topic_name("mm")
    create_topic(kafka, src, 2)
    create_topic(kafka, topics.repartition_topic(app_id, "word counts"), 3)
    w = workers.start("wordcount", src, sink, "w1", app_id, *FAST)
    assert w.wait(60) != 0
    log = w.log_path.read_text()
    assert "has 3 partitions but this application needs 2" in log
    assert "Traceback" not in log


def test_application_id_separates_deployments(kafka, topic_name, workers):
    src, sink_a, sink_b = topic_name("ids-in"), topic_name("ids-a"), topic_name("ids-b")
    create_topic(kafka, src, 1)
    produce(kafka, src, [b"w01", b"w01"])
    workers.start("wordcount", src, sink_a, "w1", topic_name("dep-a"), *FAST)
    workers.start("wordcount", src, sink_b, "w1", topic_name("dep-b"), *FAST)
    for sink in (sink_a, sink_b):   # each deployment sees all input and has its own state
        got = read_topic(kafka, sink, expect=2, timeout_s=60)
        assert sorted(m.value() for m in got) == [b"w01=1", b"w01=2"]


def test_restore_waits_for_a_checkpoint_still_being_committed(kafka, topic_name):
    """Restore reads to the high watermark, not the last stable offset: a checkpoint whose transaction
    is still open (or whose markers are not written yet) is waited for, never silently skipped."""
    from wallaroo.runtime.routing import key_bytes
    from wallaroo.runtime.state import restore
    codec = StateCodec("word counts", wordcount.WordCounts)

    topic = topic_name("restore")
    create_topic(kafka, topic, 1, {"cleanup.policy": "compact"})
    p = Producer({"bootstrap.servers": kafka, "transactional.id": topic})
    p.init_transactions(30)
    kb = key_bytes("w01")
    for counts in ({"w01": 1}, {"w01": 2}):
        state = wordcount.WordCounts()
        state.counts = counts
        p.begin_transaction()
        p.produce(topic, codec.encode(state), kb, partition=0)
        if counts["w01"] == 1:
            p.commit_transaction(30)
    p.flush(30)                        # the second checkpoint is written but not committed yet
    result = {}
    t = threading.Thread(target=lambda: result.update(restore(kafka, topic, [0], timeout_s=60)))
    t.start()
    time.sleep(2.0)
    assert t.is_alive(), "restore returned before the open checkpoint was settled"
    p.commit_transaction(30)
    t.join(60)
    assert codec.decode(result[0][kb]).counts == {"w01": 2}


def test_an_idle_worker_commits_without_waiting_for_its_interval(kafka, topic_name, workers):
    """Once nothing is left to read, the worker commits what it did (an early checkpoint), though its
    checkpoint interval is far longer than the test: outputs, state and offsets, exactly once; and
    again after more input, with the worker alive the whole time."""
    src, sink, app_id = topic_name("idle-in"), topic_name("idle-out"), topic_name("idle")
    create_topic(kafka, src, 2)
    first, more = word_lines(150, seed=5), word_lines(100, seed=6)
    produce(kafka, src, first)
    w = workers.start("wordcount", src, sink, "w1", app_id, "--checkpoint-interval-ms", "600000")
    assert_exactly_once(kafka, sink, app_id, first)
    produce(kafka, src, more)
    assert_exactly_once(kafka, sink, app_id, first + more)
    assert w.poll() is None, "the worker stopped: only a checkpoint on shutdown would have committed"


def test_sigterm_commits_what_was_processed_before_leaving(kafka, topic_name, workers):
    """With a checkpoint interval far longer than the test (and no early checkpoint when idle), only the
    shutdown can commit: after SIGTERM
    the group's source offsets are at the end and the repartitioned records are committed; a restarted
    worker then finishes the state work, every output exactly once. (--no-local-state: the one worker
    owns every partition, and would otherwise apply every word itself, sending none through Kafka.)"""
    from confluent_kafka import Consumer, TopicPartition
    src, sink, app_id = topic_name("term-in"), topic_name("term-out"), topic_name("term")
    create_topic(kafka, src, 2)
    lines = word_lines(200, seed=4)
    produce(kafka, src, lines)
    words = sum(expected_counts(lines).values())
    repartition = topics.repartition_topic(app_id, "word counts")
    w = workers.start("wordcount", src, sink, "w1", app_id, "--checkpoint-interval-ms", "600000",
                      "--idle-checkpoint-ms", "0", "--no-local-state")
    wait_for(lambda: len(read_topic(kafka, repartition, committed_only=False, idle_s=0.5, timeout_s=5)) >= words,
             60, "the worker to route every word (uncommitted)")
    assert read_topic(kafka, repartition, idle_s=0.5, timeout_s=5) == [], "committed before the interval"
    w.send_signal(signal.SIGTERM)
    assert w.wait(60) == 0
    routed = [m for m in read_topic(kafka, repartition, expect=words, timeout_s=30) if m.key() is not None]
    assert len(routed) == words
    probe = Consumer({"bootstrap.servers": kafka, "group.id": app_id})
    try:
        committed = probe.committed([TopicPartition(src, p) for p in (0, 1)], timeout=10)
        ends = [probe.get_watermark_offsets(TopicPartition(src, p), timeout=10)[1] for p in (0, 1)]
    finally:
        probe.close()
    assert [tp.offset for tp in committed] == ends
    workers.start("wordcount", src, sink, "w1", app_id, *FAST)
    assert_exactly_once(kafka, sink, app_id, lines)
