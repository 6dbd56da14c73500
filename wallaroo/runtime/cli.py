"""`machida`: run a Wallaroo application module as one worker of its Kafka consumer group."""
import argparse
import importlib
import logging
import os
import sys

from ..builder import ApplicationBuilder, ApplicationError
from . import operations
from .metrics import MetricsPortError
from .queries import QueryPortError
from .serde import StateEncodingError
from .tcp import TCPBridgeError
from .topics import TopologyError
from .worker import Worker, WorkerFenced, WorkerOptions

# Wallaroo's own cluster flags: meaningless here (Kafka's consumer group does membership), accepted so
# old launch scripts keep working. Flags listed as True take a value. `--in`/`--out` are not among them:
# they reach application_setup(args), for tcp_parse_input_addrs/tcp_parse_output_addrs.
WALLAROO_FLAGS = {"--cluster-initializer": False, "--ponynoblock": False, "--join": True, "--control": True,
                  "--data": True, "--external": True, "--metrics": True, "--ponythreads": True,
                  "--worker-count": True, "--resilience-dir": True}


def parser():
    defaults = WorkerOptions()
    p = argparse.ArgumentParser(
        prog="machida", description="Run a Wallaroo 0.4-style Python application on Kafka. Every worker "
        "started with the same application (id) joins one consumer group and shares the work and state.",
        epilog="Other arguments are passed to the application's application_setup(args), e.g. "
        "--kafka_source_topic, --kafka_source_brokers, --kafka_sink_topic, --kafka_sink_brokers, and --in/--out "
        "for TCP sources and sinks.")
    p.add_argument("--application-module", required=True, help="module defining application_setup(args)")
    p.add_argument("--name", default=os.environ.get("WALLAROO_WORKER_NAME", defaults.name),
                   help="worker name, unique within the application (it names the transactional id); "
                        "default $WALLAROO_WORKER_NAME or 'worker'")
    p.add_argument("--application-id", default=os.environ.get("WALLAROO_APPLICATION_ID"),
                   help="consumer group and internal topic prefix; default derived from the application's "
                        "name. Two deployments of one application on one broker need different ids")
    p.add_argument("--checkpoint-interval-ms", type=int, default=defaults.checkpoint_interval_ms,
                   help="how often one transaction commits outputs, state and offsets (default %(default)s)")
    p.add_argument("--idle-checkpoint-ms", type=int, default=defaults.idle_checkpoint_ms,
                   help="with nothing left to read, commit what is done at once, at most this often "
                        "(default %(default)s; 0: only every checkpoint interval)")
    p.add_argument("--transaction-timeout-ms", type=int, default=defaults.transaction_timeout_ms,
                   help="how long a crashed worker's open transaction can block readers (default %(default)s)")
    p.add_argument("--session-timeout-ms", type=int, default=defaults.session_timeout_ms,
                   help="how soon the group notices a worker is gone (default %(default)s)")
    p.add_argument("--purge-interval-ms", type=int, default=defaults.purge_interval_ms,
                   help="how often consumed repartition records are deleted from Kafka (default %(default)s)")
    p.add_argument("--replication-factor", type=int, default=defaults.replication_factor,
                   help="replication factor of the topics the worker creates (internal topics, missing "
                        "sinks); default: that of the source topic")
    p.add_argument("--min-insync-replicas", type=int, default=defaults.min_insync_replicas,
                   help="min.insync.replicas of those topics; default: the broker's")
    p.add_argument("--bootstrap-servers", default=os.environ.get("WALLAROO_BOOTSTRAP_SERVERS"),
                   help="the Kafka brokers the worker keeps its topics on; default $WALLAROO_BOOTSTRAP_SERVERS, "
                        "else the application's first Kafka source or sink brokers, else 127.0.0.1:9092 (an "
                        "application with only TCP sources and sinks still runs on Kafka)")
    p.add_argument("--unsafe-pickle", action="store_true", default=defaults.unsafe_pickle,
                   help="pickle state objects, and messages of an application without serialize/deserialize, "
                        "on the internal topics. Anyone who can write to those topics then runs code in the "
                        "worker: only for a broker whose topics only trusted parties can write. Default: data only")
    p.add_argument("--max-event-time-skew", type=duration_ms, metavar="DURATION",
                   default=defaults.max_event_time_skew_ms,
                   help="a source record more than this ahead of its partition's stream time (or of the wall "
                        "clock) is a dead letter and does not move event time; e.g. 6h, 90m, 0 for no bound "
                        f"(default {defaults.max_event_time_skew_ms // 3_600_000}h)")
    p.add_argument("--reset-event-time", action="store_true", default=defaults.reset_event_time,
                   help="do not hold the first records of this start to the event time saved in the changelog: "
                        "for input that deliberately jumps ahead (a newer period replayed into the same deployment)")
    p.add_argument("--no-local-state", dest="local_state", action="store_false", default=defaults.local_state,
                   help="send every message for a state step through its repartition topic, also to the "
                        "partitions this worker owns (default: those are applied at once)")
    p.add_argument("--metrics-port", type=int, default=defaults.metrics_port,
                   help="serve Prometheus text at http://HOST:PORT/metrics (default: off)")
    p.add_argument("--metrics-host", default=defaults.metrics_host,
                   help="address the metrics port listens on (default %(default)s)")
    p.add_argument("--query-port", type=int, default=defaults.query_port,
                   help="answer the state's @wallaroo.query methods at http://HOST:PORT/query/... (default: off)")
    p.add_argument("--query-host", default=defaults.query_host,
                   help="address the query port listens on and advertises to the other workers (default %(default)s)")
    p.add_argument("--query-rate", type=float, default=defaults.query_rate_per_s,
                   help="queries a second one client address may make (default %(default)s); then HTTP 429")
    p.add_argument("--no-metrics", dest="metrics", action="store_false", default=defaults.metrics,
                   help="count nothing: no Prometheus text, no snapshots on the <application-id>-metrics topic")
    p.add_argument("--log-level", default=os.environ.get("WALLAROO_LOG_LEVEL", "INFO"))
    return p


UNITS_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


def duration_ms(text):
    """'6h', '90m', '30s', '500ms', '2d' or a number of milliseconds -> milliseconds."""
    text = text.strip().lower()
    number, unit = text.rstrip("smhd"), text[len(text.rstrip("smhd")):] or "ms"
    try:
        value = float(number)
    except ValueError:
        value = -1
    if unit not in UNITS_MS or not value >= 0:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 6h, 90m, 30s, 500ms, 0)")
    return int(value * UNITS_MS[unit])


def strip_wallaroo_flags(argv):
    """Remove Wallaroo's cluster flags; return (remaining argv, names removed)."""
    out, dropped, i = [], [], 0
    while i < len(argv):
        a = argv[i]
        flag = a.split("=", 1)[0]
        if flag in WALLAROO_FLAGS:
            dropped.append(flag)
            i += 2 if (WALLAROO_FLAGS[flag] and "=" not in a) else 1
            continue
        out.append(a)
        i += 1
    return out, dropped


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("status", "shrink"):     # operations on a running application
        return operations.main(argv)
    argv, dropped = strip_wallaroo_flags(argv)
    opts, _rest = parser().parse_known_args(argv)
    logging.basicConfig(level=opts.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if dropped:
        print(f"machida: ignoring Wallaroo cluster flags {' '.join(dropped)}: workers coordinate through "
              f"the Kafka consumer group", file=sys.stderr)
    sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(opts.application_module)
    except ImportError as e:
        sys.exit(f"machida: cannot import application module {opts.application_module!r}: {e}")
    if not hasattr(module, "application_setup"):
        sys.exit(f"machida: module {opts.application_module!r} has no application_setup(args)")
    try:
        app = module.application_setup(["machida"] + argv)
        if isinstance(app, ApplicationBuilder):
            app = app.build()
    except ApplicationError as e:
        sys.exit(f"machida: the application is malformed: {e}")
    worker = Worker(app, module, WorkerOptions(
        name=opts.name, application_id=opts.application_id,
        checkpoint_interval_ms=opts.checkpoint_interval_ms, idle_checkpoint_ms=opts.idle_checkpoint_ms,
        transaction_timeout_ms=opts.transaction_timeout_ms, session_timeout_ms=opts.session_timeout_ms,
        purge_interval_ms=opts.purge_interval_ms, replication_factor=opts.replication_factor,
        min_insync_replicas=opts.min_insync_replicas, bootstrap=opts.bootstrap_servers,
        unsafe_pickle=opts.unsafe_pickle, max_event_time_skew_ms=opts.max_event_time_skew,
        reset_event_time=opts.reset_event_time, metrics=opts.metrics, metrics_port=opts.metrics_port,
        metrics_host=opts.metrics_host, query_port=opts.query_port, query_host=opts.query_host,
        query_rate_per_s=opts.query_rate, local_state=opts.local_state))
    try:
        worker.run()
    except (TopologyError, TCPBridgeError, WorkerFenced, StateEncodingError, MetricsPortError,
            QueryPortError) as e:
        sys.exit(f"machida: {e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
