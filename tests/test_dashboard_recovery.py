"""The dashboard through a broker outage, against a private single-node broker that the test stops
and starts (tests/kafka_cluster.py with one node: its own run dir and free ports; the shared broker
is left alone): during the outage the health says Kafka is unreachable; within seconds of its return the
health is whole again (lag included: librdkafka's admin client stayed stuck on it for minutes) and
new leaderboard records reach /api/leaders.  Also: a stalled leaderboard client is replaced."""
import threading
import time
import uuid

import pytest
from confluent_kafka import Consumer, TopicPartition

from conftest import create_topic, wait_for
from dashboard.app import create_app
from dashboard.config import Config
from dashboard.consumer import LeaderboardConsumer
from kafka_cluster import KafkaCluster
from test_dashboard_helpers import get_json, leader, produce_txn, record, serve

pytestmark = pytest.mark.kafka

RECOVERY_WITHIN_S = 20      # the health was stuck for minutes before; a sample takes ~1 s


@pytest.fixture
def broker(tmp_path):
    """A one-node broker of our own (tests/kafka_cluster.py: its own run dir and ports), to stop and start."""
    with KafkaCluster(tmp_path / "kafka-run", nodes=1) as cluster:
        cluster.start()
        yield cluster


def health_where(url, predicate, what, timeout_s):
    return wait_for(lambda: (lambda h: h if predicate(h) else None)(get_json(url + "/api/health")),
                    timeout_s=timeout_s, what=what)


@pytest.mark.timeout(600)
def test_health_and_leaders_recover_after_a_broker_restart(broker):
    kafka = broker.bootstrap
    suffix = uuid.uuid4().hex[:8]
    topic, source, group = f"lb-{suffix}", f"src-{suffix}", f"grp-{suffix}"
    create_topic(kafka, topic, partitions=2)
    create_topic(kafka, source, partitions=2)
    produce_txn(kafka, topic, [(0, record(0, "2015-01-01T01:59:59Z", [leader("before/outage", 3)]))],
                kafka_partitions=2)
    c = Consumer({"bootstrap.servers": kafka, "group.id": group, "enable.auto.commit": False})
    c.commit(offsets=[TopicPartition(source, 0, 0), TopicPartition(source, 1, 0)], asynchronous=False)
    c.close()
    config = Config(kafka=kafka, topic=topic, source_topic=source, group=group,
                    health_interval=0.5, kafka_timeout=2.0)
    with serve(config) as (url, app):
        health_where(url, lambda h: h["kafka_connected"] and h["consumer_lag"] == 0 and h["error"] is None,
                     "a whole health document", 60)
        wait_for(lambda: get_json(url + "/api/leaders")["leaders"] == [leader("before/outage", 3)],
                 what="the first leader")

        broker.stop()
        stopped = time.monotonic()
        down = health_where(url, lambda h: h["kafka_connected"] is False, "kafka unreachable", 30)
        print(f"unreachable reported {time.monotonic() - stopped:.1f} s after the stop")
        assert down["kafka_unreachable_since"] and down["error"]
        assert down["consumer_lag"] is None and down["events_in_per_s"] is None
        time.sleep(4)                          # a few more failed samples and client replacements
        assert get_json(url + "/api/health")["kafka_connected"] is False
        assert get_json(url + "/api/leaders")["leaders"] == [leader("before/outage", 3)], \
            "the last leaders stay on the page through an outage"

        broker.start()                         # returns once the broker answers
        back = time.monotonic()
        whole = health_where(url, lambda h: h["kafka_connected"] and h["consumer_lag"] == 0 and h["error"] is None
                             and h["topic_exists"] and h["source_topic_exists"],
                             "the whole health document again", RECOVERY_WITHIN_S)
        recovered_s = time.monotonic() - back
        print(f"health whole again {recovered_s:.1f} s after the broker answered")
        assert whole["kafka_unreachable_since"] is None

        produce_txn(kafka, topic, [(1, record(1, "2015-01-01T02:59:59Z", [leader("after/outage", 5)]))],
                    kafka_partitions=2)
        produced = time.monotonic()
        got = wait_for(lambda: (lambda d: d if len(d["leaders"]) == 2 else None)(get_json(url + "/api/leaders")),
                       timeout_s=RECOVERY_WITHIN_S, what="a leader written after the outage")
        print(f"new record on /api/leaders {time.monotonic() - produced:.1f} s after its commit")
        assert got == {"event_time": "2015-01-01T02:59:59Z",
                       "leaders": [leader("after/outage", 5), leader("before/outage", 3)]}
        assert get_json(url + "/api/health")["consumer_state"] == "consuming"


class WedgedClient(LeaderboardConsumer):
    """The dashboard's consumer, whose first client stops fetching once `wedge` is set (its partitions
    paused from its own thread: the client is not safe to call from another while it consumes)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.wedge = threading.Event()

    def _consume_for(self, consumer, assigned, seconds):
        if self.wedge.is_set() and self.clients_created == 1:
            consumer.pause([TopicPartition(self.topic, p) for p in assigned])
        return super()._consume_for(consumer, assigned, min(seconds, 0.5))


@pytest.mark.timeout(300)
def test_a_stalled_leaderboard_client_is_replaced(kafka, topic_name):
    """A client that stops fetching while committed records wait is replaced, and the new one resumes
    where the old one was: nothing read twice, nothing skipped."""
    topic = topic_name("dash-stall")
    create_topic(kafka, topic)
    produce_txn(kafka, topic, [(0, record(0, "2015-01-01T01:59:59Z", [leader("one/repo", 1)]))])
    config = Config(kafka=kafka, topic=topic, source_topic=topic, group=f"g-{uuid.uuid4().hex[:8]}",
                    health_interval=0.3)
    app = create_app(config, start=False)
    runtime = app.extensions["dashboard"]
    consumer = runtime.consumer = runtime.monitor.consumer = WedgedClient(
        runtime.board, kafka, topic, stall_s=3.0)
    runtime.start()
    with serve(config, app) as (url, app):
        wait_for(lambda: get_json(url + "/api/leaders")["leaders"], what="the first leader")
        consumer.wedge.set()
        time.sleep(1.5)                        # the first client pauses
        assert consumer.clients_created == 1
        produce_txn(kafka, topic, [(1, record(1, "2015-01-01T02:59:59Z", [leader("two/repo", 2)]))])
        got = wait_for(lambda: (lambda d: d if len(d["leaders"]) == 2 else None)(get_json(url + "/api/leaders")),
                       timeout_s=60, what="the record the wedged client did not read")
        assert [l["repo"] for l in got["leaders"]] == ["two/repo", "one/repo"]
        assert consumer.clients_created == 2, "the stalled client was replaced once"
        assert runtime.board.stats()["records"] == 2, "a record was read twice"
