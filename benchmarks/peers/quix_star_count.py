"""The star count of the peer benchmark, written in Quix Streams as its documentation would have it.

    source (GH Archive lines) -> keep stars -> {"id", "repo"} -> group_by repo (repartition topic)
    -> hourly tumbling window per repository, count() (RocksDB state, changelog topic) -> .current()
    -> output topic: one record per star, {"start", "end", "value": stars of that repo in that hour}

Exactly-once (`processing_guarantee="exactly-once"`).  It runs in its own virtualenv (Quix Streams
pins its own confluent-kafka), so it imports nothing from this project.  On SIGTERM it stops, and
prints one JSON line: how many stars the window dropped as late.
"""
import argparse
import json
from datetime import timedelta

import orjson
from quixstreams import Application
from quixstreams.models.serializers import JSONDeserializer

STAR_MARK = b'WatchEvent"'     # the type name followed by its closing quote, as star_leaders looks


def stars_only(value: bytes):
    """Parse a line only if it can hold a star (star_leaders' decoder skips what cannot be
    interesting the same way); None for the rest, which the first filter drops."""
    return orjson.loads(value) if STAR_MARK in value else None


def is_star(event) -> bool:
    return (type(event) is dict and event.get("type") == "WatchEvent"
            and type(event.get("repo")) is dict and type(event["repo"].get("name")) is str)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--broker", required=True)
    p.add_argument("--source-topic", required=True)
    p.add_argument("--output-topic", required=True)
    p.add_argument("--consumer-group", required=True)
    p.add_argument("--state-dir", required=True)
    p.add_argument("--commit-interval", type=float, default=1.0, help="seconds between commits")
    p.add_argument("--grace-minutes", type=float, default=10.0,
                   help="how late (event time) a star may come and still count in its hour")
    p.add_argument("--decode", choices=("stars-only", "json"), default="stars-only",
                   help="stars-only: parse only lines that can hold a star; json: Quix's default "
                        "JSON deserializer on every line")
    args = p.parse_args(argv)

    app = Application(broker_address=args.broker, consumer_group=args.consumer_group,
                      auto_offset_reset="earliest", processing_guarantee="exactly-once",
                      commit_interval=args.commit_interval, state_dir=args.state_dir,
                      loglevel="WARNING")
    deserializer = JSONDeserializer(loads=stars_only) if args.decode == "stars-only" else "json"
    source = app.topic(args.source_topic, value_deserializer=deserializer)
    output = app.topic(args.output_topic, key_serializer="str", value_serializer="json")

    late = {"stars": 0}

    def on_late(value, key, timestamp_ms, late_by_ms, start, end, store_name, topic, partition, offset):
        late["stars"] += 1
        return False        # counted, and reported at exit instead of logged one by one

    sdf = app.dataframe(source)
    sdf = sdf.filter(is_star)
    sdf = sdf.apply(lambda event: {"id": event["id"], "repo": event["repo"]["name"]})
    sdf = sdf.group_by("repo")
    sdf = sdf.tumbling_window(timedelta(hours=1), grace_ms=timedelta(minutes=args.grace_minutes),
                              on_late=on_late).count().current()
    sdf.to_topic(output)
    app.run()
    print(json.dumps({"late_stars": late["stars"]}), flush=True)


if __name__ == "__main__":
    main()
