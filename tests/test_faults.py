"""What a deployment does to the engine: the broker restarting under the workers, a cluster node dying,
workers racing their own topic creation, the group growing and shrinking mid-stream. Each test runs
word count (tests/apps/wordcount.py) and checks every output exactly once and the exact final state."""
import json
import threading
import time

import pytest
from confluent_kafka import Consumer, TopicPartition

from conftest import ARTIFACTS, Workers, create_topic, wait_for
from kafka_cluster import KafkaCluster
from test_wallaroo_kafka import FAST, assert_exactly_once, produce, word_lines

pytestmark = [pytest.mark.kafka, pytest.mark.faults, pytest.mark.timeout(600)]


def committed_total(bootstrap, group, topic, partitions):
    """Sum of the group's committed offsets on `topic` (-1 while Kafka does not answer)."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "log_level": 0})
    try:
        tps = c.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=5)
        return sum(max(tp.offset, 0) for tp in tps)
    except Exception:  # noqa: BLE001 - the broker is down: no answer is an answer
        return -1
    finally:
        c.close()


def diagnose(bootstrap, group, topic_list, partitions):
    """Committed offset, last stable offset and high watermark per partition (for a failure message)."""
    out = {}
    for iso in ("read_committed", "read_uncommitted"):
        c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "isolation.level": iso})
        for t in topic_list:
            for p in range(partitions):
                tp = TopicPartition(t, p)
                try:
                    out.setdefault(f"{t}[{p}]", {})[iso] = c.get_watermark_offsets(tp, timeout=10)[1]
                    if iso == "read_committed":
                        out[f"{t}[{p}]"]["committed"] = c.committed([tp], timeout=10)[0].offset
                except Exception as e:  # noqa: BLE001
                    out.setdefault(f"{t}[{p}]", {})[iso] = str(e)
        c.close()
    return out


def feeder(bootstrap, topic, lines, rate):
    t = threading.Thread(target=produce, args=(bootstrap, topic, lines), kwargs={"rate": rate}, daemon=True)
    t.start()
    return t


def record(name, data):
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / name).write_text(json.dumps(data, indent=1))


def test_broker_restarts_twice_mid_stream(tmp_path):
    """A single broker stopped for 6 s, then for 8 s, while two workers process a stream: both recover
    without a restart, and every output is there exactly once."""
    with KafkaCluster(tmp_path / "kafka", nodes=1) as cluster:
        cluster.start()
        bootstrap = cluster.bootstrap
        src, sink, app_id = "restart-in", "restart-out", "restart"
        create_topic(bootstrap, src, 4)
        lines = word_lines(30_000, seed=11)
        feed = feeder(bootstrap, src, lines, rate=600)
        workers = Workers(bootstrap, tmp_path)
        try:
            for name in ("w1", "w2"):
                workers.start("wordcount", src, sink, name, app_id, *FAST)
            recoveries = []
            for outage_s, progress in ((6, 3000), (8, 15000)):
                wait_for(lambda: committed_total(bootstrap, app_id, src, 4) >= progress, 120, "progress")
                before = committed_total(bootstrap, app_id, src, 4)
                cluster.stop(1)
                time.sleep(outage_s)
                cluster.start(1)
                back = time.monotonic()
                wait_for(lambda: committed_total(bootstrap, app_id, src, 4) > before, 180,
                         "a checkpoint after the broker came back")
                recoveries.append(round(time.monotonic() - back, 1))
            feed.join(300)
            assert not feed.is_alive()
            assert_exactly_once(bootstrap, sink, app_id, lines)
            assert [p.poll() for p in workers.procs] == [None, None], "a worker died"
            record("broker-restart-recovery.json", {"seconds_from_broker_back_to_checkpoint": recoveries})
        finally:
            workers.stop_all()


def test_cluster_loses_a_node_mid_stream(tmp_path):
    """Three nodes, replication factor 3: kill -9 the node leading the transaction coordinator's
    partition, bring it back 10 s later, then kill another: nothing is lost, nothing doubled."""
    with KafkaCluster(tmp_path / "kafka", nodes=3) as cluster:
        cluster.start()
        bootstrap = cluster.bootstrap
        src, sink, app_id = "loss-in", "loss-out", "loss"
        create_topic(bootstrap, src, 4, replication=3)
        lines = word_lines(15_000, seed=12)
        feed = feeder(bootstrap, src, lines, rate=600)
        workers = Workers(bootstrap, tmp_path)
        try:
            for name in ("w1", "w2"):
                workers.start("wordcount", src, sink, name, app_id, *FAST)
            wait_for(lambda: committed_total(bootstrap, app_id, src, 4) >= 3000, 120, "progress")
            changelog = f"{app_id}-word-counts-changelog"
            assert len(cluster.partition(changelog).replicas) == 3, "internal topics take the source's RF"
            first = cluster.leader("__transaction_state")
            cluster.kill(first)
            time.sleep(10)
            cluster.start(first)
            wait_for(lambda: committed_total(bootstrap, app_id, src, 4) >= 9000, 180, "progress after the kill")
            second = cluster.leader(src)
            cluster.kill(second)
            feed.join(300)
            try:
                assert_exactly_once(bootstrap, sink, app_id, lines)
            except BaseException:
                print("DIAG", diagnose(bootstrap, app_id, [src, f"{app_id}-word-counts-repartition"], 4))
                raise
            assert [p.poll() for p in workers.procs] == [None, None], "a worker died"
        finally:
            workers.stop_all()


def test_workers_started_as_their_topics_are_created_never_crash(kafka, topic_name, workers):
    """Two workers of a fresh application start at once, on a broker busy with the suite's other
    topics: they race to create the internal topics and restore from changelogs whose leaders may not
    be elected yet. Repeated: none crashes, and each round is exact."""
    for round_ in range(4):
        src, sink, app_id = topic_name("race-in"), topic_name("race-out"), topic_name("race")
        create_topic(kafka, src, 4)
        lines = word_lines(400, seed=20 + round_)
        produce(kafka, src, lines)
        procs = [workers.start("wordcount", src, sink, name, app_id, *FAST) for name in ("w1", "w2")]
        assert_exactly_once(kafka, sink, app_id, lines)
        assert [p.poll() for p in procs] == [None, None], [p.log_path.read_text()[-2000:] for p in procs]
        for p in procs:
            assert "Traceback" not in p.log_path.read_text()
            p.kill()
            p.wait(10)


def wait_for_log(proc, text, timeout_s=60.0):
    """Poll a worker's log closely until `text` appears (a kill can then land inside what it marks)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if text in proc.log_path.read_text():
            return
        time.sleep(0.01)
    raise AssertionError(f"{text!r} not in {proc.log_path} after {timeout_s} s")


def test_group_grows_and_shrinks_mid_stream(kafka, topic_name, workers):
    """1 -> 2 -> 3 -> 1 workers while input flows, the third killed -9 while it restores state."""
    src, sink, app_id = topic_name("scale-in"), topic_name("scale-out"), topic_name("scale")
    create_topic(kafka, src, 6)
    lines = word_lines(30_000, seed=21)
    feed = feeder(kafka, src, lines, rate=1000)

    def progress(n):
        wait_for(lambda: committed_total(kafka, app_id, src, 6) >= n, 120, f"{n} source records committed")
    w1 = workers.start("wordcount", src, sink, "w1", app_id, *FAST)
    progress(3000)
    w2 = workers.start("wordcount", src, sink, "w2", app_id, *FAST)
    progress(8000)
    w3 = workers.start("wordcount", src, sink, "w3", app_id, *FAST)
    wait_for_log(w3, "restoring state")
    w3.kill()                          # -9 inside its restore
    w3.wait(10)
    w3 = workers.start("wordcount", src, sink, "w3", app_id, *FAST)
    progress(15000)
    for w in (w2, w3):                 # back to one: w2 leaves cleanly, w3 is killed
        w.terminate() if w is w2 else w.kill()
        w.wait(60)
    feed.join(300)
    assert_exactly_once(kafka, sink, app_id, lines)
    assert w1.poll() is None
