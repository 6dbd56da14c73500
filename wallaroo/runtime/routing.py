"""Where a message goes: partition keys as bytes, the Kafka partition that owns each key, and the
headers that say which state step a repartitioned record is for."""
import json
import zlib

from .serde import DATA, NotData

# Record headers on internal topics.
STEP_HEADER = "w-step"            # identity of the state step a record is for (see step_header)
WATERMARK_HEADER = "w-watermark"  # marks a watermark record; value is the event time (ms, 8 bytes)


# Tags of key bytes: s (str), i (int), b (bytes), d (anything else that is plain data: a tuple, a float,
# None...). EVENT_TIME_KEY is the engine's own changelog record of a state partition's event time.
EVENT_TIME_KEY = b"t"
# Tag of an entry's changelog key: one entry of a state object that saves itself as entries
# (`changed_entries` / `from_entries`, state.py): the object's key bytes, length first, then the
# entry's name.
ENTRY_TAG = b"e"


def key_bytes(key) -> bytes:
    """A stable byte form of a partition key (Python's hash() is salted per process): data, never
    pickle, so reading a key back can run no code."""
    t = type(key)
    if t is str:
        return b"s" + key.encode("utf-8", "surrogatepass")
    if t is int:
        return b"i" + str(key).encode()
    if t is bytes:
        return b"b" + key
    try:
        return b"d" + DATA.encode(key, canonical=True)
    except NotData as e:
        raise TypeError(f"partition key {e}: a partition key must be plain data (str, int, bytes, or "
                        f"tuples / frozensets of them)") from None


def key_from_bytes(data: bytes):
    """The partition key; ValueError when `data` is not the key_bytes of any key."""
    if type(data) is not bytes or not data:
        raise ValueError(f"a partition key must be non-empty bytes, not {type(data).__name__}")
    tag, body = data[:1], data[1:]
    try:
        if tag == b"s":
            return body.decode("utf-8", "surrogatepass")
        if tag == b"i":
            key = int(body)
        elif tag == b"b":
            return body
        elif tag == b"d":
            key = DATA.decode(body)
        elif tag == b"p":
            raise ValueError("a pickled key (written before keys became data): not loaded")
        else:
            raise ValueError(f"unknown key tag {tag!r}")
    except UnicodeDecodeError as e:
        raise ValueError(f"malformed key: {e}") from None
    if key_bytes(key) != data:      # e.g. b"i 1" or b"i01": not the form the router makes
        raise ValueError(f"malformed key {data[:40]!r}")
    return key


def entry_key(kb: bytes, name: str) -> bytes:
    """The changelog key of entry `name` of the state object of key bytes `kb`."""
    return entry_key_prefix(kb) + name.encode("utf-8", "surrogatepass")


def entry_key_prefix(kb: bytes) -> bytes:
    """What every entry key of the object of key bytes `kb` starts with (its entry name follows)."""
    return ENTRY_TAG + len(kb).to_bytes(4, "big") + kb


def _entry_object_key(data) -> bytes | None:
    """The object's key bytes in an entry key's layout (tag, 4-byte length, key bytes, name); None
    when `data` does not have that layout.  The one place that reads it."""
    if type(data) is not bytes or data[:1] != ENTRY_TAG or len(data) < 5:
        return None
    n = int.from_bytes(data[1:5], "big")
    kb = data[5:5 + n]
    return kb if len(kb) == n else None


def split_entry_key(data: bytes) -> tuple[bytes, str]:
    """(key bytes of the object, entry name) of an entry_key; ValueError when `data` is not one."""
    kb = _entry_object_key(data)
    if kb is None:
        what = "malformed entry key" if type(data) is bytes and data[:1] == ENTRY_TAG else "not an entry key:"
        raise ValueError(f"{what} {data[:40]!r}")
    key_from_bytes(kb)
    try:
        return kb, data[5 + len(kb):].decode("utf-8", "surrogatepass")
    except UnicodeDecodeError as e:
        raise ValueError(f"malformed entry name: {e}") from None


def state_key_of(data: bytes) -> bytes:
    """The key bytes of the state object a changelog key belongs to (itself unless an entry key)."""
    kb = _entry_object_key(data)
    return data if kb is None else kb


def describe_key(data) -> str:
    """A partition key for a log line, whatever the bytes hold."""
    if data == EVENT_TIME_KEY:
        return "the partition's event time"
    try:
        if type(data) is bytes and data[:1] == ENTRY_TAG:
            kb, name = split_entry_key(data)
            return f"{key_from_bytes(kb)!r} entry {name!r:.60}"
        return repr(key_from_bytes(data))
    except (ValueError, TypeError):
        return f"<undecodable key {data[:40]!r}>"


class KeyRouter:
    """Maps a state step's partition keys to partitions of its repartition topic.

    With an explicit key list, key i goes to partition i mod P, so keys spread evenly;
    otherwise a CRC32 of the key's bytes decides."""

    def __init__(self, partition_keys, num_partitions):
        self.num_partitions = num_partitions
        self.index = None
        if partition_keys is not None:
            self.index = {key_bytes(k): i for i, k in enumerate(partition_keys)}

    def partition_for(self, kbytes: bytes) -> int:
        if self.index is not None:
            i = self.index.get(kbytes)
            if i is None:
                raise KeyError(f"partition key {key_from_bytes(kbytes)!r} is not in the step's partition_keys "
                               f"(a key not in partition_keys has no state partition)")
            return i % self.num_partitions
        return zlib.crc32(kbytes) % self.num_partitions


def step_header(step_id: tuple) -> bytes:
    """The header value naming a state step by its stable identity (pipeline name, step name[, n]).

    Names, not positions: records already in a repartition topic still reach their step after the
    application gains a pipeline or a step in front of it."""
    return json.dumps(list(step_id), ensure_ascii=False).encode("utf-8")


def parse_step_header(value: bytes) -> tuple:
    """The step identity in a header value; ValueError when it is not one."""
    try:
        parts = json.loads(value)
    except (ValueError, TypeError) as e:
        raise ValueError(f"malformed {STEP_HEADER} header {value[:80]!r}") from e
    if not (isinstance(parts, list) and 2 <= len(parts) <= 3 and all(isinstance(p, (str, int)) for p in parts)):
        raise ValueError(f"malformed {STEP_HEADER} header {value[:80]!r}")
    return tuple(parts)


def header(headers, name):
    """The value of header `name` in a record's header list, or None."""
    if headers:
        for k, v in headers:
            if k == name:
                return v
    return None
