"""What crosses Kafka internally, as data: messages between steps, state objects, partition keys.

Everything on an internal topic can be written by anyone who can write to the broker, so by default
nothing read back from one can run code: messages go through the application's
`serialize`/`deserialize` when it has them, else through the data codec below; state objects are
encoded as their attributes (or their own `to_data()`), and decoded into a new instance of the state
class the application declared for that state name, never a class named in the record. Pickle is used
only when the application opts in (`machida --unsafe-pickle`, `run_local(..., unsafe_pickle=True)`):
then anyone who can write to a changelog or repartition topic runs code in the worker.

The data codec is MessagePack (msgspec) with extension types for what MessagePack lacks, so values
come back with the types they had: tuples, sets, frozensets, dicts with keys that are not strings or
numbers, `collections.defaultdict` (with a built-in factory), `collections.Counter`, integers beyond
64 bits, strings with lone surrogates. Anything else (an instance of an application class, a function) is not data and is refused,
naming where it is.

Wallaroo looked for `serialize`/`deserialize` in the application module. An application built from
another module's steps (examples/fork_leaders.py uses star_leaders') gets that module's pair: when the
application module defines neither, the module that defines each state computation is asked next.
"""
import collections
import inspect
import pickle
import sys

from msgspec import DecodeError
from msgspec.msgpack import Decoder, Encoder, Ext

# Extension type codes of the data codec.
_TUPLE, _SET, _FROZENSET, _DICT, _BIGINT, _DEFAULTDICT, _COUNTER, _SURROGATES = range(1, 9)
# defaultdict factories that are data (by name): anything else would be a callable from the record.
_FACTORIES = {f.__name__: f for f in (int, float, str, bytes, bool, list, dict, set, tuple)}
_SCALARS = frozenset({str, int, float, bool, type(None), bytes})

# State record formats (first byte); ENTRY: one entry of an object saved as entries.
ATTRIBUTES, TO_DATA, PICKLED, ENTRY = b"A", b"T", b"P", b"E"


class NotData(TypeError):
    """A value the data codec cannot encode; `path` says where it is."""

    def __init__(self, path, value, hint=""):
        self.path = path
        self.value_type = type(value).__module__ + "." + type(value).__qualname__ \
            if type(value).__module__ != "builtins" else type(value).__qualname__
        super().__init__(f"{path or 'the value'} is a {self.value_type}, which is not plain data{hint}")


class StateEncodingError(TypeError):
    """A state object cannot be written to its changelog as data: the worker stops, saying how to fix it."""


class DataCodec:
    """Plain Python data <-> bytes, keeping tuples, sets and non-string keys; never runs code on decode."""

    def __init__(self):
        self._encoder = Encoder()
        self._decoder = Decoder(ext_hook=self._ext)
        self._encode = self._encoder.encode

    # --- encoding ---------------------------------------------------------------------------
    def encode(self, value, canonical=False) -> bytes:
        """`canonical`: equal values give equal bytes in every process (sets are sorted), for keys."""
        try:
            return self._encode(self._data(value, canonical))
        except _Unsupported:
            pass
        except (OverflowError, UnicodeEncodeError):   # an int beyond 64 bits, a str with a lone surrogate:
            pass                                      # the careful walk makes them extensions
        return self._encode(self._careful(value, "", canonical))

    def _data(self, x, canonical):
        """The fast walk: containers whose items are all scalars are passed to msgpack as they are."""
        t = type(x)
        if t in _SCALARS:
            return x
        # (items that are scalars are kept without a call: a list of [time, id, {...}] triples, as a
        # changelog entry often is, made three calls per triple)
        if t is list:
            if _SCALARS.issuperset(map(type, x)):
                return x
            return [v if type(v) in _SCALARS else self._data(v, canonical) for v in x]
        if t is dict:
            if _SCALARS.issuperset(map(type, x)):
                if _SCALARS.issuperset(map(type, x.values())):
                    return x
                return {k: v if type(v) in _SCALARS else self._data(v, canonical) for k, v in x.items()}
            return Ext(_DICT, self._encode([[self._data(k, canonical), self._data(v, canonical)]
                                            for k, v in x.items()]))
        if t is tuple:
            return Ext(_TUPLE, self._encode(self._data(list(x), canonical)))
        if t is set or t is frozenset:
            # Sets of scalars (ids, names: the common case) go to msgpack whole, as a list: one C call
            # instead of a Python call per item, which made sets the slowest part of a changelog.
            if _SCALARS.issuperset(map(type, x)):
                items = list(x)
                if canonical:
                    items.sort(key=self._encode)
                return Ext(_SET if t is set else _FROZENSET, self._encode(items))
            items = [self._data(v, canonical) for v in x]
            if canonical:
                items.sort(key=self._encode)
            return Ext(_SET if t is set else _FROZENSET, self._encode(items))
        if t is collections.defaultdict or t is collections.Counter:
            return self._careful(x, "", canonical)
        raise _Unsupported

    def _careful(self, x, path, canonical):
        """The slow walk: every value visited with its path, for big ints and for the error message."""
        t = type(x)
        if t is int:
            return x if -(1 << 63) <= x < (1 << 64) else Ext(_BIGINT, str(x).encode())
        if t is str:
            try:
                x.encode("utf-8")
                return x
            except UnicodeEncodeError:   # lone surrogates (JSON allows them): not UTF-8, still text
                return Ext(_SURROGATES, x.encode("utf-8", "surrogatepass"))
        if t in _SCALARS:
            return x
        if t is list:
            return [self._careful(v, f"{path}[{i}]", canonical) for i, v in enumerate(x)]
        if t is tuple:
            return Ext(_TUPLE, self._encode([self._careful(v, f"{path}[{i}]", canonical) for i, v in enumerate(x)]))
        if t is set or t is frozenset:
            items = [self._careful(v, f"{path}{{{v!r:.40}}}", canonical) for v in x]
            if canonical:
                items.sort(key=self._encode)
            return Ext(_SET if t is set else _FROZENSET, self._encode(items))
        if t is dict or t is collections.Counter or t is collections.defaultdict:
            pairs = [[self._careful(k, f"{path} key {k!r:.40}", canonical),
                      self._careful(v, f"{path}[{k!r:.40}]", canonical)] for k, v in x.items()]
            if t is collections.Counter:
                return Ext(_COUNTER, self._encode(pairs))
            if t is collections.defaultdict:
                factory = x.default_factory
                if factory is not None and _FACTORIES.get(getattr(factory, "__name__", None)) is not factory:
                    raise NotData(path, x, f" with default_factory {factory!r} (only built-in types are data)")
                return Ext(_DEFAULTDICT, self._encode([None if factory is None else factory.__name__, pairs]))
            if all(type(k) in _SCALARS for k, _ in pairs):
                return dict(pairs)
            return Ext(_DICT, self._encode(pairs))
        raise NotData(path, x)

    # --- decoding ---------------------------------------------------------------------------
    def decode(self, data):
        """Bytes -> plain data; ValueError for anything that is not a valid encoding."""
        try:
            return self._decoder.decode(data)
        except (DecodeError, TypeError, ValueError, RecursionError, OverflowError) as e:
            raise ValueError(f"not valid data: {e}") from None

    def _ext(self, code, body):
        decode = self._decoder.decode
        if code == _TUPLE:
            return tuple(decode(body))
        if code == _SET:
            return set(decode(body))
        if code == _FROZENSET:
            return frozenset(decode(body))
        if code == _DICT:
            return dict(decode(body))
        if code == _COUNTER:
            return collections.Counter(dict(decode(body)))
        if code == _DEFAULTDICT:
            name, pairs = decode(body)
            if name is not None and name not in _FACTORIES:
                raise ValueError(f"defaultdict factory {name!r} is not a built-in type")
            return collections.defaultdict(None if name is None else _FACTORIES[name], dict(pairs))
        if code == _BIGINT:
            return int(bytes(body))
        if code == _SURROGATES:
            return bytes(body).decode("utf-8", "surrogatepass")
        raise ValueError(f"unknown extension type {code}")


class _Unsupported(Exception):
    """The fast walk met something it does not handle: the careful walk decides."""


DATA = DataCodec()


class Serde:
    """The application's messages across a state step, and the pickle switch for state objects."""

    def __init__(self, module=None, app=None, unsafe_pickle=False):
        self.unsafe_pickle = unsafe_pickle
        owner = next((m for m in _candidates(module, app)
                      if hasattr(m, "serialize") or hasattr(m, "deserialize")), None)
        default_dumps, default_loads = (_pickle_dumps, pickle.loads) if unsafe_pickle else (_message_dumps, DATA.decode)
        self.dumps = getattr(owner, "serialize", None) or default_dumps
        self.loads = getattr(owner, "deserialize", None) or default_loads

    def state_codec(self, state_name, state_class):
        return StateCodec(state_name, state_class, self.unsafe_pickle)


def _candidates(module, app):
    if module is not None:
        yield module
    if app is not None:
        for _pi, _si, step in app.state_steps():
            defining = sys.modules.get(getattr(step.computation, "__module__", None))
            if defining is not None:
                yield defining


def _pickle_dumps(obj):
    return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)


def _message_dumps(message):
    try:
        return DATA.encode(message)
    except NotData as e:
        raise TypeError(f"{e}: a message crossing a state step must be plain data (str, numbers, bytes, "
                        f"None, lists, tuples, dicts, sets) unless the application module defines "
                        f"serialize(message) -> bytes and deserialize(bytes) -> message (or the worker runs "
                        f"with --unsafe-pickle)") from None


def _split_record(blob, empty_error):
    """(format byte, body) of a changelog value; ValueError(empty_error) when there is no value."""
    if not isinstance(blob, (bytes, bytearray, memoryview)) or len(blob) < 1:
        raise ValueError(empty_error)
    return bytes(blob[:1]), memoryview(blob)[1:]


class StateCodec:
    """State objects of one state name <-> changelog values.

    A state object is written as its attributes (`vars()` and `__slots__`), each plain data, or as
    what its class's `to_data()` returns; it is read back into a new instance of `state_class` only:
    `state_class()` with the attributes set on it (an attribute the record lacks keeps the value
    `__init__` gave it), or `state_class.from_data(data)`.

    A class with `changed_entries()` and `from_entries(entries)` is saved as entries instead: one
    changelog record per entry it reports changed, each value plain data (`entries` is True)."""

    def __init__(self, state_name, state_class, unsafe_pickle=False):
        self.state_name = state_name
        self.state_class = state_class
        self.unsafe_pickle = unsafe_pickle
        self.to_data = getattr(state_class, "to_data", None)
        self.from_data = getattr(state_class, "from_data", None)
        self.slots = [s for k in state_class.__mro__ for s in _slot_names(k)]
        self.changed_entries = getattr(state_class, "changed_entries", None)
        self.from_entries = getattr(state_class, "from_entries", None)
        self.entries = self.changed_entries is not None and self.from_entries is not None

    def encode_changes(self, state):
        """[(entry name, value bytes or None: deleted)] of what `state` changed since the last call."""
        changes = state.changed_entries()
        out = []
        for name, value in changes.items():
            if type(name) is not str or not name:
                raise StateEncodingError(f"state {self.state_name!r}: {type(state).__qualname__}.changed_entries() "
                                         f"named an entry {name!r:.60}: entry names are non-empty strings")
            if value is None:
                out.append((name, None))
            elif self.unsafe_pickle:
                out.append((name, PICKLED + pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)))
            else:
                try:
                    out.append((name, ENTRY + DATA.encode(value)))
                except NotData as e:
                    raise StateEncodingError(
                        f"state {self.state_name!r}: cannot save entry {name!r:.60} of a "
                        f"{type(state).__qualname__} to its changelog: {e.path or 'its value'} is a {e.value_type}, "
                        f"which is not plain data (str, numbers, bytes, None, lists, tuples, dicts, sets)") from None
        return out

    def decode_entries(self, blobs: dict):
        """{entry name: value bytes} -> a new state object; ValueError when they are not this state's."""
        entries = {}
        for name, blob in blobs.items():
            kind, body = _split_record(blob, f"entry {name!r:.60}: empty changelog value")
            if kind == ENTRY:
                entries[name] = DATA.decode(body)
            elif kind == PICKLED:
                entries[name] = self._unpickle(body, f"entry {name!r:.60} is pickled")
            else:
                raise ValueError(f"entry {name!r:.60}: unknown entry record format {kind!r}")
        return self._checked(self.from_entries(entries))

    def _unpickle(self, body, what):
        if not self.unsafe_pickle:
            raise ValueError(f"{what}, and pickle is not enabled (loading it could run any code; run the "
                             f"worker with --unsafe-pickle only if the topic is trusted)")
        return pickle.loads(body)

    def _checked(self, state):
        """`state` if it is an instance of exactly this state's class (a record cannot pick another)."""
        if type(state) is not self.state_class:
            raise ValueError(f"decoded a {type(state).__qualname__}, not the state class "
                             f"{self.state_class.__qualname__} of state {self.state_name!r}")
        return state

    def encode(self, state) -> bytes:
        if self.unsafe_pickle:
            return PICKLED + pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)
        name = type(state).__qualname__
        if self.to_data is not None:
            try:
                return TO_DATA + DATA.encode(state.to_data())
            except NotData as e:
                where, value_type = f"in what {name}.to_data() returned, {e.path or 'the value'}", e.value_type
        else:
            attrs = self._attributes(state)
            try:
                return ATTRIBUTES + DATA.encode(attrs)
            except NotData:
                where, value_type = self._culprit(attrs)
        raise StateEncodingError(
            f"state {self.state_name!r}: cannot save a {name} to its changelog: {where} is a {value_type}, "
            f"which is not plain data (str, numbers, bytes, None, lists, tuples, dicts, sets). Keep plain "
            f"data in state objects, or give {name} a to_data() method returning plain data and a "
            f"from_data(data) classmethod rebuilding the object, or run the worker with --unsafe-pickle "
            f"(run_local(..., unsafe_pickle=True)), which lets anyone who can write to the changelog "
            f"topic run code in the worker")

    @staticmethod
    def _culprit(attrs):
        """(where, type name) of the first value in `attrs` that is not data."""
        for attr, value in attrs.items():
            try:
                DATA._careful(value, attr, False)
            except NotData as e:
                return f"attribute {e.path}", e.value_type
        return "an attribute", "value"

    def _attributes(self, state):
        attrs = dict(getattr(state, "__dict__", None) or {})
        for slot in self.slots:
            if slot not in attrs and hasattr(state, slot):
                attrs[slot] = getattr(state, slot)
        return {k: v for k, v in attrs.items() if not k.startswith("__")}

    def decode(self, blob):
        """A changelog value -> a new state object; ValueError when it is not one of this state's."""
        kind, body = _split_record(blob, "empty changelog value")
        if kind == PICKLED or kind == b"\x80":     # b"\x80": a pickle written before the data codec
            state = self._unpickle(body if kind == PICKLED else blob, "a pickled state object")
        elif kind == TO_DATA:
            if self.from_data is None:
                raise ValueError(f"written by {self.state_class.__qualname__}.to_data(), but the class has no from_data")
            state = self.from_data(DATA.decode(body))
        elif kind == ATTRIBUTES:
            state = self._from_attributes(DATA.decode(body))
        else:
            raise ValueError(f"unknown state record format {kind!r}")
        return self._checked(state)

    def _from_attributes(self, attrs):
        if type(attrs) is not dict:
            raise ValueError(f"state attributes are a {type(attrs).__name__}, not a dict")
        state = self.state_class()
        cls = self.state_class
        for name, value in attrs.items():
            # Only instance attributes: never a dunder, a method or a property of the class.
            if type(name) is not str or not name.isidentifier() or name.startswith("__") or (
                    name not in self.slots and _is_behaviour(cls, name)):
                raise ValueError(f"{name!r:.80} is not an attribute a {cls.__qualname__} record may set")
            try:
                setattr(state, name, value)
            except AttributeError as e:
                raise ValueError(f"cannot set attribute {name!r} of {cls.__qualname__}: {e}") from None
        return state


def _slot_names(cls):
    slots = cls.__dict__.get("__slots__", ())
    return [slots] if isinstance(slots, str) else [s for s in slots if s not in ("__dict__", "__weakref__")]


def _is_behaviour(cls, name):
    """Whether `name` on `cls` is a method, property or other callable or descriptor (which a record
    must not shadow with data); a plain class-level default value is not."""
    try:
        attr = inspect.getattr_static(cls, name)
    except AttributeError:
        return False
    return callable(attr) or hasattr(type(attr), "__get__")
