"""The task: what a worker does with each record it consumes, whoever feeds it.

Source records are decoded and run through the stateless steps; a message reaching a state step goes
to the collector as a repartition record, keyed by its partition key, for whoever owns that key's
partition; repartition records are applied to the live state objects; watermark records move a state
partition's event time on. The Kafka worker feeds it consumed messages and the local runner feeds it
in-memory ones (anything with confluent-kafka's Message accessors), so both run this same code.
"""
import time

from confluent_kafka import TIMESTAMP_NOT_AVAILABLE

from . import topics
from .event_time import (DEFAULT_MAX_EVENT_TIME_SKEW_MS, WATERMARK_HEADERS, SourceClock, decode_watermark,
                         encode_watermark, record_time)
from .metrics import Metrics
from .routing import STEP_HEADER, WATERMARK_HEADER, KeyRouter, header, key_bytes, parse_step_header, step_header
from .state import StateStore, StoredRecord
from .steps import Executor, StepError, encode
from ..context import set_event_time
from ..deferred import Deferred

# The largest message that crosses a state step: below the repartition topic's max.message.bytes (the
# broker's default, 1 MiB, with room for headers). Checked when routing, so a message Kafka would refuse
# (which would abort the checkpoint, and the worker would re-read the same record forever) is a dead
# letter instead, and when reading, so a record written by someone else is never loaded whole.
MAX_MESSAGE_BYTES = 1_000_000


_PLAIN_KEYS = (int, str, bytes)     # keys remembered by value (exactly these types: True is not 1 here)


def _raw_value(value):
    """The decoder of a source without one: the record's value as it is."""
    return value


class Task:
    """Processing of one application's records. `collector` receives what it produces:
    `repartition(topic, partition, key, value, headers, ts)`, `sink(topic, value, key, ts)`,
    `dead_letter(message, step, error)` and `hook_failed(state name, partition, StepError)` (an
    on_event_time that raised: there is no record to dead-letter).

    Every record read from an internal topic is checked before it is used: a watermark must be one; a
    repartition record must name a step and hold a value within MAX_MESSAGE_BYTES that deserializes
    into a message whose partition key is the record's key, of the partition it was read from; anything
    else is a dead letter. A source record whose
    timestamp is too far ahead (SourceClock.admit) is a dead letter too. A state computation (or what
    follows it) that raises leaves its state object as it was before the message: the object is
    rebuilt from its value at the last checkpoint and the messages applied since (state
    computations must be deterministic, as exactly-once already needs), then the message is
    dead-lettered. So a message of the wrong shape cannot leave an object half-changed, whatever the
    application checks."""

    def __init__(self, app, app_id, serde, partitions, collector, name="worker",
                 max_event_time_skew_ms=DEFAULT_MAX_EVENT_TIME_SKEW_MS, reset_event_time=False, metrics=False,
                 local_state=False):
        self.app = app
        self.metrics = Metrics(app, app_id, name) if metrics else None    # metrics.py: None when off
        self.encode = encode if self.metrics is None else self.metrics.encoder(encode)
        self.serde = serde
        self.partitions = partitions
        self.collector = collector
        self.name = name
        self.executor = Executor(app, self._route, self._sink, self.metrics)
        self.clock = SourceClock(max_event_time_skew_ms)   # newest source event time, for watermarks
        self.current_ts = None              # event time of what is processed now: stamps outputs
        self.stats = {"in": 0, "state": 0, "out": 0, "dead": 0}
        # Outputs of coalescing sinks since the last checkpoint: (topic, key) -> (value, ts, partition),
        # the last one of each key only; produced by flush_outputs, inside the checkpoint's transaction.
        self.coalesced = {}
        self.superseded = 0                 # coalesced outputs replaced by a newer one of their key
        # Deferred outputs for coalescing sinks since the last checkpoint, the newest of each state
        # object: (pipeline, store, partition, key bytes) -> (Deferred, ts); rendered by flush_outputs.
        self.deferred = {}
        # Per pipeline: do all its sinks coalesce (Deferred outputs wait for the checkpoint)?
        self.coalescing = [bool(p.sinks) and all(getattr(s, "coalesce", False) for s in p.sinks)
                           for p in app.pipelines]
        self._origin = None                 # (store, partition, key bytes) of the state step running
        # A message for a state partition this worker owns is applied at once, as Wallaroo delivered
        # to local steps, instead of crossing the repartition topic and coming back: its effect on the
        # state is committed with the source offset that made it, in the same checkpoint. Off, every
        # message crosses (deserialized on arrival): run_local's default, for users' tests.
        self.local_state = local_state

        # source topic -> [(pipeline index, plain decoder function, its metrics figures or None)]
        self.decoders = {}
        for pi, p in enumerate(app.pipelines):
            decode = getattr(p.source.decoder, "func", p.source.decoder) or _raw_value
            fig = self.metrics.decoder(pi) if self.metrics is not None else None
            self.decoders.setdefault(p.source.topic, []).append((pi, decode, fig))
        self.stores = {}                    # repartition topic -> StateStore
        self.state_topic = {}               # state name -> repartition topic
        learn = (lambda ms: None) if reset_event_time else self.clock.learn_reference
        for ps in self.executor.state_steps.values():
            name_ = ps.step.state_name
            if name_ not in self.state_topic:
                topic = topics.repartition_topic(app_id, name_)
                self.state_topic[name_] = topic
                self.stores[topic] = StateStore(
                    name_, ps.step.state_class, topics.changelog_topic(app_id, name_),
                    serde.state_codec(name_, ps.step.state_class),
                    on_bad_record=lambda m, e: self.dead_letter(m, "restore", e), on_event_time=learn,
                    catch_up=self._catch_up)
        self.keys = {ps.id: ps.step.key_function() for ps in self.executor.state_steps.values()}
        # Where a key goes, (key bytes, partition), remembered for steps with a list of partition keys
        # (a bounded set; any other key raises in the router and is not remembered).
        self.placements = {ps.id: {} for ps in self.executor.state_steps.values()
                           if ps.step.partition_keys is not None}
        self.routers = {ps.id: KeyRouter(ps.step.partition_keys, partitions)
                        for ps in self.executor.state_steps.values()}
        self.headers = {ps.id: [(STEP_HEADER, step_header(ps.id))] for ps in self.executor.state_steps.values()}
        self.step_ids = {}                  # header value -> step identity, parsed once

    @property
    def source_topics(self):
        return list(self.decoders)

    # --- records ------------------------------------------------------------------------------
    def process_source(self, m):
        """One source record (process_batch of one)."""
        self.process_batch((m,), {})

    def process_batch(self, batch, offsets):
        """A consumer's batch, in order: source records decoded and run through their pipelines,
        repartition records applied (process_repartition), each one's next offset noted in `offsets`;
        returns the batch's events (partition EOFs, errors) for the worker. One loop, with what it
        uses bound once: per record, a call and these lookups cost as much as decoding a record that
        the first step drops."""
        events = []
        decoders, clock, run, metrics = self.decoders, self.clock, self.executor.run, self.metrics
        sources = 0
        for m in batch:
            if m.error() is not None:
                events.append(m)
                continue
            topic = m.topic()
            entries = decoders.get(topic)
            if entries is None:
                self.process_repartition(m)
                offsets[(topic, m.partition())] = m.offset() + 1
                continue
            sources += 1
            offsets[(topic, m.partition())] = m.offset() + 1
            kind, ts = m.timestamp()            # (event_time.record_time, inlined)
            if kind == TIMESTAMP_NOT_AVAILABLE or ts < 0:
                ts = None
            newest = clock.newest
            if ts is not None and (newest is None or ts > newest):    # (an older record is always admitted)
                refused = clock.admit(ts)
                if refused is not None:
                    self.dead_letter(m, "event time", ValueError(refused))
                    continue
            self.current_ts = ts
            for pi, decode, fig in entries:
                try:
                    if fig is None:
                        data = decode(m.value())
                    else:                       # counted, and one call in TIME_EVERY timed (metrics.py)
                        sample = fig.sample
                        sample.left -= 1
                        data = decode(m.value()) if sample.left else metrics.timed_decode(pi, decode, m.value())
                except Exception as e:  # noqa: BLE001 - user code
                    if fig is not None:
                        fig.failed += 1
                    self.dead_letter(m, "decoder", e)
                    continue
                try:
                    run(pi, 0, data)
                except StepError as e:
                    self.dead_letter(m, e.step_name, e.cause)
        self.stats["in"] += sources
        return events

    def process_repartition(self, m):
        store = self.stores[m.topic()]
        p = m.partition()
        headers = m.headers()
        value = m.value()
        if header(headers, WATERMARK_HEADER) is not None:
            try:
                wm = decode_watermark(value)
            except ValueError as e:
                self.dead_letter(m, "watermark", e)
                return
            self.advance(store, p, wm)
            return
        self.stats["state"] += 1
        ts = record_time(m)
        self.current_ts = ts
        kb = m.key()
        try:
            ps = self.executor.state_step(self._step_id(header(headers, STEP_HEADER)))
            if self.metrics is not None:
                self.metrics.started(ps.pipeline)       # a record on its way into a state step
            if value is None or len(value) > MAX_MESSAGE_BYTES:
                raise LookupError("no value" if value is None else
                                  f"value of {len(value)} bytes, over the {MAX_MESSAGE_BYTES} a message may have")
        except LookupError as e:
            self.dead_letter(m, "route", e)
            return
        try:
            data = self.serde.loads(value)
            own_key = key_bytes(self.keys[ps.id](data))
        except Exception as e:  # noqa: BLE001 - deserialize, the partitioner (user code) or the data codec
            self.dead_letter(m, "deserialize", e)
            return
        try:
            # The message must belong to the record's key, and the key to this partition: a record
            # cannot reach, or create, a state object its message does not route to.
            if own_key != kb:
                raise LookupError(f"the record's key {kb!r:.60} is not its message's partition key {own_key!r:.60}")
            owner = self.routers[ps.id].partition_for(kb)
            if owner != p:
                raise LookupError(f"key {kb!r:.60} belongs to partition {owner}, not {p}")
            state = store.get(p, kb)
        except (LookupError, KeyError) as e:
            self.dead_letter(m, "route", e)
            return
        try:
            self._apply(store, p, kb, state, ps, data, ts)
        except StepError as e:
            self.dead_letter(m, e.step_name, e.cause)

    def _apply(self, store, p, kb, state, ps, data, ts):
        """Run state step `ps` on `data` and `kb`'s object of partition `p`, journaled; a StepError
        leaves the object as it was before (rebuilt) and goes on up."""
        store.record(p, kb, (ps, data, ts))
        origin, self._origin = self._origin, (store, p, kb)
        try:
            changed = self.executor.apply_state(ps, state, data, ts)
        except StepError:
            self._rebuild(store, p, kb)
            raise
        finally:
            self._origin = origin       # (a direct step inside another's continuation: the outer's)
        if changed:
            store.changed(p, kb)

    def _rebuild(self, store, p, kb):
        """The last operation on `kb`'s object raised: make the object what it was before it, from its
        value at the last checkpoint and the operations since (their outputs were already sent)."""
        ops = store.journal[p][kb]
        ops.pop()
        try:
            state = store.as_saved(p, kb)
            for ps, data, ts in ops:
                set_event_time(ts)
                try:
                    if ps is None:
                        state.on_event_time(data)
                    else:
                        ps.step.computation.func(data, state)   # uncounted: a replay
                finally:
                    set_event_time(None)
        except Exception as e:  # noqa: BLE001 - a computation that is not deterministic
            self.collector.hook_failed(store.name, p, StepError("rebuild", e))
            state = store.as_saved(p, kb)
            ops.clear()
        store.partitions[p][kb] = state

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
            if getattr(state, "on_event_time", None) is not None:
                self._on_event_time(store, p, kb, state, wm)

    def _on_event_time(self, store, p, kb, state, ms):
        """Run one object's on_event_time(ms), journaled (a rebuild replays it); one that raises
        leaves the object as it was."""
        store.record(p, kb, (None, ms, ms))
        origin, self._origin = self._origin, (store, p, kb)
        try:
            if self.executor.advance_event_time(store.name, state, ms):
                store.changed(p, kb)
        except StepError as e:
            self._rebuild(store, p, kb)         # (replays the raw computations: no outputs, no origin)
            self.stats["dead"] += 1
            self.collector.hook_failed(store.name, p, e)
        finally:
            self._origin = origin

    def _catch_up(self, store, p, kb, state, ms):
        """A new object of partition `p`, already at event time `ms`: its on_event_time(ms) first, as
        advance ran it on the others (journaled, so a rebuild replays it)."""
        ts, self.current_ts = self.current_ts, ms
        try:
            self._on_event_time(store, p, kb, state, ms)
        finally:
            self.current_ts = ts

    def _route(self, ps, data):
        try:
            key = self.keys[ps.id](data)
            placements = self.placements.get(ps.id)
            placed = placements.get(key) if placements is not None and type(key) in _PLAIN_KEYS else None
            if placed is None:
                kb = key_bytes(key)
                partition = self.routers[ps.id].partition_for(kb)
                if placements is not None and type(key) in _PLAIN_KEYS:
                    placements[key] = (kb, partition)
            else:
                kb, partition = placed
            # Serialized also for a partition of ours: a message that could not cross Kafka fails the
            # same way wherever its partition is.
            value = self.serde.dumps(data)
            if len(value) > MAX_MESSAGE_BYTES:
                raise ValueError(f"the message serializes to {len(value)} bytes, over the {MAX_MESSAGE_BYTES} "
                                 f"a message crossing a state step may have")
        except Exception as e:  # noqa: BLE001 - the partitioner, a key outside partition_keys, serialize
            raise StepError(ps.name, e) from e
        topic = self.state_topic[ps.step.state_name]
        if self.local_state:
            store = self.stores[topic]
            if partition in store.partitions:
                self._apply_local(store, topic, partition, kb, ps, data, value)
                return
        self.collector.repartition(topic, partition, kb, value, self.headers[ps.id], self.current_ts)

    def _apply_local(self, store, topic, p, kb, ps, data, value):
        """A message for partition `p`, which this worker owns (restored), applied here and now, as
        its repartition record would be on arrival; a computation that raises dead-letters that
        record (`value`: the message serialized)."""
        self.stats["state"] += 1
        try:
            self._apply(store, p, kb, store.get(p, kb), ps, data, self.current_ts)
        except StepError as e:
            record = StoredRecord(topic, p, -1, kb, value, self.headers[ps.id], self.current_ts)
            self.dead_letter(record, e.step_name, e.cause)

    def _sink(self, pi, data):
        if type(data) is Deferred:
            t0 = time.perf_counter()
            origin = self._origin
            if origin is None:
                raise StepError("encoder", TypeError("a wallaroo.Deferred output must come straight from a state step"))
            if self.coalescing[pi]:
                store, p, kb = origin
                slot = (pi, store, p, kb)
                if self.deferred.pop(slot, None) is not None:
                    self.superseded += 1
                self.deferred[slot] = (data, self.current_ts)                  # (now the newest)
                if self.metrics is not None:
                    dt = time.perf_counter() - t0
                    for sink in self.app.pipelines[pi].sinks:
                        self.metrics.deferred(sink, dt)
                return
            try:
                data = data(origin[0].partitions[origin[1]][origin[2]])
            except Exception as e:  # noqa: BLE001 - user code
                raise StepError("encoder", e) from e
        elif self.deferred and self._origin is not None:
            # this object's output made now is newer than the Deferred it left pending
            if self.deferred.pop((pi, *self._origin), None) is not None:
                self.superseded += 1
        records = []                    # all sinks encode before any writes: an output goes to all or none
        for sink in self.app.pipelines[pi].sinks:      # none when the pipeline ended with done()
            try:
                records.append((sink.topic, *self.encode(sink, data), getattr(sink, "coalesce", False)))
            except Exception as e:  # noqa: BLE001 - user code, or an output no sink can take
                raise StepError("encoder", e) from e
        for topic, value, key, partition, coalesce in records:
            if coalesce and key is not None:
                if self.coalesced.pop((topic, key), None) is not None:
                    self.superseded += 1
                self.coalesced[(topic, key)] = (value, self.current_ts, partition)   # (now the newest)
                continue
            self.stats["out"] += 1
            self.collector.sink(topic, value, key, self.current_ts, partition)

    def flush_outputs(self):
        """Produce the coalesced outputs: at a checkpoint, before its changelog and commit."""
        coalesced, self.coalesced = self.coalesced, {}
        for (topic, key), (value, ts, partition) in coalesced.items():
            self.stats["out"] += 1
            self.collector.sink(topic, value, key, ts, partition)
        deferred, self.deferred = self.deferred, {}
        for (pi, store, p, kb), (output, ts) in deferred.items():
            state = store.partitions.get(p, {}).get(kb)
            if state is None:           # dropped since (not ours any more): nothing to show
                continue
            try:            # (counted into the sink when made: metrics.deferred; timed with the checkpoint)
                data = output(state)
                records = [(sink.topic, *encode(sink, data)) for sink in self.app.pipelines[pi].sinks]
            except Exception as e:  # noqa: BLE001 - user code: reported as on_event_time's errors are
                self.stats["dead"] += 1
                self.collector.hook_failed(store.name, p, StepError("encoder", e))
                continue
            for topic, value, key, partition in records:
                self.stats["out"] += 1
                self.collector.sink(topic, value, key, ts, partition)

    def drop_outputs(self):
        """Forget the coalesced outputs: the progress since the last checkpoint is void."""
        self.coalesced = {}
        self.deferred = {}

    def dead_letter(self, m, step, error):
        self.stats["dead"] += 1
        self.collector.dead_letter(m, step, error)

    # --- checkpoint boundaries -----------------------------------------------------------------
    def emit_watermarks(self, local=()):
        """Send the newest source event time to every state partition; return it (None if not new).

        Called at a checkpoint, inside its transaction, so watermarks follow the data sent before them.
        With local state, a partition this worker owns whose (repartition topic, partition) is in
        `local` (read to its end since it was assigned) reaches that time at once, as its messages
        are applied at once: everything this worker sent it before was read back, so nothing of ours
        can be behind the watermark. The others get a watermark record."""
        wm = self.clock.watermark_due()
        if wm is not None:
            for topic, store in self.stores.items():
                for p in range(self.partitions):
                    if self.local_state and (topic, p) in local and p in store.partitions:
                        self.advance(store, p, wm)
                    else:
                        self.collector.repartition(topic, p, None, encode_watermark(wm), WATERMARK_HEADERS, wm)
        return wm

    def changelog_records(self):
        """(changelog topic, partition, key bytes, value) for every state object changed since the last
        call (value None: a tombstone), and each state partition's event time when it moved. Raises
        serde.StateEncodingError, saying how to fix it, for an object that is not data."""
        for store in self.stores.values():
            for p, kb, blob in store.changelog_records():
                yield store.changelog, p, kb, blob

    def drop_state(self, partitions=None):
        """Forget state of `partitions` (TopicPartitions), or all of it."""
        if partitions is None:
            for store in self.stores.values():
                store.drop_all()
            self.drop_outputs()     # all state goes back to its checkpoint: so do the outputs since
            return
        for tp in partitions:
            if tp.topic in self.stores:
                self.stores[tp.topic].drop(tp.partition)
