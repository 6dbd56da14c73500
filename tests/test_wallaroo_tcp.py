"""Wallaroo's own examples (examples/wallaroo/), 0.5's sinks and the TCP bridges on the real broker, over
real TCP sockets: output equals run_local and an expectation computed here; the market spread's two
pipelines joined by state run exactly once across kill -9."""
import random
import signal
import struct
import threading
import time
from collections import Counter, defaultdict

import pytest

from wallaroo.runtime.routing import EVENT_TIME_KEY
from wallaroo.runtime.serde import StateCodec
from conftest import ROOT, Workers, create_topic, free_port, read_topic, wait_for
from examples.wallaroo import alphabet, celsius, market_spread, reverse, word_count
from kafka_cluster import KafkaCluster
from tcp_peers import Receiver, send_framed
from test_wallaroo_kafka import held_back_feeder, kill_9_mid_stream, produce
from wallaroo.runtime import topics
from wallaroo.testing import run_local

pytestmark = pytest.mark.kafka
FAST = ["--checkpoint-interval-ms", "200", "--session-timeout-ms", "3000", "--transaction-timeout-ms", "5000"]


@pytest.fixture
def receiver():
    rx = Receiver()
    yield rx
    rx.close()


def start_tcp(workers, kafka, module, app_id, in_addrs, out_port, name="w1"):
    """A worker of an example that reads `--in` and writes `--out` (no Kafka flags: it still keeps its
    topics on the broker given by --bootstrap-servers)."""
    addrs = ",".join(f"127.0.0.1:{port}" for port in in_addrs)
    return workers.start(f"examples.wallaroo.{module}", "unused", "unused", name, app_id, "--in", addrs,
                         "--out", f"127.0.0.1:{out_port}", "--bootstrap-servers", kafka, *FAST, cwd=ROOT)


def wait_lines(rx, n, what, timeout_s=90):
    wait_for(lambda: len(rx.lines()) >= n, timeout_s, what)
    time.sleep(1.0)                 # a moment more: duplicates would show
    return rx.lines()


def tcp_args(in_port, out_port):
    return ["--in", f"127.0.0.1:{in_port}", "--out", f"127.0.0.1:{out_port}"]


def test_word_count_over_tcp(kafka, topic_name, workers, receiver):
    rnd = random.Random(5)
    vocabulary = ["wallaroo", "kafka", "stream", "state", "zebra", "apple", "42nd", "x-ray"]
    chunks, words = [], []
    for _ in range(400):            # words dressed with capitals and punctuation the split must remove
        chosen = [rnd.choice(vocabulary) for _ in range(rnd.randint(1, 6))]
        words.extend(chosen)
        dressed = [rnd.choice(["", "(", '"']) + (w.upper() if rnd.random() < 0.3 else w)
                   + rnd.choice(["", ",", "!", "."]) for w in chosen]
        chunks.append(" ".join(dressed).encode())
    counts, expected = Counter(), []
    for w in words:
        counts[w] += 1
        expected.append(f"{w} => {counts[w]}")
    in_port = free_port()
    local = run_local(word_count, chunks, args=tcp_args(in_port, receiver.port))
    w = start_tcp(workers, kafka, "word_count", topic_name("tcp-wc"), [in_port], receiver.port)
    send_framed(("127.0.0.1", in_port), chunks)
    got = wait_lines(receiver, len(expected), "every count")
    assert Counter(got) == Counter(v.decode().rstrip("\n") for v in local.values) == Counter(expected)
    by_word = defaultdict(list)
    for line in got:
        word, count = line.split(" => ")
        by_word[word].append(int(count))
    assert all(seq == list(range(1, len(seq) + 1)) for seq in by_word.values()), "a word's counts out of order"
    w.send_signal(signal.SIGTERM)
    assert w.wait(30) == 0


def test_reverse_over_tcp_and_a_stream_that_cannot_be_framed(kafka, topic_name, workers, receiver):
    words = [f"word{i}-{'x' * (i % 7)}" for i in range(300)]
    in_port = free_port()
    local = run_local(reverse, [w.encode() for w in words], args=tcp_args(in_port, receiver.port))
    app_id = topic_name("tcp-rev")
    w = start_tcp(workers, kafka, "reverse", app_id, [in_port], receiver.port)
    send_framed(("127.0.0.1", in_port), [w.encode() for w in words[:150]])
    # a header announcing 2 GB: the stream cannot be framed, so that connection is closed ...
    import socket
    with socket.create_connection(("127.0.0.1", in_port), timeout=10) as bad:
        bad.sendall(struct.pack(">I", 2 ** 31) + b"junk")
        bad.settimeout(30)
        assert bad.recv(10) == b"", "the worker kept a connection it cannot frame"
    # ... and a payload the decoder rejects is a dead letter; the worker goes on with the next connection
    send_framed(("127.0.0.1", in_port), [b"\xff\xfe"] + [w.encode() for w in words[150:]])
    got = wait_lines(receiver, len(words), "every reversed word")
    assert Counter(got) == Counter(v.decode().rstrip("\n") for v in local.values) == Counter(w[::-1] for w in words)
    first = {w[::-1] for w in words[:150]}   # each connection's frames go through one partition, in order
    assert [line for line in got if line in first] == [w[::-1] for w in words[:150]]
    assert [line for line in got if line not in first] == [w[::-1] for w in words[150:]]
    dead = read_topic(kafka, topics.dead_letter_topic(app_id), expect=1, timeout_s=30)
    assert [m.value() for m in dead] == [b"\xff\xfe"] and dict(dead[0].headers())["step"] == b"decoder"
    assert w.poll() is None
    assert "gave 2147483648, not a size in" in w.log_path.read_text()


def test_alphabet_over_tcp_with_framed_output(kafka, topic_name, workers, receiver):
    rnd = random.Random(7)
    votes = [(rnd.choice("abcdefghij"), rnd.randint(0, 70000)) for _ in range(500)]
    payloads = [struct.pack(">sI", letter.encode(), n) for letter, n in votes]
    totals, expected = Counter(), []
    for letter, n in votes:
        totals[letter] += n
        expected.append(struct.pack(">sQ", letter.encode(), totals[letter]))
    in_port = free_port()
    local = run_local(alphabet, payloads, args=tcp_args(in_port, receiver.port))
    start_tcp(workers, kafka, "alphabet", topic_name("tcp-abc"), [in_port], receiver.port)
    send_framed(("127.0.0.1", in_port), payloads)
    wait_for(lambda: len(receiver.frames()) >= len(expected), 90, "every total")
    time.sleep(1.0)
    got = receiver.frames()
    assert Counter(got) == Counter(v[4:] for v in local.values) == Counter(expected)
    per_letter = defaultdict(list)
    for f in got:
        per_letter[f[:1]].append(struct.unpack(">Q", f[1:])[0])
    assert all(seq == sorted(seq) for seq in per_letter.values())


def test_celsius_on_kafka_with_its_sink_options_honoured(kafka, topic_name, workers):
    src, sink, app_id = topic_name("celsius"), topic_name("fahrenheit"), topic_name("celsius-app")
    create_topic(kafka, src, 2)
    rnd = random.Random(9)
    readings = [round(rnd.uniform(-40, 100), 3) for _ in range(500)]
    values = [struct.pack(">f", c) for c in readings]
    produce(kafka, src, values)
    args = ["--kafka_source_topic", src, "--kafka_sink_topic", sink]
    local = run_local(celsius, values, args=args)
    w = workers.start("examples.wallaroo.celsius", src, sink, "w1", app_id, *FAST,
                      "--kafka_sink_max_produce_buffer_ms", "10", "--kafka_sink_log_level", "Fine",
                      "--kafka_source_log_level", "Error", cwd=ROOT)
    got = read_topic(kafka, sink, expect=len(values), timeout_s=90)
    expected = [struct.pack(">f", struct.unpack(">f", v)[0] * 1.8 + 32) for v in values]
    assert Counter(m.value() for m in got) == Counter(local.values) == Counter(expected)
    w.send_signal(signal.SIGTERM)
    assert w.wait(30) == 0
    log = w.log_path.read_text()
    # Fine: librdkafka's debug output, starting with the producer's configuration (the only client at
    # that level here, so the linger it shows is the producer's); the consumer's level is Error
    assert f"transactional.id = {app_id}-w1" in log and "queue.buffering.max.ms = 10" in log
    assert f"group.id = {app_id}\n" not in log, "the consumer (level Error) printed debug output"


def test_sinks_of_0_5_partition_chosen_by_the_encoder_and_to_sinks(kafka, topic_name, workers):
    src, sink, copies, app_id = topic_name("s5-in"), topic_name("s5-out"), topic_name("s5-copy"), topic_name("s5")
    create_topic(kafka, src, 2)
    create_topic(kafka, sink, 3)
    numbers = list(range(200))
    produce(kafka, src, [str(n).encode() for n in numbers])
    workers.start("sinks04", src, sink, "w1", app_id, *FAST, "--copy_topic", copies)
    fits = [n for n in numbers if n % 4 < 3]
    got = read_topic(kafka, sink, expect=len(fits), timeout_s=90)
    assert sorted((int(m.value()), m.partition()) for m in got) == [(n, n % 4) for n in fits]
    copied = read_topic(kafka, copies, expect=len(fits), timeout_s=30)
    assert sorted(int(m.value()) for m in copied) == fits          # all sinks or none
    dead = read_topic(kafka, topics.dead_letter_topic(app_id), expect=len(numbers) - len(fits), timeout_s=30)
    assert sorted(int(m.value()) for m in dead) == [n for n in numbers if n % 4 == 3]
    assert all(b"has 3 partitions" in dict(m.headers())["error"] for m in dead)


def test_tcp_sink_resends_what_a_dropped_receiver_may_have_missed(kafka, topic_name, workers, receiver):
    """At least once to the receiver: it stalls mid-stream, so its kernel acknowledges outputs it never
    reads, and then drops its connections, losing them; the forwarder reconnects and sends again from
    before anything the receiver may not have read, so nothing is missing."""
    words = [f"w{i:05d}" for i in range(6000)]
    in_port = free_port()
    start_tcp(workers, kafka, "reverse", topic_name("tcp-drop"), [in_port], receiver.port)
    sender = threading.Thread(target=send_framed, args=(("127.0.0.1", in_port), [w.encode() for w in words]),
                              kwargs={"chunk": 100, "interval_s": 0.05}, daemon=True)
    sender.start()
    wait_for(lambda: len(receiver.lines()) > 200, 90, "first outputs")
    receiver.reading.clear()
    wait_for(lambda: receiver.unread_bytes() > 0, 30, "outputs the stalled receiver has not read")
    assert sender.is_alive(), "the input ended before the drop: not mid-stream"
    receiver.drop_connections()         # what its kernel acknowledged and it did not read is gone
    receiver.reading.set()
    wait_for(lambda: len(receiver.connections) >= 2, 30, "the forwarder to reconnect")
    sender.join(90)
    want = {w[::-1] for w in words}
    wait_for(lambda: want <= set(receiver.lines()), 90, "every output, after the drop")
    last = receiver.connections[-1].decode().splitlines()
    assert len(set(last)) == len(last), "duplicates within one connection"


def test_tcp_sink_after_a_clean_restart_sends_nothing_twice(kafka, topic_name, workers, receiver):
    """A worker stopped by SIGTERM closes its connection itself, so the receiver reads all it holds and
    the forwarder commits every acknowledged output: the next worker sends none of them again."""
    in_port, app_id = free_port(), topic_name("tcp-restart")
    first, second = [f"a{i:04d}" for i in range(500)], [f"b{i:04d}" for i in range(500)]
    w = start_tcp(workers, kafka, "reverse", app_id, [in_port], receiver.port)
    send_framed(("127.0.0.1", in_port), [x.encode() for x in first])
    wait_lines(receiver, len(first), "the first worker's outputs")
    w.send_signal(signal.SIGTERM)
    assert w.wait(30) == 0
    start_tcp(workers, kafka, "reverse", app_id, [in_port], receiver.port, name="w2")
    send_framed(("127.0.0.1", in_port), [x.encode() for x in second])
    got = wait_lines(receiver, len(first) + len(second), "the second worker's outputs")
    assert Counter(got) == Counter(x[::-1] for x in first + second)
    assert len(receiver.connections) == 2


def test_tcp_sink_after_kill_9_resends_what_the_receiver_lost_with_it(kafka, topic_name, workers, receiver):
    """The receiver's kernel holds every output of the first worker, unread, when that worker is killed
    with SIGKILL and the receiver then drops its connection: the next worker sends them all again."""
    in_port, app_id = free_port(), topic_name("tcp-kill")
    first, second = [f"k{i:04d}" for i in range(800)], [f"m{i:04d}" for i in range(200)]
    receiver.reading.clear()
    w1 = start_tcp(workers, kafka, "reverse", app_id, [in_port], receiver.port)
    send_framed(("127.0.0.1", in_port), [x.encode() for x in first])
    held = sum(len(x) + 1 for x in first)
    wait_for(lambda: receiver.unread_bytes() >= held, 90, "every first output in the receiver's kernel")
    time.sleep(1.0)                     # five commit intervals: none of those outputs may be committed
    w1.send_signal(signal.SIGKILL)
    w1.wait(10)
    receiver.drop_connections()         # the outputs it never read are gone with it
    receiver.reading.set()
    assert receiver.lines() == []
    start_tcp(workers, kafka, "reverse", app_id, [in_port], receiver.port, name="w2")
    send_framed(("127.0.0.1", in_port), [x.encode() for x in second])
    want = {x[::-1] for x in first + second}
    wait_for(lambda: want <= set(receiver.lines()), 90, "every output, after the kill")


def test_tcp_sink_through_a_broker_restart_sends_everything_once(tmp_path, receiver):
    """The only broker stops for 6 s under a worker that is forwarding outputs to a TCP receiver: the
    forwarder loses its partition, marks what the receiver acknowledged as delivered and closes the
    connection itself; given the partition back it goes on after that, instead of from the group's last
    commit (which the outage held back). Every output arrives, none twice, and the worker stays up."""
    words = [f"r{i:05d}" for i in range(6000)]
    in_port = free_port()
    with KafkaCluster(tmp_path / "kafka", nodes=1) as cluster:
        cluster.start()
        workers = Workers(cluster.bootstrap, tmp_path)
        try:
            w = start_tcp(workers, cluster.bootstrap, "reverse", "tcp-outage", [in_port], receiver.port)
            sender = threading.Thread(target=send_framed, args=(("127.0.0.1", in_port), [x.encode() for x in words]),
                                      kwargs={"chunk": 40, "interval_s": 0.1, "timeout_s": 120}, daemon=True)
            sender.start()
            wait_for(lambda: len(receiver.lines()) >= 1500, 90, "the first outputs")
            cluster.stop(1)
            time.sleep(6)
            assert sender.is_alive(), "the input ended before the broker came back: not mid-stream"
            cluster.start(1)
            sender.join(120)
            want = Counter(x[::-1] for x in words)
            got = Counter(wait_lines(receiver, len(words), "every output, after the restart", 120))
            assert got == want, f"{sum((got - want).values())} duplicates, {sum((want - got).values())} missing"
            assert w.poll() is None, "the worker exited"
        finally:
            workers.stop_all()


def test_market_spread_over_tcp(kafka, topic_name, workers, receiver):
    quote, order = market_spread.market_data_message, market_spread.order_message
    rnd = random.Random(11)
    wide = set(rnd.sample(market_spread.SYMBOLS, len(market_spread.SYMBOLS) // 2))
    quotes = [quote(s, 100.0, 100.5 if s in wide else 100.01) for s in market_spread.SYMBOLS]
    orders = [order(1 + i % 2, 1000 + i % 7, str(i), rnd.choice(market_spread.SYMBOLS), 10 + i, 99.5)
              for i in range(400)]
    orders_port, quotes_port = free_port(), free_port()
    app_id = topic_name("tcp-ms")
    start_tcp(workers, kafka, "market_spread", app_id, [orders_port, quotes_port], receiver.port)
    send_framed(("127.0.0.1", quotes_port), quotes)
    wait_for_quotes(kafka, app_id, {s: 1 for s in market_spread.SYMBOLS})
    send_framed(("127.0.0.1", orders_port), orders)
    expected = [o for o in map(market_spread.order_decoder, orders) if o.symbol in wide]
    got = wait_lines(receiver, len(expected), "every withdrawn order")
    local = run_local(market_spread, {"quotes": quotes, "orders": orders},
                      args=["--kafka_source_topic", "orders", "--market_data_topic", "quotes",
                            "--kafka_sink_topic", "reports"])
    assert sorted(got) == sorted(v.decode().rstrip("\n") for v in local.values)
    assert sorted(line.split(", ")[2] for line in got) == sorted(f"order_id={o.order_id}" for o in expected)
    assert all(", bid=100.00, offer=100.50" in line for line in got)


def quote_counts(kafka, app_id):
    """{symbol: quotes} in the committed changelog of the market spread's state."""
    latest = {}
    codec = StateCodec("symbol-data", market_spread.SymbolData)
    for m in read_topic(kafka, topics.changelog_topic(app_id, "symbol-data"), idle_s=0.5, timeout_s=10):
        if m.key() != EVENT_TIME_KEY and m.value() is not None:
            latest[m.key()] = codec.decode(m.value())
    by_key = {market_spread.symbol_key(s): s for s in market_spread.SYMBOLS}
    from wallaroo.runtime.routing import key_from_bytes
    return {by_key[key_from_bytes(k)]: state.quotes for k, state in latest.items()}


def wait_for_quotes(kafka, app_id, want):
    return wait_for(lambda: quote_counts(kafka, app_id) == want, 90, "the quotes to reach the state")


def test_market_spread_runs_exactly_once_across_kill_9(kafka, topic_name, workers):
    """Two workers; the one pipeline only updates state (done(), no sink), the other reads it. One
    worker is killed mid-stream: every withdrawn order is reported exactly once, and the state counts
    every quote exactly once."""
    quote, order = market_spread.market_data_message, market_spread.order_message
    orders_topic, quotes_topic, sink = topic_name("ms-orders"), topic_name("ms-quotes"), topic_name("ms-out")
    app_id = topic_name("ms")
    for t in (orders_topic, quotes_topic):
        create_topic(kafka, t, 4)
    rnd = random.Random(13)
    symbols = market_spread.SYMBOLS
    traded, quiet = symbols[:48], symbols[48:]          # quiet symbols keep getting quotes during the orders
    wide = set(rnd.sample(traded, 24))
    first_quotes = [quote(s, 50.0, 50.5 if s in wide else 50.02) for s in symbols]
    produce(kafka, quotes_topic, first_quotes)
    args = ["--market_data_topic", quotes_topic]
    w1 = workers.start("examples.wallaroo.market_spread", orders_topic, sink, "w1", app_id, *FAST, *args, cwd=ROOT)
    w2 = workers.start("examples.wallaroo.market_spread", orders_topic, sink, "w2", app_id, *FAST, *args, cwd=ROOT)
    wait_for_quotes(kafka, app_id, {s: 1 for s in symbols})
    orders = [order(1, 7, f"{i:06d}", rnd.choice(traded), 1 + i % 100, 50.1) for i in range(24_000)]
    later_quotes = [quote(rnd.choice(quiet), 10.0, 10.5) for _ in range(12_000)]
    feeder, killed = held_back_feeder(kafka, orders_topic, orders, rate=4000)
    quote_feeder, quotes_released = held_back_feeder(kafka, quotes_topic, later_quotes, rate=2000)
    feeder.start()
    quote_feeder.start()
    kill_9_mid_stream(kafka, sink, w2, feeder, killed, after_outputs=1500)
    quotes_released.set()
    feeder.join()
    quote_feeder.join()
    expected = Counter(f"order_id={o.order_id}" for o in map(market_spread.order_decoder, orders) if o.symbol in wide)
    got = read_topic(kafka, sink, expect=len(expected), timeout_s=180)
    reported = Counter(m.value().decode().split(", ")[2] for m in got)
    assert not [k for k, n in reported.items() if n > 1], "an order was reported twice"
    assert reported == expected
    want = Counter(symbols) + Counter(market_spread.market_data_decoder(q).symbol for q in later_quotes)
    wait_for_quotes(kafka, app_id, dict(want))
    assert w1.poll() is None


def test_a_second_worker_on_the_same_in_address_stops_with_a_clear_message(kafka, topic_name, workers, receiver):
    in_port = free_port()
    app_id = topic_name("tcp-twice")
    start_tcp(workers, kafka, "reverse", app_id, [in_port], receiver.port)
    send_framed(("127.0.0.1", in_port), [b"ab"])        # the first one listens
    second = start_tcp(workers, kafka, "reverse", app_id, [in_port], receiver.port, name="w2")
    assert second.wait(60) != 0
    log = second.log_path.read_text()
    assert f"cannot listen on 127.0.0.1:{in_port}" in log and "Traceback" not in log
    assert wait_lines(receiver, 1, "the first worker's output") == ["ba"]
