"""TCP sources and sinks, bridged through Kafka so the pipeline between them stays exactly-once.

A TCP source is an ingress: the worker listens on the source's address, cuts the stream into
Wallaroo's frames (the decoder's `header_length()` bytes, then `payload_length(header)` bytes) and
produces each payload, idempotently and outside the checkpoints' transactions, to the pipeline's
internal topic `<id>-<pipeline>-tcp-source`, which the pipeline reads like any Kafka source (decoder,
partitioning, state, exactly-once). Each connection's frames go to one partition, in order.

A TCP sink is an egress: the pipeline's outputs go, inside the checkpoint's transaction, to
`<id>-<pipeline>-tcp-sink-<n>` (one partition, so one ordered stream); a forwarder in the group
`<id>-tcp-sink` reads it read_committed and writes each output's bytes to the sink's address.
The receiving host's TCP stack acknowledges bytes (Linux's SIOCOUTQ) before its application reads
them, and a receiver that dies or closes loses what it had not read; so an output counts as
delivered only once RESEND_WINDOW_BYTES more were acknowledged after it (they can no longer sit
unread in the receiver's buffer), or when this side closes the connection cleanly. Delivered outputs
are committed; after a broken connection, a crash or a rebalance the forwarder sends again from the
first output not delivered.

Guarantees at the edges: a frame is taken once Kafka acknowledged it; frames a worker had read but
Kafka had not acknowledged when the worker died are lost (Wallaroo's framing has no acknowledgement
to tell the sender), never duplicated. Outputs reach the receiver at least once: what was sent but not
yet committed is sent again after a failure.
"""
import fcntl
import itertools
import logging
import select
import socket
import struct
import termios
import threading
import time
from collections import deque

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from ..kafka import KafkaSourceConfig
from ..tcp import MAX_FRAME_BYTES, TCPSinkConfig, TCPSourceConfig
from . import clients, topics

log = logging.getLogger("wallaroo.tcp")

DEFAULT_PARTITIONS = 4            # of a source topic when the application has no Kafka source to copy
TOPIC_CONFIG = {**topics.NO_TIME_RETENTION, "max.message.bytes": str(MAX_FRAME_BYTES + 64 * 1024)}
PROBLEMS_LOGGED = 100             # then they are only counted
COMMIT_INTERVAL_S = 0.2
RECONNECT_BACKOFF_S = 0.5
SEND_TIMEOUT_S = 30.0
DRAIN_TIMEOUT_S = 2.0             # waiting for the receiver's acknowledgements before giving a partition up
# What a receiver's kernel may have acknowledged and its application not read yet: Linux's largest
# default receive buffer (net.ipv4.tcp_rmem). After a drop that much is sent again, as duplicates.
RESEND_WINDOW_BYTES = 6 * 1024 * 1024


class TCPBridgeError(RuntimeError):
    """A TCP source cannot listen on its address; the worker must not run."""


class Bridges:
    """The worker's TCP ingresses (one per TCP source) and its forwarder (for every TCP sink)."""

    def __init__(self, app, app_id, bootstrap, name, session_timeout_ms):
        self.app_id = app_id
        self.bootstrap = bootstrap
        self.ingresses = [Ingress(p.name, p.source) for p in app.pipelines if isinstance(p.source, TCPSourceConfig)]
        sinks = [(p.name, s) for p in app.pipelines for s in p.sinks if isinstance(s, TCPSinkConfig)]
        self.forwarder = Forwarder(sinks, bootstrap, f"{app_id}-tcp-sink", f"{app_id}-{name}-tcp-sink",
                                   session_timeout_ms) if sinks else None
        self.kafka_sources = sorted({p.source.topic for p in app.pipelines if isinstance(p.source, KafkaSourceConfig)})
        self.producer = None

    def prepare(self, admin, stop):
        """Create the internal topics and bind the listeners; False if `stop()` turned true first."""
        if not self.ingresses and self.forwarder is None:
            return True
        sinks = self.forwarder.sinks if self.forwarder else []
        wanted = {sink.topic: (1, dict(TOPIC_CONFIG)) for _name, sink in sinks}
        if self.ingresses:
            partitions = self._source_partitions(admin, stop)
            if partitions is None:
                return False
            wanted.update({ingress.config.topic: (partitions, dict(TOPIC_CONFIG)) for ingress in self.ingresses})
        topics.ensure_topics(admin, wanted)
        for ingress in self.ingresses:
            ingress.bind()
        return True

    def _source_partitions(self, admin, stop):
        """As many partitions as the Kafka sources have (state is partitioned by them), else as many as
        existing TCP source topics have, else DEFAULT_PARTITIONS."""
        if self.kafka_sources:
            found = topics.wait_for_topics(admin, self.kafka_sources, stop=stop)
            return None if found is None else max(found.values())
        existing = admin.list_topics(timeout=10).topics
        counts = [len(existing[i.config.topic].partitions) for i in self.ingresses if i.config.topic in existing]
        return max(counts) if counts else DEFAULT_PARTITIONS

    def start(self):
        if self.ingresses:
            self.producer = Producer(clients.tcp_ingress_producer_config(self.bootstrap, MAX_FRAME_BYTES))
            for ingress in self.ingresses:
                ingress.start(self.producer)
        if self.forwarder is not None:
            self.forwarder.start()

    def stop(self):
        for ingress in self.ingresses:
            ingress.stop()
        if self.producer is not None:
            left = self.producer.flush(10)
            if left:
                log.warning("tcp sources: %d received frame(s) were not acknowledged by Kafka at shutdown: lost", left)
        if self.forwarder is not None:
            self.forwarder.stop()


# --- ingress ------------------------------------------------------------------------------------
class Ingress:
    """Listens for one TCP source and produces each frame's payload to the source's topic."""

    def __init__(self, pipeline, config):
        self.pipeline = pipeline
        self.config = config
        self.decoder = config.decoder
        self.header_length = int(config.decoder.header_length)
        self.server = None
        self.running = False
        self.threads = []
        self.connections = set()
        self.next_partition = itertools.count()
        self.partitions = 1
        self.stats = {"connections": 0, "frames": 0, "bytes": 0, "rejected": 0, "lost": 0}
        self.problems = 0

    @property
    def address(self):
        """(host, port) actually listened on (port 0 asks the system for one)."""
        return self.server.getsockname()[:2]

    def bind(self):
        host, port = self.config.host, int(self.config.port)
        try:
            self.server = socket.create_server((host, port), backlog=64)
        except OSError as e:
            raise TCPBridgeError(f"the TCP source of pipeline {self.pipeline!r} cannot listen on {host}:{port}: "
                                 f"{e.strerror or e} (each worker needs its own --in address)") from e
        self.server.settimeout(0.5)
        log.info("tcp source of pipeline %r: listening on %s:%d for frames of %d-byte headers", self.pipeline,
                 *self.address, self.header_length)

    def start(self, producer):
        self.producer = producer
        metadata = producer.list_topics(self.config.topic, timeout=10).topics[self.config.topic]
        self.partitions = max(1, len(metadata.partitions))
        self.running = True
        self._spawn(self._accept, "accept")

    def stop(self):
        self.running = False
        for thread in self.threads:
            thread.join(5)
        if self.server is not None:
            self.server.close()
        log.info("tcp source of pipeline %r: %d connection(s), %d frame(s), %d byte(s) taken; %d connection(s) "
                 "rejected for bad framing, %d frame(s) lost", self.pipeline, self.stats["connections"],
                 self.stats["frames"], self.stats["bytes"], self.stats["rejected"], self.stats["lost"])

    def _spawn(self, target, what, *args):
        thread = threading.Thread(target=target, args=args, daemon=True,
                                  name=f"tcp-source-{self.pipeline}-{what}")
        self.threads.append(thread)
        thread.start()

    def _accept(self):
        while self.running:
            try:
                conn, peer = self.server.accept()
            except TimeoutError:
                continue
            except OSError as e:
                if self.running:
                    log.warning("tcp source of pipeline %r: accept failed: %s", self.pipeline, e)
                    time.sleep(0.5)
                continue
            self.stats["connections"] += 1
            partition = next(self.next_partition) % self.partitions
            log.info("tcp source of pipeline %r: connection from %s:%d, its frames go to partition %d",
                     self.pipeline, peer[0], peer[1], partition)
            self._spawn(self._serve, f"{peer[0]}:{peer[1]}", conn, peer, partition)

    def _serve(self, conn, peer, partition):
        conn.settimeout(0.5)
        buffer = bytearray()
        try:
            while self.running:
                try:
                    chunk = conn.recv(1 << 16)
                except TimeoutError:
                    continue
                except OSError as e:
                    log.warning("tcp source of pipeline %r: connection from %s:%d failed: %s", self.pipeline,
                                peer[0], peer[1], e)
                    return
                if not chunk:
                    if buffer:
                        self._problem(f"connection from {peer[0]}:{peer[1]} closed in the middle of a frame: "
                                      f"{len(buffer)} byte(s) dropped")
                    else:
                        log.info("tcp source of pipeline %r: %s:%d closed the connection", self.pipeline, *peer[:2])
                    return
                buffer += chunk
                taken = self._frames(buffer, partition, peer)
                if taken is None:
                    self.stats["rejected"] += 1
                    return
                del buffer[:taken]
        finally:
            conn.close()

    def _frames(self, buffer, partition, peer):
        """Produce every complete frame at the start of `buffer`; return the bytes taken (None: the
        stream cannot be framed, so the connection must close)."""
        pos, end, header_length = 0, len(buffer), self.header_length
        while end - pos >= header_length:
            header = bytes(buffer[pos:pos + header_length])
            try:
                size = self.decoder.payload_length(header)
                if isinstance(size, tuple) and len(size) == 1:   # 0.4's documented example returned unpack()'s tuple
                    size = size[0]
            except Exception as e:  # noqa: BLE001 - user code
                self._problem(f"payload_length({header!r}) raised {type(e).__name__}: {e}; closing the "
                              f"connection from {peer[0]}:{peer[1]} (its stream cannot be framed any more)")
                return None
            if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size <= MAX_FRAME_BYTES:
                self._problem(f"payload_length({header!r}) gave {size!r}, not a size in 0..{MAX_FRAME_BYTES}; "
                              f"closing the connection from {peer[0]}:{peer[1]}")
                return None
            if end - pos - header_length < size:
                break
            start = pos + header_length
            self._produce(bytes(buffer[start:start + size]), partition)
            pos = start + size
        return pos

    def _produce(self, payload, partition):
        while True:
            try:
                self.producer.produce(self.config.topic, payload, partition=partition, on_delivery=self._delivered)
                break
            except BufferError:         # Kafka is slow: stop reading this connection until it catches up
                self.producer.poll(0.05)
        self.producer.poll(0)
        self.stats["frames"] += 1
        self.stats["bytes"] += len(payload)

    def _delivered(self, err, _msg):
        if err is not None:
            self.stats["lost"] += 1
            self._problem(f"a received frame could not be written to {self.config.topic}: {err}")

    def _problem(self, text):
        self.problems += 1
        if self.problems <= PROBLEMS_LOGGED:
            log.warning("tcp source of pipeline %r: %s%s", self.pipeline, text,
                        "  (further problems are counted, not logged)" if self.problems == PROBLEMS_LOGGED else "")


# --- egress -------------------------------------------------------------------------------------
def unacknowledged_bytes(sock):
    """Bytes written to `sock` that the peer's TCP stack has not acknowledged yet (0 where the system
    cannot tell)."""
    try:
        return struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0"))[0]
    except (OSError, AttributeError):
        return 0


class Link:
    """One TCP sink topic partition this worker forwards, and its connection."""

    def __init__(self, pipeline, sink, partition, skip_before=None):
        self.pipeline = pipeline
        self.sink = sink
        self.tp = (sink.topic, partition)
        self.sock = None
        self.written = 0                # bytes written on this connection
        self.undelivered = deque()      # (bytes written after it, its offset), not known to be read yet
        self.delivered = None           # next offset after everything delivered: what may be committed
        self.committed = None
        self.next_offset = skip_before  # the offset expected next from the consumer (earlier ones are skipped)
        self.paused = False
        self.resend_from = None
        self.retry_at = 0.0
        self.failures = 0

    def connect(self):
        host, port = self.sink.host, int(self.sink.port)
        try:
            self.sock = socket.create_connection((host, port), timeout=2.0)
        except OSError as e:
            self.failures += 1
            if self.failures == 1 or self.failures % 60 == 0:
                log.warning("tcp sink of pipeline %r: cannot connect to %s:%d (%s); retrying", self.pipeline,
                            host, port, e)
            return False
        self.sock.settimeout(SEND_TIMEOUT_S)
        self.written = 0
        self.failures = 0
        log.info("tcp sink of pipeline %r: connected to %s:%d", self.pipeline, host, port)
        return True

    def send(self, m):
        """Write one output; False when the connection failed (the link must resend from `resend_from`)."""
        offset = m.offset()
        value = m.value() or b""
        try:
            self.sock.sendall(value)
        except OSError as e:
            self.fail(f"sending failed: {e}", offset)
            return False
        self.written += len(value)
        self.undelivered.append((self.written, offset))
        self.next_offset = offset + 1
        return True

    def update_delivered(self, window=RESEND_WINDOW_BYTES):
        """Mark delivered the outputs followed by `window` acknowledged bytes (0: every acknowledged
        output, right when this side closes the connection and the receiver still reads what it holds)."""
        read = self.written - unacknowledged_bytes(self.sock) - window
        while self.undelivered and self.undelivered[0][0] <= read:
            self.delivered = self.undelivered.popleft()[1] + 1

    def peer_closed(self):
        """Whether the receiver closed the connection (what it sends us is ignored)."""
        try:
            readable, _, _ = select.select([self.sock], [], [], 0)
            if readable:
                return self.sock.recv(65536, socket.MSG_DONTWAIT) == b""
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            return True
        return False

    def fail(self, why, offset=None, quiet=False):
        """The connection is gone (or never came): what was not delivered is sent again on the next one."""
        if self.undelivered:
            self.resend_from = self.undelivered[0][1]
        else:
            self.resend_from = offset if offset is not None else self.next_offset
        self.undelivered.clear()
        self.close()
        self.paused = True
        self.retry_at = time.monotonic() + RECONNECT_BACKOFF_S
        if not quiet:
            log.warning("tcp sink of pipeline %r: connection to %s:%s lost (%s); resending from offset %s",
                        self.pipeline, self.sink.host, self.sink.port, why, self.resend_from)

    def close(self):
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
            self.sock = None


class Forwarder:
    """A thread that sends the committed outputs of this worker's share of the TCP sink topics."""

    def __init__(self, sinks, bootstrap, group_id, client_id, session_timeout_ms):
        self.sinks = sinks              # [(pipeline name, bound TCPSinkConfig)]
        self.by_topic = {sink.topic: (name, sink) for name, sink in sinks}
        self.config = clients.tcp_egress_consumer_config(bootstrap, group_id, client_id, session_timeout_ms)
        self.links = {}
        # (topic, partition) -> the offset this forwarder had delivered up to when it last gave the
        # partition up: its commit may not have reached Kafka (a lost group session, a commit during an
        # outage), and starting again from it spares the receiver what it already has.
        self.delivered_before = {}
        self.running = False
        self.thread = None
        self.sent = 0

    def start(self):
        self.running = True
        self.thread = threading.Thread(target=self._run, daemon=True, name="tcp-sink-forwarder")
        self.thread.start()

    def stop(self):
        self.running = False
        if self.thread is not None:
            self.thread.join(DRAIN_TIMEOUT_S + 15)

    def _run(self):
        # The consumer lives and dies on this thread: librdkafka's callbacks then run here too.
        self.consumer = consumer = Consumer(self.config)
        consumer.subscribe(list(self.by_topic), on_assign=self._on_assign, on_revoke=self._on_revoke,
                           on_lost=self._on_lost)
        next_commit = time.monotonic() + COMMIT_INTERVAL_S
        try:
            while self.running:
                for m in consumer.consume(500, 0.1):
                    if m.error() is not None:
                        if m.error().fatal():
                            raise KafkaException(m.error())
                        if m.error().code() != KafkaError._PARTITION_EOF:
                            log.warning("tcp sink forwarder: %s", m.error())
                        continue
                    self._forward(m)
                now = time.monotonic()
                self._tend(now)
                if now >= next_commit:
                    self._commit(list(self.links.values()))
                    next_commit = now + COMMIT_INTERVAL_S
            self._give_up(list(self.links.values()))
        except Exception:  # noqa: BLE001 - the worker goes on; its outputs wait in Kafka for a forwarder
            log.exception("tcp sink forwarder stopped")
        finally:
            consumer.close()
            log.info("tcp sink forwarder: %d output(s) sent", self.sent)

    def _forward(self, m):
        link = self.links.get((m.topic(), m.partition()))
        if link is None or link.paused:
            return                      # it comes again once the link resumes from its rewound position
        if link.next_offset is not None and m.offset() < link.next_offset:
            return                      # fetched before a rewind, or delivered before the partition came back
        if link.sock is None and not link.connect():
            link.fail("not connected", m.offset(), quiet=True)     # connect() said why
            self.consumer.pause([TopicPartition(*link.tp)])
            return
        if link.send(m):
            self.sent += 1
        else:
            self.consumer.pause([TopicPartition(*link.tp)])

    def _tend(self, now):
        for link in list(self.links.values()):
            if link.paused:
                if now >= link.retry_at:
                    if link.connect():
                        tp = TopicPartition(*link.tp)
                        if link.resend_from is not None:
                            tp.offset = link.resend_from
                            self.consumer.seek(tp)
                            link.next_offset = link.resend_from
                        self.consumer.resume([TopicPartition(*link.tp)])
                        link.paused = False
                    else:
                        link.retry_at = now + RECONNECT_BACKOFF_S
            elif link.sock is not None:
                link.update_delivered()
                if link.peer_closed():
                    link.fail("the receiver closed it")
                    self.consumer.pause([TopicPartition(*link.tp)])

    def _commit(self, links):
        due = [(link, link.delivered) for link in links
               if link.delivered is not None and link.delivered != link.committed]
        if not due:
            return
        try:
            self.consumer.commit(offsets=[TopicPartition(*link.tp, offset) for link, offset in due],
                                 asynchronous=False)
        except KafkaException as e:     # e.g. during a rebalance: the next commit carries them
            log.info("tcp sink forwarder: commit deferred: %s", e)
            return
        for link, offset in due:
            link.committed = offset

    def _give_up(self, links):
        """Wait a moment for the receivers' acknowledgements, commit them, close the connections."""
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        while time.monotonic() < deadline and any(link.undelivered and link.sock is not None for link in links):
            for link in links:
                if link.sock is not None:
                    link.update_delivered(window=0)
            time.sleep(0.02)
        for link in links:
            if link.sock is not None:
                link.update_delivered(window=0)
        self._commit(links)
        for link in links:
            self._remember(link)
            link.close()
            self.links.pop(link.tp, None)

    def _remember(self, link):
        """Keep how far `link` delivered, for when this forwarder gets its partition back."""
        if link.delivered is not None:
            self.delivered_before[link.tp] = max(link.delivered, self.delivered_before.get(link.tp, -1))

    def _on_assign(self, consumer, partitions):
        for tp in partitions:
            name, sink = self.by_topic[tp.topic]
            key = (tp.topic, tp.partition)
            self.links[key] = Link(name, sink, tp.partition, self.delivered_before.get(key))
        log.info("tcp sink forwarder: sending %s",
                 ", ".join(f"{tp.topic}[{tp.partition}]" for tp in partitions) or "nothing")

    def _on_revoke(self, consumer, partitions):
        self._give_up([self.links[key] for key in ((tp.topic, tp.partition) for tp in partitions)
                       if key in self.links])

    def _on_lost(self, consumer, partitions):
        for tp in partitions:
            link = self.links.pop((tp.topic, tp.partition), None)
            if link is not None:
                if link.sock is not None:     # this side closes it: the receiver reads what it holds
                    link.update_delivered(window=0)
                self._remember(link)
                link.close()
