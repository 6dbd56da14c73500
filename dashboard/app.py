"""Flask app factory: the page, the JSON API and the server-sent-event stream.

    create_app(Config(...)) -> Flask app; app.extensions["dashboard"] is the Runtime (board,
    consumer thread, health thread) with .stop() for a clean shutdown.
"""
from __future__ import annotations

import threading
import time

import orjson
from flask import Flask, Response, render_template

from stack_contract import RECENT_EVENTS, TOP_N, WINDOW_HOURS

from .config import Config
from .consumer import LeaderboardConsumer
from .health import HealthMonitor, describe
from .leaders import Board

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


class Runtime:
    """The background parts behind one app instance."""

    def __init__(self, config: Config):
        self.config = config
        self.board = Board()
        self.consumer = LeaderboardConsumer(self.board, config.kafka, config.topic)
        self.monitor = HealthMonitor(config.kafka, topic=config.topic, source_topic=config.source_topic,
                                     group=config.group, interval_s=config.health_interval)
        self.closing = threading.Event()
        self.streams = threading.BoundedSemaphore(config.max_streams)

    def start(self) -> "Runtime":
        self.consumer.start()
        self.monitor.start()
        return self

    def stop(self) -> None:
        self.closing.set()
        self.consumer.request_stop()          # both at once, then wait for both
        self.monitor.request_stop()
        self.consumer.stop()
        self.monitor.stop()

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

    @app.after_request
    def headers(resp: Response) -> Response:
        for k, v in SECURITY_HEADERS.items():
            resp.headers.setdefault(k, v)
        return resp

    @app.get("/")
    def index():
        return render_template("index.html", config=config, top_n=TOP_N, window_hours=WINDOW_HOURS,
                               recent_events=RECENT_EVENTS)

    @app.get("/api/leaders")
    def api_leaders():
        _, data = rt.board.snapshot_json()
        return Response(data, mimetype="application/json", headers={"Cache-Control": "no-store"})

    @app.get("/api/health")
    def api_health():
        return Response(orjson.dumps(rt.health()), mimetype="application/json",
                        headers={"Cache-Control": "no-store"})

    @app.get("/stream")
    def stream():
        if not rt.streams.acquire(blocking=False):
            return Response("too many live viewers, retry later\n", status=503,
                            mimetype="text/plain", headers={"Retry-After": "10"})
        released = threading.Event()

        def release():
            if not released.is_set():
                released.set()
                rt.streams.release()

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
