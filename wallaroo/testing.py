"""Run an application in memory, for users' unit tests: no Kafka, the worker's own processing code.

    from wallaroo.testing import run_local
    result = run_local(star_leaders, [line1, line2], args=["--kafka_source_topic", "in", ...])
    assert result.values == [...]

The records go through the runtime's task (`wallaroo/runtime/task.py`), as on a Kafka worker: the same
step executor, key router, state store, serialization across the state step (the module's
serialize/deserialize, else the data codec, so messages that are not data fail here too), dead letters naming
the failing step, and event time that reaches state partitions through watermarks at checkpoint
boundaries. Only the transport is in memory. The project's own engine tests run on the real broker.
"""
import json
import time
from collections import deque
from dataclasses import dataclass, field

from .builder import Application, ApplicationBuilder
from .runtime import topics
from .runtime.event_time import DEFAULT_MAX_EVENT_TIME_SKEW_MS
from .runtime.metrics import event_time_lag_ms
from .runtime.queries import answer
from .runtime.routing import describe_key, key_from_bytes
from .runtime.serde import Serde
from .runtime.state import StoredRecord
from .runtime.task import Task
from .runtime.edges import bind


@dataclass
class Watermark:
    """An input item that moves event time on without a record (as idle partitions see it on Kafka):
    the source's event time reaches `event_time_ms`, then a checkpoint boundary delivers it."""
    event_time_ms: int


@dataclass
class Checkpoint:
    """An input item marking a checkpoint boundary: watermarks go out, changed state is saved."""


@dataclass
class SinkRecord:
    topic: str
    value: bytes
    key: bytes | None
    timestamp: int | None
    partition: int | None = None      # what a 0.5 encoder's (value, key, partition) asked for


@dataclass
class DeadLetter:
    topic: str
    value: bytes
    error: str
    step: str = ""


@dataclass
class LocalResult:
    outputs: list = field(default_factory=list)       # SinkRecords, in order
    dead_letters: list = field(default_factory=list)
    states: dict = field(default_factory=dict)        # state name -> {partition key: state object}
    metrics: dict = field(default_factory=dict)       # the worker's counters: stack_contract.metrics.Snapshot
    _task: object = field(default=None, repr=False)
    checkpoints: int = 0

    def query(self, state, method, arg):
        """A @wallaroo.query answer as a worker's --query-port gives it: {"value", "as_of"};
        LookupError for an unknown state or query, ValueError for a bad argument."""
        status, body = answer(self._task, state, method, arg, self.checkpoints)
        if status == 400:
            raise ValueError(body["error"])
        if status != 200:
            raise LookupError(body["error"])
        return json.loads(json.dumps(body))       # what a client gets: data, nothing shared with the state

    @property
    def values(self):
        return [r.value for r in self.outputs]


# An in-memory record with the accessors of confluent-kafka's Message that the task uses.
LocalMessage = StoredRecord


class LocalCollector:
    """Where the task's output goes in memory: repartition records queue up for the state step,
    changelog records overwrite by key as compaction would."""

    def __init__(self, result):
        self.result = result
        self.queue = deque()
        self.offsets = {}
        self.changelog = {}           # (changelog topic, key bytes) -> state bytes

    def repartition(self, topic, partition, key, value, headers, ts):
        offset = self.offsets[(topic, partition)] = self.offsets.get((topic, partition), -1) + 1
        self.queue.append(LocalMessage(topic, partition, offset, key, value, headers, ts))

    def sink(self, topic, value, key, ts, partition=None):
        self.result.outputs.append(SinkRecord(topic, value, key, ts, partition))

    def dead_letter(self, m, step, error):
        self.result.dead_letters.append(DeadLetter(m.topic(), m.value(), _describe(step, error), str(step)))

    def hook_failed(self, state_name, partition, error):
        self.result.dead_letters.append(DeadLetter(state_name, b"", str(error), error.step_name))


def _describe(step, error):
    return f"step {step!r} raised {type(error).__name__}: {error}"


def load_application(app, args=None):
    """Accept an Application, an ApplicationBuilder, or a module with application_setup(args)."""
    if isinstance(app, Application):
        return app, None
    if isinstance(app, ApplicationBuilder):
        return app.build(), None
    built = app.application_setup(list(args or []))
    if isinstance(built, ApplicationBuilder):
        built = built.build()
    return built, app


def run_local(app, inputs, args=None, partitions=4, checkpoint_every=1, unsafe_pickle=False,
              max_event_time_skew_ms=DEFAULT_MAX_EVENT_TIME_SKEW_MS, local_state=False):
    """Feed `inputs` to the application's source(s) and return what its sinks would receive.

    `inputs` items are bytes, `(bytes, timestamp_ms)`, `Watermark(ms)` or `Checkpoint()`; with a dict
    {topic: items} each source topic gets its own, else every source gets every item. A checkpoint
    boundary follows every `checkpoint_every` records (None: only at `Checkpoint()`/`Watermark()` items
    and the end); there, as on Kafka, the newest source event time reaches every one of the
    `partitions` state partitions and runs `on_event_time`. Errors in `on_event_time`, which a Kafka
    worker logs and counts, are listed in `dead_letters` with an empty value. `unsafe_pickle` and
    `max_event_time_skew_ms` are machida's --unsafe-pickle and --max-event-time-skew; every input item
    comes from partition 0 of its topic. `result.metrics` holds the counters a Kafka worker reports
    (stack_contract.metrics.Snapshot), each checkpoint boundary counting as a checkpoint.

    Every message for a state step is serialized and deserialized on its way, as between two
    workers, so a deserialize that does not undo serialize fails here. `local_state=True` applies
    them where they are made instead, as a Kafka worker does for the partitions it owns."""
    application, module = load_application(app, args)
    app_id = topics.application_id(application.name)
    application = bind(application, app_id)       # TCP sources and sinks name their internal topics
    result = LocalResult()
    collector = LocalCollector(result)
    task = Task(application, app_id, Serde(module, application, unsafe_pickle=unsafe_pickle), partitions,
                collector, name="local", max_event_time_skew_ms=max_event_time_skew_ms, metrics=True,
                local_state=local_state)
    result._task = task
    for store in task.stores.values():
        for p in range(partitions):
            store.adopt(p, {})

    def drain():
        while collector.queue:
            task.process_repartition(collector.queue.popleft())

    # Everything queued is applied before each boundary: with local state, every partition is read
    # to its end, as a worker's are once caught up, and takes its watermark at once.
    caught_up = {(topic, p) for topic in task.stores for p in range(partitions)}

    def boundary():
        started = time.perf_counter()
        wm = task.emit_watermarks(local=caught_up)
        drain()
        task.flush_outputs()          # coalescing sinks: the last output of each key since the last boundary
        for topic, _p, kb, blob in task.changelog_records():
            collector.changelog[(topic, kb)] = blob
        if wm is not None:
            task.clock.sent_watermark(wm)
        task.metrics.committed(started)
        result.checkpoints += 1

    by_topic = inputs if isinstance(inputs, dict) else {None: inputs}
    count = 0
    for src_topic, items in by_topic.items():
        targets = task.source_topics if src_topic is None else [src_topic]
        for item in items:
            if isinstance(item, Checkpoint):
                boundary()
                continue
            if isinstance(item, Watermark):
                task.clock.saw(item.event_time_ms)
                boundary()
                continue
            raw, ts = item if isinstance(item, tuple) else (item, None)
            for topic in targets:
                task.process_source(LocalMessage(topic, 0, count, None, raw, None, ts))
            drain()
            count += 1
            if checkpoint_every and count % checkpoint_every == 0:
                boundary()
    boundary()
    # The final states as a restore would read them back from the changelog.
    stores = {store.changelog: store for store in task.stores.values()}
    result.states = {store.name: {} for store in stores.values()}
    raw = {topic: {} for topic in stores}
    for (topic, ck), blob in collector.changelog.items():
        if blob is not None:
            raw[topic][ck] = blob
    for topic, records in raw.items():
        store = stores[topic]
        table, _saved, _ms, bad = store.read(records)
        if bad:
            _keys, record, error = bad[0]
            raise ValueError(f"state {store.name!r}: the changelog record of {describe_key(record.key())} does "
                             f"not read back: {type(error).__name__}: {error}") from error
        result.states[store.name].update({key_from_bytes(kb): state for kb, state in table.items()})
    result.metrics = task.metrics.snapshot({"dead_letters": task.stats["dead"], "partitions": partitions,
                                            "event_time_lag_ms": event_time_lag_ms(task.clock.newest)})
    return result
