"""Decorators that mark plain functions as Wallaroo steps.

Unlike Wallaroo 0.4, a decorated function stays callable as the plain function, so
`filter_interesting_events(event)` works in a unit test exactly as written.
"""
import functools
import struct

COMPUTATION = "computation"
COMPUTATION_MULTI = "computation_multi"
STATE_COMPUTATION = "state_computation"
STATE_COMPUTATION_MULTI = "state_computation_multi"
STATELESS_KINDS = (COMPUTATION, COMPUTATION_MULTI)
STATE_KINDS = (STATE_COMPUTATION, STATE_COMPUTATION_MULTI)


class Step:
    """A user function with the name and kind its decorator gave it; calling it calls the function."""

    def __init__(self, func, name, kind):
        functools.update_wrapper(self, func)
        self.func = func
        self.name = name
        self.kind = kind

    def __call__(self, *args, **kwargs):
        return self.func(*args, **kwargs)

    @property
    def multi(self):
        return self.kind in (COMPUTATION_MULTI, STATE_COMPUTATION_MULTI)

    def __repr__(self):
        return f"<wallaroo {self.kind} {self.name!r}>"


def _named(kind):
    def decorator_factory(name):
        if callable(name):  # used bare: @wallaroo.computation
            return Step(name, name.__name__, kind)

        def decorator(func):
            return Step(func, name, kind)
        return decorator
    decorator_factory.__name__ = kind
    decorator_factory.__doc__ = f"Mark a function as a {kind.replace('_', ' ')} named `name`."
    return decorator_factory


computation = _named(COMPUTATION)
computation_multi = _named(COMPUTATION_MULTI)
state_computation = _named(STATE_COMPUTATION)
state_computation_multi = _named(STATE_COMPUTATION_MULTI)


class Partitioner:
    """A `@partition` function: maps a message to its state partition key."""

    def __init__(self, func):
        functools.update_wrapper(self, func)
        self.func = func

    def __call__(self, data):
        return self.func(data)

    def partition(self, data):
        return self.func(data)


def partition(func):
    """Mark a function `f(data) -> key` as a partitioner for `to_state_partition`."""
    return Partitioner(func)


class Decoder:
    """A `@decoder`: turns the bytes of one source record into the message.

    `header_length` and `length_fmt` framed TCP sources in Wallaroo; a Kafka record is already
    one message, so they are kept for compatibility (and `payload_length` reads such a header)."""

    def __init__(self, func, header_length, length_fmt):
        functools.update_wrapper(self, func)
        self.func = func
        self.header_length = header_length
        self.length_fmt = length_fmt

    def __call__(self, data):
        return self.func(data)

    def payload_length(self, header: bytes) -> int:
        return struct.unpack(self.length_fmt, header)[0]


def decoder(header_length=4, length_fmt=">I"):
    """Mark a function `f(bytes) -> message` as a source decoder."""
    if callable(header_length):  # used bare: @wallaroo.decoder
        return Decoder(header_length, 4, ">I")

    def wrap(func):
        return Decoder(func, header_length, length_fmt)
    return wrap


class Encoder:
    """An `@encoder`: turns a sink message into bytes, or into `(bytes, key)`."""

    def __init__(self, func):
        functools.update_wrapper(self, func)
        self.func = func

    def __call__(self, data):
        return self.func(data)


def encoder(func):
    """Mark a function `f(message) -> bytes | (bytes, key)` as a sink encoder."""
    return Encoder(func)
