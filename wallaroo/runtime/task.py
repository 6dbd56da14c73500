"""The task: what a worker does with each record it consumes, whoever feeds it.

Source records are decoded and run through the stateless steps; a message reaching a state step goes
to the collector as a repartition record, keyed by its partition key, for whoever owns that key's
partition; repartition records are applied to the live state objects; watermark records move a state
partition's event time on. The Kafka worker feeds it consumed messages and the local runner feeds it
in-memory ones (anything with confluent-kafka's Message accessors), so both run this same code.
"""
from . import topics
from .event_time import WATERMARK_HEADERS, SourceClock, decode_watermark, encode_watermark, record_time
from .routing import STEP_HEADER, WATERMARK_HEADER, KeyRouter, header, key_bytes, parse_step_header, step_header
from .state import StateStore
from .steps import Executor, StepError, encode

class Task:
    """Processing of one application's records. `collector` receives what it produces:
    `repartition(topic, partition, key, value, headers, ts)`, `sink(topic, value, key, ts)`,
    `dead_letter(message, step, error)` and `hook_failed(state name, partition, StepError)` (an
    on_event_time that raised: there is no record to dead-letter)."""

    def __init__(self, app, app_id, serde, partitions, collector, name="worker"):
        self.app = app
        self.serde = serde
        self.partitions = partitions
        self.collector = collector
        self.name = name
        self.executor = Executor(app, self._route, self._sink)
        self.clock = SourceClock()          # newest source event time, for watermarks
        self.current_ts = None              # event time of what is processed now: stamps outputs
        self.stats = {"in": 0, "state": 0, "out": 0, "dead": 0}

        self.decoders = {}                  # source topic -> [(pipeline index, plain decoder function)]
        for pi, p in enumerate(app.pipelines):
            decode = getattr(p.source.decoder, "func", p.source.decoder)
            self.decoders.setdefault(p.source.topic, []).append((pi, decode))
        self.stores = {}                    # repartition topic -> StateStore
        self.state_topic = {}               # state name -> repartition topic
        for ps in self.executor.state_steps.values():
            name_ = ps.step.state_name
            if name_ not in self.state_topic:
                topic = topics.repartition_topic(app_id, name_)
                self.state_topic[name_] = topic
                self.stores[topic] = StateStore(name_, ps.step.state_class, topics.changelog_topic(app_id, name_))
        self.routers = {ps.id: KeyRouter(ps.step.partition_keys, partitions)
                        for ps in self.executor.state_steps.values()}
        self.headers = {ps.id: [(STEP_HEADER, step_header(ps.id))] for ps in self.executor.state_steps.values()}
        self.step_ids = {}                  # header value -> step identity, parsed once

    @property
    def source_topics(self):
        return list(self.decoders)

    # --- records ------------------------------------------------------------------------------
    def process_source(self, m):
        ts = record_time(m)
        self.clock.saw(ts)
        self.current_ts = ts
        self.stats["in"] += 1
        for pi, decode in self.decoders[m.topic()]:
            try:
                data = decode(m.value()) if decode is not None else m.value()
            except Exception as e:  # noqa: BLE001 - user code
                self.dead_letter(m, "decoder", e)
                continue
            try:
                self.executor.run(pi, 0, data)
            except StepError as e:
                self.dead_letter(m, e.step_name, e.cause)

    def process_repartition(self, m):
        store = self.stores[m.topic()]
        p = m.partition()
        headers = m.headers()
        if header(headers, WATERMARK_HEADER) is not None:
            self.advance(store, p, decode_watermark(m.value()))
            return
        self.stats["state"] += 1
        ts = record_time(m)
        self.current_ts = ts
        kb = m.key()
        try:
            ps = self.executor.state_step(self._step_id(header(headers, STEP_HEADER)))
        except LookupError as e:
            self.dead_letter(m, "route", e)
            return
        try:
            state = store.get(p, kb)
            if self.executor.apply_state(ps, state, self.serde.loads(m.value()), ts):
                store.changed(p, kb)
        except StepError as e:
            store.changed(p, kb)          # it may have half-changed before raising
            self.dead_letter(m, e.step_name, e.cause)
        except Exception as e:  # noqa: BLE001 - deserialize
            self.dead_letter(m, "deserialize", e)

    def _step_id(self, value):
        if value is None:
            raise LookupError(f"repartition record without a {STEP_HEADER} header")
        step_id = self.step_ids.get(value)
        if step_id is None:
            try:
                step_id = parse_step_header(value)
            except ValueError as e:
                raise LookupError(str(e)) from e
            self.step_ids[value] = step_id
        return step_id

    def advance(self, store, p, wm):
        """Event time of state partition `p` reached `wm`: run every state object's on_event_time."""
        if wm <= store.event_time.get(p, -1):
            return
        store.event_time[p] = wm
        self.current_ts = wm
        for kb, state in list(store.partitions.get(p, {}).items()):
            try:
                if self.executor.advance_event_time(store.name, state, wm):
                    store.changed(p, kb)
            except StepError as e:
                store.changed(p, kb)
                self.stats["dead"] += 1
                self.collector.hook_failed(store.name, p, e)

    def _route(self, ps, data):
        try:
            kb = key_bytes(ps.step.key_for(data))
            partition = self.routers[ps.id].partition_for(kb)
            value = self.serde.dumps(data)
        except Exception as e:  # noqa: BLE001 - the partitioner, a key outside partition_keys, serialize
            raise StepError(ps.name, e) from e
        self.collector.repartition(self.state_topic[ps.step.state_name], partition, kb, value,
                                   self.headers[ps.id], self.current_ts)

    def _sink(self, pi, data):
        records = []                    # all sinks encode before any writes: an output goes to all or none
        for sink in self.app.pipelines[pi].sinks:      # none when the pipeline ended with done()
            try:
                records.append((sink.topic, *encode(sink, data)))
            except Exception as e:  # noqa: BLE001 - user code, or an output no sink can take
                raise StepError("encoder", e) from e
        for topic, value, key, partition in records:
            self.stats["out"] += 1
            self.collector.sink(topic, value, key, self.current_ts, partition)

    def dead_letter(self, m, step, error):
        self.stats["dead"] += 1
        self.collector.dead_letter(m, step, error)

    # --- checkpoint boundaries -----------------------------------------------------------------
    def emit_watermarks(self):
        """Send the newest source event time to every state partition; return it (None if not new).

        Called at a checkpoint, inside its transaction, so watermarks follow the data sent before them."""
        wm = self.clock.watermark_due()
        if wm is not None:
            for topic in self.stores:
                for p in range(self.partitions):
                    self.collector.repartition(topic, p, None, encode_watermark(wm), WATERMARK_HEADERS, wm)
        return wm

    def changelog_records(self):
        """(changelog topic, partition, key bytes, state bytes) for every state object changed since
        the last call."""
        for store in self.stores.values():
            for p, kb, blob in store.changelog_records():
                yield store.changelog, p, kb, blob

    def drop_state(self, partitions=None):
        """Forget state of `partitions` (TopicPartitions), or all of it."""
        if partitions is None:
            for store in self.stores.values():
                store.drop_all()
            return
        for tp in partitions:
            if tp.topic in self.stores:
                self.stores[tp.topic].drop(tp.partition)
