"""The application's sources and sinks as a worker sets them up: the broker it talks to, what the Kafka
configs ask of the clients (linger, log levels), and the internal topics TCP sources and sinks are
bridged through (the bridges themselves are in tcp.py).
"""
import copy
import dataclasses

from ..builder import Application
from ..kafka import KafkaSinkConfig, KafkaSourceConfig, librdkafka_log_settings
from ..tcp import TCPSinkConfig, TCPSourceConfig
from . import clients, topics

DEFAULT_BOOTSTRAP = "127.0.0.1:9092"


def tcp_source_topic(app_id, pipeline_name):
    """Where the frames a pipeline's TCP source receives wait for the pipeline."""
    return f"{app_id}-{topics.application_id(pipeline_name)}-tcp-source"


def tcp_sink_topic(app_id, pipeline_name, index):
    """Where the outputs for the `index`-th sink of a pipeline wait for the TCP forwarder."""
    return f"{app_id}-{topics.application_id(pipeline_name)}-tcp-sink-{index}"


def bind(app, app_id):
    """A copy of `app` whose TCP sources and sinks name their internal topics, with every sink config
    copied (the worker fills in partition counts)."""
    pipelines = []
    for p in app.pipelines:
        source = p.source
        if isinstance(source, TCPSourceConfig):
            source = copy.copy(source)
            source.topic = tcp_source_topic(app_id, p.name)
        sinks = []
        for i, sink in enumerate(p.sinks):
            sink = copy.copy(sink)
            if isinstance(sink, TCPSinkConfig):
                sink.topic = tcp_sink_topic(app_id, p.name, i)
            sinks.append(sink)
        pipelines.append(dataclasses.replace(p, source=source, sinks=sinks))
    return Application(app.name, pipelines)


def kafka_configs(app):
    """(Kafka source configs, Kafka sink configs) of the application."""
    sources = [p.source for p in app.pipelines if isinstance(p.source, KafkaSourceConfig)]
    sinks = [s for p in app.pipelines for s in p.sinks if isinstance(s, KafkaSinkConfig)]
    return sources, sinks


def bootstrap_of(app):
    """The brokers of the first Kafka source or sink; a TCP-only application uses the local default."""
    sources, sinks = kafka_configs(app)
    for config in sources + sinks:
        if config.brokers:
            return config.brokers
    return DEFAULT_BOOTSTRAP


def producer_linger_ms(app):
    """0.4's max_produce_buffer_ms ("how long to buffer before sending") as the producer's linger.ms:
    the largest a Kafka sink sets. 0, 0.4's default ("no batching"), keeps the engine's default:
    outputs become visible only when the checkpoint commits (which sends everything at once), so
    lingering never delays a reader, and sending each record alone would only cost throughput."""
    _sources, sinks = kafka_configs(app)
    asked = [s.max_produce_buffer_ms for s in sinks if s.max_produce_buffer_ms > 0]
    return max(asked) if asked else clients.DEFAULT_LINGER_MS


def producer_log_settings(app):
    """librdkafka log settings from the Kafka sinks' log levels (the most verbose wins: one producer
    writes every sink)."""
    return librdkafka_log_settings([s.log_level for s in kafka_configs(app)[1]])


def consumer_log_settings(app):
    """librdkafka log settings from the Kafka sources' log levels (one consumer reads every source)."""
    return librdkafka_log_settings([s.log_level for s in kafka_configs(app)[0]])
