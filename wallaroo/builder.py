"""ApplicationBuilder: the 0.4 way to describe an application as pipelines of steps."""
from dataclasses import dataclass, field

from . import decorators
from .kafka import KafkaSinkConfig, KafkaSourceConfig


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

    @property
    def name(self):
        return getattr(self.computation, "name", repr(self.computation))

    def key_for(self, data):
        if self.partitioner is None:
            return 0
        if hasattr(self.partitioner, "partition"):
            return self.partitioner.partition(data)
        return self.partitioner(data)


@dataclass
class Pipeline:
    name: str
    source: KafkaSourceConfig | None
    steps: list = field(default_factory=list)
    sink: KafkaSinkConfig | None = None
    done: bool = False


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
    """Describe an application: `new_pipeline`, then steps, then `to_sink`; `build()` checks it."""

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
        """Start a pipeline reading from `source_config` (a KafkaSourceConfig)."""
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

    def to_sink(self, sink_config):
        """End the pipeline by writing its outputs to `sink_config` (a KafkaSinkConfig)."""
        p = self._current("to_sink")
        if p:
            p.sink = sink_config
            p.done = True
        return self

    def done(self):
        """End the pipeline (a pipeline still needs a sink to be valid)."""
        p = self._current("done")
        if p:
            p.done = True
        return self

    def build(self):
        """Check the description and return an Application; raise ApplicationError if malformed."""
        errors = list(self._errors)
        if not self._pipelines:
            errors.append(f"application {self.name!r} has no pipeline")
        states = {}
        for p in self._pipelines:
            where = f"pipeline {p.name!r}"
            if not isinstance(p.source, KafkaSourceConfig):
                errors.append(f"{where}: has no source (new_pipeline needs a KafkaSourceConfig)")
            elif not p.source.topic:
                errors.append(f"{where}: source has no topic")
            elif p.source.decoder is not None and not isinstance(p.source.decoder, decorators.Decoder):
                errors.append(f"{where}: source decoder {p.source.decoder!r} is not decorated with @wallaroo.decoder")
            if not isinstance(p.sink, KafkaSinkConfig):
                errors.append(f"{where}: has no sink (end it with to_sink(KafkaSinkConfig(...)))")
            elif not p.sink.topic:
                errors.append(f"{where}: sink has no topic")
            elif p.sink.encoder is not None and not isinstance(p.sink.encoder, decorators.Encoder):
                errors.append(f"{where}: sink encoder {p.sink.encoder!r} is not decorated with @wallaroo.encoder")
            for i, s in enumerate(p.steps, 1):
                errors.extend(_check_step(f"{where}, step {i}", s, states))
        if errors:
            raise ApplicationError("; ".join(errors))
        return Application(self.name, list(self._pipelines))


def _check_step(where, s, states):
    c = s.computation
    label = f"{where} ({getattr(c, 'name', getattr(c, '__name__', repr(c)))!r})"
    if not isinstance(c, decorators.Step):
        return [f"{label}: {c!r} is not decorated with @wallaroo.computation or @wallaroo.state_computation"]
    if isinstance(s, StatelessStep) and c.kind not in decorators.STATELESS_KINDS:
        return [f"{label}: a {c.kind} needs state: use to_stateful or to_state_partition, not to"]
    if isinstance(s, StateStep):
        if c.kind not in decorators.STATE_KINDS:
            return [f"{label}: a {c.kind} has no state: use to or to_parallel"]
        if not isinstance(s.state_class, type):
            return [f"{label}: state class {s.state_class!r} is not a class"]
        if s.partitioner is not None and not (hasattr(s.partitioner, "partition") or callable(s.partitioner)):
            return [f"{label}: partitioner {s.partitioner!r} is neither @wallaroo.partition nor has .partition(data)"]
        if s.partition_keys is not None and len(set(map(repr, s.partition_keys))) != len(s.partition_keys):
            return [f"{label}: partition_keys has duplicates"]
        previous = states.setdefault(s.state_name, s.state_class)
        if previous is not s.state_class:
            return [f"{label}: state {s.state_name!r} is used with two classes, "
                    f"{previous.__name__} and {s.state_class.__name__}"]
    return []
