"""Internal topics: names derived from the application id, created on first start, checked after."""
import logging
import re
import time

from confluent_kafka import KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic, OffsetSpec

log = logging.getLogger("wallaroo.topics")

# A whole state object is one changelog record, so allow big ones (the broker default is 1 MB).
MAX_STATE_BYTES = 64 * 1024 * 1024


class TopologyError(RuntimeError):
    """Internal topics exist but do not fit this application; the worker must not run."""


def application_id(name: str) -> str:
    """'Star Leaders' -> 'star-leaders': a name safe for topics and consumer groups."""
    return re.sub(r"[^a-z0-9._-]+", "-", name.lower()).strip("-") or "wallaroo-app"


def repartition_topic(app_id: str, state_name: str) -> str:
    return f"{app_id}-{application_id(state_name)}-repartition"


def changelog_topic(app_id: str, state_name: str) -> str:
    return f"{app_id}-{application_id(state_name)}-changelog"


def dead_letter_topic(app_id: str) -> str:
    return f"{app_id}-dead-letters"


def wait_for_topics(admin: AdminClient, topics, timeout_s: float = 3600.0, stop=lambda: False):
    """Return {topic: partition count} once every topic exists (None if `stop()` turns true)."""
    deadline = time.monotonic() + timeout_s
    told = False
    while True:
        try:
            md = admin.list_topics(timeout=10)
        except KafkaException as e:
            md = None
            if not told:
                log.warning("waiting for Kafka: %s", e)
                told = True
        if md is not None:
            found = {t: len(md.topics[t].partitions) for t in topics
                     if t in md.topics and md.topics[t].error is None}
            if len(found) == len(topics):
                return found
            if not told:
                log.warning("waiting for source topic(s) %s to exist", sorted(set(topics) - set(found)))
                told = True
        if stop():
            return None
        if time.monotonic() > deadline:
            raise TopologyError(f"topics {sorted(topics)} did not appear within {timeout_s:.0f} s")
        time.sleep(1.0)


def ensure_topics(admin: AdminClient, wanted: dict, replication: int = 1):
    """Create missing topics; raise TopologyError when an existing one has another partition count.

    `wanted` maps topic -> (partitions, config dict)."""
    md = admin.list_topics(timeout=10)
    missing = [NewTopic(t, n, replication, config=cfg) for t, (n, cfg) in wanted.items() if t not in md.topics]
    if missing:
        for topic, fut in admin.create_topics(missing).items():
            try:
                fut.result(30)
                log.info("created topic %s", topic)
            except KafkaException as e:  # another worker created it first
                if "TOPIC_ALREADY_EXISTS" not in str(e):
                    raise
        deadline = time.monotonic() + 30
        while True:  # metadata, and the partitions' leaders, catch up with a creation a moment later
            md = admin.list_topics(timeout=10)
            if all(_has_leaders(md, t) for t in wanted) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        _wait_until_served(admin, md, [t.topic for t in missing], deadline)
    for t, (n, _cfg) in wanted.items():
        have = len(md.topics[t].partitions)
        if have != n:
            raise TopologyError(
                f"topic {t} has {have} partitions but this application needs {n} (its source topics have {n}); "
                f"state is partitioned by them, so they must match. Delete the application's internal topics "
                f"or start it under a new --application-id.")


def _has_leaders(md, topic):
    t = md.topics.get(topic)
    return t is not None and t.error is None and bool(t.partitions) and all(
        p.leader >= 0 for p in t.partitions.values())


def _wait_until_served(admin, md, created, deadline):
    """Metadata names a new partition's leader a moment before that broker serves it (it answers
    NOT_LEADER meanwhile, e.g. to the state restore that follows at once): ask for offsets until it does."""
    tps = [TopicPartition(t, p) for t in created if t in md.topics for p in md.topics[t].partitions]
    while tps and time.monotonic() < deadline:
        try:
            for fut in admin.list_offsets({tp: OffsetSpec.latest() for tp in tps}, request_timeout=10).values():
                fut.result(10)
            return
        except KafkaException:
            time.sleep(0.2)


# Timestamps are event times (a 2015 replay is "old"): time-based retention would delete records before
# they are read, so topics the engine creates are bounded by size; repartition topics are also purged
# up to the committed offsets.
NO_TIME_RETENTION = {"retention.ms": "-1", "retention.bytes": str(1024 * 1024 * 1024)}


def internal_topics(app_id: str, state_names, partitions: int, extra_config: dict | None = None) -> dict:
    """The repartition and changelog topic of each state, and the dead-letter topic; `extra_config`
    (e.g. min.insync.replicas) goes into each."""
    extra = extra_config or {}
    wanted = {dead_letter_topic(app_id): (1, dict(NO_TIME_RETENTION, **extra))}
    for name in state_names:
        wanted[repartition_topic(app_id, name)] = (partitions, dict(NO_TIME_RETENTION, **extra))
        wanted[changelog_topic(app_id, name)] = (partitions, {
            "cleanup.policy": "compact", "max.message.bytes": str(MAX_STATE_BYTES),
            "segment.bytes": str(64 * 1024 * 1024), **extra})
    return wanted


def replication_factor(admin: AdminClient, topics) -> int:
    """The smallest replication factor among `topics` (existing ones): internal topics get the
    durability their input has, so losing a broker loses no state where it loses no input."""
    md = admin.list_topics(timeout=10)
    factors = [len(p.replicas) for t in topics if t in md.topics for p in md.topics[t].partitions.values()]
    return max(1, min(factors)) if factors else 1
