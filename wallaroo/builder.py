"""ApplicationBuilder: the 0.4 way to describe an application as pipelines of steps."""
import copy
from dataclasses import dataclass, field

from . import decorators
from .kafka import KafkaSinkConfig, KafkaSourceConfig, log_level_error
from .runtime.topics import application_id
from .tcp import TCPSinkConfig, TCPSourceConfig, address_error

SOURCE_CONFIGS = (KafkaSourceConfig, TCPSourceConfig)
SINK_CONFIGS = (KafkaSinkConfig, TCPSinkConfig)
U64_MAX = 2 ** 64 - 1


class ApplicationError(ValueError):
    """The application description is malformed; the message names the pipeline and step."""


@dataclass
class StatelessStep:
    computation: decorators.Step
    parallel: bool = False

    @property
    def name(self):
        return getattr(self.computation, "name", repr(self.computation))


@dataclass
class StateStep:
    """A state computation on named state, one state object per partition key."""
    computation: decorators.Step
    state_class: type
    state_name: str
    partitioner: object = None          # None: a single state object (`to_stateful`)
    partition_keys: list | None = None
    u64: bool = False                   # `to_state_partition_u64`: keys are integers 0..2**64-1

    @property
    def name(self):
        return getattr(self.computation, "name", repr(self.computation))

    def key_for(self, data):
        return self.key_function()(data)

    def key_function(self):
        """A function doing what key_for does, with the partitioner looked up once (the runtime
        calls it for every message)."""
        if self.partitioner is None:
            return _single_key
        key = self.partitioner.partition if hasattr(self.partitioner, "partition") else self.partitioner
        if not self.u64:
            return key

        def checked(data):
            k = key(data)
            if not _is_u64(k):
                raise TypeError(f"the partition function of a to_state_partition_u64 step returned {k!r}, "
                                f"not an integer in 0..2**64-1")
            return k
        return checked


def _single_key(data):
    return 0


def _is_u64(key):
    return isinstance(key, int) and not isinstance(key, bool) and 0 <= key <= U64_MAX


@dataclass
class Pipeline:
    name: str
    source: KafkaSourceConfig | TCPSourceConfig | None
    steps: list = field(default_factory=list)
    sinks: list = field(default_factory=list)   # none: the pipeline ended with done()
    done: bool = False

    @property
    def sink(self):
        """The first sink (the only one unless the pipeline ended with to_sinks), or None."""
        return self.sinks[0] if self.sinks else None


@dataclass
class Application:
    """What `build()` returns: a checked description the runtimes execute."""
    name: str
    pipelines: list

    def state_steps(self):
        """(pipeline index, step index, StateStep) for every state step."""
        for pipeline_index, pipeline in enumerate(self.pipelines):
            for step_index, step in enumerate(pipeline.steps):
                if isinstance(step, StateStep):
                    yield pipeline_index, step_index, step

    def state_names(self):
        return sorted({s.state_name for _, _, s in self.state_steps()})


class ApplicationBuilder:
    """Describe an application: `new_pipeline`, then steps, then `to_sink`, `to_sinks` or `done`;
    `build()` checks it."""

    def __init__(self, name):
        self.name = name
        self._pipelines: list[Pipeline] = []
        self._errors: list[str] = []

    def _current(self, what):
        if not self._pipelines or self._pipelines[-1].done:
            self._errors.append(f"{what} called outside a pipeline: call new_pipeline(name, source_config) first")
            return None
        return self._pipelines[-1]

    def new_pipeline(self, name, source_config):
        """Start a pipeline reading from `source_config` (a KafkaSourceConfig or TCPSourceConfig)."""
        self._pipelines.append(Pipeline(name, source_config))
        return self

    def to(self, computation):
        """Add a stateless computation (returns a message, or None to filter it out)."""
        p = self._current("to")
        if p:
            p.steps.append(StatelessStep(computation))
        return self

    def to_parallel(self, computation):
        """Add a stateless computation; every step here already runs wherever its input is consumed."""
        p = self._current("to_parallel")
        if p:
            p.steps.append(StatelessStep(computation, parallel=True))
        return self

    def to_stateful(self, computation, state_class, state_name):
        """Add a state computation on one state object named `state_name`."""
        p = self._current("to_stateful")
        if p:
            p.steps.append(StateStep(computation, state_class, state_name))
        return self

    def to_state_partition(self, computation, state_class, state_name, partitioner, partition_keys=None):
        """Add a state computation on `state_name`, one state object per key `partitioner` returns."""
        p = self._current("to_state_partition")
        if p:
            keys = list(partition_keys) if partition_keys is not None else None
            p.steps.append(StateStep(computation, state_class, state_name, partitioner, keys))
        return self

    def to_state_partition_u64(self, computation, state_class, state_name, partitioner, partition_keys=None):
        """`to_state_partition` with integer keys (0..2**64-1), as 0.4 had for numeric partitions."""
        p = self._current("to_state_partition_u64")
        if p:
            keys = list(partition_keys) if partition_keys is not None else None
            p.steps.append(StateStep(computation, state_class, state_name, partitioner, keys, u64=True))
        return self

    def to_sink(self, sink_config):
        """End the pipeline by writing its outputs to `sink_config` (a KafkaSinkConfig or TCPSinkConfig)."""
        return self.to_sinks([sink_config], "to_sink")

    def to_sinks(self, sink_configs, what="to_sinks"):
        """End the pipeline by writing every output to each of `sink_configs` (Wallaroo 0.5)."""
        p = self._current(what)
        if p:
            p.sinks = list(sink_configs)
            p.done = True
            if not p.sinks:
                self._errors.append(f"pipeline {p.name!r}: to_sinks got no sink")
        return self

    def done(self):
        """End the pipeline without a sink (its outputs go nowhere; e.g. it only updates state).
        The application still needs a sink in some pipeline. After to_sink it changes nothing."""
        if self._pipelines and self._pipelines[-1].done and self._pipelines[-1].sinks:
            return self
        p = self._current("done")
        if p:
            p.done = True
        return self

    def build(self):
        """Check the description and return an Application; raise ApplicationError if malformed.

        The Application holds copies: hand-written 0.4 classes adapted to decorated steps, configs
        copied so a runtime can fill in what it learns (topics, partition counts)."""
        errors = list(self._errors)
        if not self._pipelines:
            errors.append(f"application {self.name!r} has no pipeline")
        elif not any(p.sinks for p in self._pipelines):
            errors.append(f"application {self.name!r} has no sink: end at least one pipeline with "
                          f"to_sink(...) or to_sinks([...]) (the others may end with done())")
        states, pipelines, tcp_names = {}, [], {}
        for p in self._pipelines:
            where = f"pipeline {p.name!r}"
            if not p.done:
                errors.append(f"{where}: is not ended: end it with to_sink(...), to_sinks([...]) or done()")
            source, source_errors = _check_source(where, p.source)
            errors.extend(source_errors)
            sinks = []
            for i, sink in enumerate(p.sinks):
                label = where if len(p.sinks) == 1 else f"{where}, sink {i + 1}"
                sink, sink_errors = _check_sink(label, sink)
                errors.extend(sink_errors)
                sinks.append(sink)
            if isinstance(p.source, TCPSourceConfig) or any(isinstance(s, TCPSinkConfig) for s in p.sinks):
                other = tcp_names.setdefault(application_id(p.name), p.name)
                if other != p.name or sum(1 for q in self._pipelines if q.name == p.name) > 1:
                    errors.append(f"{where}: another pipeline has the same name ({other!r}); a pipeline with a "
                                  f"TCP source or sink names its internal topics, so names must differ")
            steps = []
            for i, s in enumerate(p.steps, 1):
                step, step_errors = _check_step(f"{where}, step {i}", s, states)
                errors.extend(step_errors)
                steps.append(step)
            pipelines.append(Pipeline(p.name, source, steps, sinks, p.done))
        if errors:
            raise ApplicationError("; ".join(dict.fromkeys(errors)))
        return Application(self.name, pipelines)


def _check_source(where, source):
    """(a copy of `source` with its decoder adapted, [errors])."""
    if not isinstance(source, SOURCE_CONFIGS):
        return source, [f"{where}: has no source (new_pipeline needs a KafkaSourceConfig or TCPSourceConfig)"]
    errors = []
    source = copy.copy(source)
    try:
        source.decoder = decorators.adapt_decoder(source.decoder)
    except decorators.AdaptError as e:
        return source, [f"{where}: source decoder {source.decoder!r} {e}"]
    if isinstance(source, KafkaSourceConfig):
        if not source.topic:
            errors.append(f"{where}: source has no topic")
        if log_level_error(source.log_level):
            errors.append(f"{where}: source {log_level_error(source.log_level)}")
    else:
        if address_error(source.host, source.port):
            errors.append(f"{where}: TCP source {address_error(source.host, source.port)}")
        if source.decoder is None:
            errors.append(f"{where}: a TCP source needs a decoder (its header frames the stream)")
        elif source.decoder.framing_error():
            errors.append(f"{where}: TCP source decoder {source.decoder.framing_error()}")
    return source, errors


def _check_sink(where, sink):
    if not isinstance(sink, SINK_CONFIGS):
        return sink, [f"{where}: sink {sink!r} is not a KafkaSinkConfig or TCPSinkConfig"]
    errors = []
    sink = copy.copy(sink)
    try:
        sink.encoder = decorators.adapt_encoder(sink.encoder)
    except decorators.AdaptError as e:
        return sink, [f"{where}: sink encoder {sink.encoder!r} {e}"]
    if isinstance(sink, KafkaSinkConfig):
        if not sink.topic:
            errors.append(f"{where}: sink has no topic")
        if log_level_error(sink.log_level):
            errors.append(f"{where}: sink {log_level_error(sink.log_level)}")
    elif address_error(sink.host, sink.port):
        errors.append(f"{where}: TCP sink {address_error(sink.host, sink.port)}")
    return sink, errors


def _check_step(where, s, states):
    """(the step with its computation adapted to a decorated Step, [errors])."""
    c = s.computation
    label = f"{where} ({getattr(c, 'name', getattr(c, '__name__', repr(c)))!r})"
    stateful = isinstance(s, StateStep)
    try:
        adapted = decorators.adapt_computation(c, stateful)
    except decorators.AdaptError as e:
        return s, [f"{label}: {c!r} {e}"]
    except Exception as e:  # noqa: BLE001 - a hand-written class whose constructor raised
        return s, [f"{label}: making {c!r} raised {type(e).__name__}: {e}"]
    step = copy.copy(s)
    step.computation = adapted
    label = f"{where} ({adapted.name!r})"
    if not stateful and adapted.kind not in decorators.STATELESS_KINDS:
        return step, [f"{label}: a {adapted.kind} needs state: use to_stateful or to_state_partition, not to"]
    if stateful:
        if adapted.kind not in decorators.STATE_KINDS:
            return step, [f"{label}: a {adapted.kind} has no state: use to or to_parallel"]
        if not isinstance(s.state_class, type):
            return step, [f"{label}: state class {s.state_class!r} is not a class"]
        if s.partitioner is not None and not (hasattr(s.partitioner, "partition") or callable(s.partitioner)):
            return step, [f"{label}: partitioner {s.partitioner!r} is neither @wallaroo.partition "
                          f"nor has .partition(data)"]
        if s.partition_keys is not None and len(set(map(repr, s.partition_keys))) != len(s.partition_keys):
            return step, [f"{label}: partition_keys has duplicates"]
        if s.u64 and s.partition_keys is not None and not all(map(_is_u64, s.partition_keys)):
            bad = next(k for k in s.partition_keys if not _is_u64(k))
            return step, [f"{label}: to_state_partition_u64 needs integer keys in 0..2**64-1, got {bad!r}"]
        previous = states.setdefault(s.state_name, s.state_class)
        if previous is not s.state_class:
            return step, [f"{label}: state {s.state_name!r} is used with two classes, "
                          f"{previous.__name__} and {s.state_class.__name__}"]
    return step, []
