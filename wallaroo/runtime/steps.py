"""Running a pipeline's steps on one message: shared by the Kafka worker and the local runner.

A pipeline is cut at each state step: the message stops there and is routed (by partition key) to
whoever owns that key's state; `apply_state` picks it up on the other side and carries on.
"""
from ..builder import StateStep
from ..context import set_event_time

STATELESS, STATE = 0, 1


class StepError(Exception):
    """A user step raised; carries which step, for the dead-letter record."""

    def __init__(self, step_name, cause):
        super().__init__(f"step {step_name!r} raised {type(cause).__name__}: {cause}")
        self.step_name = step_name
        self.cause = cause


class Executor:
    """Runs steps. `route(pi, si, step, data)` receives messages reaching a state step;
    `sink(pi, data)` receives messages that reached the end of pipeline `pi`."""

    def __init__(self, app, route, sink):
        self.app = app
        self.route = route
        self.sink = sink
        # Flattened once: the hot loop does no isinstance() or attribute lookups on builder objects.
        self.plan = [[(STATE, s, s.computation.func, s.computation.multi, s.name) if isinstance(s, StateStep)
                      else (STATELESS, s, s.computation.func, s.computation.multi, s.name)
                      for s in p.steps] for p in app.pipelines]
        self.hook_step = {}
        for pi, si, s in app.state_steps():
            self.hook_step.setdefault(s.state_name, (pi, si))

    def run(self, pi, si, data):
        """Carry `data` through pipeline `pi` from step index `si`."""
        plan = self.plan[pi]
        n = len(plan)
        while si < n:
            kind, step, func, multi, name = plan[si]
            if kind == STATE:
                self.route(pi, si, step, data)
                return
            try:
                data = func(data)
            except Exception as e:  # noqa: BLE001 - user code; becomes a dead letter
                raise StepError(name, e) from e
            if data is None:
                return
            si += 1
            if multi:
                for item in data:
                    if item is not None:
                        self.run(pi, si, item)
                return
        self.sink(pi, data)

    def apply_state(self, pi, si, state, data, event_time_ms=None):
        """Run the state computation at (pi, si) on `data`; return whether the state changed."""
        kind, step, func, multi, name = self.plan[pi][si]
        set_event_time(event_time_ms)
        try:
            result = func(data, state)
        except Exception as e:  # noqa: BLE001
            raise StepError(name, e) from e
        finally:
            set_event_time(None)
        output, changed = _unpack(name, result)
        self._continue(pi, si, output, multi)
        return changed

    def advance_event_time(self, state_name, state, event_time_ms):
        """Tell one state object that event time reached `event_time_ms`; return whether it changed."""
        hook = getattr(state, "on_event_time", None)
        if hook is None:
            return False
        set_event_time(event_time_ms)
        try:
            result = hook(event_time_ms)
        except Exception as e:  # noqa: BLE001
            raise StepError(f"{type(state).__name__}.on_event_time", e) from e
        finally:
            set_event_time(None)
        output, changed = _unpack(f"{type(state).__name__}.on_event_time", result)
        pi, si = self.hook_step[state_name]
        self._continue(pi, si, output, self.plan[pi][si][3])
        return changed

    def _continue(self, pi, si, output, multi):
        if output is None:
            return
        if multi:
            for item in output:
                if item is not None:
                    self.run(pi, si + 1, item)
        else:
            self.run(pi, si + 1, output)


def _unpack(name, result):
    if result is None:
        return None, False
    if not (isinstance(result, tuple) and len(result) == 2):
        raise StepError(name, TypeError(f"a state computation returns (output or None, state_changed), "
                                        f"got {type(result).__name__}"))
    return result


def encode(encoder, data):
    """Apply a sink encoder: returns (value bytes, key bytes or None)."""
    out = encoder(data) if encoder is not None else data
    key = None
    if isinstance(out, tuple):
        out, key = out
    return _as_bytes(out, "value"), (None if key is None else _as_bytes(key, "key"))


def _as_bytes(x, what):
    if isinstance(x, (bytes, bytearray, memoryview)):
        return bytes(x)
    if isinstance(x, str):
        return x.encode("utf-8")
    raise TypeError(f"encoder returned a {type(x).__name__} as the {what}; expected bytes or str")
