"""Kafka source and sink configuration, and the 0.4 command-line option parsers."""
import argparse


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
    """Write the pipeline's outputs to `topic`; `encoder` returns bytes or (bytes, key)."""

    def __init__(self, topic, brokers, log_level="Warn", max_produce_buffer_ms=0,
                 max_message_size=100000, encoder=None):
        self.topic = topic
        self.brokers = brokers_string(brokers)
        self.log_level = log_level
        self.max_produce_buffer_ms = int(max_produce_buffer_ms)
        self.max_message_size = int(max_message_size)
        self.encoder = encoder


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
