"""The HTTP server: werkzeug's threaded WSGI server, bounded.

One thread per connection, so every connection is bounded (Config):
- `connection_timeout`: a socket that sends nothing (between requests, too) or does not read what is
  written to it for that long is closed, and a request's line and headers must have arrived within it
  altogether (a client dripping one byte at a time does not hold a thread for ever);
- `max_connections` open connections in total and `max_connections_per_client` from one address;
  more are answered `503` and closed at once, without a thread.
Live streams have caps of their own (app.StreamSlots).
"""
from __future__ import annotations

import logging
import socket
import threading
from collections import Counter

from werkzeug.serving import ThreadedWSGIServer, WSGIRequestHandler

from .config import Config

log = logging.getLogger(__name__)

def _busy_response() -> bytes:
    body = b"too many connections, retry later\n"
    return (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nRetry-After: 10\r\n"
            b"Connection: close\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


class BoundedRequestHandler(WSGIRequestHandler):
    """Per-operation socket timeout (StreamRequestHandler applies `timeout` in setup()) plus a deadline
    for the whole request head, which per-operation timeouts alone do not give."""

    timeout = 10.0          # replaced per server by make_server

    def handle_one_request(self) -> None:
        timer = threading.Timer(self.timeout, self._head_too_slow)
        timer.daemon = True
        self._head_timer = timer
        timer.start()
        try:
            super().handle_one_request()
        finally:
            timer.cancel()

    def parse_request(self) -> bool:
        ok = super().parse_request()       # the request line and every header have arrived
        self._head_timer.cancel()
        return ok

    def _head_too_slow(self) -> None:
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)   # the blocked read returns; the thread ends
        except OSError:
            pass

    def log_request(self, code="-", size="-") -> None:
        pass                                # no line per request


class BoundedServer(ThreadedWSGIServer):
    def __init__(self, config: Config, app, **kwargs):
        self.max_connections = config.max_connections
        self.max_per_client = config.max_connections_per_client
        self._lock = threading.Lock()
        self._open: Counter[str] = Counter()
        self.refused = 0                    # connections answered 503 for the caps
        handler = type("Handler", (BoundedRequestHandler,), {"timeout": config.connection_timeout})
        super().__init__(config.host, config.port, app, handler=handler, **kwargs)

    def open_connections(self) -> int:
        with self._lock:
            return sum(self._open.values())

    def process_request(self, request, client_address) -> None:
        client = client_address[0] if isinstance(client_address, tuple) else str(client_address)
        with self._lock:
            total = sum(self._open.values())
            if total >= self.max_connections or self._open[client] >= self.max_per_client:
                self.refused += 1
                refuse = True
            else:
                self._open[client] += 1
                refuse = False
        if refuse:
            try:
                request.settimeout(0.5)
                request.sendall(_busy_response())
            except OSError:
                pass
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._release(client)
            raise

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._release(client_address[0] if isinstance(client_address, tuple) else str(client_address))

    def _release(self, client: str) -> None:
        with self._lock:
            self._open[client] -= 1
            if self._open[client] <= 0:
                del self._open[client]


def make_server(config: Config, app) -> BoundedServer:
    server = BoundedServer(config, app)
    server.daemon_threads = True
    return server
