"""`archive-streamer` / `python -m archive_streamer`: replay GH Archive hours into Kafka.

Exit codes: 0 done (also after SIGINT/SIGTERM, once what was sent is flushed); 1 some data could
not be replayed (an hour failed to download, the broker refused records, or no hour of the range
exists); 2 bad flags;
3 Kafka did not answer within the bounded wait (or refused to create the topic).
"""
import argparse
import contextlib
import logging
import signal
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

from tqdm.contrib.logging import logging_redirect_tqdm

from . import config, download, hours as H, synthetic
from .produce import KafkaUnavailable, Sender, ensure_topic, wait_for_broker
from .progress import Progress
from .reader import SKIP_KINDS, ReadStats, read_file

log = logging.getLogger("archive_streamer")
env = config.env


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError
    return value


_positive_int.__name__ = "positive integer"   # argparse names the type in its error message


def _nonnegative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError
    return value


_nonnegative_int.__name__ = "integer >= 0"


def _seconds(text: str) -> float:
    value = float(text)
    if not 0 <= value < float("inf"):
        raise ValueError
    return value


_seconds.__name__ = "number of seconds"


def _speedup(text: str) -> float:
    value = float(text)
    if not value >= 0 or value == float("inf"):
        raise ValueError
    return value


_speedup.__name__ = "speedup (a number >= 0)"


def _hour(text: str) -> datetime:
    try:
        return H.parse_hour(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="archive-streamer",
        description=f"Replay GH Archive hour files into the Kafka topic {config.TOPIC!r}, paced "
                    "by the events' created_at.  Flags override environment variables, which "
                    "override the defaults.")
    p.add_argument("--source", default=env(config.ENV_SOURCE, config.DEFAULT_SOURCE),
                   help=f"GH Archive base URL, a folder of YYYY-MM-DD-H.json.gz files, or "
                        f"'{config.SYNTHETIC}' (default {config.DEFAULT_SOURCE}; ${config.ENV_SOURCE})")
    p.add_argument("--start", type=_hour, default=env(config.ENV_START, None), metavar="YYYY-MM-DD-H",
                   help=f"first hour, UTC, hour not zero-padded (default {config.DEFAULT_START}; "
                        f"for a folder its first file; ${config.ENV_START})")
    span = p.add_mutually_exclusive_group()
    span.add_argument("--hours", type=_positive_int, metavar="N",
                      help=f"how many hours (default {config.DEFAULT_HOURS}; for a folder through its "
                           f"last file; ${config.ENV_HOURS})")
    span.add_argument("--end", type=_hour, metavar="YYYY-MM-DD-H", help="last hour, inclusive")
    p.add_argument("--speedup", type=_speedup, default=env(config.ENV_SPEEDUP, config.DEFAULT_SPEEDUP),
                   help=f"archive seconds per wall second; 0 = as fast as possible "
                        f"(default {config.DEFAULT_SPEEDUP:g}; ${config.ENV_SPEEDUP})")
    p.add_argument("--warmup-hours", type=_nonnegative_int,
                   default=env(config.ENV_WARMUP_HOURS, config.DEFAULT_WARMUP_HOURS), metavar="N",
                   help=f"send the first N hours as fast as possible, then pace at --speedup, so a "
                        f"24-hour window is full at once (default {config.DEFAULT_WARMUP_HOURS}; "
                        f"${config.ENV_WARMUP_HOURS})")
    p.add_argument("--kafka", default=None, metavar="HOST:PORT",
                   help=f"bootstrap servers (default 127.0.0.1:{config.DEFAULT_KAFKA_PORT}; "
                        f"${config.ENV_KAFKA}, or ${config.ENV_KAFKA_PORT} for the port)")
    p.add_argument("--kafka-wait", type=_seconds, default=config.KAFKA_WAIT_S, metavar="SECONDS",
                   help=f"how long to wait for the broker before giving up (default {config.KAFKA_WAIT_S:g})")
    p.add_argument("--topic", default=env(config.ENV_TOPIC, config.TOPIC),
                   help=f"topic (default {config.TOPIC}; ${config.ENV_TOPIC})")
    p.add_argument("--partitions", type=_positive_int,
                   default=env(config.ENV_PARTITIONS, config.DEFAULT_PARTITIONS),
                   help=f"partitions if the topic is created (default {config.DEFAULT_PARTITIONS}; "
                        f"${config.ENV_PARTITIONS})")
    p.add_argument("--replication", type=_positive_int, default=config.DEFAULT_REPLICATION,
                   help=f"replication factor if the topic is created (default {config.DEFAULT_REPLICATION})")
    p.add_argument("--seed", type=int, default=env(config.ENV_SEED, config.DEFAULT_SEED),
                   help=f"synthetic source: random seed (default {config.DEFAULT_SEED}; ${config.ENV_SEED})")
    p.add_argument("--events-per-hour", type=_positive_int,
                   default=env(config.ENV_EVENTS_PER_HOUR, config.DEFAULT_EVENTS_PER_HOUR),
                   help=f"synthetic source: events per hour (default {config.DEFAULT_EVENTS_PER_HOUR}; "
                        f"${config.ENV_EVENTS_PER_HOUR})")
    p.add_argument("--cache-dir", type=Path, default=None,
                   help=f"where downloaded hours are kept (default {config.DEFAULT_CACHE_DIR}; "
                        f"${config.ENV_CACHE})")
    p.add_argument("--retries", type=_nonnegative_int, default=config.DOWNLOAD_RETRIES, metavar="N",
                   help=f"download retries per hour, with exponential backoff (default {config.DOWNLOAD_RETRIES})")
    p.add_argument("--no-progress", action="store_true",
                   help="plain log lines instead of a progress bar (also when stderr is not a terminal)")
    return p


def _plan(args, parser) -> tuple[str, list[datetime], dict]:
    """(kind, hours to replay, folder files by hour) from the flags; exits 2 on a bad combination."""
    source = args.source
    files: dict = {}
    if source == config.SYNTHETIC:
        kind = "synthetic"
    elif source.startswith(("http://", "https://")):
        kind = "url"
    else:
        kind = "dir"
        if not Path(source).is_dir():
            parser.error(f"--source {source!r} is neither a URL, a folder, nor '{config.SYNTHETIC}'")
        files = dict(H.folder_hours(source))
        if not files:
            parser.error(f"--source {source!r} holds no YYYY-MM-DD-H.json.gz files")
    hours_env = env(config.ENV_HOURS, None)
    if args.hours is None and args.end is None and hours_env is not None:
        try:
            args.hours = _positive_int(hours_env)
        except ValueError:
            parser.error(f"${config.ENV_HOURS}={hours_env!r} is not a positive integer")
    start = args.start
    if start is None:
        start = min(files) if kind == "dir" else H.parse_hour(config.DEFAULT_START)
    if args.end is not None:
        if args.end < start:
            parser.error(f"--end {H.hour_name(args.end)} is before --start {H.hour_name(start)}")
        plan = H.hours_between(start, args.end)
    elif args.hours is not None:
        plan = H.hour_range(start, args.hours)
    elif kind == "dir":
        if max(files) < start:
            parser.error(f"--source {source!r} has no hour files from {H.hour_name(start)} on")
        plan = H.hours_between(start, max(files))
    else:
        plan = H.hour_range(start, config.DEFAULT_HOURS)
    if plan[-1] > datetime.now(timezone.utc):
        # GH Archive has no future hours, and the broker refuses timestamps more than an hour ahead.
        parser.error(f"hour {H.hour_name(plan[-1])} is in the future")
    first, last = H.parse_hour(config.HEALTHY_FIRST_HOUR), H.parse_hour(config.HEALTHY_LAST_HOUR)
    if kind != "synthetic" and (plan[0] < first or plan[-1] > last):
        log.warning("hours outside %s .. %s: star data there is not healthy",
                    config.HEALTHY_FIRST_HOUR, config.HEALTHY_LAST_HOUR)
    return kind, plan, files


class Run:
    """What happened, for the summary."""

    def __init__(self):
        self.read = ReadStats()
        self.hours_done = 0
        self.missing: list[str] = []
        self.failed: list[str] = []
        self.signal: str | None = None
        self.current: str | None = None     # the hour being replayed


def _hour_inputs(kind: str, plan: list[datetime], files: dict, args, run: Run,
                 stop: threading.Event):
    """Yields (hour, where, events) per hour of the plan; hours without data are reported here."""
    if kind == "synthetic":
        for hour in plan:
            yield hour, f"seed {args.seed}", synthetic.generate_hour(args.seed, hour, args.events_per_hour)
    elif kind == "dir":
        for hour in plan:
            path = files.get(hour)
            if path is None:
                log.warning("hour %s missing: no %s in %s", H.hour_name(hour), H.file_name(hour), args.source)
                run.missing.append(H.hour_name(hour))
                continue
            yield hour, str(path), read_file(path, run.read, hour=hour)
    else:
        cache = args.cache_dir if args.cache_dir is not None else config.default_cache_dir()
        for hour, path, error in download.prefetch(plan, args.source, cache, stop, retries=args.retries):
            if isinstance(error, download.HourMissing):
                log.warning("hour %s missing: %s", H.hour_name(hour), error)
                run.missing.append(H.hour_name(hour))
            elif error is not None:
                log.error("hour %s skipped: %s", H.hour_name(hour), error)
                run.failed.append(H.hour_name(hour))
            else:
                yield hour, str(path), read_file(path, run.read, hour=hour)


def _summary(run: Run, sender: Sender, undelivered: int, topic: str, bootstrap: str,
             elapsed: float, plan_len: int) -> None:
    out = sys.stderr
    rate = sender.delivered / elapsed if elapsed > 0 else 0.0
    stopped = ""
    if run.signal:
        where = f"during hour {run.current}" if run.current else "before the first hour"
        stopped = f", stopped by {run.signal} {where}"
    print(f"archive-streamer: sent {sender.delivered} events to {topic} at {bootstrap} "
          f"in {elapsed:.1f} s ({rate:.0f} events/s){stopped}", file=out)
    print(f"archive-streamer: hours: {run.hours_done} of {plan_len} replayed, "
          f"{len(run.missing)} missing{' (' + ', '.join(run.missing) + ')' if run.missing else ''}, "
          f"{len(run.failed)} failed{' (' + ', '.join(run.failed) + ')' if run.failed else ''}",
          file=out)
    if run.read.files:
        print(f"archive-streamer: read {run.read.lines} lines from {run.read.files} files, "
              f"{run.read.events} events", file=out)
    skipped = run.read.skipped
    if skipped:
        print(f"archive-streamer: skipped {sum(skipped.values())}: " + ", ".join(
            f"{k}={skipped[k]} (first at {run.read.examples[k]})" for k in SKIP_KINDS if skipped[k]),
            file=out)
    else:
        print("archive-streamer: skipped 0", file=out)
    if sender.retried_alone:
        print(f"archive-streamer: the broker refused batches; {sender.retried_alone} of their records "
              f"were sent again one by one", file=out)
    lost = sender.failed + undelivered
    if lost:
        print(f"archive-streamer: NOT delivered {lost} events "
              f"(first error: {sender.first_error or 'flush timed out'})", file=out)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="archive-streamer: %(message)s", stream=sys.stderr)
    parser = build_parser()
    args = parser.parse_args(argv)
    kind, plan, files = _plan(args, parser)
    bootstrap = args.kafka or config.default_kafka()

    try:
        wait_for_broker(bootstrap, args.kafka_wait)
        ensure_topic(bootstrap, args.topic, args.partitions, args.replication)
    except KafkaUnavailable as e:
        print(f"archive-streamer: error: {e}", file=sys.stderr)
        return 3
    except Exception as e:   # e.g. replication larger than the cluster
        print(f"archive-streamer: error: cannot create topic {args.topic}: {e}", file=sys.stderr)
        return 3

    run = Run()
    stop = threading.Event()

    def on_signal(signum, _frame):
        if stop.is_set():               # a second signal: give up on the flush
            raise KeyboardInterrupt
        run.signal = signal.Signals(signum).name
        log.info("%s: stopping; flushing what was sent", run.signal)
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    show_bar = not args.no_progress and sys.stderr.isatty()
    events_total = len(plan) * args.events_per_hour if kind == "synthetic" else None
    progress = Progress(len(plan), events_total, args.speedup, bar=show_bar, read_stats=run.read)
    warm_until = H.ms(plan[0]) + args.warmup_hours * 3_600_000 if plan and args.warmup_hours else None
    sender = Sender(bootstrap, args.topic, args.speedup, stop=stop, on_tick=progress.tick,
                    unpaced_until_ms=warm_until)
    started = time.monotonic()
    try:
        with logging_redirect_tqdm() if show_bar else contextlib.nullcontext():
            for hour, where, events in _hour_inputs(kind, plan, files, args, run, stop):
                if stop.is_set():
                    break
                progress.start_hour(hour, plan.index(hour) + 1, where)
                run.current = H.hour_name(hour)
                start_ms = H.ms(hour)
                sender.send(events, start_ms, start_ms + 3_600_000)
                if not stop.is_set():
                    run.hours_done += 1
            undelivered = sender.close()
            progress.tick(sender)
        progress.close()
    except KeyboardInterrupt:
        progress.close()
        print(f"archive-streamer: aborted; {sender.delivered} events were acknowledged, "
              f"{len(sender.producer)} may be lost", file=sys.stderr)
        return 130
    _summary(run, sender, undelivered, args.topic, bootstrap, time.monotonic() - started, len(plan))
    if sender.failed or undelivered or run.failed:
        return 1
    if run.hours_done == 0 and not run.signal:
        print("archive-streamer: error: no hour could be replayed", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
