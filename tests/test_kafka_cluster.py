"""A real 3-node KRaft cluster (kafka/kafka.sh, KAFKA_NODES=3): node-by-node control, and a node
`kill -9`'d and restarted under an idempotent acks=all producer and a read_committed consumer loses
and doubles nothing; two workers lose a node, the transaction coordinator's leader, mid-stream. One
cluster serves the module (starting one takes ~30 s): each test starts whatever nodes are down."""
import logging
import threading
import time
import uuid

import pytest

from conftest import Workers, alive, create_topic, read_topic
from kafka_cluster import CLIENT_LOG, kafka_cluster  # noqa: F401  (the fixture)
from test_faults import as_stored, committed_total, diagnose, feeder
from test_wallaroo_kafka import FAST, assert_exactly_once, word_lines

pytestmark = pytest.mark.cluster
log = logging.getLogger(__name__)

PARTITIONS = 3
OUTAGE_S = 10          # a killed node is started again this long after its kill


def create_replicated_topic(bootstrap: str, name: str) -> None:
    """RF 3, min ISR 2; returns once every broker's metadata has the topic with three in-sync replicas."""
    from confluent_kafka.admin import AdminClient, NewTopic
    admin = AdminClient({"bootstrap.servers": bootstrap, **CLIENT_LOG})
    futures = admin.create_topics([NewTopic(name, PARTITIONS, 3, config={"min.insync.replicas": "2"})])
    futures[name].result(30)

    def everywhere():
        for address in bootstrap.split(","):
            md = AdminClient({"bootstrap.servers": address, **CLIENT_LOG}).list_topics(name, timeout=10).topics[name]
            if md.error is not None or len(md.partitions) != PARTITIONS or \
                    any(len(p.isrs) != 3 for p in md.partitions.values()):
                return False
        return True
    wait_for(everywhere, 30, f"{name} in every broker's metadata")


class Feed:
    """Produces 0, 1, 2... (partition = n % PARTITIONS, so each partition's values rise) until stopped."""

    def __init__(self, bootstrap: str, topic: str):
        self.bootstrap, self.topic = bootstrap, topic
        self.sent = 0
        self.acked: dict[int, tuple[int, int]] = {}     # value -> (partition, offset)
        self.errors: list[tuple[int, str]] = []
        self.unflushed = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        from confluent_kafka import Producer
        producer = Producer({"bootstrap.servers": self.bootstrap, "enable.idempotence": True, "acks": "all",
                             "linger.ms": 5, "message.timeout.ms": 120000, **CLIENT_LOG})

        def report(err, msg):
            value = int(msg.value())
            if err is not None:
                self.errors.append((value, str(err)))
            else:
                self.acked[value] = (msg.partition(), msg.offset())

        while not self._stop.is_set():
            try:
                producer.produce(self.topic, value=str(self.sent).encode(), partition=self.sent % PARTITIONS,
                                 on_delivery=report)
                self.sent += 1
            except BufferError:
                pass
            producer.poll(0)
            time.sleep(0.004)
        self.unflushed = producer.flush(90)

    def stop(self):
        self._stop.set()
        self._thread.join(120)


class Reader:
    """A read_committed consumer on every partition (assigned: no rebalance can replay anything), its
    offsets committed to a group now and then, so the group coordinator's node matters too."""

    def __init__(self, bootstrap: str, topic: str):
        self.bootstrap, self.topic = bootstrap, topic
        self.group = f"cluster-reader-{uuid.uuid4().hex[:8]}"
        self.records: list[tuple[int, int, int]] = []     # (partition, offset, value)
        self.committed = None
        self.error: BaseException | None = None   # what ended the thread early, reported by stop()
        self.commits_ok: list[float] = []    # when commits succeeded (time.monotonic)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
        def committed(err, partitions):
            if err is None and all(tp.error is None for tp in partitions):
                self.commits_ok.append(time.monotonic())

        consumer = Consumer({"bootstrap.servers": self.bootstrap, "group.id": self.group,
                             "isolation.level": "read_committed", "enable.auto.commit": False,
                             "auto.offset.reset": "earliest", "on_commit": committed, **CLIENT_LOG})
        consumer.assign([TopicPartition(self.topic, p, 0) for p in range(PARTITIONS)])
        last_commit = time.monotonic()
        try:
            while not self._stop.is_set():
                for m in consumer.consume(500, 0.2):
                    if not m.error():
                        self.records.append((m.partition(), m.offset(), int(m.value())))
                if self.records and time.monotonic() - last_commit > 0.5:
                    consumer.commit(asynchronous=True)   # fails while the coordinator moves: fine
                    last_commit = time.monotonic()
            deadline = time.monotonic() + 90   # a new coordinator can take a while on a loaded machine
            while True:   # the final positions, committed for sure
                try:
                    consumer.commit(asynchronous=False)
                    break
                except KafkaException as e:
                    if e.args[0].code() == KafkaError._NO_OFFSET:
                        break   # nothing new since the last async commit: the positions are committed
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.5)
            self.committed = {tp.partition: tp.offset for tp in
                              consumer.committed([TopicPartition(self.topic, p) for p in range(PARTITIONS)], 30)}
        except BaseException as e:
            self.error = e
            raise
        finally:
            consumer.close()

    def values(self) -> list[int]:
        return [v for _, _, v in self.records]

    def stop(self):
        self._stop.set()
        self._thread.join(150)
        assert not self._thread.is_alive(), "the reader did not finish its final commit within 150 s"
        assert self.error is None, f"the reader failed: {self.error!r}"


def wait_for(condition, timeout: float, what: str) -> None:
    t0 = time.monotonic()
    deadline = t0 + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)
    log.info("%.1f s waiting for %s", time.monotonic() - t0, what)


def test_nodes_stop_and_start_one_at_a_time(kafka_cluster):
    cluster = kafka_cluster
    cluster.start()
    status = cluster.script("status").stdout.splitlines()
    assert status == [f"kafka node {n}: answering on 127.0.0.1:{cluster.port(n)} (pid {cluster.pid(n)})"
                      for n in cluster.all_nodes]
    assert cluster.script("bootstrap").stdout.strip() == cluster.bootstrap
    pid = cluster.pid(3)
    assert alive(pid)

    report = cluster.stop(3)
    assert "kafka node 3: stopped" in report, report      # SIGTERM was enough: no SIGKILL after 30 s
    assert not alive(pid)
    assert not cluster.answers(3) and cluster.answers(1) and cluster.answers(2)
    r = cluster.script("status", check=False)
    assert r.returncode == 1 and "kafka node 3: not answering" in r.stdout, r.stdout

    cluster.start(3)
    assert cluster.answers(3) and cluster.pid(3) != pid


def test_kill_9_of_a_leader_loses_and_doubles_nothing(kafka_cluster, topic_name):
    cluster = kafka_cluster
    cluster.start()
    topic = topic_name("cluster")
    create_replicated_topic(cluster.bootstrap, topic)
    part = cluster.partition(topic, 0)
    assert sorted(part.replicas) == [1, 2, 3] and sorted(part.isrs) == [1, 2, 3]

    feed, reader = Feed(cluster.bootstrap, topic), Reader(cluster.bootstrap, topic)
    try:
        wait_for(lambda: len(feed.acked) >= 200 and reader.commits_ok, 60, "records flowing")
        # The victim is the group coordinator (the leader of __consumer_offsets' only partition), and
        # it leads partitions of the test topic too: a new topic's leaders are spread over all nodes.
        victim = cluster.leader("__consumer_offsets", 0)
        led = [p for p in range(PARTITIONS) if cluster.leader(topic, p) == victim]
        assert led, f"node {victim} leads none of {topic}'s partitions"
        cluster.kill(victim)    # returns once the process is gone
        killed_at, first_after = time.monotonic(), feed.sent
        # Writes go on with two in-sync replicas: records produced after the kill are acknowledged on the
        # partitions the dead node led, read, and the reader's offsets are committed, all before it returns.
        wait_for(lambda: any(feed.acked.get(n, (-1,))[0] in led for n in range(first_after, feed.sent)),
                 OUTAGE_S + 30, f"acks on partitions {led} after node {victim}'s kill")
        wait_for(lambda: any(v >= first_after for _, _, v in reader.records[-50:]), 30,
                 "records produced after the kill to be read")
        wait_for(lambda: reader.commits_ok[-1] > killed_at, 30, "an offset commit after the kill")
        for name, p in [("__consumer_offsets", 0)] + [(topic, p) for p in led]:
            now = cluster.partition(name, p)
            assert now.leader != victim and victim not in now.isrs, (name, p, victim, now.leader, now.isrs)
        assert not cluster.answers(victim)
        time.sleep(max(0.0, killed_at + OUTAGE_S - time.monotonic()))
        cluster.start(victim)
        log.info("node %s: killed, back after %.1f s, in the ISR %.1f s later", victim,
                 time.monotonic() - killed_at, cluster.wait_in_isr(victim, [topic, "__consumer_offsets"], 60))
        back = feed.sent
        wait_for(lambda: len(feed.acked) > back + 100, 30, "acks after the node's return")
    finally:
        feed.stop()
        wait_for(lambda: len(reader.records) >= len(feed.acked), 60, "the reader to catch up")
        reader.stop()

    assert feed.errors == [] and feed.unflushed == 0
    produced = feed.sent
    assert sorted(feed.acked) == list(range(produced)), "some records were never acknowledged"
    values = reader.values()
    assert len(values) == len(set(values)) == produced, \
        f"read {len(values)} records, {len(set(values))} distinct, of {produced} produced"
    for p in range(PARTITIONS):   # the idempotent producer kept each partition's order through the failovers
        mine = [v for q, _, v in sorted(reader.records) if q == p]
        assert mine == sorted(mine) and all(v % PARTITIONS == p for v in mine)
    assert all(feed.acked[v] == (p, o) for p, o, v in reader.records), "read offsets differ from acked ones"
    # The group's offsets survived their coordinator's kill: committed = one past each partition's last record.
    assert reader.committed == {p: max(o for q, o, _ in reader.records if q == p) + 1 for p in range(PARTITIONS)}
    # A fresh reader of the whole log sees the same, once each.
    again = read_topic(cluster.bootstrap, topic, expect=produced, timeout_s=60)
    assert sorted(int(m.value()) for m in again) == list(range(produced))


@pytest.mark.kafka
@pytest.mark.faults
@pytest.mark.timeout(600)
def test_workers_lose_a_node_mid_stream(kafka_cluster, topic_name, tmp_path):
    """Two word-count workers on three nodes, replication factor 3: kill -9 the node leading the
    transaction coordinator's partition, bring it back 10 s later, then kill another: nothing is lost,
    nothing doubled (tests/test_faults.py's checks)."""
    cluster = kafka_cluster
    cluster.start()
    bootstrap = cluster.bootstrap
    src, sink, app_id = topic_name("loss-in"), topic_name("loss-out"), topic_name("loss")
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
            assert_exactly_once(bootstrap, sink, app_id, as_stored(bootstrap, src, lines))
        except BaseException:
            print("DIAG", diagnose(bootstrap, app_id, [src, f"{app_id}-word-counts-repartition"], 4))
            raise
        assert [p.poll() for p in workers.procs] == [None, None], "a worker died"
    finally:
        workers.stop_all()
