"""Operations: `machida status` (what the group is doing) and `machida shrink` (workers told to leave).

Both find the workers through Kafka alone, never by host or port. Status reads the consumer group
(members, assignments, committed offsets), the topics' end offsets, the changelogs (keys per
partition, read like a restore) and the metadata each checkpoint stores with its committed offsets
(which worker committed, when, and the state partition's event time). Shrink writes a command to the
control topic `<application-id>-control`; every worker reads that topic with its own assignment (not
in the group), from the end as it was when the worker started, and a worker the command names stops
as on SIGTERM: it checkpoints, leaves the group and exits 0, and the group hands its partitions and
state to the rest.
"""
import argparse
import json
import logging
import os
import sys
import threading
import time
import uuid

from confluent_kafka import (OFFSET_BEGINNING, Consumer, ConsumerGroupTopicPartitions, IsolationLevel, KafkaError,
                             KafkaException, Producer, TopicPartition)
from confluent_kafka.admin import AdminClient, OffsetSpec

from .routing import EVENT_TIME_KEY, state_key_of
from . import clients, topics

log = logging.getLogger("wallaroo.operations")

REPARTITION_SUFFIX = "-repartition"
CHANGELOG_SUFFIX = "-changelog"


def control_topic(app_id: str) -> str:
    return f"{app_id}-control"


def worker_name(app_id: str, client_id: str) -> str:
    """The worker's --name from its consumer's client id (`<application-id>-<name>`, see Worker._connect)."""
    prefix = f"{app_id}-"
    return client_id[len(prefix):] if client_id.startswith(prefix) else client_id


# --- checkpoint metadata -------------------------------------------------------------------------
def offset_metadata(task, offsets) -> dict:
    """{(topic, partition): metadata} for a checkpoint's committed offsets: the worker, the wall time
    and, for a state partition, its event time; for a source partition, the newest source time the
    worker had accepted ("st": the next owner's event-time bound, see Worker._learn_source_time).
    `machida status` reads them back. Built once per checkpoint, for the partitions it moves."""
    now = int(time.time() * 1000)
    newest = task.clock.newest
    out = {}
    for topic, partition in offsets:
        mark = {"w": task.name, "t": now}
        store = task.stores.get(topic)
        if store is not None and partition in store.event_time:
            mark["et"] = store.event_time[partition]
        elif store is None and newest is not None:
            mark["st"] = newest
        out[(topic, partition)] = json.dumps(mark, separators=(",", ":"))
    return out


def parse_offset_metadata(text):
    """The checkpoint mark of a committed offset; {} for offsets committed by something else."""
    if not text:
        return {}
    try:
        mark = json.loads(text)
    except ValueError:
        return {}
    return mark if isinstance(mark, dict) else {}


# --- the worker's side of the control channel ---------------------------------------------------
class ControlListener:
    """Reads the control topic on its own thread and calls `leave()` when a shrink names this worker.

    `prepare` fixes the start position (the topic's end) before the worker joins its group, so a
    command written after `machida shrink` saw this worker in the group is never missed, and a
    command older than this worker (e.g. for its predecessor with the same name) is never obeyed."""

    def __init__(self, bootstrap, app_id, name, leave):
        self.bootstrap, self.app_id, self.name, self.leave = bootstrap, app_id, name, leave
        self.topic = control_topic(app_id)
        self.consumer = None
        self.skipped = 0                  # control records that are not commands we understand
        self._stopping = threading.Event()
        self._thread = None

    def prepare(self, admin, replication):
        topics.ensure_topics(admin, {self.topic: (1, {"retention.ms": str(7 * 24 * 3600 * 1000)})}, replication)
        consumer = Consumer(clients.control_consumer_config(self.bootstrap, f"{self.app_id}-{self.name}-control"))
        _low, high = consumer.get_watermark_offsets(TopicPartition(self.topic, 0), timeout=10, cached=False)
        consumer.assign([TopicPartition(self.topic, 0, high)])
        self.consumer = consumer

    def start(self):
        if self.consumer is not None:
            self._thread = threading.Thread(target=self._run, name="control", daemon=True)
            self._thread.start()

    def stop(self):
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(5)
        if self.consumer is not None:
            self.consumer.close()
            self.consumer = None

    def _run(self):
        while not self._stopping.is_set():
            try:
                messages = self.consumer.consume(100, 0.5)
            except KafkaException as e:  # retried by librdkafka; keep listening
                log.warning("%s: control topic: %s", self.name, e)
                continue
            for m in messages:
                if m.error() is None:
                    self.handle(m.value(), m.offset())

    def handle(self, value, offset):
        try:
            command = json.loads(value)
            kind, names = command["command"], command["workers"]
            if kind != "shrink" or not isinstance(names, list):
                raise ValueError(f"unknown command {kind!r}")
        except (ValueError, KeyError, TypeError) as e:
            self.skipped += 1
            log.warning("%s: skipping control record at offset %d (%s): %.100r", self.name, offset, e, value)
            return
        if self.name in names:
            log.info("%s: shrink request %s names this worker: checkpointing, leaving the group and exiting",
                     self.name, command.get("request"))
            self.leave()


# --- reading the group --------------------------------------------------------------------------
def describe_group(admin, app_id, timeout_s=20.0):
    """The group's description from the broker (KafkaException if it cannot be described)."""
    return admin.describe_consumer_groups([app_id], request_timeout=timeout_s)[app_id].result(timeout_s + 5)


def members_of(description, app_id):
    return [{"worker": worker_name(app_id, m.client_id), "client_id": m.client_id, "member_id": m.member_id,
             "host": m.host,
             "partitions": sorted((tp.topic, tp.partition) for tp in (m.assignment.topic_partitions or []))}
            for m in description.members]


def count_changelog_keys(bootstrap, topic, partitions, timeout_s=60.0):
    """{partition: live keys} of changelog partitions, read as a restore reads them (read_committed,
    from the start, a tombstone deletes its key), up to their committed end as of now; a partition not
    finished within `timeout_s` is None."""
    admin = AdminClient(clients.admin_config(bootstrap))
    ends = {tp.partition: r.offset for tp, r in _end_offsets(admin, [TopicPartition(topic, p) for p in partitions],
                                                             IsolationLevel.READ_COMMITTED).items()}
    keys = {p: set() for p in partitions}
    pending = {p for p in partitions if ends.get(p, 0) > 0}
    if not pending:
        return {p: 0 for p in partitions}
    c = Consumer({**clients.restore_consumer_config(bootstrap, f"status-{uuid.uuid4().hex}"),
                  "enable.partition.eof": True})
    try:
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in pending])
        deadline = time.monotonic() + timeout_s
        while pending and time.monotonic() < deadline:
            for m in c.consume(1000, 0.2):
                err = m.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        pending.discard(m.partition())
                    continue
                if m.key() == EVENT_TIME_KEY:     # the partition's saved event time, not a state entity
                    pass
                elif m.value() is None:
                    keys[m.partition()].discard(m.key())
                else:
                    keys[m.partition()].add(m.key())
                if m.offset() + 1 >= ends[m.partition()]:
                    pending.discard(m.partition())
    finally:
        c.close()
    # An object saved as entries has one key per entry: count the objects.
    return {p: (None if p in pending else len({state_key_of(k) for k in keys[p]})) for p in partitions}


def _end_offsets(admin, tps, isolation=IsolationLevel.READ_UNCOMMITTED):
    if not tps:
        return {}
    futures = admin.list_offsets({tp: OffsetSpec.latest() for tp in tps}, isolation_level=isolation,
                                 request_timeout=20)
    return {tp: fut.result(30) for tp, fut in futures.items()}


def collect_status(bootstrap, app_id, with_state=True, timeout_s=20.0):
    """Everything `machida status` shows, as one JSON-ready dict."""
    admin = AdminClient(clients.admin_config(bootstrap))
    group = describe_group(admin, app_id, timeout_s)
    members = members_of(group, app_id)
    owner = {tp: m["worker"] for m in members for tp in m["partitions"]}
    offsets = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(app_id)],
                                                request_timeout=timeout_s)[app_id].result(timeout_s + 5)
    committed = {(tp.topic, tp.partition): tp for tp in offsets.topic_partitions or [] if tp.offset >= 0}
    metadata = admin.list_topics(timeout=timeout_s).topics
    prefix = f"{app_id}-"
    repartition = sorted(t for t in metadata if t.startswith(prefix) and t.endswith(REPARTITION_SUFFIX))
    consumed = {t for t, _ in committed} | {t for t, _ in owner}
    sources = sorted(t for t in consumed if t not in repartition and t in metadata)
    tps = [(t, p) for t in sources + repartition for p in sorted(metadata[t].partitions)]
    ends = {(tp.topic, tp.partition): r.offset
            for tp, r in _end_offsets(admin, [TopicPartition(t, p) for t, p in tps]).items()}
    partitions = []
    for t, p in tps:
        tp = committed.get((t, p))
        mark = parse_offset_metadata(tp.metadata) if tp is not None else {}
        row = {"topic": t, "partition": p, "kind": "repartition" if t in repartition else "source",
               "worker": owner.get((t, p)), "committed": tp.offset if tp else None, "end": ends.get((t, p)),
               "lag": (ends[(t, p)] - (tp.offset if tp else 0)) if (t, p) in ends else None,
               "checkpoint_ms": mark.get("t"), "checkpointed_by": mark.get("w")}
        if t in repartition:
            row["state"] = t[len(prefix):-len(REPARTITION_SUFFIX)]
            row["event_time_ms"] = mark.get("et")
            row["entities"] = None
        partitions.append(row)
    if with_state:
        for t in repartition:
            changelog = t[:-len(REPARTITION_SUFFIX)] + CHANGELOG_SUFFIX
            if changelog not in metadata:
                continue
            counts = count_changelog_keys(bootstrap, changelog, sorted(metadata[changelog].partitions))
            for row in partitions:
                if row["topic"] == t:
                    row["entities"] = counts.get(row["partition"])
    workers = []
    for m in sorted(members, key=lambda m: m["worker"]):
        mine = [r for r in partitions if r["worker"] == m["worker"]]
        entities = [r["entities"] for r in mine if r["kind"] == "repartition"]
        workers.append({**{k: m[k] for k in ("worker", "client_id", "member_id", "host")},
                        "partitions": [{"topic": t, "partition": p} for t, p in m["partitions"]],
                        "entities": (sum(entities) if None not in entities else None) if with_state else None,
                        "lag": sum(r["lag"] or 0 for r in mine)})
    checkpoints = [r["checkpoint_ms"] for r in partitions if r["checkpoint_ms"] is not None]
    return {"application_id": app_id, "group_state": group.state.name.lower(),
            "coordinator": f"{group.coordinator.host}:{group.coordinator.port}" if group.coordinator else None,
            "workers": workers, "partitions": partitions,
            "last_checkpoint_ms": max(checkpoints) if checkpoints else None}


# --- the commands ---------------------------------------------------------------------------------
def _time(ms):
    if ms is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000:03d}Z"


def _table(header, rows):
    cells = [[("-" if c is None else str(c)) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    return "\n".join(lines)


def format_status(status):
    def ranges(parts):
        by = {}
        for tp in parts:
            by.setdefault(tp["topic"], []).append(tp["partition"])
        return "; ".join(f"{t} {sorted(ps)}" for t, ps in sorted(by.items())) or "nothing"
    out = [f"application {status['application_id']}: group {status['group_state']}, "
           f"{len(status['workers'])} worker(s), last checkpoint {_time(status['last_checkpoint_ms'])}", ""]
    out.append(_table(["worker", "host", "client id", "state entities", "lag", "partitions"],
                      [(w["worker"], w["host"], w["client_id"], w["entities"], w["lag"], ranges(w["partitions"]))
                       for w in status["workers"]]))
    out.append("")
    out.append(_table(["topic", "partition", "worker", "committed", "end", "lag", "state entities", "event time",
                       "last checkpoint", "by"],
                      [(r["topic"], r["partition"], r["worker"], r["committed"], r["end"], r["lag"],
                        r.get("entities", ""), _time(r["event_time_ms"]) if "event_time_ms" in r else "",
                        _time(r["checkpoint_ms"]), r["checkpointed_by"]) for r in status["partitions"]]))
    return "\n".join(out)


def shrink(bootstrap, app_id, names=None, count=None, wait_s=120.0):
    """Tell workers `names` (or `count` of them: the last by name) to leave; wait until the group no
    longer has them. Returns the names told; ValueError for a request that cannot be met."""
    admin = AdminClient(clients.admin_config(bootstrap))
    present = sorted({m["worker"] for m in members_of(describe_group(admin, app_id), app_id)})
    if names:
        unknown = sorted(set(names) - set(present))
        if unknown:
            raise ValueError(f"not in group {app_id}: {', '.join(unknown)} "
                             f"(its workers: {', '.join(present) or 'none'})")
        chosen = sorted(set(names))
    else:
        if count is None or count < 1:
            raise ValueError("--count must be at least 1")
        chosen = present[len(present) - count:] if count <= len(present) else present
    if len(chosen) >= len(present):
        raise ValueError(f"that would leave no worker in group {app_id} ({len(present)} running): "
                         f"stop the application with SIGTERM instead")
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    request = uuid.uuid4().hex
    producer.produce(control_topic(app_id), json.dumps(
        {"command": "shrink", "workers": chosen, "request": request, "issued_ms": int(time.time() * 1000)}).encode())
    if producer.flush(30) > 0:
        raise KafkaException(KafkaError(KafkaError._TIMED_OUT, f"could not write to {control_topic(app_id)}"))
    deadline = time.monotonic() + wait_s
    while wait_s > 0:
        try:
            still = {m["worker"] for m in members_of(describe_group(admin, app_id), app_id)} & set(chosen)
        except KafkaException:
            still = set(chosen)
        if not still:
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"still in group {app_id} after {wait_s:.0f} s: {', '.join(sorted(still))}")
        time.sleep(0.5)
    return chosen


def parser():
    p = argparse.ArgumentParser(prog="machida", description="Operations on a running application.")
    sub = p.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--application-id", default=os.environ.get("WALLAROO_APPLICATION_ID"), required=
                        "WALLAROO_APPLICATION_ID" not in os.environ, help="the application's consumer group")
    common.add_argument("--bootstrap-servers", default=os.environ.get("WALLAROO_BOOTSTRAP_SERVERS", "127.0.0.1:9092"))
    status = sub.add_parser("status", parents=[common], help="workers, partitions, state entities, lag, event "
                            "time and last checkpoint of an application")
    status.add_argument("--json", action="store_true", help="print JSON instead of tables")
    status.add_argument("--no-state", action="store_true", help="do not read the changelogs to count state entities")
    shrink_ = sub.add_parser("shrink", parents=[common], help="tell workers to checkpoint, leave the group and exit")
    which = shrink_.add_mutually_exclusive_group(required=True)
    which.add_argument("--workers", help="comma-separated worker names (their --name)")
    which.add_argument("--count", type=int, help="how many workers to remove (the last ones by name)")
    shrink_.add_argument("--wait-s", type=float, default=120.0,
                         help="how long to wait for them to leave the group; 0: do not wait (default %(default)s)")
    return p


def main(argv):
    opts = parser().parse_args(argv)
    logging.basicConfig(level="WARNING", stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if opts.command == "status":
            status = collect_status(opts.bootstrap_servers, opts.application_id, with_state=not opts.no_state)
            print(json.dumps(status, indent=2) if opts.json else format_status(status))
        else:
            names = [n.strip() for n in opts.workers.split(",") if n.strip()] if opts.workers else None
            told = shrink(opts.bootstrap_servers, opts.application_id, names, opts.count, opts.wait_s)
            print(f"{', '.join(told)} {'left' if opts.wait_s > 0 else 'told to leave'} group {opts.application_id}")
    except (ValueError, TimeoutError, KafkaException) as e:
        sys.exit(f"machida {opts.command}: {e}")
    return 0
