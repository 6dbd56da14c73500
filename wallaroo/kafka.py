"""Kafka source and sink configuration, and the 0.4 command-line option parsers."""
import argparse

# 0.4's log level names, as librdkafka's syslog levels. "Fine" also turns on librdkafka's debug output
# (level 7 alone prints nothing more): the client's configuration at start, general, broker and topic
# events.
LOG_LEVELS = {"fine": 7, "info": 6, "warn": 4, "error": 3}
FINE_DEBUG_CONTEXTS = "conf,generic,broker,topic"


def log_level_error(level):
    """Why `level` is not a 0.4 log level name, or None."""
    if isinstance(level, str) and level.lower() in LOG_LEVELS:
        return None
    return f"log_level {level!r} is not one of Fine, Info, Warn, Error"


def librdkafka_log_settings(levels):
    """librdkafka settings for the most verbose of `levels` (0.4 names); {} when there are none."""
    if not levels:
        return {}
    level = max(LOG_LEVELS[name.lower()] for name in levels)
    settings = {"log_level": level}
    if level == LOG_LEVELS["fine"]:
        settings["debug"] = FINE_DEBUG_CONTEXTS
    return settings


def brokers_string(brokers) -> str:
    """Accept "h:p,h:p", ["h:p"], or 0.4's [("h", "p")] and return librdkafka's "h:p,h:p"."""
    if isinstance(brokers, str):
        return brokers
    parts = []
    for b in brokers:
        parts.append(f"{b[0]}:{b[1]}" if isinstance(b, (tuple, list)) else str(b))
    return ",".join(parts)


def _split_brokers(text: str):
    out = []
    for item in text.split(","):
        item = item.strip()
        if item:
            host, _, port = item.rpartition(":")
            out.append((host or item, port or "9092"))
    return out


class KafkaSourceConfig:
    """Read the pipeline's messages from `topic`; `decoder` turns each record value into a message."""

    def __init__(self, topic, brokers, log_level="Warn", decoder=None):
        self.topic = topic
        self.brokers = brokers_string(brokers)
        self.log_level = log_level
        self.decoder = decoder


class KafkaSinkConfig:
    """Write the pipeline's outputs to `topic`; `encoder` returns bytes, (bytes, key) or, as in 0.5,
    (bytes, key, partition). `max_produce_buffer_ms` > 0 becomes the producer's linger.ms.

    `coalesce=True` (for keyed outputs whose readers want the newest value of each key, like a
    KTable): of the outputs with one key between two checkpoints only the last is produced, at the
    checkpoint, in its transaction. Outputs of different keys may then arrive in another order than
    they were made; outputs without a key are produced at once, as without coalescing."""

    def __init__(self, topic, brokers, log_level="Warn", max_produce_buffer_ms=0,
                 max_message_size=100000, encoder=None, coalesce=False):
        self.topic = topic
        self.brokers = brokers_string(brokers)
        self.log_level = log_level
        self.max_produce_buffer_ms = int(max_produce_buffer_ms)
        self.max_message_size = int(max_message_size)
        self.encoder = encoder
        self.coalesce = bool(coalesce)
        self.partitions = None        # the topic's partition count, once the runtime has looked


def kafka_parse_source_options(args):
    """Return (topic, brokers, log_level) from --kafka_source_* in `args`; brokers as [(host, port)]."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--kafka_source_topic", default="")
    p.add_argument("--kafka_source_brokers", default="127.0.0.1:9092")
    p.add_argument("--kafka_source_log_level", default="Warn")
    ns, _ = p.parse_known_args(args)
    return ns.kafka_source_topic, _split_brokers(ns.kafka_source_brokers), ns.kafka_source_log_level


def kafka_parse_sink_options(args):
    """Return (topic, brokers, log_level, max_produce_buffer_ms, max_message_size) from --kafka_sink_*."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--kafka_sink_topic", default="")
    p.add_argument("--kafka_sink_brokers", default="127.0.0.1:9092")
    p.add_argument("--kafka_sink_log_level", default="Warn")
    p.add_argument("--kafka_sink_max_produce_buffer_ms", type=int, default=0)
    p.add_argument("--kafka_sink_max_message_size", type=int, default=100000)
    ns, _ = p.parse_known_args(args)
    return (ns.kafka_sink_topic, _split_brokers(ns.kafka_sink_brokers), ns.kafka_sink_log_level,
            ns.kafka_sink_max_produce_buffer_ms, ns.kafka_sink_max_message_size)
