"""Run an application in memory, for users' unit tests: no Kafka, same semantics.

    from wallaroo.testing import run_local
    result = run_local(star_leaders, [line1, line2], args=["--kafka_source_topic", "in", ...])
    assert result.values == [...]

Messages cross a state step through the module's serialize/deserialize (pickle by default) exactly as
they would cross Kafka, so unpicklable messages fail here too. The Kafka tests do not use this runner.
"""
from collections import defaultdict
from dataclasses import dataclass, field

from .builder import Application, ApplicationBuilder
from .runtime.routing import key_bytes
from .runtime.serde import Serde, dump_state, load_state
from .runtime.steps import Executor, StepError, encode


@dataclass
class Watermark:
    """An input item that moves event time on without a record (as idle partitions see it on Kafka)."""
    event_time_ms: int


@dataclass
class SinkRecord:
    topic: str
    value: bytes
    key: bytes | None
    timestamp: int | None


@dataclass
class DeadLetter:
    topic: str
    value: bytes
    error: str


@dataclass
class LocalResult:
    outputs: list = field(default_factory=list)       # SinkRecords, in order
    dead_letters: list = field(default_factory=list)
    states: dict = field(default_factory=dict)        # state name -> {partition key: state object}

    @property
    def values(self):
        return [r.value for r in self.outputs]


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


def run_local(app, inputs, args=None):
    """Feed `inputs` to the application's source(s) and return what its sinks would receive.

    `inputs` items are bytes, `(bytes, timestamp_ms)`, or `Watermark(ms)`; with a dict
    {topic: items} each source topic gets its own. Event time (`wallaroo.event_time()`, and the
    `on_event_time` hook) follows the largest timestamp seen so far, as on Kafka."""
    application, module = load_application(app, args)
    serde = Serde(module)
    result = LocalResult()
    states = defaultdict(dict)                       # state name -> {key bytes: state}
    keys = {}                                        # key bytes -> original key
    current = {"ts": None}

    def route(pi, si, step, data):
        key = step.key_for(data)
        if step.partition_keys is not None and key not in step.partition_keys:
            raise StepError(step.name, KeyError(f"partition key {key!r} is not in partition_keys"))
        kb = key_bytes(key)
        keys[kb] = key
        table = states[step.state_name]
        state = table.get(kb)
        if state is None:
            state = table[kb] = step.state_class()
        executor.apply_state(pi, si, state, serde.loads(serde.dumps(data)), current["ts"])

    def sink(pi, data):
        cfg = application.pipelines[pi].sink
        value, key = encode(cfg.encoder, data)
        result.outputs.append(SinkRecord(cfg.topic, value, key, current["ts"]))

    executor = Executor(application, route, sink)
    event_time = None

    by_topic = inputs if isinstance(inputs, dict) else {None: inputs}
    for src_topic, items in by_topic.items():
        pipelines = [i for i, p in enumerate(application.pipelines)
                     if src_topic is None or p.source.topic == src_topic]
        for item in items:
            if isinstance(item, Watermark):
                ts, raw = item.event_time_ms, None
            elif isinstance(item, tuple):
                raw, ts = item
            else:
                raw, ts = item, None
            if raw is not None:
                current["ts"] = ts
                for pi in pipelines:
                    src = application.pipelines[pi].source
                    try:
                        data = src.decoder(raw) if src.decoder is not None else raw
                        executor.run(pi, 0, data)
                    except Exception as e:  # noqa: BLE001 - a poison record, as the worker treats it
                        result.dead_letters.append(DeadLetter(src.topic, raw, str(e)))
            if ts is not None and (event_time is None or ts > event_time):
                event_time = ts
                current["ts"] = ts
                for name, table in states.items():
                    for state in table.values():
                        try:
                            executor.advance_event_time(name, state, ts)
                        except StepError as e:
                            result.dead_letters.append(DeadLetter(name, b"", str(e)))
    # States round-trip through pickle as the changelog would store them.
    result.states = {name: {keys[kb]: load_state(dump_state(s)) for kb, s in table.items()}
                     for name, table in states.items()}
    return result
