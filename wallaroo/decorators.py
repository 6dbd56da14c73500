"""Decorators that mark plain functions as Wallaroo steps, and adapters for 0.4's hand-written classes.

A decorated function stays callable as the plain function, so `filter_interesting_events(event)` works
in a unit test exactly as written. It also has 0.4's object form: `.compute(data)` (a state
computation: `.compute(data, state)`; multi: `.compute_multi(...)`), `.name()`, a partition
function's `.partition(data)`, a decoder's `.header_length()`, `.payload_length(bytes)` and
`.decode(bytes)`, an encoder's `.encode(data)`.

0.4 also ran classes users wrote by hand with those methods; `build()` adapts them with `adapt_*`.
"""
import functools
import inspect
import struct

COMPUTATION = "computation"
COMPUTATION_MULTI = "computation_multi"
STATE_COMPUTATION = "state_computation"
STATE_COMPUTATION_MULTI = "state_computation_multi"
STATELESS_KINDS = (COMPUTATION, COMPUTATION_MULTI)
STATE_KINDS = (STATE_COMPUTATION, STATE_COMPUTATION_MULTI)
MULTI_KINDS = (COMPUTATION_MULTI, STATE_COMPUTATION_MULTI)


class CallableStr(str):
    """A str that also answers 0.4's `name()` call."""

    def __call__(self):
        return str(self)


class CallableInt(int):
    """An int that also answers 0.4's `header_length()` call, so both `d.header_length == 4` and
    `d.header_length()` work."""

    def __call__(self):
        return int(self)


class Step:
    """A user function with the name and kind its decorator gave it; calling it calls the function.

    The 0.4 method (`compute` or `compute_multi`) is the function itself, so the object form costs
    nothing extra."""

    def __init__(self, func, name, kind):
        functools.update_wrapper(self, func)
        self.func = func
        self.name = CallableStr(name)
        self.kind = kind
        setattr(self, "compute_multi" if kind in MULTI_KINDS else "compute", func)

    def __call__(self, *args, **kwargs):
        return self.func(*args, **kwargs)

    @property
    def multi(self):
        return self.kind in MULTI_KINDS

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
        self.partition = func

    def __call__(self, data):
        return self.func(data)


def partition(func):
    """Mark a function `f(data) -> key` as a partitioner for `to_state_partition`."""
    return Partitioner(func)


class Decoder:
    """A `@decoder`: turns the bytes of one source record into the message.

    A TCP source reads `header_length` bytes, asks `payload_length(header)` how many follow, and
    decodes those (Wallaroo's framing); a Kafka record is already one message, so only `decode` is
    used there."""

    def __init__(self, func, header_length, length_fmt=None, payload_length=None):
        functools.update_wrapper(self, func)
        self.func = func
        self.decode = func
        self.header_length = None if header_length is None else CallableInt(header_length)
        self.length_fmt = length_fmt
        self._payload_length = payload_length

    def __call__(self, data):
        return self.func(data)

    def payload_length(self, header: bytes) -> int:
        if self._payload_length is not None:
            return self._payload_length(header)
        return struct.unpack(self.length_fmt, header)[0]

    def framing_error(self):
        """Why this decoder cannot frame a TCP stream, or None."""
        if self.header_length is None or (self.length_fmt is None and self._payload_length is None):
            return "has no header_length()/payload_length(bytes): a TCP source needs both"
        if not 0 < self.header_length <= 64:
            return f"header_length {int(self.header_length)} is not between 1 and 64"
        if self._payload_length is None:
            try:
                size = struct.calcsize(self.length_fmt)
            except struct.error as e:
                return f"length_fmt {self.length_fmt!r} is not a struct format: {e}"
            if size != self.header_length:
                return (f"length_fmt {self.length_fmt!r} reads {size} bytes but header_length is "
                        f"{int(self.header_length)}")
        return None


def decoder(header_length=4, length_fmt=">I"):
    """Mark a function `f(bytes) -> message` as a source decoder."""
    if callable(header_length):  # used bare: @wallaroo.decoder
        return Decoder(header_length, 4, ">I")

    def wrap(func):
        return Decoder(func, header_length, length_fmt)
    return wrap


class Encoder:
    """An `@encoder`: turns a sink message into bytes, `(bytes, key)` or `(bytes, key, partition)`."""

    def __init__(self, func):
        functools.update_wrapper(self, func)
        self.func = func
        self.encode = func

    def __call__(self, data):
        return self.func(data)


def encoder(func):
    """Mark a function `f(message) -> bytes | (bytes, key) | (bytes, key, partition)` as a sink encoder."""
    return Encoder(func)


# --- 0.4's hand-written classes ---------------------------------------------------------------
class AdaptError(TypeError):
    """A hand-written object lacks what its place in the application needs."""


def _instance(obj):
    # 0.4's machida called what `to` got to make the computation (its decorators' objects returned
    # themselves when called), so a class is instantiated here as it was there.
    return obj() if inspect.isclass(obj) else obj


def _arity_ok(method, n):
    try:
        inspect.signature(method).bind(*range(n))
        return True
    except TypeError:
        return False
    except ValueError:      # no signature (a builtin): trust it
        return True


def adapt_computation(obj, stateful):
    """A Step for a decorated computation, or for a 0.4 class/object with `compute`/`compute_multi`
    (and `name()`); AdaptError when it has neither."""
    if isinstance(obj, Step):
        return obj
    instance = _instance(obj)
    multi = hasattr(instance, "compute_multi")
    method = getattr(instance, "compute_multi" if multi else "compute", None)
    if not callable(method):
        raise AdaptError("is not decorated with @wallaroo.computation or @wallaroo.state_computation "
                         "and has no compute(data) or compute_multi(data) method")
    args = 2 if stateful else 1
    if not _arity_ok(method, args):
        signature = "(data, state)" if stateful else "(data)"
        raise AdaptError(f"its {method.__name__} does not take {signature}"
                         + ("" if stateful else ": a state computation needs to_stateful or to_state_partition"))
    name = getattr(instance, "name", None)
    if callable(name):
        name = name()
    if not isinstance(name, str):
        name = type(instance).__name__
    if stateful:
        kind = STATE_COMPUTATION_MULTI if multi else STATE_COMPUTATION
    else:
        kind = COMPUTATION_MULTI if multi else COMPUTATION
    return Step(method, name, kind)


def adapt_decoder(obj):
    """A Decoder for a decorated decoder or a 0.4 object with `decode(bytes)` (and, for TCP,
    `header_length()` and `payload_length(bytes)`)."""
    if obj is None or isinstance(obj, Decoder):
        return obj
    instance = _instance(obj)
    if not callable(getattr(instance, "decode", None)):
        raise AdaptError("is not decorated with @wallaroo.decoder and has no decode(bytes) method")
    header_length = getattr(instance, "header_length", None)
    if callable(header_length):
        header_length = header_length()
    payload_length = getattr(instance, "payload_length", None)
    return Decoder(instance.decode, header_length if isinstance(header_length, int) else None,
                   payload_length=payload_length if callable(payload_length) else None)


def adapt_encoder(obj):
    """An Encoder for a decorated encoder or a 0.4 object with `encode(data)`."""
    if obj is None or isinstance(obj, Encoder):
        return obj
    instance = _instance(obj)
    if not callable(getattr(instance, "encode", None)):
        raise AdaptError("is not decorated with @wallaroo.encoder and has no encode(data) method")
    return Encoder(instance.encode)
