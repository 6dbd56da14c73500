"""Flask app factory: the page, the JSON API and the server-sent-event stream.

    create_app(Config(...)) -> Flask app; app.extensions["dashboard"] is the Runtime (board,
    consumer thread, health thread) with .stop() for a clean shutdown.

Requests whose Host header is not one of Config.host_names() get 421 (DNS rebinding: a hostile page
whose name resolves to 127.0.0.1 is same-origin with itself, not with us, but would otherwise be
served).  Live streams are capped in total and per client address (StreamSlots); the server module
bounds connections.
"""
from __future__ import annotations

import re
import threading
import time
from collections import Counter

import orjson
from flask import Flask, Response, render_template, request

from stack_contract import RECENT_EVENTS, TOP_N, WINDOW_HOURS

from .config import Config
from .consumer import LeaderboardConsumer, MetricsConsumer
from .health import HealthMonitor, describe
from .leaders import Board
from .pipeline import Pipelines
from .repos import Repos

KEEPALIVE_S = 15.0   # SSE comment line, so idle proxies and browsers keep the connection open
RETRY_MS = 2000      # EventSource reconnect delay after a dropped stream

SECURITY_HEADERS = {
    # Everything is served from here: no inline script, no third-party origins.  Even if some
    # archive string slipped into the DOM as markup, the browser would not run it.
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; "
                               "img-src 'self' data:; connect-src 'self'; base-uri 'none'; "
                               "form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


class StreamSlots:
    """At most `total` live streams, and `per_client` from one client address."""

    def __init__(self, total: int, per_client: int):
        self.total, self.per_client = total, per_client
        self._lock = threading.Lock()
        self._open: Counter[str] = Counter()

    def acquire(self, client: str) -> bool:
        with self._lock:
            if sum(self._open.values()) >= self.total or self._open[client] >= self.per_client:
                return False
            self._open[client] += 1
            return True

    def release(self, client: str) -> None:
        with self._lock:
            self._open[client] -= 1
            if self._open[client] <= 0:
                del self._open[client]

    def in_use(self) -> int:
        with self._lock:
            return sum(self._open.values())


HOST_HEADER = re.compile(r"(\[[0-9a-f:.]+\]|[a-z0-9._-]+)(?::[0-9]{1,5})?", re.ASCII)


def host_name(header: str | None) -> str | None:
    """The name of a Host header, lower case and without its port ("[::1]:5000" -> "[::1]");
    None when it is not host[:port]."""
    m = HOST_HEADER.fullmatch((header or "").strip().lower())
    return m.group(1) if m else None


class Runtime:
    """The background parts behind one app instance."""

    def __init__(self, config: Config):
        self.config = config
        self.board = Board(config.partitions)
        self.consumer = LeaderboardConsumer(self.board, config.kafka, config.topic,
                                            timeout_s=config.kafka_timeout)
        self.monitor = HealthMonitor(config.kafka, topic=config.topic, source_topic=config.source_topic,
                                     group=config.group, interval_s=config.health_interval,
                                     timeout_s=config.kafka_timeout, consumer=self.consumer)
        self.pipelines = Pipelines()
        self.metrics = MetricsConsumer(self.pipelines, config.kafka, config.metrics_topic,
                                       timeout_s=config.kafka_timeout)
        self.closing = threading.Event()
        self.streams = StreamSlots(config.max_streams, config.max_streams_per_client)

    def start(self) -> "Runtime":
        self.consumer.start()
        self.monitor.start()
        self.metrics.start()
        return self

    def stop(self) -> None:
        self.closing.set()
        self.consumer.request_stop()          # all at once, then wait for each
        self.monitor.request_stop()
        self.metrics.request_stop()
        self.consumer.stop()
        self.monitor.stop()
        self.metrics.stop()

    def pipeline(self) -> dict:
        view = dict(self.pipelines.cached_view())
        view["topic"] = self.config.metrics_topic
        view["consumer"] = {"state": self.metrics.state, "last_error": self.metrics.last_error}
        return view

    def health(self) -> dict:
        return describe(self.monitor, self.consumer, self.board, self.config)


def sse(event: str, data: bytes, event_id: int | None = None) -> bytes:
    head = f"event: {event}\n" + (f"id: {event_id}\n" if event_id is not None else "")
    # orjson output has no raw newlines, so one data: line is always enough
    return head.encode() + b"data: " + data + b"\n\n"


def create_app(config: Config | None = None, *, start: bool = True) -> Flask:
    config = config or Config.from_env()
    app = Flask(__name__)
    rt = Runtime(config)
    app.extensions["dashboard"] = rt
    if start:
        rt.start()
    allowed_hosts = config.host_names()

    @app.before_request
    def check_host():
        if allowed_hosts is not None and host_name(request.headers.get("Host")) not in allowed_hosts:
            return Response("this dashboard answers to " + ", ".join(sorted(allowed_hosts)) +
                            " only (--allowed-hosts)\n", status=421, mimetype="text/plain")
        return None

    @app.after_request
    def headers(resp: Response) -> Response:
        for k, v in SECURITY_HEADERS.items():
            resp.headers.setdefault(k, v)
        return resp

    @app.get("/")
    def index():
        return render_template("index.html", config=config, top_n=TOP_N, window_hours=WINDOW_HOURS,
                               recent_events=RECENT_EVENTS)

    @app.get("/pipeline")
    def pipeline_page():
        return render_template("pipeline.html", config=config)

    @app.get("/api/pipeline")
    def api_pipeline():
        return Response(orjson.dumps(rt.pipeline()), mimetype="application/json",
                        headers={"Cache-Control": "no-store"})

    @app.get("/api/leaders")
    def api_leaders():
        _, data = rt.board.snapshot_json()
        return Response(data, mimetype="application/json", headers={"Cache-Control": "no-store"})

    repos = Repos([a.strip() for a in config.query.split(",") if a.strip()])

    def repo_response(status, body):
        headers = {"Cache-Control": "no-store"}
        if status in (429, 503):
            headers["Retry-After"] = "1"
        return Response(orjson.dumps(body), status=status, mimetype="application/json", headers=headers)

    @app.get("/api/repos/<path:repo>")
    def api_repo(repo):
        return repo_response(*repos.card(repo, request.remote_addr or "?"))

    @app.get("/api/repos")
    def api_repos():
        return repo_response(*repos.complete(request.args.get("prefix", ""), request.remote_addr or "?"))

    @app.get("/api/health")
    def api_health():
        return Response(orjson.dumps(rt.health()), mimetype="application/json",
                        headers={"Cache-Control": "no-store"})

    @app.get("/stream")
    def stream():
        client = request.remote_addr or "?"
        if not rt.streams.acquire(client):
            return Response("too many live viewers, retry later\n", status=503,
                            mimetype="text/plain", headers={"Retry-After": "10"})
        released = threading.Event()
        lock = threading.Lock()

        def release():
            with lock:
                if released.is_set():
                    return
                released.set()
            rt.streams.release(client)

        def events():
            try:
                yield f"retry: {RETRY_MS}\n\n".encode()
                version, data = rt.board.snapshot_json()
                yield sse("leaders", data, version)
                yield sse("health", orjson.dumps(rt.health()))
                last_health = last_ping = time.monotonic()
                while not rt.closing.is_set():
                    wait = max(0.05, config.health_interval - (time.monotonic() - last_health))
                    if rt.board.wait_for_change(version, wait) != version:
                        version, data = rt.board.snapshot_json()
                        yield sse("leaders", data, version)
                    now = time.monotonic()
                    if now - last_health >= config.health_interval:
                        last_health = now
                        yield sse("health", orjson.dumps(rt.health()))
                    if now - last_ping >= KEEPALIVE_S:
                        last_ping = now
                        yield b": keepalive\n\n"
            finally:
                release()

        resp = Response(events(), mimetype="text/event-stream", headers={
            "Cache-Control": "no-cache, no-store",
            "X-Accel-Buffering": "no",       # tell nginx-style proxies not to buffer
        })
        resp.call_on_close(release)          # also when the generator never started
        return resp

    return app
