"""Metrics: what each step, pipeline and worker did, as Prometheus text and as snapshots on a topic.

Counted, per pipeline and per step (decoder, computations, state computations, sinks; named as their
decorators name them, a decoder by its function, a sink by its topic):
* `messages_in`: calls of the step; `messages_out`: what it passed on (a decoder: every message it
  decoded, None included, as the first computation gets it; a computation: results that are not None,
  each item of a *_multi one; a state computation: its outputs; a sink: records its encoder made).
* `latency`: the step's own compute time per call, in stack_contract.metrics' fixed bins, sampled:
  the first call and then one in TIME_EVERY are timed, each standing for itself and the untimed calls
  before it (so the histogram's count trails `messages_in` by the calls since the last timed one).
* `end_to_end`, per pipeline: for the same sampled records this worker consumed for the pipeline (a
  source record, or a repartition record on its way into a state step), the time from the moment the
  worker started on it to the commit of the checkpoint that holds its offset, and so everything it
  produced, weighted as above. A
  message crossing a state step makes two such hops, with Kafka's delivery of the committed
  repartition record between them (one, when the worker that made it owns its partition: local
  state). Records of an aborted checkpoint are not observed (they are redone).
Per worker: checkpoints committed and their duration (from collecting the watermarks and changed
state to the commit's return), restores and their time, dead letters, reconnects, consumer lag and
event-time lag (read every SNAPSHOT_INTERVAL_S, not per message), partitions assigned.

Cheap on the hot path: the executor and the task count each call down its step's sample inline (a
wrapper function around each step cost a Python call per step per message: 0.47 µs of the 2.4 µs a
filtered-out star_leaders record took) and, one call in TIME_EVERY, call `timed`, which reads the clock
twice and adds to preallocated counters (`bisect` into a fixed list of bins); end-to-end keeps the
timed records' start times and bins them at the commit. Timing every call cost star_leaders' task
~1.2-1.7 µs per event, a sixth of its CPU (the clock reads and the binning, for steps that take a few
µs). Readers (a Prometheus scrape, the snapshot) copy the counters.
"""
import dataclasses
import json
import logging
import time
from bisect import bisect_left

from stack_contract.metrics import LATENCY_BOUNDS_S, SNAPSHOT_INTERVAL_S, VERSION, metrics_topic  # noqa: F401

log = logging.getLogger("wallaroo.metrics")

NBINS = len(LATENCY_BOUNDS_S) + 1
# One call of a step in this many is timed (after the first); each timed call is weighted by the calls
# it stands for. Percentiles from a systematic sample of 1 in 16 are exact enough for a page at
# thousands of calls a second, and a step called a few times is still timed (its first call).
TIME_EVERY = 16
# Snapshots are observations for a live page, not results: an hour of them, by wall-clock time (they
# are produced with the wall clock as timestamp, unlike the engine's event-time topics), in small
# segments so old ones really go; one partition, keyed by worker.
TOPIC_CONFIG = {"retention.ms": str(3_600_000), "segment.ms": str(600_000),
                "retention.bytes": str(64 * 1024 * 1024), "cleanup.policy": "delete"}
# A snapshot grows with the number of steps; far below this for any real application.
MAX_SNAPSHOT_BYTES = 900_000


class MetricsPortError(RuntimeError):
    """The metrics port cannot be listened on."""


class Histogram:
    """Counts per fixed bin (upper bounds LATENCY_BOUNDS_S, then > 1 s) and the sum of seconds."""
    __slots__ = ("counts", "sum_s")

    def __init__(self):
        self.counts = [0] * NBINS
        self.sum_s = 0.0

    def observe(self, seconds, weight=1):
        """`seconds` observed, standing for `weight` calls."""
        self.counts[bisect_left(LATENCY_BOUNDS_S, seconds)] += weight
        self.sum_s += seconds * weight

    def observe_since(self, starts, weights, now):
        """Observe `now - t` for every t of `starts`, each standing for its weight in `weights`."""
        observe = self.observe
        for t, w in zip(starts, weights):
            observe(now - t, w)

    def as_dict(self):
        return {"counts": list(self.counts), "sum_s": self.sum_s}


class Sample:
    """Which calls are timed: the first, then one in TIME_EVERY. A wrapper counts a call down with
    `left -= 1`; when `left` reaches 0 the call is timed, with the weight `restart()` returns (the calls
    it stands for: itself and the untimed ones before it)."""
    __slots__ = ("left", "weight")

    def __init__(self):
        self.left = self.weight = 1

    def restart(self):
        weight, self.left, self.weight = self.weight, TIME_EVERY, TIME_EVERY
        return weight

    def untimed(self):
        """Calls since the last timed one: not in a histogram yet."""
        return self.weight - self.left


class StepFigures:
    """A step's counts. Every call is in `latency`, weighted, once a later one is timed: the calls are
    its total plus the calls since the last timed one (`sample`, counted down by the step's wrapper;
    a sink's encoder times every call), not counted again; a decoder or sink passes on every call that
    did not raise (`failed`)."""
    __slots__ = ("name", "kind", "passed", "failed", "latency", "sample")

    def __init__(self, name, kind):
        self.name, self.kind = str(name), kind
        self.passed = self.failed = 0
        self.latency = Histogram()
        self.sample = Sample()

    def timed(self, func, *args):
        """A sampled call of the step: timed, weighted by the calls it stands for."""
        w = self.sample.restart()
        t0 = time.perf_counter()
        try:
            return func(*args)
        finally:
            self.latency.observe(time.perf_counter() - t0, w)

    @property
    def messages_in(self):
        return sum(self.latency.counts) + self.sample.untimed()

    @property
    def messages_out(self):
        return self.messages_in - self.failed if self.kind in ("decoder", "sink") else self.passed

    def as_dict(self):
        latency = self.latency.as_dict()
        calls = sum(latency["counts"]) + self.sample.untimed()
        return {"name": self.name, "kind": self.kind, "messages_in": calls,
                "messages_out": calls - self.failed if self.kind in ("decoder", "sink") else self.passed,
                "latency": latency}


class PipelineFigures:
    __slots__ = ("name", "source", "steps", "end_to_end", "starts", "weights", "sample")

    def __init__(self, name, source):
        self.name, self.source = name, source
        self.steps = []
        self.end_to_end = Histogram()
        self.starts = []                # clock readings of the timed records since the last checkpoint
        self.weights = []               # ... and the records each stands for
        self.sample = Sample()          # of the repartition records (Metrics.started)

    def start(self, t, weight):
        self.starts.append(t)
        self.weights.append(weight)

    def as_dict(self):
        return {"name": self.name, "source": self.source, "steps": [s.as_dict() for s in self.steps],
                "end_to_end": self.end_to_end.as_dict()}


class Metrics:
    """One worker's figures. The task wraps its steps with `decoder`, `plan` and `encoder`; the
    checkpointer calls `committed`/`forget`; the worker calls `restored`. `snapshot(figures)` is the
    stack_contract.metrics.Snapshot, with the worker's own `figures` (dead letters, lag...) merged in."""

    def __init__(self, app, application_id, worker):
        self.application, self.worker = application_id, worker
        self.started_ms = int(time.time() * 1000)
        self.pipelines = []
        self.decoders, self.sinks = {}, {}       # pipeline index -> figures; id(sink config) -> figures
        for pi, p in enumerate(app.pipelines):
            pf = PipelineFigures(p.name, getattr(p.source, "topic", None) or "")
            decoder = p.source.decoder if p.source is not None else None
            self.decoders[pi] = StepFigures(getattr(decoder, "__name__", None) or "decoder", "decoder")
            pf.steps.append(self.decoders[pi])
            for s in p.steps:
                pf.steps.append(StepFigures(s.name, "state" if hasattr(s, "state_name") else "computation"))
            for sink in p.sinks:
                self.sinks[id(sink)] = StepFigures(sink.topic, "sink")
                pf.steps.append(self.sinks[id(sink)])
            self.pipelines.append(pf)
        self.checkpoints = 0
        self.checkpoint_latency = Histogram()
        self.restores = 0
        self.restore_seconds = 0.0

    # --- instrumenting the task's steps (once, when it is built) -------------------------------
    def decoder(self, pi):
        """The figures of pipeline `pi`'s decoder: the task counts each call down their sample and
        calls `timed_decode` for the sampled ones."""
        return self.decoders[pi]

    def timed_decode(self, pi, decode, value):
        """A sampled call of pipeline `pi`'s decoder: timed, and its start is the record's start
        for end-to-end (both weighted by the calls it stands for)."""
        fig = self.decoders[pi]
        w = fig.sample.restart()
        t0 = time.perf_counter()
        self.pipelines[pi].start(t0, w)
        try:
            return decode(value)
        finally:
            fig.latency.observe(time.perf_counter() - t0, w)

    def plan(self, plan):
        """The executor's plan with each step's figures, which the executor counts and samples."""
        return [[dataclasses.replace(ps, fig=self.pipelines[ps.pipeline].steps[ps.index + 1]) for ps in steps]
                for steps in plan]

    def started(self, pi):
        """The worker starts on a repartition record for pipeline `pi` (a message applied where it was
        made is in its source record's hop): sampled as the steps are."""
        pf = self.pipelines[pi]
        pf.sample.left -= 1
        if not pf.sample.left:
            pf.start(time.perf_counter(), pf.sample.restart())

    def encoder(self, encode):
        """`encode(sink, data)` counted and timed per sink."""
        figs, clock = self.sinks, time.perf_counter

        def timed(sink, data):
            fig = figs[id(sink)]
            t0 = clock()
            try:
                return encode(sink, data)
            except BaseException:
                fig.failed += 1
                raise
            finally:
                dt = clock() - t0
                fig.latency.counts[bisect_left(LATENCY_BOUNDS_S, dt)] += 1
                fig.latency.sum_s += dt
        return timed

    def deferred(self, sink, seconds):
        """An output taken by `sink` as a wallaroo.Deferred (task.py), in `seconds`: a message into the
        sink's step like any other; rendering and encoding it happen at the checkpoint, in its time."""
        self.sinks[id(sink)].latency.observe(seconds)

    # --- checkpoints and restores ----------------------------------------------------------------
    def committed(self, started):
        """A checkpoint that began at perf_counter() `started` committed: observe it and the records
        it holds."""
        now = time.perf_counter()
        self.checkpoints += 1
        self.checkpoint_latency.observe(now - started)
        for pf in self.pipelines:
            if pf.starts:
                pf.end_to_end.observe_since(pf.starts, pf.weights, now)
                pf.starts.clear()
                pf.weights.clear()

    def forget(self):
        """The open checkpoint was aborted: its records will be redone, and observed then."""
        for pf in self.pipelines:
            pf.starts.clear()
            pf.weights.clear()

    def restored(self, seconds):
        self.restores += 1
        self.restore_seconds += seconds

    # --- readers -------------------------------------------------------------------------------
    def snapshot(self, figures):
        """The Snapshot of now; `figures`: dead_letters, reconnects, consumer_lag, event_time_lag_ms,
        partitions."""
        return {"version": VERSION, "application": self.application, "worker": self.worker,
                "started_ms": self.started_ms, "at_ms": int(time.time() * 1000),
                "pipelines": [pf.as_dict() for pf in self.pipelines],
                "figures": {"checkpoints": self.checkpoints, "checkpoint_latency": self.checkpoint_latency.as_dict(),
                            "restores": self.restores, "restore_seconds": self.restore_seconds,
                            "dead_letters": int(figures.get("dead_letters", 0)),
                            "reconnects": int(figures.get("reconnects", 0)),
                            "consumer_lag": int(figures.get("consumer_lag", 0)),
                            "event_time_lag_ms": figures.get("event_time_lag_ms"),
                            "partitions": int(figures.get("partitions", 0))}}


def event_time_lag_ms(newest_ms):
    """Wall clock minus the newest source event time; None before any."""
    return None if newest_ms is None else int(time.time() * 1000) - newest_ms


def consumer_lag(consumer):
    """(records behind the end on the assigned partitions, partitions assigned), from the consumer's
    positions and the watermarks its fetches cached: no request to the broker."""
    assignment = consumer.assignment()
    lag = 0
    for tp in consumer.position(assignment) if assignment else ():
        try:
            _low, high = consumer.get_watermark_offsets(tp, cached=True)
        except Exception:  # noqa: BLE001 - nothing fetched yet for this partition
            continue
        if high >= 0 and tp.offset >= 0:
            lag += max(0, high - tp.offset)
    return lag, len(assignment)


# --- Prometheus ----------------------------------------------------------------------------------

class PrometheusCollector:
    """Reads the engine's figures at scrape time (a snapshot), never counts itself."""

    def __init__(self, metrics, figures):
        self.metrics, self.figures = metrics, figures

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
        snap = self.metrics.snapshot(self.figures())
        base = [snap["application"], snap["worker"]]
        names = ["application", "worker", "pipeline", "step", "kind"]
        m_in = CounterMetricFamily("wallaroo_step_messages_in", "Messages a step was called with.", labels=names)
        m_out = CounterMetricFamily("wallaroo_step_messages_out", "Messages a step passed on.", labels=names)
        lat = HistogramMetricFamily("wallaroo_step_latency_seconds", "A step's own compute time per message.",
                                    labels=names)
        e2e = HistogramMetricFamily("wallaroo_pipeline_end_to_end_seconds", "From a record's arrival at the "
                                    "worker to the commit of the checkpoint holding its output.",
                                    labels=names[:3])
        for p in snap["pipelines"]:
            e2e.add_metric(base + [p["name"]], *_buckets(p["end_to_end"]))
            for s in p["steps"]:
                labels = base + [p["name"], s["name"], s["kind"]]
                m_in.add_metric(labels, s["messages_in"])
                m_out.add_metric(labels, s["messages_out"])
                lat.add_metric(labels, *_buckets(s["latency"]))
        yield from (m_in, m_out, lat, e2e)
        f, labels = snap["figures"], names[:2]

        def family(kind, name, doc, value):
            fam = kind(name, doc, labels=labels)
            fam.add_metric(base, value)
            return fam
        yield family(CounterMetricFamily, "wallaroo_checkpoints", "Checkpoints committed.", f["checkpoints"])
        ckpt = HistogramMetricFamily("wallaroo_checkpoint_seconds", "Checkpoint duration.", labels=labels)
        ckpt.add_metric(base, *_buckets(f["checkpoint_latency"]))
        yield ckpt
        yield family(CounterMetricFamily, "wallaroo_restores", "State restores.", f["restores"])
        yield family(CounterMetricFamily, "wallaroo_restore_seconds", "Time spent restoring state.",
                     f["restore_seconds"])
        yield family(CounterMetricFamily, "wallaroo_dead_letters", "Dead letters.", f["dead_letters"])
        yield family(CounterMetricFamily, "wallaroo_reconnects", "Kafka clients replaced.", f["reconnects"])
        yield family(GaugeMetricFamily, "wallaroo_consumer_lag_records",
                     "Records behind on the assigned partitions.", f["consumer_lag"])
        yield family(GaugeMetricFamily, "wallaroo_partitions_assigned", "Partitions assigned.", f["partitions"])
        if f["event_time_lag_ms"] is not None:
            yield family(GaugeMetricFamily, "wallaroo_event_time_lag_seconds",
                         "Wall clock minus the newest source event time.", f["event_time_lag_ms"] / 1000.0)


def _buckets(hist):
    from prometheus_client.utils import floatToGoString
    total, out = 0, []
    for bound, n in zip(LATENCY_BOUNDS_S + (float("inf"),), hist["counts"]):
        total += n
        out.append((floatToGoString(bound), total))
    return out, hist["sum_s"]


def serve(metrics, figures, port, host):
    """Serve `/metrics` on host:port from a thread; returns the server (shutdown() stops it)."""
    from prometheus_client import CollectorRegistry, start_http_server
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PrometheusCollector(metrics, figures))
    try:
        server, _thread = start_http_server(port, host, registry=registry)
    except OSError as e:
        raise MetricsPortError(f"cannot serve metrics on {host}:{port}: {e} (another --metrics-port?)") from e
    log.info("metrics: Prometheus text at http://%s:%d/metrics", host, server.server_port)
    return server


class Publisher:
    """Sends snapshots to the metrics topic with a plain producer: they are observations, so they stay
    outside the checkpoint transactions (an aborted checkpoint must not drop one, a read_committed
    reader must not wait for a commit to see one, and a lost or repeated snapshot is harmless: the
    counters are cumulative)."""

    def __init__(self, producer, application_id, worker):
        self.producer, self.topic, self.key = producer, metrics_topic(application_id), worker.encode()

    def publish(self, snapshot):
        value = json.dumps(snapshot, separators=(",", ":")).encode()
        if len(value) > MAX_SNAPSHOT_BYTES:
            log.warning("metrics snapshot of %d bytes not sent (over %d)", len(value), MAX_SNAPSHOT_BYTES)
            return
        try:
            self.producer.produce(self.topic, value, key=self.key)
        except BufferError:           # the broker is away and the queue full: skip this one
            pass
        self.producer.poll(0)

    def close(self, timeout_s=5.0):
        self.producer.flush(timeout_s)
