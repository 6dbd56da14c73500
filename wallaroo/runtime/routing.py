"""Where a message goes: partition keys as bytes, and the Kafka partition that owns each key."""
import pickle
import zlib

# Record headers on internal topics.
H_STEP = "w-step"            # "<pipeline index>:<step index>" of the state step a record is for
H_WATERMARK = "w-watermark"  # marks a watermark record; value is the event time (ms, 8 bytes)


def key_bytes(key) -> bytes:
    """A stable byte form of a partition key (Python's hash() is salted per process)."""
    if isinstance(key, str):
        return b"s" + key.encode("utf-8")
    if isinstance(key, bool) or not isinstance(key, (int, bytes)):
        return b"p" + pickle.dumps(key, protocol=4)
    if isinstance(key, int):
        return b"i" + str(key).encode()
    return b"b" + key


def key_from_bytes(data: bytes):
    tag, body = data[:1], data[1:]
    if tag == b"s":
        return body.decode("utf-8")
    if tag == b"i":
        return int(body)
    if tag == b"b":
        return body
    return pickle.loads(body)


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
                raise KeyError(f"partition key {key_from_bytes(kbytes)!r} is not in the step's partition_keys")
            return i % self.num_partitions
        return zlib.crc32(kbytes) % self.num_partitions


def step_header(pipeline_index: int, step_index: int) -> bytes:
    return f"{pipeline_index}:{step_index}".encode()


def parse_step_header(value: bytes):
    p, s = value.split(b":")
    return int(p), int(s)
