"""Internal topics carry data, not code, and hostile records cannot crash a worker, corrupt its state or
move its event time: the data codec, state records decoded only into the declared class, validation
on read, dead letters bounded, the event-time bound. Unit tests on the runtime's own task (run_local),
then hostile records written straight to the real broker's source, repartition and changelog topics."""
import collections
import hashlib
import os
import pickle
import signal
import time

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

import star_leaders
import wallaroo
import window
import wordcount
from conftest import REAL_HOUR, create_topic, read_topic, wait_for
from star_leaders.events import RepoEvent
from star_leaders.state import RepoMetadata
from test_wallaroo_kafka import FAST, changelog_states, expected_counts, produce, word_lines
from wallaroo.runtime import topics
from wallaroo.runtime.collector import DEAD_LETTER_VALUE_BYTES
from wallaroo.runtime.event_time import HOUR_MS, SourceClock, encode_watermark
from wallaroo.runtime.routing import ENTRY_TAG, EVENT_TIME_KEY, STEP_HEADER, WATERMARK_HEADER, key_bytes, key_from_bytes
from wallaroo.runtime.serde import ATTRIBUTES, DATA, ENTRY, TO_DATA, StateCodec, StateEncodingError
from wallaroo.runtime.task import MAX_MESSAGE_BYTES
from wallaroo.testing import Checkpoint, run_local

ARGS = ["--kafka_source_topic", "in", "--kafka_sink_topic", "out"]
T0 = 1_420_070_400_000          # 2015-01-01T00:00:00Z


class SideEffect:
    """Unpickling it creates the directory `path`: the code a pickle in a topic would run."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return os.mkdir, (self.path,)


def hostile_pickle(path):
    return pickle.dumps(SideEffect(path), protocol=4)


def same_data(a, b):
    """Equal and of the same types all the way down (a tuple is not a list, a set not a list)."""
    if type(a) is not type(b):
        return False
    if type(a) in (list, tuple):
        return len(a) == len(b) and all(same_data(x, y) for x, y in zip(a, b))
    if type(a) in (dict, collections.defaultdict, collections.Counter):
        return list(a) == list(b) and all(same_data(a[k], b[k]) for k in a) and (
            type(a) is not collections.defaultdict or a.default_factory is b.default_factory)
    if type(a) in (set, frozenset):
        return a == b and all(type(x) is type(next(y for y in b if y == x)) for x in a)
    return a == b


def source():
    return wallaroo.KafkaSourceConfig("in", "b:1", "Warn", wordcount.decode)


def sink(encoder):
    return wallaroo.KafkaSinkConfig("out", "b:1", "Warn", 0, 0, encoder)


# ------------------------------------------------------------------------------------- the codec

def test_data_codec_keeps_types():
    value = {"tuple": (1, ("nested", b"\x00bytes")), "set": {1, 2}, "frozen": frozenset({"a"}),
             (1, "tuple key"): [None, 1.5, True, -7], 3: {frozenset({1}): "frozenset key"}, b"k": "bytes key",
             "big": 2 ** 80, "negative big": -(2 ** 70), "counter": collections.Counter("aab"),
             "defaultdict": collections.defaultdict(list, {1: [2]}), "empty": ((), set(), {}, []),
             "lone surrogate \ud83d": ["o/\ud83d", ("\udc00",)]}
    back = DATA.decode(DATA.encode(value))
    assert same_data(back, value)
    # key bytes are canonical: a frozenset key gives the same bytes whatever its iteration order
    assert key_bytes(frozenset(f"k{i}" for i in range(50))) == key_bytes(frozenset(f"k{i}" for i in reversed(range(50))))
    assert key_from_bytes(key_bytes(("a", 1))) == ("a", 1)


@pytest.mark.skipif(not REAL_HOUR.exists(), reason="needs the shared GH Archive hour")
def test_real_hour_state_round_trips_exactly_through_its_changelog_entries():
    import gzip
    lines = gzip.open(REAL_HOUR).read().splitlines()
    # A checkpoint every 97 records: each writes only the entries changed since the one before.
    result = run_local(star_leaders, lines, checkpoint_every=97)
    restored = result.states["repo-metadata"]           # read back from the changelog, as a restore does
    task = result._task
    live = {key_from_bytes(kb): state for store in task.stores.values()
            for table in store.partitions.values() for kb, state in table.items()}
    assert restored.keys() == live.keys() and sum(len(s.stars) for s in live.values()) > 100
    # equal slot by slot (== tells a tuple from a list and a set from a list; the dicts' order is not
    # part of the state: every use of it sorts by (stars, repo) or looks keys up)
    for key, state in live.items():
        assert restored[key].__getstate__() == state.__getstate__()
    records = task.collector.changelog
    entries = [ck for (_topic, ck) in records if ck != EVENT_TIME_KEY]
    assert entries and all(ck[:1] == ENTRY_TAG for ck in entries)
    assert all(b"star_leaders" not in (blob or b"") for blob in records.values())    # data, no class names
    # far fewer records than whole objects per checkpoint would have been: the header and what changed
    assert len(records) > len(live) * 10

    # A repository name with a lone surrogate is not msgpack text: the engine's careful walk takes it.
    codec = StateCodec("repo-metadata", RepoMetadata)
    state = RepoMetadata()
    state.update(RepoEvent("WatchEvent", "1", "o/\ud800", 3600))
    state.update(RepoEvent("ForkEvent", "2", "o/\ud800", 3601, actor="\udc00", url="u", name="o/f"))
    back = codec.decode_entries(dict(codec.encode_changes(state)))
    assert back.__getstate__() == state.__getstate__() and back.board() == state.board()
    # Entries of another shape are refused, not loaded.
    good = dict(codec.encode_changes(back))
    header = DATA.decode(good["p"][1:])
    for hostile in ({**good, "h" + "o/x": ENTRY + DATA.encode({"3": 1})},      # a str for an hour
                    {**good, "h" + "o/x": ENTRY + DATA.encode({1: -4})},       # negative stars
                    {**good, "x": ENTRY + DATA.encode(1)},                     # an unknown entry
                    {k: v for k, v in good.items() if k != "p"},              # no header
                    {**good, "p": ENTRY + DATA.encode([*header[:3], ["o/none"], *header[4:]])},  # a leader without stars
                    {**good, "p": TO_DATA + DATA.encode(header)}):            # another record format
        with pytest.raises(ValueError):
            codec.decode_entries(hostile)


class Thing:
    pass


class Holder:
    def __init__(self):
        self.items = []


def test_state_that_is_not_data_fails_at_checkpoint_saying_where_and_how():
    @wallaroo.state_computation(name="hold")
    def hold(word, state):
        state.items.append(Thing() if word == "thing" else word)
        return None, True

    ab = wallaroo.ApplicationBuilder("holder")
    ab.new_pipeline("p", source())
    ab.to_stateful(hold, Holder, "holder").to_sink(sink(None))
    assert run_local(ab.build(), [b"a", b"b"]).states["holder"][0].items == ["a", "b"]
    with pytest.raises(StateEncodingError) as error:
        run_local(ab.build(), [b"a", b"thing"])
    message = str(error.value)
    assert "attribute items[1]" in message and "Thing" in message
    assert "to_data()" in message and "from_data" in message and "--unsafe-pickle" in message
    # with pickle opted into, the same state saves (and reads back) as before
    assert type(run_local(ab.build(), [b"thing"], unsafe_pickle=True).states["holder"][0].items[0]).__name__ == "Thing"


class Ledger:
    """State with its own to_data/from_data (a deque is not data by itself)."""

    def __init__(self):
        self.recent = collections.deque(maxlen=3)

    def to_data(self):
        return list(self.recent)

    @classmethod
    def from_data(cls, data):
        state = cls()
        state.recent.extend(data)
        return state


def test_state_class_may_define_to_data_and_from_data():
    @wallaroo.state_computation(name="remember")
    def remember(word, state):
        state.recent.append(word)
        return None, True

    ab = wallaroo.ApplicationBuilder("ledger")
    ab.new_pipeline("p", source())
    ab.to_stateful(remember, Ledger, "ledger").to_sink(sink(None))
    state = run_local(ab.build(), [b"a", b"b", b"c", b"d"]).states["ledger"][0]
    assert type(state) is Ledger and list(state.recent) == ["b", "c", "d"] and state.recent.maxlen == 3


def test_state_records_decode_only_into_the_declared_class_and_never_unpickle(tmp_path):
    codec = StateCodec("word counts", wordcount.WordCounts)
    marker = tmp_path / "ran"
    refused = {
        "raw pickle": hostile_pickle(marker),
        "tagged pickle": b"P" + hostile_pickle(marker),
        "class swap": ATTRIBUTES + DATA.encode({"__class__": "builtins.dict"}),
        "method shadowed": ATTRIBUTES + DATA.encode({"__init__": 1}),
        "not attributes": ATTRIBUTES + DATA.encode([1, 2]),
        "garbage": b"\x00\xff\xfe",
        "truncated": ATTRIBUTES + DATA.encode({"counts": {"w01": 1}})[:-2],
        "empty": b"",
    }
    for what, blob in refused.items():
        with pytest.raises(ValueError):
            codec.decode(blob)
        assert not marker.exists(), what
    good = wordcount.WordCounts()
    good.counts = {"w01": 3}
    assert type(codec.decode(codec.encode(good))) is wordcount.WordCounts
    with pytest.raises(ValueError):
        key_from_bytes(b"p" + hostile_pickle(marker))      # keys are never unpickled either
    for malformed in (b"i 1", b"i01", b"x", b"", b"s\xff"):
        with pytest.raises(ValueError):
            key_from_bytes(malformed)
    assert not marker.exists()
    pickle.loads(hostile_pickle(marker))                 # the payloads really would have run code
    assert marker.exists()


# ----------------------------------------------------- a state computation that raises leaves no trace

class Tally:
    def __init__(self):
        self.total = 0
        self.seen = []
        self.hours = set()

    def on_event_time(self, event_time_ms):
        self.hours.add(event_time_ms // HOUR_MS)
        if event_time_ms // HOUR_MS % 24 == 13:     # 13:00 UTC
            raise ValueError("hook fails halfway")
        return None, True


@wallaroo.state_computation(name="tally")
def tally(item, state):
    word, amount = item.split("=")
    state.seen.append(word)              # changed before the check below: today's typical bug
    state.total += int(amount)           # raises for "x=oops" with `seen` already appended to
    return (word, state.total), True


@wallaroo.partition
def first_letter(item):
    return item[:1]


@wallaroo.encoder
def encode_tally(pair):
    return f"{pair[0]}={pair[1]}".encode()


def tally_app():
    ab = wallaroo.ApplicationBuilder("tally")
    ab.new_pipeline("p", source())
    ab.to_state_partition(tally, Tally, "tally", first_letter).to_sink(
        sink(encode_tally))
    return ab.build()


@pytest.mark.parametrize("checkpoint_every", [1, None])
def test_a_failing_state_computation_leaves_its_object_as_before_the_message(checkpoint_every):
    good = [(b"a=1", T0), (b"b=2", T0 + 1), (b"a=3", T0 + 2), Checkpoint(), (b"a=4", T0 + 3)]
    bad = good[:3] + [(b"a=oops", T0 + 2)] + good[3:] + [(b"a=nope", T0 + 4)]
    clean = run_local(tally_app(), good, checkpoint_every=checkpoint_every)
    dirty = run_local(tally_app(), bad, checkpoint_every=checkpoint_every)
    assert [DATA.decode(d.value) for d in dirty.dead_letters] == ["a=oops", "a=nope"]   # as repartitioned
    assert dirty.values == clean.values == [b"a=1", b"b=2", b"a=4", b"a=8"]
    for key, state in clean.states["tally"].items():
        assert vars(dirty.states["tally"][key]) == vars(state)
    assert dirty.states["tally"]["a"].seen == ["a", "a", "a"]


def test_a_failing_event_time_hook_is_rolled_back_too():
    items = [(b"a=1", T0 + 12 * HOUR_MS), (b"a=2", T0 + 13 * HOUR_MS), (b"a=3", T0 + 14 * HOUR_MS)]
    result = run_local(tally_app(), items)
    state = result.states["tally"]["a"]
    hour0 = T0 // HOUR_MS
    assert state.total == 6 and state.hours == {hour0 + 12, hour0 + 14}
    assert any("hook fails halfway" in d.error for d in result.dead_letters)


def test_an_object_created_after_event_time_moved_starts_at_that_time():
    """b's first record is an hour behind the partition's event time (hour 12, from a's watermark):
    b's object sees hour 12 first, as a's did, not only its own record's hour."""
    hour0 = T0 // HOUR_MS
    late_b = [(b"a=1", T0 + 12 * HOUR_MS), (b"b=2", T0 + 11 * HOUR_MS)]
    states = run_local(tally_app(), late_b, partitions=1).states["tally"]
    assert states["a"].hours == states["b"].hours == {hour0 + 12}
    # No checkpoint between b's creation and its failing message: the rebuild replays the catch-up.
    poisoned = [(b"a=1", T0 + 12 * HOUR_MS), Checkpoint(), (b"b=2", T0 + 11 * HOUR_MS), (b"b=oops", T0 + 11 * HOUR_MS)]
    result = run_local(tally_app(), poisoned, partitions=1, checkpoint_every=None)
    b = result.states["tally"]["b"]
    assert (b.total, b.seen, b.hours) == (2, ["b"], {hour0 + 12})
    assert [d.step for d in result.dead_letters] == ["tally"]
    # A catch-up that raises is rolled back and reported like any on_event_time; the record still counts.
    failing = [(b"a=1", T0 + 13 * HOUR_MS), (b"b=2", T0 + 12 * HOUR_MS)]
    result = run_local(tally_app(), failing, partitions=1)
    b = result.states["tally"]["b"]
    assert (b.total, b.hours) == (2, set())
    assert [d.step for d in result.dead_letters] == ["Tally.on_event_time"] * 2      # a's, then b's


# ------------------------------------------------------------------------------------- event time

def test_source_clock_refuses_records_far_ahead_of_the_stream():
    clock = SourceClock(max_skew_ms=6 * HOUR_MS, wall_clock=lambda: (T0 + 365 * 24 * HOUR_MS) / 1000)
    assert clock.admit(T0) is None and clock.newest == T0
    assert clock.admit(T0 + 5 * HOUR_MS) is None                       # within the bound: moves on
    refused = clock.admit(T0 + 5 * HOUR_MS + 7 * HOUR_MS)
    assert refused and "7.0 h ahead" in refused and clock.newest == T0 + 5 * HOUR_MS
    assert clock.admit(0) is None and clock.newest == T0 + 5 * HOUR_MS  # late: accepted, no move
    assert "wall clock" in SourceClock(HOUR_MS, wall_clock=lambda: T0 / 1000).admit(T0 + 2 * HOUR_MS)
    fresh = SourceClock(HOUR_MS, wall_clock=lambda: T0 / 1000 + 10 ** 6)
    fresh.learn_reference(T0)                                          # restored from the changelog
    assert fresh.admit(T0 + 2 * HOUR_MS) and fresh.admit(T0 + HOUR_MS // 2) is None
    assert SourceClock(0).admit(T0 + 10 ** 12) is None                  # 0: no bound


def test_a_committed_source_time_moves_the_bound_on_but_not_past_the_wall_clock():
    # The changelog's time lags the committed offsets: a partition's next owner starts from the
    # source time its last checkpoint had accepted, and is not refused records just after it.
    clock = SourceClock(6 * HOUR_MS, wall_clock=lambda: (T0 + 365 * 24 * HOUR_MS) / 1000)
    clock.learn_reference(T0)
    assert clock.admit(T0 + 8 * HOUR_MS) is not None                   # against the changelog alone
    assert clock.learn_committed(T0 + 7 * HOUR_MS) and clock.newest == T0 + 7 * HOUR_MS
    assert clock.admit(T0 + 8 * HOUR_MS) is None
    future = T0 + 366 * 24 * HOUR_MS                                   # a day past the wall clock
    assert not clock.learn_committed(future) and clock.newest == T0 + 8 * HOUR_MS


def test_a_stray_timestamp_cannot_expire_windows_in_the_local_runner():
    h = window.HOUR_MS
    items = [(b"b", T0)] * 3 + [(b"a", T0 + h), (b"a", T0 + 40 * h)] + [(b"a", T0 + i * h) for i in range(2, 5)]
    result = run_local(window, items, args=ARGS)
    assert [(d.step, d.value) for d in result.dead_letters] == [("event time", b"a")]
    assert "39.0 h ahead of the stream's newest time" in result.dead_letters[0].error
    assert not [v for v in result.values if v.startswith(b"b,") and v.endswith(b",0")], "b's window closed"
    assert result.states["windows"]["a"].end_hour == T0 // h + 4
    assert result.states["windows"]["b"].total() == 3


# ---------------------------------------------------------------------------- on the real broker

def make_internal_topics(bootstrap, app_id, partitions):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    topics.ensure_topics(admin, topics.internal_topics(app_id, ["word counts"], partitions))


def step_headers():
    from wallaroo.runtime.routing import step_header
    return [(STEP_HEADER, step_header(("count words", "count word")))]


@pytest.mark.kafka
def test_hostile_internal_and_source_records_are_dead_letters_and_state_stays_exact(kafka, topic_name, workers,
                                                                                      tmp_path):
    src, sink, app_id = topic_name("trust-in"), topic_name("trust-out"), topic_name("trust")
    create_topic(kafka, src, 2)
    make_internal_topics(kafka, app_id, 2)
    changelog, repartition = topics.changelog_topic(app_id, "word counts"), topics.repartition_topic(app_id, "word counts")
    marker = tmp_path / "code-ran"
    index = {w: i for i, w in enumerate(wordcount.WORDS)}

    def part(word):
        return index[word] % 2
    codec = StateCodec("word counts", wordcount.WordCounts)
    kept = wordcount.WordCounts()
    kept.counts = {"w05": 7}                 # a good changelog value among the bad: restored
    p = Producer({"bootstrap.servers": kafka, "message.max.bytes": 2_000_000})
    for key, value, partition in [
            (key_bytes("w01"), hostile_pickle(marker), part("w01")),
            (key_bytes("w03"), b"P" + hostile_pickle(marker), part("w03")),
            (key_bytes("w07"), ATTRIBUTES + DATA.encode({"__class__": "x"}), part("w07")),
            (key_bytes("w09"), b"\x00garbage", part("w09")),
            (EVENT_TIME_KEY, b"abc", 0),
            (b"p" + hostile_pickle(marker), codec.encode(kept), 0),
            (key_bytes("w05"), codec.encode(kept), part("w05"))]:
        p.produce(changelog, value, key, partition=partition)
    p.flush(30)

    lines = word_lines(2000, seed=11)
    produce(kafka, src, lines[:1000])
    w = workers.start("wordcount", src, sink, "w1", app_id, *FAST)
    wait_for(lambda: len(read_topic(kafka, sink, idle_s=0.5, timeout_s=5)) > 100, 60, "first outputs")

    wm = [(WATERMARK_HEADER, b"1")]
    for value, key, partition, headers in [
            (b"abc", None, 0, wm),                                         # a watermark of 3 bytes
            (None, None, 1, wm),                                           # a watermark without value
            (hostile_pickle(marker), key_bytes("w02"), part("w02"), step_headers()),
            (DATA.encode(5), key_bytes("w02"), part("w02"), step_headers()),     # wrong type
            (DATA.encode(["w02"]), key_bytes("w02"), part("w02"), step_headers()),
            (DATA.encode("w02" + "x" * MAX_MESSAGE_BYTES), key_bytes("w02"), part("w02"), step_headers()),
            (DATA.encode("w02"), key_bytes("w02"), 1 - part("w02"), step_headers()),   # wrong partition
            (DATA.encode("w02"), key_bytes("w02"), part("w02"), None),                 # no step
            (DATA.encode("w02"), b"p" + hostile_pickle(marker), 0, step_headers())]:
        p.produce(repartition, value, key, partition=partition, headers=headers, timestamp=T0)
    # Source records with timestamps far ahead: 0 (librdkafka sends the wall clock) and 2 days on.
    p.produce(src, b"w04 w04", timestamp=0)
    p.produce(src, b"w04", timestamp=1_420_000_000_000 + 2 * 24 * HOUR_MS)
    p.flush(30)
    produce(kafka, src, lines[1000:], start_ms=1_420_000_000_000 + 1000 * 1000)

    expected = expected_counts(lines)
    expected["w05"] += 7
    total = sum(n for w_, n in expected_counts(lines).items())
    got = read_topic(kafka, sink, expect=total, timeout_s=180)
    want = {f"{w_}={k}".encode() for w_, n in expected_counts(lines).items()
            for k in range(1 + (7 if w_ == "w05" else 0), n + 1 + (7 if w_ == "w05" else 0))}
    values = collections.Counter(m.value() for m in got)
    assert set(values) == want and max(values.values()) == 1
    wait_for(lambda: changelog_states(kafka, app_id) == dict(expected), 30, "the exact final state")
    dead = read_topic(kafka, topics.dead_letter_topic(app_id), expect=17, timeout_s=60)
    steps = collections.Counter(dict(m.headers())["step"].decode() for m in dead)
    assert steps == {"restore": 6, "watermark": 2, "deserialize": 1, "route": 6, "event time": 2}, steps
    errors = b" | ".join(dict(m.headers())["error"] for m in dead)
    for reason in (b"pickle is not enabled", b"a watermark value is 8 bytes, not 3", b"not its message's partition key",
                   b"over the 1000000 a message may have", b"belongs to partition", b"ahead of the stream's newest time",
                   b"pickled key"):
        assert reason in errors, reason
    assert not marker.exists(), "a pickle from a topic ran code in the worker"
    assert w.poll() is None and "Traceback" not in w.log_path.read_text()


@pytest.mark.kafka
def test_a_dead_letter_bigger_than_the_topic_allows_is_capped_and_the_worker_goes_on(kafka, topic_name, workers):
    """Before capping, a 2 MB dead letter was refused by the dead-letter topic (1 MB), the checkpoint
    aborted, and the worker re-read the same record forever: nothing after it was ever counted."""
    src, sink, app_id = topic_name("big-in"), topic_name("big-out"), topic_name("big")
    create_topic(kafka, src, 1, {"max.message.bytes": str(4 * 1024 * 1024)})
    big = b"\xff" + os.urandom(2_000_000)           # not UTF-8 (the decoder rejects it), and incompressible
    p = Producer({"bootstrap.servers": kafka, "message.max.bytes": 4_000_000})
    p.produce(src, b"w01", timestamp=T0)
    p.produce(src, big, timestamp=T0 + 1)
    p.produce(src, b"w01", timestamp=T0 + 2)
    p.flush(30)
    w = workers.start("wordcount", src, sink, "w1", app_id, *FAST)
    got = read_topic(kafka, sink, expect=2, timeout_s=60)
    assert sorted(m.value() for m in got) == [b"w01=1", b"w01=2"]
    dead = read_topic(kafka, topics.dead_letter_topic(app_id), expect=1, timeout_s=30)
    assert len(dead) == 1
    headers = dict(dead[0].headers())
    assert dead[0].value() == big[:DEAD_LETTER_VALUE_BYTES]
    assert headers["original-size"] == b"2000001"
    assert headers["original-sha256"] == hashlib.sha256(big).hexdigest().encode()
    assert headers["step"] == b"decoder"
    assert w.poll() is None and "checkpoint refused" not in w.log_path.read_text()


@pytest.mark.kafka
def test_wall_clock_timestamp_cannot_close_windows_even_right_after_a_restart(kafka, topic_name, workers):
    """A record produced with timestamp 0 gets the wall clock (librdkafka): years ahead of a 2015 replay.
    It is refused while the worker runs, and after a restart too (the stream's time is committed with the
    source offsets, and saved in the changelog)."""
    src, sink, app_id = topic_name("skew-in"), topic_name("skew-out"), topic_name("skew")
    create_topic(kafka, src, 1)
    h = window.HOUR_MS
    p = Producer({"bootstrap.servers": kafka})
    for i in range(3):
        p.produce(src, b"b", timestamp=T0 + i * 1000)
    p.flush()
    w = workers.start("window", src, sink, "w1", app_id, *FAST)
    wait_for(lambda: [m for m in read_topic(kafka, sink, idle_s=0.5, timeout_s=5) if m.value().endswith(b",3")],
             60, "b counted")
    p.produce(src, b"a", timestamp=0)
    p.flush()
    wait_for(lambda: read_topic(kafka, topics.dead_letter_topic(app_id), idle_s=0.5, timeout_s=5), 60, "a dead letter")
    w.send_signal(signal.SIGTERM)
    assert w.wait(60) == 0
    p.produce(src, b"a", timestamp=0)          # the first record the restarted worker reads
    p.produce(src, b"a", timestamp=T0 + 2 * h)
    p.flush()
    w = workers.start("window", src, sink, "w1", app_id, *FAST)
    wait_for(lambda: [m for m in read_topic(kafka, sink, idle_s=0.5, timeout_s=5) if m.value().startswith(b"a,")],
             60, "the legitimate record counted")
    dead = read_topic(kafka, topics.dead_letter_topic(app_id), expect=2, timeout_s=30)
    assert [dict(m.headers())["step"] for m in dead] == [b"event time", b"event time"]
    # held to the source time its last checkpoint had accepted (committed with the offsets)
    assert b"ahead of the stream's newest time" in dict(dead[1].headers())["error"]
    time.sleep(1.0)
    reports = [m.value() for m in read_topic(kafka, sink, idle_s=1)]
    assert not [r for r in reports if r.startswith(b"b,") and r.endswith(b",0")], f"b's window closed: {reports}"
    assert w.poll() is None


class EntryTally:
    """State saved as entries: one per word."""

    def __init__(self):
        self.counts, self.changes = {}, set()

    def add(self, word):
        self.counts[word] = self.counts.get(word, 0) + 1
        self.changes.add(word)

    def changed_entries(self):
        names, self.changes = self.changes, set()
        return {w: self.counts.get(w) for w in names}

    @classmethod
    def from_entries(cls, entries):
        state = cls()
        for word, n in entries.items():
            if type(n) is not int:
                raise ValueError(f"{word}: {n!r} is not a count")
            state.counts[word] = n
        return state


def test_state_saved_as_entries_writes_what_changed_and_skips_a_bad_object_whole():
    from wallaroo.runtime.routing import entry_key, split_entry_key
    from wallaroo.runtime.state import StateStore
    bad_records = []
    store = StateStore("tally", EntryTally, "cl", StateCodec("tally", EntryTally), on_bad_record=lambda m, e: bad_records.append(m))
    good, bad = key_bytes("g"), key_bytes("b")
    raw = {entry_key(good, "x"): ENTRY + DATA.encode(2), entry_key(good, "y"): ENTRY + DATA.encode(1),
           entry_key(bad, "x"): ENTRY + DATA.encode(5), entry_key(bad, "z"): ENTRY + DATA.encode("five"),
           key_bytes("whole"): TO_DATA + DATA.encode({"x": 1})}      # not the form this class writes
    store.adopt(0, raw)
    assert store.partitions[0][good].counts == {"x": 2, "y": 1} and list(store.partitions[0]) == [good]
    assert len(bad_records) == 2         # the object b (one dead letter) and the whole-object record
    state = store.get(0, good)
    state.add("x")
    state.counts.pop("y")
    state.changes.add("y")
    store.changed(0, good)
    fresh = store.get(0, bad)            # b starts over
    fresh.add("x")
    store.changed(0, bad)
    records = list(store.changelog_records())
    tombstones = {k for _p, k, v in records if v is None}
    # every record of the skipped object, and the whole-object record, are deleted first; then only
    # what changed is written (y deleted), and the new b's entry after its old one's tombstone
    assert {entry_key(bad, "x"), entry_key(bad, "z"), key_bytes("whole"), entry_key(good, "y")} == tombstones
    written = [(split_entry_key(k), DATA.decode(v[1:])) for _p, k, v in records if v is not None]
    assert sorted(written) == [((bad, "x"), 1), ((good, "x"), 3)]
    order = [(k, v is None) for _p, k, v in records]
    assert order.index((entry_key(bad, "x"), True)) < order.index((entry_key(bad, "x"), False))
    assert store.as_saved(0, good).counts == {"x": 3}                  # a rebuild starts from what was written
    assert list(store.changelog_records()) == []                       # nothing changed since
