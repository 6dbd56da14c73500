"""`python -m dashboard` / `star-leaders-dashboard`: serve the live star-leaders page.

Server choice: werkzeug's threaded WSGI server (one thread per connection), started through
`dashboard.server.make_server` rather than `app.run`, never in debug mode.  Server-sent events need a
server that writes each chunk to the socket as soon as the generator yields it and that can hold many
long-lived connections at once; this one does both (no output buffering, one thread per stream),
needs no extra dependency, and suits a dashboard with a handful of viewers.  dashboard/server.py
bounds it: connection timeouts and caps on connections, in total and per client address.  Behind a
reverse proxy, turn off proxy buffering for /stream (the response already says
`X-Accel-Buffering: no`).  waitress was not chosen: it is not a dependency here, and
its output buffering would have to be tuned and verified for event streams first.
"""
from __future__ import annotations

import logging
import signal
import sys
import threading

from .app import create_app
from .config import parse_args
from .server import make_server


def main(argv=None) -> int:
    config = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)   # no per-request lines
    app = create_app(config)
    runtime = app.extensions["dashboard"]
    try:
        server = make_server(config, app)
    except OSError as e:
        runtime.stop()
        print(f"star-leaders-dashboard: cannot listen on {config.host}:{config.port}: {e}", file=sys.stderr)
        return 2

    def shutdown(signum, frame):
        runtime.closing.set()                 # ends open event streams
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, shutdown)
    signal.signal(signal.SIGINT, shutdown)
    host = f"[{config.host}]" if ":" in config.host else config.host
    print(f"star-leaders dashboard on http://{host}:{server.server_port}/  "
          f"(kafka {config.kafka}, topic {config.topic}, source {config.source_topic}, group {config.group})",
          flush=True)
    try:
        server.serve_forever()
    finally:
        runtime.stop()
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
