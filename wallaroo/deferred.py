"""`wallaroo.Deferred`: a state object's output rendered at the checkpoint, not when it is made."""


class Deferred:
    """An output of a state computation (or of `on_event_time`) that the runtime renders later, from
    the state object as it is then: `render(state, *args)` returns the output (`args`: what the
    output must take from the moment it was made, e.g. its event time).

    For coalescing sinks (`KafkaSinkConfig(coalesce=True)`), which produce only the newest output of
    each key per checkpoint: an output that a newer one replaces before the checkpoint is work thrown
    away (star_leaders' partition leaderboard was built ~40 times per partition per checkpoint, a fifth
    of its worker's processing).  When every sink of the pipeline coalesces, only the newest Deferred
    of each state object since the last checkpoint is rendered, at the checkpoint, then encoded and
    produced in its transaction; otherwise it is rendered at once.

    The rules: it goes straight from the state step to the sinks (no step in between); `render` reads
    the state and changes nothing; what the object holds at the checkpoint is what the output is to
    show (it may have moved on since the Deferred was made).  An output the same object makes later
    that is not a Deferred replaces a pending Deferred of it.  After a computation raised, the object
    rendered is the rebuilt one; an object no longer owned at the checkpoint renders nothing.  An
    exception from `render` or the encoder is reported like one from `on_event_time`.  Metrics count
    a Deferred as a message into the sink when it is made; its rendering and encoding are part of
    the checkpoint's time."""
    __slots__ = ("render", "args")

    def __init__(self, render, *args):
        self.render = render
        self.args = args

    def __call__(self, state):
        return self.render(state, *self.args)

    def __eq__(self, other):
        return type(other) is Deferred and self.render == other.render and self.args == other.args

    __hash__ = None

    def __repr__(self):
        return f"Deferred({self.render!r}, *{self.args!r})"
