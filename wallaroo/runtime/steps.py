"""The plan and its executor: running a pipeline's steps on one message, for the Kafka worker and the
local runner alike.

A pipeline is cut at each state step: the message stops there and is routed (by partition key) to
whoever owns that key's state; `apply_state` picks it up on the other side and carries on.
"""
from dataclasses import dataclass

from ..builder import StateStep
from ..context import set_event_time

STATELESS, STATE = "stateless", "state"


@dataclass(slots=True, eq=False)
class PlanStep:
    """One step of one pipeline, flattened once so the hot loop does no lookups on builder objects.
    (Slots: reading a field costs 6 ns, a NamedTuple's 19, and the loop reads several per message.)"""
    kind: str            # STATELESS or STATE
    step: object         # the builder's StatelessStep / StateStep
    func: object         # the plain user function
    multi: bool          # a *_multi computation: its result is a list of messages
    name: str            # the step's display name (the decorator's name)
    pipeline: int        # index of the pipeline in the application
    index: int           # index of the step in its pipeline
    id: tuple            # stable identity: (pipeline name, step name[, n for the n-th such name])
    fig: object = None   # metrics.StepFigures counting and sampling its calls; None: metrics off


class StepError(Exception):
    """A user step raised; carries which step, for the dead-letter record."""

    def __init__(self, step_name, cause):
        super().__init__(f"step {step_name!r} raised {type(cause).__name__}: {cause}")
        self.step_name = step_name
        self.cause = cause


class UnknownStep(LookupError):
    """A repartitioned record names a state step this application does not have."""


def make_plan(app):
    """[[PlanStep per step] per pipeline] for an Application."""
    plan = []
    for pi, p in enumerate(app.pipelines):
        steps, seen = [], {}
        for si, s in enumerate(p.steps):
            n = seen[s.name] = seen.get(s.name, -1) + 1
            identity = (p.name, s.name) if n == 0 else (p.name, s.name, n)
            kind = STATE if isinstance(s, StateStep) else STATELESS
            steps.append(PlanStep(kind, s, s.computation.func, s.computation.multi, s.name, pi, si, identity))
        plan.append(steps)
    return plan


class Executor:
    """Runs steps. `route(plan_step, data)` receives messages reaching a state step;
    `sink(pipeline index, data)` receives messages that reached the end of a pipeline; `metrics`
    (metrics.Metrics) gives each step the figures that count its calls and time a sample of them
    (counted here, inline: a wrapper around each step cost a Python call per step per message)."""

    def __init__(self, app, route, sink, metrics=None):
        self.app = app
        self.route = route
        self.sink = sink
        self.plan = make_plan(app) if metrics is None else metrics.plan(make_plan(app))   # counted, timed
        self.state_steps = {ps.id: ps for steps in self.plan for ps in steps if ps.kind == STATE}
        self.hook_step = {}            # state name -> the first state step using it (on_event_time output)
        for ps in self.state_steps.values():
            self.hook_step.setdefault(ps.step.state_name, ps)

    def state_step(self, step_id):
        """The state step with this identity; UnknownStep if the application has none."""
        ps = self.state_steps.get(step_id)
        if ps is None:
            pipeline, name = step_id[0], step_id[1]
            raise UnknownStep(f"record is for state step {name!r} of pipeline {pipeline!r}, which this "
                              f"application does not have (was the step removed or renamed?)")
        return ps

    def run(self, pipeline, index, data):
        """Carry `data` through pipeline `pipeline` from step `index`."""
        steps = self.plan[pipeline]
        n = len(steps)
        while index < n:
            ps = steps[index]
            if ps.kind is STATE:
                self.route(ps, data)
                return
            fig = ps.fig
            try:
                if fig is None:
                    data = ps.func(data)
                else:
                    sample = fig.sample
                    sample.left -= 1
                    data = ps.func(data) if sample.left else fig.timed(ps.func, data)
            except Exception as e:  # noqa: BLE001 - user code; becomes a dead letter
                raise StepError(ps.name, e) from e
            if data is None:
                return
            index += 1
            if ps.multi:
                data = _listed(data)
                if fig is not None:
                    fig.passed += _count(data)
                for item in data:
                    if item is not None:
                        self.run(pipeline, index, item)
                return
            if fig is not None:
                fig.passed += 1
        self.sink(pipeline, data)

    def apply_state(self, ps, state, data, event_time_ms=None):
        """Run the state computation `ps` on `data`; return whether the state changed."""
        fig = ps.fig
        set_event_time(event_time_ms)
        try:
            if fig is None:
                result = ps.func(data, state)
            else:
                sample = fig.sample
                sample.left -= 1
                result = ps.func(data, state) if sample.left else fig.timed(ps.func, data, state)
        except Exception as e:  # noqa: BLE001
            raise StepError(ps.name, e) from e
        finally:
            set_event_time(None)
        if type(result) is tuple and len(result) == 2:
            output, changed = result
        else:
            output, changed = _unpack(ps.name, result)
        if output is not None:
            if ps.multi:
                output = _listed(output)
                if fig is not None:
                    fig.passed += _count(output)
            elif fig is not None:
                fig.passed += 1
            self._continue(ps, output)
        return changed

    def advance_event_time(self, state_name, state, event_time_ms):
        """Tell one state object that event time reached `event_time_ms`; return whether it changed."""
        hook = getattr(state, "on_event_time", None)
        if hook is None:
            return False
        name = f"{type(state).__name__}.on_event_time"
        set_event_time(event_time_ms)
        try:
            result = hook(event_time_ms)
        except Exception as e:  # noqa: BLE001
            raise StepError(name, e) from e
        finally:
            set_event_time(None)
        output, changed = _unpack(name, result)
        self._continue(self.hook_step[state_name], output)
        return changed

    def _continue(self, ps, output):
        if output is None:
            return
        if ps.multi:
            for item in output:
                if item is not None:
                    self.run(ps.pipeline, ps.index + 1, item)
        else:
            self.run(ps.pipeline, ps.index + 1, output)


def _listed(items):
    # A *_multi step may return any iterable (a generator too): made a list once, so it can be counted
    # and then iterated.
    return items if type(items) is list else list(items)


def _count(items):
    return sum(1 for x in items if x is not None)


def _unpack(name, result):
    if result is None:
        return None, False
    if not (isinstance(result, tuple) and len(result) == 2):
        raise StepError(name, TypeError(f"a state computation returns (output or None, state_changed), "
                                        f"got {type(result).__name__}"))
    return result


def encode(sink, data):
    """Apply a sink's encoder: (value bytes, key bytes or None, partition or None).

    The encoder returns bytes (or str), `(value, key)`, or 0.5's `(value, key, partition)`: the
    partition of the sink topic to write to (None: by key, as Kafka's partitioner decides). Raises
    ValueError/TypeError for what cannot be written, so the output is dead-lettered instead of failing
    the checkpoint's transaction."""
    out = sink.encoder.encode(data) if sink.encoder is not None else data
    key = partition = None
    if isinstance(out, tuple):
        if len(out) == 2:
            out, key = out
        elif len(out) == 3:
            out, key, partition = out
        else:
            raise TypeError(f"encoder returned a tuple of {len(out)}; expected (value, key) or (value, key, partition)")
    value = _as_bytes(out, "value")
    if len(value) > sink.max_message_size > 0:
        raise ValueError(f"encoded output is {len(value)} bytes, over the sink's max_message_size "
                         f"{sink.max_message_size}")
    if partition is not None:
        if isinstance(partition, bool) or not isinstance(partition, int) or partition < 0:
            raise TypeError(f"encoder returned partition {partition!r}; expected None or an int >= 0")
        if sink.partitions is not None and partition >= sink.partitions:
            raise ValueError(f"encoder returned partition {partition}, but sink topic {sink.topic} has "
                             f"{sink.partitions} partitions")
    return value, (None if key is None else _as_bytes(key, "key")), partition


def _as_bytes(x, what):
    if isinstance(x, (bytes, bytearray, memoryview)):
        return bytes(x)
    if isinstance(x, str):
        return x.encode("utf-8")
    raise TypeError(f"encoder returned a {type(x).__name__} as the {what}; expected bytes or str")
