"""Interactive queries: a worker answers @wallaroo.query methods of the state it owns, over HTTP.

Threads: the HTTP server runs in its own threads but never reads state. It hands each query to the
worker's loop through a bounded queue; the loop answers them between consume batches (`serve`), so
an answer sees state between two records, never in the middle of one, and only partitions the loop
still owns (a revoke drops them before the next `serve`). The answer is encoded to JSON in the loop,
so nothing mutable crosses threads. The cost: a query waits for the current batch; an idle worker's
loop waits POLL_S in consume, not 0.1 s, so that it answers within ~10 ms.

Ownership: a partition not owned here is looked up in the consumer group's assignment
(the group listing, see `owners`); each worker advertises its query address in its consumer's client.id
("<app id>-<name>@host:port", see `advertised_client_id`). The query is forwarded once (a forwarded
query that misses again is "moving"). While no member owns it, or the owner does not answer, the
answer is 503 with Retry-After: partitions are moving.

Bounds: every request counts against its source address's rate (RateLimit), forwarded ones too: the
forwarding header only stops a second forward, since any client could send it. At most
MAX_CONNECTIONS connections are served at once (one thread each); the next gets 503 at once, and an
idle connection is dropped after CONNECTION_TIMEOUT_S.
"""
import json
import logging
import queue
import socket
import struct
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from limits import RateLimitItemPerSecond
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from ..query import QUERY_MAX_ARG, queries_of
from .routing import key_bytes

log = logging.getLogger("wallaroo.queries")

FORWARDED = "X-Wallaroo-Forwarded"
RETRY_AFTER_S = 1
WAIT_S = 5.0                  # for the loop to answer (a restore can hold it longer: then "moving")
PENDING_MAX = 1000            # queries waiting for the loop
OWNERS_TTL_S = 1.0
POLL_S = 0.01                 # the loop's consume timeout with queries on: an idle worker answers within it
MAX_CONNECTIONS = 64          # threads serving connections at once (ThreadingHTTPServer alone is unbounded)
CONNECTION_TIMEOUT_S = 10.0   # a connection that sends nothing for this long is closed (frees its slot)
_BUSY_BODY = b'{"error": "too many connections"}'
_BUSY = (b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
         b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(_BUSY_BODY), _BUSY_BODY))


class QueryPortError(OSError):
    """The query port cannot be bound."""


def answer(task, state_name, method, arg, checkpoints):
    """(status, JSON-able body) for one query, read from the task's live state; the loop's thread only.
    `checkpoints`: how many checkpoints this worker has committed (the answer's as_of)."""
    topic = task.state_topic.get(state_name)
    if topic is None:
        return 404, {"error": f"no state named {state_name!r}"}
    store = task.stores[topic]
    q = queries_of(store.state_class).get(method)
    if q is None:
        return 404, {"error": f"state {state_name!r} has no query {method!r}"}
    if not isinstance(arg, str) or len(arg) > QUERY_MAX_ARG:
        return 400, {"error": f"the argument must be text of at most {QUERY_MAX_ARG} characters"}
    try:
        kb = key_bytes(q.key(arg))
    except (ValueError, TypeError) as e:
        return 400, {"error": str(e)}
    router = next(r for sid, r in task.routers.items() if task.executor.state_steps[sid].step.state_name == state_name)
    p = router.partition_for(kb)
    table = store.partitions.get(p)
    if table is None:
        return 307, {"partition": p, "topic": topic}
    state = table.get(kb)
    value = q(state if state is not None else store.state_class(), arg)
    et = store.event_time.get(p, store.saved_time.get(p))
    return 200, {"value": value, "as_of": {"checkpoint": checkpoints, "event_time_ms": et,
                                           "partition": p, "worker": task.name}}


def advertised_client_id(base, host, port):
    return base if port is None else f"{base}@{host}:{port}"


def owners(admin, group, topic):
    """{partition: "host:port"} of `topic`'s partitions, from the group's current assignment.

    Read with the group listing (DescribeGroups sent to each broker), not describe_consumer_groups:
    in librdkafka 2.16 the coordinator-targeted admin requests free an object they then use when a
    connection drops mid-request (confluentinc/librdkafka PR #5397), which would take the worker
    down with SIGSEGV during a broker restart (dashboard/health.py does the same)."""
    found = {}
    with warnings.catch_warnings():                 # list_groups is deprecated: see above
        warnings.simplefilter("ignore", DeprecationWarning)
        groups = admin.list_groups(group=group, timeout=5)
    for g in groups:
        if g.id != group:
            continue
        for m in g.members:
            if "@" not in (m.client_id or ""):
                continue
            address = m.client_id.rsplit("@", 1)[1]
            for t, p in assigned_partitions(m.assignment or b""):
                if t == topic:
                    found[p] = address
    return found


def assigned_partitions(assignment: bytes) -> list[tuple[str, int]]:
    """The (topic, partition)s of a consumer-protocol Assignment (version, [topic, [partition]],
    user data), as the group listing returns it raw; [] for bytes that are not one."""
    out = []
    try:
        (_version, n), at = struct.unpack_from(">hi", assignment, 0), 6
        for _ in range(min(n, 10_000)):
            (length,) = struct.unpack_from(">h", assignment, at)
            topic = assignment[at + 2:at + 2 + length].decode()
            (count,) = struct.unpack_from(">i", assignment, at + 2 + length)
            at += 6 + length
            if not 0 <= count <= 100_000:
                return []
            parts = struct.unpack_from(f">{count}i", assignment, at)
            at += 4 * len(parts)
            out.extend((topic, p) for p in parts)
    except (struct.error, UnicodeDecodeError):
        return []
    return out


BURST_S = 2                      # a client may spend two seconds' worth of its rate at once


class RateLimit:
    """Requests per client address: `rate` a second, in bursts of up to BURST_S seconds' worth (the `limits` library)."""

    def __init__(self, rate: float):
        self.item = RateLimitItemPerSecond(max(1, round(BURST_S * rate)), BURST_S)
        self.limiter = MovingWindowRateLimiter(MemoryStorage())     # its keys expire: bounded

    def allow(self, client: str) -> bool:
        return self.limiter.hit(self.item, client)


class BoundedHTTPServer(ThreadingHTTPServer):
    """A thread per connection, at most `max_connections` at once: over that, a 503 and close."""
    daemon_threads = True
    request_queue_size = 128      # the listen backlog (socketserver's 5 drops bursts: the client's SYN retry takes 1 s)

    def __init__(self, address, handler, max_connections=MAX_CONNECTIONS):
        self.slots = threading.BoundedSemaphore(max_connections)
        super().__init__(address, handler)

    def process_request(self, request, client_address):
        if not self.slots.acquire(blocking=False):
            try:
                request.settimeout(0.1)      # the accept loop waits this long at most per refusal
                request.sendall(_BUSY)
                request.shutdown(socket.SHUT_WR)
                request.recv(65536)          # read the request: closing on unread data would reset
            except OSError:
                pass
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()          # no thread started: its slot is free again
            raise

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()


class QueryServer:
    """The HTTP side: `serve()` is called by the worker's loop to answer what is pending."""

    def __init__(self, task, admin, group, port, host="127.0.0.1", checkpoints=lambda: 0, rate_per_s=1000.0,
                 max_connections=MAX_CONNECTIONS):
        self.task, self.admin, self.group, self.checkpoints = task, admin, group, checkpoints
        self.pending = queue.Queue(PENDING_MAX)
        self.limit = RateLimit(rate_per_s)
        self._owners, self._owners_at, self._owners_lock = {}, 0.0, threading.Lock()
        self.served = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            timeout = CONNECTION_TIMEOUT_S

            def do_GET(self):
                server.handle(self)

            def log_message(self, *args):
                pass

        try:
            self.http = BoundedHTTPServer((host, port), Handler, max_connections)
        except OSError as e:
            raise QueryPortError(f"cannot listen for queries on {host}:{port}: {e}") from e
        self.port = self.http.server_address[1]
        self.thread = threading.Thread(target=self.http.serve_forever, name="queries", daemon=True)

    def start(self):
        self.thread.start()

    def shutdown(self):
        self.http.shutdown()
        self.http.server_close()

    # --- the loop's side ---------------------------------------------------------------------
    def serve(self, limit=200):
        for _ in range(limit):
            try:
                item = self.pending.get_nowait()
            except queue.Empty:
                return
            args, reply = item
            try:
                status, body = answer(self.task, *args, self.checkpoints())
                reply.append((status, json.dumps(body, separators=(",", ":"))))
            except Exception as e:  # noqa: BLE001 - a user's query method raised: their answer, not our loop
                log.warning("query %s raised %s: %s", args[:2], type(e).__name__, e)
                reply.append((500, json.dumps({"error": f"the query raised {type(e).__name__}"})))
            self.served += 1
            reply.done.set()

    # --- the HTTP side -----------------------------------------------------------------------
    def handle(self, h):
        forwarded = bool(h.headers.get(FORWARDED))      # only "do not forward again": anyone can send it
        if not self.limit.allow(h.client_address[0]):
            return _send(h, 429, {"error": "too many queries"}, retry=True)
        url = urllib.parse.urlsplit(h.path)
        parts = url.path.strip("/").split("/")
        if len(parts) != 3 or parts[0] != "query":
            return _send(h, 404, {"error": "GET /query/<state>/<method>?arg=<text>"})
        args = urllib.parse.parse_qs(url.query).get("arg", [""])
        status, body = self.ask(parts[1], parts[2], args[0], forwarded=forwarded)
        if status == 307:
            status, body = self.forward(h.path, body)
        text = body if isinstance(body, str) else json.dumps(body)
        _send_raw(h, status, text, retry=status in (429, 503))   # 429: the owner's limit, passed on

    def ask(self, state_name, method, arg, forwarded=False):
        reply = _Reply()
        try:
            self.pending.put_nowait(((state_name, method, arg), reply))
        except queue.Full:
            return 503, {"error": "busy"}
        if not reply.done.wait(WAIT_S):
            return 503, {"error": "partitions are moving (the worker is restoring)"}
        status, text = reply[0]
        if status == 307 and forwarded:
            return 503, {"error": "partitions are moving"}
        return status, (json.loads(text) if status == 307 else text)

    def forward(self, path, where):
        owner = self.owner(where["topic"], where["partition"])
        if owner is None:
            return 503, {"error": "partitions are moving"}
        req = urllib.request.Request(f"http://{owner}{path}", headers={FORWARDED: "1"})
        try:
            with urllib.request.urlopen(req, timeout=WAIT_S + 1) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            if e.code == 503:
                return 503, {"error": "partitions are moving"}
            return e.code, e.read().decode()
        except OSError:
            with self._owners_lock:
                self._owners_at = 0.0       # the owner is gone: ask the group again next time
            return 503, {"error": "partitions are moving"}

    def owner(self, topic, partition):
        with self._owners_lock:
            if time.monotonic() - self._owners_at > OWNERS_TTL_S:
                try:
                    self._owners = owners(self.admin, self.group, topic)
                except Exception as e:  # noqa: BLE001 - the group is rebalancing, the broker is away
                    log.debug("describing group %s: %s", self.group, e)
                    self._owners = {}
                self._owners_at = time.monotonic()
            return self._owners.get(partition)


class _Reply(list):
    def __init__(self):
        super().__init__()
        self.done = threading.Event()


def _send(h, status, body, retry=False):
    _send_raw(h, status, json.dumps(body), retry)


def _send_raw(h, status, text, retry=False):
    data = text.encode()
    h.send_response(status)
    h.send_header("Content-Type", "application/json")
    h.send_header("Content-Length", str(len(data)))
    h.send_header("Cache-Control", "no-store")
    if retry:
        h.send_header("Retry-After", str(RETRY_AFTER_S))
    h.end_headers()
    h.wfile.write(data)
